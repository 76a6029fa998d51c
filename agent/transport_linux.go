package main

// The virtio-serial transport used inside the VM.
//
// virtio-serial (Linux virtio_console driver) semantics this code relies on:
//   - read() with the host disconnected and nothing buffered returns 0
//     immediately (EOF); with the host connected and nothing buffered it
//     blocks, or fails with EAGAIN on an O_NONBLOCK fd.
//   - write() while the host is disconnected blocks until it reconnects, or
//     fails with EAGAIN on an O_NONBLOCK fd.
//   - poll() reports POLLHUP continuously while the host is disconnected,
//     POLLIN when data is buffered, POLLOUT when a write would not block;
//     the driver wakes pollers on connection changes and on data.
//   - with O_ASYNC and F_SETOWN the driver sends SIGIO when the host
//     connects or disconnects and when data arrives.
//
// The fd is used raw (syscall.Read/Write, never os.File, which would hand it
// to the runtime's epoll) and non-blocking, with every wait done in ppoll:
//   - Read: EAGAIN -> ppoll(POLLIN) until data or a disconnect; 0 -> EOF.
//   - Write: EAGAIN -> ppoll(POLLOUT); POLLHUP -> error (host gone). A
//     blocking write would instead hang until the host's next connection
//     and then deliver stale frames into it; failing ends the session and
//     nothing of it reaches the next connection.
//   - Between sessions (after EOF) we block until a SIGIO arrives (or every
//     hostWaitFallback, in case one was missed) and check POLLHUP once;
//     without it a host is connected and the next session starts by
//     scanning for the magic (stale bytes may precede it).
// No loop ever retries without sleeping in ppoll or waiting for a signal,
// so an idle VM without a host uses no CPU.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	virtioPortName   = "org.nullspace.agent.0"
	virtioPortsGlob  = "/sys/class/virtio-ports/*/name"
	hostWaitFallback = 2 * time.Second // re-check in case a SIGIO was missed
	pollIn           = 0x1
	pollOut          = 0x4
	pollHup          = 0x10
	pollNval         = 0x20
)

// findVirtioPort returns the /dev path of the agent's virtio-serial port.
func findVirtioPort() (string, error) {
	names, err := filepath.Glob(virtioPortsGlob)
	if err != nil {
		return "", err
	}
	for _, nameFile := range names {
		b, err := os.ReadFile(nameFile)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == virtioPortName {
			return "/dev/" + filepath.Base(filepath.Dir(nameFile)), nil
		}
	}
	return "", fmt.Errorf("no virtio port named %s", virtioPortName)
}

// openVirtioPort waits until the port exists, opens it (non-blocking) and
// asks for SIGIO on connection changes and incoming data.
func openVirtioPort(a *Agent) (int, error) {
	delay := 5 * time.Millisecond
	start := time.Now()
	warned := false
	for {
		path, err := findVirtioPort()
		if err == nil {
			var fd int
			fd, err = syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
			if err == nil {
				if err := enableSIGIO(fd); err != nil {
					syscall.Close(fd)
					return -1, fmt.Errorf("%s: %w", path, err)
				}
				return fd, nil
			}
			err = fmt.Errorf("open %s: %w", path, err)
		}
		if !warned && time.Since(start) > 10*time.Second {
			a.logf("still waiting for the virtio port: %v", err)
			warned = true
		}
		time.Sleep(delay)
		if delay *= 2; delay > 100*time.Millisecond {
			delay = 100 * time.Millisecond
		}
	}
}

func enableSIGIO(fd int) error {
	flags, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if e != 0 {
		return fmt.Errorf("fcntl F_GETFL: %w", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFL, flags|syscall.O_ASYNC); e != 0 {
		return fmt.Errorf("fcntl F_SETFL O_ASYNC: %w", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETOWN, uintptr(syscall.Getpid())); e != 0 {
		return fmt.Errorf("fcntl F_SETOWN: %w", e)
	}
	return nil
}

// hostPort is the guest end of the host connection: a byte stream whose
// Read returns io.EOF while no host is connected, plus a non-blocking
// "is a host connected" check. virtioPort implements it; tests use a fake.
type hostPort interface {
	io.ReadWriter
	hostConnected() (bool, error)
}

// errHostGone is a write failure because the host disconnected.
var errHostGone = errors.New("virtio port: host disconnected")

// virtioPort is a hostPort over the non-blocking fd of a virtio-serial port.
type virtioPort struct{ fd int }

func (c virtioPort) Read(p []byte) (int, error) {
	for {
		n, err := syscall.Read(c.fd, p)
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN: // host connected, nothing buffered yet
			if _, err := c.poll(pollIn, true); err != nil {
				return 0, err
			}
		case err != nil:
			return 0, fmt.Errorf("read virtio port: %w", err)
		case n == 0:
			return 0, io.EOF // host disconnected
		default:
			return n, nil
		}
	}
}

func (c virtioPort) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := syscall.Write(c.fd, p[written:])
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN: // host gone, or its queue is full
			revents, err := c.poll(pollOut, true)
			if err != nil {
				return written, err
			}
			if revents&pollHup != 0 {
				return written, errHostGone
			}
		case err != nil:
			return written, fmt.Errorf("write virtio port: %w", err)
		default:
			written += n
		}
	}
	return written, nil
}

