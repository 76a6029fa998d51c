// Command nullspace-egress is one sandbox's transparent egress proxy: the server's nftables rules
// redirect the sandbox's TCP connections whose fate depends on a domain rule to this process, which
// reads the name the guest asks for (the TLS ClientHello's SNI, or the HTTP Host header) without
// answering, decides by the sandbox's rules, and either connects to the ORIGINAL destination (read
// with getsockopt SO_ORIGINAL_DST, which Node cannot do) and splices bytes both ways, or resets the
// guest's connection.
//
// It runs as the sandbox's uid (so the host firewall's guard rules also keep its own connections
// off this host and the link-local range) with a group of its own (so the redirect does not loop).
// Control: JSON lines on stdin, each the whole rule set {"allowOut": [...], "denyOut": [...]};
// the end of stdin ends it. Output: JSON lines on stdout: first {"port": P, "ipv6": bool}, then
// {"refused": n} as connections are refused.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// How long the proxy waits for the client's first bytes before connecting a client that might wait
// for the server to speak first (only when the connection would be allowed without a name: its
// first bytes are still checked before they go out).
const peekTimeout = 1 * time.Second

// The most bytes read before deciding (a ClientHello or a request's headers fit).
const peekMax = 16 * 1024

var (
	mu       sync.RWMutex
	current  *Rules
	outMu    sync.Mutex
	refusals = make(chan struct{}, 1024)
)

func emit(v interface{}) {
	b, _ := json.Marshal(v)
	outMu.Lock()
	os.Stdout.Write(append(b, '\n'))
	outMu.Unlock()
}

func main() {
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	port := ln4.Addr().(*net.TCPAddr).Port
	ln6, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port))
	if err != nil {
		ln6 = nil
	}
	// the first rule set comes before the port is announced
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<22)
	if !in.Scan() {
		os.Exit(0)
	}
	r, err := ParseRules(in.Bytes())
	if err != nil {
		fmt.Fprintln(os.Stderr, "rules:", err)
		os.Exit(2)
	}
	current = r
	emit(map[string]interface{}{"port": port, "ipv6": ln6 != nil})
	go serve(ln4, false)
	if ln6 != nil {
		go serve(ln6, true)
	}
	go reportRefusals()
	for in.Scan() {
		r, err := ParseRules(in.Bytes())
		if err != nil {
			fmt.Fprintln(os.Stderr, "rules:", err)
			continue
		}
		mu.Lock()
		current = r
		mu.Unlock()
		emit(map[string]interface{}{"applied": true})
	}
	os.Exit(0)
}

// reportRefusals batches refusals into {"refused": n} lines.
func reportRefusals() {
	for range refusals {
		n := 1
	drain:
		for {
			select {
			case <-refusals:
				n++
			default:
				break drain
			}
		}
		emit(map[string]int{"refused": n})
	}
}

func serve(ln net.Listener, v6 bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			fmt.Fprintln(os.Stderr, "accept:", err)
			os.Exit(1)
		}
		go handle(c.(*net.TCPConn), v6)
	}
}

func refuse(c *net.TCPConn) {
	// an RST, not a FIN: the guest sees "connection reset" at once
	c.SetLinger(0)
	c.Close()
	select {
	case refusals <- struct{}{}:
	default:
	}
}

// readHead reads the connection's first bytes until they name what they ask for (or say they
// never will), at most peekMax, until deadline (zero: none).
func readHead(c *net.TCPConn, buf []byte, deadline time.Time) ([]byte, string) {
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	name := ""
	for len(buf) < peekMax {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), 2*cap(buf))
			copy(nb, buf)
			buf = nb
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		var done bool
		name, done = peekName(buf)
		if done || err != nil {
			break
		}
	}
	return buf, name
}

