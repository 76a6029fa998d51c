#!/usr/bin/env node
import fs from 'node:fs';
import os from 'node:os';
import { Readable } from 'node:stream';
import { Command, Option } from 'commander';
import { createLogger, loadConfig, startRuntimeHost, startServer, VERSION, type Config } from '@nullspace/server';
import {
  ApiClient,
  ConnectionConfig,
  previewHost,
  Sandbox,
  SandboxError,
  signedPreviewUrl,
  Snapshot,
  Template,
  TimeoutError,
  Volume,
  type CommandResult,
  type SandboxInfo,
  type SandboxState,
  type SnapshotKind,
  type TemplateInfo,
} from 'nullspace';
import { pruneCache } from '@nullspace/runtime';
import { runShell } from './shell.js';
import { templateBuild, templateList } from './template.js';

/** Errors end the process here, and only here. */
function fail(err: unknown): never {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`error${e.code ? ` [${e.code}]` : ''}: ${e.message ?? String(err)}\n`);
  process.exit(1);
}

function pairs(values: string[] | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new SandboxError(`${what} "${v}" must be KEY=VALUE`, { code: 'bad_argument' });
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];
const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new SandboxError(`"${v}" is not a non-negative integer`, { code: 'bad_argument' });
  return n;
};

/** A URL without its password (for what the server prints at start). */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://...';
  }
}

function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}

/** One `field  value` line per field of a record (dates in ISO 8601, objects as JSON). */
function printFields(record: object, width: number): void {
  for (const [k, v] of Object.entries(record)) {
    process.stdout.write(`${k.padEnd(width)} ${v instanceof Date ? v.toISOString() : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}\n`);
  }
}

