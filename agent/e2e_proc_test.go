package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startProc opens proc.start and returns the stream and the pid from the
// started event.
func (c *testClient) startProc(args map[string]interface{}) (*clientStream, int) {
	c.t.Helper()
	cs := c.open("proc.start", args)
	f := cs.next()
	if f.Type != FrameEvent {
		if f.Type == FrameError {
			c.t.Fatalf("proc.start %v: %s", args, f.Payload)
		}
		c.t.Fatalf("proc.start: first frame %v", f.Type)
	}
	var ev struct {
		Type string `json:"type"`
		Pid  int    `json:"pid"`
	}
	json.Unmarshal(f.Payload, &ev)
	if ev.Type != "started" || ev.Pid <= 0 {
		c.t.Fatalf("started event %s", f.Payload)
	}
	return cs, ev.Pid
}

// run starts cmd and collects everything until its RESULT.
func (c *testClient) run(args map[string]interface{}) (*streamOutput, ProcessInfo) {
	c.t.Helper()
	cs, _ := c.startProc(args)
	out := cs.collect()
	if out.err != nil {
		c.t.Fatalf("proc.start %v: %v", args, out.err)
	}
	return out, toInfo(c.t, out.result)
}

func toInfo(t *testing.T, m map[string]interface{}) ProcessInfo {
	t.Helper()
	b, _ := json.Marshal(m)
	var info ProcessInfo
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("ProcessInfo %s: %v", b, err)
	}
	return info
}

func (c *testClient) procInfo(pid int) (ProcessInfo, bool) {
	r := c.call("proc.list", nil)
	for _, p := range r["processes"].([]interface{}) {
		info := toInfo(c.t, p.(map[string]interface{}))
		if info.Pid == pid {
			return info, true
		}
	}
	return ProcessInfo{}, false
}

func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	// A zombie not yet reaped by its new parent counts as gone.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

func TestProcOutputStreamedWhileRunning(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	cs, pid := c.startProc(map[string]interface{}{"cmd": "echo a; sleep 0.3; echo b >&2", "tag": "t1"})
	f := cs.next()
	if f.Type != FrameData || f.Payload[0] != ChanStdout || string(f.Payload[1:]) != "a\n" {
		t.Fatalf("first output %v %q", f.Type, f.Payload)
	}
	firstAt := time.Now()
	// The process is still running now.
	if info, ok := c.procInfo(pid); !ok || !info.Running || info.ExitCode != nil {
		t.Fatalf("info while running %+v", info)
	}
	f = cs.next()
	if f.Type != FrameData || f.Payload[0] != ChanStderr || string(f.Payload[1:]) != "b\n" {
		t.Fatalf("second output %v %q", f.Type, f.Payload)
	}
	if d := time.Since(firstAt); d < 200*time.Millisecond {
		t.Fatalf("stderr came %v after stdout; output was not streamed", d)
	}
	f = cs.next()
	if f.Type != FrameResult {
		t.Fatalf("final frame %v", f.Type)
	}
	var info ProcessInfo
	json.Unmarshal(f.Payload, &info)
	if info.Pid != pid || info.Running || info.ExitCode == nil || *info.ExitCode != 0 || info.Signal != nil ||
		info.Tag != "t1" || info.Cmd != "echo a; sleep 0.3; echo b >&2" || info.Cwd != ta.a.workspace || info.StartedAtMs == 0 {
		t.Fatalf("result %+v", info)
	}
}

