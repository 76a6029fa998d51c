import { NsError } from '@nullspace/runtime';

/**
 * The sandbox lifecycle, written down once: its states, which moves between them are allowed, and
 * what each event does (`next`). `next` is pure: given a record and an event it says the target
 * state, the reason recorded, the fields that change, and the effects to carry out before and after
 * the move is persisted. It is the only place that builds the patches of the terminal and paused
 * states. `Lifecycle.apply` (transition.ts) carries a step out; nothing else changes a state.
 *
 *   creating ──> running ──> killing ──> killed
 *      │            │  ▲
 *      │            │  └───────────────┐
 *      │            ▼                  │
 *      │       hibernating ──> paused ─┴─> resuming ──> running
 *      ▼            ▼            │
 *    failed <─── (any live state when its VM dies or an operation fails beyond repair)
 *
 * Snapshots and forks are operations on a running sandbox, not states: they hold the sandbox's
 * operation lock while they run. Every state is persisted (with an event row) before the server acts
 * on it, so that a restarted server can tell where each sandbox was (event `recover`).
 */
export const STATES = ['creating', 'running', 'hibernating', 'paused', 'resuming', 'killing', 'killed', 'failed'] as const;
export type SandboxState = (typeof STATES)[number];

const TRANSITIONS: Record<SandboxState, readonly SandboxState[]> = {
  creating: ['running', 'killing', 'failed'],
  running: ['killing', 'hibernating', 'failed'],
  // killing from a transitional state: only reachable once its operation failed and let go of the lock
  hibernating: ['paused', 'running', 'failed', 'killing'],
  paused: ['resuming', 'killing', 'failed'],
  resuming: ['running', 'paused', 'failed', 'killing'],
  killing: ['killed'],
  killed: [],
  failed: [],
};

export const TERMINAL_STATES: readonly SandboxState[] = ['killed', 'failed'];
/** States in which the sandbox has (or is getting) a VM using host memory. */
export const VM_STATES: readonly SandboxState[] = ['creating', 'running', 'hibernating', 'resuming'];
/** States a server must look at when it starts (a VM may run, or an operation was interrupted). */
export const RECOVERABLE_STATES: readonly SandboxState[] = ['creating', 'running', 'hibernating', 'resuming', 'killing'];

export function isTerminal(s: SandboxState): boolean {
  return TERMINAL_STATES.includes(s);
}