function describe(s: SandboxInfo): string {
  const meta = Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`).join(',');
  return [s.sandboxId, s.state.padEnd(9), s.template, s.createdAt.toISOString(), meta].join('  ');
}

function config(): Config {
  return loadConfig();
}

const program = new Command();
program.name('nullspace').description('Disposable Linux sandboxes (real VMs) with snapshots').version(VERSION);
// (so that `sandbox exec <id> ls -la` hands `-la` to the command: see passThroughOptions below)
program.enablePositionalOptions();

program
  .command('serve')
  .description('run the API server in the foreground')
  .option('--host <host>', 'address to listen on (default 127.0.0.1)')
  .option('--port <port>', 'port (default 7070)', int)
  .option('--data-dir <dir>', 'database, API key and sandbox files (default /var/lib/nullspace/data)')
  .option('--join-token <token>', 'let runtime hosts join with this token (default NULLSPACE_JOIN_TOKEN; none: a single host)')
  .option('--database <url>', 'keep the control-plane records in PostgreSQL (postgres://...; default: SQLite in the data dir; also NULLSPACE_DATABASE_URL)')
  .action(async (o: { host?: string; port?: number; dataDir?: string; joinToken?: string; database?: string }) => {
    const cfg = loadConfig(process.env, { host: o.host, port: o.port, dataDir: o.dataDir, joinToken: o.joinToken, databaseUrl: o.database });
    const server = await startServer(cfg);
    process.stdout.write(
      `nullspace ${VERSION} serving ${server.url}/v1 (OpenAPI: ${server.url}/v1/openapi.json)\n` +
        `API key: ${server.apiKeySource === 'NULLSPACE_API_KEY' ? 'from NULLSPACE_API_KEY' : `in ${server.apiKeySource}`}\n` +
        `accelerator: ${server.host.profile.accel} (${server.host.accelReason}); data dir ${cfg.dataDir}${cfg.databaseUrl ? `; database ${redactUrl(cfg.databaseUrl)}` : ''}\n`,
    );
    const stop = (sig: string) => {
      server.log.info({ signal: sig }, 'stopping (sandboxes keep running and are re-adopted at next start)');
      void server.close().then(() => process.exit(0), fail);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });

program
  .command('host')
  .description('run a runtime host of a fleet in the foreground: join the control plane, heartbeat, serve it (docs/operations.md "A fleet")')
  .requiredOption('--control <url>', "the control plane's URL")
  .option('--join-token <token>', 'the control plane\'s join token (default NULLSPACE_JOIN_TOKEN; not needed once joined)')
  .requiredOption('--data-dir <dir>', 'this host\'s data dir (its credentials, sandboxes, layers)')
  .requiredOption('--listen <addr:port>', 'where this host listens for its control plane')
  .option('--advertise <url>', 'the URL the control plane reaches this host at (default http://<listen>)')
  .action(async (o: { control: string; joinToken?: string; dataDir: string; listen: string; advertise?: string }) => {
    const cfg = loadConfig(process.env, { dataDir: o.dataDir });
    const log = createLogger(cfg.logLevel);
    const host = await startRuntimeHost({ control: o.control, joinToken: o.joinToken ?? cfg.fleet.joinToken, listen: o.listen, advertise: o.advertise, config: cfg, log });
    process.stdout.write(`nullspace ${VERSION} host ${host.hostId} listening at ${host.url}, control plane ${o.control}\n`);
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'stopping the host');
      void host.close().then(() => process.exit(0), fail);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });

const template = program.command('template').description('build, list, inspect and delete templates');
template
  .command('build')
  .argument('[recipe]', 'without --file: a built-in recipe under images/ (default base), built on this machine')
  .option('-f, --file <Dockerfile>', 'build from a Dockerfile through the server (its directory is the build context)')
  .option('--context <dir>', 'with --file: the build context directory (default: the Dockerfile\'s)')
  .option('--name <name>', 'the template\'s name (with --file: required; else default the recipe name)')
  .option('--cpus <n>', 'vCPUs of its sandboxes (default 1)', int)
  .option('--vcpus <n>', 'the same as --cpus', int)
  .option('--memory-mib <n>', 'guest RAM (default 512)', int)
  .option('--disk-mib <n>', 'root disk size (default 4096)', int)
  .option('--disk-size-mib <n>', 'the same as --disk-mib', int)
  .option('--build-arg <KEY=VALUE>', 'with --file: the value of an ARG of the Dockerfile (repeatable)', collect)
  .option('--no-cache', 'build every step again (a recipe: boot and snapshot again)')
  .option('--force', 'the same as --no-cache')
  .option('--json', 'print the result as JSON')
  .description(
    'build a template: from a Dockerfile through the server (--file; the log streams to stderr), or from a built-in recipe on this machine (Debian root filesystem, kernel, agent, then a booted snapshot; cached by recipe)',
  )
  .action(
    async (
      recipe: string | undefined,
      o: {
        file?: string;
        context?: string;
        name?: string;
        cpus?: number;
        vcpus?: number;
        memoryMib?: number;
        diskMib?: number;
        diskSizeMib?: number;
        buildArg?: string[];
        cache: boolean;
        force?: boolean;
        json?: boolean;
      },
    ) => {
      const cpus = o.cpus ?? o.vcpus;
      const diskMiB = o.diskMib ?? o.diskSizeMib;
      const again = o.force === true || !o.cache;
      if (o.file === undefined) {
        if (o.context !== undefined || o.buildArg) throw new SandboxError('--context and --build-arg go with --file', { code: 'bad_argument' });
        const t = await templateBuild(
          config(),
          {
            recipe: recipe ?? 'base',
            ...(o.name ? { name: o.name } : {}),
            ...(o.memoryMib !== undefined ? { memoryMiB: o.memoryMib } : {}),
            ...(cpus !== undefined ? { vcpus: cpus } : {}),
            ...(diskMiB !== undefined ? { diskSizeMiB: diskMiB } : {}),
            force: again,
          },
          (line) => process.stderr.write(line + '\n'),
        );
        if (o.json) printJson(t);
        else process.stdout.write(`template ${t.name} ready: ${t.memoryMiB} MiB, ${t.vcpus} vCPU, ${t.requirements.accel}, ${t.dir}\n`);
        return;
      }
      if (recipe !== undefined) throw new SandboxError(`a recipe (${recipe}) and --file: give one`, { code: 'bad_argument' });
      if (!o.name) throw new SandboxError('--name is required with --file', { code: 'bad_argument' });
      const info = await Template.build(new Template().fromDockerfile(o.file), {
        name: o.name,
        ...(cpus !== undefined ? { cpuCount: cpus } : {}),
        ...(o.memoryMib !== undefined ? { memoryMiB: o.memoryMib } : {}),
        ...(diskMiB !== undefined ? { diskSizeMiB: diskMiB } : {}),
        ...(o.context !== undefined ? { context: o.context } : {}),
        ...(o.buildArg ? { buildArgs: pairs(o.buildArg, '--build-arg') } : {}),
        noCache: again,
        onLog: (line) => process.stderr.write(line + '\n'),
      });
      if (o.json) printJson(info);
      else process.stdout.write(`template ${info.ref} ready: ${describeTemplate(info)}\n`);
    },
  );
template
  .command('list')
  .option('--local', "this machine's build cache, without a server (as the server's own templates)")
  .option('--json', 'print JSON')
  .description("the server's templates (without a configured server, or with --local: the templates built on this machine)")
  .action(async (o: { local?: boolean; json?: boolean }) => {
    if (o.local || !serverConfigured()) {
      if (!o.local) process.stderr.write('no server configured (NULLSPACE_API_URL / NULLSPACE_API_KEY): the templates built on this machine\n');
      const list = templateList(config());
      if (o.json) return printJson(list);
      for (const t of list) process.stdout.write(`${t.name}  ${t.memoryMiB} MiB  ${t.vcpus} vCPU  ${t.requirements.accel}/${t.requirements.cpuModel}  built ${t.builtAt}\n`);
      return;
    }
    let list: TemplateInfo[];
    try {
      list = await Template.list();
    } catch (err) {
      if (err instanceof SandboxError && err.code === 'connection_failed') {
        throw new SandboxError(`${err.message} (template list --local lists the templates built on this machine without a server)`, { code: err.code, cause: err });
      }
      throw err;
    }
    if (o.json) return printJson(list);
    for (const t of list) process.stdout.write(`${t.ref}  ${describeTemplate(t)}\n`);
  });
template
  .command('get')
  .argument('<name>', 'NAME (its latest version) or NAME:VERSION')
  .option('--json', 'print JSON')
  .action(async (name: string, o: { json?: boolean }) => {
    const t = await Template.get(name);
    if (o.json) return printJson(t);
    printFields(t, 14);
  });
template
  .command('delete')
  .argument('<name>')
  .description('delete every version of a template (its sandboxes and snapshots keep working)')
  .action(async (name: string) => {
    if (!(await Template.delete(name))) throw new SandboxError(`template ${name} not found`, { code: 'template_not_found' });
  });

/** Whether a server is configured for the client commands: an API URL or key given, or a local server's key file. */
function serverConfigured(): boolean {
  if (process.env.NULLSPACE_API_URL || process.env.NULLSPACE_API_KEY) return true;
  try {
    new ConnectionConfig();
    return true;
  } catch {
    return false;
  }
}

function describeTemplate(t: TemplateInfo): string {
  const start = t.startCmd ? `  start: ${t.startCmd}` : '';
  return `${t.cpuCount} vCPU  ${t.memoryMiB} MiB  disk ${t.diskSizeMiB} MiB  from ${t.from}  ${t.steps} step(s)${start}${t.compatible ? '' : '  (not compatible with this host)'}`;
}

/** Calls an API route that the SDK does not wrap (operator routes such as /v1/gc). */
function apiCall(method: string, route: string): Promise<unknown> {
  return new ApiClient(new ConnectionConfig()).json(route, { method, ...(method === 'POST' ? { json: {} } : {}) });
}

function describeSnapshot(s: Snapshot): string {
  const meta = Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`).join(',');
  return [s.id, s.kind.padEnd(9), s.sandboxId, s.createdAt.toISOString(), `${(s.sizeBytes / 1048576).toFixed(1)} MiB`, meta].join('  ');
}

