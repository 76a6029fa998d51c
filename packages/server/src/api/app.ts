import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifySchemaValidationError } from 'fastify';
import type { FastifyValidationResult } from 'fastify/types/schema.js';
import { Ajv, type ValidateFunction } from 'ajv';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { NsError } from '@nullspace/runtime';
import { httpStatusFor, isPublicCode } from '../errors.js';
import { previewServer } from '../preview/proxy.js';
import { e2bPortTraffic, e2bRoutes, isE2bRoute } from '../e2b/index.js';
import { apiKeyDigestHex } from '../fleet/artifacts.js';
import { artifactRoutes, grantOf, isGrantRoute } from './artifacts.js';
import { commandRoutes } from './commands.js';
import { consoleRoutes, isConsoleRoute } from './console.js';
import { eventRoutes } from './events.js';
import { metricsRoutes } from './metrics.js';
import type { AppDeps } from './deps.js';
import { fileRoutes } from './files.js';
import { hostRoutes, isFleetRoute } from './hosts.js';
import { fleetRouting } from './routing.js';
import { bearer, CONTROL_HEADER, matchesDigest } from '../fleet/credentials.js';
import { ptyRoutes } from './pty.js';
import { sandboxRoutes } from './sandboxes.js';
import { snapshotRoutes } from './snapshots.js';
import { ErrorBody, NoQuery } from './schemas.js';
import { systemRoutes } from './system.js';
import { templateRoutes } from './templates.js';
import { volumeRoutes } from './volumes.js';

/** The one route that answers without the API key. */
const PUBLIC_DOCUMENT = '/v1/openapi.json';

