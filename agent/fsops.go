package main

// File system ops: fs.read, fs.write, fs.list, fs.stat, fs.mkdir,
// fs.remove, fs.rename.

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"unsafe"
)

const (
	listChunkEntries = 500
	listChunkBytes   = 256 << 10
	listMaxDepth     = 32
)

// cleanPath checks that p (the value of field) is absolute and free of NUL,
// and returns it cleaned.
func cleanPath(field string, p *string) (string, error) {
	if p == nil {
		return "", missing(field)
	}
	if strings.IndexByte(*p, 0) >= 0 {
		return "", opErrorf(CodeInvalidPath, "%s: path contains a NUL byte", field)
	}
	if !filepath.IsAbs(*p) {
		return "", opErrorf(CodeInvalidPath, "%s: path %q is not absolute", field, *p)
	}
	return filepath.Clean(*p), nil
}

// realPath is where the absolute path p leads: each symbolic link on the
// way replaced by its target (the last component's too when followLast),
// also one whose target does not exist (yet); the components that do not
// exist taken as they are.
func realPath(p string, followLast bool) string {
	resolved := "/"
	rest := strings.Split(p, "/")
	for hops := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, name)
		if len(rest) == 0 && !followLast {
			return next
		}
		target, err := os.Readlink(next) // (fails for what is no symbolic link, or does not exist)
		if err != nil || hops >= 40 {    // (a loop: the kernel says ELOOP)
			resolved = next
			continue
		}
		hops++
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved
}

// systemDirs are the kernel's directories: the files API reads them but
// changes nothing in them (nor in /dev, but for userSharedDir). A command
// can (it runs as root); a files request that replaced /dev/null or removed
// a /sys entry would break the sandbox by accident, and nothing in the API
// could repair it.
var systemDirs = []string{"/dev", "/proc", "/sys"}

// userSharedDir is the tmpfs for users' shared memory files under /dev.
const userSharedDir = "/dev/shm"

// refuseSystemEntry refuses (bad_request) to change the entry at p (what
// says how) when it is, or would be, in a system directory (symbolic links
// resolved: of the last component too with followLast) or is a device node.
func refuseSystemEntry(what, p string, followLast bool) error {
	real := realPath(p, followLast)
	if !strings.HasPrefix(real, userSharedDir+"/") {
		for _, d := range systemDirs {
			if real == d || strings.HasPrefix(real, d+"/") {
				return opErrorf(CodeBadRequest, "%s %s: %s is in %s, which the files API does not change (only %s/ is for files)", what, p, real, d, userSharedDir)
			}
		}
	}
	var sb syscall.Stat_t
	if syscall.Lstat(real, &sb) == nil && (sb.Mode&syscall.S_IFMT == syscall.S_IFCHR || sb.Mode&syscall.S_IFMT == syscall.S_IFBLK) {
		return opErrorf(CodeBadRequest, "%s %s: %s is %s, which the files API does not change", what, p, real, fileKind(sb.Mode))
	}
	return nil
}

// entryFor builds an Entry from lstat information.
func entryFor(path string, fi os.FileInfo) Entry {
	e := Entry{Name: fi.Name(), Path: path, Size: fi.Size()}
	if path == "/" {
		e.Name = "/"
	}
	mode := uint32(fi.Mode().Perm())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		mode = st.Mode & 0o7777
		e.MtimeMs = st.Mtim.Sec*1000 + st.Mtim.Nsec/1e6
	} else {
		e.MtimeMs = fi.ModTime().UnixMilli()
	}
	e.Mode = mode
	switch {
	case fi.Mode().IsRegular():
		e.Type = "file"
	case fi.IsDir():
		e.Type = "dir"
	case fi.Mode()&os.ModeSymlink != 0:
		e.Type = "symlink"
		if t, err := os.Readlink(path); err == nil {
			e.SymlinkTarget = &t
		} else {
			empty := ""
			e.SymlinkTarget = &empty
		}
	default:
		e.Type = "other"
	}
	return e
}

func opFsStat(st *stream, req *pathRequest) (*Entry, error) {
	p, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, toOpError("stat "+p, err)
	}
	e := entryFor(p, fi)
	return &e, nil
}

