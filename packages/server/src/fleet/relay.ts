import type { EventLog } from '../events/log.js';
import type { Logger } from '../log.js';
import type { HostRecord, HostStore } from '../store/hosts.js';
import type { PlacementStore } from '../store/placements.js';

/** How long a relay waits before it opens a host's stream again (after an end or an error). */
const RETRY_MS = 1000;

/**
 * Relays each joined host's lifecycle events into the control plane's own event log (so that
 * `GET /v1/events`, webhooks and the console see the fleet's sandboxes): one Server-Sent Events
 * stream per ready host, read from the host's last relayed event on. Each event is appended with its
 * `hostId` in the same transaction that advances the host's cursor by a conditional update: of
 * several control planes on one database exactly one relays it, and after a restart the relay goes
 * on where it stopped.
 */
export class EventRelay {
  private readonly streams = new Map<string, AbortController>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly hosts: HostStore,
    private readonly placements: PlacementStore,
    private readonly events: EventLog,
    private readonly log: Logger,
    private readonly everyMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sweep().catch(() => {}), this.everyMs);
    this.timer.unref();
    void this.sweep().catch(() => {});
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    for (const c of this.streams.values()) c.abort();
    this.streams.clear();
  }

  /** Opens a stream for each ready host that has none. */
  private async sweep(): Promise<void> {
    for (const rec of await this.hosts.list()) {
      if (rec.lostAt !== null || this.streams.has(rec.id) || this.stopped) continue;
      const abort = new AbortController();
      this.streams.set(rec.id, abort);
      void this.follow(rec, abort.signal)
        .catch((err: unknown) => {
          if (!abort.signal.aborted) this.log.debug({ hostId: rec.id, err: (err as Error).message }, 'event relay: stream ended');
        })
        .finally(() => setTimeout(() => this.streams.get(rec.id) === abort && this.streams.delete(rec.id), RETRY_MS).unref());
    }
  }

  /** Keeps the placement's record of a sandbox in step with what its host reports (shown while the host is lost). */
  private async track(hostId: string, e: { type: string; sandboxId: string; at: string }): Promise<void> {
    const p = (await this.placements.of('sandbox', e.sandboxId)).find((x) => x.hostId === hostId);
    if (!p) return;
    // (timed_out is followed by killed or paused)
    if (e.type === 'killed' || e.type === 'failed') {
      await this.placements.put('sandbox', p.id, hostId, { ...p.view, state: e.type === 'failed' ? 'failed' : 'killed', endedAt: e.at, expiresAt: null });
      await this.placements.end('sandbox', p.id, Date.parse(e.at));
    } else if (e.type === 'paused' || e.type === 'resumed') {
      await this.placements.put('sandbox', p.id, hostId, { ...p.view, state: e.type === 'paused' ? 'paused' : 'running' });
    }
  }

  private async follow(rec: HostRecord, signal: AbortSignal): Promise<void> {
    let cursor = await this.hosts.eventsCursor(rec.id);
    const res = await fetch(new URL(`/v1/events?after=${cursor}`, rec.url), { headers: { authorization: `Bearer ${rec.controlCredential}`, accept: 'text/event-stream' }, signal });
    if (res.status !== 200 || !res.body) throw new Error(`host answered ${res.status}`);
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
        if (!data) continue;
        const e = JSON.parse(data) as { id: number; type: string; sandboxId: string; at: string; data: Record<string, unknown> };
        if (e.id <= cursor) continue;
        const from = cursor;
        await this.events.transaction(async () => {
          if (await this.hosts.advanceEventsCursor(rec.id, from, e.id)) {
            await this.events.append({ type: e.type, sandboxId: e.sandboxId, at: Date.parse(e.at), data: { ...e.data, hostId: rec.id } });
            await this.track(rec.id, e);
          }
        });
        cursor = e.id;
      }
    }
  }
}
