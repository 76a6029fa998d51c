import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AppDeps } from '../api/deps.js';
import { isSandboxId } from '../sandbox/manager.js';
import { STREAM_TYPE } from './connect.js';
import { controlRoutes } from './control.js';
import { ENVD_PORT, envdHttpRoutes, signatureOwner } from './envd.js';
import { E2bError, httpError } from './errors.js';
import { filesystemRoutes } from './filesystem.js';
import { forwardControl, forwardEnvd, SIGNATURE_OWNER_ROUTE } from './fleet.js';
import { processRoutes } from './process.js';

/**
 * The E2B-compatible surface (docs/api.md, "E2B compatibility"): the official `e2b` SDKs, unchanged,
 * drive nullspace with E2B_API_URL and E2B_SANDBOX_URL set to this server. It sits at the root of
 * the listener beside /v1 (no E2B path starts with /v1) and translates E2B's wire onto the sandbox
 * manager and the agent calls the native routes use: no second implementation of sandboxes, files
 * or processes.
 *
 * - control plane (`/sandboxes`, `/v2/sandboxes`...): the server's key as `X-API-Key` (or Bearer);
 * - envd (`/health`, `/files`, `/process.Process/*`, `/filesystem.Filesystem/*`): requests carry
 *   `E2b-Sandbox-Id`/`E2b-Sandbox-Port` and the sandbox's own access token (`X-Access-Token`).
 *
 * Every route is marked `config.e2b`: the native Bearer check (app.ts) leaves them to this module.
 */

/** Whether a request is for this surface (its route is one of this module's). */
export function isE2bRoute(req: FastifyRequest): boolean {
  return (req.routeOptions.config as { e2b?: unknown } | undefined)?.e2b === true;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Port traffic in E2B's header form (`E2b-Sandbox-Id` + an `E2b-Sandbox-Port` other than envd's
 * 49983, on any path): served by the preview proxy, as `<port>-<sandboxId>.<domain>` is (same
 * checks: its traffic token, its state). A root `onRequest` hook (app.ts adds it before the API key
 * check): such a request matches no route of either surface. Upgrades (WebSocket) go by host only.
 */
export const e2bPortTraffic =
  (deps: AppDeps) =>
  async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    const port = req.headers['e2b-sandbox-port'];
    if (port === undefined || port === ENVD_PORT) return undefined;
    const id = req.headers['e2b-sandbox-id'];
    const n = Number(port);
    if (typeof port !== 'string' || !/^[0-9]{1,5}$/.test(port) || n < 1 || n > 65535 || typeof id !== 'string' || !isSandboxId(id)) {
      const { status, body } = httpError(new E2bError(400, 'port traffic needs E2b-Sandbox-Id (a sandbox id) and E2b-Sandbox-Port (1 to 65535)'));
      return reply.status(status).type('application/json').send(body);
    }
    reply.hijack();
    deps.preview.handleRequest(req.raw, reply.raw, { id, port: n });
    return reply;
  };

export const e2bRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (app: FastifyInstance) => {
    app.addHook('onRoute', (route) => {
      route.config = { ...(route.config as object | undefined), e2b: true } as typeof route.config;
      // not part of nullspace's OpenAPI document; query strings are read by the handlers (E2B's
      // clients add parameters: unknown ones are ignored here, unlike on /v1)
      route.schema = { ...route.schema, hide: true, querystring: route.schema?.querystring ?? { type: 'object' } };
    });
    app.setErrorHandler((err, req, reply) => {
      const { status, body } = httpError(err);
      if (status >= 500 && status !== 501 && status !== 502) req.log.error({ err: (err as Error).message, url: req.url }, 'e2b request failed');
      if (reply.sent || reply.raw.headersSent) {
        reply.raw.destroy();
        return;
      }
      void reply.status(status).type('application/json').send(body);
    });
    // RPC bodies: the unary ones are JSON (Fastify's parser), a stream's is one binary envelope
    app.addContentTypeParser(STREAM_TYPE, { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

    const key = digest(deps.apiKey);
    await app.register(async (control) => {
      // (a runtime host's listener checked the control plane's credential already: app.ts)
      if (!deps.hostMode) {
        control.addHook('onRequest', async (req) => {
          const given = (req.headers['x-api-key'] as string | undefined) ?? /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
          if (!given || !timingSafeEqual(digest(given), key)) throw new E2bError(401, given ? 'invalid API key' : 'missing API key: send X-API-Key');
        });
      }
      // a sandbox of a joined host: that host's E2B surface answers (fleet.ts)
      if (deps.router) control.addHook('preHandler', forwardControl(deps.router));
      controlRoutes(control, deps);
    });
    await app.register(async (envd) => {
      if (deps.router) envd.addHook('onRequest', forwardEnvd(deps, deps.router));
      // a runtime host says whose signature a signed URL carries (fleet.ts: its control plane asks)
      if (deps.hostMode) {
        envd.post(SIGNATURE_OWNER_ROUTE, async (req) => {
          const b = (req.body ?? {}) as { query?: unknown; operation?: unknown };
          if (!b.query || typeof b.query !== 'object' || (b.operation !== 'read' && b.operation !== 'write')) throw new E2bError(400, 'query (object) and operation (read or write) are required');
          return { sandboxId: (await signatureOwner(deps, b.query as Record<string, unknown>, b.operation)) ?? null };
        });
      }
      envdHttpRoutes(envd, deps);
      processRoutes(envd, deps);
      filesystemRoutes(envd, deps);
    });
  };
