package main

// Shared volumes: 9p (virtio) shares of host directories, mounted at guest
// paths. The host hot-plugs (or starts the VM with) a virtio-9p device per
// volume, identified by its mount tag; vol.mount waits for the device and
// mounts it. Before a memory snapshot the host unmounts every volume (QEMU
// refuses to migrate while a 9p share is mounted) and mounts them again after.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const virtio9pDevices = "/sys/bus/virtio/drivers/9pnet_virtio"

// tagPresent reports whether a virtio-9p device with this mount tag is bound.
func tagPresent(tag string) bool {
	entries, err := os.ReadDir(virtio9pDevices)
	if err != nil {
		return false
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(virtio9pDevices, e.Name(), "mount_tag"))
		if err == nil && strings.TrimRight(string(b), "\x00\n") == tag {
			return true
		}
	}
	return false
}

func validTag(tag string) bool {
	if tag == "" || len(tag) > 31 {
		return false
	}
	for _, c := range tag {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func opVolMount(st *stream, req *volMountRequest) (*volMountResult, error) {
	if req.Tag == nil {
		return nil, missing("tag")
	}
	if !validTag(*req.Tag) {
		return nil, opErrorf(CodeBadRequest, "invalid mount tag %q", *req.Tag)
	}
	path, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	if path, err = mountTarget(path); err != nil {
		return nil, err
	}
	wait := 10 * time.Second
	if req.TimeoutMs != nil && *req.TimeoutMs > 0 {
		wait = msDuration(float64(*req.TimeoutMs))
	}
	start := time.Now()
	for !tagPresent(*req.Tag) {
		if time.Since(start) > wait {
			return nil, opErrorf(CodeNotFound, "no virtio-9p device with mount tag %q appeared within %v", *req.Tag, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if mounted, _ := isMountedAt(path); mounted {
		return &volMountResult{Path: path, Mounted: true, Already: true}, nil
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, toOpError("create mount point "+path, err)
	}
	opts := "trans=virtio,version=9p2000.L,msize=524288,cache=none,access=client,posixacl"
	if err := syscall.Mount(*req.Tag, path, "9p", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		return nil, toOpError(fmt.Sprintf("mount %s on %s", *req.Tag, path), err)
	}
	return &volMountResult{Path: path, Mounted: true, TookUs: time.Since(start).Microseconds()}, nil
}

// reservedMountDirs are the guest directories no volume is mounted over or
// under (the system, and where the agent keeps its own files); the host
// refuses the same paths as given (spec: vol.mount).
var reservedMountDirs = []string{"/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64"}

// mountTarget is where a volume at path is mounted: the path with the guest's
// symbolic links resolved (/var/run leads to /run), refused with
// invalid_path when that is / or in a reserved directory.
func mountTarget(path string) (string, error) {
	real := realPath(path, true)
	if real == "/" {
		return "", opErrorf(CodeInvalidPath, "a volume cannot be mounted at / (%s leads there)", path)
	}
	for _, r := range reservedMountDirs {
		if real == r || strings.HasPrefix(real, r+"/") {
			return "", opErrorf(CodeInvalidPath, "volume mount path %s leads to %s, in the system directory %s", path, real, r)
		}
	}
	return real, nil
}

// unmountPatience is how long vol.unmount tries again while the mount is busy.
const unmountPatience = 2 * time.Second

func opVolUnmount(st *stream, req *pathRequest) (*volUnmountResult, error) {
	path, err := cleanPath("path", req.Path)
	if err != nil {
		return nil, err
	}
	path = realPath(path, true) // where vol.mount mounted it
	if mounted, _ := isMountedAt(path); !mounted {
		return &volUnmountResult{Path: path, Mounted: false}, nil
	}
	// a holder that is on its way out (the agent's own work for a request the
	// host just cancelled, a process exiting) gets a moment
	err = syscall.Unmount(path, 0)
	for deadline := time.Now().Add(unmountPatience); err == syscall.EBUSY && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		err = syscall.Unmount(path, 0)
	}
	if err != nil {
		if err == syscall.EBUSY {
			users := volumeUsers(path)
			return nil, opErrorf(CodeVolumeBusy, "the volume at %s is in use by %s", path, strings.Join(users, ", "))
		}
		return nil, toOpError("unmount "+path, err)
	}
	return &volUnmountResult{Path: path, Mounted: false}, nil
}

func isMountedAt(path string) (bool, error) {
	mps, err := mountPoints()
	if err != nil {
		return false, err
	}
	return mps[path], nil
}

// volumeUsers names the processes that hold something under path open: an
// open file, their working directory or root, or a mapped file.
func volumeUsers(path string) []string {
	prefix := strings.TrimSuffix(path, "/") + "/"
	under := func(p string) bool { return p == path || strings.HasPrefix(p, prefix) }
	var users []string
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		uses := false
		for _, l := range []string{"cwd", "root"} {
			if t, err := os.Readlink(filepath.Join(dir, l)); err == nil && under(t) {
				uses = true
			}
		}
		if fds, err := os.ReadDir(filepath.Join(dir, "fd")); err == nil && !uses {
			for _, fd := range fds {
				if t, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && under(t) {
					uses = true
					break
				}
			}
		}
		if !uses {
			if maps, err := os.ReadFile(filepath.Join(dir, "maps")); err == nil && strings.Contains(string(maps), " "+prefix) {
				uses = true
			}
		}
		if uses {
			comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
			users = append(users, fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), pid))
		}
	}
	sort.Strings(users)
	if len(users) == 0 {
		users = []string{"an unknown process"}
	}
	return users
}
