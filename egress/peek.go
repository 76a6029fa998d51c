package main

import (
	"bytes"
	"net"
	"strings"
)

// peekName reads the name a connection's first bytes ask for: the SNI of a TLS ClientHello, or the
// Host header of an HTTP/1 request. done is true once more bytes would not change the answer.
func peekName(b []byte) (name string, done bool) {
	if len(b) == 0 {
		return "", false
	}
	if b[0] == 0x16 {
		return tlsSNI(b)
	}
	if looksHTTP(b) {
		end := bytes.Index(b, []byte("\r\n\r\n"))
		if end < 0 {
			return "", false
		}
		return httpHost(b[:end]), true
	}
	return "", true
}

var methods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

func looksHTTP(b []byte) bool {
	for _, m := range methods {
		n := len(m)
		if len(b) < n {
			if strings.HasPrefix(m, string(b)) {
				return true
			}
			continue
		}
		if string(b[:n]) == m {
			return true
		}
	}
	return false
}

func httpHost(head []byte) string {
	lines := strings.Split(string(head), "\r\n")
	for _, l := range lines[1:] {
		i := strings.IndexByte(l, ':')
		if i < 0 {
			continue
		}
		if strings.EqualFold(strings.TrimSpace(l[:i]), "host") {
			h := strings.TrimSpace(l[i+1:])
			if host, _, err := net.SplitHostPort(h); err == nil {
				return host
			}
			return strings.Trim(h, "[]")
		}
	}
	return ""
}

// tlsSNI parses the server_name extension of a ClientHello (which may span several records' worth
// of bytes: done is false until the whole handshake message is there).
func tlsSNI(b []byte) (string, bool) {
	if len(b) < 5 {
		return "", false
	}
	recLen := int(b[3])<<8 | int(b[4])
	if len(b) < 5+recLen {
		return "", false
	}
	h := b[5 : 5+recLen]
	if len(h) < 4 || h[0] != 0x01 {
		return "", true
	}
	hsLen := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if hsLen > len(h)-4 {
		// a ClientHello longer than its first record: only the first is read (rare; decided without a name)
		return "", true
	}
	p := h[4 : 4+hsLen]
	// version(2) random(32)
	if len(p) < 34 {
		return "", true
	}
	p = p[34:]
	skip := func(lenBytes int) bool {
		if len(p) < lenBytes {
			return false
		}
		n := 0
		for i := 0; i < lenBytes; i++ {
			n = n<<8 | int(p[i])
		}
		if len(p) < lenBytes+n {
			return false
		}
		p = p[lenBytes+n:]
		return true
	}
	if !skip(1) || !skip(2) || !skip(1) { // session id, cipher suites, compression methods
		return "", true
	}
	if len(p) < 2 {
		return "", true
	}
	extLen := int(p[0])<<8 | int(p[1])
	p = p[2:]
	if len(p) < extLen {
		return "", true
	}
	p = p[:extLen]
	for len(p) >= 4 {
		typ := int(p[0])<<8 | int(p[1])
		n := int(p[2])<<8 | int(p[3])
		if len(p) < 4+n {
			return "", true
		}
		data := p[4 : 4+n]
		p = p[4+n:]
		if typ != 0 {
			continue
		}
		// server_name_list: length(2), then entries type(1) length(2) name
		if len(data) < 2 {
			return "", true
		}
		data = data[2:]
		for len(data) >= 3 {
			nt := data[0]
			nl := int(data[1])<<8 | int(data[2])
			if len(data) < 3+nl {
				return "", true
			}
			if nt == 0 {
				return string(data[3 : 3+nl]), true
			}
			data = data[3+nl:]
		}
		return "", true
	}
	return "", true
}