// hostConnected polls the port without blocking: POLLHUP means no host.
func (c virtioPort) hostConnected() (bool, error) {
	revents, err := c.poll(pollIn, false)
	if err != nil {
		return false, err
	}
	return revents&pollHup == 0, nil
}

// poll waits (block) or checks (!block) for events on the port. A signal
// (SIGIO) ends the wait early with revents 0: callers simply retry.
func (c virtioPort) poll(events int16, block bool) (int16, error) {
	pfd := pollFd{fd: int32(c.fd), events: events}
	var ts syscall.Timespec // zero: do not block
	tsp := uintptr(unsafe.Pointer(&ts))
	if block {
		tsp = 0 // NULL: no timeout
	}
	_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, tsp, 0, 0, 0)
	if e == syscall.EINTR {
		return 0, nil
	}
	if e != 0 {
		return 0, fmt.Errorf("ppoll virtio port: %w", e)
	}
	if pfd.revents&pollNval != 0 {
		return 0, fmt.Errorf("ppoll virtio port: %w", syscall.EBADF)
	}
	return pfd.revents, nil
}

// pollFd is struct pollfd.
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

// drainSignals empties a signal channel without blocking.
func drainSignals(ch chan os.Signal) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// waitForHost blocks until the host is connected. Draining pending wakeups
// before checking (the SIGIO subscription itself is permanent) means that a
// change after the check always leaves a signal in the channel: no lost
// wakeup. hostWaitFallback covers a signal that never came.
func waitForHost(port hostPort, wake chan os.Signal) error {
	for {
		drainSignals(wake)
		ok, err := port.hostConnected()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-wake:
		case <-time.After(hostWaitFallback):
		}
	}
}

// errPortGone reports that the port itself failed (hot-unplug, bad fd)
// and must be reopened.
func errPortGone(err error) bool {
	return errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EBADF) || errors.Is(err, syscall.ENXIO)
}

// servePort runs one session per host connection on port, forever, unless
// the port fails. wake receives SIGIO (connection changes, data).
func (a *Agent) servePort(port hostPort, wake chan os.Signal) error {
	emptySessions := 0
	fr := NewFrameReader(port) // shared by the sessions: see ReadFrame
	for {
		if err := waitForHost(port, wake); err != nil {
			return err
		}
		// No closeConn: a session ends when the port reports EOF (host
		// gone); after a write error it reads on (discarding) until then.
		n, err := a.serveSession(fr, port, nil)
		if err != nil && errPortGone(err) {
			return err
		}
		// Defence in depth against a spin: if sessions keep ending without
		// a single byte although the port said "connected", wait for a
		// wakeup or a growing delay before trying again.
		if n == 0 {
			emptySessions++
		} else {
			emptySessions = 0
		}
		if emptySessions > 1 {
			d := time.Duration(emptySessions) * 50 * time.Millisecond
			if d > hostWaitFallback {
				d = hostWaitFallback
			}
			select {
			case <-wake:
			case <-time.After(d):
			}
		}
	}
}

// serveVirtio serves sessions on the virtio port forever, reopening it if
// it fails.
func serveVirtio(a *Agent) error {
	sigio := make(chan os.Signal, 1)
	signal.Notify(sigio, syscall.SIGIO) // before O_ASYNC is set
	for {
		fd, err := openVirtioPort(a)
		if err != nil {
			return err
		}
		err = a.servePort(virtioPort{fd}, sigio)
		a.logf("virtio port: %v; reopening", err)
		syscall.Close(fd)
		time.Sleep(100 * time.Millisecond)
	}
}
