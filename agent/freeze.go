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
// A process is in the cgroup before it runs any user code: it is forked
// while the agent itself is in the cgroup (see startInCgroup).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// spawnMu serializes starting user processes with freezing and thawing:
// while a process starts, the agent itself is in the user cgroup.
var spawnMu sync.Mutex

var homeCgroup struct {
	once  sync.Once
	procs string
	err   error
}

// ownCgroupProcs is the cgroup.procs file of the cgroup the agent started
// in (read once: later the agent may be in the user cgroup for an instant).
func ownCgroupProcs() (string, error) {
	homeCgroup.once.Do(func() {
		homeCgroup.procs, homeCgroup.err = currentCgroupProcs()
	})
	return homeCgroup.procs, homeCgroup.err
}

// currentCgroupProcs is the cgroup.procs file of the agent's current cgroup.
func currentCgroupProcs() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", toOpError("read /proc/self/cgroup", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rel := strings.TrimPrefix(line, "0::"); rel != line {
			return filepath.Join("/sys/fs/cgroup", filepath.Clean("/"+rel), "cgroup.procs"), nil
		}
	}
	return "", opErrorf(CodeIOError, "no cgroup v2 entry in /proc/self/cgroup")
}

// startInCgroup starts a process inside the cgroup whose cgroup.procs file
// is procs, so that it never runs anything outside it: a child starts in its
// parent's cgroup, so the agent moves itself there for the instant of the
// fork and back right after (about 2 ms under TCG, where re-executing a
// trampoline that joins the cgroup costs about 50).
func startInCgroup(procs string, start func() (*os.Process, error)) (*os.Process, error) {
	home, err := ownCgroupProcs()
	if err != nil {
		return nil, err
	}
	spawnMu.Lock()
	defer spawnMu.Unlock()
	// joining a frozen cgroup would freeze the agent itself, for good (nothing
	// could then thaw it): refuse until the host thaws the user processes
	if cur, err := os.ReadFile(filepath.Join(filepath.Dir(procs), "cgroup.freeze")); err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil, opErrorf(CodeIOError, "user processes are frozen (a snapshot was interrupted?): thaw them first (sys.thaw)")
	}
	if err := os.WriteFile(procs, []byte("0"), 0); err != nil {
		return nil, toOpError("join the user cgroup", err)
	}
	p, startErr := start()
	if err := os.WriteFile(home, []byte("0"), 0); err != nil {
		// the agent must never stay where a freeze would stop it
		if p != nil {
			_ = p.Kill()
			_, _ = p.Wait()
		}
		return nil, toOpError("leave the user cgroup", err)
	}
	return p, startErr
}

// startUserProcess starts a process the way every user-visible process
// starts: in a VM inside the freezable user cgroup from its first
// instruction; on a host (tests), where there is none, directly.
func startUserProcess(start func() (*os.Process, error)) (*os.Process, error) {
	if procs := userCgroupProcs(); procs != "" {
		return startInCgroup(procs, start)
	}
	return start()
}

// userFrozen reports whether the user cgroup exists and is frozen.
func userFrozen() (bool, error) {
	if userCgroupProcs() == "" {
		return false, nil
	}
	ev, err := os.ReadFile(userCgroup + "/cgroup.events")
	if err != nil {
		return false, toOpError("read cgroup.events", err)
	}
	return strings.Contains(string(ev), "frozen 1"), nil
}

// setFrozen writes cgroup.freeze and waits until cgroup.events agrees.
func setFrozen(frozen bool) (int64, error) {
	if userCgroupProcs() == "" {
		return 0, nil // no user cgroup: nothing to freeze
	}
	spawnMu.Lock()
	defer spawnMu.Unlock()
	// never freeze the agent itself (it would never thaw): it is in the user
	// cgroup only while starting a process, under spawnMu
	if cur, err := currentCgroupProcs(); err != nil {
		return 0, err
	} else if cur == userCgroupProcs() {
		return 0, opErrorf(CodeIOError, "the agent is in the user cgroup: refusing to freeze it")
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
