import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataDirLayout, importImage, Progress } from '@nullspace/runtime';
import { buildApp, type App } from './api/app.js';
import { resolveApiKey } from './apikey.js';
import type { Config } from './config.js';
import { HostContext } from './hostctx.js';
import { createLogger, type Logger } from './log.js';
import { SandboxManager } from './sandbox/manager.js';
import { openStore } from './store/index.js';
import { EventLog } from './events/log.js';
import { WebhookService } from './events/webhooks.js';
import { VolumeService } from './volumes.js';
import { Gc } from './gc.js';
import { BuildContexts } from './templates/contexts.js';
import { TemplateBuilds } from './templates/builds.js';
import { TemplateService } from './templates/service.js';
import { Preview, previewServer } from './preview/proxy.js';
import { FleetService } from './fleet/service.js';
import { Artifacts } from './fleet/artifacts.js';
import { TemplateArtifacts } from './fleet/templates.js';
import { hostCapacity, hostFingerprint } from './fleet/identity.js';
import { FleetRouter } from './fleet/router.js';
import { EventRelay } from './fleet/relay.js';
import { startRuntimeHost as runtimeHost, type RunningHost, type RuntimeHostOptions } from './fleet/hostd.js';
import { CONTROL_HEADER, matchesDigest, newSecret } from './fleet/credentials.js';

export { loadConfig, DEFAULT_DATA_DIR, DEFAULT_HOME, DEFAULT_PORT, type Config } from './config.js';
export { API_KEY_FILE } from './apikey.js';
export { CREDENTIALS_FILE, type RunningHost } from './fleet/hostd.js';
export { apiKeyDigestHex } from './fleet/artifacts.js';
export { snapshotGrant, templateGrant } from './fleet/grant.js';
export type { TemplateImportResult, TemplateManifest } from './fleet/templates.js';
export { createLogger } from './log.js';
export { httpStatusFor, isPublicCode } from './errors.js';
export { STATES, canTransition, type SandboxState } from './sandbox/lifecycle.js';
export { storeCounts, type StoreCounts } from './store/db.js';

export const VERSION: string = (JSON.parse(
  fs.readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../package.json'), 'utf8'),
) as { version: string }).version;

export interface RunningServer {
  app: App;
  url: string;
  /** The proxy's own listener (NULLSPACE_PROXY_PORT), when configured. */
  proxyUrl: string | undefined;
  apiKey: string;
  apiKeySource: string;
  host: HostContext;
  log: Logger;
  /** How many sandboxes this server runs now. */
  sandboxCount(): number;
  /** Stops serving. Sandbox VMs keep running; a server started on the same data dir re-adopts them. */
  close(): Promise<void>;
}

/** How often the fleet's hosts are reconciled with the records, and what age a sandbox unknown to them needs to be killed. */
const RECONCILE_EVERY_MS = 60_000;
const RECONCILE_GRACE_MS = 5 * 60_000;

/** How long `close` waits for requests in flight before it cuts their connections. */
const CLOSE_GRACE_MS = 2000;

/** `nullspace host`: a runtime host of a fleet, running this server's code (fleet/hostd.ts). */
export function startRuntimeHost(opts: Omit<RuntimeHostOptions, 'startServer'>): Promise<RunningHost> {
  return runtimeHost({ ...opts, startServer });
}

export interface ServerOptions {
  log?: Logger;
  /**
   * A runtime host's server (`nullspace host`, fleet/hostd.ts): every route needs the control
   * plane's credential (its sha256, hex, from `keyDigest`; undefined: not joined yet, nothing
   * answers); no API key file, no E2B surface, no console; preview traffic only through the control
   * plane.
   */
  hostMode?: { keyDigest(): string | undefined; controlUrl?: string };
}