func TestProcExitCodeEnvCwd(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	_, info := c.run(map[string]interface{}{"cmd": "exit 3"})
	if *info.ExitCode != 3 || info.Signal != nil {
		t.Fatalf("exit 3: %+v", info)
	}
	_, info = c.run(map[string]interface{}{"cmd": "kill -TERM $$"})
	if info.ExitCode == nil || *info.ExitCode != -1 || info.Signal == nil || *info.Signal != "SIGTERM" {
		t.Fatalf("killed by signal: %+v", info)
	}
	out, _ := c.run(map[string]interface{}{
		"cmd":  `echo "$FOO|$LANG|$TERM|$HOME|$USER|$PATH"; pwd`,
		"envs": map[string]string{"FOO": "bar baz"},
		"cwd":  ta.dir,
	})
	home, user := "/root", "root"
	if os.Geteuid() != 0 {
		u, _ := currentUser()
		home, user = u.Home, u.Name
	}
	want := "bar baz|C.UTF-8|xterm-256color|" + home + "|" + user + "|" + defaultPATH + "\n" + ta.dir + "\n"
	if string(out.stdout) != want {
		t.Fatalf("stdout %q, want %q", out.stdout, want)
	}
	// Default cwd is the workspace, created when missing.
	os.RemoveAll(ta.a.workspace)
	out, _ = c.run(map[string]interface{}{"cmd": "pwd"})
	if string(out.stdout) != ta.a.workspace+"\n" {
		t.Fatalf("default cwd %q", out.stdout)
	}
	// sys.init envs apply to later processes, under the request's envs.
	c.call("sys.init", sysInitArgs(map[string]interface{}{"envs": map[string]string{"A": "1", "B": "2"}}))
	out, _ = c.run(map[string]interface{}{"cmd": `echo "$A$B"`, "envs": map[string]string{"B": "3"}})
	if string(out.stdout) != "13\n" {
		t.Fatalf("default envs: %q", out.stdout)
	}
	// Start failures.
	if code := c.callErr("proc.start", map[string]interface{}{"cmd": "true", "cwd": filepath.Join(ta.dir, "nope")}); code != CodeProcessFailed {
		t.Fatalf("missing cwd: %s", code)
	}
	if code := c.callErr("proc.start", map[string]interface{}{"cmd": "true", "user": "no-such-user-xyz"}); code != CodeProcessFailed {
		t.Fatalf("unknown user: %s", code)
	}
	if code := c.callErr("proc.start", map[string]interface{}{"cwd": ta.dir}); code != CodeBadRequest {
		t.Fatalf("missing cmd: %s", code)
	}
	if code := c.callErr("proc.start", map[string]interface{}{"cmd": "true", "envs": map[string]string{"A=B": "x"}}); code != CodeBadRequest {
		t.Fatalf("bad env name: %s", code)
	}
	if os.Geteuid() == 0 {
		if u, _ := lookupUser("nobody"); u != nil {
			out, _ = c.run(map[string]interface{}{"cmd": `id -u; echo $USER $HOME`, "user": "nobody", "cwd": "/"})
			want := fmt.Sprintf("%d\nnobody %s\n", u.Uid, u.Home)
			if string(out.stdout) != want {
				t.Fatalf("as nobody: %q, want %q", out.stdout, want)
			}
		}
	}
}

