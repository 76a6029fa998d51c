import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { LogController, type FastifyError, type FastifyInstance } from 'fastify';
import { Ajv } from 'ajv';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { NsError } from '@nullspace/runtime';
import { httpStatusFor, isPublicCode } from '../errors.js';
import { commandRoutes } from './commands.js';
import type { AppDeps } from './deps.js';
import { fileRoutes } from './files.js';
import { sandboxRoutes } from './sandboxes.js';
import { snapshotRoutes } from './snapshots.js';
import { ErrorBody } from './schemas.js';
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
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'http' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // JSON bodies are validated strictly (a number is not a string); query strings and path
  // parameters arrive as text and are coerced to the declared types.
  const strict = new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false, strict: false });
  const coercing = new Ajv({ removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false, strict: false });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : coercing).compile(schema));

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

  const key = digest(deps.apiKey);
  app.addHook('onRequest', async (req) => {
    // the API's description is public, by convention (it holds no data); everything else needs the key
    if (req.method === 'GET' && req.url.split('?')[0] === PUBLIC_DOCUMENT) return;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(header);
    if (!m?.[1] || !timingSafeEqual(digest(m[1]), key)) {
      throw new NsError('unauthorized', header ? 'invalid API key' : 'missing API key: send Authorization: Bearer <key>');
    }
  });

  // a POST without a body is an empty JSON object (routes whose body is optional)
  app.addHook('preValidation', async (req) => {
    if (req.body === undefined && req.method === 'POST') req.body = {};
  });

  app.setErrorHandler((err: FastifyError | NsError | Error, req, reply) => {
    const { status, body } = errorResponse(err);
    if (status >= 500) req.log.error({ err: err.message, code: body.error.code, url: req.url }, 'request failed');
    if (reply.sent || reply.raw.headersSent) {
      reply.raw.destroy();
      return;
    }
    void reply.status(status).type('application/json').send(body);
  });
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
      await v1.register(snapshotRoutes(deps));
      await v1.register(volumeRoutes(deps));
      await v1.register(templateRoutes(deps));
    },
    { prefix: '/v1' },
  );
  return app;
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
  if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, body: { error: { code: 'bad_request', message: fe.message } } };
  }
  return { status: 500, body: { error: { code: 'internal', message: err instanceof Error ? err.message : String(err) } } };
}
