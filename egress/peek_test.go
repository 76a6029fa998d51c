package main

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

func TestPeekSNIFromARealClientHello(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: "api.Example.com", InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Handshake()
	}()
	buf := make([]byte, 0, 16384)
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, err := b.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		name, done := peekName(buf)
		if done {
			if name != "api.Example.com" {
				t.Fatalf("name %q", name)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestPeekHTTPHostAndRules(t *testing.T) {
	if n, done := peekName([]byte("GET / HTTP/1.1\r\nHost: a.b.example:8080\r\n\r\n")); n != "a.b.example" || !done {
		t.Fatal(n, done)
	}
	if _, done := peekName([]byte("GE")); done {
		t.Fatal("partial method decided")
	}
	if _, done := peekName([]byte("SSH-2.0")); !done {
		t.Fatal("non-HTTP not decided")
	}
	r, err := ParseRules([]byte(`{"allowOut":["*.example.com","10.0.0.0/8"],"denyOut":["bad.example.com","10.1.2.3"]}`))
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP("192.0.2.1")
	cases := []struct {
		ip   string
		name string
		want bool
	}{
		{"192.0.2.1", "a.example.com", true},
		{"192.0.2.1", "example.com", false},
		{"192.0.2.1", "bad.example.com", false},
		{"10.9.9.9", "", true},
		{"10.1.2.3", "a.example.com", false},
		{"192.0.2.1", "", false},
	}
	_ = ip
	for _, c := range cases {
		if got := r.Allows(net.ParseIP(c.ip), c.name); got != c.want {
			t.Errorf("%s %q: %v", c.ip, c.name, got)
		}
	}
}
