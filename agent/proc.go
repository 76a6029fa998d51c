package main

// Processes: the process table, output capture and the proc.* ops.
//
// Each process runs `/bin/bash -c CMD` (or /bin/sh) in its own session and
// process group. Its stdout and stderr are pipes read by the agent into a
// bounded ring (outputRing); subscribers (the proc.start stream, proc.attach
// streams) follow the ring at their own pace, so the process never blocks
// on a slow host. A subscriber that falls behind further than the ring
// holds gets EVENT {"type":"lost","bytes":N}.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"
)

const (
	maxEndedProcs    = 256
	defaultWorkspace = "/workspace"
	defaultPATH      = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	ioctlFIONREAD    = 0x541B
)

// ProcTable holds running processes and the last maxEndedProcs ended ones.
type ProcTable struct {
	mu    sync.Mutex
	byPid map[int]*Process
	ended []*Process // in order of ending
}

func newProcTable() *ProcTable { return &ProcTable{byPid: make(map[int]*Process)} }

func (t *ProcTable) get(pid int) *Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byPid[pid]
}

func (t *ProcTable) add(p *Process) {
	t.mu.Lock()
	t.byPid[p.pid] = p
	t.mu.Unlock()
}

func (t *ProcTable) markEnded(p *Process) {
	t.mu.Lock()
	t.ended = append(t.ended, p)
	var evicted []*Process
	for len(t.ended) > maxEndedProcs {
		old := t.ended[0]
		t.ended[0] = nil
		t.ended = t.ended[1:]
		if t.byPid[old.pid] == old {
			delete(t.byPid, old.pid)
		}
		evicted = append(evicted, old)
	}
	t.mu.Unlock()
	for _, old := range evicted {
		old.evict()
	}
}

func (t *ProcTable) list() []ProcessInfo {
	t.mu.Lock()
	procs := make([]*Process, 0, len(t.byPid))
	for _, p := range t.byPid {
		procs = append(procs, p)
	}
	t.mu.Unlock()
	infos := make([]ProcessInfo, 0, len(procs))
	for _, p := range procs {
		infos = append(infos, p.info())
	}
	sort.Slice(infos, func(i, j int) bool {
		if infos[i].StartedAtMs != infos[j].StartedAtMs {
			return infos[i].StartedAtMs < infos[j].StartedAtMs
		}
		return infos[i].Pid < infos[j].Pid
	})
	return infos
}

// killAll SIGKILLs the groups of all running processes (used by tests).
func (t *ProcTable) killAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.byPid {
		p.mu.Lock()
		if !p.exited {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
		p.mu.Unlock()
	}
}

// Process is one started process.
type Process struct {
	pid       int
	cmd       string
	cwd       string
	tag       string
	startedAt time.Time
	hasStdin  bool
	pipes     []*pipeReader

	mu       sync.Mutex
	out      outputRing
	changed  chan struct{} // closed and replaced on every output or state change
	exited   bool          // reaped
	finished bool          // reaped and the output it wrote is in the ring: info is final
	exitCode *int
	signal   *string
	timedOut bool
	evicted  bool
	stdin    *os.File // write end; nil when closed or absent
	tty      *os.File // a terminal's master (pty.start: also stdin); nil for a process on pipes

	stdinMu sync.Mutex // serializes writes to stdin
}

func (p *Process) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Process) info() ProcessInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.infoLocked()
}

// infoCmdMax bounds the command line a ProcessInfo carries: proc.list
// answers with up to 256 ended processes and must stay far below a frame.
const infoCmdMax = 2048

// shortCmd is cmd, or its first infoCmdMax bytes (at a UTF-8 boundary) and
// an ellipsis when longer.
func shortCmd(cmd string) string {
	if len(cmd) <= infoCmdMax {
		return cmd
	}
	cut := infoCmdMax
	for cut > 0 && !utf8.RuneStart(cmd[cut]) {
		cut--
	}
	return cmd[:cut] + "…"
}

func (p *Process) infoLocked() ProcessInfo {
	return ProcessInfo{
		Pid:         p.pid,
		Cmd:         shortCmd(p.cmd),
		Cwd:         p.cwd,
		Tag:         p.tag,
		StartedAtMs: p.startedAt.UnixMilli(),
		Running:     !p.finished,
		ExitCode:    p.exitCode,
		Signal:      p.signal,
		TimedOut:    p.timedOut,
	}
}