// sys.init user and cwd are the defaults of later process starts that name
// none (a built template's USER and WORKDIR); absent leaves them, empty
// resets them, a request's own user and cwd win.
func TestProcDefaultsFromSysInit(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	dir := filepath.Join(ta.dir, "app")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.call("sys.init", sysInitArgs(map[string]interface{}{"cwd": dir}))
	if out, _ := c.run(map[string]interface{}{"cmd": "pwd"}); string(out.stdout) != dir+"\n" {
		t.Fatalf("default cwd: %q", out.stdout)
	}
	// a later sys.init without cwd keeps it (a sandbox's own sys.init after a restore)
	c.call("sys.init", sysInitArgs(nil))
	if out, _ := c.run(map[string]interface{}{"cmd": "pwd"}); string(out.stdout) != dir+"\n" {
		t.Fatalf("kept cwd: %q", out.stdout)
	}
	if out, _ := c.run(map[string]interface{}{"cmd": "pwd", "cwd": ta.dir}); string(out.stdout) != ta.dir+"\n" {
		t.Fatalf("request cwd: %q", out.stdout)
	}
	if code := c.callErr("sys.init", sysInitArgs(map[string]interface{}{"cwd": "relative"})); code != CodeBadRequest && code != CodeInvalidPath {
		t.Fatalf("relative default cwd: %s", code)
	}
	c.call("sys.init", sysInitArgs(map[string]interface{}{"cwd": ""}))
	if out, _ := c.run(map[string]interface{}{"cmd": "pwd"}); string(out.stdout) != ta.a.workspace+"\n" {
		t.Fatalf("reset cwd: %q", out.stdout)
	}
	c.call("sys.init", sysInitArgs(map[string]interface{}{"user": "no-such-user-xyz"}))
	if code := c.callErr("proc.start", map[string]interface{}{"cmd": "true"}); code != CodeProcessFailed {
		t.Fatalf("unknown default user: %s", code)
	}
	if os.Geteuid() == 0 {
		if u, _ := lookupUser("nobody"); u != nil {
			c.call("sys.init", sysInitArgs(map[string]interface{}{"user": "nobody", "cwd": "/"}))
			if out, _ := c.run(map[string]interface{}{"cmd": "id -u"}); string(out.stdout) != fmt.Sprintf("%d\n", u.Uid) {
				t.Fatalf("default user: %q", out.stdout)
			}
			if out, _ := c.run(map[string]interface{}{"cmd": "id -u", "user": "root"}); string(out.stdout) != "0\n" {
				t.Fatalf("request user: %q", out.stdout)
			}
		}
	}
	c.call("sys.init", sysInitArgs(map[string]interface{}{"user": "", "cwd": ""}))
}

func TestProcStdin(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	// Streamed on the start stream.
	cs, _ := c.startProc(map[string]interface{}{"cmd": "cat; echo done >&2", "stdin": true})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB: more than one window
	go func() {
		cs.sendData(payload)
		cs.end()
	}()
	out := cs.collect()
	if out.err != nil || !bytes.Equal(out.stdout, payload) || string(out.stderr) != "done\n" {
		t.Fatalf("cat: err %v, %d bytes out, stderr %q", out.err, len(out.stdout), out.stderr)
	}

	// Through proc.stdin from another stream.
	cs, pid := c.startProc(map[string]interface{}{"cmd": "cat", "stdin": true})
	cs.cancel() // the process keeps running
	c.call("proc.stdin", map[string]interface{}{"pid": pid, "data": base64.StdEncoding.EncodeToString([]byte("hello "))})
	c.call("proc.stdin", map[string]interface{}{"pid": pid, "data": base64.StdEncoding.EncodeToString([]byte("world")), "close": true})
	at := c.open("proc.attach", map[string]interface{}{"pid": pid}).collect()
	if at.err != nil || string(at.stdout) != "hello world" || toInfo(t, at.result).Running {
		t.Fatalf("attach: %v %q %v", at.err, at.stdout, at.result)
	}
	if code := c.callErr("proc.stdin", map[string]interface{}{"pid": pid, "data": "eA=="}); code != CodeNotRunning {
		t.Fatalf("stdin after exit: %s", code)
	}
	// No stdin pipe.
	cs, pid = c.startProc(map[string]interface{}{"cmd": "sleep 30"})
	if code := c.callErr("proc.stdin", map[string]interface{}{"pid": pid, "data": "eA=="}); code != CodeBadRequest {
		t.Fatalf("stdin without pipe: %s", code)
	}
	if code := c.callErr("proc.stdin", map[string]interface{}{"pid": 999999999, "data": "eA=="}); code != CodeNotFound {
		t.Fatalf("stdin unknown pid: %s", code)
	}
	c.call("proc.signal", map[string]interface{}{"pid": pid})
	cs.collect()
}

func TestProcTimeout(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	start := time.Now()
	out, info := c.run(map[string]interface{}{"cmd": "echo started; sleep 30", "timeoutMs": 300})
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	if !info.TimedOut || info.Signal == nil || *info.Signal != "SIGKILL" || *info.ExitCode != -1 || string(out.stdout) != "started\n" {
		t.Fatalf("timed out process: %+v, stdout %q", info, out.stdout)
	}
	_, info = c.run(map[string]interface{}{"cmd": "true", "timeoutMs": 5000})
	if info.TimedOut || *info.ExitCode != 0 {
		t.Fatalf("fast process: %+v", info)
	}
}

