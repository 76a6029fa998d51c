import fs from 'node:fs';
import path from 'node:path';
import { TextDecoder } from 'node:util';
import { ApiClient, ConnectionConfig, ndjson, type ConnectionOpts } from './connection.js';
import { IgnoreRules, readableOf, tarStream, walk, type TarEntry } from './context.js';
import { InvalidArgumentError, SandboxError, TemplateBuildError } from './errors.js';
import { falseOn } from './paginator.js';

/** When a template's start command counts as ready (then its memory snapshot is taken). */
export type ReadyCheck = { port: number } | { cmd: string } | { file: string };

/** Ready once a TCP port in the guest accepts connections. */
export function waitForPort(port: number): ReadyCheck {
  return { port };
}

/** Ready once a command exits 0 (it is run again until it does). */
export function waitForCommand(cmd: string): ReadyCheck {
  return { cmd };
}

/** Ready once a file exists (an absolute guest path). */
export function waitForFile(file: string): ReadyCheck {
  return { file };
}

/** Where a build starts (the spec's `from`). */
export type BuildFrom = { template: string } | { image: string; auth?: { username: string; password: string } } | { archive: string };

/** One step of a build spec (docs/api.md, "Templates"). */
export type BuildStep =
  | { type: 'run'; cmd: string }
  | { type: 'copy'; src: string; dest: string; chown?: string; mode?: string }
  | { type: 'env'; envs: Record<string, string> }
  | { type: 'workdir'; path: string }
  | { type: 'user'; name: string }
  | { type: 'expose'; port: number }
  | { type: 'apt'; packages: string[] };

/** What `POST /v1/templates` builds. */
export interface BuildSpec {
  from?: BuildFrom;
  dockerfile?: string;
  steps: BuildStep[];
  start?: { cmd: string; ready?: ReadyCheck; timeoutMs?: number };
}

/** A built template (one version of a name). */
export interface TemplateInfo {
  name: string;
  version: number;
  /** `name:version` */
  ref: string;
  cpuCount: number;
  memoryMiB: number;
  diskSizeMiB: number;
  createdAt: Date;
  /** Where it started: "template base:1", "image registry/app:1", ... */
  from: string;
  startCmd: string | null;
  ready: ReadyCheck | null;
  /** Its sandboxes' default environment. */
  envs: Record<string, string>;
  /** Default user of commands in its sandboxes (null: root). */
  user: string | null;
  /** Default working directory of commands in its sandboxes (null: /workspace). */
  workdir: string | null;
  exposedPorts: number[];
  buildMs: number | null;
  /** How many steps built it. */
  steps: number;
  /** Whether this host can start sandboxes from it. */
  compatible: boolean;
  accel: string;
  cpuModel: string;
}

export interface TemplateBuildOpts extends ConnectionOpts {
  /** The template's name (a new version when it exists): [a-z0-9][a-z0-9-]{0,62}. */
  name: string;
  /** vCPUs of its sandboxes (default 1). */
  cpuCount?: number;
  /** Their memory (default 512). */
  memoryMiB?: number;
  /** Their root disk (default 4096). */
  diskSizeMiB?: number;
  /** Each line of the build's log, as it comes: "Step 3/7: RUN npm ci", output lines, "Step 3/7 done (1.2 s)". */
  onLog?: (line: string) => void;
  /** Build every step again instead of reusing earlier results. */
  noCache?: boolean;
  /** Values of the Dockerfile's ARGs. */
  buildArgs?: Record<string, string>;
  /** The build context directory: what the Dockerfile's COPY reads (default: the directory of a Dockerfile given by path). */
  context?: string;
}

type RawTemplate = Omit<TemplateInfo, 'createdAt'> & { createdAt: string };

function templateInfo(raw: RawTemplate): TemplateInfo {
  return { ...raw, createdAt: new Date(raw.createdAt) };
}

/** Where `.copy()` and `.fromArchive()` put local files in the context (a Dockerfile's own context must not use it). */
const RESERVED = '.nullspace';

function badArgument(message: string): InvalidArgumentError {
  return new InvalidArgumentError(message, { code: 'bad_request' });
}

