// Generated from spec/agent.json by scripts/agent-types.mjs: do not edit; run `node scripts/agent-types.mjs`.
// packages/runtime/test/protocol.test.ts fails when this file is not what the script makes of the spec.

/** spec/agent.json types.Entry */
export interface Entry {
  /** base name */
  name: string;
  /** absolute path */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  /** bytes (lstat) */
  size: number;
  /** permission bits (0-07777) */
  mode: number;
  /** modification time, milliseconds since the epoch */
  mtimeMs: number;
  /** (optional) only for symlinks */
  symlinkTarget?: string;
}

/** spec/agent.json types.ProcessInfo */
export interface ProcessInfo {
  pid: number;
  /** the command line as given (its first 2048 bytes and an ellipsis when longer) */
  cmd: string;
  cwd: string;
  /** the tag given at start, or empty */
  tag: string;
  startedAtMs: number;
  running: boolean;
  /** null while running; -1 when ended by a signal */
  exitCode: number | null;
  /** e.g. "SIGKILL" when ended by a signal */
  signal: string | null;
  timedOut: boolean;
}

/** EVENT entries (spec/agent.json events.entries) */
export interface EntriesEvent {
  type: 'entries';
  /** at most 500, sorted by path within the listing */
  entries: Entry[];
}

/** EVENT started (spec/agent.json events.started) */
export interface StartedEvent {
  type: 'started';
  /** the process id, sent first, once the process runs */
  pid: number;
}

/** EVENT lost (spec/agent.json events.lost) */
export interface LostEvent {
  type: 'lost';
  /** output bytes this subscriber missed (see flowControl) */
  bytes: number;
}

/** EVENT connected (spec/agent.json events.connected) */
export interface ConnectedEvent {
  type: 'connected';
}

/** EVENT eof (spec/agent.json events.eof) */
export interface EofEvent {
  type: 'eof';
}

/** EVENT watching (spec/agent.json events.watching) */
export interface WatchingEvent {
  type: 'watching';
  /** the directory watched (absolute, cleaned), sent first once its watches are set */
  path: string;
}

/** EVENT change (spec/agent.json events.change) */
export interface ChangeEvent {
  type: 'change';
  /** create is also the new name of a rename into the tree, rename the old name (inotify IN_MOVED_FROM), write a modification, chmod a change of metadata (mode, owner, times) */
  op: 'create' | 'write' | 'remove' | 'rename' | 'chmod';
  /** the path relative to the watched directory */
  name: string;
}

/** EVENT overflow (spec/agent.json events.overflow) */
export interface OverflowEvent {
  type: 'overflow';
  /** change events dropped (the agent holds at most 4096 for a host that reads slowly), -1 when the kernel's queue overflowed (IN_Q_OVERFLOW: unknown count) */
  dropped: number;
}

/** sys.info request. */
export type SysInfoRequest = Record<string, never>;
/** sys.info result. */
export interface SysInfoResult {
  /** agent version */
  version: string;
  /** 1 */
  protocol: number;
  /** request options an older agent would ignore silently (unknown JSON fields are not errors), which the host checks before relying on one: "sys.init.thaw", "sys.init.defaults" */
  features: string[];
  /** the guest kernel's boot_id */
  bootId: string;
  /** guest wall clock */
  timeMs: number;
  uptimeMs: number;
  hostname: string;
  /** sys.init has been applied since this guest booted or since the last restore generation */
  initialized: boolean;
}

