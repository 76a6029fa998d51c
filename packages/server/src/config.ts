import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NsError, parseRegistryList, type Accel } from '@nullspace/runtime';

/** Everything the server is configured with, parsed once at start (environment, then flags). */
export interface Config {
  host: string;
  port: number;
  /** SQLite database (unless `databaseUrl`), API key, sandbox directories. */
  dataDir: string;
  /**
   * The control-plane store in PostgreSQL (`postgres://...`: `serve --database`,
   * NULLSPACE_DATABASE_URL); unset: SQLite in the data dir.
   */
  databaseUrl: string | undefined;
  /** Built images and template snapshots, shared by every server of this machine. */
  cacheDir: string;
  /** Template recipes and agent sources (for `template build`). */
  imagesDir: string;
  agentDir: string;
  /** The egress proxy's Go sources (egress/ of the repository), built into the cache at start. */
  egressProxyDir: string;
  /** The web console's built files (NULLSPACE_CONSOLE_DIR; default packages/console/dist), served at /. */
  consoleDir: string;
  debianMirror: string;
  /**
   * Image registries (`host` or `host:port`) reached over plain HTTP or HTTPS without certificate
   * checks when importing images (NULLSPACE_INSECURE_REGISTRIES, comma-separated); none by default.
   */
  insecureRegistries: string[];
  /** NULLSPACE_API_KEY; when unset the server generates one and keeps it in dataDir/api-key. */
  apiKey: string | undefined;
  accel: Accel | undefined;
  /** The KVM device looked for (NULLSPACE_KVM_DEVICE); a path that does not exist: a host without KVM. */
  kvmDevice: string;
  cpuModel: string | undefined;
  /** Host-wide runtime state (sandbox uid claims); on tmpfs. */
  runDir: string;
  /** Each sandbox's QEMU runs as its own uid from this range (see docs/ARCHITECTURE.md). */
  vmUidBase: number;
  vmUidCount: number;
  /** Group of shared-volume directories; QEMU of sandboxes that mount volumes runs in it. */
  volumeGid: number;
  /** 'nft': firewall rules keep sandboxes off the host (requires root). 'off': unsafe, for development only. */
  networkIsolation: 'nft' | 'off';
  limits: {
    /** Sandboxes whose VM runs (or is being started). */
    maxSandboxes: number;
    /** Sum of the nominal RAM of running sandboxes. */
    maxMemoryMiB: number;
    /** Refuse new sandboxes when the host has less available memory than this. */
    minHostAvailableMiB: number;
    maxTimeoutMs: number;
    maxUploadBytes: number;
    /** Refuse new sandboxes and snapshots (507) when the data disk has less free space than this. */
    minFreeDiskMiB: number;
  };
  http: {
    /** A request's headers must arrive within this (Node's headersTimeout); 408 and closed otherwise. */
    headersTimeoutMs: number;
    /**
     * A JSON body must arrive within this (counted from its headers); a file upload, which may take
     * any time, must not stall for this long between two chunks. 408 `request_timeout` otherwise.
     */
    bodyTimeoutMs: number;
  };
  defaultTimeoutMs: number;
  /**
   * TCG only: each VM's translation buffer in MiB (0: QEMU's default, which grows up to 1 GiB as the
   * guest runs new code). A cap bounds a busy sandbox's memory at the cost of re-translating.
   */
  tcgBufferMiB: number;
  /** QEMU processes kept started for the next plain creates from `base` (0: none). */
  warmPoolSize: number;
  /**
   * Reusable snapshots kept warm (0: none): the most recently created or used ones each have one
   * sandbox-to-be restored from them ahead of demand.
   */
  snapshotPoolSize: number;
  /** How often expired sandboxes are looked for. */
  reaperIntervalMs: number;
  /** How often the firewall rules are checked (and put back when gone): NULLSPACE_FIREWALL_CHECK_MS. */
  networkGuardCheckMs: number;
  /** Killed/failed sandbox records are kept this long for inspection. */
  endedRetentionMs: number;
  /** Paused (hibernated) sandboxes are killed after this long; 0 keeps them until killed. */
  pausedRetentionMs: number;
  events: {
    /** Events older than this are pruned from the log (NULLSPACE_EVENT_RETENTION_MS, default 7 days). */
    retentionMs: number;
    /** At most this many events are kept (NULLSPACE_EVENT_MAX, default 100000). */
    maxEvents: number;
    /** An SSE stream sends a comment this often when there is nothing else (NULLSPACE_SSE_HEARTBEAT_MS, default 15 s). */
    heartbeatMs: number;
  };
  webhooks: {
    /** Webhook URLs may resolve to loopback, private and link-local addresses (NULLSPACE_WEBHOOK_ALLOW_PRIVATE=1); off by default. */
    allowPrivate: boolean;
    /** Attempts per delivery before it is given up (NULLSPACE_WEBHOOK_MAX_ATTEMPTS, default 10). */
    maxAttempts: number;
    /** The first retry's delay; each next one doubles, up to 10 min (NULLSPACE_WEBHOOK_RETRY_BASE_MS, default 5000). */
    retryBaseMs: number;
    /** One attempt's limit, until the whole answer (NULLSPACE_WEBHOOK_TIMEOUT_MS, default 10000). */
    timeoutMs: number;
  };
  /** How often each running sandbox's metrics are sampled (NULLSPACE_METRICS_INTERVAL_MS, default 5000). */
  metricsIntervalMs: number;
  logLevel: string;
  /** Preview URLs: `<port>-<sandboxId>.<domain>` served by the Host header (docs/api.md "Preview URLs"). */
  preview: {
    /**
     * NULLSPACE_PUBLIC_DOMAIN as given (a `:port` in it is part of the URLs shown, ignored when
     * matching a request's Host); undefined: `localhost` with the port the proxy listens on.
     */
    domain: string | undefined;
    /** NULLSPACE_PUBLIC_SCHEME: how clients reach the preview URLs (https behind a TLS proxy). */
    scheme: 'http' | 'https';
    /** NULLSPACE_PROXY_PORT / --proxy-port: a listener of its own for preview URLs (the API's listener serves them too). */
    proxyPort: number | undefined;
  };
  /** Runtime hosts (docs/ARCHITECTURE.md "Fleet"; operations.md). */
  fleet: {
    /** NULLSPACE_JOIN_TOKEN / --join-token: what hosts present to join; undefined: the fleet is off (one host, this one). */
    joinToken: string | undefined;
    /** How often hosts heartbeat (NULLSPACE_HOST_HEARTBEAT_MS, default 5000). */
    heartbeatMs: number;
    /** A host that misses this many heartbeats in a row is lost (NULLSPACE_HOST_LOST_AFTER, default 3). */
    lostAfter: number;
    /**
     * Whether the control plane runs sandboxes itself as well (host `local`), beside its joined
     * hosts: NULLSPACE_LOCAL_SANDBOXES (default true; `scripts/cluster.sh` runs a control plane
     * without, so that every sandbox goes to a host).
     */
    localSandboxes: boolean;
    /** How many hosts keep a copy of each reusable snapshot (NULLSPACE_SNAPSHOT_REPLICAS, default 1: the one that took it). */
    replicas: number;
  };
  /** Test-only fault injection (NULLSPACE_FAULT_INJECTION), e.g. "kill-vm-during-snapshot". */
  faultInjection: string | undefined;
  /**
   * Test-only: a file every lifecycle transition is appended to as a JSON line (sandbox, from, to,
   * reason), NULLSPACE_LIFECYCLE_TRACE; scripts/lifecycle-traces.mjs compares runs of the suite.
   */
  lifecycleTrace: string | undefined;
}

