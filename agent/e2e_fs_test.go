package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeFile writes content through fs.write.
func (c *testClient) writeFile(path string, content []byte, args map[string]interface{}) map[string]interface{} {
	c.t.Helper()
	req := map[string]interface{}{"path": path}
	for k, v := range args {
		req[k] = v
	}
	cs := c.open("fs.write", req)
	cs.sendData(content)
	cs.end()
	out := cs.collect()
	if out.err != nil {
		c.t.Fatalf("fs.write %s: %v", path, out.err)
	}
	return out.result
}

func TestFsWriteReadLargeWithFlowControl(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	content := make([]byte, 5<<20+123)
	rand.Read(content)
	path := filepath.Join(ta.dir, "data", "big.bin") // parent is created
	res := c.writeFile(path, content, nil)
	if num(res["size"]) != int64(len(content)) || res["path"] != path {
		t.Fatalf("write result %v", res)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("written file: %v, mode %v", err, fi.Mode())
	}

	// Read back, granting credit slowly: the client's reader checks that
	// the agent never exceeds the credit.
	cs := c.open("fs.read", map[string]interface{}{"path": path})
	h := sha256.New()
	var got int64
	stalls := 0
	for {
		f, ok := cs.nextWithin(50 * time.Millisecond)
		if !ok {
			// Grant more only once the agent has used up its credit (it is
			// then waiting for it).
			cs.mu.Lock()
			exhausted := cs.received == cs.granted
			cs.mu.Unlock()
			if exhausted {
				stalls++
				cs.grant(200 << 10)
			}
			continue
		}
		if f.Type == FrameResult {
			var r map[string]interface{}
			json.Unmarshal(f.Payload, &r)
			if num(r["size"]) != int64(len(content)) {
				t.Fatalf("read result %v", r)
			}
			break
		}
		if f.Type != FrameData || f.Payload[0] != ChanMain {
			t.Fatalf("unexpected frame %v %q", f.Type, f.Payload)
		}
		h.Write(f.Payload[1:])
		got += int64(len(f.Payload) - 1)
		if got >= int64(len(content))/2 {
			// second half: grant as consumed
			cs.grant(len(f.Payload) - 1)
		}
	}
	if got != int64(len(content)) {
		t.Fatalf("read %d bytes, want %d", got, len(content))
	}
	want := sha256.Sum256(content)
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("sha256 mismatch")
	}
	if stalls == 0 {
		t.Fatalf("the agent never waited for credit")
	}
}

func TestFsWriteModesAndAppend(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	path := filepath.Join(ta.dir, "f.txt")
	c.writeFile(path, []byte("one\n"), map[string]interface{}{"mode": 0o600})
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode())
	}
	// Replacing keeps the existing mode, even when another is requested.
	c.writeFile(path, []byte("two\n"), map[string]interface{}{"mode": 0o755})
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after replace %v, want 0600", fi.Mode())
	}
	res := c.writeFile(path, []byte("three\n"), map[string]interface{}{"append": true})
	if num(res["size"]) != 6 {
		t.Fatalf("append result %v", res)
	}
	if b, _ := os.ReadFile(path); string(b) != "two\nthree\n" {
		t.Fatalf("content %q", b)
	}
	// Append creates a missing file with the requested mode.
	p2 := filepath.Join(ta.dir, "new", "log")
	c.writeFile(p2, []byte("x"), map[string]interface{}{"append": true, "mode": 0o640})
	if fi, err := os.Stat(p2); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("appended new file: %v %v", err, fi)
	}
	// Empty write.
	p3 := filepath.Join(ta.dir, "empty")
	c.writeFile(p3, nil, nil)
	if fi, err := os.Stat(p3); err != nil || fi.Size() != 0 {
		t.Fatalf("empty file: %v", err)
	}
	// Writing to a directory.
	cs := c.open("fs.write", map[string]interface{}{"path": ta.dir})
	cs.end()
	if out := cs.collect(); out.err == nil || out.err.Code != CodeIsADirectory {
		t.Fatalf("write to dir: %+v", out.err)
	}
	// Through a symlink: the target is written, the link stays.
	target := filepath.Join(ta.dir, "target")
	os.WriteFile(target, []byte("old"), 0o600)
	link := filepath.Join(ta.dir, "link")
	os.Symlink(target, link)
	c.writeFile(link, []byte("new"), nil)
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Fatalf("symlink target content %q", b)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link replaced")
	}
	assertNoTempFiles(t, ta.dir)
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.Contains(fi.Name(), ".nstmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestFsWriteCancelKeepsOldContent(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	path := filepath.Join(ta.dir, "keep.txt")
	c.writeFile(path, []byte("old content"), nil)
	cs := c.open("fs.write", map[string]interface{}{"path": path})
	cs.sendData(bytes.Repeat([]byte("new"), 100000))
	// The temp file exists while the write is in progress.
	waitFor(t, "temporary file", func() bool {
		m, _ := filepath.Glob(filepath.Join(ta.dir, ".keep.txt.nstmp-*"))
		return len(m) == 1
	})
	cs.cancel()
	waitFor(t, "temporary file removal", func() bool {
		m, _ := filepath.Glob(filepath.Join(ta.dir, ".keep.txt.nstmp-*"))
		return len(m) == 0
	})
	if b, _ := os.ReadFile(path); string(b) != "old content" {
		t.Fatalf("content after cancel %q", b)
	}
	// No answer is sent on a cancelled stream.
	if f, ok := cs.nextWithin(200 * time.Millisecond); ok && f.Type != FrameWindow {
		t.Fatalf("frame after CANCEL: %v", f.Type)
	}
	// The session still works.
	if r := c.call("fs.stat", map[string]interface{}{"path": path}); num(r["size"]) != 11 {
		t.Fatalf("stat %v", r)
	}
}