func TestProcBackgroundSignalAttach(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	cs, pid := c.startProc(map[string]interface{}{"cmd": "echo hi; sleep 30", "tag": "bg"})
	f := cs.next()
	if f.Type != FrameData || string(f.Payload[1:]) != "hi\n" {
		t.Fatalf("output %q", f.Payload)
	}
	cs.cancel()
	time.Sleep(100 * time.Millisecond)
	info, ok := c.procInfo(pid)
	if !ok || !info.Running || info.Tag != "bg" {
		t.Fatalf("after cancel: %+v %v", info, ok)
	}
	// attach while running without replay, then kill
	at := c.open("proc.attach", map[string]interface{}{"pid": pid, "replay": false})
	time.Sleep(50 * time.Millisecond)
	c.call("proc.signal", map[string]interface{}{"pid": pid, "signal": "SIGTERM"})
	out := at.collect()
	if out.err != nil || len(out.stdout) != 0 {
		t.Fatalf("attach without replay: %v %q", out.err, out.stdout)
	}
	info = toInfo(t, out.result)
	if info.Running || info.Signal == nil || *info.Signal != "SIGTERM" {
		t.Fatalf("attach result %+v", info)
	}
	// attach after exit replays the output
	out = c.open("proc.attach", map[string]interface{}{"pid": pid}).collect()
	if out.err != nil || string(out.stdout) != "hi\n" || toInfo(t, out.result).Pid != pid {
		t.Fatalf("attach after exit: %v %q", out.err, out.stdout)
	}
	if code := c.callErr("proc.signal", map[string]interface{}{"pid": pid}); code != CodeNotRunning {
		t.Fatalf("signal after exit: %s", code)
	}
	if code := c.callErr("proc.signal", map[string]interface{}{"pid": 999999999}); code != CodeNotFound {
		t.Fatalf("signal unknown: %s", code)
	}
	if code := c.callErr("proc.attach", map[string]interface{}{"pid": 999999999}); code != CodeNotFound {
		t.Fatalf("attach unknown: %s", code)
	}
	cs2, pid2 := c.startProc(map[string]interface{}{"cmd": "sleep 30"})
	if code := c.callErr("proc.signal", map[string]interface{}{"pid": pid2, "signal": "SIGWHAT"}); code != CodeBadRequest {
		t.Fatalf("bad signal: %s", code)
	}
	c.call("proc.signal", map[string]interface{}{"pid": pid2}) // default SIGKILL
	if info := toInfo(t, cs2.collect().result); info.Signal == nil || *info.Signal != "SIGKILL" {
		t.Fatalf("default signal: %+v", info)
	}
}

func TestProcGroupAndBackgroundChildren(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	// Killing the group kills a background child too.
	cs, pid := c.startProc(map[string]interface{}{"cmd": "sleep 100 & echo $!; sleep 30"})
	f := cs.next()
	child, err := strconv.Atoi(strings.TrimSpace(string(f.Payload[1:])))
	if err != nil {
		t.Fatalf("child pid %q", f.Payload)
	}
	c.call("proc.signal", map[string]interface{}{"pid": pid, "signal": "SIGKILL"})
	cs.collect()
	waitFor(t, "background child to die", func() bool { return processGone(child) })

	// A command that leaves a background child holding its stdout ends
	// without waiting for that child, with all of its own output.
	start := time.Now()
	out, info := c.run(map[string]interface{}{"cmd": "sleep 100 & echo $!; head -c 100000 /dev/zero | tr '\\0' x"})
	if time.Since(start) > 10*time.Second || *info.ExitCode != 0 {
		t.Fatalf("ended after %v: %+v", time.Since(start), info)
	}
	lines := strings.SplitN(string(out.stdout), "\n", 2)
	child, _ = strconv.Atoi(lines[0])
	if len(lines) != 2 || len(lines[1]) != 100000 || child <= 0 {
		t.Fatalf("output: %d bytes", len(out.stdout))
	}
	if processGone(child) {
		t.Fatalf("background child died (SIGPIPE?)")
	}
	syscall.Kill(-info.Pid, syscall.SIGKILL)
	waitFor(t, "background child to die", func() bool { return processGone(child) })
}