func handle(c *net.TCPConn, v6 bool) {
	dst, err := originalDst(c, v6)
	if err != nil || forbidden(dst.IP) {
		refuse(c)
		return
	}
	mu.RLock()
	r := current
	mu.RUnlock()
	// Without a name, would it be allowed? Then a client that does not speak first (a protocol
	// where the server does) is connected after peekTimeout, its first bytes still checked before
	// they go out. Otherwise the client has long to send its name (a slow TLS start is not refused).
	nameless := r.Allows(dst.IP, "")
	wait := 30 * time.Second
	if nameless {
		wait = peekTimeout
	}
	buf, name := readHead(c, make([]byte, 0, 4096), time.Now().Add(wait))
	if len(buf) == 0 && nameless {
		serveFirst(c, dst, r)
		return
	}
	if !r.Allows(dst.IP, name) {
		refuse(c)
		return
	}
	up, err := net.DialTimeout("tcp", dst.String(), 30*time.Second)
	if err != nil {
		// the guest sees the same as without the proxy: the connection reset
		c.SetLinger(0)
		c.Close()
		return
	}
	u := up.(*net.TCPConn)
	if len(buf) > 0 {
		if _, err := u.Write(buf); err != nil {
			u.Close()
			c.SetLinger(0)
			c.Close()
			return
		}
	}
	splice(c, u)
}

// serveFirst: the client sent nothing yet and may wait for the server: connected now, the server's
// bytes flow at once; the client's first bytes are checked (a name they carry may still be denied)
// before anything of the client goes out.
func serveFirst(c *net.TCPConn, dst *net.TCPAddr, r *Rules) {
	up, err := net.DialTimeout("tcp", dst.String(), 30*time.Second)
	if err != nil {
		c.SetLinger(0)
		c.Close()
		return
	}
	u := up.(*net.TCPConn)
	down := make(chan struct{})
	go func() {
		defer close(down)
		pipe(c, u)
	}()
	buf, name := readHead(c, make([]byte, 0, 4096), time.Time{})
	if !r.Allows(dst.IP, name) {
		u.SetLinger(0)
		u.Close()
		refuse(c)
		<-down
		return
	}
	if len(buf) > 0 {
		if _, err := u.Write(buf); err != nil {
			u.SetLinger(0)
			u.Close()
			c.SetLinger(0)
			c.Close()
			<-down
			return
		}
	}
	if len(buf) == 0 {
		// the client ended without a byte
		u.CloseWrite()
	} else {
		pipe(u, c)
	}
	<-down
	u.Close()
	c.Close()
}

// pipe copies src to dst until src ends (then half-closes dst) or fails (then resets both).
// TCPConn.ReadFrom splices on Linux: no copy through this process's memory.
func pipe(dst, src *net.TCPConn) {
	if _, err := dst.ReadFrom(src); err != nil {
		dst.SetLinger(0)
		dst.Close()
		src.Close()
		return
	}
	dst.CloseWrite()
}

// splice copies both ways until both directions ended.
func splice(c, u *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pipe(u, c)
	}()
	go func() {
		defer wg.Done()
		pipe(c, u)
	}()
	wg.Wait()
	u.Close()
	c.Close()
}

// originalDst is where the guest meant to connect, before the redirect.
func originalDst(c *net.TCPConn, v6 bool) (*net.TCPAddr, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var addr *net.TCPAddr
	var serr error
	err = raw.Control(func(fd uintptr) {
		const soOriginalDst = 80
		if v6 {
			var sa syscall.RawSockaddrInet6
			l := uint32(unsafe.Sizeof(sa))
			_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_IPV6, soOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
			if e != 0 {
				serr = e
				return
			}
			p := (*[2]byte)(unsafe.Pointer(&sa.Port))
			addr = &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: int(p[0])<<8 | int(p[1])}
			return
		}
		var sa syscall.RawSockaddrInet4
		l := uint32(unsafe.Sizeof(sa))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_IP, soOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = e
			return
		}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		addr = &net.TCPAddr{IP: net.IPv4(sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3]), Port: int(p[0])<<8 | int(p[1])}
	})
	if err != nil {
		return nil, err
	}
	return addr, serr
}

// forbidden: this host's own addresses, loopback and link-local, whatever the rules say (the
// firewall's guard rejects them too: this is the second line).
func forbidden(ip net.IP) bool {
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalMulticast() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