const sandbox = program.command('sandbox').description('create, inspect, run commands in and kill sandboxes');
sandbox
  .command('create')
  .option('-t, --template <name>', 'template (default base)')
  .option('-s, --snapshot <id>', 'start from a reusable snapshot instead of a template')
  .option('-m, --metadata <key=value>', 'metadata (repeatable)', collect)
  .option('-e, --env <KEY=VALUE>', 'default environment (repeatable)', collect)
  .option('--timeout-ms <ms>', 'kill after this long without a timeout refresh', int)
  .option('--no-internet', 'cut outbound network access')
  .addOption(new Option('--on-timeout <action>', 'what the timeout does').choices(['kill', 'hibernate']).default('kill'))
  .option('-v, --volume <name:/path>', 'mount a shared volume at a guest path (repeatable)', collect)
  .option('--auto-resume', 'a request to one of its preview URLs resumes it when hibernated')
  .option('--public-traffic', 'serve its preview URLs without the traffic token')
  .option('--allow-out <rule>', 'egress allow rule: IP, CIDR, domain or *.domain (repeatable; any: everything else refused)', collect)
  .option('--deny-out <rule>', 'egress deny rule: IP, CIDR, domain or *.domain (repeatable; wins over allow rules)', collect)
  .option('--json', 'print JSON')
  .action(async (o: { template?: string; snapshot?: string; metadata?: string[]; env?: string[]; timeoutMs?: number; internet: boolean; onTimeout: 'kill' | 'hibernate'; volume?: string[]; autoResume?: boolean; publicTraffic?: boolean; allowOut?: string[]; denyOut?: string[]; json?: boolean }) => {
    const volumes: Record<string, string> = {};
    for (const v of o.volume ?? []) {
      const i = v.indexOf(':');
      if (i <= 0) throw new SandboxError(`--volume "${v}" must be NAME:/guest/path`, { code: 'bad_argument' });
      volumes[v.slice(i + 1)] = v.slice(0, i);
    }
    const sbx = await Sandbox.create({
      ...(o.snapshot ? { snapshotId: o.snapshot } : { template: o.template ?? 'base' }),
      metadata: pairs(o.metadata, 'metadata'),
      envs: pairs(o.env, 'env'),
      ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      allowInternetAccess: o.internet,
      lifecycle: { onTimeout: o.onTimeout, autoResume: o.autoResume === true },
      network: {
        allowPublicTraffic: o.publicTraffic === true,
        ...(o.allowOut ? { allowOut: o.allowOut } : {}),
        ...(o.denyOut ? { denyOut: o.denyOut } : {}),
      },
      ...(o.volume ? { volumes } : {}),
    });
    const info = await sbx.getInfo();
    if (o.json) printJson(info);
    else process.stdout.write(`${info.sandboxId}\n`);
  });
