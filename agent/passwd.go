package main

// User lookup from /etc/passwd and /etc/group, parsed directly (the binary
// is built without cgo, and the guest may have no NSS at all).

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

type userInfo struct {
	Name   string
	Uid    uint32
	Gid    uint32
	Home   string
	Groups []uint32 // supplementary groups from /etc/group
}

var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// lookupUser finds name in /etc/passwd. root is always known (uid 0,
// /root) even when the file lacks it.
func lookupUser(name string) (*userInfo, error) {
	u, err := findPasswdEntry(passwdFile, func(n string, _ uint32) bool { return n == name })
	if err != nil {
		return nil, err
	}
	if u == nil {
		if name != "root" {
			return nil, fmt.Errorf("unknown user %q (not in %s)", name, passwdFile)
		}
		u = &userInfo{Name: "root", Home: "/root"}
	}
	u.Groups = supplementaryGroups(groupFile, u.Name, u.Gid)
	return u, nil
}

// currentUser describes the user the agent runs as: processes started
// without a user by an unprivileged agent (tests on a host) run as it.
func currentUser() (*userInfo, error) {
	uid := uint32(os.Geteuid())
	u, err := findPasswdEntry(passwdFile, func(_ string, id uint32) bool { return id == uid })
	if err != nil {
		return nil, err
	}
	if u == nil {
		home := os.Getenv("HOME")
		if home == "" {
			home = "/"
		}
		u = &userInfo{Name: strconv.FormatUint(uint64(uid), 10), Uid: uid, Gid: uint32(os.Getegid()), Home: home}
	}
	u.Groups = supplementaryGroups(groupFile, u.Name, u.Gid)
	return u, nil
}

// findPasswdEntry returns the first entry of path for which match(name,
// uid) holds, or nil.
func findPasswdEntry(path string, match func(name string, uid uint32) bool) (*userInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name:password:uid:gid:gecos:home:shell
		fields := strings.Split(line, ":")
		if len(fields) < 7 {
			continue
		}
		uid, err1 := strconv.ParseUint(fields[2], 10, 32)
		gid, err2 := strconv.ParseUint(fields[3], 10, 32)
		if err1 != nil || err2 != nil || !match(fields[0], uint32(uid)) {
			continue
		}
		home := fields[5]
		if home == "" {
			home = "/"
		}
		return &userInfo{Name: fields[0], Uid: uint32(uid), Gid: uint32(gid), Home: home}, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return nil, nil
}

// supplementaryGroups returns the primary gid plus the gids of the groups
// listing name as a member. A missing or unreadable file yields only the
// primary gid.
func supplementaryGroups(path, name string, primary uint32) []uint32 {
	groups := []uint32{primary}
	f, err := os.Open(path)
	if err != nil {
		return groups
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		// name:password:gid:member,member
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 4 {
			continue
		}
		gid, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil || uint32(gid) == primary {
			continue
		}
		for _, m := range strings.Split(fields[3], ",") {
			if m == name {
				groups = append(groups, uint32(gid))
				break
			}
		}
	}
	return groups
}
