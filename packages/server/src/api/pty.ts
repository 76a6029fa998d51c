import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { OpRequest } from '@nullspace/runtime';
import { attachCommand, checkPath, clientGone, writeStdin } from '../agentio.js';
import { fromAgentError, NsError } from '../errors.js';
import { startPty, watchDir } from '../terminals.js';
import { processError } from './commands.js';
import type { AppDeps } from './deps.js';
import { CommandBody, Envs, IdParams, PidParams, SignalBody } from './schemas.js';

const Side = (what: string) => Type.Integer({ minimum: 1, maximum: 10000, description: what });

const PtyBody = Type.Object(
  {
    cmd: Type.Optional(Type.String({ minLength: 1, maxLength: 131072, description: "Run with /bin/bash -c on the terminal; default: the user's login shell (SHELL -l)" })),
    cols: Type.Optional(Side('Window width (default 80)')),
    rows: Type.Optional(Side('Window height (default 24)')),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    envs: Type.Optional(Envs),
    user: CommandBody.properties.user,
    tag: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);

const SizeBody = Type.Object({ cols: Side('Window width'), rows: Side('Window height') }, { additionalProperties: false });

const InputBody = Type.Object(
  { data: Type.String({ maxLength: 1398104, contentEncoding: 'base64', description: 'Bytes typed into the terminal, base64 (at most 1 MiB)' }) },
  { additionalProperties: false },
);

const WatchQuery = Type.Object(
  { path: Type.String({ minLength: 1, maxLength: 4096 }), recursive: Type.Optional(Type.Boolean({ default: false })) },
  { additionalProperties: false },
);

/** Terminals (`/pty`) and file watches (`/files/watch`) of a sandbox. */
export const ptyRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { sandboxes } = deps;

    app.post(
      '/sandboxes/:id/pty',
      {
        schema: {
          summary: 'Start a terminal (a process on a pseudo-terminal: the login shell by default)',
          description:
            'The response is application/x-ndjson, one event per line: {"type":"start","pid"}, {"type":"data","data":base64} (the terminal\'s output), {"type":"lost","bytes"}, then {"type":"end",...ProcessInfo} or {"type":"error","code","message"}. The process keeps running when the client leaves; GET .../pty/{pid}/stream reattaches.',
          params: IdParams,
          body: PtyBody,
        },
      },
      async (req, reply) => {
        const b = req.body;
        if (b.cwd !== undefined) checkPath(b.cwd, 'cwd');
        const { agent, done } = await sandboxes.agentFor(req.params.id, 'start');
        let started: Awaited<ReturnType<typeof startPty>>;
        try {
          const request: OpRequest<'pty.start'> = { cols: b.cols ?? 80, rows: b.rows ?? 24 };
          for (const k of ['cmd', 'cwd', 'envs', 'user', 'tag'] as const) if (b[k] !== undefined) Object.assign(request, { [k]: b[k] });
          started = await startPty(agent, request, clientGone(reply.raw));
        } finally {
          done();
        }
        return reply.type('application/x-ndjson').send(started.events);
      },
    );

    app.get(
      '/sandboxes/:id/pty/:pid/stream',
      {
        schema: {
          summary: "A terminal's output (replayed from what the agent still holds, then followed) and end, as NDJSON",
          params: PidParams,
          querystring: Type.Object({ replay: Type.Optional(Type.Boolean({ default: true })) }, { additionalProperties: false }),
        },
      },
      async (req, reply) => {
        const agent = await sandboxes.agent(req.params.id);
        const events = await attachCommand(agent, req.params.pid, req.query.replay ?? true, true);
        return reply.type('application/x-ndjson').send(events);
      },
    );

    app.post(
      '/sandboxes/:id/pty/:pid/input',
      { schema: { summary: 'Type into a terminal (keystrokes; "\\u0003" is Ctrl-C)', params: PidParams, body: InputBody } },
      async (req, reply) => {
        const data = Buffer.from(req.body.data, 'base64');
        const agent = await sandboxes.agent(req.params.id);
        try {
          await writeStdin(agent, req.params.pid, data, false);
        } catch (err) {
          throw processError(err, req.params.pid);
        }
        return reply.status(204).send();
      },
    );

    app.post(
      '/sandboxes/:id/pty/:pid/resize',
      { schema: { summary: "Set a terminal's window size (its programs get SIGWINCH)", params: PidParams, body: SizeBody } },
      async (req, reply) => {
        const agent = await sandboxes.agent(req.params.id);
        try {
          await agent.call('pty.resize', { pid: req.params.pid, cols: req.body.cols, rows: req.body.rows });
        } catch (err) {
          throw processError(err, req.params.pid);
        }
        return reply.status(204).send();
      },
    );

    app.post(
      '/sandboxes/:id/pty/:pid/kill',
      { schema: { summary: "Signal a terminal's process group and its foreground job (default SIGKILL)", params: PidParams, body: Type.Optional(SignalBody) } },
      async (req, reply) => {
        const agent = await sandboxes.agent(req.params.id);
        try {
          const signal = (req.body?.signal ?? 'SIGKILL') as NonNullable<OpRequest<'proc.signal'>['signal']>;
          await agent.call('proc.signal', { pid: req.params.pid, signal });
        } catch (err) {
          throw processError(err, req.params.pid);
        }
        return reply.status(204).send();
      },
    );

    app.get(
      '/sandboxes/:id/files/watch',
      {
        schema: {
          summary: 'Watch a directory for changes, as NDJSON',
          description:
            'One event per line: {"type":"watching","path"} once the watch is set, then {"type":"create"|"write"|"remove"|"rename"|"chmod","name"} (name relative to the directory), {"type":"overflow","dropped"} (-1: the guest kernel\'s queue overflowed); the stream ends with {"type":"end","reason":"removed"} when the directory itself goes, or {"type":"error","code","message"} (sandbox_not_running when the sandbox was killed or paused).',
          params: IdParams,
          querystring: WatchQuery,
        },
      },
      async (req, reply) => {
        const { id } = req.params;
        const path = checkPath(req.query.path);
        // the gate of a capture is held only until the watch is set: a watch runs as long as its client
        const { agent, done } = await sandboxes.agentFor(id, 'files');
        let events;
        try {
          events = await watchDir(agent, path, req.query.recursive ?? false, clientGone(reply.raw), async (err) => {
            const state = await sandboxState(id);
            if (state !== 'running') return new NsError('sandbox_not_running', `sandbox ${id} is ${state}: the watch ended`, { details: { state } });
            return fromAgentError(err, `watching ${path}`);
          });
        } finally {
          done();
        }
        return reply.type('application/x-ndjson').send(events);
      },
    );

    async function sandboxState(id: string): Promise<string> {
      try {
        return (await sandboxes.get(id)).state;
      } catch {
        return 'killed';
      }
    }
  };
