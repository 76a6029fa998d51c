import { NsError } from '@nullspace/runtime';
import type { EgressRules, RestoreRequirements, VmSpec } from '@nullspace/runtime';
import { assertTransition, type SandboxState } from '../sandbox/lifecycle.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import type { Db } from './db.js';
import type { VolumeAttachment } from './volumes.js';

export interface SandboxIdentity {
  machineId: string;
  bootId: string;
}

export interface SandboxRecord {
  id: string;
  state: SandboxState;
  template: string;
  snapshotId: string | null;
  metadata: Record<string, string>;
  envs: Record<string, string>;
  memoryMiB: number;
  vcpus: number;
  allowInternetAccess: boolean;
  timeoutMs: number;
  createdAt: number;
  startedAt: number | null;
  expiresAt: number | null;
  endedAt: number | null;
  endReason: string | null;
  errorCode: string | null;
  pid: number | null;
  identity: SandboxIdentity;
  vmSpec: VmSpec | null;
  requirements: RestoreRequirements | null;
  /** The frozen layer its active overlay backs onto (null: its template's disk). */
  diskParentLayer: string | null;
  /** The sandbox it was forked from. */
  forkedFrom: string | null;
  /** What happens when the timeout expires. */
  onTimeout: 'kill' | 'hibernate';
  /** While paused: the timeout left when it was hibernated. */
  remainingMs: number | null;
  pausedAt: number | null;
  /** Shared volumes it mounts. */
  volumes: VolumeAttachment[];
  /** The secret a preview URL request must carry (header, or a signed URL made with it). */
  trafficToken: string;
  /** Its preview URLs are served without a traffic token. */
  allowPublicTraffic: boolean;
  /** A preview URL request to it while hibernated resumes it. */
  autoResume: boolean;
  /** Its egress rules (null: none, every destination but this host's and link-local ones). */
  egress: EgressRules | null;
  /** Connections its egress rules refused in the VM lives that ended (the live one's are counted apart). */
  egressRefused: number;
  /** A random secret minted at create (the E2B-compatible envd surface's access token). */
  accessToken: string | null;
  updatedAt: number;
}

interface Row {
  id: string;
  state: string;
  template: string;
  snapshot_id: string | null;
  metadata: string;
  envs: string;
  memory_mib: number;
  vcpus: number;
  allow_internet: number;
  timeout_ms: number;
  created_at: number;
  started_at: number | null;
  expires_at: number | null;
  ended_at: number | null;
  end_reason: string | null;
  error_code: string | null;
  pid: number | null;
  identity: string;
  vm_spec: string | null;
  requirements: string | null;
  disk_parent_layer: string | null;
  forked_from: string | null;
  on_timeout: string;
  remaining_ms: number | null;
  paused_at: number | null;
  volumes: string;
  traffic_token: string;
  allow_public_traffic: number;
  auto_resume: number;
  egress: string | null;
  egress_refused: number;
  access_token: string | null;
  updated_at: number;
}

function fromRow(r: Row): SandboxRecord {
  return {
    id: r.id,
    state: r.state as SandboxState,
    template: r.template,
    snapshotId: r.snapshot_id,
    metadata: JSON.parse(r.metadata) as Record<string, string>,
    envs: JSON.parse(r.envs) as Record<string, string>,
    memoryMiB: r.memory_mib,
    vcpus: r.vcpus,
    allowInternetAccess: r.allow_internet === 1,
    timeoutMs: r.timeout_ms,
    createdAt: r.created_at,
    startedAt: r.started_at,
    expiresAt: r.expires_at,
    endedAt: r.ended_at,
    endReason: r.end_reason,
    errorCode: r.error_code,
    pid: r.pid,
    identity: JSON.parse(r.identity) as SandboxIdentity,
    vmSpec: r.vm_spec ? (JSON.parse(r.vm_spec) as VmSpec) : null,
    requirements: r.requirements ? (JSON.parse(r.requirements) as RestoreRequirements) : null,
    diskParentLayer: r.disk_parent_layer,
    forkedFrom: r.forked_from,
    onTimeout: r.on_timeout === 'hibernate' ? 'hibernate' : 'kill',
    remainingMs: r.remaining_ms,
    pausedAt: r.paused_at,
    volumes: JSON.parse(r.volumes) as VolumeAttachment[],
    trafficToken: r.traffic_token,
    allowPublicTraffic: r.allow_public_traffic === 1,
    autoResume: r.auto_resume === 1,
    egress: r.egress ? (JSON.parse(r.egress) as EgressRules) : null,
    egressRefused: r.egress_refused,
    accessToken: r.access_token,
    updatedAt: r.updated_at,
  };
}

