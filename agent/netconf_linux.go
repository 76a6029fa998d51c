package main

// Static network configuration for QEMU user-mode networking, done with
// ioctls so that it works in any root file system (no `ip` needed).

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"unsafe"
)

const (
	guestAddr  = "10.0.2.15"
	guestMask  = "255.255.255.0"
	gatewayIP  = "10.0.2.2"
	nameserver = "10.0.2.3"
)

// ifreqAddr is struct ifreq with the sockaddr member (40 bytes on LP64).
type ifreqAddr struct {
	Name [syscall.IFNAMSIZ]byte
	Addr syscall.RawSockaddrInet4
	_    [8]byte
}

// ifreqFlags is struct ifreq with the flags member.
type ifreqFlags struct {
	Name  [syscall.IFNAMSIZ]byte
	Flags uint16
	_     [22]byte
}

// rtentry is struct rtentry (LP64 layout; Go aligns fields like C).
type rtentry struct {
	pad1    uintptr
	dst     syscall.RawSockaddrInet4
	gateway syscall.RawSockaddrInet4
	genmask syscall.RawSockaddrInet4
	flags   uint16
	pad2    int16
	pad3    uintptr
	pad4    uintptr
	metric  int16
	dev     uintptr
	mtu     uintptr
	window  uintptr
	irtt    uint16
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func sockaddr4(ip string) syscall.RawSockaddrInet4 {
	sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET}
	copy(sa.Addr[:], net.ParseIP(ip).To4())
	return sa
}

func ifName(name string) (n [syscall.IFNAMSIZ]byte) {
	copy(n[:], name)
	return n
}

func setIfAddr(fd int, name string, req uintptr, ip string) error {
	ifr := ifreqAddr{Name: ifName(name), Addr: sockaddr4(ip)}
	return ioctl(fd, req, unsafe.Pointer(&ifr))
}

func setIfUp(fd int, name string) error {
	ifr := ifreqFlags{Name: ifName(name)}
	if err := ioctl(fd, syscall.SIOCGIFFLAGS, unsafe.Pointer(&ifr)); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS %s: %w", name, err)
	}
	ifr.Flags |= syscall.IFF_UP | syscall.IFF_RUNNING
	if err := ioctl(fd, syscall.SIOCSIFFLAGS, unsafe.Pointer(&ifr)); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS %s: %w", name, err)
	}
	return nil
}

func ifExists(fd int, name string) bool {
	ifr := ifreqFlags{Name: ifName(name)}
	return ioctl(fd, syscall.SIOCGIFFLAGS, unsafe.Pointer(&ifr)) == nil
}

func addDefaultRoute(fd int, gw string) error {
	rt := rtentry{
		dst:     sockaddr4("0.0.0.0"),
		gateway: sockaddr4(gw),
		genmask: sockaddr4("0.0.0.0"),
		flags:   syscall.RTF_UP | syscall.RTF_GATEWAY,
	}
	err := ioctl(fd, syscall.SIOCADDRT, unsafe.Pointer(&rt))
	if err == syscall.EEXIST {
		return nil
	}
	return err
}

// configureNetwork brings up lo and, when present, eth0 with the QEMU
// user-mode addresses, a default route and /etc/resolv.conf.
func configureNetwork(logf func(string, ...interface{})) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		logf("network: socket: %v", err)
		return
	}
	defer syscall.Close(fd)

	if err := setIfAddr(fd, "lo", syscall.SIOCSIFADDR, "127.0.0.1"); err != nil {
		logf("network: lo address: %v", err)
	}
	if err := setIfAddr(fd, "lo", syscall.SIOCSIFNETMASK, "255.0.0.0"); err != nil {
		logf("network: lo netmask: %v", err)
	}
	if err := setIfUp(fd, "lo"); err != nil {
		logf("network: %v", err)
	}

	if !ifExists(fd, "eth0") {
		logf("network: no eth0, continuing without network")
		return
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"eth0 address", func() error { return setIfAddr(fd, "eth0", syscall.SIOCSIFADDR, guestAddr) }},
		{"eth0 netmask", func() error { return setIfAddr(fd, "eth0", syscall.SIOCSIFNETMASK, guestMask) }},
		{"eth0 up", func() error { return setIfUp(fd, "eth0") }},
		{"default route", func() error { return addDefaultRoute(fd, gatewayIP) }},
		{"/etc/resolv.conf", writeResolvConf},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			logf("network: %s: %v", s.what, err)
		}
	}
}

func writeResolvConf() error {
	const path = "/etc/resolv.conf"
	// A symlink (e.g. into a resolver's runtime directory) would dangle.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		os.Remove(path)
	}
	return os.WriteFile(path, []byte("nameserver "+nameserver+"\n"), 0o644)
}