sandbox
  .command('list')
  .addOption(new Option('-s, --state <states>', 'comma-separated states (default: live ones)'))
  .option('-m, --metadata <key=value>', 'metadata filter (repeatable)', collect)
  .option('--json', 'print JSON')
  .action(async (o: { state?: string; metadata?: string[]; json?: boolean }) => {
    const items: SandboxInfo[] = [];
    for await (const s of Sandbox.list({ query: { metadata: pairs(o.metadata, 'metadata'), ...(o.state ? { state: o.state.split(',') as SandboxState[] } : {}) } })) items.push(s);
    if (o.json) return printJson(items);
    for (const s of items) process.stdout.write(describe(s) + '\n');
  });
sandbox
  .command('info')
  .argument('<id>')
  .option('--json', 'print JSON')
  .action(async (id: string, o: { json?: boolean }) => {
    const info = await Sandbox.getInfo(id);
    if (o.json) return printJson(info);
    printFields(info, 20);
  });
sandbox
  .command('network')
  .argument('<id>')
  .option('--set', 'replace its egress rules by those given (none given: no rules)')
  .option('--allow-out <rule>', 'egress allow rule (repeatable, with --set)', collect)
  .option('--deny-out <rule>', 'egress deny rule (repeatable, with --set)', collect)
  .description('print (or with --set replace) its egress rules and the connections they refused')
  .action(async (id: string, o: { set?: boolean; allowOut?: string[]; denyOut?: string[] }) => {
    const route = `/v1/sandboxes/${encodeURIComponent(id)}/network`;
    const api = new ApiClient(new ConnectionConfig());
    if (!o.set && (o.allowOut || o.denyOut)) throw new SandboxError('--allow-out and --deny-out need --set (which replaces the whole rule set)', { code: 'bad_argument' });
    printJson(o.set ? await api.json(route, { method: 'PUT', json: { allowOut: o.allowOut ?? [], denyOut: o.denyOut ?? [] } }) : await api.json(route));
  });
