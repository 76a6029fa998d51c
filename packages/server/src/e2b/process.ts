import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Readable } from 'node:stream';
import { attachCommand, startCommand, writeStdin, type CommandEvent } from '../agentio.js';
import { startPty } from '../terminals.js';
import type { AppDeps } from '../api/deps.js';
import { fromAgentError, NsError } from '../errors.js';
import { asMessage, parseEnvelope, relay, requestMessage, serverStream, unary, type StreamSink } from './connect.js';
import { envdSandbox, withAgent } from './envd.js';
import { ConnectError } from './errors.js';
import { homeOf, resolvePath, rpcUser, shellQuote } from './user.js';

/**
 * envd's `process.Process` service on the agent's processes and terminals (terminals.ts). A process
 * runs the argv E2B sends as is (the agent's `argv`: no shell in between); a terminal runs it through
 * the agent's shell, quoted into `exec 'cmd' 'arg'...` (also what the agent's process list shows).
 * The config as given is kept per pid for `List`, with whether it runs on a terminal (its output is then `pty`
 * data, also when `Connect` reattaches). In memory: after a server restart a process lists with its
 * shell string as config, and a terminal reattached by `Connect` streams its output as stdout.
 */

interface ProcessConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

/** The most configs kept per sandbox (those of ended processes go first). */
const MAX_CONFIGS = 1024;

