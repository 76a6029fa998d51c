import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient, buildAgent, Channel, Progress } from '@nullspace/runtime';
import { CACHE_DIR } from '../../../test/env.js';

/**
 * The real agent binary, run on the host (no VM) with --listen, driven by the real TypeScript
 * client: both ends of spec/agent.json in one test.
 */
const repo = path.resolve(__dirname, '../../..');
let dir: string;
let agentProc: ChildProcess;
let sock: string;
let client: AgentClient;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-agent-'));
  const { binary } = await buildAgent(path.join(repo, 'agent'), CACHE_DIR, new Progress('agent', () => {}));
  sock = path.join(dir, 'agent.sock');
  agentProc = spawn(binary, ['serve', '--listen', `unix:${sock}`], {
    env: { ...process.env, NULLSPACE_AGENT_TEST_ROOT: path.join(dir, 'root') },
    stdio: 'ignore',
  });
  client = await AgentClient.connect(sock, { timeoutMs: 10_000 });
});

afterAll(() => {
  client?.close();
  agentProc?.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('agent on the host, driven by the TypeScript client', () => {
  it('answers sys.info', async () => {
    const info = await client.call<{ protocol: number; version: string }>('sys.info');
    expect(info.protocol).toBe(1);
    expect(info.version).toMatch(/\S/);
  });

  it('streams a 6 MiB file both ways through flow control', async () => {
    const data = randomBytes(6 * 1024 * 1024);
    const file = path.join(dir, 'big.bin');
    const w = client.open('fs.write', { path: file });
    for (let i = 0; i < data.length; i += 100_000) await w.write(data.subarray(i, i + 100_000));
    w.end();
    expect((await w.result).size).toBe(data.length);
    const h = createHash('sha256');
    let received = 0;
    const r = client.open('fs.read', { path: file }, {
      onData: async (_c, chunk) => {
        received += chunk.length;
        h.update(chunk);
        // a slow consumer: the agent must wait for credit, not flood us
        if (received % (1024 * 1024) < chunk.length) await new Promise((res) => setTimeout(res, 20));
      },
    });
    expect((await r.result).size).toBe(data.length);
    expect(h.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('streams process output while the process runs, then its exit', async () => {
    const seen: Array<[number, string, number]> = [];
    const t0 = Date.now();
    const s = client.open('proc.start', { cmd: 'echo one; sleep 0.4; echo two >&2; exit 5', cwd: dir }, {
      onData: (channel, chunk) => {
        seen.push([channel, chunk.toString(), Date.now() - t0]);
      },
    });
    const r = await s.result;
    expect(r.exitCode).toBe(5);
    expect(seen.map(([c, d]) => [c, d])).toEqual([
      [Channel.STDOUT, 'one\n'],
      [Channel.STDERR, 'two\n'],
    ]);
    expect(seen[1]![2] - seen[0]![2]).toBeGreaterThanOrEqual(300);
  });

  it('maps errors to spec codes', async () => {
    await expect(client.call('fs.stat', { path: path.join(dir, 'missing') })).rejects.toMatchObject({ code: 'not_found' });
    await expect(client.call('fs.stat', { path: 'relative' })).rejects.toMatchObject({ code: 'invalid_path' });
  });

  it('survives the host reconnecting', async () => {
    client.close();
    client = await AgentClient.connect(sock, { timeoutMs: 10_000 });
    expect((await client.call<{ protocol: number }>('sys.info')).protocol).toBe(1);
  });
});