sandbox
  .command('host')
  .argument('<id>')
  .argument('<port>', 'a TCP port in the sandbox', int)
  .description("the host of a port's preview URL (send the sandbox's traffic token as X-Nullspace-Traffic-Token)")
  .action(async (id: string, port: number) => {
    const info = await Sandbox.getInfo(id);
    process.stdout.write(`${previewHost(id, info.network, port)}\n`);
  });
sandbox
  .command('signed-url')
  .argument('<id>')
  .argument('<port>', 'a TCP port in the sandbox', int)
  .option('--expires-in-s <s>', 'valid for this long (default 3600)', int)
  .option('--path <path>', 'the path it opens (default /)')
  .description("a URL of a port that opens in a browser without the token until it expires")
  .action(async (id: string, port: number, o: { expiresInS?: number; path?: string }) => {
    const info = await Sandbox.getInfo(id);
    process.stdout.write(`${signedPreviewUrl(id, info.network, port, { ...(o.expiresInS !== undefined ? { expiresInS: o.expiresInS } : {}), ...(o.path ? { path: o.path } : {}) })}\n`);
  });
sandbox
  .command('fork')
  .argument('<id>')
  .option('-m, --metadata <key=value>', "the child's metadata (default: the source's)", collect)
  .option('-n, --count <n>', 'children from one capture of the source (1-32)', int)
  .option('--json', 'print JSON')
  .description('fork a running sandbox (it keeps running); prints the child ids, one a line')
  .action(async (id: string, o: { metadata?: string[]; count?: number; json?: boolean }) => {
    const source = await Sandbox.connect(id);
    const opts = o.metadata ? { metadata: pairs(o.metadata, 'metadata') } : {};
    const children = o.count === undefined ? [await source.fork(opts)] : await source.fork({ ...opts, count: o.count });
    if (o.json) printJson(o.count === undefined ? await children[0]!.getInfo() : await Promise.all(children.map((c) => c.getInfo())));
    else for (const c of children) process.stdout.write(`${c.sandboxId}\n`);
  });
sandbox
  .command('metrics')
  .argument('<id>')
  .option('--start <time>', 'ISO 8601 time or ms since the epoch (default: the oldest sample kept)')
  .option('--end <time>', 'ISO 8601 time or ms since the epoch (default: now)')
  .option('--json', 'print JSON')
  .description("a running sandbox's metrics samples (CPU, guest memory, host memory of its VM, disk), oldest first")
  .action(async (id: string, o: { start?: string; end?: string; json?: boolean }) => {
    const q = new URLSearchParams({ ...(o.start ? { start: o.start } : {}), ...(o.end ? { end: o.end } : {}) }).toString();
    const { metrics } = (await apiCall('GET', `/v1/sandboxes/${encodeURIComponent(id)}/metrics${q ? `?${q}` : ''}`)) as { metrics: Array<Record<string, number | string | null>> };
    if (o.json) return printJson(metrics);
    const mib = (v: unknown) => (typeof v === 'number' ? (v / 1024 / 1024).toFixed(0) : '-');
    process.stdout.write('TIME                      CPU%  MEM MiB (USED/TOTAL)  HOST MiB  DISK MiB (USED/TOTAL)\n');
    for (const m of metrics) {
      process.stdout.write(
        `${String(m.timestamp).padEnd(24)}  ${String(m.cpuUsedPct).padStart(5)}  ${`${mib(m.memUsedBytes)}/${mib(m.memTotalBytes)}`.padStart(20)}  ${mib(m.hostMemBytes).padStart(8)}  ${`${mib(m.diskUsedBytes)}/${mib(m.diskTotalBytes)}`.padStart(21)}\n`,
      );
    }
  });
