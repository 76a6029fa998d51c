import { randomBytes } from 'node:crypto';
import { Sandbox, type SandboxOpts } from 'e2b';
import { apiKey, apiUrl } from './helpers.js';

/** Kills a sandbox through the native API (what a failing E2B test left). */
export async function nativeKill(id: string): Promise<void> {
  await fetch(`${apiUrl()}/v1/sandboxes/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${apiKey()}` } }).catch(() => {});
}

/**
 * A test file's sandboxes made through E2B's SDK: tagged with the file's run (`e2bRun` in their
 * metadata, so that lists can be filtered to them), remembered in `made` for the file's afterAll.
 */
export function e2bRun() {
  const RUN = randomBytes(4).toString('hex');
  const META = { suite: 'nullspace-tests', e2bRun: RUN };
  const made: string[] = [];
  const create = async (opts: SandboxOpts = {}): Promise<Sandbox> => {
    const sbx = await Sandbox.create({ ...opts, metadata: { ...META, ...opts.metadata } });
    made.push(sbx.sandboxId);
    return sbx;
  };
  return { RUN, META, made, create };
}

/** Waits (up to 30 s) until `cond` holds; else fails, showing `what`. */
export async function until(cond: () => boolean, what: () => unknown = () => ''): Promise<void> {
  for (let i = 0; i < 600 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!cond()) throw new Error(`timed out; seen: ${JSON.stringify(what())}`);
}