// kernelFileSystems are the file systems whose files the kernel makes up
// as they are read (statfs f_type): /proc, /sys and their kind. Their
// regular files are read like any other (/proc/cpuinfo, a sysfs attribute);
// but when reading one fails, that is the nature of the file (e.g.
// /proc/self/mem at offset 0), not a failing disk: a bad_request.
var kernelFileSystems = map[int64]string{
	procSuperMagic: "proc",
	0x62656572:     "sysfs",
	0x64626720:     "debugfs",
	0x74726163:     "tracefs",
	0x73636673:     "securityfs",
	0x63677270:     "cgroup2",
	0x27e0eb:       "cgroup",
	0x62656570:     "configfs",
	0xcafe4a11:     "bpf",
	0x6165676c:     "pstore",
	0xde5e81e4:     "efivarfs",
	0x42494e4d:     "binfmt_misc",
	0x65735543:     "fusectl",
}

// regularFile checks the stat mode of p for fs.read: a directory is
// is_a_directory; anything but a regular file (a device node, FIFO or
// socket) is a bad_request, decided before the file is opened (opening a
// device may do something by itself).
func regularFile(p string, mode uint32) error {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return nil
	case syscall.S_IFDIR:
		return opErrorf(CodeIsADirectory, "read %s: is a directory", p)
	}
	return opErrorf(CodeBadRequest, "read %s: not a regular file (%s): only regular files are read", p, fileKind(mode))
}

func fileKind(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFCHR:
		return "a character device"
	case syscall.S_IFBLK:
		return "a block device"
	case syscall.S_IFIFO:
		return "a FIFO"
	case syscall.S_IFSOCK:
		return "a socket"
	case syscall.S_IFLNK:
		return "a symbolic link"
	case syscall.S_IFDIR:
		return "a directory"
	}
	return "a regular file"
}

// sameFile reports whether the file at path is the one st describes.
func sameFile(path string, st *syscall.Stat_t) bool {
	var o syscall.Stat_t
	return syscall.Stat(path, &o) == nil && o.Dev == st.Dev && o.Ino == st.Ino
}

func opFsRead(st *stream, req *pathRequest) (*fsReadResult, error) {
	p, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	var sb syscall.Stat_t
	if err := syscall.Stat(p, &sb); err != nil {
		return nil, toOpError("", &os.PathError{Op: "stat", Path: p, Err: err})
	}
	if err := regularFile(p, sb.Mode); err != nil {
		return nil, err
	}
	// Not os.OpenFile: Go's poller would wait whenever a read says EAGAIN,
	// and a kernel file that blocks (e.g. /proc/kmsg) would then hold the op
	// (and its file) until something happens in the guest. A plain file
	// never says EAGAIN; a file that does is refused (below).
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, toOpError("", &os.PathError{Op: "open", Path: p, Err: err})
	}
	defer syscall.Close(fd)
	if err := syscall.Fstat(fd, &sb); err != nil {
		return nil, toOpError("", &os.PathError{Op: "stat", Path: p, Err: err})
	}
	if err := regularFile(p, sb.Mode); err != nil { // (what was opened, if the path changed meanwhile)
		return nil, err
	}
	var sfs syscall.Statfs_t
	kernelFS := ""
	if syscall.Fstatfs(fd, &sfs) == nil {
		kernelFS = kernelFileSystems[int64(sfs.Type)]
	}
	// reading the kernel log takes the messages out of it and then waits for new ones
	if kernelFS == "proc" && sameFile("/proc/kmsg", &sb) {
		return nil, opErrorf(CodeBadRequest, "read %s: the kernel log (/proc/kmsg) is not a file: reading it takes its messages and waits for new ones (run dmesg instead)", p)
	}
	buf := make([]byte, maxDataChunkPayload)
	var total int64
	for {
		if err := st.ctx.Err(); err != nil {
			return nil, err
		}
		n, rerr := syscall.Read(fd, buf)
		if rerr == syscall.EINTR {
			continue
		}
		if rerr != nil {
			if rerr == syscall.EAGAIN {
				return nil, opErrorf(CodeBadRequest, "read %s: not a plain file: a read would wait for data (after %d bytes)", p, total)
			}
			if kernelFS != "" {
				return nil, opErrorf(CodeBadRequest, "read %s: this %s file cannot be read as a file (after %d bytes): %v", p, kernelFS, total, rerr)
			}
			return nil, toOpError("", &os.PathError{Op: "read", Path: p, Err: rerr})
		}
		if n <= 0 {
			break
		}
		if err := st.sendData(ChanMain, buf[:n]); err != nil {
			return nil, err
		}
		total += int64(n)
	}
	return &fsReadResult{Size: total}, nil
}

