import type { FastifyInstance } from 'fastify';
import type { Entry } from '@nullspace/runtime';
import { callFs, listDir } from '../agentio.js';
import type { AppDeps } from '../api/deps.js';
import { NsError } from '../errors.js';
import { parseEnvelope, requestMessage, serverStream, unary } from './connect.js';
import { chownTo, envdSandbox, missingParents, withAgent } from './envd.js';
import { ConnectError, notSupported } from './errors.js';
import { resolvePath, rpcUser } from './user.js';

/**
 * envd's `filesystem.Filesystem` service on the agent's file operations. Owner and group are not
 * reported (the agent's entries have none); watching is not there yet (501 unimplemented).
 */

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
  type Fn = (msg: Record<string, unknown>, user: string, run: <T>(fn: Parameters<typeof withAgent<T>>[4]) => Promise<T>) => Promise<unknown>;
  const methods: Record<string, Fn> = {
    Stat: async (msg, user, run) => {
      const path = resolvePath(msg.path, user);
      return { entry: entryInfo(await run((agent, gone) => callFs(agent, 'fs.stat', { path }, `stat ${path}`, gone))) };
    },
    MakeDir: async (msg, user, run) => {
      const path = resolvePath(msg.path, user);
      return run(async (agent, gone) => {
        const created = await missingParents(agent, path, gone);
        let r: { created: boolean };
        try {
          r = await callFs(agent, 'fs.mkdir', { path, parents: true }, `mkdir ${path}`, gone);
        } catch (err) {
          if (isCode(err, 'already_exists', 'not_a_directory')) throw new ConnectError('invalid_argument', `path ${path} exists and is not a directory`);
          throw err;
        }
        if (!r.created) throw new ConnectError('already_exists', `directory ${path} already exists`);
        await chownTo(agent, user, [path, ...created], gone);
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
  for (const name of ['WatchDir', 'CreateWatcher', 'GetWatcherEvents', 'RemoveWatcher']) {
    methods[name] = async () => {
      throw notSupported(`watching directories (filesystem.Filesystem/${name})`);
    };
  }

  for (const [name, fn] of Object.entries(methods)) {
    app.post(`/filesystem.Filesystem/${name}`, async (req, reply) => {
      const id = await envdSandbox(deps, req);
      const user = rpcUser(req.headers.authorization);
      const call = (msg: Record<string, unknown>) => fn(msg, user, (work) => withAgent(deps, id, 'files', reply, work));
      // (WatchDir is a server stream: its error goes in an end envelope for the client to read it)
      if (Buffer.isBuffer(req.body)) {
        await serverStream(req, reply, async () => void (await call(parseEnvelope(req.body))));
        return reply;
      }
      return unary(reply, () => call(requestMessage(req.body)));
    });
  }
}
