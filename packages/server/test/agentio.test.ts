import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient, FrameDecoder, FrameType, MAGIC, type Frame } from '@nullspace/runtime';
import { limit } from '../src/agentio.js';

/** An agent that does the handshake, records what the host sends, and never answers. */
let dir: string;
let server: net.Server;
let client: AgentClient;
const received: Frame[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-mute-agent-'));
  const sock = path.join(dir, 'agent.sock');
  server = net.createServer((conn) => {
    const decoder = new FrameDecoder(true);
    conn.on('data', (b: Buffer) => received.push(...decoder.push(b)));
    conn.write(MAGIC);
  });
  await new Promise<void>((r) => server.listen(sock, r));
  client = await AgentClient.connect(sock, { timeoutMs: 5000 });
});

afterAll(() => {
  client?.close();
  server?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const cancelled = async (id: number) => {
  for (let i = 0; i < 100 && !received.some((f) => f.stream === id && f.type === FrameType.CANCEL); i++) await new Promise((r) => setTimeout(r, 10));
  return received.some((f) => f.stream === id && f.type === FrameType.CANCEL);
};

describe('agent requests end with their reason', () => {
  it('a request the agent does not answer in time is cancelled in the guest and fails', async () => {
    const stream = client.open('fs.list', { path: '/', depth: 32 });
    limit(stream, { deadlineMs: 50 });
    await expect(stream.result).rejects.toMatchObject({ code: 'cancelled', message: expect.stringMatching(/did not answer within/) });
    expect(await cancelled(stream.id)).toBe(true);
  });

  it('a request whose client left is cancelled in the guest', async () => {
    const gone = new AbortController();
    const stream = client.open('proc.start', { cmd: 'sleep 1' });
    limit(stream, { signal: gone.signal, deadlineMs: 60_000 });
    gone.abort();
    await expect(stream.result).rejects.toMatchObject({ code: 'cancelled', message: expect.stringMatching(/client went away/) });
    expect(await cancelled(stream.id)).toBe(true);
  });

  it('the deadline stops at `until`: a command that started is no longer bound by it', async () => {
    let started!: () => void;
    const until = new Promise<void>((r) => (started = r));
    const stream = client.open('proc.start', { cmd: 'sleep 1' });
    limit(stream, { deadlineMs: 50, until });
    started();
    await new Promise((r) => setTimeout(r, 150));
    expect(stream.done).toBe(false);
    stream.cancel();
  });
});
