import { compareRequirements, NsError, type RequirementMismatch, type RestoreRequirements } from '@nullspace/runtime';
import type { Logger } from '../log.js';
import type { HostRecord, HostStore } from '../store/hosts.js';
import { newId } from '../util.js';
import { matchesDigest, newSecret, secretDigest } from './credentials.js';
import type { HostCapacity, HostFingerprint } from './identity.js';

export type HostState = 'ready' | 'draining' | 'lost';

/** A host as `GET /v1/hosts` shows it. */
export interface HostView {
  hostId: string;
  state: HostState;
  /** The host's listener (null: the control plane's own, in-process host). */
  url: string | null;
  fingerprint: HostFingerprint;
  capacity: HostCapacity;
  counts: { sandboxes: number };
  /** Incremented each time the host came back after being lost (fencing). */
  epoch: number;
  joinedAt: string;
  lastHeartbeat: string;
  lostAt: string | null;
  fencedAt: string | null;
}

/** What a host reports on join and on each heartbeat. */
export interface HostReport {
  url: string;
  fingerprint: HostFingerprint;
  capacity: HostCapacity;
  counts: { sandboxes: number };
}

export interface FleetOptions {
  /** The join token hosts present (undefined: the fleet is off, the control plane is its one host). */
  joinToken: string | undefined;
  /** How often hosts heartbeat (told to them at join and on every heartbeat). */
  heartbeatMs: number;
  /** A host that misses this many heartbeats in a row is lost. */
  lostAfter: number;
}

/** The id under which the control plane's own host is shown. */
export const LOCAL_HOST_ID = 'local';

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

/**
 * The control plane's side of the fleet (docs/ARCHITECTURE.md "Fleet"): hosts join with the join
 * token and get a credential of their own, heartbeat with it, are lost when they stop, fenced when
 * they come back; an operator drains them. The control plane's own host is always listed as `local`.
 */
export class FleetService {
  private sweeper: NodeJS.Timeout | undefined;
  /**
   * Since when this process has been there to hear heartbeats without a gap: its start, or the end
   * of a stall (a sweep that came late). No host is found lost for a silence this process may have
   * caused itself.
   */
  private readonly startedAt = Date.now();
  private listeningSince = this.startedAt;
  private lastTick = Date.now();
  /** Told of a lost host that heartbeats again (fenced): the router reconciles it. */
  onFenced: ((hostId: string) => void) | undefined;

  constructor(
    private readonly store: HostStore,
    private readonly opts: FleetOptions,
    /** The control plane's own host, as of now. */
    private readonly local: () => Omit<HostReport, 'url'>,
    private readonly log: Logger,
  ) {}

  get enabled(): boolean {
    return this.opts.joinToken !== undefined;
  }

