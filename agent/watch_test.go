package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type watchStream struct {
	t      *testing.T
	cs     *clientStream
	events []map[string]interface{}
}

// startWatch opens fs.watch and waits for its watching event.
func (c *testClient) startWatch(path string, recursive bool) *watchStream {
	c.t.Helper()
	cs := c.open("fs.watch", map[string]interface{}{"path": path, "recursive": recursive})
	f := cs.next()
	if f.Type != FrameEvent {
		c.t.Fatalf("fs.watch %s: first frame %v %s", path, f.Type, f.Payload)
	}
	if ev := mustMap(c.t, f.Payload); ev["type"] != "watching" || ev["path"] != path {
		c.t.Fatalf("first event %s", f.Payload)
	}
	return &watchStream{t: c.t, cs: cs}
}

// expect reads events until one has this op and name (or the type
// "overflow" when op is "overflow").
func (ws *watchStream) expect(op, name string) map[string]interface{} {
	ws.t.Helper()
	for {
		f := ws.cs.next()
		if f.Type != FrameEvent {
			ws.t.Fatalf("waiting for %s %s: frame %v %s (events %v)", op, name, f.Type, f.Payload, ws.events)
		}
		ev := mustMap(ws.t, f.Payload)
		ws.events = append(ws.events, ev)
		if (ev["type"] == "change" && ev["op"] == op && ev["name"] == name) || (op == "overflow" && ev["type"] == "overflow") {
			return ev
		}
	}
}

func TestWatchReportsChanges(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	dir := filepath.Join(ta.dir, "w")
	os.MkdirAll(dir, 0o755)
	ws := c.startWatch(dir, false)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("x"), 0o644)
	ws.expect("create", "a.txt")
	ws.expect("write", "a.txt")
	os.Chmod(filepath.Join(dir, "a.txt"), 0o600)
	ws.expect("chmod", "a.txt")
	os.Rename(filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt"))
	ws.expect("rename", "a.txt")
	ws.expect("create", "b.txt")
	os.Remove(filepath.Join(dir, "b.txt"))
	ws.expect("remove", "b.txt")
	// not recursive: a subdirectory's files are not reported, the subdirectory is
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	ws.expect("create", "sub")
	os.WriteFile(filepath.Join(dir, "sub", "deep"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "after"), nil, 0o644)
	ev := ws.expect("create", "after")
	for _, e := range ws.events {
		if e["name"] == "sub/deep" {
			t.Fatalf("a non-recursive watch reported %v", e)
		}
	}
	_ = ev
	// the watched directory removed: the stream ends
	os.RemoveAll(dir)
	out := ws.cs.collect()
	if out.err != nil || out.result["removed"] != true {
		t.Fatalf("end: %v %v", out.err, out.result)
	}
}

func TestWatchRecursiveFollowsNewDirectories(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	dir := filepath.Join(ta.dir, "w")
	os.MkdirAll(filepath.Join(dir, "old"), 0o755)
	ws := c.startWatch(dir, true)
	os.WriteFile(filepath.Join(dir, "old", "f"), nil, 0o644)
	ws.expect("create", "old/f")
	// a tree made at once: what is there before its watch is set is reported as created
	os.MkdirAll(filepath.Join(dir, "n1", "n2"), 0o755)
	os.WriteFile(filepath.Join(dir, "n1", "n2", "g"), nil, 0o644)
	ws.expect("create", "n1/n2/g")
	os.WriteFile(filepath.Join(dir, "n1", "n2", "h"), []byte("y"), 0o644)
	ws.expect("write", "n1/n2/h")
	ws.cs.cancel()
}

func TestWatchErrorsAndOverflow(t *testing.T) {
	ta := startTestAgent(t)
	c := ta.dial()
	if code := c.callErr("fs.watch", map[string]interface{}{"path": filepath.Join(ta.dir, "missing")}); code != CodeNotFound {
		t.Fatalf("missing path: %s", code)
	}
	file := filepath.Join(ta.dir, "file")
	os.WriteFile(file, nil, 0o644)
	if code := c.callErr("fs.watch", map[string]interface{}{"path": file}); code != CodeNotADirectory {
		t.Fatalf("a file: %s", code)
	}
	if code := c.callErr("fs.watch", map[string]interface{}{"path": "rel"}); code != CodeInvalidPath {
		t.Fatalf("relative: %s", code)
	}

	// a host that reads slowly: the agent's queue fills, the rest is counted
	old := watchQueueMax
	watchQueueMax = 5
	hold := make(chan struct{})
	testHookWatchSend = func() { <-hold }
	t.Cleanup(func() { watchQueueMax, testHookWatchSend = old, nil })
	dir := filepath.Join(ta.dir, "w")
	os.MkdirAll(dir, 0o755)
	cs := c.open("fs.watch", map[string]interface{}{"path": dir})
	hold <- struct{}{} // the watching event goes; the loop waits again
	ws := &watchStream{t: t, cs: cs}
	for i := 0; i < 50; i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o644)
	}
	time.Sleep(200 * time.Millisecond) // the reader queues 5 and counts the rest
	close(hold)
	ws.expect("overflow", "")
	ev := ws.events[len(ws.events)-1]
	if d, ok := ev["dropped"].(float64); !ok || d != 45 {
		t.Fatalf("overflow %v", ev)
	}
	ws.cs.cancel()
}