/** sys.init request. Applied by the host after every boot, every restore and every reconnection, before any user request. Idempotent. Its last step thaws the user processes (see sys.freeze): in a clone they run again only once clock, entropy and identity are current. */
export interface SysInitRequest {
  /** host wall clock in ms since the epoch; the agent sets the guest clock to it (CLOCK_REALTIME) */
  timeMs: number;
  /** base64 of >= 32 random bytes; the agent credits them to the kernel pool (RNDADDENTROPY) and reseeds the CRNG at once (RNDRESEEDCRNG), so that clones of one snapshot never share random output */
  entropy: string;
  /** set as the guest hostname and shown at /etc/hostname (bind-mounted from /run/nullspace/hostname like machine-id) */
  hostname: string;
  /** 32 lowercase hex chars; shown at /etc/machine-id (init bind-mounts /run/nullspace/machine-id over it at boot, so that sys.init writes only tmpfs) */
  machineId: string;
  /** (optional) a UUID; the agent shows it at /proc/sys/kernel/random/boot_id (init bind-mounts /run/nullspace/boot_id over it at boot; sys.init rewrites that file in place) */
  bootId?: string;
  /** (optional) default environment for every later process (merged over the base environment, under the process's own envs) */
  envs?: Record<string, string>;
  /** (optional) the user of later process starts that name none (absent: unchanged; empty: root); a built template's USER; listed in sys.info features as sys.init.defaults */
  user?: string;
  /** (optional) the working directory of later process starts that name none (absent: unchanged; empty: the workspace); a built template's WORKDIR */
  cwd?: string;
  /** (optional, default true) false leaves the user processes frozen (a VM restored ahead of demand, whose real sys.init comes later); listed in sys.info features as sys.init.thaw */
  thaw?: boolean;
}
/** sys.init result. */
export interface SysInitResult {
  /** guest wall clock after the update */
  timeMs: number;
  /** (diagnostic) microseconds spent per step */
  timingsUs: Record<string, number>;
  /** the user processes were thawed by this call */
  thawed: boolean;
  /** the user processes are frozen after this call (false when there is no user cgroup) */
  frozen: boolean;
}

/** sys.freeze request. Freezes every process started through proc.start (they all live in one cgroup, /sys/fs/cgroup/sandbox, joined before they run any user code). The host freezes before capturing a snapshot, so that a clone's user processes stay stopped until its sys.init has made clock, entropy and identity current. */
export type SysFreezeRequest = Record<string, never>;
/** sys.freeze result. */
export interface SysFreezeResult {
  /** true */
  frozen: boolean;
  tookUs: number;
}

/** sys.thaw request. Thaws the user processes (the source after a capture). sys.init also thaws, as its last step. */
export type SysThawRequest = Record<string, never>;
/** sys.thaw result. */
export interface SysThawResult {
  /** false */
  frozen: boolean;
  tookUs: number;
}

/** sys.warmup request. Host-internal: runs a shell command once, as root, in the user cgroup, and waits for it, recording nothing (never in proc.list; output discarded). A restored guest runs every code path cold the first time (under TCG, translating the fork, exec, loader and shell paths costs more than running them); the host uses this to pay that, and to fill the guest page cache, before a user waits: on template builds before the snapshot, and on sandboxes it prepares ahead of demand. */
export interface SysWarmupRequest {
  /** the command, run by /bin/bash -c (or /bin/sh -c) */
  cmd: string;
  /** (optional, default 60000) killed (with its process group) after this long */
  timeoutMs?: number;
}
/** sys.warmup result. */
export interface SysWarmupResult {
  /** its exit status (-1 when killed by a signal, e.g. the timeout) */
  exitCode: number;
  /** microseconds from start to exit */
  tookUs: number;
}

/** fs.read request. Only plain files are read: anything but a regular file (a device node, FIFO, socket; checked before it is opened, whose effects a device may have) is refused with bad_request, a directory with is_a_directory. The file is read without blocking: a read that would wait for data (EAGAIN) is a bad_request, and so is any read error of a file of the kernel's file systems (proc, sysfs, debugfs, tracefs, cgroup, ...: e.g. /proc/self/mem), which is the nature of that file rather than an I/O failure; /proc/kmsg is refused before reading (reading takes the kernel's messages). Other kernel files (/proc/cpuinfo, sysfs attributes: size 0 to stat) are read to their end. */
export interface FsReadRequest {
  /** absolute path of a regular file */
  path: string;
}
/** fs.read result. */
export interface FsReadResult {
  /** total bytes sent */
  size: number;
}

/** fs.write request. */
export interface FsWriteRequest {
  /** absolute path */
  path: string;
  /** (optional) permission bits for a new file, default 0644 */
  mode?: number;
  /** (optional, default false) */
  append?: boolean;
  /** (optional) a user as proc.start's user; a file this creates, and the missing parent directories it creates, are owned by that user and its group (an existing file keeps its owner); bad_request for an unknown user. Default: the agent's own (root) */
  owner?: string;
}
/** fs.write result. */
export interface FsWriteResult {
  /** bytes written */
  size: number;
  path: string;
}