/**
 * A template recipe: where it starts (a template, an image, an image archive or a Dockerfile), its
 * steps, and the process that runs in its memory snapshot. Every method returns the builder:
 *
 *     const t = new Template().fromTemplate('base').aptInstall(['nodejs']).copy('./app', '/srv/app')
 *       .setWorkdir('/srv/app').setStartCmd('node server.js', waitForPort(3000))
 *     const info = await Template.build(t, { name: 'my-node', onLog: console.log })
 *
 * Local files of `.copy()` (and a Dockerfile's context directory) are sent as a tar archive first.
 */
export class Template {
  private from: BuildFrom | undefined;
  private dockerfile: string | undefined;
  private dockerfileDir: string | undefined;
  private readonly steps: BuildStep[] = [];
  private start: BuildSpec['start'];
  /** Local files and directories put into the context under RESERVED: absolute path, path in the context. */
  private readonly files: Array<{ local: string; name: string }> = [];

  /** Refuses a second start (fromTemplate, fromImage, fromArchive, fromDockerfile). */
  private noStartYet(): void {
    if (this.from || this.dockerfile !== undefined) throw badArgument('the template already has a start: call one of fromTemplate, fromImage, fromArchive, fromDockerfile once');
  }

  private setFrom(from: BuildFrom): this {
    this.noStartYet();
    this.from = from;
    return this;
  }

  /** A local file or directory into the context (checked now); its path in the context. */
  private addLocal(localPath: string, kind: string): string {
    const local = path.resolve(localPath);
    if (!fs.lstatSync(local, { throwIfNoEntry: false })) throw badArgument(`${kind}: ${localPath} does not exist`);
    const name = `${RESERVED}/${kind}/${this.files.length}/${path.basename(local) || 'root'}`;
    this.files.push({ local, name });
    return name;
  }

  /** Starts from a nullspace template: "name" or "name:VERSION". */
  fromTemplate(name: string): this {
    return this.setFrom({ template: name });
  }

  /** Starts from an image of a registry (Docker Registry HTTP API v2), with credentials when it needs them. */
  fromImage(ref: string, auth: { username?: string; password?: string } = {}): this {
    if ((auth.username === undefined) !== (auth.password === undefined)) throw badArgument('fromImage: give both username and password, or neither');
    return this.setFrom(auth.username !== undefined ? { image: ref, auth: { username: auth.username, password: auth.password! } } : { image: ref });
  }

  /** Starts from a local image archive (`docker save` or an OCI layout tar), sent with the context. */
  fromArchive(localPath: string): this {
    this.noStartYet();
    return this.setFrom({ archive: `ctx:${this.addLocal(localPath, 'from')}` });
  }

