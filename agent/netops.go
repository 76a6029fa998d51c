package main

// net.connect: a TCP connection opened inside the guest, carried on one
// stream. Bytes from the guest's server are DATA (channel 0) to the host,
// within the host's credit; DATA from the host is written to the
// connection, and credit goes back once it was written. The guest side's
// end of data is an EVENT eof; the host's END half-closes the connection
// (CloseWrite); CANCEL closes it. The RESULT comes once both directions
// have ended. This is how the host reaches a guest port without the guest's
// network (no port of the host is opened, internet access may be off).

import (
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"
)

type netConnectRequest struct {
	Port      *int     `json:"port"`
	Host      *string  `json:"host"`
	TimeoutMs *float64 `json:"timeoutMs"`
}

type netConnectResult struct {
	BytesIn  int64 `json:"bytesIn"`
	BytesOut int64 `json:"bytesOut"`
}

type connectedEvent struct{}

type eofEvent struct{}

func (connectedEvent) eventType() string { return "connected" }
func (eofEvent) eventType() string       { return "eof" }

const defaultConnectTimeout = 5 * time.Second

// dialError maps a failed dial to the spec's codes: nothing listening (a
// refused connection, or a port unreachable) is port_not_open.
func dialError(addr string, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) {
		return opErrorf(CodePortNotOpen, "nothing listens on %s in the sandbox", addr)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return opErrorf(CodePortNotOpen, "connecting to %s in the sandbox timed out", addr)
	}
	return opErrorf(CodeIOError, "connecting to %s: %v", addr, err)
}

func opNetConnect(st *stream, req *netConnectRequest) (*netConnectResult, error) {
	if req.Port == nil {
		return nil, opErrorf(CodeBadRequest, "net.connect: missing port")
	}
	port := *req.Port
	if port < 1 || port > 65535 {
		return nil, opErrorf(CodeBadRequest, "net.connect: port %d is not 1-65535", port)
	}
	host := "127.0.0.1"
	if req.Host != nil {
		host = *req.Host
	}
	if net.ParseIP(host) == nil && host != "localhost" {
		return nil, opErrorf(CodeBadRequest, "net.connect: host %q is not an IP address or localhost", host)
	}
	timeout := defaultConnectTimeout
	if req.TimeoutMs != nil && *req.TimeoutMs > 0 {
		timeout = time.Duration(*req.TimeoutMs * float64(time.Millisecond))
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(st.ctx, "tcp", addr)
	if err != nil {
		if st.ctx.Err() != nil {
			return nil, st.ctx.Err()
		}
		return nil, dialError(addr, err)
	}
	// the connection goes with the stream: a CANCEL, the end of the session,
	// or this handler's return
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-st.ctx.Done():
		case <-stop:
		}
		conn.Close()
	}()
	if err := st.event(connectedEvent{}); err != nil {
		return nil, err
	}
	res := &netConnectResult{}

	// guest -> host
	readDone := make(chan error, 1)
	go func() {
		buf := make([]byte, maxDataChunkPayload)
		for {
			n, rerr := conn.Read(buf)
			if n > 0 {
				if err := st.sendData(ChanMain, buf[:n]); err != nil {
					readDone <- err
					return
				}
				res.BytesIn += int64(n)
			}
			if rerr == io.EOF {
				readDone <- st.event(eofEvent{})
				return
			}
			if rerr != nil {
				readDone <- opErrorf(CodeIOError, "reading from %s: %v", addr, rerr)
				return
			}
		}
	}()

	// host -> guest
	writeDone := make(chan error, 1)
	go func() {
		for {
			chunk, rerr := st.recv()
			if rerr == io.EOF {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				writeDone <- nil
				return
			}
			if rerr != nil {
				writeDone <- rerr
				return
			}
			_, werr := conn.Write(chunk)
			st.grant(len(chunk))
			if werr != nil {
				writeDone <- opErrorf(CodeIOError, "writing to %s: %v", addr, werr)
				return
			}
			res.BytesOut += int64(len(chunk))
		}
	}()

	// both directions end for a RESULT; a failure of either ends the stream
	// (the deferred close unblocks the other; the stream's end unblocks recv)
	for pending := 2; pending > 0; pending-- {
		select {
		case err := <-readDone:
			if err != nil {
				return nil, err
			}
		case err := <-writeDone:
			if err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}
