import path from 'node:path';
import { NsError } from '@nullspace/runtime';

/**
 * The build spec: what every front end (a Dockerfile, the SDKs' recipe builders, the CLI) produces
 * and the build engine builds (docs/api.md, "Templates"). This module holds its types, the rules of
 * each field and `validateSpec`, which checks a spec as a client sent it and normalizes it. The rules
 * are shared with the Dockerfile parser (dockerfile.ts), which reports the same problems with the
 * line they come from.
 *
 * Semantics the engine implements (written here so that both parsers and the engine agree):
 * - `run` runs `cmd` with the shell (`/bin/bash -c`, else `/bin/sh -c`) as the current user, in the
 *   current workdir, with the current environment.
 * - `copy` copies `src`, a path inside the build context (it may hold the glob characters `*`, `?`
 *   and `[...]`, matched per path segment against the context), to `dest`: a file to `dest` (into it
 *   when `dest` ends with `/`), a directory's contents into `dest` (created). Several matches need a
 *   `dest` that ends with `/`. Files belong to root unless `chown` (`user`, `user:group`, uids) names
 *   their owner; `mode` (four octal digits) replaces their permission bits.
 * - `dest` and `workdir` paths that are relative are relative to the workdir in effect at the step.
 * - `env`, `workdir`, `user` change the state of later steps and become the template's defaults for
 *   its sandboxes (`templateDefaults`); `expose` only records a port.
 * - `apt` runs `aptCommand(packages)` as root.
 */

/** A registry's credentials for `from.image`. */
export interface RegistryAuth {
  username: string;
  password: string;
}

/** Where a build starts: a nullspace template (`name` or `name:VERSION`), an image, or an image archive in the context. */
export type BuildFrom = { template: string } | { image: string; auth?: RegistryAuth } | { archive: string };

export interface RunStep {
  type: 'run';
  cmd: string;
}
export interface CopyStep {
  type: 'copy';
  src: string;
  dest: string;
  chown?: string;
  mode?: string;
}
export interface EnvStep {
  type: 'env';
  envs: Record<string, string>;
}
export interface WorkdirStep {
  type: 'workdir';
  path: string;
}
export interface UserStep {
  type: 'user';
  name: string;
}
export interface ExposeStep {
  type: 'expose';
  port: number;
}
export interface AptStep {
  type: 'apt';
  packages: string[];
}
export type BuildStep = RunStep | CopyStep | EnvStep | WorkdirStep | UserStep | ExposeStep | AptStep;
export type StepType = BuildStep['type'];

/** When the start command counts as ready: a TCP port that accepts connections, a command that exits 0, a file that exists. */
export type ReadyCheck = { port: number } | { cmd: string } | { file: string };

export interface StartSpec {
  cmd: string;
  ready?: ReadyCheck;
  /** The limit of the ready check; default 60000. */
  timeoutMs?: number;
}

/** A spec as a client sends it (`spec` of `POST /v1/templates`). */
export interface BuildSpec {
  from?: BuildFrom;
  /** A Dockerfile's text: parsed by the server into from/steps/start; `steps` of this spec come after its own. */
  dockerfile?: string;
  steps?: BuildStep[];
  start?: StartSpec;
}

/** The start command with its defaults applied. */
export interface ResolvedStart {
  cmd: string;
  ready: ReadyCheck | null;
  timeoutMs: number;
}

/** `validateSpec`'s result: a spec whose every field was checked, paths normalized, defaults applied. */
export interface ValidBuildSpec {
  /** Absent only when `dockerfile` is there (its FROM is the start). */
  from?: BuildFrom;
  dockerfile?: string;
  steps: BuildStep[];
  start: ResolvedStart | null;
}

/** What the engine builds (`resolveBuildSpec` in dockerfile.ts): the Dockerfile parsed, its steps first. */
export interface ResolvedBuildSpec {
  from: BuildFrom;
  steps: BuildStep[];
  start: ResolvedStart | null;
  /** Things worth telling the user that are no error (build args nothing declared). */
  warnings: string[];
}

/** What a template gives its sandboxes, from its steps (`templateDefaults`). */
export interface TemplateDefaults {
  envs: Record<string, string>;
  user: string | null;
  workdir: string | null;
  exposedPorts: number[];
}

