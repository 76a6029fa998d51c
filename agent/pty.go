package main

// Terminals: pty.start runs a process on a pseudo-terminal.
//
// A terminal's process is a Process of the process table like any other:
// the master side of the terminal is read into the same bounded output ring
// (channel 1: a terminal has one output), so proc.attach follows and
// replays it, proc.stdin writes to the master (keystrokes, Ctrl-C as the
// byte 0x03: the terminal's line discipline turns it into SIGINT for the
// foreground process group), proc.signal signals it, proc.list lists it.
// pty.resize sets the window size (TIOCSWINSZ; the kernel sends SIGWINCH to
// the foreground process group). The process runs in its own session with
// the terminal as its controlling terminal (setsid + TIOCSCTTY), so job
// control works as in a login.

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	defaultPtyCols   = 80
	defaultPtyRows   = 24
	maxPtySide       = 10000
	ioctlTIOCGPTPEER = 0x5441 // open the peer of a master (Linux 4.13)
)

type ptyStartRequest struct {
	Cmd  *string           `json:"cmd"`
	Cols *int              `json:"cols"`
	Rows *int              `json:"rows"`
	Cwd  *string           `json:"cwd"`
	Envs map[string]string `json:"envs"`
	User *string           `json:"user"`
	Tag  string            `json:"tag"`
}

type ptyResizeRequest struct {
	Pid  *int `json:"pid"`
	Cols *int `json:"cols"`
	Rows *int `json:"rows"`
}

func init() {
	// ops.go's init (which makes the table) runs first: a package's files
	// initialize in the order of their names. spec_test.go checks that the
	// table is exactly the spec's ops.
	opTable["pty.start"] = newOp(opPtyStart, startedEvent{}, lostEvent{})
	opTable["pty.resize"] = newOp(opPtyResize)
}

type winsize struct {
	Row, Col, Xpixel, Ypixel uint16
}

// ioctl runs an ioctl on f's descriptor (without making f blocking, as
// f.Fd would) and returns its result.
func fileIoctl(f *os.File, req, arg uintptr) (uintptr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		r, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, arg)
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

func setWinsize(f *os.File, cols, rows int) error {
	ws := winsize{Row: uint16(rows), Col: uint16(cols)}
	_, err := fileIoctl(f, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws)))
	return err
}

// openPty returns a new terminal's master and slave (neither becomes the
// agent's controlling terminal).
func openPty() (master, slave *os.File, err error) {
	for _, path := range []string{"/dev/ptmx", "/dev/pts/ptmx"} {
		if master, err = os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0); err == nil {
			break
		}
	}
	if err != nil {
		return nil, nil, err
	}
	unlock := int32(0)
	if _, err := fileIoctl(master, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	// The peer through the master itself: right whichever devpts instance
	// /dev/ptmx belongs to; by its number in /dev/pts on older kernels.
	if fd, err := fileIoctl(master, ioctlTIOCGPTPEER, uintptr(os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC)); err == nil {
		return master, os.NewFile(fd, "pty"), nil
	}
	var n uint32
	if _, err := fileIoctl(master, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	if slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0); err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// dupFile returns a second, pollable descriptor of f (its own *os.File, so
// that closing one leaves the other usable).
func dupFile(f *os.File, name string) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = syscall.Dup(int(fd))
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	syscall.CloseOnExec(nfd)
	_ = syscall.SetNonblock(nfd, true)
	return os.NewFile(uintptr(nfd), name), nil
}

// ptySize checks a window size; absent sides take the defaults.
func ptySize(cols, rows *int, defCols, defRows int) (int, int, error) {
	c, r := defCols, defRows
	if cols != nil {
		c = *cols
	}
	if rows != nil {
		r = *rows
	}
	if c < 1 || r < 1 || c > maxPtySide || r > maxPtySide {
		return 0, 0, opErrorf(CodeBadRequest, "the window size must be 1 to %d columns and rows (got %dx%d)", maxPtySide, c, r)
	}
	return c, r, nil
}

// loginShell is the shell of u from /etc/passwd when it can run, else the
// shell commands run with.
func loginShell(u *userInfo) string {
	if sh := u.Shell; sh != "" && !strings.HasSuffix(sh, "/nologin") && !strings.HasSuffix(sh, "/false") {
		if fi, err := os.Stat(sh); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return sh
		}
	}
	return userShell()
}