func TestFsListDepth(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	root := filepath.Join(ta.dir, "tree")
	for _, d := range []string{"b", "b/sub", "b.d", "a"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, f := range []string{"b/x", "b/sub/deep", "b.txt", "a/1", "z"} {
		os.WriteFile(filepath.Join(root, f), []byte("12345"), 0o640)
	}
	os.Symlink(filepath.Join(root, "b"), filepath.Join(root, "lnk"))

	list := func(depth int) []Entry {
		args := map[string]interface{}{"path": root}
		if depth > 0 {
			args["depth"] = depth
		}
		out := c.open("fs.list", args).collect()
		if out.err != nil {
			t.Fatalf("list: %v", out.err)
		}
		var entries []Entry
		for _, ev := range out.events {
			if ev["type"] != "entries" {
				t.Fatalf("event %v", ev)
			}
			b, _ := json.Marshal(ev["entries"])
			var chunk []Entry
			json.Unmarshal(b, &chunk)
			entries = append(entries, chunk...)
		}
		if num(out.result["count"]) != int64(len(entries)) {
			t.Fatalf("count %v, got %d entries", out.result["count"], len(entries))
		}
		return entries
	}
	paths := func(es []Entry) []string {
		var ps []string
		for _, e := range es {
			ps = append(ps, strings.TrimPrefix(e.Path, root+"/"))
		}
		return ps
	}
	d1 := list(0)
	if got := strings.Join(paths(d1), " "); got != "a b b.d b.txt lnk z" {
		t.Fatalf("depth 1: %s", got)
	}
	d2 := list(2)
	if got := strings.Join(paths(d2), " "); got != "a a/1 b b.d b.txt b/sub b/x lnk z" {
		t.Fatalf("depth 2: %s", got)
	}
	full := list(32)
	ps := paths(full)
	if !sort.StringsAreSorted(ps) {
		t.Fatalf("not sorted: %v", ps)
	}
	if strings.Join(ps, " ") != "a a/1 b b.d b.txt b/sub b/sub/deep b/x lnk z" {
		t.Fatalf("depth 32: %v", ps)
	}
	byName := map[string]Entry{}
	for _, e := range full {
		byName[strings.TrimPrefix(e.Path, root+"/")] = e
	}
	if e := byName["z"]; e.Type != "file" || e.Size != 5 || e.Mode != 0o640 || e.Name != "z" || e.MtimeMs < 1e12 {
		t.Fatalf("entry z: %+v", e)
	}
	if e := byName["lnk"]; e.Type != "symlink" || e.SymlinkTarget == nil || *e.SymlinkTarget != filepath.Join(root, "b") {
		t.Fatalf("entry lnk: %+v", e)
	}
	if e := byName["b"]; e.Type != "dir" || e.SymlinkTarget != nil {
		t.Fatalf("entry b: %+v", e)
	}

	// Chunks of at most 500 entries.
	many := filepath.Join(ta.dir, "many")
	os.Mkdir(many, 0o755)
	for i := 0; i < 1234; i++ {
		os.WriteFile(filepath.Join(many, fmt.Sprintf("f%04d", i)), nil, 0o644)
	}
	out := c.open("fs.list", map[string]interface{}{"path": many}).collect()
	if len(out.events) != 3 || num(out.result["count"]) != 1234 {
		t.Fatalf("many: %d events, result %v", len(out.events), out.result)
	}
	for _, ev := range out.events {
		if n := len(ev["entries"].([]interface{})); n > 500 {
			t.Fatalf("chunk of %d entries", n)
		}
	}

	if code := c.callErr("fs.list", map[string]interface{}{"path": filepath.Join(root, "z")}); code != CodeNotADirectory {
		t.Fatalf("list of a file: %s", code)
	}
	if code := c.callErr("fs.list", map[string]interface{}{"path": filepath.Join(root, "nope")}); code != CodeNotFound {
		t.Fatalf("list of missing: %s", code)
	}
	if code := c.callErr("fs.list", map[string]interface{}{"path": root, "depth": 0}); code != CodeBadRequest {
		t.Fatalf("depth 0: %s", code)
	}
}

func TestFsStatAndPathErrors(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	p := filepath.Join(ta.dir, "s")
	os.WriteFile(p, []byte("abc"), 0o604)
	r := c.call("fs.stat", map[string]interface{}{"path": p + "/"})
	if r["name"] != "s" || r["path"] != p || r["type"] != "file" || num(r["size"]) != 3 || num(r["mode"]) != 0o604 {
		t.Fatalf("stat %v", r)
	}
	if _, has := r["symlinkTarget"]; has {
		t.Fatalf("symlinkTarget on a file")
	}
	cases := []struct {
		op   string
		args map[string]interface{}
		want ErrCode
	}{
		{"fs.stat", map[string]interface{}{"path": filepath.Join(ta.dir, "missing")}, CodeNotFound},
		{"fs.stat", map[string]interface{}{"path": filepath.Join(ta.dir, "missing", "deeper")}, CodeNotFound},
		{"fs.stat", map[string]interface{}{"path": "relative/path"}, CodeInvalidPath},
		{"fs.stat", map[string]interface{}{"path": "/tmp/a\x00b"}, CodeInvalidPath},
		{"fs.stat", map[string]interface{}{}, CodeBadRequest},
		{"fs.stat", map[string]interface{}{"path": 42}, CodeBadRequest},
		{"fs.read", map[string]interface{}{"path": "rel"}, CodeInvalidPath},
		{"fs.read", map[string]interface{}{"path": filepath.Join(ta.dir, "missing")}, CodeNotFound},
		{"fs.read", map[string]interface{}{"path": ta.dir}, CodeIsADirectory},
		{"fs.mkdir", map[string]interface{}{"path": "x"}, CodeInvalidPath},
		{"fs.remove", map[string]interface{}{"path": "x"}, CodeInvalidPath},
		{"fs.rename", map[string]interface{}{"from": p, "to": "x"}, CodeInvalidPath},
		{"fs.list", map[string]interface{}{"path": "."}, CodeInvalidPath},
	}
	for _, tc := range cases {
		if got := c.callErr(tc.op, tc.args); got != tc.want {
			t.Errorf("%s %v: %s, want %s", tc.op, tc.args, got, tc.want)
		}
	}
	if os.Geteuid() != 0 {
		locked := filepath.Join(ta.dir, "locked")
		os.WriteFile(locked, nil, 0)
		if got := c.callErr("fs.read", map[string]interface{}{"path": locked}); got != CodePermissionDenied {
			t.Errorf("unreadable file: %s", got)
		}
	}
}

func TestFsMkdirRenameRemove(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	d := filepath.Join(ta.dir, "a", "b", "c")
	if r := c.call("fs.mkdir", map[string]interface{}{"path": d, "mode": 0o700}); r["created"] != true {
		t.Fatalf("mkdir %v", r)
	}
	if fi, err := os.Stat(d); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("mkdir result: %v %v", err, fi.Mode())
	}
	if r := c.call("fs.mkdir", map[string]interface{}{"path": d}); r["created"] != false {
		t.Fatalf("mkdir existing %v", r)
	}
	if code := c.callErr("fs.mkdir", map[string]interface{}{"path": filepath.Join(ta.dir, "x", "y"), "parents": false}); code != CodeNotFound {
		t.Fatalf("mkdir without parents: %s", code)
	}
	f := filepath.Join(ta.dir, "file")
	os.WriteFile(f, []byte("1"), 0o644)
	if code := c.callErr("fs.mkdir", map[string]interface{}{"path": f}); code != CodeAlreadyExists {
		t.Fatalf("mkdir over file: %s", code)
	}
	if code := c.callErr("fs.mkdir", map[string]interface{}{"path": filepath.Join(f, "sub")}); code != CodeNotADirectory {
		t.Fatalf("mkdir under file: %s", code)
	}

	// rename
	f2 := filepath.Join(ta.dir, "file2")
	c.call("fs.rename", map[string]interface{}{"from": f, "to": f2})
	if _, err := os.Stat(f2); err != nil {
		t.Fatalf("renamed file: %v", err)
	}
	os.WriteFile(f, []byte("other"), 0o644)
	if code := c.callErr("fs.rename", map[string]interface{}{"from": f, "to": f2, "overwrite": false}); code != CodeAlreadyExists {
		t.Fatalf("rename without overwrite: %s", code)
	}
	c.call("fs.rename", map[string]interface{}{"from": f, "to": f2})
	if b, _ := os.ReadFile(f2); string(b) != "other" {
		t.Fatalf("overwritten content %q", b)
	}
	if code := c.callErr("fs.rename", map[string]interface{}{"from": f, "to": f2}); code != CodeNotFound {
		t.Fatalf("rename missing: %s", code)
	}
	nd := filepath.Join(ta.dir, "moved")
	c.call("fs.rename", map[string]interface{}{"from": filepath.Join(ta.dir, "a"), "to": nd, "overwrite": false})
	if _, err := os.Stat(filepath.Join(nd, "b", "c")); err != nil {
		t.Fatalf("renamed dir: %v", err)
	}

	// remove
	if code := c.callErr("fs.remove", map[string]interface{}{"path": nd}); code != CodeNotEmpty {
		t.Fatalf("remove non-empty: %s", code)
	}
	c.call("fs.remove", map[string]interface{}{"path": filepath.Join(nd, "b", "c")})
	c.call("fs.remove", map[string]interface{}{"path": nd, "recursive": true})
	if _, err := os.Stat(nd); !os.IsNotExist(err) {
		t.Fatalf("dir still there: %v", err)
	}
	c.call("fs.remove", map[string]interface{}{"path": f2})
	if code := c.callErr("fs.remove", map[string]interface{}{"path": f2}); code != CodeNotFound {
		t.Fatalf("remove missing: %s", code)
	}
	// A symlink is removed, not its target.
	tgt := filepath.Join(ta.dir, "tgt")
	os.Mkdir(tgt, 0o755)
	os.WriteFile(filepath.Join(tgt, "keep"), nil, 0o644)
	lnk := filepath.Join(ta.dir, "lnk")
	os.Symlink(tgt, lnk)
	c.call("fs.remove", map[string]interface{}{"path": lnk, "recursive": true})
	if _, err := os.Stat(filepath.Join(tgt, "keep")); err != nil {
		t.Fatalf("symlink target touched: %v", err)
	}
}