export type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export async function buildApp(deps: AppDeps): Promise<App> {
  const { headersTimeoutMs, bodyTimeoutMs } = deps.config.http;
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'http' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    // Headers must arrive within headersTimeoutMs (Node checks open connections every second).
    // Node's requestTimeout (a limit on the whole request) stays off: it would cut long uploads;
    // bodies have their own limits below (bodyTimeout).
    // (an HTTP/1.1 request without a Host header is refused below, in the API's error format: Node's
    // own refusal is a 400 without a body)
    // The server is made here (previewServer sets these) so that preview URL hosts and their upgrades
    // are proxied before Fastify sees them (docs/api.md "Preview URLs").
    serverFactory: (handler) => previewServer(deps.preview, { headersTimeoutMs }, handler),
    clientErrorHandler,
    // a URL the router cannot decode (bad percent-encoding) or a path parameter that is too long:
    // the API's error format like any other error
    frameworkErrors: (err, _req, reply) => {
      const { status, body } = errorResponse(err);
      void (reply as unknown as FastifyReply).status(status).type('application/json').send(body);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // JSON bodies are validated strictly (a number is not a string); query strings and path
  // parameters arrive as text and are coerced to the declared types, integers only from digits
  // (see strictIntegers). No number field takes Infinity (1e400 in JSON) or NaN.
  const strict = new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false, strict: false, strictNumbers: true });
  const coercing = new Ajv({ removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false, strict: false, strictNumbers: true });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict.compile(schema) : strictIntegers(schema, coercing.compile(schema))));

  // JSON is the only body type of every route but the upload's (which takes raw bytes): text/plain
  // is a 415 like any other type
  app.removeContentTypeParser('text/plain');

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'nullspace API',
        version: deps.version,
        description: 'Disposable Linux sandboxes (real VMs): create, files, commands. Every route but this document needs `Authorization: Bearer <API key>`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  app.addSchema(ErrorBody);
  // a route that declares no query string takes none: an unknown parameter (a typo, a parameter of
  // another route) is refused like an unknown body field instead of being ignored
  app.addHook('onRoute', (route) => {
    if (route.schema && !route.schema.querystring) route.schema.querystring = NoQuery;
  });

  const hostMode = deps.hostMode;
  // E2B's port traffic by header: to the preview proxy (packages/server/src/e2b); on a runtime host
  // after its credential check (below)
  if (!hostMode) app.addHook('onRequest', e2bPortTraffic(deps));
  const key = digest(deps.apiKey);
  // what artifact grants are signed with: the key's sha256 (hex); on a runtime host, its control
  // credential's (undefined before it joined: no grant opens anything)
  const keyHex = apiKeyDigestHex(deps.apiKey);
  const grantKey = () => (hostMode ? hostMode.keyDigest() : keyHex);
  app.addHook('onRequest', async (req) => {
    if (req.raw.httpVersion === '1.1' && req.headers.host === undefined) throw new NsError('bad_request', 'an HTTP/1.1 request needs a Host header');
    // a snapshot's manifest and layers also open to a grant, which their routes check (api/artifacts.ts)
    const grant = grantOf(req);
    if (grant !== undefined && isGrantRoute(req)) return;
    if (hostMode) {
      // a runtime host: every route needs the control plane's credential (fleet/hostd.ts), as a
      // Bearer token or, on what it forwards as it came (E2B's routes, whose Authorization is the
      // client's), in CONTROL_HEADER
      const expected = hostMode.keyDigest();
      const forwarded = req.headers[CONTROL_HEADER];
      const given = typeof forwarded === 'string' ? forwarded : bearer(req.headers.authorization);
      if (expected === undefined || !matchesDigest(given, expected)) {
        throw new NsError('unauthorized', 'this is a runtime host: only its control plane may call it');
      }
      return;
    }
    // the API's description is public, by convention (it holds no data); everything else needs the key
    if (req.method === 'GET' && req.url.split('?')[0] === PUBLIC_DOCUMENT) return;
    // the E2B-compatible surface checks its own credentials (the key as X-API-Key, per-sandbox tokens)
    if (isE2bRoute(req)) return;
    // the web console's static files (/, /assets/...) hold no data: it asks for the key itself
    if (isConsoleRoute(req)) return;
    // runtime hosts present the join token or their own credential (api/hosts.ts, fleet/service.ts)
    if (isFleetRoute(req)) return;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(header);
    if (!m?.[1] || !timingSafeEqual(digest(m[1]), key)) {
      const why = grant !== undefined ? 'a grant opens only the reads of a snapshot\'s or a template\'s artifacts: send Authorization: Bearer <key>' : header ? 'invalid API key' : 'missing API key: send Authorization: Bearer <key>';
      throw new NsError('unauthorized', why);
    }
  });

  if (hostMode) app.addHook('onRequest', e2bPortTraffic(deps));
  // requests about a sandbox or snapshot of a joined host go there (fleet/router.ts)
  if (deps.router) {
    const sandboxes = deps.sandboxes;
    app.addHook('onRequest', fleetRouting(deps.router, (id) => sandboxes.getSnapshot(id).then(() => true, () => false)));
  }

  // a POST (or a JSON PUT: /network) without a body is an empty JSON object (routes whose body is optional)
  app.addHook('preValidation', async (req) => {
    if (req.body === undefined && (req.method === 'POST' || (req.method === 'PUT' && req.routeOptions.url?.endsWith('/network')))) req.body = {};
  });

  // A JSON body (at most 1 MiB) must arrive within bodyTimeoutMs: a stalled one is a 408, not a
  // connection held open. A file upload streams (its route sets config.streamedBody) and is limited
  // by inactivity instead, where it is read (UntilIdle).
  app.addHook('preParsing', async (req, reply, payload) => {
    const streamed = (req.routeOptions.config as { streamedBody?: boolean } | undefined)?.streamedBody === true;
    if (streamed || req.raw.complete || !hasBody(req.raw)) return payload;
    const guarded = new PassThrough();
    const timer = setTimeout(() => {
      // (answered already, e.g. a 413 from its length: the rest of the body is not waited for)
      if (reply.sent) req.raw.socket?.destroy();
      else guarded.destroy(new NsError('request_timeout', `the request body did not arrive within ${bodyTimeoutMs} ms`, { details: { limitMs: bodyTimeoutMs } }));
    }, bodyTimeoutMs);
    const clear = () => clearTimeout(timer);
    payload.once('end', clear);
    payload.once('close', clear);
    // (a body no parser reads, e.g. of an unknown route, is not an uncaught error when it times out)
    guarded.on('error', () => {});
    // the body is read through only once a parser reads it: one that nobody reads is left to Node,
    // which drops it after the answer (the connection's next request comes after it)
    guarded.once('resume', () => payload.pipe(guarded));
    return guarded;
  });
  // An answer given before the whole body came (an error: unauthorized, unknown sandbox, too large)
  // lets Node read and drop the rest, for the client to see the answer; a rest that stalls closes
  // the connection.
  app.addHook('onResponse', async (req) => {
    if (req.raw.complete || req.raw.destroyed) return;
    const timer = setTimeout(() => req.raw.socket?.destroy(), bodyTimeoutMs);
    req.raw.once('end', () => clearTimeout(timer));
    req.raw.once('close', () => clearTimeout(timer));
  });

  app.setErrorHandler((err: FastifyError | NsError | Error, req, reply) => {
    // (an agent that went away: the sandbox's state is looked up first)
    if (err instanceof NsError && err.code === 'agent_unavailable') void stoppedMeanwhile(deps, req, err).then((e) => respond(e, req, reply));
    else respond(err, req, reply);
  });
  const respond = (err: Error, req: FastifyRequest, reply: FastifyReply) => {
    const { status, body } = errorResponse(err);
    if (status >= 500) req.log.error({ err: err.message, code: body.error.code, url: req.url }, 'request failed');
    if (reply.sent || reply.raw.headersSent) {
      reply.raw.destroy();
      return;
    }
    // The rest of a stalled request does not come: the connection ends with the answer. A body
    // refused before it all came (too large) is read and dropped instead, for the client to see the
    // answer: Fastify closes the connection then, and a client still sending gets a broken pipe,
    // not the 413 (a rest that stalls closes it: onResponse).
    if (body.error.code === 'request_timeout') void reply.header('connection', 'close');
    else if (!req.raw.complete) void reply.removeHeader('connection');
    void reply.status(status).type('application/json').send(body);
  };
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: 'route_not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  await app.register(
    async (v1) => {
      v1.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
      await v1.register(systemRoutes(deps));
      await v1.register(sandboxRoutes(deps));
      await v1.register(fileRoutes(deps));
      await v1.register(commandRoutes(deps));
      await v1.register(ptyRoutes(deps));
      await v1.register(snapshotRoutes(deps));
      await v1.register(volumeRoutes(deps));
      await v1.register(templateRoutes(deps));
      await v1.register(eventRoutes(deps));
      await v1.register(metricsRoutes(deps));
      await v1.register(hostRoutes(deps));
      await v1.register(artifactRoutes(deps, grantKey));
    },
    { prefix: '/v1' },
  );
  // E2B's wire at the root, beside /v1 (packages/server/src/e2b); on a runtime host, for the
  // control plane to forward E2B's requests about its sandboxes (fleet/e2b.ts)
  await app.register(e2bRoutes(deps));
  if (!hostMode) {
    // the web console at / (packages/console; docs/operations.md "Web console")
    await app.register(consoleRoutes(deps.config.consoleDir));
  }
  return app;
}

