import { NsError } from '@nullspace/runtime';

/**
 * The sandbox lifecycle, written down once. Every state change goes through `assertTransition`, and
 * is persisted (with an event row) before the server acts on it, so that a restarted server can tell
 * where each sandbox was and finish or undo what was interrupted (see `recoveryTarget`).
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
 * operation lock while they run.
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

/**
 * Where a sandbox found in `state` at server start must go, given whether its VM is still alive and
 * whether a hibernation snapshot of it is recorded. Transitional states never survive a restart:
 * a hibernation that was recorded ends paused, one that was not ends running (its VM lives on) or
 * failed; an interrupted resume goes back to paused (its snapshot is intact); creating fails and
 * killing finishes.
 */
export function recoveryTarget(state: SandboxState, vmAlive: boolean, hibernationRecorded: boolean): SandboxState | 'adopt' {
  switch (state) {
    case 'creating':
      return 'failed';
    case 'running':
      return vmAlive ? 'adopt' : 'failed';
    case 'hibernating':
      if (hibernationRecorded) return 'paused';
      return vmAlive ? 'adopt' : 'failed';
    case 'resuming':
      return 'paused';
    case 'killing':
      return 'killed';
    default:
      return state;
  }
}
