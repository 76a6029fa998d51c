package main

// A small protocol client for the end-to-end tests, and the test agent
// harness (an in-process `serve --listen unix:PATH`).

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const testTimeout = 20 * time.Second

type testAgent struct {
	t    *testing.T
	a    *Agent
	sock string
	dir  string // scratch directory of the test
}

// startTestAgent starts an agent listening on a unix socket in a temp dir.
// Cleanup kills its processes and waits for its streams to finish.
func startTestAgent(t *testing.T) *testAgent {
	t.Helper()
	dir := t.TempDir()
	a := NewAgent("test-version", log.New(io.Discard, "", 0))
	a.testRoot = filepath.Join(dir, "root")
	a.workspace = filepath.Join(dir, "workspace")
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go serveListener(a, ln)
	ta := &testAgent{t: t, a: a, sock: sock, dir: dir}
	t.Cleanup(func() {
		ln.Close()
		// Kill until nothing runs and every stream goroutine is done: a
		// cancelled proc.start may still be starting its process.
		streamsDone := make(chan struct{})
		go func() { a.streamsWG.Wait(); close(streamsDone) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			a.procs.killAll()
			running := 0
			for _, p := range a.procs.list() {
				if p.Running {
					running++
				}
			}
			finished := false
			select {
			case <-streamsDone:
				finished = true
			default:
			}
			if running == 0 && finished {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("cleanup: %d processes running, streams finished: %v", running, finished)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return ta
}

type testClient struct {
	t    *testing.T
	conn net.Conn
	wmu  sync.Mutex

	mu      sync.Mutex
	streams map[uint32]*clientStream
	nextID  uint32
	closed  chan struct{}
	readErr error
}

type clientStream struct {
	c      *testClient
	id     uint32
	frames chan Frame

	mu         sync.Mutex
	granted    int64 // credit granted to the agent, initial window included
	received   int64 // DATA bytes received from the agent
	sendCredit int64 // our credit for DATA to the agent
	creditSig  chan struct{}
}

// dial connects a new session, doing the magic handshake.
func (ta *testAgent) dial() *testClient {
	return ta.dialWithPrefix(nil)
}

func (ta *testAgent) dialWithPrefix(garbage []byte) *testClient {
	t := ta.t
	t.Helper()
	conn, err := net.Dial("unix", ta.sock)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &testClient{t: t, conn: conn, streams: make(map[uint32]*clientStream), closed: make(chan struct{})}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(append(append([]byte{}, garbage...), magic...)); err != nil {
		t.Fatalf("write magic: %v", err)
	}
	fr := NewFrameReader(conn)
	conn.SetReadDeadline(time.Now().Add(testTimeout))
	if err := fr.WaitMagic(); err != nil {
		t.Fatalf("agent magic: %v", err)
	}
	conn.SetReadDeadline(time.Time{})
	go c.readLoop(fr)
	return c
}

func (c *testClient) readLoop(fr *FrameReader) {
	defer close(c.closed)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		cs := c.streams[f.Stream]
		c.mu.Unlock()
		if cs == nil {
			c.t.Errorf("frame %v for unknown stream %d", f.Type, f.Stream)
			continue
		}
		switch f.Type {
		case FrameWindow:
			if len(f.Payload) != 4 {
				c.t.Errorf("WINDOW payload of %d bytes", len(f.Payload))
				continue
			}
			cs.mu.Lock()
			cs.sendCredit += int64(binary.BigEndian.Uint32(f.Payload))
			cs.mu.Unlock()
			select {
			case cs.creditSig <- struct{}{}:
			default:
			}
			continue
		case FrameData:
			if len(f.Payload) > maxDataFrameBytes {
				c.t.Errorf("DATA frame of %d bytes exceeds maxDataFrameBytes", len(f.Payload))
			}
			cs.mu.Lock()
			cs.received += int64(len(f.Payload) - 1)
			if cs.received > cs.granted {
				c.t.Errorf("stream %d: agent sent %d DATA bytes with only %d granted", cs.id, cs.received, cs.granted)
			}
			cs.mu.Unlock()
		}
		select {
		case cs.frames <- f:
		case <-time.After(testTimeout):
			c.t.Errorf("stream %d: frame not consumed", f.Stream)
			return
		}
	}
}

func (c *testClient) writeFrame(stream uint32, typ FrameType, payload []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.conn.Write(encodeFrame(stream, typ, payload)); err != nil {
		c.t.Errorf("write frame: %v", err)
	}
}

// openRaw opens a stream with an arbitrary payload.
func (c *testClient) openRaw(id uint32, payload []byte) *clientStream {
	cs := &clientStream{c: c, id: id, frames: make(chan Frame, 1<<16),
		granted: initialWindowBytes, sendCredit: initialWindowBytes, creditSig: make(chan struct{}, 1)}
	c.mu.Lock()
	if old := c.streams[id]; old != nil {
		cs = old
	} else {
		c.streams[id] = cs
	}
	c.mu.Unlock()
	c.writeFrame(id, FrameOpen, payload)
	return cs
}

// open opens a stream for op with args.
func (c *testClient) open(op string, args map[string]interface{}) *clientStream {
	req := map[string]interface{}{"op": op}
	for k, v := range args {
		req[k] = v
	}
	b, err := json.Marshal(req)
	if err != nil {
		c.t.Fatalf("marshal: %v", err)
	}
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.mu.Unlock()
	return c.openRaw(id, b)
}

// next returns the next non-WINDOW frame of the stream.
func (cs *clientStream) next() Frame {
	cs.c.t.Helper()
	select {
	case f := <-cs.frames:
		return f
	case <-cs.c.closed:
		// drain what was queued before the connection closed
		select {
		case f := <-cs.frames:
			return f
		default:
		}
		cs.c.t.Fatalf("stream %d: connection closed: %v", cs.id, cs.c.readErr)
	case <-time.After(testTimeout):
		cs.c.t.Fatalf("stream %d: timed out waiting for a frame", cs.id)
	}
	return Frame{}
}

// nextWithin returns the next frame or false after d.
func (cs *clientStream) nextWithin(d time.Duration) (Frame, bool) {
	select {
	case f := <-cs.frames:
		return f, true
	case <-time.After(d):
		return Frame{}, false
	}
}

func (cs *clientStream) grant(n int) {
	cs.mu.Lock()
	cs.granted += int64(n)
	cs.mu.Unlock()
	cs.c.writeFrame(cs.id, FrameWindow, binary.BigEndian.AppendUint32(nil, uint32(n)))
}

// sendData sends data as DATA frames within the agent's credit.
func (cs *clientStream) sendData(data []byte) {
	for len(data) > 0 {
		n := len(data)
		if n > 64<<10 {
			n = 64 << 10
		}
		for {
			cs.mu.Lock()
			if cs.sendCredit > 0 {
				if int64(n) > cs.sendCredit {
					n = int(cs.sendCredit)
				}
				cs.sendCredit -= int64(n)
				cs.mu.Unlock()
				break
			}
			cs.mu.Unlock()
			select {
			case <-cs.creditSig:
			case <-time.After(testTimeout):
				cs.c.t.Fatalf("stream %d: no credit from the agent", cs.id)
			}
		}
		cs.c.writeFrame(cs.id, FrameData, append([]byte{ChanMain}, data[:n]...))
		data = data[n:]
	}
}

func (cs *clientStream) end()    { cs.c.writeFrame(cs.id, FrameEnd, nil) }
func (cs *clientStream) cancel() { cs.c.writeFrame(cs.id, FrameCancel, nil) }

// streamOutput is everything a stream delivered until its final frame.
type streamOutput struct {
	main, stdout, stderr []byte
	events               []map[string]interface{}
	result               map[string]interface{}
	err                  *OpError
}

// collect reads the stream to its end, granting credit back for all DATA.
func (cs *clientStream) collect() *streamOutput {
	cs.c.t.Helper()
	out := &streamOutput{}
	for {
		f := cs.next()
		switch f.Type {
		case FrameData:
			d := f.Payload[1:]
			switch f.Payload[0] {
			case ChanMain:
				out.main = append(out.main, d...)
			case ChanStdout:
				out.stdout = append(out.stdout, d...)
			case ChanStderr:
				out.stderr = append(out.stderr, d...)
			}
			if len(d) > 0 {
				cs.grant(len(d))
			}
		case FrameEvent:
			var ev map[string]interface{}
			if err := json.Unmarshal(f.Payload, &ev); err != nil {
				cs.c.t.Fatalf("EVENT payload: %v", err)
			}
			out.events = append(out.events, ev)
		case FrameResult:
			if err := json.Unmarshal(f.Payload, &out.result); err != nil {
				cs.c.t.Fatalf("RESULT payload: %v", err)
			}
			return out
		case FrameError:
			out.err = &OpError{}
			if err := json.Unmarshal(f.Payload, out.err); err != nil {
				cs.c.t.Fatalf("ERROR payload: %v", err)
			}
			return out
		default:
			cs.c.t.Fatalf("unexpected frame %v", f.Type)
		}
	}
}

// call runs a request/response op and fails the test on ERROR.
func (c *testClient) call(op string, args map[string]interface{}) map[string]interface{} {
	c.t.Helper()
	out := c.open(op, args).collect()
	if out.err != nil {
		c.t.Fatalf("%s %v: %v", op, args, out.err)
	}
	return out.result
}

// callErr runs an op that must fail and returns its error code.
func (c *testClient) callErr(op string, args map[string]interface{}) ErrCode {
	c.t.Helper()
	out := c.open(op, args).collect()
	if out.err == nil {
		c.t.Fatalf("%s %v: expected an error, got %v", op, args, out.result)
	}
	return out.err.Code
}

func (c *testClient) close() { c.conn.Close() }

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func num(v interface{}) int64 {
	f, ok := v.(float64)
	if !ok {
		panic(fmt.Sprintf("not a number: %#v", v))
	}
	return int64(f)
}

var _ = errors.New
