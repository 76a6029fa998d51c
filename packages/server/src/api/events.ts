import { Readable } from 'node:stream';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { NsError } from '@nullspace/runtime';
import type { EventFilter, EventLog } from '../events/log.js';
import type { DeliveryRecord, WebhookRecord } from '../events/webhooks.js';
import { PUBLIC_EVENT_TYPES } from '../sandbox/lifecycle.js';
import type { AppDeps } from './deps.js';
import { parseList } from './query.js';
import { DeliveriesQuery, EventsQuery, Webhook, WebhookBody, WebhookDelivery } from './schemas.js';

/** Events read from the log per query while catching up. */
const BATCH = 500;

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function webhookView(w: WebhookRecord, withSecret = false): Static<typeof Webhook> {
  return { id: w.id, url: w.url, events: w.events, createdAt: new Date(w.createdAt).toISOString(), ...(withSecret ? { secret: w.secret } : {}) };
}

function deliveryView(d: DeliveryRecord): Static<typeof WebhookDelivery> {
  return {
    id: d.id,
    eventId: d.eventId,
    eventType: d.eventType,
    status: d.status,
    attempts: d.attempts,
    lastAttemptAt: iso(d.lastAttemptAt),
    nextAttemptAt: d.status === 'pending' ? iso(d.nextAttemptAt) : null,
    responseStatus: d.responseStatus,
    error: d.error,
    createdAt: new Date(d.createdAt).toISOString(),
    finishedAt: iso(d.finishedAt),
  };
}

/**
 * The SSE stream: the events after `cursor` that match, read from the log (so a reader resumed from
 * an id gets every later event once, in order), then each new one as it is appended; a comment
 * when nothing was sent for `heartbeatMs`. Ends when the client leaves or the server closes.
 */
async function* sse(events: EventLog, filter: EventFilter, cursor: number, heartbeatMs: number, gone: AbortSignal): AsyncGenerator<string> {
  let wake: (() => void) | undefined;
  const unsubscribe = events.subscribe(() => wake?.());
  const onGone = () => wake?.();
  gone.addEventListener('abort', onGone);
  try {
    yield `retry: 2000\n: nullspace events after ${cursor}\n\n`;
    for (;;) {
      let sent = 0;
      for (;;) {
        const batch = await events.after(cursor, filter, BATCH);
        for (const e of batch) {
          cursor = e.id;
          yield `id: ${e.id}\nevent: ${e.type}\ndata: ${events.body(e)}\n\n`;
        }
        sent += batch.length;
        if (batch.length < BATCH) break;
      }
      if (gone.aborted) return;
      let timer: NodeJS.Timeout | undefined;
      const heartbeat = await new Promise<boolean>((resolve) => {
        wake = () => resolve(false);
        timer = setTimeout(() => resolve(true), heartbeatMs);
      });
      clearTimeout(timer);
      wake = undefined;
      if (gone.aborted) return;
      if (heartbeat && sent === 0) yield `: heartbeat ${new Date().toISOString()}\n\n`;
    }
  } finally {
    unsubscribe();
    gone.removeEventListener('abort', onGone);
  }
}

export const eventRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { events, webhooks } = deps;
    // open streams end when the server closes (they would not on their own)
    const streams = new Set<AbortController>();
    app.addHook('preClose', async () => {
      for (const s of streams) s.abort();
    });

    app.get(
      '/events',
      {
        schema: {
          summary: 'Lifecycle events as Server-Sent Events (replayed from Last-Event-ID or ?after=, then live)',
          description:
            'text/event-stream: each event is `id: <event id>`, `event: <type>`, `data: {"id","type","sandboxId","at","data"}`; comment lines (`: heartbeat`) while nothing happens.',
          querystring: EventsQuery,
        },
      },
      async (req, reply) => {
        const q = req.query as Static<typeof EventsQuery>;
        const types = parseList(q.type, PUBLIC_EVENT_TYPES, 'type', []);
        const header = req.headers['last-event-id'];
        let cursor: number;
        if (header !== undefined) {
          if (typeof header !== 'string' || !/^\d{1,15}$/.test(header.trim())) throw new NsError('bad_request', 'Last-Event-ID must be an event id (digits)', { details: { field: 'Last-Event-ID' } });
          cursor = Number(header.trim());
        } else {
          cursor = q.after ?? (await events.latestId());
        }
        const gone = new AbortController();
        streams.add(gone);
        reply.raw.once('close', () => {
          gone.abort();
          streams.delete(gone);
        });
        const stream = Readable.from(sse(events, { sandboxId: q.sandboxId, types }, cursor, deps.config.events.heartbeatMs, gone.signal), { objectMode: false });
        return reply
          .header('content-type', 'text/event-stream; charset=utf-8')
          .header('cache-control', 'no-cache')
          .header('x-accel-buffering', 'no')
          .send(stream);
      },
    );

    app.post('/webhooks', { schema: { summary: 'Subscribe a URL to lifecycle events (signed deliveries)', body: WebhookBody, response: { 201: Webhook } } }, async (req, reply) => {
      const b = req.body;
      const types = parseList((b.events ?? []).join(','), PUBLIC_EVENT_TYPES, 'event type', []);
      return reply.status(201).send(webhookView(await webhooks.create({ url: b.url, events: types, secret: b.secret }), true));
    });

    app.get('/webhooks', { schema: { summary: 'List webhooks', response: { 200: Type.Object({ webhooks: Type.Array(Webhook) }) } } }, async () => ({
      webhooks: (await webhooks.list()).map((w) => webhookView(w)),
    }));

    app.get('/webhooks/:id', { schema: { summary: 'Get a webhook', params: Type.Object({ id: Type.String({ maxLength: 64 }) }), response: { 200: Webhook } } }, async (req) =>
      webhookView(await webhooks.get(req.params.id)),
    );

    app.delete('/webhooks/:id', { schema: { summary: 'Delete a webhook (its pending deliveries are dropped)', params: Type.Object({ id: Type.String({ maxLength: 64 }) }) } }, async (req, reply) => {
      await webhooks.delete(req.params.id);
      return reply.status(204).send();
    });

    app.get(
      '/webhooks/:id/deliveries',
      {
        schema: {
          summary: "A webhook's delivery log, newest first",
          params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
          querystring: DeliveriesQuery,
          response: { 200: Type.Object({ deliveries: Type.Array(WebhookDelivery) }) },
        },
      },
      async (req) => {
        const q = req.query as Static<typeof DeliveriesQuery>;
        return { deliveries: (await webhooks.deliveries(req.params.id, q.limit ?? 100, q.before)).map(deliveryView) };
      },
    );
  };
