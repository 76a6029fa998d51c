import { createHmac, randomBytes } from 'node:crypto';
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { errorMessage, NsError } from '@nullspace/runtime';
import type { Config } from '../config.js';
import { notFound } from '../errors.js';
import type { Logger } from '../log.js';
import type { DeliveryRecord, WebhookRecord, WebhookStore } from '../store/webhooks.js';
import { newId } from '../util.js';
import type { EventLog } from './log.js';

export type { DeliveryRecord, WebhookRecord } from '../store/webhooks.js';

/** The longest a retry waits. */
const MAX_RETRY_DELAY_MS = 10 * 60_000;
/** Finished deliveries kept per webhook (the delivery log). */
const KEEP_DELIVERIES = 1000;
/** At most this many webhooks. */
export const MAX_WEBHOOKS = 100;
/** A receiver's answer is read up to this much (and dropped). */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** Addresses a webhook may not reach unless the operator allows it (NULLSPACE_WEBHOOK_ALLOW_PRIVATE). */
const PRIVATE = new net.BlockList();
for (const [a, p] of [['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12], ['192.168.0.0', 16], ['224.0.0.0', 4], ['240.0.0.0', 4]] as const) {
  PRIVATE.addSubnet(a, p, 'ipv4');
}
for (const [a, p] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8]] as const) PRIVATE.addSubnet(a, p, 'ipv6');

export function isPrivateAddress(addr: string): boolean {
  const v = net.isIP(addr);
  if (v === 0) return false;
  // an IPv4-mapped IPv6 address is its IPv4 address
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  if (mapped) return PRIVATE.check(mapped[1]!, 'ipv4');
  return PRIVATE.check(addr, v === 4 ? 'ipv4' : 'ipv6');
}

/**
 * The signature header of a delivery: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the
 * webhook's secret>` (docs/api.md says how a receiver checks it).
 */
export function signature(secret: string, body: string, t: number): string {
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')}`;
}

/**
 * Webhooks: subscriptions, and the worker that delivers the outbox (rows written with each event,
 * store/events.ts). Deliveries of one webhook go out one at a time in event order, each attempt
 * limited in time; a failure is retried with exponential backoff up to `maxAttempts`, then marked
 * failed and the next one goes. Webhooks are independent: a slow or down receiver holds up only its
 * own deliveries, never the API or other webhooks. The outbox is in the database: deliveries
 * pending when the server stops are sent by the next start (at least once: an attempt under way at
 * a crash is sent again; receivers dedupe by event id).
 */
export class WebhookService {
  private stopped = true;
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<string>();
  private unsubscribe: (() => void) | undefined;
  private scanning = false;
  private scanAgain = false;

  constructor(
    private readonly store: WebhookStore,
    private readonly events: EventLog,
    private readonly config: Config['webhooks'],
    private readonly log: Logger,
    private readonly userAgent = 'nullspace-webhooks',
  ) {}

  async create(req: { url: string; events: string[]; secret?: string | undefined }): Promise<WebhookRecord> {
    this.checkUrl(req.url);
    if ((await this.store.count()) >= MAX_WEBHOOKS) {
      throw new NsError('validation_failed', `there are already ${MAX_WEBHOOKS} webhooks, the most this server keeps; delete one first`, { details: { limit: MAX_WEBHOOKS } });
    }
    const rec: WebhookRecord = {
      id: newId('wh'),
      url: req.url,
      events: [...new Set(req.events)],
      secret: req.secret ?? `whsec_${randomBytes(24).toString('base64url')}`,
      createdAt: Date.now(),
    };
    await this.store.insert(rec);
    this.log.info({ webhookId: rec.id, url: rec.url, events: rec.events }, 'webhook created');
    return rec;
  }

  list(): Promise<WebhookRecord[]> {
    return this.store.list();
  }

  async get(id: string): Promise<WebhookRecord> {
    const rec = await this.store.get(id);
    if (!rec) throw notFound('webhook', id);
    return rec;
  }

  async delete(id: string): Promise<void> {
    if (!(await this.store.delete(id))) throw notFound('webhook', id);
    this.log.info({ webhookId: id }, 'webhook deleted');
  }

  async deliveries(id: string, limit: number, before?: number): Promise<DeliveryRecord[]> {
    await this.get(id);
    return this.store.deliveries(id, limit, before);
  }

  /** http(s) only, no credentials in it; loopback, private and link-local hosts only when allowed. */
  checkUrl(raw: string): void {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new NsError('invalid_webhook_url', `"${raw.slice(0, 100)}" is not a URL`, { details: { field: 'url' } });
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new NsError('invalid_webhook_url', `a webhook URL must be http or https, not ${u.protocol}`, { details: { field: 'url' } });
    if (u.username || u.password) throw new NsError('invalid_webhook_url', 'a webhook URL may not hold credentials: the signature authenticates deliveries', { details: { field: 'url' } });
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (!this.config.allowPrivate && (isPrivateAddress(host) || /^localhost\.?$/i.test(host) || /\.localhost\.?$/i.test(host))) {
      throw new NsError('invalid_webhook_url', `webhook URL host ${host} is a loopback, private or link-local address, which this server does not deliver to (NULLSPACE_WEBHOOK_ALLOW_PRIVATE)`, {
        details: { field: 'url' },
      });
    }
  }

