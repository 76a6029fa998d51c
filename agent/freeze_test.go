package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A process is never started into a frozen user cgroup: the agent would have
// to join it for the fork and would freeze itself for good.
func TestStartInCgroupRefusesAFrozenCgroup(t *testing.T) {
	if _, err := ownCgroupProcs(); err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	dir := t.TempDir()
	procs := filepath.Join(dir, spawnLeaf, "cgroup.procs")
	os.Mkdir(filepath.Dir(procs), 0o755)
	if err := os.WriteFile(procs, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	started := false
	_, err := startInCgroup(dir, func() (*os.Process, error) {
		started = true
		return nil, nil
	})
	if started {
		t.Fatal("started a process although the cgroup is frozen")
	}
	oe, ok := err.(*OpError)
	if !ok || oe.Code != CodeIOError {
		t.Fatalf("want an io_error, got %v", err)
	}
	if b, _ := os.ReadFile(procs); len(b) != 0 {
		t.Fatalf("the agent joined the frozen cgroup: %q", b)
	}
}