export async function startServer(config: Config, opts: ServerOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config.logLevel);
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const hostMode = opts.hostMode;
  // (a runtime host has no API key of its own: an unguessable one that nothing presents)
  const { key, source } = hostMode ? { key: newSecret(), source: 'none (runtime host)' } : resolveApiKey(config.dataDir, config.apiKey);
  const trace = config.lifecycleTrace;
  const store = await openStore(config, {
    onTransition: trace ? (e) => fs.appendFileSync(trace, JSON.stringify({ ...e, dataDir: config.dataDir }) + '\n') : undefined,
  });
  const host = await HostContext.init(config, log);
  const stopGuardWatch = host.watchNetworkGuard(log, config.networkGuardCheckMs);
  const volumes = new VolumeService(config, store.volumes, log);
  volumes.init();
  const events = new EventLog(store.events, { maxAgeMs: config.events.retentionMs, maxEvents: config.events.maxEvents });
  events.start();
  const sandboxes = new SandboxManager(config, store.sandboxes, store.snapshots, volumes, host, log, events);
  const gc = new Gc(store.snapshots, store.sandboxes, sandboxes.layersLock, sandboxes.layersDir, log);
  // (test-only fault injection "gc-on-request-only": the collector runs only when asked, so that a
  // test can compare a dry run with the real run after it)
  const autoGc = config.faultInjection !== 'gc-on-request-only';
  if (autoGc) sandboxes.onLayersReleased = () => gc.schedule();
  await sandboxes.start();
  if (autoGc) gc.schedule(0);
  const contexts = new BuildContexts(config.dataDir, config.limits.maxUploadBytes);
  contexts.start();
  const builds = new TemplateBuilds({
    cacheDir: config.cacheDir,
    dataDir: config.dataDir,
    profile: host.profile,
    template: (ref) => host.template(ref),
    vms: sandboxes.vms,
    admit: (memoryMiB) => sandboxes.admit(memoryMiB),
    importImage: (source, diskSizeMiB, info) =>
      importImage({
        source,
        cacheDir: config.cacheDir,
        imagesDir: config.imagesDir,
        agentDir: config.agentDir,
        diskSizeMiB,
        insecureRegistries: config.insecureRegistries,
        progress: new Progress('image', info),
      }),
    log,
  });
  const templates = new TemplateService(config.cacheDir, (ref) => host.template(ref), (t) => host.compatible(t), contexts, builds);
  const preview = new Preview(config, sandboxes, log);
  const webhooks = new WebhookService(store.webhooks, events, config.webhooks, log, `nullspace-webhooks/${VERSION}`);
  webhooks.start();
  const fleet = new FleetService(
    store.hosts,
    config.fleet,
    () => ({ fingerprint: hostFingerprint(host), capacity: hostCapacity(config.dataDir), counts: { sandboxes: sandboxes.usage.sandboxes } }),
    log.child({ component: 'fleet' }),
  );
  const router = fleet.enabled
    ? new FleetRouter(store.hosts, store.placements, fleet, { localSandboxes: config.fleet.localSandboxes, replicas: config.fleet.replicas, localLoad: () => sandboxes.usage.sandboxes, apiKey: key, localHas: (id) => sandboxes.getSnapshot(id).then(() => true, () => false) }, log.child({ component: 'fleet' }))
    : undefined;
  let stopReconcile: (() => void) | undefined;
  const relay = router ? new EventRelay(store.hosts, store.placements, events, log.child({ component: 'fleet' }), config.fleet.heartbeatMs) : undefined;
  if (router) {
    preview.remote = router;
    relay!.start();
    stopReconcile = router.reconcileEvery(RECONCILE_EVERY_MS, RECONCILE_GRACE_MS);
    // a lost host that is back: what it runs is reconciled with the records
    fleet.onFenced = (hostId) => void router.reconcile(hostId).catch((err: unknown) => log.error({ hostId, err: (err as Error).message }, 'reconciling a returning host failed'));
  }
  if (hostMode) {
    const gate = hostMode.keyDigest;
    preview.gate = (req) => {
      const d = gate();
      const v = req.headers[CONTROL_HEADER];
      return d !== undefined && typeof v === 'string' && matchesDigest(v, d);
    };
  }
  fleet.start();
  const artifacts = new Artifacts({
    snapshots: store.snapshots,
    layout: new DataDirLayout(config.dataDir),
    cacheDir: config.cacheDir,
    layersLock: sandboxes.layersLock,
    minFreeDiskMiB: config.limits.minFreeDiskMiB,
    log: log.child({ component: 'artifacts' }),
  });
  const templateArtifacts = new TemplateArtifacts({
    cacheDir: config.cacheDir,
    profile: host.profile,
    minFreeDiskMiB: config.limits.minFreeDiskMiB,
    log: log.child({ component: 'artifacts' }),
  });
  const app = await buildApp({ config, apiKey: key, sandboxes, volumes, templates, gc, host, log, version: VERSION, preview, events, webhooks, fleet, router, hostMode, artifacts, templateArtifacts });
  const proxyServer = config.preview.proxyPort !== undefined ? previewServer(preview, { headersTimeoutMs: config.http.headersTimeoutMs }) : undefined;
  const hostPart = config.host.includes(':') ? `[${config.host}]` : config.host;
  let proxyUrl: string | undefined;
  try {
    await app.listen({ host: config.host, port: config.port });
    if (proxyServer) {
      await new Promise<void>((resolve, reject) => {
        proxyServer.once('error', reject);
        proxyServer.listen(config.preview.proxyPort, config.host, () => resolve());
      });
      const a = proxyServer.address();
      const p = typeof a === 'object' && a ? a.port : config.preview.proxyPort!;
      preview.setListenPort(p);
      proxyUrl = `http://${hostPart}:${p}`;
    }
  } catch (err) {
    preview.close();
    await app.close().catch(() => {});
    relay?.stop();
    stopReconcile?.();
    fleet.stop();
    stopGuardWatch();
    webhooks.stop();
    events.stop();
    await sandboxes.close();
    await store.close();
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  if (!proxyServer) preview.setListenPort(port);
  const url = `http://${hostPart}:${port}`;
  let closed: Promise<void> | undefined;
  return {
    app,
    url,
    proxyUrl,
    apiKey: key,
    apiKeySource: source,
    host,
    log,
    sandboxCount: () => sandboxes.usage.sandboxes,
    close: () =>
      (closed ??= (async () => {
        // requests in flight get a moment to finish; streams that would not end on their own (a
        // background command's output) are then cut: the sandboxes themselves keep running
        const force = setTimeout(() => {
          app.server.closeAllConnections();
          proxyServer?.closeAllConnections();
          // (upgraded connections, WebSockets, are no longer the HTTP server's to close)
          preview.close();
        }, CLOSE_GRACE_MS);
        await Promise.all([app.close(), proxyServer ? new Promise((r) => proxyServer.close(r)) : undefined]);
        clearTimeout(force);
        preview.close();
        gc.cancel();
        contexts.stop();
        relay?.stop();
        stopReconcile?.();
        fleet.stop();
        stopGuardWatch();
        webhooks.stop();
        await sandboxes.close();
        events.stop();
        await store.close();
      })()),
  };
}
