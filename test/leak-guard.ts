/**
 * Set-up file of every test file: a sandbox of the suite's server that a test left alive (not
 * killed, not failed) fails the file, naming the test that made it, and is killed so that it cannot
 * disturb the rest of the run.
 *
 * It watches the HTTP answers of the suite's server to what creates a sandbox (create, create from
 * a snapshot, fork) and charges each new sandbox to the test that was running (or, for a
 * `beforeAll`, to its file). Once the file is done (its describe blocks' afterAll hooks, which may
 * be where a test's sandboxes are killed, included), every sandbox charged to it must be ended.
 * Sandboxes of a test's own servers are not watched: those tests kill the QEMU processes of their
 * data dirs in their teardown (test/servers.ts `cleanupDataDir`). Processes the suite does not see
 * (the CLI, the Python SDK) are covered by the global teardown, which fails the run on any sandbox
 * left alive (test/global-setup.ts), and by the Python test's own server.
 */
import { afterAll, beforeEach, expect, inject } from 'vitest';

const CREATES = [/^\/v1\/sandboxes$/, /^\/v1\/sandboxes\/sbx_[0-9a-z]{16}\/fork$/];
const LIVE = new Set(['creating', 'running', 'hibernating', 'paused', 'resuming', 'killing']);

const apiUrl = inject('apiUrl');
const apiKey = inject('apiKey');
const origin = new URL(apiUrl).origin;
/** Sandbox id -> who made it (a test's full name, or the file for hooks outside tests). */
const made = new Map<string, string>();
let current: string | undefined;

const realFetch = globalThis.fetch;
globalThis.fetch = async function watchedFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const res = await realFetch(input, init);
  try {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    if (url.origin === origin && method === 'POST' && res.status === 201 && CREATES.some((re) => re.test(url.pathname))) {
      const body = (await res.clone().json()) as { sandboxId?: string };
      if (body.sandboxId) made.set(body.sandboxId, current ?? `${expect.getState().testPath ?? 'a test file'} (outside a test: beforeAll)`);
    }
  } catch {
    /* not ours to judge */
  }
  return res;
};

async function state(id: string): Promise<string | undefined> {
  const res = await realFetch(`${apiUrl}/v1/sandboxes/${id}`, { headers: { authorization: `Bearer ${apiKey}` } });
  if (res.status === 404) return undefined;
  return ((await res.json()) as { state?: string }).state;
}

/** Sandboxes charged to `owner` that are still alive (they stay charged). */
async function alive(owner: (by: string) => boolean): Promise<Array<{ id: string; by: string; state: string }>> {
  const out: Array<{ id: string; by: string; state: string }> = [];
  for (const [id, by] of [...made]) {
    if (!owner(by)) continue;
    const s = await state(id);
    if (s === undefined || !LIVE.has(s)) made.delete(id);
    else out.push({ id, by, state: s });
  }
  return out;
}

/** Fails (after killing them) when sandboxes charged to `owner` are still alive. */
async function check(owner: (by: string) => boolean): Promise<void> {
  const leaked = await alive(owner);
  for (const l of leaked) {
    made.delete(l.id);
    await realFetch(`${apiUrl}/v1/sandboxes/${l.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${apiKey}` } }).catch(() => {});
  }
  if (leaked.length) throw new Error(`leak: ${leaked.length} sandbox(es) left alive: ${leaked.map((l) => `${l.id} (${l.state}, made by "${l.by}")`).join('; ')}`);
}

beforeEach((ctx) => {
  const name = fullName(ctx.task);
  current = name;
  // registered before anything of the test's own: onTestFinished hooks run last-registered first,
  // so this runs after the test's cleanups (and after afterEach hooks, which run before them)
  ctx.onTestFinished(async () => {
    current = undefined;
    // (what is still alive may be killed by its describe block's afterAll: judged at the file's end)
    await alive((by) => by === name);
  });
});

afterAll(async () => {
  await check(() => true);
});

function fullName(task: { name: string; suite?: { name: string; suite?: unknown } | undefined }): string {
  const parts = [task.name];
  for (let s = task.suite; s?.name; s = s.suite as typeof s) parts.unshift(s.name);
  return parts.join(' > ');
}
