package main

// Freezing user processes around snapshots.
//
// Every process started through proc.start lives in one cgroup (userCgroup).
// Before a snapshot the host freezes it (sys.freeze), so the snapshot holds
// user processes stopped; the source is thawed right after the capture, and a
// restored clone only by sys.init, after its clock, entropy and identity are
// current. No user code therefore ever runs in a clone with the source's
// clock, random state or identity.
//
// A process enters the cgroup before it runs any user code: the agent starts
// itself as a trampoline ("spawn"), which moves itself into the cgroup as
// root, drops to the target user and execs the command.

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const userCgroup = "/sys/fs/cgroup/sandbox"

// userCgroupProcs is the cgroup.procs file of the user cgroup, or "" when
// there is none (the agent runs on a host, in tests).
func userCgroupProcs() string {
	p := userCgroup + "/cgroup.procs"
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// runSpawn is the trampoline: spawn PROCS UID GID GROUPS -- ARGV...
// PROCS may be "-" (no cgroup), UID "-" (keep the current user).
func runSpawn(args []string) int {
	if len(args) < 6 || args[4] != "--" {
		fmt.Fprintln(os.Stderr, "usage: nullspace-agent spawn PROCS UID GID GROUPS -- ARGV...")
		return 127
	}
	procs, uid, gid, groups, argv := args[0], args[1], args[2], args[3], args[5:]
	if procs != "-" {
		if err := os.WriteFile(procs, []byte("0"), 0); err != nil {
			fmt.Fprintf(os.Stderr, "nullspace-agent spawn: join %s: %v\n", procs, err)
			return 127
		}
	}
	if uid != "-" {
		var gids []int
		for _, g := range strings.Split(groups, ",") {
			if g == "" {
				continue
			}
			n, err := strconv.Atoi(g)
			if err != nil {
				fmt.Fprintf(os.Stderr, "nullspace-agent spawn: bad group %q\n", g)
				return 127
			}
			gids = append(gids, n)
		}
		u, err1 := strconv.Atoi(uid)
		g, err2 := strconv.Atoi(gid)
		if err1 != nil || err2 != nil {
			fmt.Fprintln(os.Stderr, "nullspace-agent spawn: bad uid or gid")
			return 127
		}
		if err := syscall.Setgroups(gids); err != nil {
			fmt.Fprintf(os.Stderr, "nullspace-agent spawn: setgroups: %v\n", err)
			return 127
		}
		if err := syscall.Setgid(g); err != nil {
			fmt.Fprintf(os.Stderr, "nullspace-agent spawn: setgid: %v\n", err)
			return 127
		}
		if err := syscall.Setuid(u); err != nil {
			fmt.Fprintf(os.Stderr, "nullspace-agent spawn: setuid: %v\n", err)
			return 127
		}
	}
	err := syscall.Exec(argv[0], argv, os.Environ())
	fmt.Fprintf(os.Stderr, "nullspace-agent spawn: exec %s: %v\n", argv[0], err)
	return 127
}

// setFrozen writes cgroup.freeze and waits until cgroup.events agrees.
func setFrozen(frozen bool) (int64, error) {
	if userCgroupProcs() == "" {
		return 0, nil // no user cgroup: nothing to freeze
	}
	start := time.Now()
	want := "0"
	if frozen {
		want = "1"
	}
	// already there (the common case of sys.init: nothing was frozen): skip the write and the wait
	if cur, err := os.ReadFile(userCgroup + "/cgroup.freeze"); err == nil && strings.TrimSpace(string(cur)) == want {
		if ev, err := os.ReadFile(userCgroup + "/cgroup.events"); err == nil && strings.Contains(string(ev), "frozen "+want) {
			return time.Since(start).Microseconds(), nil
		}
	}
	if err := os.WriteFile(userCgroup+"/cgroup.freeze", []byte(want), 0); err != nil {
		return 0, toOpError("write cgroup.freeze", err)
	}
	deadline := start.Add(5 * time.Second)
	for {
		ev, err := os.ReadFile(userCgroup + "/cgroup.events")
		if err != nil {
			return 0, toOpError("read cgroup.events", err)
		}
		if strings.Contains(string(ev), "frozen "+want) {
			return time.Since(start).Microseconds(), nil
		}
		if time.Now().After(deadline) {
			return 0, opErrorf(CodeIOError, "user processes did not reach frozen=%s within 5 s", want)
		}
		time.Sleep(time.Millisecond)
	}
}

func opSysFreeze(st *stream, raw json.RawMessage) (interface{}, error) {
	var req struct{}
	if err := decodeRequest(raw, &req); err != nil {
		return nil, err
	}
	us, err := setFrozen(true)
	if err != nil {
		return nil, err
	}
	return map[string]interface{}{"frozen": true, "tookUs": us}, nil
}

func opSysThaw(st *stream, raw json.RawMessage) (interface{}, error) {
	var req struct{}
	if err := decodeRequest(raw, &req); err != nil {
		return nil, err
	}
	us, err := setFrozen(false)
	if err != nil {
		return nil, err
	}
	return map[string]interface{}{"frozen": false, "tookUs": us}, nil
}
