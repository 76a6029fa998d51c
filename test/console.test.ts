import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { apiKey, apiUrl } from './helpers.js';
import { cleanupDataDir, exited, ownServer, tempDataDir } from './servers.js';

/** Screenshots of the main pages (gitignored; two of them are copied to docs/img by hand). */
const ARTIFACTS = path.resolve(__dirname, '../test-artifacts/console');
const CLI = path.resolve(__dirname, '../packages/cli/dist/main.js');

async function launch(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  onTestFinished(() => browser.close());
  return browser;
}

async function shot(page: Page, name: string, fullPage = false): Promise<void> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage });
}

/** The text of the terminal's rows (xterm.js's DOM renderer), one string per row, trimmed. */
const termRows = (page: Page) => page.$$eval('.xterm-rows > div', (rows) => rows.map((r) => (r.textContent ?? '').trim()));

async function waitForRow(page: Page, text: string, timeout = 60_000): Promise<void> {
  // (a locator, not a function evaluated in the page: the console's CSP has no unsafe-eval)
  await page.locator('.xterm-rows > div', { hasText: new RegExp(`^\\s*${text}\\s*$`) }).first().waitFor({ timeout });
}

/** The id a status line announced (`created sbx_...`, `forked X: sbx_...`, `snapshot snap_... of`). */
async function announced(page: Page, pattern: RegExp, timeout = 180_000): Promise<string> {
  const status = page.locator('p.status', { hasText: pattern }).first();
  await status.waitFor({ timeout });
  return pattern.exec((await status.textContent()) ?? '')![1]!;
}

