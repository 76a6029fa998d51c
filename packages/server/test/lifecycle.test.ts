import { describe, expect, it } from 'vitest';
import { canTransition, STATES } from '@nullspace/server';

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