  /**
   * Starts from a Dockerfile: a path to one (its directory is the build context unless `context`
   * is given to `build`), a directory holding one, or its text.
   */
  fromDockerfile(pathOrText: string): this {
    this.noStartYet();
    if (this.steps.length) throw badArgument("call fromDockerfile before adding steps (the Dockerfile's steps come first)");
    let text = pathOrText;
    let dir: string | undefined;
    if (!pathOrText.includes('\n')) {
      let file = path.resolve(pathOrText);
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (st?.isDirectory()) file = path.join(file, 'Dockerfile');
      if (st) {
        try {
          text = fs.readFileSync(file, 'utf8');
        } catch (err) {
          throw badArgument(`fromDockerfile: cannot read ${file}: ${(err as Error).message}`);
        }
        dir = path.dirname(file);
      } else if (!/^\s*(#|from\s|arg\s)/i.test(pathOrText)) {
        throw badArgument(`fromDockerfile: ${pathOrText} does not exist (and is not a Dockerfile's text)`);
      }
    }
    this.dockerfile = text;
    this.dockerfileDir = dir;
    return this;
  }

  /** Installs Debian packages (apt-get, as root). */
  aptInstall(packages: string | string[]): this {
    this.steps.push({ type: 'apt', packages: typeof packages === 'string' ? [packages] : [...packages] });
    return this;
  }

  /** Runs a shell command (several: joined with &&) as the current user, in the current workdir. */
  runCmd(cmd: string | string[]): this {
    this.steps.push({ type: 'run', cmd: typeof cmd === 'string' ? cmd : cmd.join(' && ') });
    return this;
  }

  /**
   * Copies a local file or directory (its contents) to a guest path; a file goes into `guestPath`
   * when it ends with `/`. `mode`: permission bits (0o755 or "0755"); `chown`: "user[:group]".
   */
  copy(localPath: string, guestPath: string, opts: { chown?: string; mode?: number | string } = {}): this {
    const src = this.addLocal(localPath, 'copy');
    const step: BuildStep = { type: 'copy', src, dest: guestPath };
    if (opts.chown !== undefined) step.chown = opts.chown;
    if (opts.mode !== undefined) step.mode = typeof opts.mode === 'number' ? opts.mode.toString(8).padStart(4, '0') : opts.mode;
    this.steps.push(step);
    return this;
  }

  /** Sets environment variables for later steps and as the default environment of its sandboxes. */
  setEnvs(envs: Record<string, string>): this {
    this.steps.push({ type: 'env', envs: { ...envs } });
    return this;
  }

  /** The working directory of later steps and of commands in its sandboxes. */
  setWorkdir(workdir: string): this {
    this.steps.push({ type: 'workdir', path: workdir });
    return this;
  }

  /** The user of later steps and of commands in its sandboxes. */
  setUser(name: string): this {
    this.steps.push({ type: 'user', name });
    return this;
  }

  /** Records a port the template's service listens on. */
  expose(port: number): this {
    this.steps.push({ type: 'expose', port });
    return this;
  }

  /**
   * The process running in the template's memory snapshot: started last; the snapshot is taken
   * once `readyCmd` passes (waitForPort, waitForCommand, waitForFile; without one, right after the
   * start), within `timeoutMs` (default 60000).
   */
  setStartCmd(cmd: string, readyCmd?: ReadyCheck, opts: { timeoutMs?: number } = {}): this {
    this.start = { cmd, ...(readyCmd ? { ready: readyCmd } : {}), ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) };
    return this;
  }

  /** The build spec this recipe sends (its local files go in the context). */
  toSpec(): BuildSpec {
    const spec: BuildSpec = { steps: this.steps.map((s) => ({ ...s }) as BuildStep) };
    if (this.from) spec.from = this.from;
    if (this.dockerfile !== undefined) spec.dockerfile = this.dockerfile;
    if (this.start) spec.start = { ...this.start };
    return spec;
  }

  /** The context's entries: the context directory (its .dockerignore applied), then the recipe's local files. */
  private async *contextEntries(dir: string | undefined): AsyncGenerator<TarEntry> {
    if (dir) {
      const ignoreFile = path.join(dir, '.dockerignore');
      const rules = fs.existsSync(ignoreFile) ? new IgnoreRules(fs.readFileSync(ignoreFile, 'utf8')) : undefined;
      yield* walk(dir, '', rules);
    }
    const now = Math.floor(Date.now() / 1000);
    const dirs = new Set<string>();
    for (const f of this.files) {
      const parts = f.name.split('/');
      for (let i = 1; i < parts.length; i++) {
        const d = parts.slice(0, i).join('/');
        if (!dirs.has(d)) yield { name: d, type: 'dir', mode: 0o755, mtime: now };
        dirs.add(d);
      }
      yield* walk(f.local, f.name);
    }
  }

  /**
   * Builds `template` on the server: sends the context (when there are local files), then the spec,
   * and follows the build's log to its end. Resolves with the new template's info; a failed build
   * rejects with a TemplateBuildError (step, exit code, output), a refused request (bad spec,
   * Dockerfile, name) with the error of its code before anything is built.
   */
  static async build(template: Template, opts: TemplateBuildOpts): Promise<TemplateInfo> {
    const api = new ApiClient(new ConnectionConfig(opts));
    const dir = opts.context !== undefined ? path.resolve(opts.context) : template.dockerfileDir;
    if (dir !== undefined) {
      if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw badArgument(`the build context ${dir} is not a directory`);
      if (template.files.length && fs.existsSync(path.join(dir, RESERVED))) {
        throw badArgument(`the build context ${dir} has a ${RESERVED} entry, where the recipe's local files go: rename it or leave it out of the context`);
      }
    }
    let contextId: string | undefined;
    if (dir !== undefined || template.files.length) {
      let sourceError: unknown;
      const body = readableOf(tarStream(template.contextEntries(dir)), (err) => (sourceError = err));
      try {
        const ctx = await api.json<{ contextId: string }>('/v1/templates/contexts', { method: 'POST', body, headers: { 'content-type': 'application/x-tar' }, timeoutMs: false });
        contextId = ctx.contextId;
      } catch (err) {
        throw sourceError ?? err;
      }
    }
    const res = await api.request('/v1/templates', {
      method: 'POST',
      json: {
        name: opts.name,
        spec: template.toSpec(),
        contextId,
        buildArgs: opts.buildArgs,
        cpuCount: opts.cpuCount,
        memoryMiB: opts.memoryMiB,
        diskSizeMiB: opts.diskSizeMiB,
        noCache: opts.noCache,
      },
      timeoutMs: false,
    });
    return followBuild(res, opts.onLog ?? (() => {}));
  }

