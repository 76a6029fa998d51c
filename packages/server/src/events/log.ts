import { eventBody, type EventFilter, type EventRecord, type EventStore } from '../store/events.js';

export type { EventFilter, EventRecord } from '../store/events.js';

/** How often old events are pruned. */
const PRUNE_EVERY_MS = 10 * 60_000;

/**
 * The public event log: what the lifecycle publishes (transition.ts appends inside its own
 * transaction), read back by `GET /v1/events` and the webhook worker. Readers are woken after each
 * append and read the log from their cursor: a reader never misses or repeats an event, however
 * events and wake-ups interleave.
 */
export class EventLog {
  private readonly listeners = new Set<() => void>();
  private wakeScheduled = false;
  private pruneTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: EventStore,
    private readonly retention: { maxAgeMs: number; maxEvents: number } = { maxAgeMs: 7 * 24 * 3600_000, maxEvents: 100_000 },
  ) {}

  /** Runs `fn` in one database transaction (a state move and its event). */
  transaction<T>(fn: () => Promise<T>): Promise<T> {
    return this.store.transaction(fn);
  }

  /** Appends an event (with its webhook outbox rows); readers are woken once the caller's transaction commits. */
  async append(e: Omit<EventRecord, 'id'>): Promise<EventRecord> {
    const rec = await this.store.append(e);
    if (!this.wakeScheduled) {
      this.wakeScheduled = true;
      this.store.afterCommit(() => {
        this.wakeScheduled = false;
        for (const l of [...this.listeners]) l();
      });
    }
    return rec;
  }

  after(cursor: number, filter: EventFilter, limit = 500): Promise<EventRecord[]> {
    return this.store.after(cursor, filter, limit);
  }

  /** An event as JSON (the SSE `data` and the webhook body). */
  body(e: EventRecord): string {
    return eventBody(e);
  }

  latestId(): Promise<number> {
    return this.store.latestId();
  }

  /** `fn` is called after appends (coalesced); returns the unsubscribe function. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start(): void {
    const prune = () => void this.prune().catch(() => {});
    prune();
    this.pruneTimer = setInterval(prune, PRUNE_EVERY_MS);
    this.pruneTimer.unref();
  }

  stop(): void {
    clearInterval(this.pruneTimer);
  }

  prune(): Promise<number> {
    return this.store.prune(Date.now() - this.retention.maxAgeMs, this.retention.maxEvents);
  }
}
