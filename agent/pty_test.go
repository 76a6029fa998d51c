package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ptyStream follows a terminal's output (pty.start or proc.attach).
type ptyStream struct {
	t      *testing.T
	cs     *clientStream
	out    strings.Builder
	result *ProcessInfo
	err    *OpError
}

// startPty opens pty.start and returns the stream and the pid.
func (c *testClient) startPty(args map[string]interface{}) (*ptyStream, int) {
	c.t.Helper()
	cs := c.open("pty.start", args)
	f := cs.next()
	if f.Type != FrameEvent {
		c.t.Fatalf("pty.start %v: first frame %v %s", args, f.Type, f.Payload)
	}
	var ev struct {
		Type string `json:"type"`
		Pid  int    `json:"pid"`
	}
	json.Unmarshal(f.Payload, &ev)
	if ev.Type != "started" || ev.Pid <= 0 {
		c.t.Fatalf("started event %s", f.Payload)
	}
	return &ptyStream{t: c.t, cs: cs}, ev.Pid
}

// step reads one frame; false once the stream ended.
func (ps *ptyStream) step() bool {
	ps.t.Helper()
	if ps.result != nil || ps.err != nil {
		return false
	}
	f := ps.cs.next()
	switch f.Type {
	case FrameData:
		if f.Payload[0] != ChanStdout {
			ps.t.Fatalf("terminal output on channel %d", f.Payload[0])
		}
		ps.out.Write(f.Payload[1:])
		ps.cs.grant(len(f.Payload) - 1)
	case FrameEvent:
	case FrameResult:
		info := toInfo(ps.t, mustMap(ps.t, f.Payload))
		ps.result = &info
	case FrameError:
		ps.err = &OpError{}
		json.Unmarshal(f.Payload, ps.err)
	}
	return true
}

func mustMap(t *testing.T, b []byte) map[string]interface{} {
	var m map[string]interface{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("payload %s: %v", b, err)
	}
	return m
}

// waitOutput reads until the output matches re, returning the submatches.
func (ps *ptyStream) waitOutput(re string) []string {
	ps.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(testTimeout)
	for {
		if m := rx.FindStringSubmatch(ps.out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) || !ps.step() {
			ps.t.Fatalf("terminal output never matched %q; got %q (end %+v %v)", re, ps.out.String(), ps.result, ps.err)
		}
	}
}

func (ps *ptyStream) wait() ProcessInfo {
	ps.t.Helper()
	for ps.step() {
	}
	if ps.err != nil {
		ps.t.Fatalf("terminal stream failed: %v; output %q", ps.err, ps.out.String())
	}
	return *ps.result
}

func (c *testClient) typeIn(pid int, s string) {
	c.t.Helper()
	c.call("proc.stdin", map[string]interface{}{"pid": pid, "data": base64.StdEncoding.EncodeToString([]byte(s))})
}

// sleepJob types a command that runs `sleep secs` in the foreground and
// returns its pid once it runs sleep.
func (c *testClient) sleepJob(ps *ptyStream, pid int, secs int) int {
	c.t.Helper()
	tok := time.Now().UnixNano()
	c.typeIn(pid, fmt.Sprintf("sh -c 'echo job-$$-pid-%d; exec sleep %d'\n", tok, secs))
	m := ps.waitOutput(fmt.Sprintf(`job-(\d+)-pid-%d`, tok))
	job, _ := strconv.Atoi(m[1])
	waitFor(c.t, "the job to run sleep", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", job))
		return strings.TrimSpace(string(b)) == "sleep"
	})
	return job
}

