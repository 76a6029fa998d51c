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
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const userCgroup = "/sys/fs/cgroup/sandbox"

// The user cgroup's two leaves: user processes live in procsLeaf, which has
// the limits; the agent forks them in spawnLeaf, whose CPU weight is far
// above and which has no limits, so that a child gets to its exec (which
// the agent waits for, in there) ahead of a crowd of user processes (a fork
// bomb), and the agent meanwhile never meets a limit (no thread of its own
// refused); then the child
// and whatever it forked meanwhile move to procsLeaf.
const (
	procsLeaf   = "procs"
	spawnLeaf   = "spawn"
	spawnWeight = "10000"
)

// The limits of the user processes keep the guest serving the host whatever
// they do (a fork bomb, a memory hog): the agent, outside of their cgroup,
// keeps a CPU share (the cgroup weighs as much as userCPUWeight/100 busy
// processes of the agent's: a fifth of the CPU is the agent's when it needs
// it, four fifths are left to user processes whose output it reads) and
// process ids. Memory is not limited (a limit below the guest's would take
// it from the users: a 200 MiB buffer copied no longer fit in 512 MiB); the
// agent is exempt from the OOM killer instead (oomProtected).
const (
	userCPUWeight = "400"
	// one user process per this much of the guest's memory at most: a fork
	// bomb runs out of process ids (and a start fails at once, clearly)
	// before it runs the guest out of memory
	userBytesPerProcess = 256 << 10
)