/** A template's name: `[a-z0-9][a-z0-9-]{0,62}`. */
export const TEMPLATE_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** A template as a build's start: `name` or `name:VERSION` (VERSION a positive integer). */
export const TEMPLATE_REF_RE = /^([a-z0-9][a-z0-9-]{0,62})(?::([1-9][0-9]{0,8}))?$/;
/** An environment variable's name (as the API's `envs`). */
export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;
/** A user name (as the commands API's `user`). */
export const USER_NAME_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
/** A copy's owner: a user or uid, optionally `:` a group or gid. */
export const CHOWN_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$/;
/** Permission bits in octal: 3 or 4 digits. */
export const MODE_RE = /^[0-7]{3,4}$/;
/**
 * A Debian package as apt-get takes it: `name`, `name:arch`, `name=version`, `name/release`. Nothing
 * else: the names become words of a shell command.
 */
export const APT_PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]{0,127}(:[a-z0-9-]{1,32})?(=[A-Za-z0-9.+:~_-]{1,128}|\/[a-z0-9.-]{1,64})?$/;

// an image reference (the grammar of github.com/distribution/reference, without IPv6 hosts)
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]+)?`;
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*';
const IMAGE_REF_RE = new RegExp(
  `^(?:(${DOMAIN})/)?(${PATH_COMPONENT}(?:/${PATH_COMPONENT})*)(?::([\\w][\\w.-]{0,127}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$`,
);

export const MAX_STEPS = 500;
/** The longest command line (as the commands API: what exec takes as one argument). */
export const MAX_CMD_BYTES = 131071;
export const MAX_PATH_BYTES = 4096;
export const MAX_DOCKERFILE_BYTES = 1024 * 1024;
export const MAX_ENV_VALUE = 32768;
export const MAX_ENVS_PER_STEP = 256;
export const MAX_APT_PACKAGES = 500;
export const DEFAULT_READY_TIMEOUT_MS = 60_000;
export const MIN_READY_TIMEOUT_MS = 1_000;
export const MAX_READY_TIMEOUT_MS = 30 * 60_000;
/** The prefix of `from.archive`: a path inside the build context. */
export const ARCHIVE_PREFIX = 'ctx:';

/** A spec's field that breaks a rule: `field` names it (`steps[2].src`), `problem` says what is wrong. */
export class SpecProblem extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = 'SpecProblem';
  }
}

const json = (v: unknown) => JSON.stringify(v);

function bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/**
 * A path inside the build context, normalized (`./app/` -> `app`, `a/../b` -> `b`, `./` -> `.`), or
 * the reason it is none: empty, absolute, outside the context (`..`), a URL, a NUL byte, too long.
 */
export function contextPath(p: string): { path: string } | { problem: string } {
  if (p === '') return { problem: 'is empty' };
  if (p.includes('\0')) return { problem: 'has a NUL byte' };
  if (bytes(p) > MAX_PATH_BYTES) return { problem: `is longer than ${MAX_PATH_BYTES} bytes` };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p) || /^git@/.test(p)) return { problem: 'is a URL: only files of the build context can be copied' };
  if (p.startsWith('/')) return { problem: 'is absolute: sources are paths inside the build context' };
  const n = path.posix.normalize(p).replace(/\/+$/, '') || '.';
  if (n === '..' || n.startsWith('../')) return { problem: 'is outside the build context' };
  return { path: n };
}

/** A guest path (absolute, or relative to the workdir), normalized with a trailing `/` kept, or why it is none. */
export function guestPath(p: string, opts: { absolute?: boolean } = {}): { path: string } | { problem: string } {
  if (p === '') return { problem: 'is empty' };
  if (p.includes('\0')) return { problem: 'has a NUL byte' };
  if (bytes(p) > MAX_PATH_BYTES) return { problem: `is longer than ${MAX_PATH_BYTES} bytes` };
  if (opts.absolute && !p.startsWith('/')) return { problem: 'is not an absolute path' };
  let n = path.posix.normalize(p);
  if (p.endsWith('/') && !n.endsWith('/')) n += '/';
  if (n === './') n = '.';
  return { path: n };
}

/** Why `ref` is no image reference (`registry.example:5000/team/app:1`, `debian:12`, `alpine@sha256:...`), or undefined. */
export function imageRefProblem(ref: string): string | undefined {
  if (ref.length > 512) return 'is longer than 512 characters';
  const m = IMAGE_REF_RE.exec(ref);
  // a first component is a registry only with a `.` or a port, or as localhost (else it is part of the name: lowercase)
  const registry = m?.[1];
  const badRegistry = registry !== undefined && !/[.:]/.test(registry) && registry !== 'localhost' && !new RegExp(`^${PATH_COMPONENT}$`).test(registry);
  return m && !badRegistry ? undefined : 'is not an image reference ([registry[:port]/]name[:tag][@digest], names in lowercase)';
}

/** The command an `apt` step runs (as root). */
export function aptCommand(packages: string[]): string {
  return `apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages.join(' ')}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Refuses fields other than `allowed` (a misspelt field is an error, not ignored). */
function onlyKeys(o: Record<string, unknown>, allowed: string[], field: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new SpecProblem(field ? `${field}.${k}` : k, 'is not a field of this object');
  }
}