for (const name of ['hibernate', 'pause']) {
  sandbox
    .command(name)
    .argument('<id>')
    .option('--json', 'print the hibernation snapshot as JSON')
    .description(name === 'pause' ? 'alias of hibernate' : 'persist memory and disk and stop the VM; the sandbox is paused until resumed')
    .action(async (id: string, o: { json?: boolean }) => {
      // not through Sandbox.connect, which would resume a paused sandbox first
      const hib = (await apiCall('POST', `/v1/sandboxes/${encodeURIComponent(id)}/hibernate`)) as { snapshotId: string };
      if (o.json) printJson(hib);
      else process.stdout.write(`${hib.snapshotId}\n`);
    });
}
sandbox
  .command('resume')
  .argument('<id>')
  .option('--json', 'print JSON')
  .description('resume a paused sandbox (same id) from its latest hibernation')
  .action(async (id: string, o: { json?: boolean }) => {
    const sbx = await Sandbox.connect(id);
    const info = await sbx.getInfo();
    if (o.json) printJson(info);
    else process.stdout.write(`${info.sandboxId} ${info.state}\n`);
  });
sandbox
  .command('kill')
  .argument('<id>')
  .action(async (id: string) => {
    if (!(await Sandbox.kill(id))) throw new SandboxError(`sandbox ${id} not found`, { code: 'sandbox_not_found' });
  });
sandbox
  .command('shell')
  .argument('<id>')
  .option('--cwd <dir>', 'working directory')
  .option('--user <name>', 'user (default: the template\'s, else root)')
  .option('--cmd <command>', 'run this (bash -c) on the terminal instead of the login shell')
  .description('an interactive shell in the sandbox on this terminal (raw mode: Ctrl-C goes to the guest); exits with the shell\'s exit code')
  .action(async (id: string, o: { cwd?: string; user?: string; cmd?: string }) => {
    const sbx = await Sandbox.connect(id);
    process.exitCode = await runShell(sbx, { ...(o.cwd ? { cwd: o.cwd } : {}), ...(o.user ? { user: o.user } : {}), ...(o.cmd ? { cmd: o.cmd } : {}) });
  });
sandbox
  .command('exec')
  .argument('<id>')
  .argument('<command...>', 'command line (run with bash -c)')
  .option('--cwd <dir>', 'working directory')
  .option('-e, --env <KEY=VALUE>', 'environment (repeatable)', collect)
  .option('--timeout-ms <ms>', 'kill the command after this long (0 = never)', int)
  .option('--json', 'print the result as JSON instead of streaming')
  .description(
    'run a command, streaming its output; exits with its exit code (128 + the signal number when a signal ended it, 124 when its timeout killed it). Options go before <id>: everything after it is the command',
  )
  .passThroughOptions()
  .action(async (id: string, words: string[], o: { cwd?: string; env?: string[]; timeoutMs?: number; json?: boolean }) => {
    const command = words[0] === '--' ? words.slice(1) : words;
    if (!command.length) throw new SandboxError('no command given', { code: 'bad_request' });
    const sbx = await Sandbox.connect(id);
    let result: CommandResult;
    try {
      result = await sbx.commands.run(command.join(' '), {
        ...(o.cwd ? { cwd: o.cwd } : {}),
        envs: pairs(o.env, 'env'),
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        ...(o.json ? {} : { onStdout: (d: string) => process.stdout.write(d), onStderr: (d: string) => process.stderr.write(d) }),
      });
    } catch (err) {
      // killed by its timeout: what it printed, and 124 (as coreutils `timeout`)
      if (!(err instanceof TimeoutError && err.result)) throw err;
      if (o.json) printJson(err.result);
      process.stderr.write(`the command was killed after its timeout\n`);
      process.exitCode = 124;
      return;
    }
    if (o.json) printJson(result);
    // a signal ends it as in a shell: 128 + the signal's number
    process.exitCode = result.exitCode !== null && result.exitCode >= 0 ? result.exitCode : 128 + ((result.signal && os.constants.signals[result.signal as NodeJS.Signals]) || 0);
  });

