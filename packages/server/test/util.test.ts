import { describe, expect, it } from 'vitest';
import { KeyedGate } from '../src/util.js';

const tick = () => new Promise((r) => setImmediate(r));

describe('KeyedGate', () => {
  it('lets operations in while open, and a close waits until those inside have left', async () => {
    const gate = new KeyedGate();
    const leaveA = await gate.enter('s');
    const leaveB = await gate.enter('s');
    let drained: boolean | undefined;
    const closing = gate.close('s', 10_000).then((d) => (drained = d));
    await tick();
    expect(drained).toBeUndefined();
    leaveA();
    leaveA(); // counted out once
    await tick();
    expect(drained).toBeUndefined();
    leaveB();
    await closing;
    expect(drained).toBe(true);
    gate.open('s');
  });

  it('holds new operations while closed and lets them in on open; other keys are not held', async () => {
    const gate = new KeyedGate();
    expect(await gate.close('s', 1000)).toBe(true);
    let entered = false;
    const entering = gate.enter('s').then((leave) => {
      entered = true;
      return leave;
    });
    const other = await gate.enter('t');
    await tick();
    expect(entered).toBe(false);
    gate.open('s');
    const leave = await entering;
    expect(entered).toBe(true);
    // the entered operation now holds the next close back
    let drained: boolean | undefined;
    const closing = gate.close('s', 10_000).then((d) => (drained = d));
    await tick();
    expect(drained).toBeUndefined();
    leave();
    expect(await closing).toBe(true);
    gate.open('s');
    other();
  });

  it('gives up waiting after drainMs (false) and refuses a second close', async () => {
    const gate = new KeyedGate();
    const leave = await gate.enter('s');
    expect(await gate.close('s', 20)).toBe(false);
    await expect(gate.close('s', 20)).rejects.toThrow(/already closed/);
    leave();
    gate.open('s');
    expect(await gate.close('s', 20)).toBe(true);
    gate.open('s');
  });
});

describe('KeyedMutex.idle', () => {
  it('resolves once every key is free, or at the deadline', async () => {
    const { KeyedMutex } = await import('../src/util.js');
    const locks = new KeyedMutex();
    let release = () => {};
    const held = locks.run('a', () => new Promise<void>((r) => (release = r)));
    void locks.run('b', async () => {});
    const t0 = Date.now();
    await locks.idle(50); // 'a' still held: the deadline
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    expect(locks.busy('a')).toBe(true);
    let idle = false;
    const waiting = locks.idle(10_000).then(() => (idle = true));
    await tick();
    expect(idle).toBe(false);
    release();
    await held;
    await waiting;
    expect(idle).toBe(true);
    expect(locks.busy('a')).toBe(false);
  });
});
