package main

// The unix socket transport: `serve --listen unix:PATH`, for tests and
// development on a host without a VM.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

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