function str(v: unknown, field: string, opts: { max?: number; empty?: boolean } = {}): string {
  if (typeof v !== 'string') throw new SpecProblem(field, `must be a string, not ${json(v) ?? 'undefined'}`);
  if (!opts.empty && v === '') throw new SpecProblem(field, 'is empty');
  if (v.includes('\0')) throw new SpecProblem(field, 'has a NUL byte');
  const max = opts.max ?? MAX_PATH_BYTES;
  if (bytes(v) > max) throw new SpecProblem(field, `is longer than ${max} bytes`);
  return v;
}

function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new SpecProblem(field, `must be an integer from ${min} to ${max}, not ${json(v)}`);
  return v;
}

function pattern(v: unknown, re: RegExp, field: string, what: string): string {
  const s = str(v, field);
  if (!re.test(s)) throw new SpecProblem(field, `${json(s)} is not ${what}`);
  return s;
}

function orProblem(r: { path: string } | { problem: string }, value: string, field: string): string {
  if ('problem' in r) throw new SpecProblem(field, `${json(value)} ${r.problem}`);
  return r.path;
}

export function validateFrom(v: unknown, field = 'from'): BuildFrom {
  if (!isObject(v)) throw new SpecProblem(field, 'must be an object: {"template": ...}, {"image": ...} or {"archive": "ctx:..."}');
  const kinds = ['template', 'image', 'archive'].filter((k) => v[k] !== undefined);
  if (kinds.length !== 1) throw new SpecProblem(field, `must have exactly one of "template", "image", "archive" (has ${kinds.length ? kinds.join(', ') : 'none'})`);
  if (v.template !== undefined) {
    onlyKeys(v, ['template'], field);
    return { template: pattern(v.template, TEMPLATE_REF_RE, `${field}.template`, 'a template: "name" or "name:VERSION"') };
  }
  if (v.image !== undefined) {
    onlyKeys(v, ['image', 'auth'], field);
    const image = str(v.image, `${field}.image`, { max: 512 });
    const problem = imageRefProblem(image);
    if (problem) throw new SpecProblem(`${field}.image`, `${json(image)} ${problem}`);
    if (v.auth === undefined) return { image };
    if (!isObject(v.auth)) throw new SpecProblem(`${field}.auth`, 'must be an object {"username", "password"}');
    onlyKeys(v.auth, ['username', 'password'], `${field}.auth`);
    return { image, auth: { username: str(v.auth.username, `${field}.auth.username`, { max: 256 }), password: str(v.auth.password, `${field}.auth.password`, { max: 4096 }) } };
  }
  onlyKeys(v, ['archive'], field);
  const archive = str(v.archive, `${field}.archive`);
  if (!archive.startsWith(ARCHIVE_PREFIX)) throw new SpecProblem(`${field}.archive`, `${json(archive)} must be "ctx:" and a path inside the build context`);
  const inner = archive.slice(ARCHIVE_PREFIX.length);
  const p = orProblem(contextPath(inner), inner, `${field}.archive`);
  if (p === '.' || /[*?[]/.test(p)) throw new SpecProblem(`${field}.archive`, `${json(archive)} must name one file of the build context`);
  return { archive: ARCHIVE_PREFIX + p };
}

/** Checks one step (any front end) and normalizes it; throws SpecProblem naming `field`. */
export function validateStep(v: unknown, field: string): BuildStep {
  if (!isObject(v)) throw new SpecProblem(field, 'must be an object with a "type"');
  const f = (k: string) => `${field}.${k}`;
  switch (v.type) {
    case 'run':
      onlyKeys(v, ['type', 'cmd'], field);
      if (typeof v.cmd === 'string' && v.cmd.trim() === '') throw new SpecProblem(f('cmd'), 'is empty');
      return { type: 'run', cmd: str(v.cmd, f('cmd'), { max: MAX_CMD_BYTES }) };
    case 'copy': {
      onlyKeys(v, ['type', 'src', 'dest', 'chown', 'mode'], field);
      const src = orProblem(contextPath(str(v.src, f('src'))), v.src as string, f('src'));
      const dest = orProblem(guestPath(str(v.dest, f('dest'))), v.dest as string, f('dest'));
      const step: CopyStep = { type: 'copy', src, dest };
      if (v.chown !== undefined) step.chown = pattern(v.chown, CHOWN_RE, f('chown'), 'an owner: user, uid, user:group or uid:gid');
      if (v.mode !== undefined) step.mode = pattern(v.mode, MODE_RE, f('mode'), 'permission bits in octal ("0755")').padStart(4, '0');
      return step;
    }
    case 'env': {
      onlyKeys(v, ['type', 'envs'], field);
      if (!isObject(v.envs)) throw new SpecProblem(f('envs'), 'must be an object of names to string values');
      const names = Object.keys(v.envs);
      if (names.length === 0 || names.length > MAX_ENVS_PER_STEP) throw new SpecProblem(f('envs'), `must have 1 to ${MAX_ENVS_PER_STEP} variables`);
      const envs: Record<string, string> = {};
      for (const name of names) {
        if (!ENV_NAME_RE.test(name)) throw new SpecProblem(f('envs'), `${json(name)} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)`);
        envs[name] = str(v.envs[name], `${f('envs')}.${name}`, { max: MAX_ENV_VALUE, empty: true });
      }
      return { type: 'env', envs };
    }
    case 'workdir':
      onlyKeys(v, ['type', 'path'], field);
      return { type: 'workdir', path: orProblem(guestPath(str(v.path, f('path'))), v.path as string, f('path')).replace(/(.)\/$/, '$1') };
    case 'user':
      onlyKeys(v, ['type', 'name'], field);
      return { type: 'user', name: pattern(v.name, USER_NAME_RE, f('name'), 'a user name ([a-z_][a-z0-9_-]{0,31})') };
    case 'expose':
      onlyKeys(v, ['type', 'port'], field);
      return { type: 'expose', port: int(v.port, f('port'), 1, 65535) };
    case 'apt': {
      onlyKeys(v, ['type', 'packages'], field);
      if (!Array.isArray(v.packages) || v.packages.length === 0 || v.packages.length > MAX_APT_PACKAGES) {
        throw new SpecProblem(f('packages'), `must be a list of 1 to ${MAX_APT_PACKAGES} package names`);
      }
      return { type: 'apt', packages: v.packages.map((p, i) => pattern(p, APT_PACKAGE_RE, `${f('packages')}[${i}]`, 'a Debian package name')) };
    }
    default:
      throw new SpecProblem(f('type'), `${json(v.type) ?? 'missing'}: must be one of run, copy, env, workdir, user, expose, apt`);
  }
}

export function validateReady(v: unknown, field: string): ReadyCheck {
  if (!isObject(v)) throw new SpecProblem(field, 'must be {"port": N}, {"cmd": "..."} or {"file": "/path"}');
  const kinds = ['port', 'cmd', 'file'].filter((k) => v[k] !== undefined);
  if (kinds.length !== 1) throw new SpecProblem(field, `must have exactly one of "port", "cmd", "file" (has ${kinds.length ? kinds.join(', ') : 'none'})`);
  onlyKeys(v, kinds, field);
  if (v.port !== undefined) return { port: int(v.port, `${field}.port`, 1, 65535) };
  if (v.cmd !== undefined) return { cmd: str(v.cmd, `${field}.cmd`, { max: MAX_CMD_BYTES }) };
  return { file: orProblem(guestPath(str(v.file, `${field}.file`), { absolute: true }), v.file as string, `${field}.file`) };
}

export function validateStart(v: unknown, field = 'start'): ResolvedStart {
  if (!isObject(v)) throw new SpecProblem(field, 'must be an object {"cmd", "ready"?, "timeoutMs"?}');
  onlyKeys(v, ['cmd', 'ready', 'timeoutMs'], field);
  if (typeof v.cmd === 'string' && v.cmd.trim() === '') throw new SpecProblem(`${field}.cmd`, 'is empty');
  return {
    cmd: str(v.cmd, `${field}.cmd`, { max: MAX_CMD_BYTES }),
    ready: v.ready === undefined || v.ready === null ? null : validateReady(v.ready, `${field}.ready`),
    timeoutMs: v.timeoutMs === undefined ? DEFAULT_READY_TIMEOUT_MS : int(v.timeoutMs, `${field}.timeoutMs`, MIN_READY_TIMEOUT_MS, MAX_READY_TIMEOUT_MS),
  };
}

/** Runs `fn`, turning a SpecProblem into the API's `invalid_build_spec` (details.field: `spec.<field>`). */
export function asBuildSpecError<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof SpecProblem)) throw err;
    const field = `spec.${err.field}`;
    throw new NsError('invalid_build_spec', `invalid build spec: ${field}: ${err.problem}`, { details: { field } });
  }
}