func (p *Process) appendOutput(ch byte, data []byte) {
	p.mu.Lock()
	if !p.evicted {
		p.out.append(ch, data)
		p.notifyLocked()
	}
	p.mu.Unlock()
}

func (p *Process) evict() {
	p.mu.Lock()
	p.evicted = true
	p.out.release()
	p.mu.Unlock()
}

var errStdinClosed = errors.New("stdin is closed")

// writeStdin writes data to the process's stdin; ctx aborts a write that
// blocks because the process does not read.
func (p *Process) writeStdin(ctx context.Context, data []byte) error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	p.mu.Lock()
	f := p.stdin
	p.mu.Unlock()
	if f == nil {
		return errStdinClosed
	}
	done := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-ctx.Done():
			_ = f.SetWriteDeadline(time.Unix(1, 0))
		case <-done:
		}
	}()
	_, err := f.Write(data)
	close(done)
	<-watcherDone
	if ctx.Err() != nil {
		_ = f.SetWriteDeadline(time.Time{})
		return ctx.Err()
	}
	if errors.Is(err, os.ErrClosed) {
		return errStdinClosed
	}
	if err != nil {
		return fmt.Errorf("write to stdin of %d: %w", p.pid, err)
	}
	return nil
}

// kill ends the process group with SIGKILL unless it was reaped already.
func (p *Process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}

func (p *Process) closeStdin() {
	p.mu.Lock()
	f := p.stdin
	p.stdin = nil
	p.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

// follow feeds the process output from offset pos to the stream as DATA
// (channels 1 and 2) within the stream's credit, and returns the final
// ProcessInfo once the process has ended and all its output was sent.
func (p *Process) follow(st *stream, pos int64) (*ProcessInfo, error) {
	limit := int64(-1) // end of the output to deliver, fixed once the process finished
	for {
		p.mu.Lock()
		if pos < p.out.start {
			lost := p.out.start - pos
			pos = p.out.start
			p.mu.Unlock()
			if err := st.event(lostEvent{Bytes: lost}); err != nil {
				return nil, err
			}
			continue
		}
		if p.finished && limit < 0 {
			limit = p.out.end
		}
		if pos >= p.out.end || (limit >= 0 && pos >= limit) {
			if p.finished {
				info := p.infoLocked()
				p.mu.Unlock()
				return &info, nil
			}
			changed := p.changed
			p.mu.Unlock()
			select {
			case <-changed:
			case <-st.ctx.Done():
				return nil, st.ctx.Err()
			}
			continue
		}
		p.mu.Unlock()

		credit, err := st.acquire(maxDataChunkPayload)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		if pos < p.out.start { // dropped while waiting for credit
			p.mu.Unlock()
			st.release(credit)
			continue
		}
		max := credit
		if limit >= 0 && limit-pos < int64(max) {
			max = int(limit - pos)
		}
		ch, data, next := p.out.read(pos, max)
		p.mu.Unlock()
		st.release(credit - len(data))
		if len(data) == 0 {
			continue
		}
		pos = next
		if err := st.sendFrame(encodeData(st.id, ch, data)); err != nil {
			return nil, err
		}
	}
}

// pipeReader copies one output pipe of a process into its ring.
//
// Draining: when the process has been reaped, everything it wrote is in the
// pipe, but the pipe may stay open (background children inherit it), so EOF
// cannot be awaited. The reader is woken (read deadline), takes the number
// of unread bytes (FIONREAD) and reports "drained" once it has read that
// many; it then keeps reading whatever background children write, without
// ever closing the pipe on them (no SIGPIPE).
type pipeReader struct {
	f       *os.File
	ch      byte
	p       *Process
	mu      sync.Mutex
	exited  bool
	drained chan struct{}
}

func (pr *pipeReader) processExited() {
	pr.mu.Lock()
	pr.exited = true
	_ = pr.f.SetReadDeadline(time.Unix(1, 0)) // wake a blocked Read
	pr.mu.Unlock()
}

func (pr *pipeReader) run() {
	defer pr.f.Close()
	buf := make([]byte, 32<<10)
	var consumed, target int64
	armed, drained := false, false
	markDrained := func() {
		if !drained {
			drained = true
			close(pr.drained)
		}
	}
	defer markDrained()
	for {
		pr.mu.Lock()
		if pr.exited && !armed {
			armed = true
			_ = pr.f.SetReadDeadline(time.Time{})
			target = consumed + unreadBytes(pr.f)
		}
		pr.mu.Unlock()
		if armed && consumed >= target {
			markDrained()
		}
		n, err := pr.f.Read(buf)
		if n > 0 {
			consumed += int64(n)
			pr.p.appendOutput(pr.ch, buf[:n])
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return // EOF: every writer is gone
		}
	}
}

// unreadBytes returns the number of bytes waiting in a pipe.
func unreadBytes(f *os.File) int64 {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	var n int32
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, fd, ioctlFIONREAD, uintptr(unsafe.Pointer(&n)))
	})
	return int64(n)
}

