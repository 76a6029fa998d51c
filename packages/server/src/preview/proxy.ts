import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorMessage, NsError, openTunnel, SANDBOX_ID_RE, type TunnelSocket } from '@nullspace/runtime';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { SandboxManager } from '../sandbox/manager.js';
import type { SandboxRecord } from '../store/sandboxes.js';
import { CONTROL_HEADER } from '../fleet/credentials.js';
import { checkAccess, cookiesForGuest, E2B_TOKEN_HEADER, TOKEN_HEADER, type Access } from './access.js';
import { sendError, sendRedirect, sendUpgradeError } from './answers.js';

/**
 * Preview URLs: `<port>-<sandboxId>.<domain>` reaches TCP port `port` inside the sandbox, whatever
 * the guest's network (its internet access may be off), through the agent's `net.connect` tunnel
 * (runtime/src/agent/tunnel.ts). A request is matched by its Host header before Fastify sees it.
 *
 * Requests are proxied one by one with Node's own HTTP client, over an http.Agent whose
 * createConnection opens a tunnel (kept alive and reused per sandbox and port like any
 * connection): Node parses and frames both sides (keep-alive, chunked bodies, HEAD, 100-continue),
 * every body streams with backpressure, and each request is checked (token, state) on its own.
 * An upgrade (WebSocket) is written raw to a tunnel of its own after the same checks, and the two
 * connections are piped both ways from then on.
 */

/** Headers of one hop, not forwarded (RFC 9110 7.6.1), and ours. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);
/** While a proxied connection is open, its sandbox's timeout starts again this often. */
const ACTIVE_TOUCH_MS = 5000;
/** A tunnel kept alive for the next request of its sandbox and port is closed after this long unused. */
const FREE_TUNNEL_IDLE_MS = 30_000;

/** Preview traffic of sandboxes on joined hosts (the control plane's fleet router). */
export interface RemoteTraffic {
  /** Forwards the request if `t`'s sandbox runs on a joined host (true: handled). */
  request(req: IncomingMessage, res: ServerResponse, t: PreviewTarget): Promise<boolean>;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, t: PreviewTarget): Promise<boolean>;
}

export interface PreviewTarget {
  port: number;
  id: string;
}

export class Preview {
  private listenPort: number | undefined;
  private readonly suffix: string;
  private readonly agent: http.Agent;
  /** Resumes under way (one per sandbox, however many requests wait for it). */
  private readonly waking = new Map<string, Promise<SandboxRecord>>();
  /** Open proxied connections per sandbox (their sandboxes count as active). */
  private readonly active = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  /** Client connections upgraded (and piped to a tunnel): the HTTP server no longer closes them. */
  private readonly upgraded = new Set<Duplex>();
  /**
   * The fleet (docs/ARCHITECTURE.md "Fleet"). On a control plane: traffic of a sandbox that runs
   * on a joined host goes there (true: handled). On a runtime host: traffic must come from the
   * control plane (`gate` checks its credential, carried in CONTROL_HEADER, never passed on).
   */
  remote: RemoteTraffic | undefined;
  gate: ((req: IncomingMessage) => boolean) | undefined;