/** fs.list request. Cancellation stops the walk (checked for every directory and every 256 entries). */
export interface FsListRequest {
  /** absolute path of a directory */
  path: string;
  /** (optional, default 1, max 32) 1 lists the directory's children, 2 also their children, ... */
  depth?: number;
}
/** fs.list result. */
export interface FsListResult {
  /** total entries sent */
  count: number;
}

/** fs.stat request. */
export interface FsStatRequest {
  /** absolute path */
  path: string;
}
/** fs.stat result. lstat of the path */
export type FsStatResult = Entry;

/** fs.statfs request. the file system holding path, as df sees it (statfs(2)); not_found for a missing path */
export interface FsStatfsRequest {
  /** absolute path */
  path: string;
}
/** fs.statfs result. */
export interface FsStatfsResult {
  /** size of the file system */
  totalBytes: number;
  /** bytes in use (total minus free) */
  usedBytes: number;
  /** bytes an unprivileged user may still write */
  availBytes: number;
  totalInodes: number;
  freeInodes: number;
}

/** fs.mkdir request. */
export interface FsMkdirRequest {
  /** absolute path */
  path: string;
  /** (optional, default true) */
  parents?: boolean;
  /** (optional, default 0755) */
  mode?: number;
  /** (optional) as fs.write's: the directory and the parents this creates are owned by that user and its group */
  owner?: string;
}
/** fs.mkdir result. */
export interface FsMkdirResult {
  /** false when the directory already existed */
  created: boolean;
}

/** fs.remove request. Refused (bad_request) in a system directory and for a device node (filesApi), and, recursive, when a file system is mounted at or under path. A recursive remove stops when the stream is cancelled. */
export interface FsRemoveRequest {
  /** absolute path */
  path: string;
  /** (optional, default false) */
  recursive?: boolean;
}
/** fs.remove result. */
export type FsRemoveResult = Record<string, never>;

/** fs.rename request. */
export interface FsRenameRequest {
  /** absolute path */
  from: string;
  /** absolute path */
  to: string;
  /** (optional, default true) */
  overwrite?: boolean;
}
/** fs.rename result. */
export type FsRenameResult = Record<string, never>;

/** fs.watch request. inotify. not_found for a missing path, not_a_directory for a file, no_space when a recursive watch needs more watches than fs.inotify.max_user_watches allows. */
export interface FsWatchRequest {
  /** absolute path of a directory */
  path: string;
  /** (optional, default false) also the directories below it, including those created while the watch runs (what a new directory holds by the time its watch is set is reported as created) */
  recursive?: boolean;
}
/** fs.watch result. */
export interface FsWatchResult {
  removed: boolean;
}

/** proc.start request. */
export interface ProcStartRequest {
  /** run as /bin/bash -c CMD when /bin/bash exists, else /bin/sh -c CMD */
  cmd: string;
  /** (optional) run this program directly, without a shell: argv[0] is a path, or a name looked up in the process's PATH as a shell's exec does; cmd is then only what ProcessInfo shows. bad_request for an empty argv[0] or a NUL byte */
  argv?: string[];
  /** (optional, default /workspace, created if missing when it is /workspace) */
  cwd?: string;
  /** (optional) */
  envs?: Record<string, string>;
  /** (optional, default root) as Docker's USER: NAME, UID, NAME:GROUP or UID:GID; a name from the guest's /etc/passwd (root is always known), a uid that is not there runs with gid 0 and HOME /, a group is a gid or a name from /etc/group */
  user?: string;
  /** (optional, 0 = none) the process group is killed with SIGKILL when it runs longer; its exit then has timedOut true */
  timeoutMs?: number;
  /** (optional, default false) when true the host sends stdin as DATA channel 0 on this stream and END closes it; when false stdin is /dev/null */
  stdin?: boolean;
  /** (optional) free text kept in ProcessInfo */
  tag?: string;
}
/** proc.start result. the ended process */
export type ProcStartResult = ProcessInfo;

