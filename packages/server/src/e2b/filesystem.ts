import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { Entry } from '@nullspace/runtime';
import { callFs, listDir } from '../agentio.js';
import type { AppDeps } from '../api/deps.js';
import { fromAgentError, NsError } from '../errors.js';
import { watchDir, type WatchLine } from '../terminals.js';
import { parseEnvelope, relay, requestMessage, serverStream, unary } from './connect.js';
import { envdSandbox, ownedBy, unknownUser, withAgent } from './envd.js';
import { ConnectError } from './errors.js';
import { resolvePath, rpcUser } from './user.js';

/**
 * envd's `filesystem.Filesystem` service on the agent's file operations, and its watches on the
 * agent's `fs.watch` (terminals.ts): `WatchDir` streams them; `CreateWatcher`/`GetWatcherEvents`/
 * `RemoveWatcher` (the Python SDK's polling watcher) keep one per id in this server's memory, its
 * events buffered until polled. Owner and group are not reported (the agent's entries have none).
 */

/** envd's event types of the agent's changes. */
const EVENT_TYPE = { create: 'EVENT_TYPE_CREATE', write: 'EVENT_TYPE_WRITE', remove: 'EVENT_TYPE_REMOVE', rename: 'EVENT_TYPE_RENAME', chmod: 'EVENT_TYPE_CHMOD' } as const;
/** Events a polling watcher buffers between two polls (the oldest go first). */
const MAX_BUFFERED = 10_000;
/** Polling watchers per sandbox. */
const MAX_WATCHERS = 64;

/** A watch line as envd's FilesystemEvent; undefined for lines envd has no event for; throws the watch's error. */
function watchEvent(l: WatchLine): { name: string; type: string } | undefined {
  switch (l.type) {
    case 'watching':
    case 'overflow':
    case 'end':
      return undefined;
    case 'error':
      throw new NsError(l.code as 'internal', l.message);
    default:
      return { name: l.name, type: EVENT_TYPE[l.type] };
  }
}

const FILE_TYPE = { file: 'FILE_TYPE_FILE', dir: 'FILE_TYPE_DIRECTORY', symlink: 'FILE_TYPE_SYMLINK', other: 'FILE_TYPE_UNSPECIFIED' } as const;

/** Go's FileMode.String() of a type and permission bits (`drwxr-xr-x`, `-rw-r--r--`). */
function permissions(type: Entry['type'], mode: number): string {
  const t = type === 'dir' ? 'd' : type === 'symlink' ? 'L' : type === 'other' ? '?' : '-';
  let s = '';
  for (let i = 8; i >= 0; i--) s += mode & (1 << i) ? 'rwx'[(8 - i) % 3] : '-';
  return t + s;
}

export function entryInfo(e: Entry) {
  return {
    name: e.name,
    type: FILE_TYPE[e.type],
    path: e.path,
    size: String(e.size),
    mode: e.mode & 0o777,
    permissions: permissions(e.type, e.mode),
    owner: '',
    group: '',
    modifiedTime: new Date(e.mtimeMs).toISOString(),
    ...(e.symlinkTarget !== undefined ? { symlinkTarget: e.symlinkTarget } : {}),
  };
}

const isCode = (err: unknown, ...codes: string[]) => err instanceof NsError && codes.includes(err.code);

