import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { IncomingMessage } from 'node:http';
import { callFs, checkPath, clientGone, listDir, readFile, writeFile } from '../agentio.js';
import type { GuestAgent } from '@nullspace/runtime';
import { UntilIdle } from '../util.js';
import type { AppDeps } from './deps.js';
import { Entry, IdParams, ListQuery, MkdirBody, PathQuery, RemoveQuery, RenameBody, WriteQuery } from './schemas.js';

export const fileRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { sandboxes } = deps;
    /**
     * Runs file work with the sandbox's agent (waiting out a snapshot that unmounts its volumes); the
     * work is cancelled when the client leaves.
     */
    const withAgent = async <T>(id: string, reply: FastifyReply, fn: (agent: GuestAgent, gone: AbortSignal) => Promise<T>): Promise<T> => {
      const gone = clientGone(reply.raw);
      const { agent, done } = await sandboxes.agentFor(id, 'files');
      try {
        return await fn(agent, gone);
      } finally {
        done();
      }
    };

    app.get(
      '/sandboxes/:id/files',
      { schema: { summary: 'Read a file (streamed bytes)', params: IdParams, querystring: PathQuery } },
      async (req, reply) => {
        const path = checkPath(req.query.path);
        const gone = clientGone(reply.raw);
        // (file work under a volume waits out a snapshot in progress: see agentFor)
        const { agent, done } = await sandboxes.agentFor(req.params.id, 'files');
        let body: Awaited<ReturnType<typeof readFile>>;
        try {
          body = await readFile(agent, path, gone);
        } catch (err) {
          done();
          throw err;
        }
        body.once('close', done);
        return reply.type('application/octet-stream').send(body);
      },
    );

    // uploads are raw bytes streamed to the agent, whatever their content type
    await app.register(async (raw) => {
      raw.removeAllContentTypeParsers();
      raw.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
      raw.withTypeProvider<TypeBoxTypeProvider>().put(
        '/sandboxes/:id/files',
        {
          // (no time limit on the whole body: UntilIdle limits the pauses between its chunks)
          config: { streamedBody: true },
          schema: {
            summary: 'Write a file (request body streamed as the content; parents created)',
            params: IdParams,
            querystring: WriteQuery,
            response: { 200: Type.Object({ path: Type.String(), size: Type.Integer() }) },
          },
        },
        async (req, reply) => {
          const path = checkPath(req.query.path);
          const gone = clientGone(reply.raw);
          const { agent, done } = await sandboxes.agentFor(req.params.id, 'files');
          // (however long the upload takes, it must not stall: NULLSPACE_BODY_TIMEOUT_MS between chunks)
          const source = new UntilIdle((req.body as IncomingMessage | undefined) ?? req.raw, deps.config.http.bodyTimeoutMs);
          try {
            return await writeFile(agent, path, source, {
              ...(req.query.mode !== undefined ? { mode: req.query.mode } : {}),
              append: req.query.append ?? false,
              maxBytes: deps.config.limits.maxUploadBytes,
              signal: gone,
            });
          } catch (err) {
            throw source.stalled ?? err;
          } finally {
            source.finish();
            done();
          }
        },
      );
    });

    app.get(
      '/sandboxes/:id/files/list',
      { schema: { summary: 'List a directory', params: IdParams, querystring: ListQuery, response: { 200: Type.Object({ entries: Type.Array(Entry) }) } } },
      async (req, reply) => {
        const path = checkPath(req.query.path);
        return withAgent(req.params.id, reply, (agent, gone) => listDir(agent, path, req.query.depth ?? 1, gone).then((entries) => ({ entries })));
      },
    );

    app.get(
      '/sandboxes/:id/files/stat',
      { schema: { summary: 'Information about a path (lstat)', params: IdParams, querystring: PathQuery, response: { 200: Entry } } },
      async (req, reply) => {
        const path = checkPath(req.query.path);
        return withAgent(req.params.id, reply, (agent, gone) => callFs(agent, 'fs.stat', { path }, `stat ${path}`, gone));
      },
    );

    app.post(
      '/sandboxes/:id/files/mkdir',
      { schema: { summary: 'Create a directory', params: IdParams, body: MkdirBody, response: { 200: Type.Object({ created: Type.Boolean() }) } } },
      async (req, reply) => {
        const path = checkPath(req.body.path);
        const args = { path, parents: req.body.parents ?? true, ...(req.body.mode !== undefined ? { mode: req.body.mode } : {}) };
        return withAgent(req.params.id, reply, (agent, gone) => callFs(agent, 'fs.mkdir', args, `mkdir ${path}`, gone));
      },
    );

    app.post(
      '/sandboxes/:id/files/rename',
      { schema: { summary: 'Rename or move a path', params: IdParams, body: RenameBody } },
      async (req, reply) => {
        const from = checkPath(req.body.from, 'from');
        const to = checkPath(req.body.to, 'to');
        await withAgent(req.params.id, reply, (agent, gone) => callFs(agent, 'fs.rename', { from, to, overwrite: req.body.overwrite ?? true }, `rename ${from}`, gone));
        return reply.status(204).send();
      },
    );

    app.delete(
      '/sandboxes/:id/files',
      { schema: { summary: 'Remove a file or directory', params: IdParams, querystring: RemoveQuery } },
      async (req, reply) => {
        const path = checkPath(req.query.path);
        await withAgent(req.params.id, reply, (agent, gone) => callFs(agent, 'fs.remove', { path, recursive: req.query.recursive ?? false }, `remove ${path}`, gone));
        return reply.status(204).send();
      },
    );
  };
