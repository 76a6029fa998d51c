import { createHash, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Busboy } from '@fastify/busboy';
import type { GuestAgent } from '@nullspace/runtime';
import { clientGone, readFile, writeFile } from '../agentio.js';
import type { AppDeps } from '../api/deps.js';
import { NsError } from '../errors.js';
import type { SandboxRecord } from '../store/sandboxes.js';
import { UntilIdle } from '../util.js';
import { E2bError, notSupported } from './errors.js';
import { filesUser, resolvePath } from './user.js';

/**
 * envd's HTTP side (`/health`, `/files`) and what every envd request shares: which sandbox it is
 * for (the `E2b-Sandbox-Id` header: with E2B_SANDBOX_URL one origin serves every sandbox, as E2B's
 * proxy does for its shared host) and its access token.
 */

/** The port envd listens on in an E2B sandbox: requests for any other port are port traffic. */
export const ENVD_PORT = '49983';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * The sandbox an envd request is for, once its access token matched: 502 in the shape of E2B's proxy
 * when it is unknown or not running (the SDK reads that as "not running"), 401 for a wrong token.
 */
export async function envdSandbox(deps: AppDeps, req: FastifyRequest): Promise<string> {
  const id = header(req, 'e2b-sandbox-id');
  const port = header(req, 'e2b-sandbox-port');
  if (port !== undefined && port !== ENVD_PORT) throw notSupported(`traffic to port ${port} of a sandbox (getHost)`);
  if (!id) throw new E2bError(502, 'no E2b-Sandbox-Id header: envd requests name their sandbox', { sandboxId: '' });
  let token: string | null;
  let state: string;
  try {
    const rec = await deps.sandboxes.get(id);
    token = rec.accessToken;
    state = rec.state;
  } catch {
    throw new E2bError(502, 'The sandbox was not found', { sandboxId: id });
  }
  if (state !== 'running') throw new E2bError(502, `The sandbox was not found (it is ${state})`, { sandboxId: id });
  const given = header(req, 'x-access-token');
  if (!token || given === undefined || !timingSafeEqual(digest(given), digest(token))) {
    throw new E2bError(401, given === undefined ? 'missing X-Access-Token' : 'invalid access token for this sandbox');
  }
  return id;
}

/**
 * The sandbox of a `/files` request: by its token (envdSandbox), or, for the signed URLs of
 * `uploadUrl()`/`downloadUrl()` (no headers: with E2B_SANDBOX_URL they carry no sandbox id either),
 * the running sandbox whose token signs `<path>:<operation>:<user>:<token>[:<expiration>]` as given.
 */
async function filesSandbox(deps: AppDeps, req: FastifyRequest, operation: 'read' | 'write'): Promise<string> {
  const q = req.query as Record<string, unknown>;
  if (header(req, 'x-access-token') !== undefined || typeof q.signature !== 'string') return envdSandbox(deps, req);
  const id = await signatureOwner(deps, q, operation, header(req, 'e2b-sandbox-id'));
  if (!id) throw new E2bError(401, 'invalid signature');
  return id;
}

/**
 * The running sandbox (`id`, or any) whose access token signs the signed URL's query `q` for
 * `operation`: `<path>:<operation>:<user>:<token>[:<expiration>]`; undefined: none. An expired
 * signature is refused (401).
 */
export async function signatureOwner(deps: AppDeps, q: Record<string, unknown>, operation: 'read' | 'write', id?: string): Promise<string | undefined> {
  if (typeof q.signature !== 'string') return undefined;
  const expiration = q.signature_expiration;
  if (expiration !== undefined && (typeof expiration !== 'string' || !/^[0-9]{1,12}$/.test(expiration) || Number(expiration) * 1000 < Date.now())) {
    throw new E2bError(401, 'the signature has expired');
  }
  const raw = (token: string) =>
    [typeof q.path === 'string' ? q.path : '', operation, typeof q.username === 'string' ? q.username : '', token, ...(expiration !== undefined ? [expiration] : [])].join(':');
  const given = digest(q.signature);
  let one: SandboxRecord | undefined;
  if (id) {
    try {
      one = await deps.sandboxes.get(id);
    } catch {
      return undefined;
    }
  }
  for await (const rec of one ? [one] : runningSandboxes(deps)) {
    if (rec.state !== 'running' || !rec.accessToken) continue;
    const sig = 'v1_' + createHash('sha256').update(raw(rec.accessToken)).digest('base64').replace(/=+$/, '');
    if (timingSafeEqual(digest(sig), given)) return rec.id;
  }
  return undefined;
}

