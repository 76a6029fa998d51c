import { expect, onTestFinished } from 'vitest';
import type { Sandbox } from 'nullspace';

/**
 * What tests of clones (snapshot restores, forks, N-way forks) share: a sampler that runs through the
 * clone instant, and the check that every clone is unique and current.
 */

/** Kills `s` when the test ends (children made by fork are not tracked by `sandbox()`). */
export function tracked<T extends Sandbox | Sandbox[]>(s: T): T {
  onTestFinished(async () => {
    await Promise.all((Array.isArray(s) ? s : [s]).map((x) => x.kill().catch(() => {})));
  });
  return s;
}

/** Samples the clock and the kernel RNG every 20 ms: "<epoch seconds> <8 random bytes, hex>" per line. */
const SAMPLER = [
  'import os, time',
  'f = open("/workspace/samples", "a", buffering=1)',
  'while True:',
  '    f.write("%.3f %s\\n" % (time.time(), os.urandom(8).hex()))',
  '    time.sleep(0.02)',
  '',
].join('\n');

/** Starts the sampler in `src` and waits until it has written. */
export async function startSampler(src: Sandbox): Promise<void> {
  await src.files.write('/workspace/sampler.py', SAMPLER);
  await src.commands.run('python3 /workspace/sampler.py', { background: true, timeoutMs: 0 });
  await src.commands.run('while [ ! -s /workspace/samples ]; do sleep 0.1; done', { timeoutMs: 60_000 });
}

/** Run after the clone, in new processes: /dev/urandom, Python's os.urandom and random module, a UUID, boot id, machine id, hostname, clock. */
const PROBE =
  'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; python3 -c "import os, random; print(os.urandom(16).hex()); print(random.getrandbits(128))"; ' +
  'cat /proc/sys/kernel/random/uuid /proc/sys/kernel/random/boot_id /etc/machine-id; hostname; date +%s.%N';

/**
 * Every clone is unique and current: `children` were cloned from `src` (whose sampler ran at the
 * clone instant) by requests sent at `clonedAt` (host ms) or later. Checks new processes (random
 * bytes from every source, UUID, boot id, machine id, hostname, clock) and the sampler that ran
 * through the clone: each child's samples file is the source's up to the clone instant, then its
 * own; what a child sampled after the clone differs from the other children's and the source's
 * and carries the current clock.
 */
export async function expectUniqueClones(src: Sandbox, children: Sandbox[], clonedAt: number): Promise<void> {
  const all = [...children, src];
  const probeStart = Date.now();
  const outs = await Promise.all(all.map((s) => s.commands.run(PROBE)));
  const probeEnd = Date.now();
  const rows = outs.map((o) => {
    const [dev, pyOs, pyRandom, uuid, boot, machine, host, clock] = o.stdout.trim().split('\n');
    return { dev, pyOs, pyRandom, uuid, boot, machine, host, clock: Number(clock) * 1000 };
  });
  for (const field of ['dev', 'pyOs', 'pyRandom', 'uuid', 'boot', 'machine'] as const) {
    const values = rows.map((r) => r[field]);
    expect(values.every((v) => v && v.length >= 16), `${field}: ${values.join(', ')}`).toBe(true);
    expect(new Set(values).size, `${field} differs in every clone and the source: ${values.join(', ')}`).toBe(all.length);
  }
  for (const r of rows) expect(r.machine).toMatch(/^[0-9a-f]{32}$/);
  expect(rows.map((r) => r.host)).toEqual(all.map((s) => s.sandboxId));
  // the guest clock read during the probe is the host's, within 1 s
  for (const r of rows.slice(0, children.length)) {
    expect(r.clock).toBeGreaterThan(probeStart - 1000);
    expect(r.clock).toBeLessThan(probeEnd + 1000);
  }

  // the sampler: a child's file is the source's up to the clone instant (the longest common
  // prefix), then its own samples
  const parse = (text: string) => text.split('\n').filter((l) => /^\d+\.\d+ [0-9a-f]{16}$/.test(l));
  const samplesOf = async (s: Sandbox, min: number) =>
    parse((await s.commands.run(`while [ "$(wc -l < /workspace/samples)" -lt ${min} ]; do sleep 0.05; done; cat /workspace/samples`, { timeoutMs: 60_000 })).stdout);
  const source = await samplesOf(src, 1);
  const firstAfter: string[] = [];
  for (const child of children) {
    let own = await samplesOf(child, 1);
    let shared = 0;
    while (shared < own.length && shared < source.length && own[shared] === source[shared]) shared++;
    expect(shared, 'samples from before the clone').toBeGreaterThan(0);
    // (wait until it sampled after the clone, and the source too)
    own = await samplesOf(child, shared + 1);
    const sourceNow = await samplesOf(src, shared + 1);
    const after = own.slice(shared).map((l) => ({ t: Number(l.split(' ')[0]) * 1000, r: l.split(' ')[1]! }));
    for (const x of after) {
      expect(x.t, `a sample after the clone shows the clock of ${new Date(x.t).toISOString()}, the clone was asked for at ${new Date(clonedAt).toISOString()}`).toBeGreaterThan(clonedAt - 1000);
      expect(x.t).toBeLessThan(Date.now() + 1000);
    }
    // what the child's sampler drew first after the clone is not what the source drew next
    expect(after[0]!.r).not.toBe(sourceNow[shared]!.split(' ')[1]);
    firstAfter.push(after[0]!.r);
  }
  expect(new Set(firstAfter).size, `first draws after the clone: ${firstAfter.join(', ')}`).toBe(children.length);
}