// buildEnv merges the base environment, the sys.init defaults and the
// request's envs (later wins) into a sorted KEY=VALUE list.
func buildEnv(u *userInfo, defaults, req map[string]string) ([]string, error) {
	env := map[string]string{
		"PATH": defaultPATH,
		"HOME": u.Home,
		"USER": u.Name,
		"LANG": "C.UTF-8",
		"TERM": "xterm-256color",
	}
	for k, v := range defaults {
		env[k] = v
	}
	for k, v := range req {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			return nil, opErrorf(CodeBadRequest, "invalid environment variable %q", k)
		}
		env[k] = v
	}
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list, nil
}

// procSetup is what a process starts as: its user, working directory
// and environment.
type procSetup struct {
	u   *userInfo
	cwd string
	env []string
}

// resolveSetup resolves the user, cwd and envs of a start request (the
// sys.init defaults where the request names none) and checks them.
func (a *Agent) resolveSetup(user, cwdReq *string, envs map[string]string) (*procSetup, error) {
	var u *userInfo
	var err error
	defUser, defCwd := a.sys.processDefaults()
	switch {
	case user != nil && *user != "":
		u, err = lookupUser(*user)
	case defUser != "":
		u, err = lookupUser(defUser)
	case os.Geteuid() == 0:
		u, err = lookupUser("root")
	default:
		// An unprivileged agent (tests on a host) cannot become root.
		u, err = currentUser()
	}
	if err != nil {
		return nil, opErrorf(CodeProcessFailed, "%v", err)
	}
	cwd := a.workspace
	if defCwd != "" {
		cwd = defCwd
	}
	if cwdReq != nil && *cwdReq != "" {
		if cwd, err = cleanPath("cwd", cwdReq); err != nil {
			return nil, err
		}
	}
	if cwd == a.workspace {
		_ = os.MkdirAll(cwd, 0o755)
	}
	if fi, err := os.Stat(cwd); err != nil {
		return nil, opErrorf(CodeProcessFailed, "cwd %s: %v", cwd, errors.Unwrap(err))
	} else if !fi.IsDir() {
		return nil, opErrorf(CodeProcessFailed, "cwd %s: not a directory", cwd)
	}
	env, err := buildEnv(u, a.sys.defaultEnvs(), envs)
	if err != nil {
		return nil, err
	}
	return &procSetup{u: u, cwd: cwd, env: env}, nil
}

// userAttr is the SysProcAttr of a process of user u: its own session and
// process group, and u's credentials when the agent is not already u.
func userAttr(u *userInfo) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setsid: true} // own session and process group
	if euid := os.Geteuid(); euid == 0 || uint32(euid) != u.Uid {
		attr.Credential = &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: u.Groups}
	}
	return attr
}

// spawn starts a user process (startUserProcess), mapping failures to
// the spec's codes.
func spawn(shell string, startIt func() (*os.Process, error)) (*os.Process, error) {
	proc, err := startUserProcess(startIt)
	if err != nil {
		if oe, ok := err.(*OpError); ok {
			return nil, oe // the agent's own refusal (e.g. frozen user processes), not the shell's
		}
		if errors.Is(err, syscall.EAGAIN) {
			return nil, opErrorf(CodeProcessFailed, "start %s: %v: the guest cannot start another process now (%s)", shell, err, processLimitNote())
		}
		return nil, opErrorf(CodeProcessFailed, "start %s: %v", shell, err)
	}
	return proc, nil
}