export function processRoutes(app: FastifyInstance, deps: AppDeps): void {
  /** sandbox id -> pid -> the config it was started with */
  const configs = new Map<string, Map<number, { config: ProcessConfig; tag?: string; pty: boolean }>>();
  const remember = (id: string, pid: number, config: ProcessConfig, tag: string | undefined, pty: boolean) => {
    let m = configs.get(id);
    if (!m) configs.set(id, (m = new Map()));
    m.set(pid, { config, pty, ...(tag !== undefined ? { tag } : {}) });
    if (m.size > MAX_CONFIGS) m.delete(m.keys().next().value!);
  };

  const methods: Record<string, { stream: boolean; fn: (id: string, msg: Record<string, unknown>, ctx: Ctx) => Promise<unknown> }> = {
    Start: { stream: true, fn: (id, msg, ctx) => start(id, msg, ctx) },
    Connect: {
      stream: true,
      fn: async (id, msg, ctx) => {
        const pid = await selectPid(id, msg.process);
        // (as the native attach: no gate held while it streams, a hibernation may come meanwhile)
        await pump(await attach(await deps.sandboxes.agent(id), pid, configs.get(id)?.get(pid)?.pty === true), ctx.sink!);
      },
    },
    List: {
      stream: false,
      fn: async (id) => {
        const agent = await deps.sandboxes.agent(id);
        const { processes } = await agent.call('proc.list').catch((err: unknown) => Promise.reject(fromAgentError(err, 'listing processes')));
        const known = configs.get(id);
        const running = processes.filter((p) => p.running);
        // (configs of ended processes are dropped)
        if (known) for (const pid of [...known.keys()]) if (!running.some((p) => p.pid === pid)) known.delete(pid);
        return {
          processes: running.map((p) => {
            const k = known?.get(p.pid);
            return {
              pid: p.pid,
              ...(k?.tag ? { tag: k.tag } : p.tag ? { tag: p.tag } : {}),
              config: k?.config ?? { cmd: '/bin/bash', args: ['-c', p.cmd], envs: {}, cwd: p.cwd },
            };
          }),
        };
      },
    },
    SendInput: {
      stream: false,
      fn: async (id, msg) => {
        // (a terminal's input is keystrokes written to it: the same proc.stdin as a process's stdin)
        const input = (msg.input ?? {}) as { stdin?: unknown; pty?: unknown };
        const pid = await selectPid(id, msg.process);
        const b64 = input.pty ?? input.stdin;
        const data = typeof b64 === 'string' ? Buffer.from(b64, 'base64') : Buffer.alloc(0);
        await stdin(id, pid, data, false);
        return {};
      },
    },
    CloseStdin: {
      stream: false,
      fn: async (id, msg) => {
        await stdin(id, await selectPid(id, msg.process), Buffer.alloc(0), true);
        return {};
      },
    },
    SendSignal: {
      stream: false,
      fn: async (id, msg) => {
        const pid = await selectPid(id, msg.process);
        const signal = msg.signal === 'SIGNAL_SIGKILL' || msg.signal === 9 ? 'SIGKILL' : msg.signal === 'SIGNAL_SIGTERM' || msg.signal === 15 ? 'SIGTERM' : undefined;
        if (!signal) throw new ConnectError('unimplemented', `signal ${JSON.stringify(msg.signal)} is not supported (SIGNAL_SIGKILL, SIGNAL_SIGTERM)`);
        const agent = await deps.sandboxes.agent(id);
        await agent.call('proc.signal', { pid, signal }).catch((err: unknown) => Promise.reject(processError(err, pid)));
        return {};
      },
    },
    Update: {
      stream: false,
      fn: async (id, msg) => {
        const pid = await selectPid(id, msg.process);
        const { cols, rows } = ptySize(msg.pty ?? {}, false);
        const agent = await deps.sandboxes.agent(id);
        await agent.call('pty.resize', { pid, cols, rows }).catch((err: unknown) => Promise.reject(processError(err, pid)));
        return {};
      },
    },
    StreamInput: {
      stream: false,
      fn: async () => {
        throw new ConnectError('unimplemented', 'process.Process/StreamInput (client streaming) is not supported: use SendInput');
      },
    },
  };

  interface Ctx {
    user: string;
    reply: FastifyReply;
    sink?: StreamSink;
    timeoutMs: number;
  }

  const stdin = async (id: string, pid: number, data: Buffer, close: boolean) => {
    const agent = await deps.sandboxes.agent(id);
    await writeStdin(agent, pid, data, close).catch((err: unknown) => Promise.reject(processError(err, pid)));
  };

  const selectPid = async (id: string, selector: unknown): Promise<number> => {
    const s = (selector ?? {}) as { pid?: unknown; tag?: unknown };
    if (typeof s.pid === 'number' && Number.isInteger(s.pid) && s.pid > 0) return s.pid;
    if (typeof s.tag === 'string') {
      const agent = await deps.sandboxes.agent(id);
      const { processes } = await agent.call('proc.list');
      const p = processes.find((x) => x.running && (x.tag === s.tag || configs.get(id)?.get(x.pid)?.tag === s.tag));
      if (!p) throw new ConnectError('not_found', `no running process with tag ${JSON.stringify(s.tag)}`);
      return p.pid;
    }
    throw new ConnectError('invalid_argument', 'process must select a pid or a tag');
  };

  const start = async (id: string, msg: Record<string, unknown>, ctx: Ctx) => {
    const pty = msg.pty !== undefined && msg.pty !== null ? ptySize(msg.pty) : undefined;
    const p = asMessage(msg.process ?? {});
    if (typeof p.cmd !== 'string' || p.cmd === '') throw new ConnectError('invalid_argument', 'process.cmd is required');
    const args = p.args ?? [];
    if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) throw new ConnectError('invalid_argument', 'process.args must be strings');
    const envs = (p.envs ?? {}) as Record<string, string>;
    if (typeof envs !== 'object' || Object.values(envs).some((v) => typeof v !== 'string')) throw new ConnectError('invalid_argument', 'process.envs must map names to strings');
    const cwd = p.cwd === undefined || p.cwd === '' ? homeOf(ctx.user) : resolvePath(p.cwd, ctx.user, 'cwd');
    const tag = typeof msg.tag === 'string' ? msg.tag : undefined;
    const config: ProcessConfig = { cmd: p.cmd, args: args as string[], envs, ...(p.cwd !== undefined ? { cwd: p.cwd as string } : {}) };
    const argv = [config.cmd, ...config.args];
    const shell = `exec ${argv.map(shellQuote).join(' ')}`;
    const events = await withAgent(deps, id, 'start', ctx.reply, async (agent, gone) => {
      // a terminal has no timeout (as E2B's: its stream's deadline is the client's)
      const started = pty
        ? await startPty(agent, { cmd: shell, cols: pty.cols, rows: pty.rows, cwd, envs, user: ctx.user, ...(tag !== undefined ? { tag } : {}) }, gone)
        : // (the argv itself, as envd runs it: no shell of the agent's before E2B's own `bash -l -c`)
          await startCommand(agent, { cmd: shell, argv, cwd, envs, user: ctx.user, timeoutMs: ctx.timeoutMs, stdin: msg.stdin === true, ...(tag !== undefined ? { tag } : {}) }, false, gone);
      remember(id, started.pid, config, tag, pty !== undefined);
      return started.events!;
    });
    await pump(events, ctx.sink!);
  };

  const attach = async (agent: Parameters<typeof attachCommand>[0], pid: number, terminal: boolean) => {
    try {
      return await attachCommand(agent, pid, false, terminal);
    } catch (err) {
      throw processError(err, pid);
    }
  };

  for (const [name, m] of Object.entries(methods)) {
    app.post(`/process.Process/${name}`, async (req, reply) => {
      const id = await envdSandbox(deps, req);
      const user = rpcUser(req.headers.authorization);
      const timeout = Number(req.headers['connect-timeout-ms'] ?? 0);
      const ctx: Ctx = { user, reply, timeoutMs: Number.isFinite(timeout) && timeout > 0 ? timeout : 0 };
      if (!m.stream) return unary(reply, async () => m.fn(id, requestMessage(req.body), ctx));
      await serverStream(req, reply, async (sink) => {
        ctx.sink = sink;
        await m.fn(id, parseEnvelope(req.body), ctx);
      });
      return reply;
    });
  }
}