export type SandboxPatch = Partial<
  Pick<
    SandboxRecord,
    | 'startedAt'
    | 'expiresAt'
    | 'endedAt'
    | 'endReason'
    | 'errorCode'
    | 'pid'
    | 'vmSpec'
    | 'requirements'
    | 'timeoutMs'
    | 'diskParentLayer'
    | 'remainingMs'
    | 'pausedAt'
    | 'egress'
    | 'egressRefused'
  >
>;

const COLUMN: Record<keyof SandboxPatch, string> = {
  startedAt: 'started_at',
  expiresAt: 'expires_at',
  endedAt: 'ended_at',
  endReason: 'end_reason',
  errorCode: 'error_code',
  pid: 'pid',
  vmSpec: 'vm_spec',
  requirements: 'requirements',
  timeoutMs: 'timeout_ms',
  diskParentLayer: 'disk_parent_layer',
  remainingMs: 'remaining_ms',
  pausedAt: 'paused_at',
  egress: 'egress',
  egressRefused: 'egress_refused',
};

export interface ListQuery {
  states?: SandboxState[];
  metadata?: Record<string, string>;
  limit: number;
  /** Opaque cursor from a previous page. */
  nextToken?: string;
}

/** One recorded lifecycle step (an event row). */
export interface TransitionEvent {
  sandboxId: string;
  from: SandboxState | null;
  to: SandboxState;
  reason: string;
  at: number;
}

export class SandboxStore {
  constructor(
    private readonly db: Db,
    /** Told of every recorded step, after it is stored (the test-only lifecycle trace). */
    private readonly onEvent: (e: TransitionEvent) => void = () => {},
  ) {}

