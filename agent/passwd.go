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
	Shell  string   // login shell from /etc/passwd; empty when unknown
	Groups []uint32 // supplementary groups from /etc/group
}

var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// lookupUser resolves a user given as Docker's USER takes it: NAME, UID,
// NAME:GROUP or UID:GID. A name must be in /etc/passwd, but root, which is
// always known (uid 0, /root); a uid that is not there runs with gid 0 and
// HOME / (images without a user database, as Docker does). A group is a gid
// or a name from /etc/group; it replaces the primary group of the passwd
// entry.
func lookupUser(spec string) (*userInfo, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	if name == "" || (hasGroup && group == "") || strings.Contains(group, ":") {
		return nil, fmt.Errorf("invalid user %q (NAME, UID, NAME:GROUP or UID:GID)", spec)
	}
	var u *userInfo
	var err error
	if uid, numeric, perr := parseID(name); perr != nil {
		return nil, fmt.Errorf("invalid user %q: %v", spec, perr)
	} else if numeric {
		u, err = findPasswdEntry(passwdFile, func(_ string, id uint32) bool { return id == uid })
		if err == nil && u == nil {
			u = &userInfo{Name: name, Uid: uid, Home: "/"}
			if uid == 0 {
				u = &userInfo{Name: "root", Home: "/root"}
			}
		}
	} else {
		u, err = findPasswdEntry(passwdFile, func(n string, _ uint32) bool { return n == name })
		if err == nil && u == nil {
			if name != "root" {
				return nil, fmt.Errorf("unknown user %q (not in %s)", name, passwdFile)
			}
			u = &userInfo{Name: "root", Home: "/root"}
		}
	}
	if err != nil {
		return nil, err
	}
	if hasGroup {
		gid, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		u.Gid = gid
	}
	u.Groups = supplementaryGroups(groupFile, u.Name, u.Gid)
	return u, nil
}

// lookupGroup resolves a gid or a group name from /etc/group.
func lookupGroup(group string) (uint32, error) {
	if gid, numeric, err := parseID(group); err != nil {
		return 0, fmt.Errorf("invalid group %q: %v", group, err)
	} else if numeric {
		return gid, nil
	}
	f, err := os.Open(groupFile)
	if err != nil && !os.IsNotExist(err) {
		return 0, fmt.Errorf("read %s: %w", groupFile, err)
	}
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 4096), 1<<20)
		for sc.Scan() {
			// name:password:gid:member,member
			fields := strings.Split(sc.Text(), ":")
			if len(fields) < 3 || fields[0] != group {
				continue
			}
			if gid, err := strconv.ParseUint(fields[2], 10, 32); err == nil {
				return uint32(gid), nil
			}
		}
	}
	return 0, fmt.Errorf("unknown group %q (not in %s)", group, groupFile)
}

// parseID reports whether s is a numeric id (digits only) and its value; a
// number out of the uint32 range is an error.
func parseID(s string) (uint32, bool, error) {
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, true, fmt.Errorf("%s is not a 32-bit id", s)
	}
	return uint32(n), true, nil
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
		return &userInfo{Name: fields[0], Uid: uint32(uid), Gid: uint32(gid), Home: home, Shell: fields[6]}, nil
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
