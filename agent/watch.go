package main

// File watching: fs.watch reports the changes in a directory (and, when
// recursive, in every directory below it, including those created while
// it runs) through inotify.
//
// One inotify instance per stream. A reader goroutine turns the kernel's
// events into change events in a bounded queue (watchQueueMax); the
// stream's goroutine sends them as EVENT frames at the pace of the host.
// What does not fit in the queue is dropped and counted, and reported as an
// overflow event once there is room again; the kernel's own queue overflow
// (IN_Q_OVERFLOW) is an overflow event with dropped -1 (unknown). The
// stream ends with RESULT when the watched directory itself is removed or
// moved away; otherwise it runs until the host cancels it (or the session
// ends).

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// watchQueueMax bounds the change events a watch holds for a slow host.
var watchQueueMax = 4096

// testHookWatchSend, when set (tests), runs before a watch sends what it
// queued: a test holds it to play a host that reads slowly.
var testHookWatchSend func()

const watchMask = syscall.IN_CREATE | syscall.IN_MODIFY | syscall.IN_DELETE | syscall.IN_MOVED_FROM |
	syscall.IN_MOVED_TO | syscall.IN_ATTRIB | syscall.IN_DELETE_SELF | syscall.IN_MOVE_SELF | syscall.IN_ONLYDIR

type fsWatchRequest struct {
	Path      *string `json:"path"`
	Recursive bool    `json:"recursive"`
}

type fsWatchResult struct {
	Removed bool `json:"removed"`
}

type watchingEvent struct {
	Path string `json:"path"`
}

type changeEvent struct {
	Op   string `json:"op"`
	Name string `json:"name"`
}

type overflowEvent struct {
	Dropped int64 `json:"dropped"`
}

func (watchingEvent) eventType() string { return "watching" }
func (changeEvent) eventType() string   { return "change" }
func (overflowEvent) eventType() string { return "overflow" }

func init() {
	// after ops.go's init (see pty.go)
	opTable["fs.watch"] = newOp(opFsWatch, watchingEvent{}, changeEvent{}, overflowEvent{})
}

type watcher struct {
	f         *os.File
	root      string
	recursive bool

	mu      sync.Mutex
	dirs    map[int32]string // watch descriptor -> directory relative to root ("" for root)
	queue   []changeEvent
	dropped int64 // events dropped since the last overflow event (-1: the kernel's queue overflowed)
	removed bool  // the root went away: the watch is over
	readErr error
	sig     chan struct{}
}

func (w *watcher) push(ev changeEvent) {
	w.mu.Lock()
	if len(w.queue) >= watchQueueMax {
		if w.dropped >= 0 {
			w.dropped++
		}
	} else {
		w.queue = append(w.queue, ev)
	}
	w.mu.Unlock()
	notify(w.sig)
}

// add watches the directory rel (relative to the root).
func (w *watcher) add(rel string) error {
	wd, err := syscall.InotifyAddWatch(w.fdOf(), filepath.Join(w.root, rel), watchMask)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.dirs[int32(wd)] = rel
	w.mu.Unlock()
	return nil
}

func (w *watcher) fdOf() int {
	fd := -1
	if rc, err := w.f.SyscallConn(); err == nil {
		_ = rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// addTree watches the directories below rel (rel itself is watched). With
// report, what is found there is reported as created: it appeared before
// its directory's watch did.
func (w *watcher) addTree(rel string, report bool) error {
	return filepath.WalkDir(filepath.Join(w.root, rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile, or unreadable: nothing to watch there
		}
		r, _ := filepath.Rel(w.root, p)
		if r == rel {
			return nil
		}
		if report {
			w.push(changeEvent{Op: "create", Name: r})
		}
		if d.IsDir() {
			if err := w.add(r); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					return err
				}
				return filepath.SkipDir
			}
		}
		return nil
	})
}