/**
 * Checks a spec from a client (any JSON value) and returns it normalized: paths normalized, `steps`
 * always a list, `start` with its defaults. Throws NsError `invalid_build_spec` naming the field.
 * It does not parse `dockerfile` (resolveBuildSpec in dockerfile.ts does, with the build args).
 */
export function validateSpec(spec: unknown): ValidBuildSpec {
  return asBuildSpecError(() => {
    if (!isObject(spec)) throw new SpecProblem('', 'must be an object');
    onlyKeys(spec, ['from', 'dockerfile', 'steps', 'start'], '');
    const out: ValidBuildSpec = { steps: [], start: null };
    if (spec.dockerfile !== undefined) {
      out.dockerfile = str(spec.dockerfile, 'dockerfile', { max: MAX_DOCKERFILE_BYTES });
      if (spec.from !== undefined) throw new SpecProblem('from', 'a spec with a dockerfile starts at its FROM: give one or the other');
    } else if (spec.from === undefined) {
      throw new SpecProblem('from', 'is missing: a spec needs "from" or a "dockerfile"');
    } else {
      out.from = validateFrom(spec.from);
    }
    if (spec.steps !== undefined) {
      if (!Array.isArray(spec.steps)) throw new SpecProblem('steps', 'must be a list');
      if (spec.steps.length > MAX_STEPS) throw new SpecProblem('steps', `has ${spec.steps.length} steps: at most ${MAX_STEPS}`);
      out.steps = spec.steps.map((s, i) => validateStep(s, `steps[${i}]`));
    }
    if (spec.start !== undefined && spec.start !== null) out.start = validateStart(spec.start);
    return out;
  });
}

/**
 * What a template gives its sandboxes after `steps`, from what its start (`base`) gives: the
 * environment (later values win), the user and workdir of the last `user`/`workdir` step (a relative
 * workdir resolved against the one before it, `/` when there is none), and the exposed ports.
 */
export function templateDefaults(steps: BuildStep[], base: TemplateDefaults = { envs: {}, user: null, workdir: null, exposedPorts: [] }): TemplateDefaults {
  const out: TemplateDefaults = { envs: { ...base.envs }, user: base.user, workdir: base.workdir, exposedPorts: [...base.exposedPorts] };
  for (const s of steps) {
    if (s.type === 'env') Object.assign(out.envs, s.envs);
    else if (s.type === 'user') out.user = s.name;
    else if (s.type === 'workdir') out.workdir = path.posix.resolve(out.workdir ?? '/', s.path);
    else if (s.type === 'expose' && !out.exposedPorts.includes(s.port)) out.exposedPorts.push(s.port);
  }
  return out;
}