export const DEFAULT_PORT = 7070;

/**
 * The longest duration any `...Ms` field of the API (and NULLSPACE_MAX_TIMEOUT_MS) takes: one year.
 * A bound at all keeps huge numbers (1e400 is Infinity in JSON, 2^53 and above lose precision) from
 * meaning "no limit".
 */
export const MAX_DURATION_MS = 365 * 24 * 3600_000;
export const DEFAULT_HOME = '/var/lib/nullspace';
export const DEFAULT_DATA_DIR = path.join(DEFAULT_HOME, 'data');

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new NsError('invalid_config', `${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  return n;
}

function bool(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '' || raw === '0' || raw === 'false') return false;
  if (raw === '1' || raw === 'true') return true;
  throw new NsError('invalid_config', `${name} must be 1/true or 0/false, got "${raw}"`);
}

function tcgBuffer(env: NodeJS.ProcessEnv): number {
  const n = int(env, 'NULLSPACE_TCG_BUFFER_MIB', 0, 0);
  if (n !== 0 && n < 16) throw new NsError('invalid_config', `NULLSPACE_TCG_BUFFER_MIB must be 0 (QEMU's default) or at least 16, got ${n}`);
  return n;
}

export interface ConfigOverrides {
  host?: string | undefined;
  port?: number | undefined;
  dataDir?: string | undefined;
  proxyPort?: number | undefined;
  joinToken?: string | undefined;
  databaseUrl?: string | undefined;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: ConfigOverrides = {}): Config {
  const home = env.NULLSPACE_HOME || DEFAULT_HOME;
  const accel = env.NULLSPACE_ACCEL || undefined;
  if (accel !== undefined && accel !== 'kvm' && accel !== 'tcg') {
    throw new NsError('invalid_config', `NULLSPACE_ACCEL must be "kvm" or "tcg", got "${accel}"`);
  }
  const cpuModel = env.NULLSPACE_CPU_MODEL || undefined;
  if (cpuModel !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.+-]*(,[A-Za-z0-9_.+=-]+)*$/.test(cpuModel)) {
    throw new NsError('invalid_config', `NULLSPACE_CPU_MODEL "${cpuModel}" is not a CPU model name`);
  }
  const dataDir = path.resolve(overrides.dataDir ?? env.NULLSPACE_DATA_DIR ?? path.join(home, 'data'));
  // sandbox sockets live under dataDir/sandboxes/<id>/run: unix socket paths are limited
  if (Buffer.byteLength(dataDir) > 48) {
    throw new NsError('invalid_config', `data dir "${dataDir}" is longer than 48 bytes (unix socket paths under it would be too long)`);
  }
  const totalMiB = Math.floor(os.totalmem() / 1024 / 1024);
  const apiKey = env.NULLSPACE_API_KEY || undefined;
  const joinToken = overrides.joinToken ?? (env.NULLSPACE_JOIN_TOKEN || undefined);
  if (joinToken !== undefined && !/^[\x21-\x7e]{16,256}$/.test(joinToken)) {
    throw new NsError('invalid_config', 'the join token (NULLSPACE_JOIN_TOKEN / --join-token) must be 16 to 256 printable characters without spaces');
  }
  if (apiKey !== undefined && apiKey.length < 16) throw new NsError('invalid_config', 'NULLSPACE_API_KEY must be at least 16 characters');
  const port = overrides.port ?? int(env, 'NULLSPACE_PORT', DEFAULT_PORT);
  const networkIsolation = env.NULLSPACE_NETWORK_ISOLATION || 'nft';
  if (networkIsolation !== 'nft' && networkIsolation !== 'off') {
    throw new NsError('invalid_config', `NULLSPACE_NETWORK_ISOLATION must be "nft" or "off", got "${networkIsolation}"`);
  }
  if (port > 65535) throw new NsError('invalid_config', `port ${port} is out of range`);
  const proxyPort = overrides.proxyPort ?? (env.NULLSPACE_PROXY_PORT ? int(env, 'NULLSPACE_PROXY_PORT', 0, 0, 65535) : undefined);
  const scheme = env.NULLSPACE_PUBLIC_SCHEME || 'http';
  if (scheme !== 'http' && scheme !== 'https') throw new NsError('invalid_config', `NULLSPACE_PUBLIC_SCHEME must be "http" or "https", got "${scheme}"`);
  const domain = env.NULLSPACE_PUBLIC_DOMAIN || undefined;
  if (domain !== undefined && !/^[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?(:[0-9]{1,5})?$/.test(domain)) {
    throw new NsError('invalid_config', `NULLSPACE_PUBLIC_DOMAIN must be a lowercase DNS name, optionally with :port, got "${domain}"`);
  }
  const databaseUrl = overrides.databaseUrl ?? (env.NULLSPACE_DATABASE_URL || undefined);
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new NsError('invalid_config', 'the database URL (--database, NULLSPACE_DATABASE_URL) must be a postgres:// or postgresql:// URL');
  }
  return {
    host: overrides.host ?? (env.NULLSPACE_HOST || '127.0.0.1'),
    port,
    dataDir,
    databaseUrl,
    cacheDir: path.resolve(env.NULLSPACE_CACHE_DIR || path.join(home, 'cache')),
    imagesDir: path.resolve(env.NULLSPACE_IMAGES_DIR || path.join(repoRoot, 'images')),
    agentDir: path.resolve(env.NULLSPACE_AGENT_DIR || path.join(repoRoot, 'agent')),
    egressProxyDir: path.join(repoRoot, 'egress'),
    consoleDir: path.resolve(env.NULLSPACE_CONSOLE_DIR || path.join(repoRoot, 'packages', 'console', 'dist')),
    debianMirror: env.NULLSPACE_DEBIAN_MIRROR || 'http://deb.debian.org/debian',
    insecureRegistries: parseRegistryList(env.NULLSPACE_INSECURE_REGISTRIES ?? ''),
    apiKey,
    accel,
    kvmDevice: env.NULLSPACE_KVM_DEVICE || '/dev/kvm',
    cpuModel,
    runDir: path.resolve(env.NULLSPACE_RUN_DIR || '/run/nullspace'),
    vmUidBase: int(env, 'NULLSPACE_VM_UID_BASE', 2_000_000, 1000),
    vmUidCount: int(env, 'NULLSPACE_VM_UID_COUNT', 1_000_000, 1),
    volumeGid: int(env, 'NULLSPACE_VOLUME_GID', 1_999_999, 1000),
    networkIsolation,
    limits: {
      maxSandboxes: int(env, 'NULLSPACE_MAX_SANDBOXES', 200, 0),
      // nominal RAM may be overcommitted: clones share the template's pages until they write them
      maxMemoryMiB: int(env, 'NULLSPACE_MAX_MEMORY_MIB', totalMiB * 4, 0),
      minHostAvailableMiB: int(env, 'NULLSPACE_MIN_HOST_AVAILABLE_MIB', Math.min(2048, Math.floor(totalMiB / 10)), 0),
      maxTimeoutMs: int(env, 'NULLSPACE_MAX_TIMEOUT_MS', 24 * 3600_000, 1000, MAX_DURATION_MS),
      maxUploadBytes: int(env, 'NULLSPACE_MAX_UPLOAD_BYTES', 4 * 1024 ** 3, 1),
      minFreeDiskMiB: int(env, 'NULLSPACE_MIN_FREE_DISK_MIB', 1024, 0),
    },
    http: {
      headersTimeoutMs: int(env, 'NULLSPACE_HEADERS_TIMEOUT_MS', 20_000, 100, 3600_000),
      bodyTimeoutMs: int(env, 'NULLSPACE_BODY_TIMEOUT_MS', 30_000, 100, 3600_000),
    },
    defaultTimeoutMs: int(env, 'NULLSPACE_DEFAULT_TIMEOUT_MS', 300_000, 1000, MAX_DURATION_MS),
    reaperIntervalMs: int(env, 'NULLSPACE_REAPER_INTERVAL_MS', 1000, 50),
    networkGuardCheckMs: int(env, 'NULLSPACE_FIREWALL_CHECK_MS', 10_000, 100),
    warmPoolSize: int(env, 'NULLSPACE_WARM_POOL', 2, 0),
    tcgBufferMiB: tcgBuffer(env),
    snapshotPoolSize: int(env, 'NULLSPACE_SNAPSHOT_POOL', 2, 0),
    endedRetentionMs: int(env, 'NULLSPACE_ENDED_RETENTION_MS', 24 * 3600_000, 0),
    pausedRetentionMs: int(env, 'NULLSPACE_PAUSED_RETENTION_MS', 0, 0),
    preview: { domain, scheme, proxyPort },
    events: {
      retentionMs: int(env, 'NULLSPACE_EVENT_RETENTION_MS', 7 * 24 * 3600_000, 60_000, MAX_DURATION_MS),
      maxEvents: int(env, 'NULLSPACE_EVENT_MAX', 100_000, 100),
      heartbeatMs: int(env, 'NULLSPACE_SSE_HEARTBEAT_MS', 15_000, 100, 3600_000),
    },
    webhooks: {
      allowPrivate: bool(env, 'NULLSPACE_WEBHOOK_ALLOW_PRIVATE'),
      maxAttempts: int(env, 'NULLSPACE_WEBHOOK_MAX_ATTEMPTS', 10, 1, 100),
      retryBaseMs: int(env, 'NULLSPACE_WEBHOOK_RETRY_BASE_MS', 5000, 10, 3600_000),
      timeoutMs: int(env, 'NULLSPACE_WEBHOOK_TIMEOUT_MS', 10_000, 100, 300_000),
    },
    metricsIntervalMs: int(env, 'NULLSPACE_METRICS_INTERVAL_MS', 5000, 100, 3600_000),
    logLevel: env.NULLSPACE_LOG_LEVEL || 'info',
    fleet: {
      joinToken,
      heartbeatMs: int(env, 'NULLSPACE_HOST_HEARTBEAT_MS', 5000, 100, 3600_000),
      lostAfter: int(env, 'NULLSPACE_HOST_LOST_AFTER', 3, 1, 1000),
      localSandboxes: env.NULLSPACE_LOCAL_SANDBOXES === undefined || env.NULLSPACE_LOCAL_SANDBOXES === '' ? true : bool(env, 'NULLSPACE_LOCAL_SANDBOXES'),
      replicas: int(env, 'NULLSPACE_SNAPSHOT_REPLICAS', 1, 1, 16),
    },
    faultInjection: env.NULLSPACE_FAULT_INJECTION || undefined,
    lifecycleTrace: env.NULLSPACE_LIFECYCLE_TRACE ? path.resolve(env.NULLSPACE_LIFECYCLE_TRACE) : undefined,
  };
}
