package main

// The agent's guards against requests that would hang or break the guest:
// reads of what is not a plain file, changes to device nodes and system
// directories, volume mounts into system directories, work the host gave
// up on.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mknodNull makes a character device like /dev/null at path (root only).
func mknodNull(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	if err := syscall.Mknod(path, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Skipf("mknod: %v", err)
	}
}

func TestFsReadOnlyPlainFiles(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	fifo := filepath.Join(ta.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(ta.dir, "null")
	mknodNull(t, dev)
	// (each is refused at once: a FIFO without a writer, a device, a file that cannot be read)
	for _, p := range []string{fifo, dev, "/proc/self/mem"} {
		if got := c.callErr("fs.read", map[string]interface{}{"path": p}); got != CodeBadRequest {
			t.Errorf("fs.read %s: %s, want %s", p, got, CodeBadRequest)
		}
	}
	// kernel files that are plain files are read to their end
	out := c.open("fs.read", map[string]interface{}{"path": "/proc/self/status"}).collect()
	if out.err != nil || !strings.HasPrefix(string(out.main), "Name:") {
		t.Fatalf("/proc/self/status: %v %q", out.err, out.main)
	}
}

func TestFsLeavesSystemEntriesAlone(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	dev := filepath.Join(ta.dir, "mynull")
	mknodNull(t, dev)
	// a link into /proc: through it, nothing is changed either (and a broken
	// guard meets only "not found" there, never a host file)
	link := filepath.Join(ta.dir, "proclink")
	if err := os.Symlink("/proc", link); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(ta.dir, "plain")
	os.WriteFile(plain, []byte("x"), 0o644)
	cases := []struct {
		op   string
		args map[string]interface{}
	}{
		{"fs.remove", map[string]interface{}{"path": dev}},
		{"fs.rename", map[string]interface{}{"from": dev, "to": filepath.Join(ta.dir, "other")}},
		{"fs.rename", map[string]interface{}{"from": plain, "to": dev}},
		{"fs.remove", map[string]interface{}{"path": filepath.Join(link, "no-such-entry")}},
		{"fs.remove", map[string]interface{}{"path": "/sys/no-such-entry", "recursive": true}},
		{"fs.mkdir", map[string]interface{}{"path": "/proc/no-such-dir/x"}},
		{"fs.rename", map[string]interface{}{"from": plain, "to": filepath.Join(link, "no-such-entry")}},
	}
	for _, tc := range cases {
		if got := c.callErr(tc.op, tc.args); got != CodeBadRequest {
			t.Errorf("%s %v: %s, want %s", tc.op, tc.args, got, CodeBadRequest)
		}
	}
	cs := c.open("fs.write", map[string]interface{}{"path": filepath.Join(link, "no-such-entry")})
	cs.end()
	if out := cs.collect(); out.err == nil || out.err.Code != CodeBadRequest {
		t.Errorf("fs.write into /proc: %v", out.err)
	}
	if fi, err := os.Lstat(dev); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("the device node: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(plain); string(b) != "x" {
		t.Fatalf("the plain file: %q", b)
	}
	// /dev/shm is for files
	shm := filepath.Join("/dev/shm", "nullspace-agent-test-"+filepath.Base(ta.dir))
	defer os.Remove(shm)
	c.writeFile(shm, []byte("shared"), nil)
	c.call("fs.remove", map[string]interface{}{"path": shm})
}

func TestMountTargetResolvesLinks(t *testing.T) {
	dir := t.TempDir()
	os.Symlink("/etc", filepath.Join(dir, "etc-link"))
	os.Symlink("/", filepath.Join(dir, "root-link"))
	os.Mkdir(filepath.Join(dir, "real"), 0o755)
	os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "data-link"))
	os.Symlink("/run/no-such-dir", filepath.Join(dir, "dangling-run-link"))
	for _, p := range []string{filepath.Join(dir, "dangling-run-link"), filepath.Join(dir, "etc-link"), filepath.Join(dir, "etc-link", "new", "dir"), filepath.Join(dir, "root-link"), "/run/x", "/"} {
		if got, err := mountTarget(p); err == nil || err.(*OpError).Code != CodeInvalidPath {
			t.Errorf("mountTarget(%s) = %s, %v: want invalid_path", p, got, err)
		}
	}
	if got, err := mountTarget(filepath.Join(dir, "data-link", "sub")); err != nil || got != filepath.Join(dir, "real", "sub") {
		t.Errorf("mountTarget through a link: %s, %v", got, err)
	}
}

func TestRemoveAllStopsWhenCancelled(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree")
	for i := 0; i < 3; i++ {
		os.MkdirAll(filepath.Join(dir, "a", "b", strings.Repeat("c", i+1)), 0o755)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := removeAll(ctx, dir); err != context.Canceled {
		t.Fatalf("cancelled removeAll: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a", "b", "c")); err != nil {
		t.Fatalf("a cancelled removeAll removed: %v", err)
	}
	if err := removeAll(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("after removeAll: %v", err)
	}
}

// A proc.start the host cancels before its started event starts nothing, or
// kills what it started: the host gave up on it.
func TestProcStartCancelledBeforeStarted(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	marker := filepath.Join(ta.dir, "ran")
	// cancelled while it starts
	testHookProcStarted = func(st *stream) { st.cancel() }
	defer func() { testHookProcStarted = nil }()
	for i := 0; i < 5; i++ {
		c.open("proc.start", map[string]interface{}{"cmd": "sleep 1; touch " + marker, "tag": "cancelled"})
	}
	time.Sleep(1500 * time.Millisecond)
	for _, p := range ta.a.procs.list() {
		if p.Tag == "cancelled" && p.Running {
			t.Errorf("process %d of a cancelled start runs", p.Pid)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("a cancelled start ran its command")
	}
}
