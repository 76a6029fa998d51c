import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { loadConfig, startServer, type RunningServer } from '@nullspace/server';
import { templateBuild } from '../packages/cli/dist/template.js';
import { leftoverQemu, TEST_ROOT } from './env.js';

declare module 'vitest' {
  export interface ProvidedContext {
    apiUrl: string;
    apiKey: string;
    dataDir: string;
  }
}

let server: RunningServer | undefined;
let dataDir = '';

/**
 * One real server for the suite (its own data dir and key), with the base template built (or taken
 * from the cache). Teardown kills what is left, stops the server, and fails the run if any QEMU
 * process of this data dir survived.
 */
export async function setup(project: TestProject): Promise<void> {
  fs.mkdirSync(TEST_ROOT, { recursive: true });
  dataDir = path.join(TEST_ROOT, `s-${randomBytes(3).toString('hex')}`);
  const apiKey = `test-${randomBytes(16).toString('hex')}`;
  const env = { ...process.env, NULLSPACE_API_KEY: apiKey, NULLSPACE_LOG_LEVEL: process.env.NULLSPACE_LOG_LEVEL ?? 'warn' };
  const config = loadConfig(env, { dataDir, port: 0 });
  await templateBuild(config, { recipe: 'base' }, (line) => process.stderr.write(line + '\n'));
  server = await startServer(config);
  project.provide('apiUrl', server.url);
  project.provide('apiKey', apiKey);
  project.provide('dataDir', dataDir);
}

/**
 * Fails the run when sandboxes of the suite's server are still alive at its end (a test that did not
 * kill what it made: test/leak-guard.ts names the test for those made through fetch; this catches
 * the rest, e.g. made by the CLI), after killing them; and when QEMU processes of its data dir
 * survived the server.
 */
export async function teardown(): Promise<void> {
  if (!server) return;
  const headers = { authorization: `Bearer ${server.apiKey}` };
  const res = await fetch(`${server.url}/v1/sandboxes?limit=1000&state=creating,running,hibernating,paused,resuming,killing`, { headers });
  const { sandboxes } = (await res.json()) as { sandboxes: Array<{ sandboxId: string; state: string; metadata: Record<string, string> }> };
  for (const s of sandboxes) await fetch(`${server.url}/v1/sandboxes/${s.sandboxId}`, { method: 'DELETE', headers });
  await server.close();
  const left = leftoverQemu(dataDir);
  for (const pid of left) process.kill(pid, 'SIGKILL');
  fs.rmSync(dataDir, { recursive: true, force: true });
  const problems: string[] = [];
  if (sandboxes.length) {
    problems.push(`tests left ${sandboxes.length} sandbox(es) alive: ${sandboxes.map((s) => `${s.sandboxId} (${s.state}, metadata ${JSON.stringify(s.metadata)})`).join('; ')}`);
  }
  if (left.length) problems.push(`QEMU processes survived the suite's server: ${left.join(', ')}`);
  if (problems.length) throw new Error(`leak: ${problems.join('; ')}`);
}
