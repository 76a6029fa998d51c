import { describe, expect, it } from 'vitest';
import { canTransition, STATES } from '@nullspace/server';
import { next, RECOVERABLE_STATES, remainingOnHibernate, type Effect, type LifecycleEvent, type LifecycleRecord, type SandboxState, type Step } from '../src/sandbox/lifecycle.js';

describe('sandbox lifecycle state machine', () => {
  it('allows the documented paths', () => {
    for (const [from, to] of [
      ['creating', 'running'],
      ['creating', 'failed'],
      ['running', 'killing'],
      ['killing', 'killed'],
      ['running', 'failed'],
      ['running', 'hibernating'],
      ['hibernating', 'paused'],
      ['paused', 'resuming'],
      ['resuming', 'running'],
    ] as const) {
      expect(canTransition(from, to), `${from} -> ${to}`).toBe(true);
    }
  });
  it('rejects illegal transitions', () => {
    for (const [from, to] of [
      ['killed', 'running'],
      ['failed', 'running'],
      ['killing', 'running'],
      ['paused', 'running'],
      ['creating', 'paused'],
      ['running', 'creating'],
    ] as const) {
      expect(canTransition(from, to), `${from} -> ${to}`).toBe(false);
    }
  });
  it('has no way out of terminal states', () => {
    for (const to of STATES) {
      expect(canTransition('killed', to)).toBe(false);
      expect(canTransition('failed', to)).toBe(false);
    }
  });
});

const AT = 1_000_000;
const rec = (state: SandboxState, more: Partial<LifecycleRecord> = {}): LifecycleRecord => ({
  id: 'sbx_0000000000000000',
  state,
  timeoutMs: 60_000,
  expiresAt: AT + 30_000,
  remainingMs: null,
  pausedAt: null,
  ...more,
});

const EVENTS: Record<LifecycleEvent['type'], LifecycleEvent> = {
  started: { type: 'started', at: AT },
  createFailed: { type: 'createFailed', at: AT, code: 'vm_start_failed', message: 'creating: boom' },
  hibernate: { type: 'hibernate', reason: 'hibernated by request' },
  hibernated: { type: 'hibernated', at: AT, reason: 'hibernated by request', remainingMs: 30_000 },
  hibernateFailed: { type: 'hibernateFailed', message: 'disk full' },
  resume: { type: 'resume' },
  resumed: { type: 'resumed', at: AT },
  resumeFailed: { type: 'resumeFailed', message: 'restore failed' },
  kill: { type: 'kill', reason: 'killed by request' },
  killed: { type: 'killed', at: AT, reason: 'killed by request' },
  vmExited: { type: 'vmExited', at: AT, reason: 'the VM exited unexpectedly: qemu killed by SIGKILL' },
  recover: { type: 'recover', at: AT, vmAlive: true, hibernationRecorded: false },
  snapshotted: { type: 'snapshotted', snapshotId: 'snap_1' },
  forked: { type: 'forked', children: ['sbx_1', 'sbx_2'], snapshotId: 'snap_1', pauseMs: 12 },
};

/** Operations that publish an event without a move: allowed in any state. */
const PUBLISH_ONLY = new Set<LifecycleEvent['type']>(['snapshotted', 'forked']);

const ENDED = (reason: string, errorCode: string | null) => ({ endedAt: AT, endReason: reason, errorCode, pid: null, diskParentLayer: null });
const END: { before: Effect[]; after: Effect[] } = { before: ['teardown'], after: ['dropHibernations', 'dropMetrics', 'layersReleased'] };

/**
 * Every state x event pair: the step it makes (target, reason, patch, effects), or `null` when the
 * event is not allowed in that state. `recover` has its own matrix below.
 */