/**
 * The agent of a sandbox that stopped while the request ran (a kill, a hibernation, its VM's end)
 * goes away: that is the sandbox's state (409 sandbox_not_running), not an unavailable agent (503).
 */
async function stoppedMeanwhile(deps: AppDeps, req: FastifyRequest, err: Error): Promise<Error> {
  if (!(err instanceof NsError) || err.code !== 'agent_unavailable' || !req.routeOptions.url?.startsWith('/v1/sandboxes/:id')) return err;
  const id = (req.params as { id?: unknown } | undefined)?.id;
  let state: string;
  try {
    state = (await deps.sandboxes.get(String(id))).state;
  } catch {
    return err;
  }
  if (state === 'running') return err;
  return new NsError('sandbox_not_running', `sandbox ${String(id)} is ${state} (${err.message})`, { details: { state }, cause: err });
}

/** Whether a request announces a body (a length above 0, or a chunked one). */
function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

/**
 * Errors of the HTTP layer, before a request reaches the app (headers too slow, too large or
 * malformed): answered in the API's error format, then the connection is closed.
 */
function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const code = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request_timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : 'bad_request';
  const message = {
    request_timeout: 'the request headers did not arrive in time',
    headers_too_large: 'the request headers are too large',
    bad_request: `malformed HTTP request (${err.code ?? 'parse error'})`,
  }[code];
  const status = httpStatusFor(code);
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${code}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