  constructor(
    private readonly config: Config,
    private readonly sandboxes: SandboxManager,
    private readonly log: Logger,
  ) {
    this.suffix = `.${(config.preview.domain ?? 'localhost').replace(/:[0-9]+$/, '')}`;
    const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64 });
    // an idle tunnel kept for reuse is closed after FREE_TUNNEL_IDLE_MS (the agent's `timeout` option
    // would add a listener to the socket on every request it carries)
    const keep = agent.keepSocketAlive.bind(agent);
    agent.keepSocketAlive = (socket) => {
      const ok = keep(socket);
      (socket as unknown as TunnelSocket).setTimeout(FREE_TUNNEL_IDLE_MS);
      return ok;
    };
    // (Node's http.Agent takes a createConnection with a callback: the tunnel opens asynchronously)
    (agent as unknown as { createConnection: unknown }).createConnection = (opts: { host: string; port: number }, cb: (err: Error | null, s?: Duplex) => void) => {
      void this.sandboxes
        .agent(opts.host)
        .then((a) => openTunnel(a, opts.port))
        .then(
          (s) => cb(null, s),
          (err: unknown) => cb(err as Error),
        );
      return undefined;
    };
    this.agent = agent;
    this.timer = setInterval(() => {
      for (const id of this.active.keys()) this.touch(id);
    }, ACTIVE_TOUCH_MS);
    this.timer.unref();
  }

  /** The port the preview URLs are served on, when no public domain is configured (`localhost:<port>`). */
  setListenPort(port: number): void {
    this.listenPort = port;
  }

  /** `domain[:port]`, as the sandbox views show it (the SDKs build hosts with it). */
  get publicDomain(): string {
    if (this.config.preview.domain) return this.config.preview.domain;
    const port = this.listenPort ?? this.config.preview.proxyPort ?? this.config.port;
    return port === 80 ? 'localhost' : `localhost:${port}`;
  }

  get scheme(): 'http' | 'https' {
    return this.config.preview.scheme;
  }

  /** The sandbox and port a Host header names, or undefined when it is not a preview host. */
  match(host: string | undefined): PreviewTarget | undefined {
    if (!host) return undefined;
    const name = host.toLowerCase().replace(/:[0-9]+$/, '');
    if (!name.endsWith(this.suffix)) return undefined;
    const m = /^([0-9]{1,5})-(sbx_[0-9a-z]+)$/.exec(name.slice(0, -this.suffix.length));
    if (!m?.[1] || !m[2]) return undefined;
    const port = Number(m[1]);
    if (port < 1 || port > 65535 || !SANDBOX_ID_RE.test(m[2])) return undefined;
    return { port, id: m[2] };
  }

  /** Cuts every proxied connection (the server is closing). */
  close(): void {
    clearInterval(this.timer);
    this.agent.destroy();
    for (const s of this.upgraded) s.destroy();
  }

  /** Traffic to a sandbox starts its timeout again. */
  private touch(id: string): void {
    void this.sandboxes.touch(id).catch(() => {
      // (gone meanwhile)
    });
  }

  private track(id: string): () => void {
    this.active.set(id, (this.active.get(id) ?? 0) + 1);
    this.touch(id);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.active.get(id) ?? 1) - 1;
      if (n > 0) this.active.set(id, n);
      else this.active.delete(id);
      this.touch(id);
    };
  }

  /**
   * The checks of every request: the sandbox exists, the request may reach it, it runs (a
   * hibernated one with autoResume is resumed first, once for all the requests that wait).
   */
  private async admit(req: IncomingMessage, t: PreviewTarget): Promise<Access> {
    let rec = await this.sandboxes.get(t.id);
    const access = checkAccess(req, { id: rec.id, port: t.port, trafficToken: rec.trafficToken, allowPublicTraffic: rec.allowPublicTraffic }, this.scheme === 'https');
    if (access.redirect) return access;
    switch (rec.state) {
      case 'running':
        break;
      case 'killing':
      case 'killed':
      case 'failed':
        throw new NsError('sandbox_ended', `sandbox ${t.id} has ended (${rec.endReason ?? rec.state}); create a new one`, { details: { state: rec.state } });
      case 'resuming':
        rec = await this.wake(t.id);
        break;
      case 'paused':
      case 'hibernating':
        if (!rec.autoResume) {
          throw new NsError(
            'sandbox_paused',
            `sandbox ${t.id} is hibernated: resume it (sandbox.resume(), POST /v1/sandboxes/${t.id}/resume), or create it with lifecycle.autoResume so that a request wakes it`,
            { details: { state: rec.state } },
          );
        }
        rec = await this.wake(t.id);
        break;
      default:
        throw new NsError('sandbox_not_running', `sandbox ${t.id} is ${rec.state}`, { details: { state: rec.state } });
    }
    return access;
  }

  private wake(id: string): Promise<SandboxRecord> {
    let p = this.waking.get(id);
    if (!p) {
      this.log.info({ sandboxId: id }, 'resuming a sandbox for a preview request');
      p = this.sandboxes.resume(id).finally(() => this.waking.delete(id));
      this.waking.set(id, p);
    }
    return p;
  }

  /** The request's headers for the guest's server: ours and the hop's taken out, X-Forwarded-* added. */
  private checkGate(req: IncomingMessage): void {
    if (this.gate && !this.gate(req)) throw new NsError('unauthorized', 'this is a runtime host: only its control plane may call it');
  }

  private forwardHeaders(req: IncomingMessage, keepUpgrade: boolean): string[] {
    const out: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!;
      const lower = name.toLowerCase();
      if (lower === TOKEN_HEADER || lower === E2B_TOKEN_HEADER || lower === CONTROL_HEADER || lower.startsWith('x-forwarded-')) continue;
      if (HOP.has(lower) && !(keepUpgrade && (lower === 'connection' || lower === 'upgrade'))) continue;
      let value = raw[i + 1]!;
      if (lower === 'cookie') {
        const kept = cookiesForGuest(value);
        if (kept === undefined) continue;
        value = kept;
      }
      out.push(name, value);
    }
    const peer = req.socket.remoteAddress;
    if (peer) out.push('X-Forwarded-For', peer);
    out.push('X-Forwarded-Proto', this.scheme, 'X-Forwarded-Host', req.headers.host ?? '');
    return out;
  }

  /** Serves a request whose Host names a preview URL (`match`). */
  handleRequest(req: IncomingMessage, res: ServerResponse, t: PreviewTarget): void {
    this.serve(req, res, t).catch((err: unknown) => {
      if (!res.headersSent) this.logFailure(t, err);
      sendError(req, res, err);
    });
  }

  private logFailure(t: PreviewTarget, err: unknown): void {
    const code = err instanceof NsError ? err.code : 'internal';
    if (code === 'internal' || code === 'agent_unavailable') this.log.warn({ sandboxId: t.id, port: t.port, err: errorMessage(err) }, 'preview request failed');
  }

  private async serve(req: IncomingMessage, res: ServerResponse, t: PreviewTarget): Promise<void> {
    this.checkGate(req);
    if (this.remote && (await this.remote.request(req, res, t))) return;
    const access = await this.admit(req, t);
    if (access.redirect) return sendRedirect(res, access.redirect.location, access.redirect.cookie);
    const release = this.track(t.id);
    res.once('close', release);
    await new Promise<void>((resolve, reject) => {
      const preq = http.request({
        agent: this.agent,
        host: t.id,
        port: t.port,
        method: req.method,
        path: access.path,
        headers: this.forwardHeaders(req, false) as unknown as http.OutgoingHttpHeaders,
        setHost: false,
      });
      preq.on('response', (pres) => {
        const headers: string[] = [];
        const raw = pres.rawHeaders;
        for (let i = 0; i + 1 < raw.length; i += 2) if (!HOP.has(raw[i]!.toLowerCase())) headers.push(raw[i]!, raw[i + 1]!);
        res.writeHead(pres.statusCode ?? 502, pres.statusMessage, headers);
        // (an event stream's headers go out before its first event)
        res.flushHeaders();
        pres.pipe(res);
        pres.on('error', () => res.destroy());
        pres.on('aborted', () => res.destroy());
        resolve();
      });
      preq.on('error', (err) => {
        if (res.headersSent) {
          res.destroy();
          return resolve();
        }
        reject(this.upstreamError(t, err));
      });
      res.once('close', () => {
        if (!res.writableFinished) preq.destroy();
      });
      req.on('error', () => preq.destroy());
      req.pipe(preq);
    });
  }

  /** What a failure to reach the guest's server is, for the client. */
  private upstreamError(t: PreviewTarget, err: unknown): NsError {
    if (err instanceof NsError) {
      if (err.code === 'port_not_open') {
        return new NsError('port_not_open', `nothing is listening on port ${t.port} in sandbox ${t.id}`, { details: { port: t.port }, cause: err });
      }
      if (err.code === 'agent_unavailable' || err.code === 'sandbox_not_running' || err.code === 'sandbox_not_found') return err;
    }
    return new NsError('bad_gateway', `the server on port ${t.port} in sandbox ${t.id} closed the connection without a complete answer (${errorMessage(err)})`, {
      details: { port: t.port },
      cause: err,
    });
  }

  /** An upgrade (WebSocket) to a preview URL: checked like a request, then piped raw both ways. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, t: PreviewTarget): void {
    socket.on('error', () => socket.destroy());
    this.upgraded.add(socket);
    socket.once('close', () => this.upgraded.delete(socket));
    void (async () => {
      this.checkGate(req);
      if (this.remote && (await this.remote.upgrade(req, socket, head, t))) return;
      const access = await this.admit(req, t);
      if (access.redirect) throw new NsError('traffic_token_missing', 'an upgrade request cannot follow a signed URL redirect: send the traffic token header or the cookie');
      const tunnel = await openTunnel(await this.sandboxes.agent(t.id), t.port).catch((err: unknown) => {
        throw this.upstreamError(t, err);
      });
      if (socket.destroyed) return tunnel.destroy();
      const release = this.track(t.id);
      const headers = this.forwardHeaders(req, true);
      let text = `${req.method ?? 'GET'} ${access.path} HTTP/1.1\r\n`;
      for (let i = 0; i + 1 < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
      tunnel.write(text + '\r\n');
      if (head.length) tunnel.write(head);
      const close = () => {
        release();
        tunnel.destroy();
        socket.destroy();
      };
      tunnel.on('error', close);
      socket.on('error', close);
      socket.on('close', close);
      // (the guest side ended both ways: the client gets what is still buffered, then the end)
      tunnel.on('close', () => {
        release();
        socket.end();
      });
      tunnel.pipe(socket);
      socket.pipe(tunnel);
    })().catch((err: unknown) => {
      this.logFailure(t, err);
      sendUpgradeError(req, socket, err);
    });
  }
}

export interface HttpServerOptions {
  headersTimeoutMs: number;
}

/**
 * An HTTP server whose preview hosts go to `preview` before anything else; other requests go to
 * `fallback` (the API: Fastify's handler), or, on a listener of the proxy's own, get a 404.
 */
export function previewServer(preview: Preview, opts: HttpServerOptions, fallback?: (req: IncomingMessage, res: ServerResponse) => void): http.Server {
  const notPreview = (req: IncomingMessage) =>
    new NsError('route_not_found', `${req.headers.host ?? '(no host)'} is not a preview URL: use <port>-<sandboxId>.${preview.publicDomain}`);
  const server = http.createServer(
    {
      // (as the API's own server: headers in time; no limit on a whole request, which may be a long upload)
      headersTimeout: opts.headersTimeoutMs,
      requestTimeout: 0,
      connectionsCheckingInterval: Math.min(1000, opts.headersTimeoutMs),
      requireHostHeader: false,
    },
    (req, res) => {
      const t = preview.match(req.headers.host);
      if (t) preview.handleRequest(req, res, t);
      else if (fallback) fallback(req, res);
      else sendError(req, res, notPreview(req));
    },
  );
  server.keepAliveTimeout = 72_000;
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const t = preview.match(req.headers.host);
    if (t) preview.handleUpgrade(req, socket, head, t);
    else sendUpgradeError(req, socket, notPreview(req));
  });
  return server;
}