/** The window size of a `pty` (`{size: {cols, rows}}`); a Start's may leave them out (80x24), an Update's not. */
function ptySize(raw: unknown, defaults = true): { cols: number; rows: number } {
  const size = (asMessage(raw).size ?? {}) as { cols?: unknown; rows?: unknown };
  const side = (v: unknown, name: string, dflt: number) => {
    if (defaults && (v === undefined || v === null || v === 0)) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 10000) throw new ConnectError('invalid_argument', `pty.size.${name} must be 1 to 10000`);
    return v;
  };
  return { cols: side(size.cols, 'cols', 80), rows: side(size.rows, 'rows', 24) };
}

/** The agent's error about a process, as envd reports it: an unknown or ended process is not found. */
function processError(err: unknown, pid: number): NsError {
  const e = fromAgentError(err, `process ${pid}`);
  if (e.code === 'file_not_found' || e.code === 'process_not_found' || e.code === 'process_not_running') {
    return new NsError('process_not_found', `process ${pid} not found`, { details: { pid } });
  }
  return e;
}

/** Streams the NDJSON events of agentio as envd's ProcessEvents. */
function pump(events: Readable, sink: StreamSink): Promise<void> {
  return relay(events, sink, translate);
}

function translate(e: CommandEvent): unknown {
  switch (e.type) {
    case 'start':
      return { event: { start: { pid: e.pid } } };
    case 'stdout':
    case 'stderr':
      return { event: { data: { [e.type]: e.data } } };
    case 'data':
      return { event: { data: { pty: e.data } } };
    case 'lost':
      return undefined;
    case 'end': {
      if (e.timedOut) throw new ConnectError('deadline_exceeded', `the process ran past its timeout and was killed`);
      const exited = e.signal === null;
      return { event: { end: { exitCode: e.exitCode ?? -1, exited, status: exited ? `exit status ${e.exitCode}` : `signal: ${e.signal === 'SIGKILL' ? 'killed' : e.signal?.toLowerCase()}` } } };
    }
    case 'error':
      throw new NsError(e.code as 'internal', e.message);
  }
}
