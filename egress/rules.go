package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
)

// Rules is one sandbox's egress rule set, as the server hands it over (already validated there).
type Rules struct {
	allowAll     bool
	allowNets    []*net.IPNet
	denyNets     []*net.IPNet
	allowDomains []string
	denyDomains  []string
}

// ParseRules reads {"allowOut": [...], "denyOut": [...]}: IPs, CIDRs, names and *.names.
func ParseRules(b []byte) (*Rules, error) {
	var in struct {
		AllowOut []string `json:"allowOut"`
		DenyOut  []string `json:"denyOut"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	r := &Rules{allowAll: len(in.AllowOut) == 0}
	add := func(list []string, nets *[]*net.IPNet, domains *[]string) error {
		for _, s := range list {
			s = strings.ToLower(strings.TrimSpace(s))
			if ip := net.ParseIP(s); ip != nil {
				bits := 128
				if ip.To4() != nil {
					ip = ip.To4()
					bits = 32
				}
				*nets = append(*nets, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
				continue
			}
			if _, n, err := net.ParseCIDR(s); err == nil {
				*nets = append(*nets, n)
				continue
			}
			if s == "" || strings.ContainsAny(s, "/ :") {
				return fmt.Errorf("bad rule %q", s)
			}
			*domains = append(*domains, strings.TrimSuffix(s, "."))
		}
		return nil
	}
	if err := add(in.AllowOut, &r.allowNets, &r.allowDomains); err != nil {
		return nil, err
	}
	if err := add(in.DenyOut, &r.denyNets, &r.denyDomains); err != nil {
		return nil, err
	}
	return r, nil
}

func inNets(nets []*net.IPNet, ip net.IP) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// matchDomain: "example.com" is that name only; "*.example.com" is any name under it (not itself).
func matchDomain(pattern, name string) bool {
	if strings.HasPrefix(pattern, "*.") {
		return strings.HasSuffix(name, pattern[1:]) && len(name) > len(pattern)-1
	}
	return name == pattern
}

func inDomains(domains []string, name string) bool {
	if name == "" {
		return false
	}
	for _, d := range domains {
		if matchDomain(d, name) {
			return true
		}
	}
	return false
}

// Allows decides one connection to ip asking for name ("" when the client sent none): a deny rule
// that matches wins over any allow rule; otherwise it is allowed when the allow list is empty or
// one of its rules matches (the address or the name).
func (r *Rules) Allows(ip net.IP, name string) bool {
	name = normalizeName(name)
	if inNets(r.denyNets, ip) || inDomains(r.denyDomains, name) {
		return false
	}
	return r.allowAll || inNets(r.allowNets, ip) || inDomains(r.allowDomains, name)
}

func normalizeName(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}