const snapshot = program.command('snapshot').description('reusable snapshots: memory + disk of a sandbox at one instant');
snapshot
  .command('create')
  .argument('<sandbox-id>')
  .option('-m, --metadata <key=value>', 'metadata (repeatable)', collect)
  .option('--json', 'print JSON')
  .description('snapshot a running sandbox (it keeps running); prints the snapshot id')
  .action(async (id: string, o: { metadata?: string[]; json?: boolean }) => {
    const sbx = await Sandbox.connect(id);
    const snap = await sbx.createSnapshot({ metadata: pairs(o.metadata, 'metadata') });
    if (o.json) printJson(snap);
    else process.stdout.write(`${snap.id}\n`);
  });
snapshot
  .command('list')
  .option('--sandbox <id>', 'only snapshots of this sandbox')
  .option('-k, --kind <kinds>', 'comma-separated kinds (default reusable,hibernate)')
  .option('-m, --metadata <key=value>', 'metadata filter (repeatable)', collect)
  .option('--json', 'print JSON')
  .action(async (o: { sandbox?: string; kind?: string; metadata?: string[]; json?: boolean }) => {
    const items: Snapshot[] = [];
    for await (const s of Snapshot.list({
      ...(o.sandbox ? { sandboxId: o.sandbox } : {}),
      ...(o.kind ? { kind: o.kind.split(',') as SnapshotKind[] } : {}),
      metadata: pairs(o.metadata, 'metadata'),
    })) {
      items.push(s);
    }
    if (o.json) return printJson(items);
    for (const s of items) process.stdout.write(describeSnapshot(s) + '\n');
  });
snapshot
  .command('info')
  .argument('<snapshot-id>')
  .option('--json', 'print JSON')
  .description('a snapshot, and whether this host can restore it')
  .action(async (id: string, o: { json?: boolean }) => {
    const snap = await Snapshot.get(id);
    const compatibility = await Snapshot.compatibility(id);
    if (o.json) return printJson({ ...snap.toJSON(), compatibility });
    process.stdout.write(describeSnapshot(snap) + '\n');
    process.stdout.write(
      compatibility.compatible
        ? 'restorable on this host\n'
        : `NOT restorable on this host: ${compatibility.mismatches.map((m) => `${m.field} ${m.snapshot} (host: ${m.host})`).join('; ')}\n`,
    );
  });
snapshot
  .command('delete')
  .argument('<snapshot-id>')
  .description('delete a snapshot (sandboxes started from it keep running)')
  .action(async (id: string) => {
    if (!(await Snapshot.delete(id))) throw new SandboxError(`snapshot ${id} not found`, { code: 'snapshot_not_found' });
  });

const volume = program.command('volume').description('shared volumes: durable storage mounted into sandboxes');
volume
  .command('create')
  .argument('<name>')
  .option('--json', 'print JSON')
  .action(async (name: string, o: { json?: boolean }) => {
    const v = await Volume.create(name);
    if (o.json) printJson(v);
    else process.stdout.write(`${v.name}\n`);
  });
volume
  .command('list')
  .option('--json', 'print JSON')
  .action(async (o: { json?: boolean }) => {
    const list = await Volume.list();
    if (o.json) return printJson(list);
    for (const v of list) process.stdout.write(`${v.name}  ${(v.sizeBytes / 1048576).toFixed(1)} MiB  ${v.createdAt.toISOString()}  ${v.mountedBy.join(',')}\n`);
  });
volume
  .command('info')
  .argument('<name>')
  .option('--json', 'print JSON')
  .action(async (name: string, o: { json?: boolean }) => {
    const v = await Volume.get(name);
    if (o.json) return printJson(v);
    process.stdout.write(`${v.name}  ${(v.sizeBytes / 1048576).toFixed(1)} MiB  mounted by: ${v.mountedBy.join(', ') || 'none'}\n`);
  });
volume
  .command('delete')
  .argument('<name>')
  .description('delete a volume and its data (refused while a sandbox mounts it)')
  .action(async (name: string) => {
    if (!(await Volume.delete(name))) throw new SandboxError(`volume ${name} not found`, { code: 'volume_not_found' });
  });