const DIGITS = /^[0-9]{1,16}$/;
/** A file mode: decimal digits, or octal digits after a leading 0. */
const MODE_DIGITS = /^(?:0[0-7]{0,5}|[1-9][0-9]{0,4})$/;

/**
 * Query strings and path parameters: an integer field takes digits only (Ajv's coercion would take
 * `0x1ff`, `1e3`, `0b11` or ` 12`); a field marked `x-mode` also takes octal digits after a leading 0
 * (`0644`). The rest is Ajv's coercion and validation.
 */
function strictIntegers(schema: unknown, validate: ValidateFunction): FastifyValidationResult {
  const props = (schema as { properties?: Record<string, { type?: unknown; 'x-mode'?: unknown }> }).properties ?? {};
  const fields = Object.entries(props)
    .filter(([, p]) => p.type === 'integer')
    .map(([name, p]) => ({ name, mode: p['x-mode'] === true }));
  const check = (data: unknown): boolean => {
    const obj = data as Record<string, unknown> | null;
    for (const { name, mode } of fields) {
      const raw = obj?.[name];
      if (raw === undefined) continue;
      const values = Array.isArray(raw) ? raw : [raw];
      for (const v of values) {
        if (typeof v !== 'string' || (mode ? MODE_DIGITS : DIGITS).test(v)) continue;
        check.errors = [
          { keyword: 'digits', instancePath: `/${name}`, schemaPath: '', params: {}, message: mode ? 'must be decimal digits, or octal digits after a leading 0' : 'must be decimal digits' },
        ];
        return false;
      }
      if (mode) {
        const octal = (v: unknown) => (typeof v === 'string' && v.length > 1 && v.startsWith('0') ? String(parseInt(v, 8)) : v);
        obj![name] = Array.isArray(raw) ? raw.map(octal) : octal(raw);
      }
    }
    const ok = validate(data);
    check.errors = validate.errors;
    return ok;
  };
  check.errors = null as FastifySchemaValidationError[] | null | undefined;
  return check;
}

/** Maps any error to the API's error body and HTTP status (the status map is in errors.ts). */
export function errorResponse(err: unknown): { status: number; body: { error: { code: string; message: string; details?: Record<string, unknown> } } } {
  if (err instanceof NsError) {
    const code = isPublicCode(err.code) ? err.code : 'internal';
    const details = Object.keys(err.details).length ? err.details : undefined;
    return { status: httpStatusFor(code), body: { error: { code, message: err.message, ...(details ? { details } : {}) } } };
  }
  const fe = err as FastifyError & { validation?: Array<{ instancePath?: string; params?: Record<string, unknown>; message?: string }>; validationContext?: string };
  if (fe.validation) {
    const v = fe.validation[0];
    const missing = v?.params?.missingProperty as string | undefined;
    const extra = v?.params?.additionalProperty as string | undefined;
    const pathPart = (v?.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
    const context = fe.validationContext === 'body' ? '' : fe.validationContext;
    if (extra !== undefined && pathPart) {
      // a map (metadata, envs) with a key that does not match its pattern
      const field = [context, pathPart].filter(Boolean).join('.');
      return { status: 400, body: { error: { code: 'validation_failed', message: `${field}: invalid key "${extra}"`, details: { field, key: extra } } } };
    }
    const field = [context, pathPart, missing ?? extra].filter(Boolean).join('.');
    const message = extra ? `unknown field "${field}"` : `${field || fe.validationContext || 'request'} ${v?.message ?? 'is invalid'}`;
    return { status: 400, body: { error: { code: 'validation_failed', message, details: { field } } } };
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, body: { error: { code: 'payload_too_large', message: 'request body is too large' } } };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, body: { error: { code: 'unsupported_media_type', message: fe.message } } };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, body: { error: { code: 'invalid_json', message: fe.message } } };
    default:
      break;
  }
  if (err instanceof SyntaxError) return { status: 400, body: { error: { code: 'invalid_json', message: `malformed JSON: ${err.message}` } } };
  // (other framework errors of the request: bad_request, with the status the map gives it)
  if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: httpStatusFor('bad_request'), body: { error: { code: 'bad_request', message: fe.message } } };
  }
  return { status: 500, body: { error: { code: 'internal', message: err instanceof Error ? err.message : String(err) } } };
}
