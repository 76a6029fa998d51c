package main

// Tests of the virtio reconnect loop (servePort) against a fake port that
// behaves like virtioPort over the virtio_console driver: Read returns EOF
// at once while no host is connected and blocks while one is connected and
// idle, Write fails while no host is connected, connection changes send a
// SIGIO-like wakeup.

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

type fakePort struct {
	mu        sync.Mutex
	cond      *sync.Cond
	connected bool
	toGuest   []byte       // bytes the host sent, not yet read
	toHost    bytes.Buffer // bytes the agent wrote during the current connection
	wake      chan os.Signal
	calls     int // Read + hostConnected calls: spinning would grow this
	closed    bool
}

func newFakePort() *fakePort {
	p := &fakePort{wake: make(chan os.Signal, 1)}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *fakePort) sigio() {
	select {
	case p.wake <- syscall.SIGIO:
	default:
	}
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	for {
		if p.closed {
			return 0, syscall.ENODEV
		}
		if len(p.toGuest) > 0 {
			n := copy(b, p.toGuest)
			p.toGuest = p.toGuest[n:]
			return n, nil
		}
		if !p.connected {
			return 0, io.EOF
		}
		p.cond.Wait()
	}
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, syscall.ENODEV
	}
	if !p.connected {
		return 0, errHostGone
	}
	p.toHost.Write(b)
	p.cond.Broadcast()
	return len(b), nil
}

func (p *fakePort) hostConnected() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.closed {
		return false, syscall.ENODEV
	}
	return p.connected, nil
}

func (p *fakePort) connect(initial []byte) {
	p.mu.Lock()
	p.connected = true
	p.toHost.Reset()
	p.toGuest = append(p.toGuest, initial...)
	p.cond.Broadcast()
	p.mu.Unlock()
	p.sigio()
}

func (p *fakePort) disconnect() {
	p.mu.Lock()
	p.connected = false
	p.cond.Broadcast()
	p.mu.Unlock()
	p.sigio()
}

func (p *fakePort) send(b []byte) {
	p.mu.Lock()
	p.toGuest = append(p.toGuest, b...)
	p.cond.Broadcast()
	p.mu.Unlock()
	p.sigio()
}

func (p *fakePort) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// awaitFrame waits until the agent wrote its magic and then a final frame
// for stream id during the current connection, and returns that frame.
func (p *fakePort) awaitFrame(t *testing.T, id uint32) Frame {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		data := append([]byte(nil), p.toHost.Bytes()...)
		p.mu.Unlock()
		fr := NewFrameReader(bytes.NewReader(data))
		if fr.WaitMagic() == nil {
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					break
				}
				if f.Stream == id && (f.Type == FrameResult || f.Type == FrameError) {
					return f
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no final frame for stream %d", id)
	return Frame{}
}

func TestServePortReconnectWithoutSpinning(t *testing.T) {
	a := NewAgent("port", nil)
	a.testRoot = t.TempDir()
	a.workspace = t.TempDir()
	port := newFakePort()
	done := make(chan error, 1)
	go func() { done <- a.servePort(port, port.wake) }()

	idle := func(what string) {
		t.Helper()
		before := port.callCount()
		time.Sleep(500 * time.Millisecond)
		if n := port.callCount() - before; n > 3 {
			t.Fatalf("%s: %d port calls in 500ms: spinning", what, n)
		}
	}
	idle("never connected")

	open := func(id uint32, req string) []byte { return encodeFrame(id, FrameOpen, []byte(req)) }
	port.connect(append([]byte("garbage"+magic), open(1, `{"op":"sys.info"}`)...))
	if f := port.awaitFrame(t, 1); f.Type != FrameResult {
		t.Fatalf("first session: %v %s", f.Type, f.Payload)
	}

	// A stream blocked on credit when the host leaves.
	port.send(open(2, `{"op":"proc.start","cmd":"head -c 1000000 /dev/zero; sleep 0.2; echo end"}`))
	time.Sleep(200 * time.Millisecond)
	port.disconnect()
	idle("disconnected")

	// After a restore the port may still hold stale bytes; the new
	// session skips them up to the magic.
	port.connect(append([]byte("stale \x00\x00\x00\x05"+magic), open(1, `{"op":"proc.list"}`)...))
	f := port.awaitFrame(t, 1)
	var res struct {
		Processes []ProcessInfo `json:"processes"`
	}
	if err := json.Unmarshal(f.Payload, &res); err != nil || f.Type != FrameResult || len(res.Processes) != 1 {
		t.Fatalf("second session: %v %s", f.Type, f.Payload)
	}
	waitFor(t, "process end", func() bool { return !a.procs.list()[0].Running })

	// The host reconnects so fast that the idle session never saw EOF: its
	// magic arrives where a frame header is expected. The old session ends
	// on the oversized "length" and the next one finds the magic.
	port.mu.Lock()
	port.toHost.Reset()
	port.mu.Unlock()
	port.send(append([]byte(magic), open(7, `{"op":"sys.info"}`)...))
	if f := port.awaitFrame(t, 7); f.Type != FrameResult {
		t.Fatalf("after a missed disconnect: %v %s", f.Type, f.Payload)
	}

	// Host goes away for good, then the port is unplugged: servePort
	// returns so the caller can reopen it.
	port.disconnect()
	idle("disconnected again")
	port.mu.Lock()
	port.closed = true
	port.cond.Broadcast()
	port.mu.Unlock()
	port.sigio()
	select {
	case err := <-done:
		if !errPortGone(err) {
			t.Fatalf("servePort: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("servePort did not return after the port failed")
	}
	a.procs.killAll()
	a.streamsWG.Wait()
}