describe('web console', () => {
  it('is served at / without the key (static files, cache headers, a CSP); /v1, the E2B routes and unknown paths stay theirs', async () => {
    const base = apiUrl();
    const index = await fetch(`${base}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('cache-control')).toBe('no-cache');
    expect(index.headers.get('content-security-policy')).toContain("connect-src 'self'");
    expect(index.headers.get('x-frame-options')).toBe('DENY');
    const html = await index.text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(asset).toBeDefined();
    const js = await fetch(`${base}${asset}`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    // nothing outside the build's assets, whatever the path (no fallback page: the console routes
    // by the URL's fragment)
    const key = { authorization: `Bearer ${apiKey()}` };
    for (const p of ['/assets/nope.js', '/assets/..%2Fpackage.json', '/assets/.hidden.js', '/assets/index.html', '/index.html', '/console', '/sandboxes-page']) {
      const r = await fetch(`${base}${p}`, { headers: key });
      expect(r.status, p).toBe(404);
      expect(((await r.json()) as { error: { code: string } }).error.code, p).toBe('route_not_found');
    }
    // the API still needs the key; the E2B surface at the root answers as before (its own 401)
    const v1 = await fetch(`${base}/v1/sandboxes`);
    expect(v1.status).toBe(401);
    expect(((await v1.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    const e2b = await fetch(`${base}/sandboxes`);
    expect(e2b.status).toBe(401);
    expect(e2b.headers.get('content-type')).toContain('application/json');
    // unknown paths still need the key (as before the console)
    expect((await fetch(`${base}/console`)).status).toBe(401);
  });

  it('in Chromium: a wrong key is refused; then a sandbox is created, used in a terminal and the file browser, snapshotted, forked and killed, live', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const server = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_METRICS_INTERVAL_MS: '2000' });
    const auth = { authorization: `Bearer ${server.key}` };
    // whatever happens, nothing the browser made outlives the test
    onTestFinished(async () => {
      const res = await fetch(`${server.url}/v1/sandboxes?limit=1000`, { headers: auth }).catch(() => undefined);
      const list = res?.ok ? ((await res.json()) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes : [];
      for (const s of list) await fetch(`${server.url}/v1/sandboxes/${s.sandboxId}`, { method: 'DELETE', headers: auth }).catch(() => {});
    });
    const browser = await launch();
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    onTestFinished(async ({ task }) => {
      if (task.result?.state === 'fail') await shot(page, 'failure').catch(() => {});
    });
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));

    // a wrong key: the server's answer, as it is
    await page.goto(`${server.url}/`);
    await page.fill('#apikey', `wrong-${randomBytes(8).toString('hex')}`);
    await page.click('button[type=submit]');
    await page.waitForSelector('.error:has-text("unauthorized: invalid API key")');
    await shot(page, 'signin-error');

    await page.fill('#apikey', server.key);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1:has-text("Sandboxes")');
    await page.waitForSelector('.live.on');

    // create from the base template: the row comes and turns running through the event stream
    await page.waitForSelector('select[name=source] option[value="template:base"]', { state: 'attached' });
    await page.click('button:has-text("Create sandbox")');
    const id = await announced(page, /created (sbx_[0-9a-z]+)/);
    const row = page.locator(`tr[data-id="${id}"]`);
    await row.locator('td.state:has-text("running")').waitFor();
    // its CPU and memory from the metrics (a sample every 2 s here)
    await row.locator('td.cpu', { hasText: /^\d+%$/ }).waitFor({ timeout: 60_000 });
    // the host it runs on (the server's own: placement on joined hosts is not built)
    expect(await row.locator('td.host').textContent()).toBe('local');
    await shot(page, 'sandboxes');

    // the sandbox page: a terminal (type, read back), then files written by it, downloaded
    await row.locator(`a[href="#/sandboxes/${id}"]`).first().click();
    await page.waitForSelector('.term[data-state="connected"]', { timeout: 60_000 });
    expect(await page.textContent('dl.kv dt:has-text("Host") + dd')).toBe('local');
    await page.click('.term');
    await page.keyboard.type('echo hello');
    await page.keyboard.press('Enter');
    await waitForRow(page, 'hello');
    expect((await termRows(page)).some((r) => r.endsWith('echo hello'))).toBe(true);
    await page.keyboard.type('printf made-in-guest > /workspace/guest.txt');
    await page.keyboard.press('Enter');

    const marker = randomBytes(16).toString('hex');
    await page.setInputFiles('input[type=file]', { name: 'upload.txt', mimeType: 'text/plain', buffer: Buffer.from(marker) });
    await page.click('.files button:has-text("Upload")');
    await page.waitForSelector('tr[data-path="/workspace/upload.txt"]');
    const put = await fetch(`${server.url}/v1/sandboxes/${id}/files?path=/workspace/upload.txt`, { headers: auth });
    expect(await put.text()).toBe(marker);
    await page.click('.files button:has-text("List")');
    const guestRow = page.locator('tr[data-path="/workspace/guest.txt"]');
    await guestRow.waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), guestRow.locator('button:has-text("Download")').click()]);
    expect(download.suggestedFilename()).toBe('guest.txt');
    expect(fs.readFileSync((await download.path())!, 'utf8')).toBe('made-in-guest');
    // viewing a file
    await page.locator('tr[data-path="/workspace/upload.txt"] button.link').click();
    await page.waitForSelector(`.viewer pre:has-text("${marker}")`);
    await page.waitForSelector('.spark polyline', { timeout: 30_000 });
    await shot(page, 'sandbox', true);

    // a snapshot, then the lineage: the template, the sandbox, its snapshot below it
    await page.click('.actions button:has-text("Snapshot")');
    const snap = await announced(page, /snapshot (snap_[0-9a-z]+) of/);
    await page.click('nav a:has-text("Snapshots")');
    await page.waitForSelector(`[data-node="p:${snap}"]`);
    await page.waitForSelector(`[data-node="s:${id}"]`);
    await page.waitForSelector('[data-node="t:base"]');
    await page.focus(`[data-node="p:${snap}"]`);
    await page.keyboard.press('Enter');
    await page.waitForSelector(`.details:has-text("snapshot from ${id}")`);
    await page.waitForSelector('.details:has-text("Layers it holds")');
    await page.waitForSelector('[data-testid=gc]:has-text("would free")');

    // a fork from the table: the child comes in (no reload), and under its source in the lineage
    await page.click('nav a:has-text("Sandboxes")');
    await page.evaluate(() => ((globalThis as unknown as { marker: number }).marker = 42));
    await page.locator(`tr[data-id="${id}"] button:has-text("Fork")`).click();
    const child = await announced(page, /forked sbx_[0-9a-z]+: (sbx_[0-9a-z]+)/);
    await page.locator(`tr[data-id="${child}"] td.state:has-text("running")`).waitFor();
    await page.click('nav a:has-text("Snapshots")');
    await page.waitForSelector(`[data-node="s:${child}"]`);
    await page.click(`[data-node="s:${child}"]`);
    await page.waitForSelector(`.details:has-text("fork from ${id}")`);
    await shot(page, 'lineage');

    // kill the child: a confirmation, then its state changes in place through the event stream
    await page.click('nav a:has-text("Sandboxes")');
    await page.locator(`tr[data-id="${child}"] button:has-text("Kill")`).click();
    await page.waitForSelector('dialog.confirm[open]');
    await page.click('dialog.confirm button.danger');
    await page.locator(`tr[data-id="${child}"] td.state:has-text("killed")`).waitFor({ timeout: 60_000 });
    expect(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker)).toBe(42);
    const killed = (await (await fetch(`${server.url}/v1/sandboxes/${child}`, { headers: auth })).json()) as { state: string };
    expect(killed.state).toBe('killed');
    await page.goto(`${server.url}/#/sandboxes/${child}`);
    await page.waitForSelector('.badge.big:has-text("killed")');

    // back to the source's page: its terminal reattaches to the same shell (the pid is kept for the
    // tab) with what it printed replayed
    await page.goto(`${server.url}/#/sandboxes/${id}`);
    await page.waitForSelector('.term[data-state="connected"]', { timeout: 60_000 });
    await waitForRow(page, 'hello');
    // resize: a narrower window is a narrower terminal, as the shell sees it
    const sizes = async () => (await termRows(page)).filter((r) => /^\d+ \d+$/.test(r)).map((r) => r.split(' ').map(Number) as [number, number]);
    await page.click('.term');
    await page.keyboard.type('export NS_MARK=kept-$((6*7)); clear; stty size');
    await page.keyboard.press('Enter');
    await expect.poll(async () => (await sizes()).length, { timeout: 30_000 }).toBe(1);
    const [[rows, cols]] = (await sizes()) as [[number, number]];
    const resized = page.waitForResponse((r) => r.url().endsWith('/resize') && r.request().method() === 'POST');
    await page.setViewportSize({ width: 1000, height: 900 });
    expect((await resized).status()).toBe(204);
    await page.keyboard.type('clear; stty size');
    await page.keyboard.press('Enter');
    await expect.poll(async () => (await sizes()).at(-1)?.[1], { timeout: 30_000 }).toBeLessThan(cols);
    expect((await sizes()).at(-1)?.[0]).toBe(rows);
    await page.setViewportSize({ width: 1440, height: 900 });

    // hibernate (confirmed) and resume from the page: the terminal goes with the VM and comes back
    // attached to the same shell (its variable kept)
    await page.click('.actions button:has-text("Hibernate")');
    await page.click('dialog.confirm[open] button.danger');
    await page.waitForSelector('.badge.big:has-text("paused")', { timeout: 120_000 });
    await page.waitForSelector('.term-placeholder');
    await page.click('.actions button:has-text("Resume")');
    await page.waitForSelector('.badge.big:has-text("running")', { timeout: 120_000 });
    await page.waitForSelector('.term[data-state="connected"]', { timeout: 60_000 });
    await page.click('.term');
    await page.keyboard.type('echo mark=$NS_MARK');
    await page.keyboard.press('Enter');
    await waitForRow(page, 'mark=kept-42');
    await page.click('nav a:has-text("Snapshots")');
    await page.waitForSelector('g.node.snapshot.hibernate');

    // an API error is shown as the API gave it (code: message)
    const refused = (await (await fetch(`${server.url}/v1/volumes`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Bad Name' }) })).json()) as {
      error: { code: string; message: string };
    };
    expect(refused.error.code).toBe('invalid_volume_name');
    await page.click('nav a:has-text("Volumes")');
    await page.fill('form input', 'Bad Name');
    await page.click('button:has-text("Create volume")');
    await page.waitForSelector('.error:has-text("invalid_volume_name")');
    expect(await page.textContent('.error')).toBe(`${refused.error.code}: ${refused.error.message}`);

    // the key never went into a URL
    expect(requests.filter((u) => u.includes(server.key))).toEqual([]);
  });

  it('in Chromium: the Hosts page lists the server (local, ready) and a host that joined it; Drain, confirmed, makes that one draining in place', async () => {
    const dataDir = tempDataDir();
    cleanupDataDir(dataDir);
    const hostDir = tempDataDir();
    cleanupDataDir(hostDir);
    const joinToken = `join-${randomBytes(16).toString('hex')}`;
    const server = await ownServer(dataDir, { NULLSPACE_WARM_POOL: '0', NULLSPACE_SNAPSHOT_POOL: '0', NULLSPACE_JOIN_TOKEN: joinToken, NULLSPACE_HOST_HEARTBEAT_MS: '1000' });
    const auth = { authorization: `Bearer ${server.key}` };

    // a runtime host on loopback (it runs no VM: no namespace needed), its own data and run dirs
    const hostProc = spawn(process.execPath, [CLI, 'host', '--control', server.url, '--join-token', joinToken, '--data-dir', hostDir, '--listen', '127.0.0.1:0'], {
      env: { ...process.env, NULLSPACE_RUN_DIR: path.join(hostDir, 'run'), NULLSPACE_NETWORK_ISOLATION: 'off', NULLSPACE_LOG_LEVEL: 'warn', NULLSPACE_API_KEY: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onTestFinished(async () => {
      if (hostProc.exitCode === null && hostProc.signalCode === null) hostProc.kill('SIGKILL');
      await exited(hostProc);
    });
    let out = '';
    hostProc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    hostProc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const hostId = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nullspace host did not join in 60 s: ${out}`)), 60_000);
      const check = () => {
        const m = / host (host_[0-9a-z]+) listening/.exec(out);
        if (m) (clearTimeout(timer), resolve(m[1]!));
      };
      hostProc.stdout!.on('data', check);
      hostProc.once('exit', (code) => (clearTimeout(timer), reject(new Error(`nullspace host exited (${code}): ${out}`))));
    });
    const hosts = (await (await fetch(`${server.url}/v1/hosts`, { headers: auth })).json()) as { hosts: Array<{ hostId: string; fingerprint: { accel: string; cpuModel: string } }> };
    expect(hosts.hosts.map((h) => h.hostId)).toEqual(['local', hostId]);
    const local = hosts.hosts[0]!;

    const browser = await launch();
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    onTestFinished(async ({ task }) => {
      if (task.result?.state === 'fail') await shot(page, 'failure-hosts').catch(() => {});
    });
    await page.goto(`${server.url}/`);
    await page.fill('#apikey', server.key);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1:has-text("Sandboxes")');
    await page.click('nav a:has-text("Hosts")');
    await page.waitForSelector('h1:has-text("Hosts")');

    // the server itself: ready, its fingerprint, no drain
    const localRow = page.locator('tr[data-host="local"]');
    await localRow.locator('td.state .badge:has-text("ready")').waitFor();
    const cells = await localRow.locator('td').allTextContents();
    expect(cells[2]).toBe(local.fingerprint.accel);
    expect(cells[3]).toContain(local.fingerprint.cpuModel);
    expect(cells[7]).toBe('0');
    expect(cells[8]).toMatch(/^\d+s ago$/);
    expect(await localRow.locator('button:has-text("Drain")').isDisabled()).toBe(true);

    // the joined host: ready, then drained (confirmed) from the page: its row changes in place from
    // the drain's answer (no reload: a marker set in the page survives), as the API then says
    const row = page.locator(`tr[data-host="${hostId}"]`);
    await row.locator('td.state .badge:has-text("ready")').waitFor();
    await shot(page, 'hosts');
    await page.evaluate(() => ((globalThis as unknown as { marker: number }).marker = 7));
    await row.locator('button:has-text("Drain")').focus();
    await page.keyboard.press('Enter');
    await page.waitForSelector('dialog.confirm[open]');
    await page.keyboard.press('Enter');
    await page.waitForSelector(`p.status:has-text("${hostId} is draining")`);
    await row.locator('td.state .badge:has-text("draining")').waitFor();
    expect(await row.locator('button:has-text("Drain")').isDisabled()).toBe(true);
    expect(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker)).toBe(7);
    const drained = (await (await fetch(`${server.url}/v1/hosts/${hostId}`, { headers: auth })).json()) as { state: string };
    expect(drained.state).toBe('draining');
    expect(await page.textContent('p.error')).toBe('');
  });
});