  insert(rec: SandboxRecord): void {
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, state, template, snapshot_id, metadata, envs, memory_mib, vcpus, allow_internet, timeout_ms,
           created_at, started_at, expires_at, ended_at, end_reason, error_code, pid, identity, vm_spec, requirements, disk_parent_layer, forked_from, on_timeout, volumes,
           traffic_token, allow_public_traffic, auto_resume, egress, access_token, updated_at)
         VALUES (@id, @state, @template, @snapshot_id, @metadata, @envs, @memory_mib, @vcpus, @allow_internet, @timeout_ms,
           @created_at, @started_at, @expires_at, @ended_at, @end_reason, @error_code, @pid, @identity, @vm_spec, @requirements, @disk_parent_layer, @forked_from, @on_timeout, @volumes,
           @traffic_token, @allow_public_traffic, @auto_resume, @egress, @access_token, @updated_at)`,
      )
      .run({
        id: rec.id,
        state: rec.state,
        template: rec.template,
        snapshot_id: rec.snapshotId,
        metadata: JSON.stringify(rec.metadata),
        envs: JSON.stringify(rec.envs),
        memory_mib: rec.memoryMiB,
        vcpus: rec.vcpus,
        allow_internet: rec.allowInternetAccess ? 1 : 0,
        timeout_ms: rec.timeoutMs,
        created_at: rec.createdAt,
        started_at: rec.startedAt,
        expires_at: rec.expiresAt,
        ended_at: rec.endedAt,
        end_reason: rec.endReason,
        error_code: rec.errorCode,
        pid: rec.pid,
        identity: JSON.stringify(rec.identity),
        vm_spec: rec.vmSpec ? JSON.stringify(rec.vmSpec) : null,
        requirements: rec.requirements ? JSON.stringify(rec.requirements) : null,
        disk_parent_layer: rec.diskParentLayer,
        forked_from: rec.forkedFrom,
        on_timeout: rec.onTimeout,
        volumes: JSON.stringify(rec.volumes),
        traffic_token: rec.trafficToken,
        allow_public_traffic: rec.allowPublicTraffic ? 1 : 0,
        auto_resume: rec.autoResume ? 1 : 0,
        egress: rec.egress ? JSON.stringify(rec.egress) : null,
        access_token: rec.accessToken,
        updated_at: rec.updatedAt,
      });
    this.event(rec.id, null, rec.state, 'created');
  }

  get(id: string): SandboxRecord | undefined {
    const row = this.db.prepare('SELECT * FROM sandboxes WHERE id = ?').get(id) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** Records in any of `states`. */
  inStates(states: readonly SandboxState[]): SandboxRecord[] {
    const rows = this.db
      .prepare(`SELECT * FROM sandboxes WHERE state IN (${states.map(() => '?').join(',')}) ORDER BY created_at, id`)
      .all(...states) as Row[];
    return rows.map(fromRow);
  }

  list(q: ListQuery): { items: SandboxRecord[]; nextToken: string | undefined } {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.states?.length) {
      where.push(`state IN (${q.states.map(() => '?').join(',')})`);
      params.push(...q.states);
    }
    for (const [k, v] of Object.entries(q.metadata ?? {})) {
      where.push(`json_extract(metadata, ?) = ?`);
      params.push(`$.${JSON.stringify(k)}`, v);
    }
    if (q.nextToken) {
      const cursor = decodeCursor(q.nextToken);
      where.push('(created_at > ? OR (created_at = ? AND id > ?))');
      params.push(cursor.createdAt, cursor.createdAt, cursor.id);
    }
    const sql = `SELECT * FROM sandboxes ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`;
    const rows = this.db.prepare(sql).all(...params, q.limit + 1) as Row[];
    const items = rows.slice(0, q.limit).map(fromRow);
    const last = items[items.length - 1];
    return { items, nextToken: rows.length > q.limit && last ? encodeCursor(last.createdAt, last.id) : undefined };
  }

  /**
   * Moves a sandbox from `from` to `to` (checked against the lifecycle) and applies `patch`, in one
   * transaction. Fails with `sandbox_busy` when the stored state is no longer `from`.
   */
  transition(id: string, from: SandboxState, to: SandboxState, reason: string, patch: SandboxPatch = {}): SandboxRecord {
    assertTransition(id, from, to);
    return this.db.transaction(() => {
      const sets = ['state = @to', 'updated_at = @now'];
      const params: Record<string, unknown> = { id, from, to, now: Date.now() };
      for (const [k, v] of Object.entries(patch) as Array<[keyof SandboxPatch, unknown]>) {
        sets.push(`${COLUMN[k]} = @${k}`);
        params[k] = v !== null && typeof v === 'object' ? JSON.stringify(v) : v;
      }
      const res = this.db.prepare(`UPDATE sandboxes SET ${sets.join(', ')} WHERE id = @id AND state = @from`).run(params);
      if (res.changes !== 1) {
        const cur = this.get(id);
        throw new NsError('sandbox_busy', `sandbox ${id} is ${cur?.state ?? 'gone'}, expected ${from}`, { details: { state: cur?.state } });
      }
      this.event(id, from, to, reason);
      return this.get(id)!;
    })();
  }

  /** Updates fields without a state change. */
  patch(id: string, patch: SandboxPatch): void {
    const sets = ['updated_at = @now'];
    const params: Record<string, unknown> = { id, now: Date.now() };
    for (const [k, v] of Object.entries(patch) as Array<[keyof SandboxPatch, unknown]>) {
      sets.push(`${COLUMN[k]} = @${k}`);
      params[k] = v !== null && typeof v === 'object' ? JSON.stringify(v) : v;
    }
    this.db.prepare(`UPDATE sandboxes SET ${sets.join(', ')} WHERE id = @id`).run(params);
  }

  /** Paused sandboxes hibernated before `before`. */
  pausedBefore(before: number): SandboxRecord[] {
    const rows = this.db.prepare(`SELECT * FROM sandboxes WHERE state = 'paused' AND paused_at IS NOT NULL AND paused_at < ?`).all(before) as Row[];
    return rows.map(fromRow);
  }

  /** Running sandboxes whose timeout has passed. */
  expired(now: number): SandboxRecord[] {
    const rows = this.db.prepare(`SELECT * FROM sandboxes WHERE state = 'running' AND expires_at IS NOT NULL AND expires_at <= ?`).all(now) as Row[];
    return rows.map(fromRow);
  }

  /** Deletes ended sandbox records older than `before`. */
  pruneEnded(before: number): number {
    return this.db.transaction(() => {
      const ids = (this.db.prepare(`SELECT id FROM sandboxes WHERE state IN ('killed','failed') AND ended_at < ?`).all(before) as Array<{ id: string }>).map((r) => r.id);
      for (const id of ids) {
        this.db.prepare('DELETE FROM sandbox_events WHERE sandbox_id = ?').run(id);
        this.db.prepare('DELETE FROM sandboxes WHERE id = ?').run(id);
      }
      return ids.length;
    })();
  }

  /** When the sandbox last moved into `state` (ms), from its event log. */
  lastTransitionAt(id: string, state: SandboxState): number | undefined {
    const r = this.db.prepare('SELECT MAX(at) AS at FROM sandbox_events WHERE sandbox_id = ? AND to_state = ?').get(id, state) as { at: number | null };
    return r.at ?? undefined;
  }

  events(id: string): Array<{ at: number; from: string | null; to: string; reason: string | null }> {
    return (this.db.prepare('SELECT at, from_state, to_state, reason FROM sandbox_events WHERE sandbox_id = ? ORDER BY seq').all(id) as Array<{
      at: number;
      from_state: string | null;
      to_state: string;
      reason: string | null;
    }>).map((r) => ({ at: r.at, from: r.from_state, to: r.to_state, reason: r.reason }));
  }

  private event(id: string, from: SandboxState | null, to: SandboxState, reason: string): void {
    const at = Date.now();
    this.db.prepare('INSERT INTO sandbox_events (sandbox_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)').run(id, at, from, to, reason);
    this.onEvent({ sandboxId: id, from, to, reason, at });
  }
}
