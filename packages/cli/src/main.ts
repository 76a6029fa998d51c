#!/usr/bin/env node
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { loadConfig, startServer, VERSION, type Config } from '@nullspace/server';
import { Sandbox, SandboxError, type SandboxInfo, type SandboxState } from 'nullspace';
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

function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
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

program
  .command('serve')
  .description('run the API server in the foreground')
  .option('--host <host>', 'address to listen on (default 127.0.0.1)')
  .option('--port <port>', 'port (default 7070)', int)
  .option('--data-dir <dir>', 'database, API key and sandbox files (default /var/lib/nullspace/data)')
  .action(async (o: { host?: string; port?: number; dataDir?: string }) => {
    const cfg = loadConfig(process.env, { host: o.host, port: o.port, dataDir: o.dataDir });
    const server = await startServer(cfg);
    process.stdout.write(
      `nullspace ${VERSION} serving ${server.url}/v1 (OpenAPI: ${server.url}/v1/openapi.json)\n` +
        `API key: ${server.apiKeySource === 'NULLSPACE_API_KEY' ? 'from NULLSPACE_API_KEY' : `in ${server.apiKeySource}`}\n` +
        `accelerator: ${server.host.profile.accel} (${server.host.accelReason}); data dir ${cfg.dataDir}\n`,
    );
    const stop = (sig: string) => {
      server.log.info({ signal: sig }, 'stopping (sandboxes keep running and are re-adopted at next start)');
      void server.close().then(() => process.exit(0), fail);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });

const template = program.command('template').description('build and list templates');
template
  .command('build')
  .argument('[recipe]', 'recipe under images/', 'base')
  .option('--name <name>', 'register under another name (default: the recipe name)')
  .option('--memory-mib <n>', 'guest RAM (default from the recipe: 512)', int)
  .option('--vcpus <n>', 'vCPUs (default from the recipe: 1)', int)
  .option('--disk-size-mib <n>', 'root disk size (default from the recipe)', int)
  .option('--force', 'boot and snapshot again even if cached')
  .option('--json', 'print the result as JSON')
  .description('build a template: Debian root filesystem, kernel, agent, then a booted snapshot (cached by recipe)')
  .action(async (recipe: string, o: { name?: string; memoryMib?: number; vcpus?: number; diskSizeMib?: number; force?: boolean; json?: boolean }) => {
    const t = await templateBuild(
      config(),
      {
        recipe,
        ...(o.name ? { name: o.name } : {}),
        ...(o.memoryMib !== undefined ? { memoryMiB: o.memoryMib } : {}),
        ...(o.vcpus !== undefined ? { vcpus: o.vcpus } : {}),
        ...(o.diskSizeMib !== undefined ? { diskSizeMiB: o.diskSizeMib } : {}),
        force: o.force ?? false,
      },
      (line) => process.stderr.write(line + '\n'),
    );
    if (o.json) printJson(t);
    else process.stdout.write(`template ${t.name} ready: ${t.memoryMiB} MiB, ${t.vcpus} vCPU, ${t.requirements.accel}, ${t.dir}\n`);
  });
template
  .command('list')
  .option('--json', 'print JSON')
  .description('templates built on this machine')
  .action((o: { json?: boolean }) => {
    const list = templateList(config());
    if (o.json) return printJson(list);
    for (const t of list) process.stdout.write(`${t.name}  ${t.memoryMiB} MiB  ${t.vcpus} vCPU  ${t.requirements.accel}/${t.requirements.cpuModel}  built ${t.builtAt}\n`);
  });

const sandbox = program.command('sandbox').description('create, inspect, run commands in and kill sandboxes');
sandbox
  .command('create')
  .option('-t, --template <name>', 'template', 'base')
  .option('-m, --metadata <key=value>', 'metadata (repeatable)', collect)
  .option('-e, --env <KEY=VALUE>', 'default environment (repeatable)', collect)
  .option('--timeout-ms <ms>', 'kill after this long without a timeout refresh', int)
  .option('--no-internet', 'cut outbound network access')
  .option('--json', 'print JSON')
  .action(async (o: { template: string; metadata?: string[]; env?: string[]; timeoutMs?: number; internet: boolean; json?: boolean }) => {
    const sbx = await Sandbox.create({
      template: o.template,
      metadata: pairs(o.metadata, 'metadata'),
      envs: pairs(o.env, 'env'),
      ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      allowInternetAccess: o.internet,
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
    for (const [k, v] of Object.entries(info)) process.stdout.write(`${k.padEnd(20)} ${v instanceof Date ? v.toISOString() : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}\n`);
  });
sandbox
  .command('kill')
  .argument('<id>')
  .action(async (id: string) => {
    if (!(await Sandbox.kill(id))) throw new SandboxError(`sandbox ${id} not found`, { code: 'sandbox_not_found' });
  });
sandbox
  .command('exec')
  .argument('<id>')
  .argument('<command...>', 'command line (run with bash -c)')
  .option('--cwd <dir>', 'working directory')
  .option('-e, --env <KEY=VALUE>', 'environment (repeatable)', collect)
  .option('--timeout-ms <ms>', 'kill the command after this long (0 = never)', int)
  .option('--json', 'print the result as JSON instead of streaming')
  .description('run a command, streaming its output; exits with its exit code')
  .action(async (id: string, command: string[], o: { cwd?: string; env?: string[]; timeoutMs?: number; json?: boolean }) => {
    const sbx = await Sandbox.connect(id);
    const result = await sbx.commands.run(command.join(' '), {
      ...(o.cwd ? { cwd: o.cwd } : {}),
      envs: pairs(o.env, 'env'),
      ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      ...(o.json ? {} : { onStdout: (d: string) => process.stdout.write(d), onStderr: (d: string) => process.stderr.write(d) }),
    });
    if (o.json) printJson(result);
    process.exitCode = result.exitCode ?? 128;
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
    const sbx = await Sandbox.connect(id);
    const input = source === '-' ? process.stdin : fs.createReadStream(source);
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        for await (const chunk of input) controller.enqueue(chunk as Uint8Array);
        controller.close();
      },
    });
    const info = await sbx.files.write(path, body);
    process.stderr.write(`wrote ${info.size} bytes to ${info.path}\n`);
  });

program.parseAsync(process.argv).catch(fail);
