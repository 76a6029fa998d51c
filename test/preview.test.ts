import { createHash, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Sandbox } from 'nullspace';
import { apiKey, apiUrl, sandbox } from './helpers.js';
import { download, request, startGuestServer, WsClient, type Target } from '../packages/cli/dist/bench/preview-guest.js';
import { cleanupDataDir, cli, ownServer, tempDataDir } from './servers.js';

const serve = startGuestServer;
const target = (s: Sandbox, port = 8000, url = apiUrl()): Target => ({ url, host: s.getHost(port) });
const json = (r: { body: Buffer }) => JSON.parse(r.body.toString()) as { error?: { code: string; message: string; details?: Record<string, unknown> } } & Record<string, unknown>;

describe('preview URLs', () => {
  it('reach a server in the guest by the Host header, with its internet access off; the traffic token is required', async () => {
    const s = await sandbox({ allowInternetAccess: false });
    await serve(s);
    const t = target(s);
    expect(t.host).toBe(`8000-${s.sandboxId}.localhost:${new URL(apiUrl()).port}`);
    const info = await s.getInfo();
    expect(info.network.trafficAccessToken).toBe(s.trafficAccessToken);
    expect(s.trafficAccessToken).toMatch(/^[0-9a-f]{48}$/);
    expect(s.trafficAccessToken).not.toBe(apiKey());

    // no token: 401 for API clients (JSON) and browsers (a page), same code
    const none = await request(t, '/');
    expect(none.status).toBe(401);
    expect(json(none).error?.code).toBe('traffic_token_missing');
    const page = await request(t, '/', { headers: { accept: 'text/html' } });
    expect(page.status).toBe(401);
    expect(page.headers['content-type']).toContain('text/html');
    expect(page.body.toString()).toContain('traffic_token_missing');
    // the API key is not the token
    const wrong = await request(t, '/', { headers: { 'x-nullspace-traffic-token': apiKey() } });
    expect(wrong.status).toBe(403);
    expect(json(wrong).error?.code).toBe('traffic_token_invalid');

    // with the token: the guest's answer; the guest does not see the token
    const tok = { 'x-nullspace-traffic-token': s.trafficAccessToken };
    const ok = await request(t, '/?a=1', { headers: { ...tok, cookie: 'ns_traffic=1.x; app=7' } });
    expect(ok.status).toBe(200);
    const seen = json(ok) as unknown as { hello: string; path: string; headers: Record<string, string> };
    expect(seen.hello).toBe('preview');
    expect(seen.path).toBe('/?a=1');
    expect(seen.headers['x-nullspace-traffic-token']).toBeUndefined();
    expect(seen.headers.cookie).toBe('app=7');
    expect(seen.headers.host).toBe(t.host);
    expect(seen.headers['x-forwarded-proto']).toBe('http');

    // keep-alive: requests on one client connection, each through the proxy
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    onTestFinished(() => agent.destroy());
    for (let i = 0; i < 5; i++) expect((await request(t, `/?i=${i}`, { headers: tok, agent })).status).toBe(200);
    // HEAD, an answer of the guest's own (404), a POST body
    expect((await request(t, '/', { method: 'HEAD', headers: tok })).status).toBe(200);
    expect((await request(t, '/nope', { headers: tok })).status).toBe(404);
    const posted = await request(t, '/upload', { method: 'POST', headers: { ...tok, 'content-length': 5 }, body: Buffer.from('hello') });
    expect(json(posted).sha256).toBe(createHash('sha256').update('hello').digest('hex'));

    // nothing listening: 502 port_not_open naming the port
    const closed = await request(target(s, 8001), '/', { headers: tok });
    expect(closed.status).toBe(502);
    expect(json(closed).error).toMatchObject({ code: 'port_not_open', details: { port: 8001 } });
    expect(json(closed).error?.message).toContain('8001');
    // no such sandbox: 404
    const ghost = await request({ url: apiUrl(), host: `8000-sbx_${'0'.repeat(16)}.localhost` }, '/', { headers: tok });
    expect(ghost.status).toBe(404);
    expect(json(ghost).error?.code).toBe('sandbox_not_found');
    // the API itself is still the API on its own host
    expect((await fetch(`${apiUrl()}/v1/sandboxes/${s.sandboxId}`, { headers: { authorization: `Bearer ${apiKey()}` } })).status).toBe(200);

    // signed URLs: an API client is served at once; a browser gets a cookie for the host and the clean URL
    const signed = new URL(s.getSignedUrl(8000, { expiresInS: 600, path: '/?q=2' }));
    expect(signed.host).toBe(t.host);
    const direct = await request(t, signed.pathname + signed.search);
    expect(direct.status).toBe(200);
    expect((json(direct) as { path: string }).path).toBe('/?q=2');
    const nav = await request(t, signed.pathname + signed.search, { headers: { accept: 'text/html,*/*' } });
    expect(nav.status).toBe(302);
    expect(nav.headers.location).toBe('/?q=2');
    const cookie = String(nav.headers['set-cookie']?.[0]).split(';')[0]!;
    expect(cookie).toMatch(/^ns_traffic=/);
    expect(String(nav.headers['set-cookie']?.[0])).toContain('HttpOnly');
    expect((await request(t, '/', { headers: { cookie } })).status).toBe(200);
    // a signed URL of another port, a tampered one, an expired one
    const other = new URL(s.getSignedUrl(8001));
    expect((await request(t, other.pathname + other.search)).status).toBe(403);
    expect(json(await request(t, signed.pathname + signed.search.replace(/ns_token=./, 'ns_token=A'))).error?.code).toBe('traffic_token_invalid');
    const past = Math.floor(Date.now() / 1000) - 10;
    const sig = createHmac('sha256', s.trafficAccessToken).update(`${s.sandboxId}:8000:${past}`).digest('base64url');
    const expired = await request(t, `/?ns_token=${sig}&expires=${past}`);
    expect(expired.status).toBe(403);
    expect(json(expired).error?.code).toBe('signed_url_expired');

    // the CLI prints the host and a signed URL (the SDK's functions)
    const srv = { url: apiUrl(), key: apiKey() };
    expect((await cli(srv, ['sandbox', 'host', s.sandboxId, '8000'])).stdout).toBe(`${t.host}\n`);
    const fromCli = new URL((await cli(srv, ['sandbox', 'signed-url', s.sandboxId, '8000', '--path', '/?c=1', '--expires-in-s', '60'])).stdout.trim());
    expect(fromCli.host).toBe(t.host);
    const viaCli = await request(t, fromCli.pathname + fromCli.search);
    expect(viaCli.status).toBe(200);
    expect((json(viaCli) as { path: string }).path).toBe('/?c=1');

    // an ended sandbox: 410
    await s.kill();
    const ended = await request(t, '/', { headers: tok });
    expect(ended.status).toBe(410);
    expect(json(ended).error?.code).toBe('sandbox_ended');
  });

  it('serves a sandbox created with allowPublicTraffic without a token; each sandbox has its own token', async () => {
    const s = await sandbox({ network: { allowPublicTraffic: true } });
    const info = await s.getInfo();
    expect(info.network.allowPublicTraffic).toBe(true);
    await serve(s);
    const r = await request(target(s), '/');
    expect(r.status).toBe(200);
    expect((json(r) as { hello: string }).hello).toBe('preview');
    // a token of its own even so (a fork gets another: create.ts makes one per sandbox)
    const other = await sandbox();
    expect(other.trafficAccessToken).not.toBe(s.trafficAccessToken);
    expect((await request(target(other), '/')).status).toBe(401);
  });

  it('streams: server-sent events arrive before the response ends; WebSocket echo both ways', async () => {
    const s = await sandbox();
    await serve(s);
    const t = target(s);
    const tok = { 'x-nullspace-traffic-token': s.trafficAccessToken };

    // SSE: the last event waits until /sse-go; the first ones must arrive before that
    const events: string[] = [];
    let ended = false;
    const u = new URL(t.url);
    const done = new Promise<void>((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, path: '/sse?n=3', headers: { host: t.host, ...tok } }, (res) => {
        expect(res.headers['content-type']).toBe('text/event-stream');
        res.setEncoding('utf8');
        res.on('data', (c: string) => events.push(...c.split('\n\n').filter(Boolean)));
        res.on('end', () => {
          ended = true;
          resolve();
        });
      });
      req.on('error', reject);
      req.end();
    });
    const deadline = Date.now() + 60_000;
    while (events.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(events).toEqual(['data: event 0', 'data: event 1']);
    expect(ended).toBe(false);
    expect((await request(t, '/sse-go', { headers: tok })).status).toBe(200);
    await done;
    expect(events).toEqual(['data: event 0', 'data: event 1', 'data: event 2']);

    // WebSocket: refused without the token, echo with it
    await expect(WsClient.open(t, '/ws')).rejects.toMatchObject({ status: 401 });
    const ws = await WsClient.open(t, '/ws', tok);
    onTestFinished(() => ws.close());
    ws.send('hello over the tunnel');
    expect((await ws.next()).data.toString()).toBe('hello over the tunnel');
    const bin = randomBytes(40_000);
    ws.send(bin);
    const back = await ws.next();
    expect(back.opcode).toBe(2);
    expect(Buffer.compare(back.data, bin)).toBe(0);
    ws.send(Buffer.alloc(0), 8);
    expect((await ws.next()).opcode).toBe(8);
  });

  it('carries a 200 MiB download and a 200 MiB upload intact (sha256)', async () => {
    const s = await sandbox({ timeoutMs: 900_000 });
    await serve(s);
    const t = target(s);
    const tok = { 'x-nullspace-traffic-token': s.trafficAccessToken };
    await s.commands.run('head -c 200M /dev/urandom > /workspace/big', { timeoutMs: 300_000 });
    const want = (await s.commands.run('sha256sum /workspace/big', { timeoutMs: 300_000 })).stdout.split(' ')[0];
    const got = await download(t, '/file?path=/workspace/big', tok);
    expect(got).toEqual({ status: 200, sha256: want, bytes: 200 * 1024 * 1024 });

    // upload: 200 MiB generated as it is sent, hashed on both sides
    const size = 200 * 1024 * 1024;
    const h = createHash('sha256');
    const chunk = randomBytes(1 << 20);
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= size) return this.push(null);
        const c = Buffer.from(chunk.map((b) => b ^ (sent >> 20) % 256));
        h.update(c);
        sent += c.length;
        this.push(c);
      },
    });
    const up = await request(t, '/upload', { method: 'PUT', headers: { ...tok, 'content-length': size }, body });
    expect(up.status).toBe(200);
    expect(json(up)).toEqual({ sha256: h.digest('hex'), left: 0 });
    // (400 MiB through the agent channel under TCG: ~6-13 MiB/s on these hosts, slower under load)
  }, 900_000);

  it('a hibernated sandbox: 409 without autoResume; with it, concurrent requests resume it once and are served (on the proxy port)', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const trace = path.join(dataDir, 'trace.jsonl');
    fs.mkdirSync(dataDir, { recursive: true });
    const srv = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_PROXY_PORT: '0', NULLSPACE_LIFECYCLE_TRACE: trace });
    expect(srv.proxyUrl).toBeDefined();
    const c = { apiUrl: srv.url, apiKey: srv.key };
    const sleepy = await Sandbox.create({ ...c, lifecycle: { onTimeout: 'hibernate' } });
    onTestFinished(() => sleepy.kill().catch(() => {}));
    const waker = await Sandbox.create({ ...c, timeoutMs: 600_000, lifecycle: { onTimeout: 'hibernate', autoResume: true } });
    onTestFinished(() => waker.kill().catch(() => {}));
    expect((await waker.getInfo()).lifecycle).toEqual({ onTimeout: 'hibernate', autoResume: true });
    // the proxy's own port serves preview hosts (and names it in the hosts), nothing else
    expect(waker.getHost(8000)).toBe(`8000-${waker.sandboxId}.localhost:${new URL(srv.proxyUrl!).port}`);
    const notPreview = await request({ url: srv.proxyUrl!, host: 'localhost' }, '/v1/sandboxes');
    expect(notPreview.status).toBe(404);
    expect(json(notPreview).error?.code).toBe('route_not_found');

    await serve(sleepy);
    await serve(waker);
    await sleepy.hibernate();
    await waker.hibernate();
    const paused = await request(target(sleepy, 8000, srv.proxyUrl), '/', { headers: { 'x-nullspace-traffic-token': sleepy.trafficAccessToken } });
    expect(paused.status).toBe(409);
    expect(json(paused).error?.code).toBe('sandbox_paused');
    expect(json(paused).error?.message).toContain('resume');
    expect((await sleepy.getInfo()).state).toBe('paused');

    const t = target(waker, 8000, srv.proxyUrl);
    const tok = { 'x-nullspace-traffic-token': waker.trafficAccessToken };
    const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => request(t, `/?n=${i}`, { headers: tok })));
    expect(replies.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect((await waker.getInfo()).state).toBe('running');
    const resumes = fs
      .readFileSync(trace, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { sandboxId: string; from: string; to: string })
      .filter((e) => e.sandboxId === waker.sandboxId && e.from === 'resuming' && e.to === 'running');
    expect(resumes).toHaveLength(1);
    // traffic started its timeout again
    const before = (await waker.getInfo()).expiresAt!.getTime();
    await new Promise((r) => setTimeout(r, 1500));
    expect((await request(t, '/', { headers: tok })).status).toBe(200);
    expect((await waker.getInfo()).expiresAt!.getTime()).toBeGreaterThan(before);
  });

  it('a signed URL opens the page in a browser (headless Chromium)', async () => {
    const { chromium } = await import('playwright-core');
    const s = await sandbox();
    await serve(s);
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
    onTestFinished(() => browser.close());
    const page = await browser.newPage();
    // without a token: the proxy's page, with its code
    const refused = await page.goto(`http://${s.getHost(8000)}/page`);
    expect(refused?.status()).toBe(401);
    expect(await page.textContent('body')).toContain('traffic_token_missing');
    // the signed URL: redirected to the clean URL with a cookie, and the guest's page
    const res = await page.goto(s.getSignedUrl(8000, { path: '/page' }));
    expect(res?.status()).toBe(200);
    expect(page.url()).toBe(`http://${s.getHost(8000)}/page`);
    expect(await page.textContent('#t')).toBe('served from the sandbox');
    // the cookie opens other paths of the same host
    const again = await page.goto(`http://${s.getHost(8000)}/`);
    expect(again?.status()).toBe(200);
    if (process.env.PREVIEW_SCREENSHOT) await page.goto(s.getSignedUrl(8000, { path: '/page' })).then(() => page.screenshot({ path: process.env.PREVIEW_SCREENSHOT }));
  });
});
