import fs from 'node:fs';
import path from 'node:path';
import { NsError, readJson, writeFileAtomic } from '@nullspace/runtime';
import type { Config } from '../config.js';
import type { HostContext } from '../hostctx.js';
import type { Logger } from '../log.js';
import { newSecret, secretDigest } from './credentials.js';
import { hostCapacity, hostFingerprint } from './identity.js';
import { jsonCall } from './jsoncall.js';
import type { HostReport, HostState } from './service.js';

/** What a joined host keeps in its data dir (0600): who it is, and how each side proves itself. */
interface StoredCredentials {
  control: string;
  hostId: string;
  /** What this host presents to the control plane. */
  credential: string;
  /** sha256 of what the control plane must present to this host's listener. */
  controlCredentialDigest: string;
}

export const CREDENTIALS_FILE = 'fleet-credentials.json';

export interface RuntimeHostOptions {
  /** The control plane's base URL (http://addr:port). */
  control: string;
  /** Needed only to join (a host with stored credentials for this control plane reuses them). */
  joinToken: string | undefined;
  /** `addr:port` the listener binds (port 0: any). */
  listen: string;
  /** The URL the control plane reaches the listener at (default: http://<listen>). */
  advertise?: string | undefined;
  /** The host's configuration (data dir, cache, uid range, isolation: as `serve`'s). */
  config: Config;
  log: Logger;
  /** The server's own start (index.ts), in host mode. */
  startServer: (config: Config, opts: { log: Logger; hostMode: { keyDigest(): string | undefined; controlUrl: string } }) => Promise<HostServer>;
}

/** What the host uses of the server it runs (index.ts `RunningServer`). */
interface HostServer {
  url: string;
  host: HostContext;
  sandboxCount(): number;
  close(): Promise<void>;
}

export interface RunningHost {
  hostId: string;
  url: string;
  state(): { state: HostState | 'unreachable'; epoch: number };
  close(): Promise<void>;
}

/**
 * `nullspace host`: a runtime host of a fleet (docs/ARCHITECTURE.md "Fleet"). It joins the control
 * plane (or reuses the credentials it stored when it joined), heartbeats with its fingerprint,
 * capacity and sandbox count, and runs the server's code for the control plane's requests on a
 * listener that answers nothing without the control plane's credential.
 */
export async function startRuntimeHost(opts: RuntimeHostOptions): Promise<RunningHost> {
  const { log } = opts;
  const control = opts.control.replace(/\/+$/, '');
  const credFile = path.join(opts.config.dataDir, CREDENTIALS_FILE);
  let creds: StoredCredentials | undefined = fs.existsSync(credFile) ? readJson<StoredCredentials>(credFile) : undefined;
  if (creds && creds.control !== control) {
    throw new NsError('invalid_config', `${credFile} holds the credentials of another control plane (${creds.control}): use another data dir, or remove it to join ${control}`);
  }
  const m = /^(.*):(\d+)$/.exec(opts.listen);
  if (!m) throw new NsError('invalid_config', `--listen must be addr:port, got "${opts.listen}"`);
  const bindHost = m[1]!.replace(/^\[(.*)\]$/, '$1');
  const config: Config = { ...opts.config, host: bindHost, port: Number(m[2]) };

  // The host runs the server's own code (lifecycle, store in its data dir, layers, agents, preview
  // traffic) behind a listener that answers nothing without the control plane's credential (before
  // the join: nothing at all). The control plane places sandboxes here and routes their requests.
  const server = await opts.startServer(config, { log, hostMode: { keyDigest: () => creds?.controlCredentialDigest, controlUrl: control } });
  const port = Number(new URL(server.url).port);
  const advertised = opts.advertise ?? `http://${bindHost.includes(':') ? `[${bindHost}]` : bindHost}:${port}`;

  const report = (url: string): HostReport => ({
    url,
    fingerprint: hostFingerprint(server.host),
    capacity: hostCapacity(config.dataDir),
    counts: { sandboxes: server.sandboxCount() },
  });
  const post = async (route: string, token: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    const { status, json } = await jsonCall(`${control}/v1${route}`, token, 'POST', body, Math.max(2000, config.fleet.heartbeatMs));
    return { status, json: (json ?? {}) as Record<string, unknown> };
  };

  let heartbeatMs = config.fleet.heartbeatMs;
  try {
    if (!creds) {
      if (!opts.joinToken) throw new NsError('invalid_config', `this host has not joined ${control} yet: give the join token (--join-token / NULLSPACE_JOIN_TOKEN)`);
      const controlCredential = newSecret();
      const { status, json } = await post('/fleet/join', opts.joinToken, { ...report(advertised), controlCredential });
      if (status !== 201) {
        const err = json.error as { code?: string; message?: string } | undefined;
        throw new NsError('invalid_config', `joining ${control} failed: ${status} ${err?.code ?? ''} ${err?.message ?? ''}`.trim(), { details: { status, code: err?.code } });
      }
      creds = { control, hostId: String(json.hostId), credential: String(json.credential), controlCredentialDigest: secretDigest(controlCredential) };
      writeFileAtomic(credFile, JSON.stringify(creds, null, 2) + '\n', 0o600);
      heartbeatMs = Number(json.heartbeatMs) || heartbeatMs;
      log.info({ hostId: creds.hostId, control, url: advertised }, 'joined the control plane');
    }
  } catch (err) {
    await server.close();
    throw err;
  }
  const joined = creds;

  let state: { state: HostState | 'unreachable'; epoch: number } = { state: 'unreachable', epoch: 0 };
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const beat = async () => {
    // (at a fixed rate: a slow answer does not stretch the gap the control plane sees)
    const started = Date.now();
    try {
      const { status, json } = await post(`/fleet/hosts/${encodeURIComponent(joined.hostId)}/heartbeat`, joined.credential, report(advertised));
      if (status !== 200) {
        const err = json.error as { code?: string; message?: string } | undefined;
        log.error({ status, code: err?.code }, `heartbeat refused: ${err?.message ?? status}`);
        state = { state: 'unreachable', epoch: state.epoch };
        return;
      }
      const next = { state: json.state as HostState, epoch: Number(json.epoch) };
      if (next.epoch !== state.epoch && state.epoch !== 0) log.warn({ epoch: next.epoch }, 'fenced by the control plane: a new epoch (this host was lost)');
      state = next;
      heartbeatMs = Number(json.heartbeatMs) || heartbeatMs;
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'heartbeat failed: control plane unreachable');
      state = { state: 'unreachable', epoch: state.epoch };
    } finally {
      if (!closed) timer = setTimeout(() => void beat(), Math.max(0, heartbeatMs - (Date.now() - started)));
    }
  };
  await beat();
  return {
    hostId: joined.hostId,
    url: advertised,
    state: () => state,
    close: async () => {
      closed = true;
      clearTimeout(timer);
      await server.close();
    },
  };
}
