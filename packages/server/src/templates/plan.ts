import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { NsError } from '@nullspace/runtime';

/**
 * A template build as the engine runs it: the normalized build spec (docs/api.md "Templates";
 * produced by the Dockerfile parser or an SDK recipe) turned into steps that each know the state
 * they run in (user, working directory, environment) and their cache key.
 */

export type BuildStep =
  | { type: 'run'; cmd: string }
  | { type: 'copy'; src: string; dest: string; chown?: string | undefined; mode?: string | undefined }
  | { type: 'env'; envs: Record<string, string> }
  | { type: 'workdir'; path: string }
  | { type: 'user'; name: string }
  | { type: 'expose'; port: number }
  | { type: 'apt'; packages: string[] };

export type ReadyCheck = { port: number } | { cmd: string } | { file: string };

export interface BuildStart {
  cmd: string;
  ready?: ReadyCheck | undefined;
  timeoutMs?: number | undefined;
}

export type BuildFrom =
  | { template: string }
  | { image: string; auth?: { username: string; password: string } | undefined; insecure?: boolean | undefined }
  | { archive: string };

export interface NormalizedSpec {
  from: BuildFrom;
  steps: BuildStep[];
  start?: BuildStart | undefined;
}

/** What the steps run as, and what the template's sandboxes get by default. */
export interface BuildState {
  user: string;
  workdir: string;
  envs: Record<string, string>;
  exposed: number[];
}

export interface PlannedStep {
  /** 1-based, as logs show it. */
  n: number;
  step: BuildStep;
  /** The state it runs in (before its own effect). */
  state: BuildState;
  /** Whether it changes the disk (then its result is a cached layer); the others only change the state. */
  disk: boolean;
  /** Identity of everything up to and including this step: where a rebuild may resume. */
  key: string;
  /** How it shows in logs ("RUN npm ci"). */
  instruction: string;
}

export const INITIAL_STATE: BuildState = { user: '', workdir: '', envs: {}, exposed: [] };

/** The state after `step`. */
export function applyStep(state: BuildState, step: BuildStep): BuildState {
  switch (step.type) {
    case 'env':
      return { ...state, envs: { ...state.envs, ...step.envs } };
    case 'workdir':
      return { ...state, workdir: path.posix.resolve(state.workdir || '/', step.path) };
    case 'user':
      return { ...state, user: step.name };
    case 'expose':
      return state.exposed.includes(step.port) ? state : { ...state, exposed: [...state.exposed, step.port] };
    default:
      return state;
  }
}

export function describeStep(step: BuildStep): string {
  switch (step.type) {
    case 'run':
      return `RUN ${step.cmd}`;
    case 'copy':
      return `COPY ${step.chown ? `--chown=${step.chown} ` : ''}${step.mode ? `--chmod=${step.mode} ` : ''}${step.src} ${step.dest}`;
    case 'env':
      return `ENV ${Object.entries(step.envs).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}`;
    case 'workdir':
      return `WORKDIR ${step.path}`;
    case 'user':
      return `USER ${step.name}`;
    case 'expose':
      return `EXPOSE ${step.port}`;
    case 'apt':
      return `APT ${step.packages.join(' ')}`;
  }
}

const hash = (...parts: unknown[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(typeof p === 'string' ? p : JSON.stringify(p)).update('\0');
  return h.digest('hex');
};

/**
 * A digest of what a COPY takes from the context: relative paths, types, modes, link targets and
 * contents (a changed file changes the step's key; its mtime does not).
 */
export function contextDigest(contextDir: string, src: string): string {
  const root = contextPath(contextDir, src);
  const h = createHash('sha256');
  const walk = (abs: string, rel: string) => {
    const st = fs.lstatSync(abs);
    if (st.isSymbolicLink()) h.update(`L ${rel} ${fs.readlinkSync(abs)}\0`);
    else if (st.isDirectory()) {
      h.update(`D ${rel} ${st.mode & 0o7777}\0`);
      for (const e of fs.readdirSync(abs).sort()) walk(path.join(abs, e), `${rel}/${e}`);
    } else if (st.isFile()) {
      h.update(`F ${rel} ${st.mode & 0o7777} ${st.size}\0`);
      h.update(fs.readFileSync(abs));
    }
  };
  walk(root, '.');
  return h.digest('hex');
}

/** A path of the build context on the host (never outside it: a COPY source is refused before anything runs). */
export function contextPath(contextDir: string, src: string): string {
  const normal = path.posix.normalize(src.replace(/\/+$/, '') || '.');
  if (path.posix.isAbsolute(normal) || normal === '..' || normal.startsWith('../')) {
    throw new NsError('invalid_build_spec', `COPY source ${JSON.stringify(src)} is outside the build context`, { details: { src } });
  }
  const abs = path.join(contextDir, normal);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(abs);
  } catch {
    throw new NsError('invalid_build_spec', `COPY source ${JSON.stringify(src)} is not in the build context`, { details: { src } });
  }
  if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) {
    throw new NsError('invalid_build_spec', `COPY source ${JSON.stringify(src)} is not a file or a directory`, { details: { src } });
  }
  return abs;
}

/**
 * The steps of `spec` with their state and keys. `baseKey` names where the build starts (the FROM
 * template's build or the imported image, and the VM's resources); `salt` is mixed into every key
 * when the caller wants nothing reused (`noCache`).
 */
export function planSteps(spec: NormalizedSpec, baseKey: string, contextDir: string | undefined, salt = '', initial: BuildState = INITIAL_STATE): PlannedStep[] {
  let state = initial;
  let key = hash('build-step-v1', baseKey, salt);
  return spec.steps.map((step, i) => {
    let content = '';
    if (step.type === 'copy') {
      if (!contextDir) throw new NsError('invalid_build_spec', `step ${i + 1} copies ${step.src}, but no build context was uploaded`, { details: { step: i + 1 } });
      content = contextDigest(contextDir, step.src);
    }
    key = hash(key, step, state, content);
    const planned: PlannedStep = { n: i + 1, step, state, disk: !['env', 'user', 'expose'].includes(step.type), key, instruction: describeStep(step) };
    state = applyStep(state, step);
    return planned;
  });
}

/** The state after every step (the template's defaults), from the base's (`initial`). */
export function finalState(spec: NormalizedSpec, initial: BuildState = INITIAL_STATE): BuildState {
  return spec.steps.reduce(applyStep, initial);
}

/** The key of a whole build: its last step, the start command and what the snapshot depends on. */
export function buildKey(steps: PlannedStep[], baseKey: string, spec: NormalizedSpec, final: BuildState, salt = ''): string {
  return hash('build-v1', baseKey, steps.at(-1)?.key ?? '', spec.start ?? null, final, salt).slice(0, 16);
}
