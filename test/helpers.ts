import { inject, onTestFinished } from 'vitest';
import { Sandbox, Snapshot, type SandboxOpts } from 'nullspace';

export const apiUrl = () => inject('apiUrl');
export const apiKey = () => inject('apiKey');
export const conn = () => ({ apiUrl: apiUrl(), apiKey: apiKey() });

/** Raw API call with the suite's key. */
export async function api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(apiUrl() + path, {
    method,
    headers: { authorization: `Bearer ${apiKey()}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Creates a sandbox that is killed when the current test ends, pass or fail. */
export async function sandbox(opts: SandboxOpts = {}): Promise<Sandbox> {
  const sbx = await Sandbox.create({ ...conn(), metadata: { suite: 'nullspace-tests', ...opts.metadata }, ...opts });
  onTestFinished(async () => {
    await sbx.kill().catch(() => {});
  });
  return sbx;
}

/** Kills sandboxes created in a beforeAll (for afterAll). */
export async function killAll(...sbxs: Array<Sandbox | undefined>): Promise<void> {
  await Promise.all(sbxs.map((s) => s?.kill().catch(() => {})));
}

/**
 * Runs `step(i)` over and over (at least 3 times) while `count` snapshots of `sbx` are taken one
 * after the other; resolves with how many steps ran and the failures ("code: message"). The
 * snapshots are deleted when the test ends.
 */
export async function duringSnapshots(sbx: Sandbox, count: number, step: (i: number) => Promise<void>): Promise<{ ran: number; failed: string[] }> {
  let capturing = true;
  let ran = 0;
  const failed: string[] = [];
  const loop = (async () => {
    for (let i = 0; capturing || i < 3; i++, ran++) {
      try {
        await step(i);
      } catch (err) {
        failed.push(`${(err as { code?: string }).code ?? ''}: ${(err as Error).message}`);
      }
    }
  })();
  const snaps: Snapshot[] = [];
  onTestFinished(async () => {
    for (const snap of snaps) await snap.delete().catch(() => {});
  });
  try {
    for (let i = 0; i < count; i++) snaps.push(await sbx.createSnapshot());
  } finally {
    capturing = false;
    await loop;
  }
  return { ran, failed };
}

/** The Debian archive: what tests that need a guest on the internet reach (NULLSPACE_DEBIAN_MIRROR, as the image build). */
export const ARCHIVE = (process.env.NULLSPACE_DEBIAN_MIRROR || 'http://deb.debian.org/debian').replace(/\/$/, '');

/**
 * Passes when the guest reaches the Debian archive over HTTP. Tests that need the internet use it,
 * so that a host without it fails them clearly: when the guest cannot reach the archive, it says
 * whether this host can (then the guest's network is at fault) or cannot either (then the test
 * cannot run here).
 */
export async function expectGuestReachesArchive(sbx: Sandbox): Promise<void> {
  const r = await sbx.commands.run(`curl -s -m 10 -o /dev/null -w '%{http_code}' ${ARCHIVE}/ || true`, { timeoutMs: 60_000 });
  if (/^[23]\d\d$/.test(r.stdout)) return;
  const host = await fetch(`${ARCHIVE}/`, { signal: AbortSignal.timeout(10_000) }).then(
    (res) => res.status,
    (err: Error) => `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}`,
  );
  if (typeof host !== 'number' || host >= 400) {
    throw new Error(`this test needs the internet: a guest must reach the Debian archive (${ARCHIVE}), and this host cannot reach it either (${host})`);
  }
  throw new Error(`the guest cannot reach the Debian archive (${ARCHIVE}: curl answered "${r.stdout}"), which this host reaches (HTTP ${host})`);
}
