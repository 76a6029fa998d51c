package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"
)

// listenLoopback starts a TCP listener on the loopback; serve handles each
// connection.
func listenLoopback(t *testing.T, serve func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func eventType(t *testing.T, f Frame) string {
	t.Helper()
	if f.Type != FrameEvent {
		t.Fatalf("expected an EVENT, got frame type %v %q", f.Type, f.Payload)
	}
	var ev map[string]interface{}
	if err := json.Unmarshal(f.Payload, &ev); err != nil {
		t.Fatalf("EVENT payload: %v", err)
	}
	s, _ := ev["type"].(string)
	return s
}

// A 3 MiB round trip through an echo server: more than a window each way,
// so both directions wait for credit; the host's END half-closes, the
// guest side's end of data is an eof event, then the RESULT counts bytes.
func TestNetConnectEchoHalfClose(t *testing.T) {
	port := listenLoopback(t, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c) // echo until the client half-closes
		// then our side ends: CloseWrite via Close
	})
	ta := startTestAgent(t)
	c := ta.dial()
	cs := c.open("net.connect", map[string]interface{}{"port": port})
	if got := eventType(t, cs.next()); got != "connected" {
		t.Fatalf("first event %q, want connected", got)
	}
	payload := make([]byte, 3<<20)
	_, _ = rand.Read(payload)
	go func() {
		cs.sendData(payload)
		cs.end()
	}()
	var echoed []byte
	sawEOF := false
	for {
		f := cs.next()
		switch f.Type {
		case FrameData:
			echoed = append(echoed, f.Payload[1:]...)
			cs.grant(len(f.Payload) - 1)
		case FrameWindow:
		case FrameEvent:
			if eventType(t, f) != "eof" {
				t.Fatalf("unexpected event %q", f.Payload)
			}
			sawEOF = true
		case FrameResult:
			var r map[string]interface{}
			_ = json.Unmarshal(f.Payload, &r)
			if !sawEOF {
				t.Fatalf("RESULT before the eof event")
			}
			if !bytes.Equal(echoed, payload) {
				t.Fatalf("echoed %d bytes, not the %d sent", len(echoed), len(payload))
			}
			if num(r["bytesIn"]) != int64(len(payload)) || num(r["bytesOut"]) != int64(len(payload)) {
				t.Fatalf("result %v", r)
			}
			return
		default:
			t.Fatalf("unexpected frame %v %q", f.Type, f.Payload)
		}
	}
}

// The credit window holds the guest side back: a server that writes more
// than a window is not read beyond it until the host grants more.
func TestNetConnectRespectsCredit(t *testing.T) {
	wrote := make(chan int, 1)
	port := listenLoopback(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 8<<20)
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, _ := c.Write(buf)
		wrote <- n
	})
	ta := startTestAgent(t)
	c := ta.dial()
	cs := c.open("net.connect", map[string]interface{}{"port": port})
	if got := eventType(t, cs.next()); got != "connected" {
		t.Fatalf("first event %q", got)
	}
	got := 0
	for {
		f, ok := cs.nextWithin(300 * time.Millisecond)
		if !ok {
			break
		}
		if f.Type == FrameData {
			got += len(f.Payload) - 1
		}
	}
	if got != initialWindowBytes {
		t.Fatalf("received %d bytes without granting credit, want exactly the window %d", got, initialWindowBytes)
	}
	if n := <-wrote; n >= 8<<20 {
		t.Fatalf("the server wrote all %d bytes: nothing held it back", n)
	}
	cs.cancel()
}

func TestNetConnectRefused(t *testing.T) {
	// a port that was just free
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ta := startTestAgent(t)
	c := ta.dial()
	if code := c.callErr("net.connect", map[string]interface{}{"port": port}); code != CodePortNotOpen {
		t.Fatalf("code %q, want port_not_open", code)
	}
	for _, bad := range []map[string]interface{}{{}, {"port": 0}, {"port": 70000}, {"port": 80, "host": "example.com"}} {
		if code := c.callErr("net.connect", bad); code != CodeBadRequest {
			t.Fatalf("%v: code %q, want bad_request", bad, code)
		}
	}
}

// CANCEL closes the guest side's connection.
func TestNetConnectCancelCloses(t *testing.T) {
	closed := make(chan struct{})
	port := listenLoopback(t, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
		close(closed)
	})
	ta := startTestAgent(t)
	c := ta.dial()
	cs := c.open("net.connect", map[string]interface{}{"port": port})
	if got := eventType(t, cs.next()); got != "connected" {
		t.Fatalf("first event %q", got)
	}
	cs.sendData([]byte("hello"))
	cs.cancel()
	select {
	case <-closed:
	case <-time.After(testTimeout):
		t.Fatalf("the guest side's connection was not closed after CANCEL")
	}
}