export function filesystemRoutes(app: FastifyInstance, deps: AppDeps): void {
  type Run = (<T>(fn: Parameters<typeof withAgent<T>>[4]) => Promise<T>) & { sandbox: string };
  type Fn = (msg: Record<string, unknown>, user: string, run: Run) => Promise<unknown>;
  const methods: Record<string, Fn> = {
    Stat: async (msg, user, run) => {
      const path = resolvePath(msg.path, user);
      return { entry: entryInfo(await run((agent, gone) => callFs(agent, 'fs.stat', { path }, `stat ${path}`, gone))) };
    },
    MakeDir: async (msg, user, run) => {
      const path = resolvePath(msg.path, user);
      return run(async (agent, gone) => {
        let r: { created: boolean };
        try {
          r = await callFs(agent, 'fs.mkdir', { path, parents: true, ...ownedBy(user) }, `mkdir ${path}`, gone);
        } catch (err) {
          if (isCode(err, 'already_exists', 'not_a_directory')) throw new ConnectError('invalid_argument', `path ${path} exists and is not a directory`);
          throw unknownUser(err, user);
        }
        if (!r.created) throw new ConnectError('already_exists', `directory ${path} already exists`);
        return { entry: entryInfo(await callFs(agent, 'fs.stat', { path }, `stat ${path}`, gone)) };
      });
    },
    Move: async (msg, user, run) => {
      const from = resolvePath(msg.source, user, 'source');
      const to = resolvePath(msg.destination, user, 'destination');
      return run(async (agent, gone) => {
        await callFs(agent, 'fs.rename', { from, to, overwrite: true }, `rename ${from}`, gone);
        return { entry: entryInfo(await callFs(agent, 'fs.stat', { path: to }, `stat ${to}`, gone)) };
      });
    },
    ListDir: async (msg, user, run) => {
      const path = resolvePath(msg.path, user);
      const depth = typeof msg.depth === 'number' && msg.depth > 0 ? Math.min(msg.depth, 32) : 1;
      return run(async (agent, gone) => {
        const st = await callFs(agent, 'fs.stat', { path }, `stat ${path}`, gone);
        if (st.type !== 'dir' && !(st.type === 'symlink')) throw new ConnectError('invalid_argument', `path ${path} is not a directory`);
        return { entries: (await listDir(agent, path, depth, gone)).map(entryInfo) };
      });
    },
    Remove: async (msg, user, run) => {
      const path = resolvePath(msg.path, user);
      await run(async (agent, gone) => {
        try {
          await callFs(agent, 'fs.remove', { path, recursive: true }, `remove ${path}`, gone);
        } catch (err) {
          // (as envd's os.RemoveAll: nothing there is no error)
          if (!isCode(err, 'file_not_found')) throw err;
        }
      });
      return {};
    },
  };

  /** Sets a watch (resolved once it is set: a missing path fails here) as an NDJSON stream of WatchLines. */
  const watch = async (id: string, msg: Record<string, unknown>, user: string, signal: AbortSignal): Promise<Readable> => {
    const path = resolvePath(msg.path, user);
    const { agent, done } = await deps.sandboxes.agentFor(id, 'files');
    try {
      return await watchDir(agent, path, msg.recursive === true, signal, async (err) => {
        let state = 'killed';
        try {
          state = (await deps.sandboxes.get(id)).state;
        } catch {
          // (gone)
        }
        if (state !== 'running') return new NsError('sandbox_not_running', `sandbox ${id} is ${state}: the watch ended`);
        return fromAgentError(err, `watching ${path}`);
      });
    } catch (err) {
      // envd's answers for a path that is not a directory
      if (err instanceof NsError && err.code === 'not_a_directory') throw new ConnectError('invalid_argument', `path ${path} is not a directory`);
      throw err;
    } finally {
      done();
    }
  };

  /** sandbox id -> watcher id -> its watch and the events not polled yet */
  const watchers = new Map<string, Map<string, { events: Array<{ name: string; type: string }>; stop: AbortController; error?: unknown }>>();
  methods.CreateWatcher = async (msg, user, run) => {
    const id = run.sandbox;
    const mine = watchers.get(id) ?? new Map();
    if (mine.size >= MAX_WATCHERS) throw new ConnectError('resource_exhausted', `at most ${MAX_WATCHERS} watchers per sandbox: remove one (RemoveWatcher)`);
    const stop = new AbortController();
    const lines = await watch(id, msg, user, stop.signal);
    const watcherId = randomBytes(12).toString('hex');
    const w: { events: Array<{ name: string; type: string }>; stop: AbortController; error?: unknown } = { events: [], stop };
    mine.set(watcherId, w);
    watchers.set(id, mine);
    const sink = { gone: stop.signal, send: async (e: unknown) => void (w.events.push(e as { name: string; type: string }) > MAX_BUFFERED && w.events.shift()) };
    relay<WatchLine>(lines, sink, watchEvent, null)
      .catch((err: unknown) => Object.assign(w, { error: err }))
      .finally(() => {
        // a watch that ended with its sandbox (paused, killed) is dropped: envd's routes no longer reach it
        if (w.error !== undefined && (w.error as NsError).code === 'sandbox_not_running') {
          mine.delete(watcherId);
          if (mine.size === 0 && watchers.get(id) === mine) watchers.delete(id);
        }
      });
    return { watcherId };
  };
  const watcher = (id: string, msg: Record<string, unknown>) => {
    const w = typeof msg.watcherId === 'string' ? watchers.get(id)?.get(msg.watcherId) : undefined;
    if (!w) throw new ConnectError('not_found', `watcher ${JSON.stringify(msg.watcherId)} not found`);
    return w;
  };
  methods.GetWatcherEvents = async (msg, _user, run) => {
    const w = watcher(run.sandbox, msg);
    const events = w.events.splice(0);
    if (events.length === 0 && w.error !== undefined) {
      watchers.get(run.sandbox)?.delete(msg.watcherId as string);
      throw w.error;
    }
    return { events };
  };
  methods.RemoveWatcher = async (msg, _user, run) => {
    watcher(run.sandbox, msg).stop.abort();
    watchers.get(run.sandbox)?.delete(msg.watcherId as string);
    return {};
  };

  for (const [name, fn] of Object.entries(methods)) {
    app.post(`/filesystem.Filesystem/${name}`, async (req, reply) => {
      const id = await envdSandbox(deps, req);
      const user = rpcUser(req.headers.authorization);
      const run = Object.assign(<T>(work: Parameters<typeof withAgent<T>>[4]) => withAgent(deps, id, 'files', reply, work), { sandbox: id });
      return unary(reply, () => fn(requestMessage(req.body), user, run));
    });
  }

  // a server stream: `start` once the watch is set, then the changes; its error goes in the end envelope
  app.post('/filesystem.Filesystem/WatchDir', async (req, reply) => {
    const id = await envdSandbox(deps, req);
    const user = rpcUser(req.headers.authorization);
    await serverStream(req, reply, async (sink) => {
      const lines = await watch(id, parseEnvelope(req.body), user, sink.gone);
      // (WatchDirResponse's oneof is at its top: no `event` wrapper, unlike a process's)
      await sink.send({ start: {} });
      await relay<WatchLine>(
        lines,
        sink,
        (l) => {
          const e = watchEvent(l);
          return e && { filesystem: e };
        },
        { keepalive: {} },
      );
    });
    return reply;
  });
}
