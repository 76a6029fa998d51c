package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestFsStatfs(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	r := c.call("fs.statfs", map[string]interface{}{"path": ta.dir})
	var s syscall.Statfs_t
	if err := syscall.Statfs(ta.dir, &s); err != nil {
		t.Fatal(err)
	}
	if total := num(r["totalBytes"]); total != int64(s.Blocks*uint64(s.Bsize)) || total == 0 {
		t.Fatalf("totalBytes %v, statfs says %d", r["totalBytes"], s.Blocks*uint64(s.Bsize))
	}
	if used, total := num(r["usedBytes"]), num(r["totalBytes"]); used <= 0 || used > total {
		t.Fatalf("usedBytes %v of %v", used, total)
	}
	// a file written shows in usedBytes
	before := num(r["usedBytes"])
	if err := os.WriteFile(filepath.Join(ta.dir, "blob"), make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Sync()
	if after := num(c.call("fs.statfs", map[string]interface{}{"path": ta.dir})["usedBytes"]); after < before+4<<20 {
		t.Fatalf("usedBytes %v after writing 8 MiB (before %v)", after, before)
	}
	if code := c.callErr("fs.statfs", map[string]interface{}{"path": filepath.Join(ta.dir, "missing")}); code != CodeNotFound {
		t.Fatalf("missing path: %s", code)
	}
	if code := c.callErr("fs.statfs", map[string]interface{}{"path": "relative"}); code != CodeInvalidPath {
		t.Fatalf("relative path: %s", code)
	}
}
