import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient, buildAgent, Channel, Progress, type AgentOp, type OpRequest, type OpResult } from '@nullspace/runtime';
import { readSpec, type Field, type FieldType, type Shape } from '../../../scripts/agent-types.mjs';
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

/** spec/agent.json, parsed as for the generated types. */
const spec = readSpec(JSON.parse(fs.readFileSync(path.join(repo, 'spec/agent.json'), 'utf8')));

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Where `value` is not what the spec says: a field missing, not in the spec, or of another type. */
function mismatches(value: unknown, shape: Shape, where: string): string[] {
  return shape.kind === 'type' ? typeMismatches(value, shape.type, where) : fieldMismatches(value, shape.fields, where);
}

function fieldMismatches(value: unknown, fields: Array<{ name: string } & Field>, where: string): string[] {
  if (!isObject(value)) return [`${where}: ${JSON.stringify(value)} is not an object`];
  const out = Object.keys(value)
    .filter((k) => !fields.some((f) => f.name === k))
    .map((k) => `${where}.${k}: not in the spec`);
  for (const f of fields) {
    if (f.name in value) out.push(...typeMismatches(value[f.name], f.type, `${where}.${f.name}`));
    else if (!f.optional) out.push(`${where}.${f.name}: missing`);
  }
  return out;
}

function typeMismatches(v: unknown, t: FieldType, where: string): string[] {
  const not = (what: string) => [`${where}: ${JSON.stringify(v)} is not ${what}`];
  switch (t.kind) {
    case 'string':
    case 'number':
    case 'boolean':
      return typeof v === t.kind ? [] : not(`a ${t.kind}`);
    case 'null':
      return v === null ? [] : not('null');
    case 'literal':
      return v === t.value ? [] : not(JSON.stringify(t.value));
    case 'array':
      return Array.isArray(v) ? v.flatMap((x, i) => typeMismatches(x, t.of, `${where}[${i}]`)) : not('an array');
    case 'map':
      return isObject(v) ? Object.entries(v).flatMap(([k, x]) => typeMismatches(x, t.of, `${where}.${k}`)) : not('an object');
    case 'ref':
      return fieldMismatches(v, spec.types.find((x) => x.name === t.name)!.fields, `${where} (${t.name})`);
    case 'union':
      return t.of.some((o) => typeMismatches(v, o, where).length === 0) ? [] : not(t.of.map((o) => o.kind).join(' or '));
  }
}

/** Where an EVENT of `op` is not one of its events in the spec, with their fields. */
function eventMismatches(op: AgentOp, event: unknown): string[] {
  const { type, ...fields } = event as { type: string };
  const ev = spec.events.find((x) => x.name === type);
  if (!ev || !spec.ops.find((x) => x.name === op)!.events.includes(type)) return [`${op}: event ${type} not in the spec`];
  return fieldMismatches(fields, ev.fields, `${op} event ${type}`);
}

/** Runs `op` on the real agent (sending `input`), checking its events and its result against the spec. */
async function conforming<O extends AgentOp>(op: O, args: OpRequest<O>, input?: Buffer): Promise<OpResult<O>> {
  const found: string[] = [];
  const s = client.open(op, args, { onEvent: (e) => found.push(...eventMismatches(op, e)) });
  if (input) {
    await s.write(input);
    s.end();
  }
  const r = await s.result;
  found.push(...mismatches(r, spec.ops.find((x) => x.name === op)!.result, `${op} result`));
  expect(found).toEqual([]);
  return r;
}

afterAll(() => {
  client?.close();
  agentProc?.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('agent on the host, driven by the TypeScript client', () => {
  it('answers sys.info', async () => {
    const info = await client.call('sys.info');
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

  it('answers every op with the fields of spec/agent.json, no more, no fewer', async () => {
    const info = await conforming('sys.info', {});
    expect(info.protocol).toBe(1);
    const machineId = randomBytes(16).toString('hex');
    await conforming('sys.init', { timeMs: Date.now(), entropy: randomBytes(32).toString('base64'), hostname: 'conform', machineId, bootId: randomUUID(), envs: {} });
    expect((await conforming('sys.warmup', { cmd: 'exit 2' })).exitCode).toBe(2);
    const d = path.join(dir, 'conform');
    expect((await conforming('fs.mkdir', { path: d })).created).toBe(true);
    const f = path.join(d, 'f.txt');
    expect(await conforming('fs.write', { path: f }, Buffer.from('abc'))).toEqual({ path: f, size: 3 });
    await conforming('fs.write', { path: f, append: true }, Buffer.from('d'));
    fs.symlinkSync('f.txt', path.join(d, 'link'));
    expect((await conforming('fs.stat', { path: path.join(d, 'link') })).symlinkTarget).toBe('f.txt');
    expect((await conforming('fs.stat', { path: f })).size).toBe(4);
    expect((await conforming('fs.list', { path: dir, depth: 2 })).count).toBeGreaterThanOrEqual(3);
    expect((await conforming('fs.read', { path: f })).size).toBe(4);
    await conforming('fs.rename', { from: f, to: path.join(d, 'g.txt') });
    await conforming('fs.remove', { path: d, recursive: true });
    expect((await conforming('proc.start', { cmd: 'echo hi', cwd: dir })).exitCode).toBe(0);
    // a process left running (its stream cancelled once it started): null exit code and signal
    const found: string[] = [];
    const pid = await new Promise<number>((resolve) => {
      const bg = client.open('proc.start', { cmd: 'cat; sleep 60', cwd: dir, stdin: true, tag: 'conform' }, {
        onEvent: (e) => {
          found.push(...eventMismatches('proc.start', e));
          if (e.type === 'started') {
            bg.cancel('detached');
            resolve(e.pid);
          }
        },
      });
    });
    expect(found).toEqual([]);
    const running = (await conforming('proc.list', {})).processes.find((p) => p.pid === pid);
    expect(running).toMatchObject({ running: true, exitCode: null, signal: null, tag: 'conform' });
    await conforming('proc.stdin', { pid, data: Buffer.from('x').toString('base64'), close: true });
    await conforming('proc.signal', { pid, signal: 'SIGKILL' });
    expect(await conforming('proc.attach', { pid, replay: true })).toMatchObject({ running: false, exitCode: -1, signal: 'SIGKILL' });
  });

  it('maps errors to spec codes', async () => {
    await expect(client.call('fs.stat', { path: path.join(dir, 'missing') })).rejects.toMatchObject({ code: 'not_found' });
    await expect(client.call('fs.stat', { path: 'relative' })).rejects.toMatchObject({ code: 'invalid_path' });
  });

  it('survives the host reconnecting', async () => {
    client.close();
    client = await AgentClient.connect(sock, { timeoutMs: 10_000 });
    expect((await client.call('sys.info')).protocol).toBe(1);
  });
});