async function* runningSandboxes(deps: AppDeps) {
  let nextToken: string | undefined;
  do {
    const page = await deps.sandboxes.list({ states: ['running'], limit: 500, ...(nextToken ? { nextToken } : {}) });
    yield* page.items;
    nextToken = page.nextToken;
  } while (nextToken);
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Runs `fn` with the sandbox's agent (after any capture under way), cancelled when the client leaves. */
export async function withAgent<T>(deps: AppDeps, id: string, use: 'start' | 'files', reply: FastifyReply, fn: (agent: GuestAgent, gone: AbortSignal) => Promise<T>): Promise<T> {
  const gone = clientGone(reply.raw);
  const { agent, done } = await deps.sandboxes.agentFor(id, use);
  try {
    return await fn(agent, gone);
  } finally {
    done();
  }
}

/**
 * The `owner` of what a files request creates (the agent's file operations run as root; envd's as
 * the user): nothing for root.
 */
export function ownedBy(user: string): { owner?: string } {
  return user === 'root' ? {} : { owner: user };
}

/** An agent's refusal of an unknown owner, as envd's answer to an unknown user (401). */
export function unknownUser(err: unknown, user: string): unknown {
  if (err instanceof NsError && err.code === 'bad_request' && /owner: unknown user/.test(err.message)) return new E2bError(401, `user ${user} does not exist in the sandbox`);
  return err;
}

export function envdHttpRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.get('/health', async (req, reply) => {
    await envdSandbox(deps, req);
    return reply.status(204).send();
  });

  app.get('/files', async (req, reply) => {
    const id = await filesSandbox(deps, req, 'read');
    const q = req.query as Record<string, unknown>;
    const user = filesUser(q.username);
    const file = resolvePath(q.path, user);
    // compressed only when the client asks for gzip alone (the SDK's `gzip: true`): an HTTP library's
    // default list ("gzip, deflate") gets the bytes as they are, which HTTP always allows; compressing
    // costs more than it saves on incompressible files and fast links
    const codings = (header(req, 'accept-encoding') ?? '').split(',').map((c) => c.split(';')[0]!.trim().toLowerCase()).filter(Boolean);
    const gzip = codings.length === 1 && codings[0] === 'gzip';
    const gone = clientGone(reply.raw);
    const { agent, done } = await deps.sandboxes.agentFor(id, 'files');
    let body: Awaited<ReturnType<typeof readFile>>;
    try {
      body = await readFile(agent, file, gone);
    } catch (err) {
      done();
      if (err instanceof NsError && err.code === 'file_not_found') throw new E2bError(404, `path '${file}' does not exist`);
      throw err;
    }
    body.once('close', done);
    void reply.type('application/octet-stream');
    if (!gzip) return reply.send(body);
    void reply.header('content-encoding', 'gzip');
    return reply.send(body.pipe(createGzip()));
  });

  // uploads: multipart/form-data (parts named `file`, the part's filename the guest path when the
  // query has none) or a raw body (application/octet-stream, optionally gzip-encoded)
  app.register(async (raw) => {
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
    raw.post('/files', { config: { streamedBody: true, e2b: true } }, async (req, reply) => {
      const id = await filesSandbox(deps, req, 'write');
      const q = req.query as Record<string, unknown>;
      const user = filesUser(q.username);
      const type = header(req, 'content-type') ?? '';
      const source: Readable = (req.body as IncomingMessage | undefined) ?? req.raw;
      const written = await withAgent(deps, id, 'files', reply, async (agent, gone) => {
        const put = async (target: string, data: Readable) => {
          const idle = new UntilIdle<Buffer>(data, deps.config.http.bodyTimeoutMs);
          try {
            // (what the write creates, the file and its missing parents, is the user's, as envd's)
            await writeFile(agent, target, idle, { maxBytes: deps.config.limits.maxUploadBytes, signal: gone, ...ownedBy(user) });
          } catch (err) {
            throw unknownUser(idle.stalled ?? err, user);
          } finally {
            idle.finish();
          }
          return { name: path.posix.basename(target), type: 'file', path: target };
        };
        if (/^multipart\/form-data/i.test(type)) return multipart(req, source, q.path === undefined ? undefined : resolvePath(q.path, user), user, put);
        if (/^application\/octet-stream/i.test(type) || type === '') {
          if (q.path === undefined) throw new E2bError(400, 'path is required for an application/octet-stream upload');
          const target = resolvePath(q.path, user);
          const enc = (header(req, 'content-encoding') ?? '').toLowerCase();
          if (enc !== '' && enc !== 'identity' && enc !== 'gzip') throw new E2bError(400, `unsupported Content-Encoding ${enc}`);
          return [await put(target, enc === 'gzip' ? source.pipe(createGunzip()) : source)];
        }
        throw new E2bError(400, `unsupported content type ${type.slice(0, 80)}: send multipart/form-data or application/octet-stream`);
      });
      return reply.status(200).send(written);
    });
  });
}

/** The `file` parts of a multipart upload, each written as it arrives (one at a time). */
function multipart(
  req: FastifyRequest,
  source: Readable,
  queryPath: string | undefined,
  user: string,
  put: (target: string, data: Readable) => Promise<{ name: string; type: string; path: string }>,
): Promise<Array<{ name: string; type: string; path: string }>> {
  return new Promise((resolve, reject) => {
    let bb: InstanceType<typeof Busboy>;
    try {
      bb = new Busboy({ headers: req.headers as Record<string, string> & { 'content-type': string }, preservePath: true });
    } catch (err) {
      reject(new E2bError(400, `bad multipart body: ${(err as Error).message}`));
      return;
    }
    const results: Array<{ name: string; type: string; path: string }> = [];
    let chain = Promise.resolve();
    let failed: unknown;
    bb.on('file', (field: string, stream: Readable, filename: string) => {
      chain = chain.then(async () => {
        if (failed !== undefined || field !== 'file') {
          stream.resume();
          return;
        }
        try {
          const target = queryPath ?? resolvePath(filename, user, 'filename');
          results.push(await put(target, stream));
        } catch (err) {
          failed = err;
          stream.resume();
        }
      });
    });
    bb.on('error', (err: Error) => reject(new E2bError(400, `bad multipart body: ${err.message}`)));
    bb.on('finish', () => {
      void chain.then(() => {
        if (failed !== undefined) reject(failed);
        else if (results.length === 0) reject(new E2bError(400, 'no part named "file" in the multipart body'));
        else resolve(results);
      });
    });
    source.pipe(bb);
  });
}

