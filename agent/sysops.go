package main

// sys.info and sys.init.

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const (
	bootIDProcPath     = "/proc/sys/kernel/random/boot_id"
	ioctlRNDADDENTROPY = 0x40085203 // _IOW('R', 0x03, int[2])
	ioctlRNDRESEEDCRNG = 0x5207     // _IO('R', 0x07)
	clockBoottime      = 7
)

// sysState is what sys.init configured.
type sysState struct {
	mu          sync.Mutex
	initialized bool
	envs        map[string]string
	// user and cwd of processes whose start names none ("": root, and the
	// agent's workspace): a built template's USER and WORKDIR
	user   string
	cwd    string
	initMu sync.Mutex // serializes sys.init calls
}

func (s *sysState) setInitialized(v bool) {
	s.mu.Lock()
	s.initialized = v
	s.mu.Unlock()
}

func (s *sysState) isInitialized() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initialized
}

// processDefaults are the user and working directory of a process start that
// names neither ("" each: root and the workspace).
func (s *sysState) processDefaults() (user, cwd string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user, s.cwd
}

func (s *sysState) defaultEnvs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.envs // replaced, never mutated
}

// guestPath maps a guest path of a file sys.init writes into the test root
// when NULLSPACE_AGENT_TEST_ROOT is set.
func (a *Agent) guestPath(p string) string {
	if a.testRoot == "" {
		return p
	}
	return filepath.Join(a.testRoot, p)
}

func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func uptime() time.Duration {
	var ts syscall.Timespec
	_, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockBoottime, uintptr(unsafe.Pointer(&ts)), 0)
	if e != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

func opSysInfo(st *stream, req *emptyRequest) (*sysInfoResult, error) {
	a := st.agent
	bootID, err := readTrimmed(bootIDProcPath)
	if a.testRoot != "" {
		if v, terr := readTrimmed(a.guestPath("/run/nullspace/boot_id")); terr == nil {
			bootID, err = v, nil
		}
	}
	if err != nil {
		bootID = ""
	}
	hostname, _ := os.Hostname()
	if a.testRoot != "" {
		if v, err := readTrimmed(a.guestPath("/etc/hostname")); err == nil {
			hostname = v
		}
	}
	return &sysInfoResult{
		Version:     a.version,
		Protocol:    protocolVersion,
		Features:    agentFeatures,
		BootID:      bootID,
		TimeMs:      time.Now().UnixMilli(),
		UptimeMs:    uptime().Milliseconds(),
		Hostname:    hostname,
		Initialized: a.sys.isInitialized(),
	}, nil
}

var (
	machineIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)
	uuidRe      = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	hostnameRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

// agentFeatures lists request options that an older agent would ignore
// silently (unknown JSON fields are not errors): the host checks for them in
// sys.info before relying on one.
var agentFeatures = []string{"sys.init.thaw", "sys.init.defaults"}

