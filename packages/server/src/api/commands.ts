import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { OpRequest } from '@nullspace/runtime';
import { attachCommand, checkPath, clientGone, startCommand, writeStdin } from '../agentio.js';
import { fromAgentError, NsError } from '../errors.js';
import type { AppDeps } from './deps.js';
import { CommandBody, IdParams, MAX_CMD_BYTES, PidParams, ProcessInfo, SignalBody, StdinBody } from './schemas.js';

export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

export const commandRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { sandboxes } = deps;

    app.post(
      '/sandboxes/:id/commands',
      {
        schema: {
          summary: 'Run a command',
          description:
            'Foreground: the response is application/x-ndjson, one event per line: {"type":"start","pid"}, {"type":"stdout"|"stderr","data":base64}, {"type":"lost","bytes"}, then {"type":"end",...ProcessInfo} or {"type":"error","code","message"}. Background: 201 {"pid"} as soon as it started.',
          params: IdParams,
          body: CommandBody,
        },
      },
      async (req, reply) => {
        const b = req.body;
        if (b.cwd !== undefined) checkPath(b.cwd, 'cwd');
        // (the schema counts characters; exec counts bytes)
        if (Buffer.byteLength(b.cmd) > MAX_CMD_BYTES) {
          throw new NsError('validation_failed', 'cmd is longer than 128 KiB, the most the kernel takes as one argument: put a long script in a file and run that', { details: { field: 'cmd' } });
        }
        // (a start waits out a snapshot in progress: see agentFor)
        const { agent, done } = await sandboxes.agentFor(req.params.id, 'start');
        let started: Awaited<ReturnType<typeof startCommand>>;
        try {
          started = await startCommand(
            agent,
            { cmd: b.cmd, cwd: b.cwd, envs: b.envs, user: b.user, timeoutMs: b.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, stdin: b.stdin, input: b.input, tag: b.tag },
            b.background === true,
            clientGone(reply.raw),
          );
        } finally {
          done();
        }
        if (!started.events) return reply.status(201).send({ pid: started.pid });
        return reply.type('application/x-ndjson').send(started.events);
      },
    );

    app.get(
      '/sandboxes/:id/commands',
      { schema: { summary: 'Processes started through the API (running, and recently ended)', params: IdParams, response: { 200: Type.Object({ processes: Type.Array(ProcessInfo) }) } } },
      async (req) => {
        const agent = await sandboxes.agent(req.params.id);
        try {
          return await agent.call('proc.list');
        } catch (err) {
          throw fromAgentError(err, 'listing processes');
        }
      },
    );

    app.get(
      '/sandboxes/:id/commands/:pid/stream',
      {
        schema: {
          summary: 'Output (replayed from the start while the agent holds it) and end of a process, as NDJSON',
          params: PidParams,
          querystring: Type.Object({ replay: Type.Optional(Type.Boolean({ default: true })) }, { additionalProperties: false }),
        },
      },
      async (req, reply) => {
        const agent = await sandboxes.agent(req.params.id);
        const events = await attachCommand(agent, req.params.pid, req.query.replay ?? true);
        return reply.type('application/x-ndjson').send(events);
      },
    );

    app.post(
      '/sandboxes/:id/commands/:pid/stdin',
      { schema: { summary: 'Write to (and optionally close) the stdin of a process started with stdin: true', params: PidParams, body: StdinBody } },
      async (req, reply) => {
        const agent = await sandboxes.agent(req.params.id);
        try {
          await writeStdin(agent, req.params.pid, Buffer.from(req.body.data ?? ''), req.body.close ?? false);
        } catch (err) {
          throw processError(err, req.params.pid);
        }
        return reply.status(204).send();
      },
    );

    app.post(
      '/sandboxes/:id/commands/:pid/kill',
      { schema: { summary: 'Signal a process group (default SIGKILL)', params: PidParams, body: Type.Optional(SignalBody) } },
      async (req, reply) => {
        const agent = await sandboxes.agent(req.params.id);
        try {
          // (SignalBody allows the agent's signals, no other: packages/server/test/spec.test.ts)
          const signal = (req.body?.signal ?? 'SIGKILL') as NonNullable<OpRequest<'proc.signal'>['signal']>;
          await agent.call('proc.signal', { pid: req.params.pid, signal });
        } catch (err) {
          throw processError(err, req.params.pid);
        }
        return reply.status(204).send();
      },
    );
  };

export function processError(err: unknown, pid: number) {
  const e = fromAgentError(err, `process ${pid}`);
  if (e.code === 'file_not_found') return Object.assign(e, { code: 'process_not_found' });
  return e;
}