// read turns the kernel's events into change events until the file is
// closed or its deadline passes.
func (w *watcher) read() {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			w.mu.Lock()
			w.readErr = err
			w.mu.Unlock()
			notify(w.sig)
			return
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			name := string(nameBytes)
			for len(name) > 0 && name[len(name)-1] == 0 {
				name = name[:len(name)-1]
			}
			w.handle(ev.Wd, ev.Mask, name)
		}
	}
}

func (w *watcher) handle(wd int32, mask uint32, name string) {
	if mask&syscall.IN_Q_OVERFLOW != 0 {
		w.mu.Lock()
		w.dropped = -1
		w.mu.Unlock()
		notify(w.sig)
		return
	}
	w.mu.Lock()
	dir, ok := w.dirs[wd]
	if mask&syscall.IN_IGNORED != 0 {
		delete(w.dirs, wd)
	}
	w.mu.Unlock()
	if !ok {
		return
	}
	if mask&(syscall.IN_DELETE_SELF|syscall.IN_MOVE_SELF) != 0 {
		if dir == "" {
			w.mu.Lock()
			w.removed = true
			w.mu.Unlock()
			notify(w.sig)
		}
		return // a subdirectory's own removal is its parent's remove event
	}
	if name == "" {
		return
	}
	rel := filepath.Join(dir, name)
	isDir := mask&syscall.IN_ISDIR != 0
	switch {
	case mask&syscall.IN_CREATE != 0, mask&syscall.IN_MOVED_TO != 0:
		w.push(changeEvent{Op: "create", Name: rel})
		if isDir && w.recursive {
			if err := w.add(rel); err == nil {
				_ = w.addTree(rel, true)
			}
		}
	case mask&syscall.IN_MODIFY != 0:
		w.push(changeEvent{Op: "write", Name: rel})
	case mask&syscall.IN_DELETE != 0:
		w.push(changeEvent{Op: "remove", Name: rel})
	case mask&syscall.IN_MOVED_FROM != 0:
		w.push(changeEvent{Op: "rename", Name: rel})
	case mask&syscall.IN_ATTRIB != 0:
		w.push(changeEvent{Op: "chmod", Name: rel})
	}
}

func opFsWatch(st *stream, req *fsWatchRequest) (*fsWatchResult, error) {
	root, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, pathOpError("watch "+root, err)
	}
	if !fi.IsDir() {
		return nil, opErrorf(CodeNotADirectory, "%s is not a directory", root)
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, toOpError("inotify", err)
	}
	w := &watcher{f: os.NewFile(uintptr(fd), "inotify"), root: root, recursive: req.Recursive, dirs: map[int32]string{}, sig: make(chan struct{}, 1)}
	defer w.f.Close()
	if err := w.add(""); err != nil {
		return nil, pathOpError("watch "+root, err)
	}
	if req.Recursive {
		if err := w.addTree("", false); err != nil {
			return nil, opErrorf(CodeNoSpace, "watch %s: too many directories to watch (fs.inotify.max_user_watches): %v", root, err)
		}
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		w.read()
	}()
	defer func() {
		_ = w.f.SetReadDeadline(time.Unix(1, 0)) // wake the reader
		<-readerDone
	}()
	if err := st.event(watchingEvent{Path: root}); err != nil {
		return nil, err
	}
	for {
		if testHookWatchSend != nil {
			testHookWatchSend()
		}
		w.mu.Lock()
		dropped, queue, removed, readErr := w.dropped, w.queue, w.removed, w.readErr
		w.dropped, w.queue = 0, nil
		w.mu.Unlock()
		if dropped != 0 {
			if err := st.event(overflowEvent{Dropped: dropped}); err != nil {
				return nil, err
			}
		}
		for _, ev := range queue {
			if err := st.event(ev); err != nil {
				return nil, err
			}
		}
		if len(queue) > 0 || dropped != 0 {
			continue
		}
		if removed {
			return &fsWatchResult{Removed: true}, nil
		}
		if readErr != nil {
			return nil, toOpError("read inotify events", readErr)
		}
		select {
		case <-w.sig:
		case <-st.ctx.Done():
			return nil, st.ctx.Err()
		}
	}
}