func opFsWrite(st *stream, req *fsWriteRequest) (*fsWriteResult, error) {
	p, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	if err := refuseSystemEntry("write", p, true); err != nil {
		return nil, err
	}
	mode := uint32(0o644)
	if req.Mode != nil {
		mode = *req.Mode & 0o7777
	}
	// Writing to a symlink writes to the file it points to.
	target := p
	if li, err := os.Lstat(p); err == nil && li.Mode()&os.ModeSymlink != 0 {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			target = r
		}
	}
	// a device node, FIFO or socket is neither replaced by a file nor written into (a FIFO without
	// a reader would block the op for good)
	if ti, err := os.Lstat(target); err == nil && !ti.Mode().IsRegular() && !ti.IsDir() {
		return nil, opErrorf(CodeBadRequest, "write %s: not a regular file (%s)", p, ti.Mode().Type())
	}
	own, err := ownerOf(req.Owner)
	if err != nil {
		return nil, err
	}
	if err := mkdirAllOwned(filepath.Dir(target), own); err != nil {
		return nil, toOpError("create parent directories of "+p, err)
	}
	var n int64
	if req.Append {
		n, err = writeAppend(st, target, mode, own)
	} else {
		n, err = writeReplace(st, target, mode, own)
	}
	if err != nil {
		return nil, err
	}
	return &fsWriteResult{Size: n, Path: p}, nil
}

// receiveInto copies the stream's DATA into f until END, granting credit
// back as each chunk is written.
func receiveInto(st *stream, f *os.File, what string) (int64, error) {
	var total int64
	for {
		chunk, err := st.recv()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if _, err := f.Write(chunk); err != nil {
			return total, toOpError(what, err)
		}
		total += int64(len(chunk))
		st.grant(len(chunk))
	}
}

func writeAppend(st *stream, target string, mode uint32, own owner) (int64, error) {
	_, statErr := os.Lstat(target)
	// (non-blocking, no controlling terminal: whatever the path turned into since it was checked)
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK|syscall.O_NOCTTY, os.FileMode(mode&0o777))
	if err != nil {
		return 0, toOpError("open "+target, err)
	}
	defer f.Close()
	if os.IsNotExist(statErr) {
		if err := fchmod(f, mode); err != nil {
			return 0, toOpError("chmod "+target, err)
		}
		if err := own.fchown(f); err != nil {
			return 0, toOpError("chown "+target, err)
		}
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		return 0, opErrorf(CodeIsADirectory, "write %s: is a directory", target)
	}
	if err == nil && !fi.Mode().IsRegular() {
		return 0, opErrorf(CodeBadRequest, "write %s: not a regular file (%s)", target, fi.Mode().Type())
	}
	n, err := receiveInto(st, f, "write "+target)
	if err != nil {
		return n, err
	}
	if err := f.Close(); err != nil {
		return n, toOpError("close "+target, err)
	}
	return n, nil
}