/** proc.attach request. */
export interface ProcAttachRequest {
  pid: number;
  /** (optional, default true) first send the output still held in the ring buffer */
  replay?: boolean;
}
/** proc.attach result. */
export type ProcAttachResult = ProcessInfo;

/** proc.stdin request. */
export interface ProcStdinRequest {
  pid: number;
  /** (optional) base64 bytes to write to the process's stdin */
  data?: string;
  /** (optional) close stdin after writing */
  close?: boolean;
}
/** proc.stdin result. */
export type ProcStdinResult = Record<string, never>;

/** proc.signal request. sent to the whole process group */
export interface ProcSignalRequest {
  pid: number;
  /** (optional, default SIGKILL) */
  signal?: 'SIGKILL' | 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'SIGQUIT' | 'SIGUSR1' | 'SIGUSR2' | 'SIGSTOP' | 'SIGCONT';
}
/** proc.signal result. */
export type ProcSignalResult = Record<string, never>;

/** proc.list request. */
export type ProcListRequest = Record<string, never>;
/** proc.list result. */
export interface ProcListResult {
  /** running processes and ended ones not yet forgotten (the agent keeps the last 256 ended ones) */
  processes: ProcessInfo[];
}

/** net.connect request. A TCP tunnel into the guest: the agent opens a connection to host:port inside the guest (its loopback by default), so that the host reaches a guest server without the guest's network (internet access may be off; no host port is opened). Bytes go both ways as DATA on channel 0 under the stream's flow control: what the guest's server sends is DATA from the agent, within the host's credit (a host that does not read holds the connection back); DATA from the host is written to the connection and its credit is granted back once written. END from the host half-closes the connection (shutdown of its write side); the end of the guest side's data is an EVENT eof. CANCEL closes the connection at once. A refused connection is an ERROR port_not_open. */
export interface NetConnectRequest {
  /** TCP port, 1-65535 */
  port: number;
  /** (optional, default "127.0.0.1") an IP address of the guest, or localhost */
  host?: string;
  /** (optional, default 5000) how long connecting may take (then port_not_open) */
  timeoutMs?: number;
}
/** net.connect result. */
export interface NetConnectResult {
  /** bytes received from the guest side and sent to the host */
  bytesIn: number;
  /** bytes from the host written to the connection */
  bytesOut: number;
}

/** pty.start request. */
export interface PtyStartRequest {
  /** (optional) run as /bin/bash -c CMD (or /bin/sh) on the terminal; absent or empty: the user's login shell from /etc/passwd (falling back to /bin/bash, then /bin/sh) as SHELL -l */
  cmd?: string;
  /** (optional, default 80) window width, 1 to 10000 */
  cols?: number;
  /** (optional, default 24) window height, 1 to 10000 */
  rows?: number;
  /** (optional) as proc.start */
  cwd?: string;
  /** (optional) as proc.start (TERM is xterm-256color unless set here) */
  envs?: Record<string, string>;
  /** (optional) as proc.start; the terminal is owned by the user (group tty, mode 0620) */
  user?: string;
  /** (optional) free text kept in ProcessInfo */
  tag?: string;
}
/** pty.start result. the ended process */
export type PtyStartResult = ProcessInfo;

/** pty.resize request. sets the terminal's window size (TIOCSWINSZ): the kernel sends SIGWINCH to its foreground process group. bad_request for a process without a terminal, not_running once it exited. */
export interface PtyResizeRequest {
  /** a process started with pty.start */
  pid: number;
  /** 1 to 10000 */
  cols: number;
  /** 1 to 10000 */
  rows: number;
}
/** pty.resize result. */
export type PtyResizeResult = Record<string, never>;

