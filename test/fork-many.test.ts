import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RateLimitError, Sandbox, type SandboxEvent } from 'nullspace';
import { expectUniqueClones, startSampler, tracked } from './clones.js';
import { api, conn, sandbox } from './helpers.js';
import { cleanupDataDir, ownServer, tempDataDir } from './servers.js';

/** The events of `sandboxId` in the server's log so far (replayed from the start, up to the live edge). */
async function eventsOf(c: { apiUrl: string; apiKey: string }, sandboxId: string, until: (e: SandboxEvent[]) => boolean): Promise<SandboxEvent[]> {
  const out: SandboxEvent[] = [];
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), 30_000);
  try {
    for await (const e of Sandbox.events({ ...c, sandboxId, lastEventId: 0, signal: stop.signal })) {
      out.push(e);
      if (until(out)) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return out;
}

describe('N-way fork', () => {
  it('fork({ count: 4 }) gives 4 children from one capture of the source, each unique and current', async () => {
    const src = await sandbox();
    await startSampler(src);
    await src.files.write('/workspace/data', 'payload');
    const forkedAt = Date.now();
    const children = tracked(await src.fork({ count: 4 }));
    expect(children).toHaveLength(4);
    expect(new Set(children.map((c) => c.sandboxId)).size).toBe(4);
    const infos = await Promise.all(children.map((c) => c.getInfo()));
    for (const info of infos) expect(info).toMatchObject({ state: 'running', forkedFrom: src.sandboxId, template: 'base' });
    // one capture: every child was restored from the same internal snapshot
    expect(new Set(infos.map((i) => i.snapshotId)).size, `snapshots the children came from: ${infos.map((i) => i.snapshotId).join(', ')}`).toBe(1);
    // ...and the source's log has one fork, naming all four
    const log = await eventsOf(conn(), src.sandboxId, (es) => es.some((e) => e.type === 'forked'));
    const forks = log.filter((e) => e.type === 'forked');
    expect(forks).toHaveLength(1);
    expect(forks[0]!.data).toMatchObject({ children: expect.arrayContaining(children.map((c) => c.sandboxId)) as unknown, snapshotId: infos[0]!.snapshotId });
    expect((forks[0]!.data.children as string[]).length).toBe(4);
    expect(await src.isRunning()).toBe(true);
    for (const child of children) expect(await child.files.read('/workspace/data')).toBe('payload');
    await expectUniqueClones(src, children, forkedAt);
  });

  it('a count the server cannot admit whole is refused before the source is paused, and nothing is left running', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_MAX_SANDBOXES: '3', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' });
    const c = { apiUrl: server.url, apiKey: server.key };
    const src = tracked(await Sandbox.create(c));
    const running = async () => {
      const ids: string[] = [];
      for await (const s of Sandbox.list({ ...c, query: { state: ['creating', 'running', 'hibernating', 'paused', 'resuming', 'killing'] } })) ids.push(s.sandboxId);
      return ids;
    };
    // a capture switches the source onto a new disk overlay: the set of its overlays tells whether it was paused
    const overlays = () => fs.readdirSync(path.join(dataDir, 'sandboxes', src.sandboxId)).filter((f) => /^disk-.*\.qcow2$/.test(f)).sort();
    const before = overlays();
    const err = await src.fork({ count: 3 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as RateLimitError).code).toBe('too_many_sandboxes');
    expect((err as Error).message).toMatch(/forking 3 children/);
    expect(await running()).toEqual([src.sandboxId]);
    // the source was not even paused: no fork capture, no child ever created
    expect(overlays()).toEqual(before);
    const log = await eventsOf(c, src.sandboxId, (es) => es.length >= 1);
    expect(log.map((e) => e.type)).toEqual(['created']);
    const res = await fetch(`${server.url}/v1/events?after=0`, { headers: { authorization: `Bearer ${server.key}` }, signal: AbortSignal.timeout(1500) }).then(
      async (r) => {
        let text = '';
        try {
          for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) text += Buffer.from(chunk).toString();
        } catch {
          /* (the timeout ends the stream) */
        }
        return text;
      },
    );
    expect(res.match(/^event: /gm)).toEqual(['event: ']);
    // what fits is made whole
    const two = tracked(await src.fork({ count: 2 }));
    expect(two).toHaveLength(2);
    expect(overlays()).not.toEqual(before);
    expect((await running()).sort()).toEqual([src.sandboxId, ...two.map((s) => s.sandboxId)].sort());
    await Promise.all([...two, src].map((s) => s.kill()));
  });

  it('count is 1 to 32; without count the answer is the one child as before', async () => {
    const src = await sandbox();
    for (const count of [0, 33, 1.5]) {
      const res = await api('POST', `/v1/sandboxes/${src.sandboxId}/fork`, { count });
      expect(res.status, `count ${count}`).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('validation_failed');
    }
    const one = await api('POST', `/v1/sandboxes/${src.sandboxId}/fork`, {});
    expect(one.status).toBe(201);
    const child = (await one.json()) as { sandboxId: string; forkedFrom: string };
    tracked(await Sandbox.connect(child.sandboxId, conn()));
    expect(child.forkedFrom).toBe(src.sandboxId);
    const list = await api('POST', `/v1/sandboxes/${src.sandboxId}/fork`, { count: 1 });
    expect(list.status).toBe(201);
    const body = (await list.json()) as { sandboxes: Array<{ sandboxId: string }>; pauseMs: number | null };
    tracked(await Sandbox.connect(body.sandboxes[0]!.sandboxId, conn()));
    expect(body.sandboxes).toHaveLength(1);
    expect(typeof body.pauseMs).toBe('number');
  });
});
