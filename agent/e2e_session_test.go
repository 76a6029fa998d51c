package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sysInitArgs(extra map[string]interface{}) map[string]interface{} {
	ent := make([]byte, 32)
	rand.Read(ent)
	args := map[string]interface{}{
		"timeMs":    time.Now().UnixMilli(),
		"entropy":   base64.StdEncoding.EncodeToString(ent),
		"hostname":  "sandbox-1",
		"machineId": "0123456789abcdef0123456789abcdef",
	}
	for k, v := range extra {
		args[k] = v
	}
	return args
}

func TestSysInfoAndInit(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	info := c.call("sys.info", nil)
	if info["version"] != "test-version" || num(info["protocol"]) != 1 || info["initialized"] != false {
		t.Fatalf("sys.info %v", info)
	}
	if d := time.Now().UnixMilli() - num(info["timeMs"]); d < -1000 || d > 1000 {
		t.Fatalf("timeMs off by %d", d)
	}
	if num(info["uptimeMs"]) <= 0 {
		t.Fatalf("uptimeMs %v", info["uptimeMs"])
	}
	bootID := "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
	r := c.call("sys.init", sysInitArgs(map[string]interface{}{"bootId": bootID}))
	if d := time.Now().UnixMilli() - num(r["timeMs"]); d < -1000 || d > 1000 {
		t.Fatalf("sys.init timeMs %v", r)
	}
	root := ta.a.testRoot
	for path, want := range map[string]string{
		"etc/hostname":          "sandbox-1\n",
		"etc/machine-id":        "0123456789abcdef0123456789abcdef\n",
		"run/nullspace/boot_id": bootID + "\n",
	} {
		if b, err := os.ReadFile(filepath.Join(root, path)); err != nil || string(b) != want {
			t.Fatalf("%s: %q %v", path, b, err)
		}
	}
	info = c.call("sys.info", nil)
	if info["initialized"] != true || info["bootId"] != bootID || info["hostname"] != "sandbox-1" {
		t.Fatalf("sys.info after init %v", info)
	}
	// Idempotent; the boot id file is rewritten in place (same inode).
	before, _ := os.Stat(filepath.Join(root, "run/nullspace/boot_id"))
	bootID2 := "2b4e28ba-2fa1-11d2-883f-0016d3cca427"
	c.call("sys.init", sysInitArgs(map[string]interface{}{"bootId": bootID2}))
	after, _ := os.Stat(filepath.Join(root, "run/nullspace/boot_id"))
	if !os.SameFile(before, after) {
		t.Fatalf("boot_id file replaced instead of rewritten")
	}
	if got := c.call("sys.info", nil)["bootId"]; got != bootID2 {
		t.Fatalf("bootId %v", got)
	}
	bad := []map[string]interface{}{
		{"machineId": "XYZ"},
		{"entropy": base64.StdEncoding.EncodeToString([]byte("short"))},
		{"entropy": "!!!"},
		{"hostname": "bad host"},
		{"bootId": "not-a-uuid"},
		{"timeMs": "yesterday"},
	}
	for _, b := range bad {
		if code := c.callErr("sys.init", sysInitArgs(b)); code != CodeBadRequest {
			t.Errorf("sys.init %v: %s", b, code)
		}
	}
	args := sysInitArgs(nil)
	delete(args, "hostname")
	if code := c.callErr("sys.init", args); code != CodeBadRequest {
		t.Errorf("sys.init without hostname: %s", code)
	}
	// A new connection (which may be a restore) needs sys.init again.
	c.close()
	waitFor(t, "session end", func() bool { return !ta.a.sys.isInitialized() })
	c2 := ta.dial()
	if c2.call("sys.info", nil)["initialized"] != false {
		t.Fatalf("initialized after reconnect")
	}
}

func TestSysWarmup(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	marker := filepath.Join(t.TempDir(), "ran")
	r := c.call("sys.warmup", map[string]interface{}{"cmd": "echo hi > " + marker + "; echo out; echo err >&2; exit 3"})
	if num(r["exitCode"]) != 3 || num(r["tookUs"]) <= 0 {
		t.Fatalf("sys.warmup: %v", r)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "hi\n" {
		t.Fatalf("the warm-up command did not run: %q %v", b, err)
	}
	// recorded nowhere
	if procs := c.call("proc.list", nil)["processes"].([]interface{}); len(procs) != 0 {
		t.Fatalf("the warm-up process is listed: %v", procs)
	}
	// killed at its timeout
	start := time.Now()
	r = c.call("sys.warmup", map[string]interface{}{"cmd": "sleep 30", "timeoutMs": 200})
	if num(r["exitCode"]) != -1 || time.Since(start) > 10*time.Second {
		t.Fatalf("sys.warmup past its timeout: %v after %v", r, time.Since(start))
	}
	for _, bad := range []map[string]interface{}{{}, {"cmd": "true", "timeoutMs": 0}, {"cmd": "a\x00b"}} {
		if code := c.callErr("sys.warmup", bad); code != CodeBadRequest {
			t.Errorf("sys.warmup %v: %s", bad, code)
		}
	}
}

func TestSysInitPrivilegedWithoutRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("as root the privileged calls would change this machine")
	}
	ta := startTestAgent(t)
	ta.a.testRoot = "" // really try: settimeofday must fail cleanly
	c := ta.dial()
	if code := c.callErr("sys.init", sysInitArgs(nil)); code != CodePermissionDenied {
		t.Fatalf("sys.init unprivileged: %s", code)
	}
}

