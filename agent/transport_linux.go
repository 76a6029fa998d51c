package main

// Transports: the virtio-serial port inside the VM, and a unix socket
// listener for tests on the host.
//
// virtio-serial (Linux virtio_console driver) semantics this code relies on:
//   - read() with the host disconnected and nothing buffered returns 0
//     immediately; a blocked read() returns 0 when the host disconnects.
//   - poll() reports POLLHUP continuously while the host is disconnected.
//   - write() on a blocking fd waits while the host is disconnected (and
//     completes after it reconnects).
//   - with O_ASYNC and F_SETOWN the driver sends SIGIO when the host
//     connects or disconnects and when data arrives.
//
// We use a raw blocking fd with syscall.Read/Write rather than os.File:
// os.File would switch a character device to O_NONBLOCK and register it
// with the runtime's epoll, whose wakeups on a port that reports POLLHUP
// while the host is away are hard to reason about. With a blocking fd the
// only states are "read blocks" (host connected, idle), "read returns data"
// and "read returns 0" (host gone), and after 0 we wait for SIGIO before
// looking again, so an idle VM without a host uses no CPU.

import (
	"errors"
	"fmt"
	"io"
	"net"
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

// openVirtioPort waits until the port exists, opens it (blocking mode) and
// asks for SIGIO on connection changes and incoming data.
func openVirtioPort(a *Agent) (int, error) {
	delay := 5 * time.Millisecond
	start := time.Now()
	warned := false
	for {
		path, err := findVirtioPort()
		if err == nil {
			var fd int
			fd, err = syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
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

// fdConn is an io.ReadWriter over a blocking fd.
type fdConn struct{ fd int }

func (c fdConn) Read(p []byte) (int, error) {
	for {
		n, err := syscall.Read(c.fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, io.EOF // host disconnected
		}
		return n, nil
	}
}

func (c fdConn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := syscall.Write(c.fd, p[written:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// pollFd is struct pollfd.
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

// hostConnected polls the port without blocking: POLLHUP means no host.
func hostConnected(fd int) (bool, error) {
	pfd := pollFd{fd: int32(fd), events: pollIn}
	var ts syscall.Timespec // zero timeout
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1,
			uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return false, fmt.Errorf("ppoll: %w", e)
		}
		break
	}
	if pfd.revents&pollNval != 0 {
		return false, errors.New("ppoll: invalid fd")
	}
	return pfd.revents&pollHup == 0, nil
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

// waitForHost blocks until the host is connected. Draining pending SIGIOs
// before checking (the subscription itself is permanent) means a change
// after the check always leaves a signal in the channel: no lost wakeup.
func waitForHost(fd int, sigio chan os.Signal) error {
	for {
		drainSignals(sigio)
		ok, err := hostConnected(fd)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-sigio:
		case <-time.After(hostWaitFallback):
		}
	}
}

// serveVirtio serves sessions on the virtio port forever.
func serveVirtio(a *Agent) error {
	sigio := make(chan os.Signal, 1)
	signal.Notify(sigio, syscall.SIGIO) // before O_ASYNC is set
	fd, err := openVirtioPort(a)
	if err != nil {
		return err
	}
	emptySessions := 0
	for {
		if err := waitForHost(fd, sigio); err != nil {
			a.logf("virtio port: %v; reopening", err)
			syscall.Close(fd)
			if fd, err = openVirtioPort(a); err != nil {
				return err
			}
			continue
		}
		// No closeConn: a session ends when the port reports EOF.
		n, err := a.ServeConn(fdConn{fd}, nil)
		if errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EBADF) {
			a.logf("virtio port: %v; reopening", err)
			syscall.Close(fd)
			if fd, err = openVirtioPort(a); err != nil {
				return err
			}
			continue
		}
		// Defence in depth against a spin: if sessions keep ending without
		// a single byte although poll said "connected", wait for a SIGIO or
		// a growing delay before trying again.
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
			case <-sigio:
			case <-time.After(d):
			}
		}
	}
}

// serveUnix listens on a unix socket and serves each connection as a
// session; sessions run concurrently and share the process table.
func serveUnix(a *Agent, path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	defer ln.Close()
	return serveListener(a, ln)
}

func serveListener(a *Agent, ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			_, err := a.ServeConn(c, func() { c.Close() })
			if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				a.logf("session: %v", err)
			}
		}()
	}
}