  /** Every template of the server (`base` included), each at its latest version. */
  static async list(opts: ConnectionOpts = {}): Promise<TemplateInfo[]> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return (await api.json<{ templates: RawTemplate[] }>('/v1/templates')).templates.map(templateInfo);
  }

  /** A template: "name" (its latest version) or "name:VERSION". */
  static async get(name: string, opts: ConnectionOpts = {}): Promise<TemplateInfo> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return templateInfo(await api.json<RawTemplate>(`/v1/templates/${encodeURIComponent(name)}`));
  }

  /** Deletes every version of a template (its sandboxes and snapshots keep working). False when there is none. */
  static async delete(name: string, opts: ConnectionOpts = {}): Promise<boolean> {
    const api = new ApiClient(new ConnectionConfig(opts));
    return falseOn('template_not_found', () => api.json(`/v1/templates/${encodeURIComponent(name)}`, { method: 'DELETE' }));
  }
}

/** A build's output as lines: each stream decoded on its own (UTF-8 split across chunks), a line handed out when it ends. */
class LogLines {
  private readonly decoders = new Map<string, TextDecoder>();
  private readonly pending = new Map<string, string>();
  constructor(private readonly emit: (line: string) => void) {}

  add(stream: string, base64: string): void {
    let dec = this.decoders.get(stream);
    if (!dec) this.decoders.set(stream, (dec = new TextDecoder()));
    const text = (this.pending.get(stream) ?? '') + dec.decode(Buffer.from(base64, 'base64'), { stream: true });
    const lines = text.split('\n');
    this.pending.set(stream, lines.pop()!);
    for (const line of lines) this.emit(line.replace(/\r$/, ''));
  }

  /** Hands out what is left of each stream (a last line without a newline). */
  flush(): void {
    for (const [stream, dec] of this.decoders) {
      const rest = (this.pending.get(stream) ?? '') + dec.decode();
      if (rest) this.emit(rest.replace(/\r$/, ''));
    }
    this.decoders.clear();
    this.pending.clear();
  }
}

async function followBuild(res: Response, onLog: (line: string) => void): Promise<TemplateInfo> {
  const log = new LogLines(onLog);
  let of = 0;
  for await (const ev of ndjson(res)) {
    switch (ev.type) {
      case 'step':
        log.flush();
        of = Number(ev.of ?? of);
        onLog(`Step ${String(ev.step)}/${of}: ${String(ev.instruction)}${ev.cached ? ' (cached)' : ''}`);
        break;
      case 'log':
        log.add(String(ev.stream ?? 'stdout'), String(ev.data ?? ''));
        break;
      case 'info':
        log.flush();
        onLog(String(ev.message));
        break;
      case 'stepDone':
        log.flush();
        onLog(`Step ${String(ev.step)}/${of} done (${(Number(ev.ms) / 1000).toFixed(1)} s)`);
        break;
      case 'done':
        log.flush();
        return templateInfo(ev.template as RawTemplate);
      case 'error':
        log.flush();
        throw new TemplateBuildError(String(ev.message ?? 'the build failed'), {
          code: String(ev.code ?? 'template_build_failed'),
          step: typeof ev.step === 'number' ? ev.step : null,
          exitCode: typeof ev.exitCode === 'number' ? ev.exitCode : null,
          output: typeof ev.output === 'string' ? ev.output : '',
        });
      default:
        break; // events of later servers
    }
  }
  log.flush();
  throw new SandboxError('the build stream ended without a result (the server stopped?)', { code: 'stream_ended' });
}