func TestProtocolErrors(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	if code := c.callErr("no.such.op", nil); code != CodeUnknownOp {
		t.Fatalf("unknown op: %s", code)
	}
	out := c.openRaw(100, []byte("{not json")).collect()
	if out.err == nil || out.err.Code != CodeBadRequest {
		t.Fatalf("bad JSON: %+v", out.err)
	}
	out = c.openRaw(101, []byte(`{"path":"/"}`)).collect()
	if out.err == nil || out.err.Code != CodeBadRequest {
		t.Fatalf("missing op: %+v", out.err)
	}
	// OPEN on an open stream id.
	c.openRaw(200, []byte(`{"op":"proc.start","cmd":"sleep 30"}`))
	cs := c.openRaw(200, []byte(`{"op":"sys.info"}`))
	var gotErr bool
	for !gotErr {
		f := cs.next()
		switch f.Type {
		case FrameEvent:
			continue // started
		case FrameError:
			var e OpError
			json.Unmarshal(f.Payload, &e)
			if e.Code != CodeBadRequest {
				t.Fatalf("duplicate OPEN: %v", e)
			}
			gotErr = true
		default:
			t.Fatalf("duplicate OPEN: frame %v", f.Type)
		}
	}
	// Frames for unknown streams and of unknown types are ignored.
	c.writeFrame(999, FrameData, []byte{0, 1, 2})
	c.writeFrame(999, FrameWindow, []byte{0, 0, 1, 0})
	c.writeFrame(999, FrameCancel, nil)
	c.writeFrame(999, FrameEnd, nil)
	c.writeFrame(3, FrameType(99), []byte("?"))
	c.writeFrame(0, FrameOpen, []byte(`{"op":"sys.info"}`))
	if r := c.call("sys.info", nil); r["protocol"] == nil {
		t.Fatalf("session broken")
	}
}

func TestGarbageBeforeMagic(t *testing.T) {
	ta := startTestAgent(t)
	garbage := []byte("stale bytes from an earlier session NSAGENT NSAG \x00\x01\x02")
	c := ta.dialWithPrefix(garbage)
	if r := c.call("sys.info", nil); num(r["protocol"]) != 1 {
		t.Fatalf("sys.info %v", r)
	}
}

func TestOversizedFrameEndsSession(t *testing.T) {
	ta := startTestAgent(t)
	conn, err := net.Dial("unix", ta.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := make([]byte, frameHeaderBytes)
	binary.BigEndian.PutUint32(hdr, maxPayloadBytes+1)
	binary.BigEndian.PutUint32(hdr[4:], 1)
	hdr[8] = byte(FrameData)
	conn.Write([]byte(magic))
	conn.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, len(magic))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != magic {
		t.Fatalf("handshake: %q %v", got, err)
	}
	conn.Write(hdr)
	b, err := io.ReadAll(conn) // returns at EOF: the agent closed the session
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if len(b) != 0 {
		t.Fatalf("got %q before close", b)
	}
}

func TestDisconnectAndReconnect(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	big := filepath.Join(ta.dir, "big")
	os.WriteFile(big, make([]byte, 4<<20), 0o644)
	rd := c.open("fs.read", map[string]interface{}{"path": big})
	rd.next() // mid-stream: the agent now waits for credit
	_, pid := c.startProc(map[string]interface{}{"cmd": "echo x; sleep 30"})
	wr := c.open("fs.write", map[string]interface{}{"path": filepath.Join(ta.dir, "partial")})
	wr.sendData([]byte("partial"))
	time.Sleep(50 * time.Millisecond)
	c.close()

	c2 := ta.dial()
	if r := c2.call("sys.info", nil); num(r["protocol"]) != 1 {
		t.Fatalf("sys.info %v", r)
	}
	info, ok := c2.procInfo(pid)
	if !ok || !info.Running {
		t.Fatalf("process after disconnect: %+v %v", info, ok)
	}
	c2.call("proc.signal", map[string]interface{}{"pid": pid})
	at := c2.open("proc.attach", map[string]interface{}{"pid": pid}).collect()
	if string(at.stdout) != "x\n" {
		t.Fatalf("attach after reconnect %q", at.stdout)
	}
	waitFor(t, "partial write discarded", func() bool {
		m, _ := filepath.Glob(filepath.Join(ta.dir, ".partial.nstmp-*"))
		return len(m) == 0
	})
	if _, err := os.Stat(filepath.Join(ta.dir, "partial")); !os.IsNotExist(err) {
		t.Fatalf("partial write committed: %v", err)
	}
	// Sessions are independent: a third concurrent client works too.
	c3 := ta.dial()
	if !strings.HasPrefix(c3.call("sys.info", nil)["version"].(string), "test") {
		t.Fatalf("third session")
	}
}

// TestServeConnOverPipe runs a session over net.Pipe (no socket): the
// session code depends only on io.ReadWriter.
func TestServeConnOverPipe(t *testing.T) {
	a := NewAgent("pipe", nil)
	a.testRoot = t.TempDir()
	host, guest := net.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := a.ServeConn(guest, func() { guest.Close() })
		done <- err
	}()
	go host.Write(append([]byte("junk"+magic), encodeFrame(1, FrameOpen, []byte(`{"op":"sys.info"}`))...))
	fr := NewFrameReader(host)
	if err := fr.WaitMagic(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil || f.Type != FrameResult || f.Stream != 1 {
		t.Fatalf("frame %+v %v", f, err)
	}
	host.Close()
	select {
	case err := <-done:
		if err != nil && err != io.EOF && !strings.Contains(err.Error(), "closed") {
			t.Fatalf("ServeConn: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("ServeConn did not return after disconnect")
	}
	a.streamsWG.Wait()
}