// writeReplace writes into a temporary file next to target and renames it
// over target after END; a cancelled or failed write removes the temporary
// file and leaves target untouched. An existing target keeps its mode (and
// owner, when the agent may chown); a new one gets `own` (when given).
func writeReplace(st *stream, target string, mode uint32, own owner) (int64, error) {
	uid, gid := own.uid, own.gid
	existing := false
	if fi, err := os.Stat(target); err == nil {
		existing = true
		if fi.IsDir() {
			return 0, opErrorf(CodeIsADirectory, "write %s: is a directory", target)
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			mode = sys.Mode & 0o7777
			uid, gid = int(sys.Uid), int(sys.Gid)
		}
	}
	dir, base := filepath.Split(target)
	if len(base) > 100 {
		base = base[:100]
	}
	f, err := os.CreateTemp(dir, "."+base+".nstmp-*")
	if err != nil {
		return 0, toOpError("create temporary file in "+dir, err)
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := receiveInto(st, f, "write "+target)
	if err != nil {
		return n, err
	}
	if existing && uid >= 0 && os.Geteuid() == 0 {
		_ = f.Chown(uid, gid) // best effort
	} else if !existing {
		if err := own.fchown(f); err != nil {
			return n, toOpError("chown "+tmp, err)
		}
	}
	if err := fchmod(f, mode); err != nil {
		return n, toOpError("chmod "+tmp, err)
	}
	if err := f.Close(); err != nil {
		return n, toOpError("close "+tmp, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		return n, toOpError("rename "+tmp+" to "+target, err)
	}
	committed = true
	return n, nil
}

// fchmod sets the exact permission bits (including setuid/setgid/sticky,
// which os.FileMode would need translating).
func fchmod(f *os.File, mode uint32) error {
	return syscall.Fchmod(int(f.Fd()), mode&0o7777)
}

func opFsList(st *stream, req *fsListRequest) (*fsListResult, error) {
	p, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	depth := 1
	if req.Depth != nil {
		depth = *req.Depth
		if depth < 1 {
			return nil, opErrorf(CodeBadRequest, "depth must be at least 1")
		}
		if depth > listMaxDepth {
			depth = listMaxDepth
		}
	}
	fi, err := os.Stat(p) // the listed directory itself may be a symlink
	if err != nil {
		return nil, toOpError("stat "+p, err)
	}
	if !fi.IsDir() {
		return nil, opErrorf(CodeNotADirectory, "list %s: not a directory", p)
	}
	l := &lister{st: st, depth: depth}
	if err := l.walk(p, 1); err != nil {
		return nil, err
	}
	if err := l.flush(); err != nil {
		return nil, err
	}
	return &fsListResult{Count: l.count}, nil
}

// lister streams a directory tree sorted by path. Sorting the whole
// listing by path byte-wise while streaming works by sorting, within each
// directory, the keys "name" (the entry) and "name/" (the subtree of a
// directory): every path in the listing is dir + "/" + key + rest, so the
// key order is the path order.
type lister struct {
	st    *stream
	depth int
	batch []Entry
	bytes int // roughly, what the batch encodes to
	count int
}

type listItem struct {
	key     string
	entry   *Entry
	subtree string // directory path to descend into
}

func (l *lister) walk(dir string, level int) error {
	if err := l.st.ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		if level == 1 {
			return toOpError("open "+dir, err)
		}
		return nil // an unreadable subdirectory is listed but not descended
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil && level == 1 {
		return toOpError("read directory "+dir, err)
	}
	items := make([]listItem, 0, len(names))
	for i, name := range names {
		if i%256 == 255 {
			if err := l.st.ctx.Err(); err != nil {
				return err // cancelled: the host gave up (deadline, client gone)
			}
		}
		path := filepath.Join(dir, name)
		fi, err := os.Lstat(path)
		if err != nil {
			continue // vanished meanwhile
		}
		e := entryFor(path, fi)
		items = append(items, listItem{key: name, entry: &e})
		if fi.IsDir() && level < l.depth { // Lstat: symlinks are not followed
			items = append(items, listItem{key: name + "/", subtree: path})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
	for _, it := range items {
		if it.entry != nil {
			if err := l.add(*it.entry); err != nil {
				return err
			}
			continue
		}
		if err := l.walk(it.subtree, level+1); err != nil {
			return err
		}
	}
	return nil
}

func (l *lister) add(e Entry) error {
	l.batch = append(l.batch, e)
	l.count++
	// (names and paths of up to 4 KiB each: a batch flushes well before a frame's 1 MiB)
	l.bytes += len(e.Name) + len(e.Path) + 160
	if e.SymlinkTarget != nil {
		l.bytes += len(*e.SymlinkTarget)
	}
	if len(l.batch) >= listChunkEntries || l.bytes >= listChunkBytes {
		return l.flush()
	}
	return nil
}

func (l *lister) flush() error {
	if len(l.batch) == 0 {
		return nil
	}
	err := l.st.event(entriesEvent{Entries: l.batch})
	l.batch = l.batch[:0]
	l.bytes = 0
	return err
}

func opFsMkdir(st *stream, req *fsMkdirRequest) (*fsMkdirResult, error) {
	p, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	mode := uint32(0o755)
	if req.Mode != nil {
		mode = *req.Mode & 0o7777
	}
	existsAsDir := func() (bool, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return false, err
		}
		if !fi.IsDir() {
			return false, opErrorf(CodeAlreadyExists, "mkdir %s: exists and is not a directory", p)
		}
		return true, nil
	}
	if ok, err := existsAsDir(); ok {
		return &fsMkdirResult{Created: false}, nil
	} else if oe := (*OpError)(nil); errors.As(err, &oe) {
		return nil, oe
	}
	if err := refuseSystemEntry("mkdir", p, true); err != nil {
		return nil, err
	}
	own, err := ownerOf(req.Owner)
	if err != nil {
		return nil, err
	}
	if boolOr(req.Parents, true) {
		if err := mkdirAllOwned(filepath.Dir(p), own); err != nil {
			return nil, toOpError("create parent directories of "+p, err)
		}
	}
	if err := syscall.Mkdir(p, mode&0o777); err != nil {
		if err == syscall.EEXIST {
			if ok, err2 := existsAsDir(); ok {
				return &fsMkdirResult{Created: false}, nil
			} else if oe := (*OpError)(nil); errors.As(err2, &oe) {
				return nil, oe
			}
		}
		return nil, toOpError("mkdir "+p, &os.PathError{Op: "mkdir", Path: p, Err: err})
	}
	if err := syscall.Chmod(p, mode); err != nil { // exact bits, regardless of umask
		return nil, toOpError("chmod "+p, &os.PathError{Op: "chmod", Path: p, Err: err})
	}
	if err := own.lchown(p); err != nil {
		return nil, toOpError("chown "+p, err)
	}
	return &fsMkdirResult{Created: true}, nil
}

// owner is the user that what fs.write and fs.mkdir create is given to
// (their `owner`); unset: the agent's own (root).
type owner struct {
	set      bool
	uid, gid int
}

// ownerOf resolves an op's `owner` (a user as proc.start's `user`).
func ownerOf(spec *string) (owner, error) {
	if spec == nil || *spec == "" {
		return owner{uid: -1, gid: -1}, nil
	}
	u, err := lookupUser(*spec)
	if err != nil {
		return owner{}, opErrorf(CodeBadRequest, "owner: %v", err)
	}
	return owner{set: true, uid: int(u.Uid), gid: int(u.Gid)}, nil
}

func (o owner) fchown(f *os.File) error {
	if !o.set {
		return nil
	}
	return f.Chown(o.uid, o.gid)
}

func (o owner) lchown(p string) error {
	if !o.set {
		return nil
	}
	return os.Lchown(p, o.uid, o.gid)
}

// mkdirAllOwned is os.MkdirAll(dir, 0755) whose created directories are
// given to `own`.
func mkdirAllOwned(dir string, own owner) error {
	var missing []string
	if own.set {
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
				break
			}
			missing = append(missing, d)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range missing {
		if err := own.lchown(d); err != nil {
			return err
		}
	}
	return nil
}

func opFsRemove(st *stream, req *fsRemoveRequest) (*emptyResult, error) {
	p, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	if p == "/" {
		return nil, opErrorf(CodePermissionDenied, "refusing to remove /")
	}
	if err := refuseSystemEntry("remove", p, false); err != nil {
		return nil, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, pathOpError("remove "+p, err)
	}
	if !fi.IsDir() {
		if err := syscall.Unlink(p); err != nil {
			return nil, pathOpError("remove "+p, &os.PathError{Op: "unlink", Path: p, Err: err})
		}
		return &emptyResult{}, nil
	}
	if req.Recursive {
		// never into another file system (a shared volume's share would lose its files):
		// refused before anything is removed
		if mp := mountUnder(p); mp != "" {
			return nil, opErrorf(CodeBadRequest, "remove %s: a file system is mounted at %s (a shared volume?): nothing removed", p, mp)
		}
		if err := removeAll(st.ctx, p); err != nil {
			return nil, pathOpError("remove "+p, err)
		}
		return &emptyResult{}, nil
	}
	if err := syscall.Rmdir(p); err != nil {
		if err == syscall.ENOTEMPTY || err == syscall.EEXIST {
			return nil, opErrorf(CodeNotEmpty, "remove %s: directory not empty", p)
		}
		return nil, pathOpError("remove "+p, &os.PathError{Op: "rmdir", Path: p, Err: err})
	}
	return &emptyResult{}, nil
}

// removeAll is os.RemoveAll that stops once ctx is done: a huge tree whose
// request the host gave up on (deadline, client gone) is not removed on and
// on. Symbolic links are removed, never followed.
func removeAll(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var sb syscall.Stat_t
	if err := syscall.Lstat(p, &sb); err != nil {
		if err == syscall.ENOENT {
			return nil
		}
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	if sb.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		if err := syscall.Unlink(p); err != nil && err != syscall.ENOENT {
			return &os.PathError{Op: "unlink", Path: p, Err: err}
		}
		return nil
	}
	for {
		// a batch of names at a time, the directory opened anew for each: removing
		// entries may reorder it, and reading on could skip some (as os.RemoveAll)
		fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: p, Err: err}
		}
		d := os.NewFile(uintptr(fd), p)
		names, rerr := d.Readdirnames(1024)
		d.Close()
		if rerr != nil && rerr != io.EOF {
			return rerr
		}
		if len(names) == 0 {
			break
		}
		for _, name := range names {
			if err := removeAll(ctx, filepath.Join(p, name)); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(p); err != nil && err != syscall.ENOENT {
		return &os.PathError{Op: "rmdir", Path: p, Err: err}
	}
	return nil
}

const renameNoReplace = 1 // RENAME_NOREPLACE

func opFsRename(st *stream, req *fsRenameRequest) (*emptyResult, error) {
	from, err := cleanPath("from", req.From)
	if err != nil {
		return nil, err
	}
	to, err := cleanPath("to", req.To)
	if err != nil {
		return nil, err
	}
	if err := refuseSystemEntry("rename", from, false); err != nil {
		return nil, err
	}
	if err := refuseSystemEntry("rename onto", to, false); err != nil {
		return nil, err
	}
	linkErr := func(err error) error {
		return pathOpError("", &os.LinkError{Op: "rename", Old: from, New: to, Err: err})
	}
	if boolOr(req.Overwrite, true) {
		// rename(2) directly: os.Rename refuses to replace a directory.
		if err := syscall.Rename(from, to); err != nil {
			return nil, linkErr(err)
		}
		return &emptyResult{}, nil
	}
	err = renameat2(from, to, renameNoReplace)
	if err == syscall.ENOSYS || err == syscall.EINVAL {
		// No RENAME_NOREPLACE support (old kernel or file system): check
		// then rename.
		if _, lerr := os.Lstat(to); lerr == nil {
			err = syscall.EEXIST
		} else {
			err = syscall.Rename(from, to)
		}
	}
	if err != nil {
		return nil, linkErr(err)
	}
	return &emptyResult{}, nil
}

func renameat2(from, to string, flags uint) error {
	p1, err := syscall.BytePtrFromString(from)
	if err != nil {
		return err
	}
	p2, err := syscall.BytePtrFromString(to)
	if err != nil {
		return err
	}
	atFDCWD := -100 // AT_FDCWD
	_, _, e := syscall.Syscall6(sysRenameat2, uintptr(atFDCWD), uintptr(unsafe.Pointer(p1)),
		uintptr(atFDCWD), uintptr(unsafe.Pointer(p2)), uintptr(flags), 0)
	if e != 0 {
		return e
	}
	return nil
}

// mountUnder returns a mount point at dir or below it (dir's real path), or
// "" when there is none (or the mount table cannot be read: then os.RemoveAll
// meets the mount and fails there, as before).
func mountUnder(dir string) string {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		real = dir
	}
	mps, err := mountPoints()
	if err != nil {
		return ""
	}
	prefix := strings.TrimSuffix(real, "/") + "/"
	found := ""
	for mp := range mps {
		if (mp == real || strings.HasPrefix(mp, prefix)) && (found == "" || mp < found) {
			found = mp
		}
	}
	return found
}
