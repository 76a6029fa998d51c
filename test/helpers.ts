import { inject, onTestFinished } from 'vitest';
import { Sandbox, type SandboxOpts } from 'nullspace';

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
