import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { NsError } from '@nullspace/runtime';

/**
 * A template build as the engine runs it: the normalized build spec (docs/api.md "Templates";
 * produced by the Dockerfile parser or an SDK recipe) turned into steps that each know the state
 * they run in (user, working directory, environment) and their cache key.
 */

export type { BuildFrom, BuildStep, ReadyCheck, ResolvedStart } from './spec.js';
import type { BuildFrom, BuildStep, ResolvedStart } from './spec.js';

/** What the engine builds: the spec resolved (a Dockerfile parsed, defaults applied). */
export interface NormalizedSpec {
  from: BuildFrom;
  steps: BuildStep[];
  start: ResolvedStart | null;
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
  for (const m of contextMatches(contextDir, src, 0)) walk(m, path.relative(contextDir, m) || '.');
  return h.digest('hex');
}

/** A path of the build context on the host (never outside it: a COPY source is refused before anything runs). */
export function contextFile(contextDir: string, src: string, step: number): string {
  const normal = path.posix.normalize(src.replace(/\/+$/, '') || '.');
  const field = step ? `spec.steps[${step - 1}].src` : 'spec.from.archive';
  if (path.posix.isAbsolute(normal) || normal === '..' || normal.startsWith('../')) {
    throw new NsError('invalid_build_spec', `${step ? `step ${step}: ` : ''}${JSON.stringify(src)} is outside the build context`, { details: { field } });
  }
  const abs = path.join(contextDir, normal);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(abs);
  } catch {
    throw new NsError('invalid_build_spec', `${step ? `step ${step}: ` : ''}${JSON.stringify(src)} is not in the build context`, { details: { field } });
  }
  if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) {
    throw new NsError('invalid_build_spec', `${step ? `step ${step}: ` : ''}${JSON.stringify(src)} is not a file or a directory`, { details: { field } });
  }
  return abs;
}

/**
 * What a COPY source names in the context: itself, or with glob characters (`*`, `?`, `[...]`, per
 * path segment) every path that matches, sorted. The context's `.nullspace/` (files an SDK recipe
 * added) is never matched by a glob or `.`.
 */
export function contextMatches(contextDir: string, src: string, step: number): string[] {
  if (!/[*?[]/.test(src)) return [contextFile(contextDir, src, step)];
  const segs = path.posix.normalize(src).split('/').filter((x) => x && x !== '.');
  if (segs.some((x) => x === '..')) contextFile(contextDir, src, step);
  let found = [contextDir];
  for (const seg of segs) {
    const re = globRe(seg);
    found = found.flatMap((dir) => {
      try {
        if (!fs.lstatSync(dir).isDirectory()) return [];
        return fs.readdirSync(dir).filter((e) => re.test(e) && !(dir === contextDir && e === '.nullspace')).sort().map((e) => path.join(dir, e));
      } catch {
        return [];
      }
    });
  }
  if (!found.length) throw new NsError('invalid_build_spec', `${step ? `step ${step}: ` : ''}${JSON.stringify(src)} matches nothing in the build context`, { details: { field: `spec.steps[${step - 1}].src` } });
  return found;
}

function globRe(seg: string): RegExp {
  let re = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const j = seg.indexOf(']', i + 1);
      if (j < 0) re += '\\[';
      else {
        re += `[${seg.slice(i + 1, j).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
        i = j;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
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