func opSysInit(st *stream, req *sysInitRequest) (*sysInitResult, error) {
	a := st.agent
	// Validate everything before changing anything.
	switch {
	case req.TimeMs == nil:
		return nil, missing("timeMs")
	case req.Entropy == nil:
		return nil, missing("entropy")
	case req.Hostname == nil:
		return nil, missing("hostname")
	case req.MachineID == nil:
		return nil, missing("machineId")
	}
	if *req.TimeMs <= 0 {
		return nil, opErrorf(CodeBadRequest, "timeMs must be positive")
	}
	entropy, err := base64.StdEncoding.DecodeString(*req.Entropy)
	if err != nil {
		return nil, opErrorf(CodeBadRequest, "entropy is not valid base64: %v", err)
	}
	if len(entropy) < 32 {
		return nil, opErrorf(CodeBadRequest, "entropy must be at least 32 bytes, got %d", len(entropy))
	}
	if !hostnameRe.MatchString(*req.Hostname) {
		return nil, opErrorf(CodeBadRequest, "invalid hostname %q", *req.Hostname)
	}
	if !machineIDRe.MatchString(*req.MachineID) {
		return nil, opErrorf(CodeBadRequest, "machineId must be 32 lowercase hex characters")
	}
	bootID := ""
	if req.BootID != nil {
		if !uuidRe.MatchString(*req.BootID) {
			return nil, opErrorf(CodeBadRequest, "bootId must be a UUID")
		}
		bootID = strings.ToLower(*req.BootID)
	}
	var defCwd string
	if req.Cwd != nil && *req.Cwd != "" {
		if defCwd, err = cleanPath("cwd", req.Cwd); err != nil {
			return nil, err
		}
	}
	if req.User != nil && strings.IndexByte(*req.User, 0) >= 0 {
		return nil, opErrorf(CodeBadRequest, "user contains a NUL byte")
	}
	var envs map[string]string
	if req.Envs != nil {
		envs = make(map[string]string, len(*req.Envs))
		for k, v := range *req.Envs {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
				return nil, opErrorf(CodeBadRequest, "invalid environment variable %q", k)
			}
			envs[k] = v
		}
	}

	a.sys.initMu.Lock()
	defer a.sys.initMu.Unlock()
	privileged := a.testRoot == ""
	timings := map[string]int64{}
	mark := time.Now()
	lap := func(name string) {
		now := time.Now()
		timings[name] = now.Sub(mark).Microseconds()
		mark = now
	}

	if privileged {
		ms := int64(*req.TimeMs)
		tv := syscall.Timeval{Sec: ms / 1000, Usec: (ms % 1000) * 1000}
		if err := syscall.Settimeofday(&tv); err != nil {
			return nil, toOpError("set the clock", err)
		}
		lap("clock")
		if err := addEntropy(entropy); err != nil {
			return nil, err
		}
		lap("entropy")
		if err := syscall.Sethostname([]byte(*req.Hostname)); err != nil {
			return nil, toOpError("set the hostname", err)
		}
		lap("hostname")
	}
	if err := writeFileInPlace(a.guestPath("/etc/hostname"), *req.Hostname+"\n", 0o644); err != nil {
		return nil, err
	}
	if err := writeFileInPlace(a.guestPath("/etc/machine-id"), *req.MachineID+"\n", 0o644); err != nil {
		return nil, err
	}
	lap("files")
	if bootID != "" {
		if err := a.showBootID(bootID, privileged); err != nil {
			return nil, err
		}
		lap("bootId")
	}
	a.sys.mu.Lock()
	if req.Envs != nil {
		a.sys.envs = envs
	}
	if req.User != nil {
		a.sys.user = *req.User
	}
	if req.Cwd != nil {
		a.sys.cwd = defCwd
	}
	a.sys.initialized = true
	a.sys.mu.Unlock()
	// Last: user processes frozen for a snapshot may run again, now that
	// clock, entropy and identity are current.
	thaw := boolOr(req.Thaw, true)
	if privileged && thaw {
		if _, err := setFrozen(false); err != nil {
			return nil, err
		}
		lap("thaw")
	}
	// whether user processes are (still) frozen: a host that asked for no
	// thaw relies on it
	frozen, err := userFrozen()
	if err != nil {
		return nil, err
	}
	return &sysInitResult{TimeMs: time.Now().UnixMilli(), TimingsUs: timings, Thawed: privileged && thaw, Frozen: frozen}, nil
}

// addEntropy credits bytes to the kernel's entropy pool (RNDADDENTROPY on
// /dev/urandom) and reseeds the CRNG from it (RNDRESEEDCRNG).
func addEntropy(data []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return toOpError("open /dev/urandom", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(data)+3)
	*(*int32)(unsafe.Pointer(&buf[0])) = int32(len(data) * 8)
	*(*int32)(unsafe.Pointer(&buf[4])) = int32(len(data))
	copy(buf[8:], data)
	rc, err := f.SyscallConn()
	if err != nil {
		return toOpError("add entropy", err)
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, ioctlRNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0])))
		if errno != 0 {
			return
		}
		// Crediting entropy reseeds the CRNG only on its first initialization;
		// a restored clone must reseed now, before anyone reads from it.
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, ioctlRNDRESEEDCRNG, 0)
	}); err != nil {
		return toOpError("add entropy", err)
	}
	if errno != 0 {
		return toOpError("add entropy (RNDADDENTROPY, RNDRESEEDCRNG)", errno)
	}
	return nil
}