  /** Starts the check for lost hosts (every heartbeat interval). */
  start(): void {
    if (!this.enabled || this.sweeper) return;
    this.sweeper = setInterval(() => void this.tick().catch((err: unknown) => this.log.error({ err: (err as Error).message }, 'checking for lost hosts failed')), this.opts.heartbeatMs);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /**
   * The sweeper's tick. One that comes more than an interval late means this process ran nothing
   * meanwhile (a stalled event loop, a starved or suspended machine): the heartbeats sent then wait
   * unread in its sockets, so hosts get a full window from now before any is found lost.
   */
  async tick(now = Date.now()): Promise<string[]> {
    if (now - this.lastTick > 2 * this.opts.heartbeatMs) {
      this.log.warn({ lateMs: now - this.lastTick - this.opts.heartbeatMs }, 'the check for lost hosts ran late (this process was stalled): hosts get a full heartbeat window');
      this.listeningSince = now;
    }
    this.lastTick = now;
    return this.sweep(now);
  }

  /** Marks lost the hosts whose last heartbeat is older than `lostAfter` intervals. */
  async sweep(now = Date.now()): Promise<string[]> {
    const before = now - this.opts.heartbeatMs * this.opts.lostAfter;
    // a control plane that just started (or was stalled) has not been there to hear heartbeats:
    // hosts get a full window from then (a restart of the control plane loses no host)
    if (before < this.listeningSince) return [];
    const lost = await this.store.markLost(before, now);
    for (const id of lost) this.log.warn({ hostId: id, missedHeartbeats: this.opts.lostAfter }, 'host lost: no heartbeat');
    return lost;
  }

  /** Throws unless `token` is the join token (checked before a join's body is even read). */
  checkJoinToken(token: string | undefined): void {
    const expected = this.opts.joinToken;
    if (expected === undefined) throw new NsError('fleet_disabled', 'this control plane takes no hosts: it was started without a join token (--join-token / NULLSPACE_JOIN_TOKEN)');
    if (!matchesDigest(token, secretDigest(expected))) throw new NsError('join_token_invalid', token === undefined ? 'missing join token: send Authorization: Bearer <join token>' : 'invalid join token');
  }

  /** Host `id`'s record, if `credential` is its credential (checked before a heartbeat's body is read). */
  async checkHost(id: string, credential: string | undefined): Promise<HostRecord> {
    if (!this.enabled) throw new NsError('fleet_disabled', 'this control plane takes no hosts: it was started without a join token');
    const rec = await this.store.get(id);
    // (an unknown host and a wrong credential look the same: the id is no secret)
    if (!rec || !matchesDigest(credential, rec.credentialDigest)) throw new NsError('host_credential_invalid', `invalid credential for host ${id}`);
    return rec;
  }

  /**
   * A host joins: `token` must be the join token. It gives the secret the control plane must present
   * to its listener (`controlCredential`) and gets its id and the credential it presents from now on.
   */
  async join(token: string | undefined, req: HostReport & { controlCredential: string }): Promise<{ hostId: string; credential: string; heartbeatMs: number }> {
    this.checkJoinToken(token);
    const credential = newSecret();
    const now = Date.now();
    const rec: HostRecord = {
      id: newId('host'),
      url: req.url,
      credentialDigest: secretDigest(credential),
      controlCredential: req.controlCredential,
      draining: false,
      fingerprint: req.fingerprint,
      capacity: req.capacity,
      counts: req.counts,
      epoch: 1,
      joinedAt: now,
      lastHeartbeat: now,
      lostAt: null,
      fencedAt: null,
    };
    await this.store.insert(rec);
    this.log.info({ hostId: rec.id, url: rec.url }, 'host joined');
    return { hostId: rec.id, credential, heartbeatMs: this.opts.heartbeatMs };
  }

  /** A heartbeat of host `id`, authenticated by its credential. A lost host comes back fenced. */
  async heartbeat(id: string, credential: string | undefined, report: HostReport): Promise<{ state: HostState; epoch: number; heartbeatMs: number }> {
    const rec = await this.checkHost(id, credential);
    const after = await this.store.heartbeat(id, Date.now(), report);
    if (!after) throw new NsError('host_credential_invalid', `invalid credential for host ${id}`);
    if (rec.lostAt !== null) {
      // Fenced: the epoch moved on; the router compares what the host runs with the records, the
      // control plane's record winning (fleet/router.ts reconcile).
      this.log.warn({ hostId: id, epoch: after.epoch, lostFor: Date.now() - rec.lostAt }, 'lost host is back: fenced with a new epoch');
      this.onFenced?.(id);
    }
    return { state: stateOf(after), epoch: after.epoch, heartbeatMs: this.opts.heartbeatMs };
  }

  async list(): Promise<HostView[]> {
    return [this.localView(), ...(await this.store.list()).map(view)];
  }

  async get(id: string): Promise<HostView> {
    if (id === LOCAL_HOST_ID) return this.localView();
    const rec = await this.store.get(id);
    if (!rec) throw hostNotFound(id);
    return view(rec);
  }

  /**
   * Which hosts could restore a snapshot of `requirements` into a VM of `vm`'s shape, by their
   * fingerprints (the compatibility check's own comparison, `compareRequirements`), and if not why:
   * what placement will choose from, and what `no_compatible_host` will list.
   */
  async compatibility(requirements: RestoreRequirements, vm: { memoryMiB: number; vcpus: number }): Promise<Array<{ hostId: string; state: HostState; compatible: boolean; mismatches: RequirementMismatch[] }>> {
    return (await this.list()).map((h) => {
      const f = h.fingerprint;
      const mismatches = compareRequirements(requirements, {
        qemuVersion: f.qemuVersion,
        machine: f.machine,
        accel: f.accel,
        cpuModel: f.cpuModel,
        hostCpu: f.hostCpu,
        deviceSet: f.deviceSet,
        memoryMiB: vm.memoryMiB,
        vcpus: vm.vcpus,
      });
      return { hostId: h.hostId, state: h.state, compatible: mismatches.length === 0, mismatches };
    });
  }

  /** Stops placement on host `id` (its sandboxes run on); `false`: places there again. Idempotent. */
  async drain(id: string, draining = true): Promise<HostView> {
    if (id === LOCAL_HOST_ID) {
      throw new NsError('bad_request', 'the control plane\'s own host ("local") cannot be drained: it is the only host of a single-process server', { details: { hostId: id } });
    }
    const rec = await this.store.setDraining(id, draining);
    if (!rec) throw hostNotFound(id);
    this.log.info({ hostId: id }, draining ? 'host draining' : 'host placeable again');
    return view(rec);
  }

  private localView(): HostView {
    const l = this.local();
    const now = new Date().toISOString();
    return {
      hostId: LOCAL_HOST_ID,
      state: 'ready',
      url: null,
      fingerprint: l.fingerprint,
      capacity: l.capacity,
      counts: l.counts,
      epoch: 1,
      joinedAt: new Date(this.startedAt).toISOString(),
      lastHeartbeat: now,
      lostAt: null,
      fencedAt: null,
    };
  }
}

function hostNotFound(id: string): NsError {
  return new NsError('host_not_found', `host ${id} not found`, { details: { id } });
}

function stateOf(r: HostRecord): HostState {
  return r.lostAt !== null ? 'lost' : r.draining ? 'draining' : 'ready';
}

function view(r: HostRecord): HostView {
  return {
    hostId: r.id,
    state: stateOf(r),
    url: r.url,
    fingerprint: r.fingerprint as HostFingerprint,
    capacity: r.capacity as HostCapacity,
    counts: r.counts as { sandboxes: number },
    epoch: r.epoch,
    joinedAt: iso(r.joinedAt)!,
    lastHeartbeat: iso(r.lastHeartbeat)!,
    lostAt: iso(r.lostAt),
    fencedAt: iso(r.fencedAt),
  };
}