// fs.write and fs.mkdir give what they create to `owner` (uid:gid here: the host's
// user database is not the guest's); an existing file keeps its owner.
func TestFsWriteMkdirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	ta := startTestAgent(t)
	c := ta.dial()
	owned := func(p string) string {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	f := filepath.Join(ta.dir, "a", "b", "f.txt")
	c.writeFile(f, []byte("x"), map[string]interface{}{"owner": "4242:4343"})
	for _, p := range []string{f, filepath.Join(ta.dir, "a", "b"), filepath.Join(ta.dir, "a")} {
		if got := owned(p); got != "4242:4343" {
			t.Fatalf("%s owned by %s, want 4242:4343", p, got)
		}
	}
	if got := owned(ta.dir); got != "0:0" {
		t.Fatalf("the existing parent changed owner: %s", got)
	}
	// replaced or appended, an existing file keeps its owner
	c.writeFile(f, []byte("y"), map[string]interface{}{"owner": "5000:5000"})
	c.writeFile(f, []byte("z"), map[string]interface{}{"owner": "5000:5000", "append": true})
	if got := owned(f); got != "4242:4343" {
		t.Fatalf("replaced file owned by %s", got)
	}
	root := filepath.Join(ta.dir, "root-owned")
	c.writeFile(root, []byte("x"), nil)
	if got := owned(root); got != "0:0" {
		t.Fatalf("no owner: %s", got)
	}
	d := filepath.Join(ta.dir, "m", "n")
	if r := c.call("fs.mkdir", map[string]interface{}{"path": d, "owner": "4242:4343"}); r["created"] != true {
		t.Fatalf("mkdir %v", r)
	}
	for _, p := range []string{d, filepath.Join(ta.dir, "m")} {
		if got := owned(p); got != "4242:4343" {
			t.Fatalf("%s owned by %s", p, got)
		}
	}
	if got := c.callErr("fs.write", map[string]interface{}{"path": filepath.Join(ta.dir, "u"), "owner": "no-such-user-here"}); got != CodeBadRequest {
		t.Fatalf("unknown owner: %s", got)
	}
	if got := c.callErr("fs.mkdir", map[string]interface{}{"path": filepath.Join(ta.dir, "v"), "owner": "no-such-user-here"}); got != CodeBadRequest {
		t.Fatalf("unknown owner (mkdir): %s", got)
	}
}
