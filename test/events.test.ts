import { describe, expect, it } from 'vitest';
import { Sandbox, type SandboxEvent, type SandboxEventType } from 'nullspace';
import { tracked } from './clones.js';
import { api, conn, sandbox } from './helpers.js';

/** Reads `Sandbox.events(opts)` until `done` says so (30 s at most); the events read. */
async function collect(opts: Parameters<typeof Sandbox.events>[0], done: (es: SandboxEvent[]) => boolean): Promise<SandboxEvent[]> {
  const out: SandboxEvent[] = [];
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), 30_000);
  try {
    for await (const e of Sandbox.events({ ...conn(), ...opts, signal: stop.signal })) {
      out.push(e);
      if (done(out)) return out;
    }
  } finally {
    clearTimeout(timer);
  }
  throw new Error(`the event stream ended before the expected events: ${JSON.stringify(out.map((e) => [e.id, e.type, e.sandboxId]))}`);
}

const seen = (ids: string[], want: Array<[string, SandboxEventType]>) => (es: SandboxEvent[]) =>
  want.every(([id, type]) => es.some((e) => e.sandboxId === id && e.type === type)) && ids.length > 0;

describe('lifecycle events (GET /v1/events, SSE)', () => {
  it('are replayed from an event id with none lost or repeated, then followed live; filtered by sandbox and type', async () => {
    const a = await sandbox();
    const created = await collect({ sandboxId: a.sandboxId, lastEventId: 0 }, (es) => es.some((e) => e.type === 'created'));
    const start = created.find((e) => e.type === 'created')!;
    expect(start).toMatchObject({ sandboxId: a.sandboxId, data: { template: 'base', forkedFrom: null } });
    expect(start.at.getTime()).toBeLessThanOrEqual(Date.now());

    // a live stream (no id) opened before the changes sees them as they happen
    const liveStop = new AbortController();
    const live: SandboxEvent[] = [];
    const liveDone = (async () => {
      for await (const e of Sandbox.events({ ...conn(), sandboxId: a.sandboxId, signal: liveStop.signal })) live.push(e);
    })();
    // (the stream is open once its first comment arrived: give it a moment before acting)
    await new Promise((r) => setTimeout(r, 500));

    const snap = await a.createSnapshot();
    const b = await sandbox();
    const child = tracked(await a.fork());
    await b.kill();
    await child.kill();
    await snap.delete();
    const ours = new Set([a.sandboxId, b.sandboxId, child.sandboxId]);
    const want: Array<[string, SandboxEventType]> = [
      [a.sandboxId, 'snapshotted'],
      [b.sandboxId, 'created'],
      [child.sandboxId, 'created'],
      [a.sandboxId, 'forked'],
      [b.sandboxId, 'killed'],
      [child.sandboxId, 'killed'],
    ];

    // everything after the created event, every sandbox (other tests' events interleave)
    const all = await collect({ lastEventId: start.id }, seen([a.sandboxId], want));
    const ids = all.map((e) => e.id);
    for (let i = 1; i < ids.length; i++) expect(ids[i]!, `ids in order, each once: ${ids.join(',')}`).toBeGreaterThan(ids[i - 1]!);
    expect(ids[0]!).toBeGreaterThan(start.id);
    const mine = all.filter((e) => ours.has(e.sandboxId)).map((e) => [e.sandboxId, e.type]);
    expect(mine).toEqual(want);
    expect(all.find((e) => e.type === 'snapshotted')?.data).toMatchObject({ snapshotId: snap.id });
    expect(all.find((e) => e.type === 'forked' && e.sandboxId === a.sandboxId)?.data).toMatchObject({ children: [child.sandboxId] });
    expect(all.find((e) => e.type === 'created' && e.sandboxId === child.sandboxId)?.data).toMatchObject({ forkedFrom: a.sandboxId });

    // resumed from the middle: exactly the rest, none lost, none repeated
    const middle = all[Math.floor(all.length / 2)]!;
    const last = all[all.length - 1]!;
    const rest = await collect({ lastEventId: middle.id }, (es) => es.some((e) => e.id >= last.id));
    expect(rest.filter((e) => e.id <= last.id).map((e) => e.id)).toEqual(ids.filter((id) => id > middle.id));
    // the same through the Last-Event-ID header of a raw request
    const raw = await fetch(`${conn().apiUrl}/v1/events`, { headers: { authorization: `Bearer ${conn().apiKey}`, 'last-event-id': String(middle.id) }, signal: AbortSignal.timeout(3000) });
    expect(raw.headers.get('content-type')).toMatch(/^text\/event-stream/);
    let text = '';
    try {
      for await (const chunk of raw.body as unknown as AsyncIterable<Uint8Array>) {
        text += Buffer.from(chunk).toString();
        if (text.includes(`id: ${last.id}\n`)) break;
      }
    } catch {
      /* (timed out: checked below) */
    }
    const rawIds = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1])).filter((id) => id <= last.id);
    expect(rawIds).toEqual(ids.filter((id) => id > middle.id));
    expect(text).toMatch(new RegExp(`^id: ${last.id}\\nevent: ${last.type}\\ndata: \\{"id":${last.id},"type":"${last.type}"`, 'm'));

    // filtered by sandbox: a's only
    const ofA = await collect({ sandboxId: a.sandboxId, lastEventId: start.id - 1 }, (es) => es.some((e) => e.type === 'forked'));
    expect(ofA.map((e) => e.type)).toEqual(['created', 'snapshotted', 'forked']);
    // filtered by type: the kills only
    const kills = await collect({ types: ['killed'], lastEventId: start.id }, (es) => es.some((e) => e.sandboxId === child.sandboxId));
    expect(kills.every((e) => e.type === 'killed')).toBe(true);
    expect(kills.filter((e) => ours.has(e.sandboxId)).map((e) => e.sandboxId)).toEqual([b.sandboxId, child.sandboxId]);
    // two types
    const two = await collect({ types: ['created', 'forked'], lastEventId: start.id }, (es) => es.some((e) => e.type === 'forked' && e.sandboxId === a.sandboxId));
    expect(two.filter((e) => ours.has(e.sandboxId)).map((e) => e.type)).toEqual(['created', 'created', 'forked']);

    // the live stream got a's events as they happened
    await a.kill();
    await expect.poll(() => live.map((e) => e.type), { timeout: 10_000 }).toEqual(['snapshotted', 'forked', 'killed']);
    liveStop.abort();
    await liveDone;
  });

  it('a timeout publishes timed_out, then killed', async () => {
    const s = await sandbox({ timeoutMs: 3000 });
    const es = await collect({ sandboxId: s.sandboxId, lastEventId: 0 }, (x) => x.some((e) => e.type === 'killed'));
    expect(es.map((e) => e.type)).toEqual(['created', 'timed_out', 'killed']);
    expect(es[1]!.data).toMatchObject({ action: 'kill', timeoutMs: 3000 });
  });

  it('hibernate and resume publish paused and resumed', async () => {
    const s = await sandbox();
    await s.hibernate();
    await Sandbox.connect(s.sandboxId, conn());
    const es = await collect({ sandboxId: s.sandboxId, lastEventId: 0 }, (x) => x.some((e) => e.type === 'resumed'));
    expect(es.map((e) => e.type)).toEqual(['created', 'paused', 'resumed']);
  });

  it('refuses unknown types and a malformed Last-Event-ID', async () => {
    const r1 = await api('GET', '/v1/events?type=created,nope');
    expect(r1.status).toBe(400);
    expect(((await r1.json()) as { error: { code: string } }).error.code).toBe('bad_request');
    const r2 = await api('GET', '/v1/events', undefined, { 'last-event-id': 'abc' });
    expect(r2.status).toBe(400);
    const r3 = await fetch(`${conn().apiUrl}/v1/events`);
    expect(r3.status).toBe(401);
  });
});