  start(): void {
    this.stopped = false;
    this.unsubscribe = this.events.subscribe(() => this.kick());
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.timer);
  }

  /** Runs `scan`, one at a time (a kick while one runs scans again after it). */
  private kick(): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.scanAgain = true;
      return;
    }
    this.scanning = true;
    void this.scan()
      .catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'webhook scan failed'))
      .finally(() => {
        this.scanning = false;
        if (this.scanAgain) {
          this.scanAgain = false;
          this.kick();
        }
      });
  }

  /** Starts every due delivery of a webhook with none under way; sleeps until the next is due. */
  private async scan(): Promise<void> {
    clearTimeout(this.timer);
    const now = Date.now();
    for (const d of await this.store.due(now)) {
      if (this.stopped) return;
      if (this.inFlight.has(d.webhookId)) continue;
      this.inFlight.add(d.webhookId);
      void this.attempt(d)
        .catch((err: unknown) => this.log.error({ webhookId: d.webhookId, deliveryId: d.id, err: errorMessage(err) }, 'webhook delivery failed'))
        .finally(() => {
          this.inFlight.delete(d.webhookId);
          this.kick();
        });
    }
    const next = await this.store.nextDueAt();
    if (next !== undefined && !this.stopped) {
      this.timer = setTimeout(() => this.kick(), Math.max(10, Math.min(next - now, 60_000)));
      this.timer.unref();
    }
  }

  private async attempt(d: DeliveryRecord): Promise<void> {
    const hook = await this.store.get(d.webhookId);
    if (!hook) return; // deleted meanwhile (its deliveries went with it)
    // (read before an earlier attempt of it finished: that one already recorded it)
    const cur = await this.store.delivery(d.id);
    if (cur?.status !== 'pending' || cur.attempts !== d.attempts) return;
    const at = Date.now();
    let status: number | null = null;
    let error: string | null = null;
    try {
      status = await this.post(hook, d);
      if (status < 200 || status > 299) error = `the receiver answered ${status}`;
    } catch (err) {
      error = errorMessage(err);
    }
    // (the server stopped meanwhile: the next start sends it again)
    if (this.stopped) return;
    const attempts = d.attempts + 1;
    const ok = error === null;
    const givenUp = !ok && attempts >= this.config.maxAttempts;
    const delay = Math.min(this.config.retryBaseMs * 2 ** (attempts - 1), MAX_RETRY_DELAY_MS);
    await this.store.attempted(d.id, {
      at: Date.now(),
      status: ok ? 'delivered' : givenUp ? 'failed' : 'pending',
      responseStatus: status,
      error,
      nextAttemptAt: ok || givenUp ? at : Date.now() + delay,
    });
    if (ok || givenUp) await this.store.trim(d.webhookId, KEEP_DELIVERIES);
    if (givenUp) this.log.warn({ webhookId: hook.id, deliveryId: d.id, eventId: d.eventId, attempts, err: error }, 'webhook delivery given up');
    else if (!ok) this.log.info({ webhookId: hook.id, deliveryId: d.id, eventId: d.eventId, attempts, retryInMs: delay, err: error }, 'webhook delivery failed; retried later');
  }

  /** One POST of a delivery; resolves with the receiver's status once its whole answer arrived. */
  private post(hook: WebhookRecord, d: DeliveryRecord): Promise<number> {
    const u = new URL(hook.url);
    const t = Math.floor(Date.now() / 1000);
    const headers = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(d.body)),
      'user-agent': this.userAgent,
      'x-nullspace-signature': signature(hook.secret, d.body, t),
      'x-nullspace-event': d.eventType,
      'x-nullspace-event-id': String(d.eventId),
      'x-nullspace-delivery': String(d.id),
    };
    const allowPrivate = this.config.allowPrivate;
    // the name is resolved here and every address checked (a public name may resolve to a private address)
    const lookup: net.LookupFunction = (hostname, options, cb) => {
      dns.lookup(hostname, { ...options, all: true }, (err, addrs) => {
        if (err) return cb(err, '', 4);
        const list = addrs as dns.LookupAddress[];
        const bad = list.find((a) => isPrivateAddress(a.address));
        if (bad && !allowPrivate) return cb(new Error(`${hostname} resolves to ${bad.address}, a loopback, private or link-local address`), '', 4);
        if ((options as { all?: boolean }).all) return (cb as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, list);
        return cb(null, list[0]!.address, list[0]!.family);
      });
    };
    return new Promise<number>((resolve, reject) => {
      const req = (u.protocol === 'https:' ? https : http).request(u, { method: 'POST', headers, lookup, signal: AbortSignal.timeout(this.config.timeoutMs) }, (res) => {
        let n = 0;
        res.on('data', (b: Buffer) => {
          n += b.length;
          if (n > MAX_RESPONSE_BYTES) res.destroy();
        });
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('close', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      });
      req.on('error', (err) => reject(err.name === 'AbortError' ? new Error(`no answer within ${this.config.timeoutMs} ms`) : err));
      req.end(d.body);
    });
  }
}