// writeFileInPlace truncates and rewrites path (creating it with mode when
// missing), keeping the inode: a bind mount of it stays valid.
func writeFileInPlace(path, content string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return toOpError("create "+filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return toOpError("open "+path, err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return toOpError("write "+path, err)
	}
	if err := f.Close(); err != nil {
		return toOpError("close "+path, err)
	}
	return nil
}

// showBootID writes the boot id to /run/nullspace/boot_id and makes sure that
// file is bind-mounted over /proc/sys/kernel/random/boot_id (init does it at
// boot; this covers an agent started some other way).
func (a *Agent) showBootID(id string, privileged bool) error {
	file := a.guestPath("/run/nullspace/boot_id")
	if err := writeFileInPlace(file, id+"\n", 0o644); err != nil {
		return err
	}
	if !privileged || isBindMounted(bootIDProcPath, file) {
		return nil
	}
	if err := syscall.Mount(file, bootIDProcPath, "", syscall.MS_BIND, ""); err != nil {
		return toOpError(fmt.Sprintf("bind-mount %s over %s", file, bootIDProcPath), err)
	}
	return nil
}

// mountPoints returns the set of mount points from /proc/self/mountinfo.
func mountPoints() (map[string]bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mps := make(map[string]bool)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ...
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 {
			mps[unescapeMountinfo(fields[4])] = true
		}
	}
	return mps, sc.Err()
}

// unescapeMountinfo decodes the octal escapes (\040 etc.) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for j := 1; j <= 3; j++ {
				c := s[i+j]
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// opSysWarmup runs a host-internal command once and waits for it, recording
// nothing (see spec/agent.json): a restored guest's first process start runs
// cold, and the host pays that before a user's first command does.
func opSysWarmup(st *stream, req *sysWarmupRequest) (*sysWarmupResult, error) {
	if req.Cmd == nil {
		return nil, missing("cmd")
	}
	if strings.IndexByte(*req.Cmd, 0) >= 0 {
		return nil, opErrorf(CodeBadRequest, "cmd contains a NUL byte")
	}
	timeout := 60 * time.Second
	if req.TimeoutMs != nil {
		if *req.TimeoutMs <= 0 {
			return nil, opErrorf(CodeBadRequest, "timeoutMs must be positive")
		}
		timeout = msDuration(*req.TimeoutMs)
	}
	shell := userShell()
	began := time.Now()
	p, err := startUserProcess(func() (*os.Process, error) {
		// (standard streams on /dev/null: closed ones would fail the command's first echo)
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		defer null.Close()
		return os.StartProcess(shell, []string{shell, "-c", *req.Cmd}, &os.ProcAttr{
			Files: []*os.File{null, null, null},
			Dir:   "/",
			Env:   []string{"PATH=" + defaultPATH, "HOME=/root", "LANG=C.UTF-8"},
			Sys:   &syscall.SysProcAttr{Setsid: true},
		})
	})
	if err != nil {
		return nil, opErrorf(CodeProcessFailed, "start %s: %v", shell, err)
	}
	timer := time.AfterFunc(timeout, func() { _ = syscall.Kill(-p.Pid, syscall.SIGKILL) })
	state, err := p.Wait()
	timer.Stop()
	if err != nil {
		return nil, opErrorf(CodeProcessFailed, "wait: %v", err)
	}
	return &sysWarmupResult{ExitCode: state.ExitCode(), TookUs: time.Since(began).Microseconds()}, nil
}