const TABLE: Record<SandboxState, Partial<Record<LifecycleEvent['type'], Partial<Step> | null>>> = {
  creating: {
    started: { to: 'running', reason: 'started', patch: { startedAt: AT, expiresAt: AT + 60_000 }, before: [], after: [] },
    createFailed: { to: 'failed', reason: 'creating: boom', patch: ENDED('creating: boom', 'vm_start_failed'), ...END },
    kill: { to: 'killing', persist: true, after: ['dropHibernations'] },
    vmExited: { to: 'failed', patch: ENDED('the VM exited unexpectedly: qemu killed by SIGKILL', 'vm_exited'), ...END },
  },
  running: {
    hibernate: { to: 'hibernating', reason: 'hibernated by request', patch: {}, before: [], after: [] },
    kill: { to: 'killing', persist: true, after: ['dropHibernations'] },
    vmExited: { to: 'failed', patch: ENDED('the VM exited unexpectedly: qemu killed by SIGKILL', 'vm_exited'), ...END },
  },
  hibernating: {
    hibernated: {
      to: 'paused',
      patch: { pid: null, expiresAt: null, remainingMs: 30_000, pausedAt: AT, diskParentLayer: null },
      before: ['teardown'],
      after: ['pruneHibernations', 'layersReleased'],
    },
    hibernateFailed: { to: 'running', reason: 'hibernation failed, still running: disk full', patch: {}, before: [], after: [] },
    kill: { to: 'killing', persist: true },
    // the one change from the code before the lifecycle was written down: its layers go to the collector
    vmExited: { to: 'failed', ...END },
  },
  paused: {
    resume: { to: 'resuming', reason: 'resume requested', patch: {} },
    kill: { to: 'killing', persist: true },
    vmExited: { to: 'failed', ...END },
  },
  resuming: {
    resumed: { to: 'running', reason: 'resumed', patch: { expiresAt: AT + 60_000, remainingMs: null, pausedAt: null } },
    resumeFailed: { to: 'paused', reason: 'resume failed: restore failed', patch: { pid: null, diskParentLayer: null }, before: ['teardown'], after: [] },
    kill: { to: 'killing', persist: true },
    vmExited: { to: 'failed', ...END },
  },
  // a kill that failed half-way is finished by the next one: no new transition, the effects again
  killing: { kill: { to: 'killing', persist: false, after: ['dropHibernations'] }, killed: { to: 'killed', patch: ENDED('killed by request', null), ...END } },
  killed: {},
  failed: {},
};

