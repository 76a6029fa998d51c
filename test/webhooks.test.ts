import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox } from 'nullspace';
import { api } from './helpers.js';
import { cleanupDataDir, freePort, serverProcess, tempDataDir, waitFor } from './servers.js';

/**
 * How a receiver checks a delivery (as docs/api.md shows): the HMAC-SHA256 of "<t>.<raw body>" with
 * the webhook's secret, in hex, must equal v1 of X-Nullspace-Signature (and t be recent).
 */
function verify(secret: string, header: string, body: string, toleranceS = 300): boolean {
  const parts = Object.fromEntries(header.split(',').map((kv) => kv.split('=', 2) as [string, string]));
  const t = Number(parts.t);
  if (!parts.v1 || !Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > toleranceS) return false;
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  event: { id: number; type: string; sandboxId: string; at: string; data: Record<string, unknown> };
}

/** A webhook receiver on 127.0.0.1:port that can go down and come back up; records what it got. */
function receiver(port: number) {
  const got: Received[] = [];
  let server: http.Server | undefined;
  const up = () =>
    new Promise<void>((resolve) => {
      server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (b: Buffer) => (body += b.toString()));
        req.on('end', () => {
          got.push({ headers: req.headers, body, event: JSON.parse(body) as Received['event'] });
          res.writeHead(204).end();
        });
      });
      server.listen(port, '127.0.0.1', () => resolve());
    });
  const down = () =>
    new Promise<void>((resolve) => {
      if (!server) return resolve();
      server.closeAllConnections();
      server.close(() => resolve());
      server = undefined;
    });
  onTestFinished(down);
  return { got, up, down };
}