func TestPtyCommandSeesATerminal(t *testing.T) {
	c := startTestAgent(t).dial()
	ps, _ := c.startPty(map[string]interface{}{"cmd": "stty size; tty; echo term=$TERM; test -t 0 && echo tty-in; exec 3</dev/tty && echo has-ctty; exit 3", "cols": 100, "rows": 30})
	info := ps.wait()
	out := ps.out.String()
	for _, want := range []string{"30 100\r\n", "/dev/pts/", "term=xterm-256color", "tty-in", "has-ctty"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	if info.ExitCode == nil || *info.ExitCode != 3 || info.Running {
		t.Fatalf("result %+v", info)
	}
}

func TestPtyShellInputResizeJobControl(t *testing.T) {
	c := startTestAgent(t).dial()
	ps, pid := c.startPty(map[string]interface{}{"cols": 80, "rows": 24, "envs": map[string]string{"PS1": "$ "}})
	c.typeIn(pid, "echo sum-$((40+2))\n")
	ps.waitOutput(`sum-42`)

	// resize: seen by a program that asks the terminal
	c.call("pty.resize", map[string]interface{}{"pid": pid, "cols": 123, "rows": 41})
	c.typeIn(pid, "echo cols-$(tput cols)-lines-$(tput lines)\n")
	ps.waitOutput(`cols-123-lines-41`)

	// Ctrl-C interrupts the foreground job; the shell goes on
	c.sleepJob(ps, pid, 100)
	c.typeIn(pid, "\x03")
	c.typeIn(pid, "echo status-$?\n")
	ps.waitOutput(`status-130`)

	// Ctrl-Z stops it: job control works
	c.sleepJob(ps, pid, 101)
	c.typeIn(pid, "\x1a")
	ps.waitOutput(`Stopped\s+sh -c`)
	c.typeIn(pid, "kill -9 %1; echo killed-$((1+1))\n")
	ps.waitOutput(`killed-2`)

	c.typeIn(pid, "exit 5\n")
	if info := ps.wait(); info.ExitCode == nil || *info.ExitCode != 5 {
		t.Fatalf("result %+v", info)
	}
	// after the end: no resize, no input
	if code := c.callErr("pty.resize", map[string]interface{}{"pid": pid, "cols": 10, "rows": 10}); code != CodeNotRunning {
		t.Fatalf("resize after exit: %s", code)
	}
}

func TestPtyReattachReplaysOutputMeanwhile(t *testing.T) {
	c := startTestAgent(t).dial()
	ps, pid := c.startPty(map[string]interface{}{"envs": map[string]string{"PS1": "$ "}})
	c.typeIn(pid, "echo first-$((1+1))\n")
	ps.waitOutput(`first-2`)
	ps.cs.cancel() // the client goes away; the shell stays
	c.typeIn(pid, "echo meanwhile-$((2+2))\n")
	time.Sleep(300 * time.Millisecond)
	if info, ok := c.procInfo(pid); !ok || !info.Running {
		t.Fatalf("the shell did not survive its stream: %+v", info)
	}
	at := &ptyStream{t: t, cs: c.open("proc.attach", map[string]interface{}{"pid": pid})}
	at.waitOutput(`(?s)first-2.*meanwhile-4`)
	c.typeIn(pid, "echo after-$((3+3))\n")
	at.waitOutput(`after-6`)
	c.call("proc.signal", map[string]interface{}{"pid": pid})
	if info := at.wait(); info.Signal == nil || *info.Signal != "SIGKILL" {
		t.Fatalf("result %+v", info)
	}
}

func TestPtySignalReachesTheForegroundJob(t *testing.T) {
	c := startTestAgent(t).dial()
	ps, pid := c.startPty(map[string]interface{}{"envs": map[string]string{"PS1": "$ "}})
	// an interactive shell ignores SIGINT and SIGTERM: the job in the foreground gets them
	c.sleepJob(ps, pid, 100)
	c.call("proc.signal", map[string]interface{}{"pid": pid, "signal": "SIGTERM"})
	c.typeIn(pid, "echo status-$?\n")
	ps.waitOutput(`status-143`)
	// SIGKILL ends the shell and its foreground job
	job := c.sleepJob(ps, pid, 100)
	c.call("proc.signal", map[string]interface{}{"pid": pid, "signal": "SIGKILL"})
	ps.wait()
	waitFor(t, "the foreground job to end", func() bool { return processGone(job) })
}

func TestPtyBadRequests(t *testing.T) {
	c := startTestAgent(t).dial()
	for _, args := range []map[string]interface{}{
		{"cols": 0},
		{"rows": 20000},
		{"cmd": "a\x00b"},
		{"cwd": "relative"},
	} {
		out := c.open("pty.start", args).collect()
		if out.err == nil || (out.err.Code != CodeBadRequest && out.err.Code != CodeInvalidPath) {
			t.Errorf("pty.start %v: %+v", args, out.err)
		}
	}
	_, pid := c.startProc(map[string]interface{}{"cmd": "sleep 30"})
	if code := c.callErr("pty.resize", map[string]interface{}{"pid": pid, "cols": 10, "rows": 10}); code != CodeBadRequest {
		t.Fatalf("resize of a process on pipes: %s", code)
	}
	if code := c.callErr("pty.resize", map[string]interface{}{"pid": 999999999, "cols": 10, "rows": 10}); code != CodeNotFound {
		t.Fatalf("resize of no process: %s", code)
	}
	if code := c.callErr("pty.resize", map[string]interface{}{"pid": pid, "cols": 10}); code != CodeBadRequest {
		t.Fatalf("resize without rows: %s", code)
	}
}