export function canTransition(from: SandboxState, to: SandboxState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(id: string, from: SandboxState, to: SandboxState): void {
  if (!canTransition(from, to)) {
    throw new NsError('invalid_transition', `sandbox ${id}: illegal lifecycle transition ${from} -> ${to}`, { details: { from, to } });
  }
}

/** What a lifecycle step reads of a sandbox record. */
export interface LifecycleRecord {
  id: string;
  state: SandboxState;
  timeoutMs: number;
  expiresAt: number | null;
  remainingMs: number | null;
  pausedAt: number | null;
}

/** The record's fields a step sets (a subset of the store's patch). */
export interface LifecyclePatch {
  startedAt?: number;
  expiresAt?: number | null;
  endedAt?: number;
  endReason?: string;
  errorCode?: string | null;
  pid?: null;
  diskParentLayer?: null;
  remainingMs?: number | null;
  pausedAt?: number | null;
}

/**
 * What happens around a step. Before it is persisted: `teardown` (the sandbox's VM, files, uid and
 * admission slot go: nothing is recorded as without a VM while one might still run). After it:
 * `dropHibernations` (an ended sandbox never resumes: its hibernation snapshots go), `dropMetrics`
 * (an ended sandbox's metrics samples go),
 * `pruneHibernations` (only the latest few are kept), `layersReleased` (the collector may free
 * layers nothing holds any more).
 */
export type Effect = 'teardown' | 'dropHibernations' | 'dropMetrics' | 'pruneHibernations' | 'layersReleased';

/**
 * The events users see (`GET /v1/events`, webhooks): what a step publishes, persisted with the move in
 * the same transaction (transition.ts). `created` when a sandbox runs for the first time; `timed_out`
 * when its timeout fires (followed by `killed` or `paused`); `snapshotted` and `forked` are operations
 * on a running sandbox, not moves, and publish without one.
 */
export const PUBLIC_EVENT_TYPES = ['created', 'paused', 'resumed', 'snapshotted', 'forked', 'killed', 'failed', 'timed_out'] as const;
export type PublicEventType = (typeof PUBLIC_EVENT_TYPES)[number];

export interface Publish {
  type: PublicEventType;
  data: Record<string, unknown>;
}

export type LifecycleEvent =
  /** creating -> running: the VM runs and its guest was initialized. */
  | { type: 'started'; at: number }
  /** creating -> failed. */
  | { type: 'createFailed'; at: number; code: string; message: string }
  /** running -> hibernating. */
  | { type: 'hibernate'; reason: string; byTimeout?: boolean | undefined }
  /** hibernating -> paused, its capture recorded; `remainingMs` from `remainingOnHibernate`. */
  | { type: 'hibernated'; at: number; reason: string; remainingMs: number }
  /** hibernating -> running: the capture failed, the VM runs on. */
  | { type: 'hibernateFailed'; message: string }
  /** paused -> resuming. */
  | { type: 'resume' }
  /** resuming -> running. */
  | { type: 'resumed'; at: number }
  /** resuming -> paused: the restore failed, the hibernation snapshot is intact. */
  | { type: 'resumeFailed'; message: string }
  /** any live state -> killing (a sandbox already killing stays so: an earlier kill failed half-way). */
  | { type: 'kill'; reason: string; byTimeout?: boolean | undefined }
  /** killing -> killed. */
  | { type: 'killed'; at: number; reason: string }
  /** any live state -> failed: its VM is gone (died, or was found gone). */
  | { type: 'vmExited'; at: number; reason: string }
  /**
   * At server start, for a record in a RECOVERABLE_STATE: whether its VM still runs, and (for
   * `hibernating`) whether the hibernation of this attempt was recorded.
   */
  | { type: 'recover'; at: number; vmAlive: boolean; hibernationRecorded: boolean }
  /** A reusable snapshot of the sandbox was recorded (no move: published only). */
  | { type: 'snapshotted'; snapshotId: string }
  /** Children were started from one capture of the sandbox (no move: published only). */
  | { type: 'forked'; children: string[]; snapshotId: string; pauseMs: number | null };

export type EventType = LifecycleEvent['type'];

export interface Step {
  from: SandboxState;
  to: SandboxState;
  reason: string;
  patch: LifecyclePatch;
  /** false: nothing is persisted (the record already is where the event leads). */
  persist: boolean;
  /** At server start: the VM runs on and is taken over (after the step, if any). */
  adopt: boolean;
  before: readonly Effect[];
  after: readonly Effect[];
  /** The event users see for this step (none: an internal move). */
  publish?: Publish | undefined;
}

/** Entering a terminal state: the VM and everything of it goes first, then its hibernations and layers. */
const END_BEFORE: readonly Effect[] = ['teardown'];
const END_AFTER: readonly Effect[] = ['dropHibernations', 'dropMetrics', 'layersReleased'];

function ended(at: number, reason: string, failure: { errorCode: string | null }): LifecyclePatch {
  return { endedAt: at, endReason: reason, errorCode: failure.errorCode, pid: null, diskParentLayer: null };
}

function failedEvent(reason: string, errorCode: string): Publish {
  return { type: 'failed', data: { reason, errorCode } };
}

function killedEvent(reason: string): Publish {
  return { type: 'killed', data: { reason } };
}

function timedOut(rec: LifecycleRecord, action: 'kill' | 'hibernate'): Publish {
  return { type: 'timed_out', data: { action, timeoutMs: rec.timeoutMs } };
}

function step(rec: LifecycleRecord, to: SandboxState, reason: string, more: Partial<Omit<Step, 'from' | 'to' | 'reason'>> = {}): Step {
  return { from: rec.state, to, reason, patch: {}, persist: true, adopt: false, before: [], after: [], ...more };
}

/** The timeout a hibernated sandbox resumes with: all of it when its timeout hibernated it, else what was left. */
export function remainingOnHibernate(rec: LifecycleRecord, byTimeout: boolean, at: number): number {
  return byTimeout ? rec.timeoutMs : Math.max(1000, (rec.expiresAt ?? at + rec.timeoutMs) - at);
}

/**
 * The step `event` makes from `rec`'s state. Throws `invalid_transition` for an event its state does
 * not allow (callers check the state first and answer with a clearer error; this is the backstop).
 */
export function next(rec: LifecycleRecord, event: LifecycleEvent): Step {
  const s = decide(rec, event);
  if (s.persist) assertTransition(rec.id, s.from, s.to);
  return s;
}

function decide(rec: LifecycleRecord, e: LifecycleEvent): Step {
  const invalid = () => new NsError('invalid_transition', `sandbox ${rec.id}: event ${e.type} is not allowed in state ${rec.state}`, { details: { state: rec.state, event: e.type } });
  switch (e.type) {
    case 'started':
      if (rec.state !== 'creating') throw invalid();
      return step(rec, 'running', 'started', { patch: { startedAt: e.at, expiresAt: e.at + rec.timeoutMs }, publish: { type: 'created', data: {} } });
    case 'createFailed':
      if (rec.state !== 'creating') throw invalid();
      return step(rec, 'failed', e.message, { patch: ended(e.at, e.message, { errorCode: e.code }), before: END_BEFORE, after: END_AFTER, publish: failedEvent(e.message, e.code) });
    case 'hibernate':
      if (rec.state !== 'running') throw invalid();
      return step(rec, 'hibernating', e.reason, { publish: e.byTimeout ? timedOut(rec, 'hibernate') : undefined });
    case 'hibernated':
      if (rec.state !== 'hibernating') throw invalid();
      return step(rec, 'paused', e.reason, {
        patch: { pid: null, expiresAt: null, remainingMs: e.remainingMs, pausedAt: e.at, diskParentLayer: null },
        before: ['teardown'],
        after: ['pruneHibernations', 'layersReleased'],
        publish: { type: 'paused', data: { reason: e.reason } },
      });
    case 'hibernateFailed':
      if (rec.state !== 'hibernating') throw invalid();
      return step(rec, 'running', `hibernation failed, still running: ${e.message}`);
    case 'resume':
      if (rec.state !== 'paused') throw invalid();
      return step(rec, 'resuming', 'resume requested');
    case 'resumed':
      if (rec.state !== 'resuming') throw invalid();
      return step(rec, 'running', 'resumed', { patch: { expiresAt: e.at + (rec.remainingMs ?? rec.timeoutMs), remainingMs: null, pausedAt: null }, publish: { type: 'resumed', data: {} } });
    case 'resumeFailed':
      if (rec.state !== 'resuming') throw invalid();
      return step(rec, 'paused', `resume failed: ${e.message}`, { patch: { pid: null, diskParentLayer: null }, before: ['teardown'] });
    case 'kill':
      if (isTerminal(rec.state)) throw invalid();
      // (already killing: an earlier kill failed half-way; this one finishes it)
      return step(rec, 'killing', e.reason, { persist: rec.state !== 'killing', after: ['dropHibernations'], publish: e.byTimeout && rec.state !== 'killing' ? timedOut(rec, 'kill') : undefined });
    case 'killed':
      if (rec.state !== 'killing') throw invalid();
      return step(rec, 'killed', e.reason, { patch: ended(e.at, e.reason, { errorCode: null }), before: END_BEFORE, after: END_AFTER, publish: killedEvent(e.reason) });
    case 'vmExited':
      if (isTerminal(rec.state) || rec.state === 'killing') throw invalid();
      return step(rec, 'failed', e.reason, { patch: ended(e.at, e.reason, { errorCode: 'vm_exited' }), before: END_BEFORE, after: END_AFTER, publish: failedEvent(e.reason, 'vm_exited') });
    case 'recover':
      return recover(rec, e);
    // operations, not moves: whatever the state is by now (the sandbox may have moved on since)
    case 'snapshotted':
      return step(rec, rec.state, '', { persist: false, publish: { type: 'snapshotted', data: { snapshotId: e.snapshotId } } });
    case 'forked':
      return step(rec, rec.state, '', { persist: false, publish: { type: 'forked', data: { children: e.children, snapshotId: e.snapshotId, pauseMs: e.pauseMs } } });
  }
}

/**
 * Where a sandbox found at server start goes. Transitional states never survive a restart: a
 * hibernation that was recorded ends paused, one that was not ends running (its VM lives on) or
 * failed; an interrupted resume goes back to paused (its snapshot is intact); creating fails and
 * killing finishes.
 */
function recover(rec: LifecycleRecord, e: Extract<LifecycleEvent, { type: 'recover' }>): Step {
  const paused = () =>
    step(rec, 'paused', `${rec.state} interrupted by a server restart; paused`, {
      patch: {
        pid: null,
        expiresAt: null,
        diskParentLayer: null,
        remainingMs: rec.remainingMs ?? Math.max(1000, (rec.expiresAt ?? e.at) - e.at),
        pausedAt: rec.pausedAt ?? e.at,
      },
      before: ['teardown'],
      publish: { type: 'paused', data: { reason: `${rec.state} interrupted by a server restart; paused` } },
    });
  const failed = () => {
    const reason = `its VM was gone after a server restart (was ${rec.state})`;
    return step(rec, 'failed', reason, { patch: ended(e.at, reason, { errorCode: 'vm_exited' }), before: END_BEFORE, after: END_AFTER, publish: failedEvent(reason, 'vm_exited') });
  };
  switch (rec.state) {
    case 'creating':
      return failed();
    case 'running':
      return e.vmAlive ? step(rec, 'running', '', { persist: false, adopt: true }) : failed();
    case 'hibernating':
      if (e.hibernationRecorded) return paused();
      // interrupted before its hibernation was recorded: it runs on (the take-over resumes the vCPUs)
      return e.vmAlive ? step(rec, 'running', 'hibernation interrupted by a server restart; still running', { adopt: true }) : failed();
    case 'resuming':
      return paused();
    case 'killing': {
      const reason = 'killed (finished after a server restart)';
      return step(rec, 'killed', reason, { patch: ended(e.at, reason, { errorCode: null }), before: END_BEFORE, after: END_AFTER, publish: killedEvent(reason) });
    }
    default:
      return step(rec, rec.state, '', { persist: false });
  }
}