// startPty starts a process on a new terminal and registers it.
func (a *Agent) startPty(req *ptyStartRequest) (*Process, error) {
	cols, rows, err := ptySize(req.Cols, req.Rows, defaultPtyCols, defaultPtyRows)
	if err != nil {
		return nil, err
	}
	if req.Cmd != nil && strings.IndexByte(*req.Cmd, 0) >= 0 {
		return nil, opErrorf(CodeBadRequest, "cmd contains a NUL byte")
	}
	setup, err := a.resolveSetup(req.User, req.Cwd, req.Envs)
	if err != nil {
		return nil, err
	}
	var shell string
	var argv []string
	if req.Cmd == nil || *req.Cmd == "" {
		shell = loginShell(setup.u)
		argv = []string{shell, "-l"}
	} else {
		shell = userShell()
		argv = []string{shell, "-c", *req.Cmd}
	}
	master, slave, err := openPty()
	if err != nil {
		return nil, opErrorf(CodeProcessFailed, "open a terminal: %v", err)
	}
	if err := setWinsize(master, cols, rows); err != nil {
		master.Close()
		slave.Close()
		return nil, opErrorf(CodeProcessFailed, "set the window size: %v", err)
	}
	if os.Geteuid() == 0 {
		// the user owns its terminal, as after a login (programs reopen it by name)
		gid := -1
		if g, err := lookupGroup("tty"); err == nil {
			gid = int(g)
		}
		_ = slave.Chown(int(setup.u.Uid), gid)
		_ = slave.Chmod(0o620)
	}
	reader, err := dupFile(master, "ptmx")
	if err != nil {
		master.Close()
		slave.Close()
		return nil, opErrorf(CodeProcessFailed, "open a terminal: %v", err)
	}
	attr := userAttr(setup.u)
	attr.Setctty = true
	attr.Ctty = 0 // the child's stdin: the terminal
	started := time.Now()
	proc, err := spawn(shell, func() (*os.Process, error) {
		return os.StartProcess(shell, argv, &os.ProcAttr{
			Dir:   setup.cwd,
			Env:   setup.env,
			Files: []*os.File{slave, slave, slave},
			Sys:   attr,
		})
	})
	slave.Close()
	if err != nil {
		master.Close()
		reader.Close()
		return nil, err
	}
	p := &Process{
		pid:       proc.Pid,
		cmd:       strings.Join(argv, " "),
		cwd:       setup.cwd,
		tag:       req.Tag,
		startedAt: started,
		hasStdin:  true,
		stdin:     master,
		tty:       master,
		out:       newOutputRing(outputBufferBytes),
		changed:   make(chan struct{}),
	}
	if req.Cmd != nil && *req.Cmd != "" {
		p.cmd = *req.Cmd
	}
	p.pipes = []*pipeReader{{f: reader, ch: ChanStdout, p: p, drained: make(chan struct{})}}
	a.runProcess(p, proc, 0)
	return p, nil
}

// signalForeground sends sig to the foreground process group of p's
// terminal too (a job the shell started: kill ends it with the shell).
// Called with p.mu held.
func (p *Process) signalForeground(sig syscall.Signal) {
	if p.tty == nil || p.exited {
		return
	}
	var pgrp int32
	if _, err := fileIoctl(p.tty, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); err == nil && pgrp > 0 && int(pgrp) != p.pid {
		_ = syscall.Kill(-int(pgrp), sig)
	}
}

func opPtyStart(st *stream, req *ptyStartRequest) (*ProcessInfo, error) {
	if err := st.ctx.Err(); err != nil {
		return nil, err // the host gave up while the op waited to run
	}
	p, err := st.agent.startPty(req)
	if err != nil {
		return nil, err
	}
	if err := announceStart(st, p); err != nil {
		return nil, err
	}
	return p.follow(st, 0)
}

func opPtyResize(st *stream, req *ptyResizeRequest) (*emptyResult, error) {
	if req.Cols == nil {
		return nil, missing("cols")
	}
	if req.Rows == nil {
		return nil, missing("rows")
	}
	cols, rows, err := ptySize(req.Cols, req.Rows, 0, 0)
	if err != nil {
		return nil, err
	}
	p, err := lookupProcess(st, req.Pid)
	if err != nil {
		return nil, err
	}
	if p.tty == nil {
		return nil, opErrorf(CodeBadRequest, "process %d has no terminal (start it with pty.start)", p.pid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil, opErrorf(CodeNotRunning, "process %d has exited", p.pid)
	}
	if err := setWinsize(p.tty, cols, rows); err != nil {
		return nil, opErrorf(CodeNotRunning, "process %d: its terminal is closed (%v)", p.pid, err)
	}
	return &emptyResult{}, nil
}
