package main

// `nullspace-agent init`: PID 1 of the guest after switch_root.

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const procSuperMagic = 0x9fa0

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

var earlyMounts = []mountSpec{
	{"sysfs", "/sys", "sysfs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", syscall.MS_NOSUID, "mode=0755", 0o755},
	{"devpts", "/dev/pts", "devpts", syscall.MS_NOSUID | syscall.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620", 0o755},
	{"tmpfs", "/dev/shm", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=0755", 0o755},
	{"tmpfs", "/tmp", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777", 0o1777},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, "", 0o555},
}

// runInit never returns: PID 1 exiting panics the kernel.
func runInit() {
	start := time.Now()
	// Catch and discard these signals: Go's default action would exit.
	// Not signal.Ignore: SIG_IGN is inherited across exec (serve, and from
	// there every user process, would start with SIGINT/SIGHUP ignored),
	// while a caught signal is reset to its default in children.
	discard := make(chan os.Signal, 8)
	signal.Notify(discard, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGTSTP,
		syscall.SIGTTIN, syscall.SIGTTOU)
	go func() {
		for range discard {
		}
	}()
	// Subscribe before any child exists so that no SIGCHLD is missed.
	sigchld := make(chan os.Signal, 8)
	signal.Notify(sigchld, syscall.SIGCHLD)

	// Until /dev is mounted, log to the stderr inherited from the kernel
	// (the console too, when the initramfs had one).
	console := os.Stderr
	logf := func(format string, args ...interface{}) {
		fmt.Fprintf(console, "nullspace-agent: "+format+"\n", args...)
	}
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPATH)
	}
	syscall.Umask(0o022)

	initStep(logf, "mounts", func() { mountEarly(logf) })
	console = openConsole()
	initStep(logf, "hostname", setHostnameFromFile)
	initStep(logf, "identity", func() { mountIdentityFiles(logf) })
	initStep(logf, "cgroup", func() { setupUserCgroup(logf) })
	initStep(logf, "network", func() { configureNetwork(logf) })
	initStep(logf, "workspace", func() {
		if err := os.MkdirAll(defaultWorkspace, 0o755); err != nil {
			logf("create %s: %v", defaultWorkspace, err)
		}
	})
	logf("%s: init done in %d ms (%d ms since boot)", version, time.Since(start).Milliseconds(), uptime().Milliseconds())
	supervise(console, sigchld, logf)
}

// initStep runs one setup step; a panic is logged instead of killing PID 1.
func initStep(logf func(string, ...interface{}), name string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			logf("%s: panic: %v", name, r)
		}
	}()
	f()
}

func openConsole() *os.File {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return os.Stderr
	}
	return f
}

// mountEarly mounts the API file systems that are not mounted yet.
func mountEarly(logf func(string, ...interface{})) {
	var sfs syscall.Statfs_t
	if err := syscall.Statfs("/proc", &sfs); err != nil || sfs.Type != procSuperMagic {
		_ = os.MkdirAll("/proc", 0o555)
		if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			logf("mount /proc: %v", err)
		}
	}
	for _, m := range earlyMounts {
		mps, err := mountPoints() // re-read: mounting /dev may bring nothing else, but stay exact
		if err != nil {
			logf("read mount table: %v", err)
			mps = map[string]bool{}
		}
		if mps[m.target] {
			continue
		}
		if err := os.MkdirAll(m.target, m.mode); err != nil {
			logf("mkdir %s: %v", m.target, err)
			continue
		}
		if err := syscall.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			logf("mount %s on %s: %v", m.fstype, m.target, err)
		}
	}
	// devtmpfs does not provide these.
	for link, target := range map[string]string{
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
	} {
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			_ = os.Symlink(target, link)
		}
	}
}

// identityFiles are the per-sandbox identity files. Each is shown through a
// file on /run (tmpfs) bind-mounted over it at boot, so that sys.init, which
// runs after every restore, only rewrites small tmpfs files: no disk write,
// no mount, no mount-table parsing on the restore path.
var identityFiles = []struct{ target, runFile string }{
	{bootIDProcPath, "/run/nullspace/boot_id"},
	{"/etc/machine-id", "/run/nullspace/machine-id"},
	{"/etc/hostname", "/run/nullspace/hostname"},
}

func mountIdentityFiles(logf func(string, ...interface{})) {
	if err := os.MkdirAll("/run/nullspace", 0o755); err != nil {
		logf("mkdir /run/nullspace: %v", err)
		return
	}
	for _, f := range identityFiles {
		if isBindMounted(f.target, f.runFile) {
			continue
		}
		content, _ := os.ReadFile(f.target)
		if err := writeFileInPlace(f.runFile, string(content), 0o644); err != nil {
			logf("%v", err)
			continue
		}
		if _, err := os.Stat(f.target); os.IsNotExist(err) {
			if err := writeFileInPlace(f.target, "", 0o644); err != nil {
				logf("%v", err)
				continue
			}
		}
		if err := syscall.Mount(f.runFile, f.target, "", syscall.MS_BIND, ""); err != nil {
			logf("bind-mount %s over %s: %v", f.runFile, f.target, err)
		}
	}
}

// isBindMounted reports whether target currently shows runFile (same device
// and inode), i.e. runFile is bind-mounted over it.
func isBindMounted(target, runFile string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(target, &a) != nil || syscall.Stat(runFile, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

func setHostnameFromFile() {
	b, err := os.ReadFile("/etc/hostname")
	if err != nil {
		return
	}
	if name := strings.TrimSpace(string(b)); name != "" {
		_ = syscall.Sethostname([]byte(name))
	}
}

// supervise runs `serve` as a child, restarts it with a backoff when it
// dies, and reaps every zombie (orphans are re-parented to PID 1).
func supervise(console *os.File, sigchld chan os.Signal, logf func(string, ...interface{})) {
	const (
		minBackoff = 100 * time.Millisecond
		maxBackoff = 5 * time.Second
		stableRun  = 10 * time.Second
	)
	servePid := 0
	var serveStarted time.Time
	backoff := minBackoff
	restart := time.NewTimer(0)

	startServe := func() {
		devnull, _ := os.Open(os.DevNull)
		stdin := devnull
		if stdin == nil {
			stdin = console
		}
		p, err := os.StartProcess("/proc/self/exe", []string{"nullspace-agent", "serve"}, &os.ProcAttr{
			Env:   os.Environ(),
			Files: []*os.File{stdin, console, console},
			Sys:   &syscall.SysProcAttr{Setsid: true},
		})
		if devnull != nil {
			devnull.Close()
		}
		if err != nil {
			logf("start serve: %v", err)
			restart.Reset(backoff)
			backoff = nextBackoff(backoff, maxBackoff)
			return
		}
		servePid = p.Pid
		serveStarted = time.Now()
		_ = p.Release() // reaped by the wait4(-1) loop below
	}

	reap := func() {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil || pid <= 0 {
				return
			}
			if pid == servePid {
				servePid = 0
				if time.Since(serveStarted) > stableRun {
					backoff = minBackoff
				}
				logf("serve exited (%s); restarting in %v", describeWait(ws), backoff)
				restart.Reset(backoff)
				backoff = nextBackoff(backoff, maxBackoff)
			}
		}
	}

	for {
		select {
		case <-sigchld:
			reap()
		case <-restart.C:
			if servePid == 0 {
				startServe()
			}
		}
	}
}

func nextBackoff(d, max time.Duration) time.Duration {
	d *= 2
	if d > max {
		return max
	}
	return d
}

func describeWait(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + signalName(ws.Signal())
	}
	return fmt.Sprintf("exit code %d", ws.ExitStatus())
}