// setupUserCgroup creates the user cgroup, its leaves and its limits (at
// boot).
func setupUserCgroup(logf func(string, ...interface{})) {
	for _, d := range []string{userCgroup, filepath.Join(userCgroup, procsLeaf), filepath.Join(userCgroup, spawnLeaf)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			logf("create %s: %v", d, err)
			return
		}
	}
	for _, parent := range []string{"/sys/fs/cgroup", userCgroup} {
		for _, c := range []string{"+cpu", "+pids"} {
			if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte(c), 0); err != nil {
				logf("enable the %s cgroup controller in %s: %v", c[1:], parent, err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(userCgroup, "cpu.weight"), []byte(userCPUWeight), 0); err != nil {
		logf("set the CPU weight of %s: %v", userCgroup, err)
	}
	if err := os.WriteFile(filepath.Join(userCgroup, spawnLeaf, "cpu.weight"), []byte(spawnWeight), 0); err != nil {
		logf("set the CPU weight of %s/%s: %v", userCgroup, spawnLeaf, err)
	}
	total := memTotal()
	if total <= 0 {
		logf("no MemTotal in /proc/meminfo: user processes have no process limit")
		return
	}
	if err := os.WriteFile(filepath.Join(userCgroup, procsLeaf, "pids.max"), []byte(strconv.FormatInt(total/userBytesPerProcess, 10)), 0); err != nil {
		logf("set pids.max of %s/%s: %v", userCgroup, procsLeaf, err)
	}
}

// memTotal is the guest's memory in bytes (MemTotal), or 0.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// userCgroupDir is the user cgroup, or "" when there is none (the agent
// runs on a host, in tests).
func userCgroupDir() string {
	if _, err := os.Stat(filepath.Join(userCgroup, spawnLeaf, "cgroup.procs")); err != nil {
		return ""
	}
	return userCgroup
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

// startInCgroup starts a process inside the user cgroup group, so that it
// never runs anything outside it: a child starts in its parent's cgroup, so
// the agent moves itself into the spawn leaf for the instant of the fork and
// back right after (about 2 ms under TCG, where re-executing a trampoline
// that joins the cgroup costs about 50); then the child moves to the procs
// leaf.
func startInCgroup(group string, start func() (*os.Process, error)) (*os.Process, error) {
	home, err := ownCgroupProcs()
	if err != nil {
		return nil, err
	}
	spawnMu.Lock()
	defer spawnMu.Unlock()
	// joining a frozen cgroup would freeze the agent itself, for good (nothing
	// could then thaw it): refuse until the host thaws the user processes
	if cur, err := os.ReadFile(filepath.Join(group, "cgroup.freeze")); err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil, opErrorf(CodeIOError, "user processes are frozen (a snapshot was interrupted?): thaw them first (sys.thaw)")
	}
	// a cgroup whose process ids are used up takes no process: say so at once,
	// without joining it (in there the agent could not start a thread either)
	if cur, max, ok := pidsUse(filepath.Join(group, procsLeaf)); ok && cur >= max {
		return nil, opErrorf(CodeProcessFailed, "the guest cannot start another process now: %d user processes, at most %d (a fork bomb?)", cur, max)
	}
	// the spawn leaf is the agent's: frozen on its own (root in the guest can
	// do that), it would take the agent with it
	if cur, err := os.ReadFile(filepath.Join(group, spawnLeaf, "cgroup.freeze")); err == nil && strings.TrimSpace(string(cur)) != "0" {
		if err := os.WriteFile(filepath.Join(group, spawnLeaf, "cgroup.freeze"), []byte("0"), 0); err != nil {
			return nil, toOpError("thaw the spawn cgroup", err)
		}
	}
	spawn := filepath.Join(group, spawnLeaf, "cgroup.procs")
	if err := os.WriteFile(spawn, []byte("0"), 0); err != nil {
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
	moveAll(spawn, filepath.Join(group, procsLeaf, "cgroup.procs"))
	return p, startErr
}

// moveAll moves every process of one cgroup (cgroup.procs file from) into
// another (to), again until none is left (a process may fork meanwhile), a
// bounded number of times. Each loses the OOM protection it inherited from
// the agent first (what it forks later inherits that).
func moveAll(from, to string) {
	for i := 0; i < 100; i++ {
		b, err := os.ReadFile(from)
		pids := strings.Fields(string(b))
		if err != nil || len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			// (both fail for one that exited meanwhile)
			if oomProtected {
				_ = os.WriteFile("/proc/"+pid+"/oom_score_adj", []byte("0"), 0)
			}
			_ = os.WriteFile(to, []byte(pid), 0)
		}
	}
}

// startUserProcess starts a process the way every user-visible process
// starts: in a VM inside the freezable user cgroup from its first
// instruction; on a host (tests), where there is none, directly.
func startUserProcess(start func() (*os.Process, error)) (*os.Process, error) {
	if group := userCgroupDir(); group != "" {
		return startInCgroup(group, start)
	}
	return start()
}

// userFrozen reports whether the user cgroup exists and is frozen.
func userFrozen() (bool, error) {
	if userCgroupDir() == "" {
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
	if userCgroupDir() == "" {
		return 0, nil // no user cgroup: nothing to freeze
	}
	spawnMu.Lock()
	defer spawnMu.Unlock()
	// never freeze the agent itself (it would never thaw): it is in the user
	// cgroup only while starting a process, under spawnMu
	if cur, err := currentCgroupProcs(); err != nil {
		return 0, err
	} else if strings.HasPrefix(cur, userCgroup+"/") {
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

func opSysFreeze(st *stream, req *emptyRequest) (*frozenResult, error) {
	us, err := setFrozen(true)
	if err != nil {
		return nil, err
	}
	return &frozenResult{Frozen: true, TookUs: us}, nil
}

func opSysThaw(st *stream, req *emptyRequest) (*frozenResult, error) {
	us, err := setFrozen(false)
	if err != nil {
		return nil, err
	}
	return &frozenResult{Frozen: false, TookUs: us}, nil
}

// pidsUse is the number of processes in a cgroup and its limit; ok is false
// without a limit.
func pidsUse(cgroup string) (cur, max int64, ok bool) {
	c, err1 := os.ReadFile(filepath.Join(cgroup, "pids.current"))
	m, err2 := os.ReadFile(filepath.Join(cgroup, "pids.max"))
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	cur, err1 = strconv.ParseInt(strings.TrimSpace(string(c)), 10, 64)
	max, err2 = strconv.ParseInt(strings.TrimSpace(string(m)), 10, 64) // "max": no limit
	return cur, max, err1 == nil && err2 == nil
}

// processLimitNote says how many user processes there are against their
// limit, for the error of a start that failed with EAGAIN.
func processLimitNote() string {
	if cur, max, ok := pidsUse(filepath.Join(userCgroup, procsLeaf)); ok {
		return fmt.Sprintf("%d user processes, at most %d: a fork bomb?", cur, max)
	}
	return "out of processes or memory"
}

const (
	oomScoreAdjFile  = "/proc/self/oom_score_adj"
	oomScoreAdjAgent = "-1000"
)

// oomProtected: the serve agent is never the OOM killer's choice (the user
// process that eats the guest's memory is). A child inherits its parent's
// oom_score_adj: a user process loses it as it leaves the spawn leaf.
var oomProtected bool

// protectFromOOM makes the agent immune to the OOM killer (in the guest).
func protectFromOOM() error {
	if err := os.WriteFile(oomScoreAdjFile, []byte(oomScoreAdjAgent), 0); err != nil {
		return err
	}
	oomProtected = true
	return nil
}