describe('next(record, event): every state x event', () => {
  for (const state of STATES) {
    for (const [type, event] of Object.entries(EVENTS)) {
      if (type === 'recover') continue;
      const expected = PUBLISH_ONLY.has(type as LifecycleEvent['type']) ? { to: state, persist: false, before: [], after: [] } : TABLE[state][type as LifecycleEvent['type']];
      it(`${state} + ${type} -> ${expected ? expected.to : 'refused'}`, () => {
        if (!expected) {
          expect(() => next(rec(state), event)).toThrow(expect.objectContaining({ code: 'invalid_transition' }));
          return;
        }
        const step = next(rec(state), event);
        expect(step).toMatchObject({ from: state, ...expected });
        if (step.persist) expect(canTransition(step.from, step.to)).toBe(true);
      });
    }
  }

  it('publishes the events users see, and only those', () => {
    const published = (state: SandboxState, e: LifecycleEvent) => next(rec(state), e).publish;
    expect(published('creating', EVENTS.started)).toEqual({ type: 'created', data: {} });
    expect(published('creating', EVENTS.createFailed)).toEqual({ type: 'failed', data: { reason: 'creating: boom', errorCode: 'vm_start_failed' } });
    expect(published('running', EVENTS.vmExited)).toMatchObject({ type: 'failed', data: { errorCode: 'vm_exited' } });
    expect(published('hibernating', EVENTS.hibernated)).toEqual({ type: 'paused', data: { reason: 'hibernated by request' } });
    expect(published('resuming', EVENTS.resumed)).toEqual({ type: 'resumed', data: {} });
    expect(published('killing', EVENTS.killed)).toEqual({ type: 'killed', data: { reason: 'killed by request' } });
    expect(published('running', EVENTS.snapshotted)).toEqual({ type: 'snapshotted', data: { snapshotId: 'snap_1' } });
    expect(published('running', EVENTS.forked)).toEqual({ type: 'forked', data: { children: ['sbx_1', 'sbx_2'], snapshotId: 'snap_1', pauseMs: 12 } });
    // a timeout: timed_out as it fires (then killed or paused), not for a kill or hibernation asked for
    expect(published('running', { type: 'kill', reason: 'timeout', byTimeout: true })).toEqual({ type: 'timed_out', data: { action: 'kill', timeoutMs: 60_000 } });
    expect(published('running', { type: 'hibernate', reason: 'timeout', byTimeout: true })).toEqual({ type: 'timed_out', data: { action: 'hibernate', timeoutMs: 60_000 } });
    expect(published('running', EVENTS.kill)).toBeUndefined();
    expect(published('running', EVENTS.hibernate)).toBeUndefined();
    // internal moves publish nothing
    for (const [state, e] of [['paused', EVENTS.resume], ['hibernating', EVENTS.hibernateFailed], ['resuming', EVENTS.resumeFailed]] as const) {
      expect(published(state, e), `${state} + ${e.type}`).toBeUndefined();
    }
    // at server start: what a sandbox became is published like any end or pause
    const recovered = (state: SandboxState, vmAlive: boolean, hibernationRecorded: boolean) => next(rec(state), { type: 'recover', at: AT, vmAlive, hibernationRecorded }).publish?.type;
    expect(recovered('creating', true, false)).toBe('failed');
    expect(recovered('running', true, false)).toBeUndefined();
    expect(recovered('hibernating', false, true)).toBe('paused');
    expect(recovered('killing', false, false)).toBe('killed');
  });

  it('a resumed sandbox gets back the timeout it had left (its whole timeout if none was recorded)', () => {
    expect(next(rec('resuming', { remainingMs: 12_345 }), EVENTS.resumed).patch.expiresAt).toBe(AT + 12_345);
    expect(remainingOnHibernate(rec('running'), false, AT)).toBe(30_000);
    expect(remainingOnHibernate(rec('running'), true, AT)).toBe(60_000);
    // at least a second, even when it hibernates the instant it expires
    expect(remainingOnHibernate(rec('running', { expiresAt: AT - 5 }), false, AT)).toBe(1000);
  });
});

describe('next(record, recover): where a sandbox found at server start goes', () => {
  const cases: Array<[SandboxState, boolean, boolean, SandboxState | 'adopt', boolean]> = [
    // state, VM alive, hibernation recorded -> target, persisted
    ['creating', true, false, 'failed', true],
    ['creating', false, false, 'failed', true],
    ['running', true, false, 'adopt', false],
    ['running', false, false, 'failed', true],
    ['hibernating', true, true, 'paused', true],
    ['hibernating', false, true, 'paused', true],
    ['hibernating', true, false, 'adopt', true],
    ['hibernating', false, false, 'failed', true],
    ['resuming', true, false, 'paused', true],
    ['resuming', false, false, 'paused', true],
    ['killing', true, false, 'killed', true],
    ['killing', false, false, 'killed', true],
  ];
  for (const [state, vmAlive, recorded, target, persisted] of cases) {
    it(`${state}, VM ${vmAlive ? 'alive' : 'gone'}${recorded ? ', hibernation recorded' : ''} -> ${target}`, () => {
      const step = next(rec(state, { remainingMs: null, pausedAt: null }), { type: 'recover', at: AT, vmAlive, hibernationRecorded: recorded });
      expect(step.persist).toBe(persisted);
      if (target === 'adopt') {
        expect(step).toMatchObject({ adopt: true, to: 'running', before: [] });
      } else {
        expect(step).toMatchObject({ adopt: false, to: target });
        expect(step.before).toEqual(['teardown']);
      }
      if (target === 'failed') expect(step.patch).toMatchObject({ errorCode: 'vm_exited', endedAt: AT, pid: null });
      if (target === 'paused') expect(step.patch).toMatchObject({ pid: null, expiresAt: null, remainingMs: 30_000, pausedAt: AT });
    });
  }
  it('covers every state a server looks at when it starts', () => {
    expect(new Set(cases.map((c) => c[0]))).toEqual(new Set(RECOVERABLE_STATES));
  });
});