program
  .command('gc')
  .option('--dry-run', 'only show what would be freed and what holds the rest')
  .option('--json', 'print JSON')
  .description('free snapshot storage that nothing references any more (also runs on its own after deletes)')
  .action(async (o: { dryRun?: boolean; json?: boolean }) => {
    type Report = {
      freed: Array<{ layerId: string; kind: string; bytes: number }>;
      freedBytes: number;
      orphanFiles: string[];
      retained: Array<{ layerId: string; kind: string; bytes: number; heldBy: string[] }>;
      retainedBytes: number;
    };
    const r = (await apiCall(o.dryRun ? 'GET' : 'POST', '/v1/gc')) as Report;
    if (o.json) return printJson(r);
    const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
    process.stdout.write(`${o.dryRun ? 'would free' : 'freed'} ${r.freed.length} layer(s), ${mib(r.freedBytes)}${r.orphanFiles.length ? ` and ${r.orphanFiles.length} orphan file(s)` : ''}\n`);
    for (const l of r.freed) process.stdout.write(`  ${l.layerId}  ${l.kind.padEnd(5)}  ${mib(l.bytes)}\n`);
    process.stdout.write(`retained ${r.retained.length} layer(s), ${mib(r.retainedBytes)}\n`);
    for (const l of r.retained) process.stdout.write(`  ${l.layerId}  ${l.kind.padEnd(5)}  ${mib(l.bytes)}  held by ${l.heldBy.join(', ')}\n`);
  });

program
  .command('cache')
  .description('the build cache of templates and images on this machine')
  .command('prune')
  .option('--dry-run', 'only show what would be removed and why the rest stays')
  .option('--data-dir <dir>', 'a data dir whose snapshots and sandboxes must stay restorable (repeatable; default: the server\'s)', collect)
  .option('--json', 'print JSON')
  .description('remove template and image builds that nothing can use any more (not current, not being built, no snapshot or sandbox disk rests on them)')
  .action(async (o: { dryRun?: boolean; dataDir?: string[]; json?: boolean }) => {
    const cfg = config();
    const r = await pruneCache(cfg.cacheDir, o.dataDir ?? [cfg.dataDir], { dryRun: o.dryRun ?? false });
    if (o.json) return printJson(r);
    const gib = (b: number) => `${(b / 1024 ** 3).toFixed(2)} GiB`;
    process.stdout.write(`${r.dryRun ? 'would remove' : 'removed'} ${r.removed.length} build(s), ${gib(r.freedBytes)}\n`);
    for (const e of r.removed) process.stdout.write(`  ${e.dir}  ${gib(e.bytes)}\n`);
    process.stdout.write(`kept ${r.kept.length}\n`);
    for (const e of r.kept) process.stdout.write(`  ${e.dir}  ${gib(e.bytes)}  ${e.why}\n`);
  });

const files = program.command('files').description('read and write files in a sandbox');
files
  .command('read')
  .argument('<id>')
  .argument('<path>', 'absolute path in the sandbox')
  .description('write the file to stdout')
  .action(async (id: string, path: string) => {
    const sbx = await Sandbox.connect(id);
    const stream = await sbx.files.read(path, { format: 'stream' });
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) {
      if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once('drain', r));
    }
  });
files
  .command('write')
  .argument('<id>')
  .argument('<path>', 'absolute path in the sandbox')
  .argument('[source]', 'local file, or - for stdin', '-')
  .description('write a local file (or stdin) to the sandbox')
  .action(async (id: string, path: string, source: string) => {
    // the local file first: a missing one is that, not a server problem
    let fd: number | undefined;
    if (source !== '-') {
      try {
        fd = fs.openSync(source, 'r');
      } catch (err) {
        throw new SandboxError(`cannot read ${source}: ${(err as Error).message}`, { code: 'bad_request' });
      }
    }
    const sbx = await Sandbox.connect(id);
    const input = fd === undefined ? process.stdin : fs.createReadStream('', { fd });
    // read as the upload goes (never the whole file in memory)
    const body = Readable.toWeb(input) as ReadableStream<Uint8Array>;
    const info = await sbx.files.write(path, body);
    process.stderr.write(`wrote ${info.size} bytes to ${info.path}\n`);
  });

program.parseAsync(process.argv).catch(fail);