describe('webhooks', () => {
  it('a receiver that is down for a while then up gets every event in order, signed; deliveries survive a server restart', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const key = `wh-${Date.now()}-key-0123456789`;
    const port = freePort();
    const env = { NULLSPACE_WEBHOOK_ALLOW_PRIVATE: '1', NULLSPACE_WEBHOOK_RETRY_BASE_MS: '200', NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0' };
    let server = await serverProcess(dataDir, key, port, env);
    const c = { apiUrl: server.url, apiKey: key };
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(server.url + path, {
        method,
        headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: res.status === 204 ? undefined : ((await res.json()) as Record<string, unknown>) };
    };
    const rport = freePort();
    const rx = receiver(rport);
    const secret = 'a-secret-of-the-test-0123456789';
    const created = await call('POST', '/v1/webhooks', { url: `http://127.0.0.1:${rport}/hook`, events: ['created', 'killed'], secret });
    expect(created.status).toBe(201);
    const hookId = created.body!.id as string;
    expect(created.body).toMatchObject({ url: `http://127.0.0.1:${rport}/hook`, events: ['created', 'killed'], secret });
    // a second one for every type, its secret generated (returned once)
    const every = await call('POST', '/v1/webhooks', { url: `http://127.0.0.1:${rport}/all` });
    expect(every.body!.secret).toMatch(/^whsec_/);
    const listed = await call('GET', '/v1/webhooks');
    expect((listed.body!.webhooks as Array<Record<string, unknown>>).map((w) => [w.id, w.secret])).toEqual([
      [hookId, undefined],
      [every.body!.id, undefined],
    ]);
    expect((await call('DELETE', `/v1/webhooks/${every.body!.id as string}`)).status).toBe(204);
    expect((await call('GET', `/v1/webhooks/${every.body!.id as string}`)).body).toMatchObject({ error: { code: 'webhook_not_found' } });

    // the receiver is down: the events wait in the outbox, retried
    const s1 = await Sandbox.create(c);
    await s1.createSnapshot(); // (snapshotted: not subscribed)
    await s1.kill();
    await waitFor('failed attempts', async () => {
      const d = (await call('GET', `/v1/webhooks/${hookId}/deliveries`)).body!.deliveries as Array<{ attempts: number; status: string; error: string | null }>;
      return d.length === 2 && d.every((x) => x.status === 'pending') && d.some((x) => x.attempts >= 2) ? d : undefined;
    });
    // the API does not wait for it
    const t0 = Date.now();
    expect((await call('GET', '/v1/webhooks')).status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(5000);
    await rx.up();
    await waitFor('both deliveries', async () => (rx.got.length >= 2 ? true : undefined));

    // down again; more events; the server is killed while they are pending and restarted
    await rx.down();
    const s2 = await Sandbox.create(c);
    await s2.kill();
    await waitFor('pending deliveries of s2', async () => {
      const d = (await call('GET', `/v1/webhooks/${hookId}/deliveries`)).body!.deliveries as Array<{ status: string; attempts: number }>;
      // (one at a time, in order: the later one waits behind the earlier one's retries)
      const pending = d.filter((x) => x.status === 'pending');
      return pending.length === 2 && pending[1]!.attempts >= 1 ? true : undefined;
    });
    await server.kill();
    await rx.up();
    server = await serverProcess(dataDir, key, port, env);
    await waitFor('deliveries after the restart', async () => (rx.got.length >= 4 ? true : undefined), 60_000);
    // and one more after it
    const s3 = await Sandbox.create(c);
    await s3.kill();
    await waitFor('deliveries of s3', async () => (rx.got.length >= 6 ? true : undefined));
    await new Promise((r) => setTimeout(r, 1000));

    // every event of the subscribed types, each once, in order
    expect(rx.got.map((g) => [g.event.sandboxId, g.event.type])).toEqual([
      [s1.sandboxId, 'created'],
      [s1.sandboxId, 'killed'],
      [s2.sandboxId, 'created'],
      [s2.sandboxId, 'killed'],
      [s3.sandboxId, 'created'],
      [s3.sandboxId, 'killed'],
    ]);
    const ids = rx.got.map((g) => g.event.id);
    expect([...ids].sort((x, y) => x - y)).toEqual(ids);
    for (const g of rx.got) {
      expect(g.headers['x-nullspace-event']).toBe(g.event.type);
      expect(g.headers['x-nullspace-event-id']).toBe(String(g.event.id));
      expect(g.headers['content-type']).toBe('application/json');
      expect(verify(secret, g.headers['x-nullspace-signature'] as string, g.body), g.headers['x-nullspace-signature'] as string).toBe(true);
    }
    // a tampered body, a tampered signature, another secret: refused
    const g = rx.got[0]!;
    const sig = g.headers['x-nullspace-signature'] as string;
    expect(verify(secret, sig, g.body.replace(g.event.sandboxId, 'sbx_0000000000000000'))).toBe(false);
    expect(verify(secret, sig.replace(/v1=(.)/, (_m, ch: string) => `v1=${ch === '0' ? '1' : '0'}`), g.body)).toBe(false);
    expect(verify('another-secret-0123456789', sig, g.body)).toBe(false);

    // the delivery log: newest first, delivered, the first ones after several attempts
    const log = (await call('GET', `/v1/webhooks/${hookId}/deliveries`)).body!.deliveries as Array<{ eventId: number; status: string; attempts: number; responseStatus: number | null; error: string | null }>;
    expect(log.map((d) => d.eventId)).toEqual([...ids].reverse());
    expect(log.every((d) => d.status === 'delivered' && d.responseStatus === 204)).toBe(true);
    expect(log[log.length - 1]!.attempts).toBeGreaterThan(1);
  });

  it('webhook URLs: http(s) only, no credentials, no loopback/private hosts unless the operator allows them; unknown types refused', async () => {
    const cases: Array<[unknown, string]> = [
      [{ url: 'ftp://example.com/x' }, 'invalid_webhook_url'],
      [{ url: 'not a url' }, 'invalid_webhook_url'],
      [{ url: 'https://user:pw@example.com/x' }, 'invalid_webhook_url'],
      [{ url: 'http://127.0.0.1:9/x' }, 'invalid_webhook_url'],
      [{ url: 'http://localhost/x' }, 'invalid_webhook_url'],
      [{ url: 'http://[::1]/x' }, 'invalid_webhook_url'],
      [{ url: 'http://10.1.2.3/x' }, 'invalid_webhook_url'],
      [{ url: 'http://169.254.169.254/latest' }, 'invalid_webhook_url'],
      [{ url: 'https://example.com/x', events: ['nope'] }, 'bad_request'],
      [{ url: 'https://example.com/x', secret: 'short' }, 'validation_failed'],
    ];
    for (const [body, code] of cases) {
      const res = await api('POST', '/v1/webhooks', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code, JSON.stringify(body)).toBe(code);
    }
    const res = await api('DELETE', '/v1/webhooks/wh_nope');
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('webhook_not_found');
  });
});