// startProcess starts a process as described by req and registers it.
func (a *Agent) startProcess(req *procStartRequest) (*Process, error) {
	if req.Cmd == nil {
		return nil, missing("cmd")
	}
	if strings.IndexByte(*req.Cmd, 0) >= 0 {
		return nil, opErrorf(CodeBadRequest, "cmd contains a NUL byte")
	}
	for _, a := range req.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, opErrorf(CodeBadRequest, "argv contains a NUL byte")
		}
	}
	if len(req.Argv) > 0 && req.Argv[0] == "" {
		return nil, opErrorf(CodeBadRequest, "argv[0] must name a program")
	}
	setup, err := a.resolveSetup(req.User, req.Cwd, req.Envs)
	if err != nil {
		return nil, err
	}
	cwd, env := setup.cwd, setup.env
	var timeout time.Duration
	if req.TimeoutMs != nil {
		if *req.TimeoutMs < 0 {
			return nil, opErrorf(CodeBadRequest, "timeoutMs must not be negative")
		}
		timeout = msDuration(*req.TimeoutMs)
	}
	shell := userShell()

	attr := userAttr(setup.u)

	// Pipes: the child ends are closed in the agent right after the start.
	var parentEnds, childEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, opErrorf(CodeProcessFailed, "create stdout pipe: %v", err)
	}
	parentEnds, childEnds = append(parentEnds, outR), append(childEnds, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(parentEnds)
		closeAll(childEnds)
		return nil, opErrorf(CodeProcessFailed, "create stderr pipe: %v", err)
	}
	parentEnds, childEnds = append(parentEnds, errR), append(childEnds, errW)
	var stdinChild, stdinW *os.File
	if req.Stdin {
		stdinChild, stdinW, err = os.Pipe()
	} else {
		stdinChild, err = os.Open(os.DevNull)
	}
	if err != nil {
		closeAll(parentEnds)
		closeAll(childEnds)
		return nil, opErrorf(CodeProcessFailed, "create stdin: %v", err)
	}
	childEnds = append(childEnds, stdinChild)
	if stdinW != nil {
		parentEnds = append(parentEnds, stdinW)
	}

	// with argv, the program itself (no shell); otherwise the shell runs cmd
	program, args := shell, []string{shell, "-c", *req.Cmd}
	if len(req.Argv) > 0 {
		program, args = lookPath(req.Argv[0], env), req.Argv
	}
	started := time.Now()
	startIt := func() (*os.Process, error) {
		return os.StartProcess(program, args, &os.ProcAttr{
			Dir:   cwd,
			Env:   env,
			Files: []*os.File{stdinChild, outW, errW},
			Sys:   attr,
		})
	}
	proc, err := spawn(program, startIt)
	closeAll(childEnds)
	if err != nil {
		closeAll(parentEnds)
		return nil, err
	}

	p := &Process{
		pid:       proc.Pid,
		cmd:       *req.Cmd,
		cwd:       cwd,
		tag:       req.Tag,
		startedAt: started,
		hasStdin:  req.Stdin,
		stdin:     stdinW,
		out:       newOutputRing(outputBufferBytes),
		changed:   make(chan struct{}),
	}
	p.pipes = []*pipeReader{
		{f: outR, ch: ChanStdout, p: p, drained: make(chan struct{})},
		{f: errR, ch: ChanStderr, p: p, drained: make(chan struct{})},
	}
	a.runProcess(p, proc, timeout)
	return p, nil
}

// runProcess registers a started process, starts its output readers, its
// timeout (0: none) and its reaper.
func (a *Agent) runProcess(p *Process, proc *os.Process, timeout time.Duration) {
	a.procs.add(p)
	for _, pr := range p.pipes {
		go pr.run()
	}
	var timer *time.Timer
	if timeout > 0 {
		timer = time.AfterFunc(timeout, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.exited {
				p.timedOut = true
				_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			}
		})
	}
	go a.waitProcess(p, proc, timer)
}