func TestProcOutputWithoutCredit(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	const total = 20 << 20
	cs, pid := c.startProc(map[string]interface{}{"cmd": fmt.Sprintf("head -c %d /dev/zero", total)})
	// Grant nothing: the process must still finish.
	waitFor(t, "process end", func() bool {
		info, ok := c.procInfo(pid)
		return ok && !info.Running
	})
	var received, lost int64
	lostEvents := 0
	for {
		f := cs.next()
		switch f.Type {
		case FrameData:
			if f.Payload[0] != ChanStdout {
				t.Fatalf("channel %d", f.Payload[0])
			}
			received += int64(len(f.Payload) - 1)
			cs.grant(len(f.Payload) - 1)
			continue
		case FrameEvent:
			var ev map[string]interface{}
			json.Unmarshal(f.Payload, &ev)
			if ev["type"] != "lost" {
				t.Fatalf("event %v", ev)
			}
			lost += num(ev["bytes"])
			lostEvents++
			continue
		case FrameResult:
		default:
			t.Fatalf("frame %v %s", f.Type, f.Payload)
		}
		info := toInfo(t, func() map[string]interface{} {
			var m map[string]interface{}
			json.Unmarshal(f.Payload, &m)
			return m
		}())
		if *info.ExitCode != 0 {
			t.Fatalf("result %+v", info)
		}
		break
	}
	if lostEvents == 0 || lost == 0 {
		t.Fatalf("no lost event (received %d)", received)
	}
	if received+lost != total {
		t.Fatalf("received %d + lost %d != %d", received, lost, total)
	}
	if received > initialWindowBytes+outputBufferBytes {
		t.Fatalf("received %d: more than the window plus the ring", received)
	}
	// Replay after exit starts at the oldest held byte.
	out := c.open("proc.attach", map[string]interface{}{"pid": pid}).collect()
	if len(out.stdout) == 0 || len(out.stdout) > outputBufferBytes || len(out.events) != 0 {
		t.Fatalf("replay: %d bytes, events %v", len(out.stdout), out.events)
	}
}

// With argv the program runs itself, no shell: its arguments are not
// parsed, a name is found in the process's PATH, and cmd is only shown.
func TestProcArgvWithoutShell(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	out, info := c.run(map[string]interface{}{"cmd": "shown only", "argv": []string{"printf", "%s|%s", "$HOME", "a b;c"}, "cwd": ta.dir})
	if string(out.stdout) != "$HOME|a b;c" || *info.ExitCode != 0 || info.Cmd != "shown only" {
		t.Fatalf("argv: %q %+v", out.stdout, info)
	}
	_, info = c.run(map[string]interface{}{"cmd": "x", "argv": []string{"sh", "-c", "exit 7"}, "envs": map[string]string{"PATH": "/usr/bin:/bin"}})
	if *info.ExitCode != 7 {
		t.Fatalf("exit code through argv: %+v", info)
	}
	for _, argv := range [][]string{{""}, {"echo", "a\x00b"}} {
		if got := c.callErr("proc.start", map[string]interface{}{"cmd": "x", "argv": argv}); got != CodeBadRequest {
			t.Errorf("argv %q: %s, want bad_request", argv, got)
		}
	}
	if got := c.callErr("proc.start", map[string]interface{}{"cmd": "x", "argv": []string{"no-such-program-here"}}); got != CodeProcessFailed {
		t.Errorf("missing program: %s", got)
	}
}
