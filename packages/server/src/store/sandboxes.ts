import { NsError } from '@nullspace/runtime';
import type { EgressRules, RestoreRequirements, VmSpec } from '@nullspace/runtime';
import { assertTransition, type SandboxState } from '../sandbox/lifecycle.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { inList, insertSql, jsonFieldEquals, type Sql } from './sql.js';
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
    private readonly sql: Sql,
    /** Told of every recorded step, after it is stored (the test-only lifecycle trace). */
    private readonly onEvent: (e: TransitionEvent) => void = () => {},
  ) {}

  /** Records a new sandbox and its first event row, in one transaction. */
  async insert(rec: SandboxRecord): Promise<void> {
    await this.sql.transaction(async () => {
      await this.sql.run(
        ...insertSql('sandboxes', {
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
        }),
      );
      await this.event(rec.id, null, rec.state, 'created');
    });
  }

  async get(id: string): Promise<SandboxRecord | undefined> {
    const row = await this.sql.get<Row>('SELECT * FROM sandboxes WHERE id = ?', [id]);
    return row ? fromRow(row) : undefined;
  }

  /** Records in any of `states`. */
  async inStates(states: readonly SandboxState[]): Promise<SandboxRecord[]> {
    const rows = await this.sql.all<Row>(`SELECT * FROM sandboxes WHERE ${inList('state', states)} ORDER BY created_at, id`, states);
    return rows.map(fromRow);
  }

  async list(q: ListQuery): Promise<{ items: SandboxRecord[]; nextToken: string | undefined }> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.states?.length) {
      where.push(inList('state', q.states));
      params.push(...q.states);
    }
    for (const [k, v] of Object.entries(q.metadata ?? {})) {
      const [cond, p] = jsonFieldEquals(this.sql.dialect, 'metadata', k, v);
      where.push(cond);
      params.push(...p);
    }
    if (q.nextToken) {
      const cursor = decodeCursor(q.nextToken);
      where.push('(created_at > ? OR (created_at = ? AND id > ?))');
      params.push(cursor.createdAt, cursor.createdAt, cursor.id);
    }
    const sql = `SELECT * FROM sandboxes ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`;
    const rows = await this.sql.all<Row>(sql, [...params, q.limit + 1]);
    const items = rows.slice(0, q.limit).map(fromRow);
    const last = items[items.length - 1];
    return { items, nextToken: rows.length > q.limit && last ? encodeCursor(last.createdAt, last.id) : undefined };
  }

  /**
   * Moves a sandbox from `from` to `to` (checked against the lifecycle) and applies `patch`, in one
   * transaction. The move is a conditional update (`WHERE state = from`): of two callers racing
   * the same move (in this process or another one on the same database), exactly one wins; the
   * other fails with `sandbox_busy`, as does any caller whose `from` is no longer the stored state.
   */
  async transition(id: string, from: SandboxState, to: SandboxState, reason: string, patch: SandboxPatch = {}): Promise<SandboxRecord> {
    assertTransition(id, from, to);
    return this.sql.transaction(async () => {
      const [sets, params] = patchSets(patch);
      const changed = await this.sql.run(`UPDATE sandboxes SET state = ?, ${sets.join(', ')} WHERE id = ? AND state = ?`, [to, ...params, id, from]);
      if (changed !== 1) {
        const cur = await this.get(id);
        throw new NsError('sandbox_busy', `sandbox ${id} is ${cur?.state ?? 'gone'}, expected ${from}`, { details: { state: cur?.state } });
      }
      await this.event(id, from, to, reason);
      return (await this.get(id))!;
    });
  }

  /**
   * Updates fields without a state change. With `ifState`, only while the stored state is one of
   * those (resolves to false otherwise): a write that must not land on a record another caller has
   * meanwhile moved on (a timeout set on a running sandbox that is being killed).
   */
  async patch(id: string, patch: SandboxPatch, ifState?: readonly SandboxState[]): Promise<boolean> {
    const [sets, params] = patchSets(patch);
    const cond = ifState ? ` AND ${inList('state', ifState)}` : '';
    return (await this.sql.run(`UPDATE sandboxes SET ${sets.join(', ')} WHERE id = ?${cond}`, [...params, id, ...(ifState ?? [])])) === 1;
  }

  /** Adds `n` to the connections its egress rules refused (one update: counts banked at once never lose one). */
  async addEgressRefused(id: string, n: number): Promise<void> {
    await this.sql.run('UPDATE sandboxes SET egress_refused = egress_refused + ?, updated_at = ? WHERE id = ?', [n, Date.now(), id]);
  }

  /** Paused sandboxes hibernated before `before`. */
  async pausedBefore(before: number): Promise<SandboxRecord[]> {
    const rows = await this.sql.all<Row>(`SELECT * FROM sandboxes WHERE state = 'paused' AND paused_at IS NOT NULL AND paused_at < ?`, [before]);
    return rows.map(fromRow);
  }

  /** Running sandboxes whose timeout has passed. */
  async expired(now: number): Promise<SandboxRecord[]> {
    const rows = await this.sql.all<Row>(`SELECT * FROM sandboxes WHERE state = 'running' AND expires_at IS NOT NULL AND expires_at <= ?`, [now]);
    return rows.map(fromRow);
  }

  /** Deletes ended sandbox records older than `before`. */
  async pruneEnded(before: number): Promise<number> {
    return this.sql.transaction(async () => {
      const ids = (await this.sql.all<{ id: string }>(`SELECT id FROM sandboxes WHERE state IN ('killed','failed') AND ended_at < ?`, [before])).map((r) => r.id);
      for (const id of ids) {
        await this.sql.run('DELETE FROM sandbox_events WHERE sandbox_id = ?', [id]);
        await this.sql.run('DELETE FROM sandboxes WHERE id = ?', [id]);
      }
      return ids.length;
    });
  }

  /** When the sandbox last moved into `state` (ms), from its event log. */
  async lastTransitionAt(id: string, state: SandboxState): Promise<number | undefined> {
    const r = await this.sql.get<{ at: number | null }>('SELECT MAX(at) AS at FROM sandbox_events WHERE sandbox_id = ? AND to_state = ?', [id, state]);
    return r?.at ?? undefined;
  }

  async events(id: string): Promise<Array<{ at: number; from: string | null; to: string; reason: string | null }>> {
    const rows = await this.sql.all<{ at: number; from_state: string | null; to_state: string; reason: string | null }>(
      'SELECT at, from_state, to_state, reason FROM sandbox_events WHERE sandbox_id = ? ORDER BY seq',
      [id],
    );
    return rows.map((r) => ({ at: r.at, from: r.from_state, to: r.to_state, reason: r.reason }));
  }

  private async event(id: string, from: SandboxState | null, to: SandboxState, reason: string): Promise<void> {
    const at = Date.now();
    await this.sql.run('INSERT INTO sandbox_events (sandbox_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)', [id, at, from, to, reason]);
    this.onEvent({ sandboxId: id, from, to, reason, at });
  }
}

/** The SET clauses (and their values) of a patch, `updated_at` included. */
function patchSets(patch: SandboxPatch): [string[], unknown[]] {
  const sets = ['updated_at = ?'];
  const params: unknown[] = [Date.now()];
  for (const [k, v] of Object.entries(patch) as Array<[keyof SandboxPatch, unknown]>) {
    sets.push(`${COLUMN[k]} = ?`);
    params.push(v !== null && typeof v === 'object' ? JSON.stringify(v) : v);
  }
  return [sets, params];
}