// waitProcess reaps the process, waits for its output to be drained and
// publishes the final state.
func (a *Agent) waitProcess(p *Process, proc *os.Process, timer *time.Timer) {
	state, err := proc.Wait()
	if timer != nil {
		timer.Stop()
	}
	p.mu.Lock()
	p.exited = true
	code := -1
	if err == nil {
		if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			name := signalName(ws.Signal())
			p.signal = &name
		} else {
			code = state.ExitCode()
		}
	}
	p.exitCode = &code
	p.mu.Unlock()
	p.closeStdin()
	for _, pr := range p.pipes {
		pr.processExited()
	}
	for _, pr := range p.pipes {
		<-pr.drained
	}
	p.mu.Lock()
	p.finished = true
	p.notifyLocked()
	p.mu.Unlock()
	a.procs.markEnded(p)
}

var signalsByName = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGILL": syscall.SIGILL, "SIGTRAP": syscall.SIGTRAP, "SIGABRT": syscall.SIGABRT,
	"SIGBUS": syscall.SIGBUS, "SIGFPE": syscall.SIGFPE, "SIGKILL": syscall.SIGKILL,
	"SIGUSR1": syscall.SIGUSR1, "SIGSEGV": syscall.SIGSEGV, "SIGUSR2": syscall.SIGUSR2,
	"SIGPIPE": syscall.SIGPIPE, "SIGALRM": syscall.SIGALRM, "SIGTERM": syscall.SIGTERM,
	"SIGCHLD": syscall.SIGCHLD, "SIGCONT": syscall.SIGCONT, "SIGSTOP": syscall.SIGSTOP,
	"SIGTSTP": syscall.SIGTSTP, "SIGTTIN": syscall.SIGTTIN, "SIGTTOU": syscall.SIGTTOU,
	"SIGURG": syscall.SIGURG, "SIGXCPU": syscall.SIGXCPU, "SIGXFSZ": syscall.SIGXFSZ,
	"SIGVTALRM": syscall.SIGVTALRM, "SIGPROF": syscall.SIGPROF, "SIGWINCH": syscall.SIGWINCH,
	"SIGIO": syscall.SIGIO, "SIGSYS": syscall.SIGSYS,
}

// signalsAllowed are the signals proc.signal accepts (spec).
var signalsAllowed = []string{"SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGSTOP", "SIGCONT"}

func signalName(s syscall.Signal) string {
	for name, v := range signalsByName {
		if v == s {
			return name
		}
	}
	return fmt.Sprintf("SIG%d", int(s))
}

// testHookProcStarted, when set (tests), runs between a process's start and
// its started event.
var testHookProcStarted func(st *stream)

func opProcStart(st *stream, req *procStartRequest) (*ProcessInfo, error) {
	if !req.Stdin {
		st.setTakesInput(false)
	}
	if err := st.ctx.Err(); err != nil {
		return nil, err // the host gave up while the op waited to run
	}
	p, err := st.agent.startProcess(req)
	if err != nil {
		return nil, err
	}
	if testHookProcStarted != nil {
		testHookProcStarted(st)
	}
	if err := announceStart(st, p); err != nil {
		return nil, err
	}
	if req.Stdin {
		st.agent.streamsWG.Add(1)
		go func() {
			defer st.agent.streamsWG.Done()
			forwardStdin(st, p)
		}()
	}
	return p.follow(st, 0)
}

// announceStart sends the started event of p. A process whose start never
// reached the host (it gave up waiting: a deadline, its client gone, the
// session ended) must not run unseen: it is killed. Once the started event
// is written, the process is the host's to follow or to leave running (a
// background command cancels right after it).
func announceStart(st *stream, p *Process) error {
	started, err := st.encodeEvent(startedEvent{Pid: p.pid})
	if err == nil {
		if err = st.ctx.Err(); err == nil {
			err = st.s.fw.send(encodeFrame(st.id, FrameEvent, started), true)
		}
	}
	if err != nil {
		p.kill()
	}
	return err
}