/** vol.mount request. Mounts a shared volume: a virtio-9p device (hot-plugged or present since start) with this mount tag, at path (created if missing). Waits for the device to appear. Mounting an already mounted path is a no-op. */
export interface VolMountRequest {
  /** the device's mount tag ([a-z0-9_-]{1,31}) */
  tag: string;
  /** absolute guest path; the guest's symbolic links in it are followed, and the volume is mounted where it leads, which must not be / or in one of reservedPaths (invalid_path otherwise) */
  path: string;
  /** (optional, default 10000) how long to wait for the device */
  timeoutMs?: number;
}
/** vol.mount result. */
export interface VolMountResult {
  /** where it is mounted (symbolic links resolved) */
  path: string;
  /** true */
  mounted: boolean;
  /** (optional) */
  already?: boolean;
  /** (optional) */
  tookUs?: number;
}

/** vol.unmount request. Unmounts a volume (before a memory snapshot: QEMU cannot migrate a VM with a mounted 9p share). Fails with volume_busy, naming the processes, when anything under it is still in use after 2 s of trying again (a holder on its way out, like the agent's work for a cancelled request, gets that moment). Unmounting a path that is not mounted is a no-op. */
export interface VolUnmountRequest {
  /** absolute guest path (resolved as in vol.mount) */
  path: string;
}
/** vol.unmount result. */
export interface VolUnmountResult {
  path: string;
  /** false */
  mounted: boolean;
}

/** Every op of the protocol: its request, its result and the events it sends. */
export interface AgentOps {
  'sys.info': { request: SysInfoRequest; result: SysInfoResult; event: never };
  'sys.init': { request: SysInitRequest; result: SysInitResult; event: never };
  'sys.freeze': { request: SysFreezeRequest; result: SysFreezeResult; event: never };
  'sys.thaw': { request: SysThawRequest; result: SysThawResult; event: never };
  'sys.warmup': { request: SysWarmupRequest; result: SysWarmupResult; event: never };
  'fs.read': { request: FsReadRequest; result: FsReadResult; event: never };
  'fs.write': { request: FsWriteRequest; result: FsWriteResult; event: never };
  'fs.list': { request: FsListRequest; result: FsListResult; event: EntriesEvent };
  'fs.stat': { request: FsStatRequest; result: FsStatResult; event: never };
  'fs.statfs': { request: FsStatfsRequest; result: FsStatfsResult; event: never };
  'fs.mkdir': { request: FsMkdirRequest; result: FsMkdirResult; event: never };
  'fs.remove': { request: FsRemoveRequest; result: FsRemoveResult; event: never };
  'fs.rename': { request: FsRenameRequest; result: FsRenameResult; event: never };
  'fs.watch': { request: FsWatchRequest; result: FsWatchResult; event: WatchingEvent | ChangeEvent | OverflowEvent };
  'proc.start': { request: ProcStartRequest; result: ProcStartResult; event: StartedEvent | LostEvent };
  'proc.attach': { request: ProcAttachRequest; result: ProcAttachResult; event: LostEvent };
  'proc.stdin': { request: ProcStdinRequest; result: ProcStdinResult; event: never };
  'proc.signal': { request: ProcSignalRequest; result: ProcSignalResult; event: never };
  'proc.list': { request: ProcListRequest; result: ProcListResult; event: never };
  'net.connect': { request: NetConnectRequest; result: NetConnectResult; event: ConnectedEvent | EofEvent };
  'pty.start': { request: PtyStartRequest; result: PtyStartResult; event: StartedEvent | LostEvent };
  'pty.resize': { request: PtyResizeRequest; result: PtyResizeResult; event: never };
  'vol.mount': { request: VolMountRequest; result: VolMountResult; event: never };
  'vol.unmount': { request: VolUnmountRequest; result: VolUnmountResult; event: never };
}

/** The ops in the order of the spec. */
export const AGENT_OPS = [
  'sys.info',
  'sys.init',
  'sys.freeze',
  'sys.thaw',
  'sys.warmup',
  'fs.read',
  'fs.write',
  'fs.list',
  'fs.stat',
  'fs.statfs',
  'fs.mkdir',
  'fs.remove',
  'fs.rename',
  'fs.watch',
  'proc.start',
  'proc.attach',
  'proc.stdin',
  'proc.signal',
  'proc.list',
  'net.connect',
  'pty.start',
  'pty.resize',
  'vol.mount',
  'vol.unmount',
] as const satisfies ReadonlyArray<keyof AgentOps>;