// forwardStdin writes the stream's DATA to the process's stdin and closes
// it at END. When the stream is cancelled stdin stays open (proc.stdin can
// go on writing). Credit is granted back once bytes are in the pipe, so a
// process that does not read stdin slows the host down.
func forwardStdin(st *stream, p *Process) {
	for {
		chunk, err := st.recv()
		if err == io.EOF {
			p.closeStdin()
			return
		}
		if err != nil {
			return
		}
		if err := p.writeStdin(st.ctx, chunk); err != nil && st.ctx.Err() != nil {
			return
		}
		// A write error (process gone, stdin closed) drops the bytes; the
		// stream ends with the process.
		st.grant(len(chunk))
	}
}

func lookupProcess(st *stream, pid *int) (*Process, error) {
	if pid == nil {
		return nil, missing("pid")
	}
	p := st.agent.procs.get(*pid)
	if p == nil {
		return nil, opErrorf(CodeNotFound, "no process with pid %d", *pid)
	}
	return p, nil
}

func opProcAttach(st *stream, req *procAttachRequest) (*ProcessInfo, error) {
	p, err := lookupProcess(st, req.Pid)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	pos := p.out.end
	if boolOr(req.Replay, true) {
		pos = p.out.start
	}
	p.mu.Unlock()
	return p.follow(st, pos)
}

func opProcStdin(st *stream, req *procStdinRequest) (*emptyResult, error) {
	var data []byte
	if req.Data != nil {
		var err error
		if data, err = base64.StdEncoding.DecodeString(*req.Data); err != nil {
			return nil, opErrorf(CodeBadRequest, "data is not valid base64: %v", err)
		}
	}
	p, err := lookupProcess(st, req.Pid)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited {
		return nil, opErrorf(CodeNotRunning, "process %d has exited", p.pid)
	}
	if !p.hasStdin {
		return nil, opErrorf(CodeBadRequest, "process %d was not started with stdin", p.pid)
	}
	if len(data) > 0 {
		if err := p.writeStdin(st.ctx, data); err != nil {
			if err == errStdinClosed {
				p.mu.Lock()
				exited := p.exited
				p.mu.Unlock()
				if exited {
					return nil, opErrorf(CodeNotRunning, "process %d has exited", p.pid)
				}
				return nil, opErrorf(CodeBadRequest, "stdin of process %d is closed", p.pid)
			}
			return nil, err
		}
	}
	if req.Close {
		p.closeStdin()
	}
	return &emptyResult{}, nil
}

func opProcSignal(st *stream, req *procSignalRequest) (*emptyResult, error) {
	name := "SIGKILL"
	if req.Signal != nil && *req.Signal != "" {
		name = strings.ToUpper(*req.Signal)
		if !strings.HasPrefix(name, "SIG") {
			name = "SIG" + name
		}
	}
	allowed := false
	for _, s := range signalsAllowed {
		allowed = allowed || s == name
	}
	if !allowed {
		return nil, opErrorf(CodeBadRequest, "unsupported signal %q", name)
	}
	p, err := lookupProcess(st, req.Pid)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil, opErrorf(CodeNotRunning, "process %d has exited", p.pid)
	}
	p.signalForeground(signalsByName[name])
	if err := syscall.Kill(-p.pid, signalsByName[name]); err != nil {
		if err == syscall.ESRCH {
			return nil, opErrorf(CodeNotRunning, "process %d has exited", p.pid)
		}
		return nil, toOpError(fmt.Sprintf("kill process group %d", p.pid), err)
	}
	return &emptyResult{}, nil
}

func opProcList(st *stream, req *emptyRequest) (*procListResult, error) {
	return &procListResult{Processes: st.agent.procs.list()}, nil
}

// lookPath finds a program named without a slash in the PATH of env, as a
// shell's exec does; a name it does not find is returned as is (the start
// then fails with its own error).
func lookPath(name string, env []string) string {
	if strings.Contains(name, "/") {
		return name
	}
	path := defaultPATH
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			path = kv[len("PATH="):]
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return name
}

// userShell is the shell commands run with: bash, or sh where there is none.
func userShell() string {
	if _, err := os.Stat("/bin/bash"); err == nil {
		return "/bin/bash"
	}
	return "/bin/sh"
}
