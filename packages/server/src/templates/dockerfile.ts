import path from 'node:path';
import { NsError } from '@nullspace/runtime';
import {
  ARCHIVE_PREFIX,
  CHOWN_RE,
  ENV_NAME_RE,
  MAX_DOCKERFILE_BYTES,
  MAX_STEPS,
  MODE_RE,
  SpecProblem,
  TEMPLATE_REF_RE,
  USER_NAME_RE,
  contextPath,
  guestPath,
  imageRefProblem,
  validateFrom,
  validateSpec,
  validateStart,
  validateStep,
  type BuildFrom,
  type BuildStep,
  type ResolvedBuildSpec,
  type ResolvedStart,
} from './spec.js';

/**
 * The Dockerfile subset nullspace builds (docs/api.md, "Dockerfiles"): one stage; FROM a template or
 * an image; RUN, COPY, ADD (context files only), ENV, ARG, WORKDIR, USER, EXPOSE, CMD, ENTRYPOINT;
 * LABEL and MAINTAINER are accepted and ignored; everything else is refused. Parsed as Docker does
 * (BuildKit's parser and its shell-word lexer): parser directives, comments, line continuations, the
 * JSON (exec) and shell forms, quotes, `$VAR` / `${VAR}` / `${VAR:-default}` substitution where
 * Docker substitutes. Every problem is an NsError `invalid_dockerfile` whose message starts with
 * `line N:` and whose details are `{ line, instruction }`, raised before anything is built.
 */

export interface DockerfileOptions {
  /** `--build-arg` values: they replace the defaults of the ARGs the Dockerfile declares. */
  buildArgs?: Record<string, string>;
  /**
   * Whether a template of this name is built (FROM `name` or `name:VERSION` is then that template,
   * else the image of that name). Default: only `base`.
   */
  isTemplate?: (name: string) => boolean;
  /**
   * The environment that FROM brings, for substitutions of variables the Dockerfile does not set
   * (`ENV PATH=/opt/bin:$PATH`). Default: the standard PATH only.
   */
  baseEnv?: Record<string, string>;
}

export interface ParsedDockerfile {
  from: BuildFrom;
  steps: BuildStep[];
  /** From CMD / ENTRYPOINT: the start command (no ready check: a Dockerfile has none). */
  start: ResolvedStart | null;
  /** The value of every ARG declared after FROM (undefined: declared without value). */
  args: Record<string, string | undefined>;
  warnings: string[];
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const DIRECTIVES = ['syntax', 'escape', 'check'];

const SUPPORTED = new Set(['FROM', 'ARG', 'RUN', 'COPY', 'ADD', 'ENV', 'WORKDIR', 'USER', 'EXPOSE', 'CMD', 'ENTRYPOINT', 'LABEL', 'MAINTAINER']);

/** Instructions Docker knows that nullspace refuses, with the reason. */
const REFUSED: Record<string, string> = {
  HEALTHCHECK: 'HEALTHCHECK is not supported: the start command\'s ready check (SDK: wait_for_port / wait_for_command / wait_for_file) takes its place',
  ONBUILD: 'ONBUILD is not supported',
  VOLUME: 'VOLUME is not supported: mount shared volumes when creating sandboxes',
  STOPSIGNAL: 'STOPSIGNAL is not supported',
  SHELL: 'SHELL is not supported: RUN uses /bin/bash -c (/bin/sh -c when there is no bash)',
};

/** A shell word that needs no quotes. */
const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

const inSingleQuotes = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** One argument as a shell word: as it is when it is safe, else in single quotes. */
export function shellQuote(s: string): string {
  if (s === '') return "''";
  return SAFE_WORD.test(s) ? s : inSingleQuotes(s);
}

/** An exec-form argument list as one shell command that runs exactly it (a first word with `=` is quoted: it would be an assignment). */
export function shellJoin(args: string[]): string {
  return args.map((a, i) => (i === 0 && a.includes('=') ? inSingleQuotes(a) : shellQuote(a))).join(' ');
}

class DockerfileError extends NsError {
  constructor(line: number, instruction: string | null, message: string) {
    super('invalid_dockerfile', `line ${line}: ${message}`, { details: { line, instruction } });
  }
}

interface Instruction {
  line: number;
  keyword: string;
  rest: string;
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
}

/** The instructions of a Dockerfile (directives read, comments and empty lines dropped, continuations joined). */
function instructions(text: string): { escape: string; list: Instruction[] } {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  let escape = '\\';
  let i = 0;
  const seen = new Set<string>();
  for (; i < lines.length; i++) {
    const m = /^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$/.exec(lines[i]!);
    const key = m?.[1]!.toLowerCase();
    if (!m || !key || !DIRECTIVES.includes(key)) break;
    if (seen.has(key)) throw new DockerfileError(i + 1, null, `the parser directive "${key}" is given twice`);
    seen.add(key);
    if (key === 'escape') {
      if (m[2] !== '\\' && m[2] !== '`') throw new DockerfileError(i + 1, null, `the escape directive takes \\ or \`, not "${m[2]}"`);
      escape = m[2];
    }
  }
  const continuation = new RegExp(`${escapeRegExp(escape)}[ \\t]*$`);
  const list: Instruction[] = [];
  let cur: { line: number; text: string } | null = null;
  const emit = (c: { line: number; text: string }) => {
    const m = /^(\S+)\s*([\s\S]*)$/.exec(c.text.trim());
    if (m) list.push({ line: c.line, keyword: m[1]!.toUpperCase(), rest: m[2]!.trim() });
  };
  for (; i < lines.length; i++) {
    const raw = lines[i]!;
    const blank = /^\s*$/.test(raw);
    const comment = /^\s*#/.test(raw);
    if (cur === null) {
      if (blank || comment) continue;
      cur = { line: i + 1, text: '' };
    } else if (blank || comment) {
      continue; // comments and empty lines inside a continuation are dropped, as Docker does
    }
    if (continuation.test(raw)) {
      cur.text += raw.replace(continuation, '');
      continue;
    }
    cur.text += raw;
    emit(cur);
    cur = null;
  }
  if (cur) emit(cur);
  return { escape, list };
}

/** Words split on whitespace outside quotes, quotes and escapes kept (Docker's parseWords). */
function splitRaw(text: string, escape: string): string[] {
  const words: string[] = [];
  let word = '';
  let quote: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quote === null && /\s/.test(ch)) {
      if (word) words.push(word);
      word = '';
      continue;
    }
    if (ch === escape && i + 1 < text.length && quote !== "'") {
      word += ch + text[++i];
      continue;
    }
    if (quote === null && (ch === '"' || ch === "'")) quote = ch;
    else if (ch === quote) quote = null;
    word += ch;
  }
  if (word) words.push(word);
  return words;
}

type Env = Record<string, string>;

/**
 * Docker's shell-word lexer: quotes removed, escapes applied, variables substituted from `env`
 * (unset ones are empty). `split`: words split on whitespace outside quotes, a substituted value
 * split too unless quoted (ProcessWords); else one word, whitespace kept (ProcessWord).
 */
function lex(text: string, env: Env, escape: string, split: boolean): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  const add = (s: string, raw: boolean) => {
    for (const ch of s) {
      if (split && !raw && /\s/.test(ch)) {
        if (inWord) words.push(word);
        word = '';
        inWord = false;
      } else {
        word += ch;
        inWord = true;
      }
    }
  };
  let i = 0;
  const lookup = (name: string): string | undefined => (Object.hasOwn(env, name) ? env[name] : undefined);
  /** `$...` at i (i on the `$`); returns the value. */
  const dollar = (): string => {
    const next = text[i + 1];
    if (next === '{') {
      i += 2;
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i));
      if (!m) throw new Error(`bad substitution "\${${text.slice(i, i + 10)}"`);
      const name = m[0];
      i += name.length;
      if (text[i] === '}') {
        i++;
        return lookup(name) ?? '';
      }
      const op = /^(:?[-+?])/.exec(text.slice(i));
      if (!op) throw new Error(`unsupported substitution "\${${name}${text.slice(i, i + 3)}...}": only \${VAR}, \${VAR:-default}, \${VAR:+alt} and \${VAR:?message} are supported`);
      i += op[1]!.length;
      const word = inner('}');
      const value = lookup(name);
      const colon = op[1]!.startsWith(':');
      const set = colon ? value !== undefined && value !== '' : value !== undefined;
      switch (op[1]!.slice(-1)) {
        case '-':
          return set ? value! : word;
        case '+':
          return set ? word : '';
        default:
          if (!set) throw new Error(`${name}: ${word || 'is not set'}`);
          return value!;
      }
    }
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i + 1));
    if (!m) {
      i++;
      return '$';
    }
    i += 1 + m[0].length;
    return lookup(m[0]) ?? '';
  };
  /** The word of `${VAR:-word}` up to `stop`, substituted, quotes removed. */
  const inner = (stop: string): string => {
    let out = '';
    while (i < text.length && text[i] !== stop) {
      const ch = text[i]!;
      if (ch === escape && i + 1 < text.length) {
        out += text[i + 1];
        i += 2;
      } else if (ch === '$') out += dollar();
      else if (ch === "'") out += singleQuoted();
      else if (ch === '"') out += doubleQuoted();
      else {
        out += ch;
        i++;
      }
    }
    if (text[i] !== stop) throw new Error(`missing "${stop}" in a substitution`);
    i++;
    return out;
  };
  const singleQuoted = (): string => {
    const end = text.indexOf("'", i + 1);
    if (end < 0) throw new Error('a single quote is not closed');
    const s = text.slice(i + 1, end);
    i = end + 1;
    return s;
  };
  const doubleQuoted = (): string => {
    let out = '';
    i++;
    while (i < text.length && text[i] !== '"') {
      const ch = text[i]!;
      if (ch === escape && i + 1 < text.length) {
        const n = text[i + 1]!;
        out += n === '"' || n === '$' || n === escape ? n : ch + n;
        i += 2;
      } else if (ch === '$') out += dollar();
      else {
        out += ch;
        i++;
      }
    }
    if (text[i] !== '"') throw new Error('a double quote is not closed');
    i++;
    return out;
  };
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === escape) {
      if (i + 1 < text.length) add(text[i + 1]!, true);
      else add(ch, true);
      i += 2;
    } else if (ch === "'") {
      inWord = true;
      add(singleQuoted(), true);
    } else if (ch === '"') {
      inWord = true;
      add(doubleQuoted(), true);
    } else if (ch === '$') {
      add(dollar(), false);
    } else {
      add(ch, false);
      i++;
    }
  }
  if (inWord || (!split && words.length === 0)) words.push(word);
  return words;
}

/** A JSON array of strings (the exec form), or undefined when `rest` is not JSON (the shell form). */
function jsonForm(rest: string, fail: (msg: string) => never): string[] | undefined {
  if (!rest.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(rest);
  } catch {
    return undefined; // `RUN [ -f x ] && ...` is the shell form, as in Docker
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) fail('the exec form must be a JSON array of strings');
  return v as string[];
}

/** Leading `--name=value` / `--name` flags. */
function flags(words: string[]): { flags: Map<string, string | true>; rest: string[] } {
  const out = new Map<string, string | true>();
  let i = 0;
  for (; i < words.length && words[i]!.startsWith('--'); i++) {
    const w = words[i]!;
    const eq = w.indexOf('=');
    out.set(eq < 0 ? w.slice(2) : w.slice(2, eq), eq < 0 ? true : w.slice(eq + 1));
  }
  return { flags: out, rest: words.slice(i) };
}

/** The leading flags of a shell-form text (`RUN --mount=... cmd`), and the text after them. */
function leadingFlags(rest: string): { names: string[]; text: string } {
  const names: string[] = [];
  let text = rest;
  for (;;) {
    const m = /^--([A-Za-z-]+)(=\S*)?(\s+|$)/.exec(text);
    if (!m) return { names, text };
    names.push(m[1]!);
    text = text.slice(m[0].length);
  }
}

const HEREDOC = /(?:^|\s)\d*<<-?(["']?)[A-Za-z_][A-Za-z0-9_]*\1(?=\s|$)/;

/** File names ADD would unpack (Docker extracts local tar archives, compressed or not). */
const ARCHIVE_NAME = /\.(tar|tar\.[a-z0-9]+|tgz|tbz2?|txz|tzst|tlz)$/i;

/**
 * Parses a Dockerfile into where it starts, its steps and its start command. Throws NsError
 * `invalid_dockerfile` (`line N: ...`, details `{ line, instruction }`) for anything outside the
 * subset, a COPY source outside the context, a heredoc, a second stage.
 */
export function parseDockerfile(text: string, opts: DockerfileOptions = {}): ParsedDockerfile {
  if (Buffer.byteLength(text, 'utf8') > MAX_DOCKERFILE_BYTES) throw new DockerfileError(1, null, `the Dockerfile is larger than ${MAX_DOCKERFILE_BYTES} bytes`);
  const buildArgs = opts.buildArgs ?? {};
  for (const k of Object.keys(buildArgs)) {
    if (!ENV_NAME_RE.test(k)) throw new NsError('invalid_build_spec', `build arg "${k}" is not a variable name`, { details: { field: 'buildArgs', key: k } });
  }
  const isTemplate = opts.isTemplate ?? ((name: string) => name === 'base');
  const baseEnv: Env = opts.baseEnv ?? { PATH: DEFAULT_PATH };
  const { escape, list } = instructions(text);

  let from: BuildFrom | undefined;
  const globalArgs = new Map<string, string | undefined>();
  const args = new Map<string, string | undefined>();
  const env: Env = {};
  let workdir: string | null = null;
  let cmd: { line: number; exec?: string[]; shell?: string } | undefined;
  let entrypoint: { line: number; exec?: string[]; shell?: string } | undefined;
  const steps: BuildStep[] = [];
  const used = new Set<string>();
  const warnings: string[] = [];

  for (const ins of list) {
    const { line, keyword: kw, rest } = ins;
    const fail = (msg: string): never => {
      throw new DockerfileError(line, kw, msg);
    };
    /** The variables substitutions see here: FROM sees the ARGs before it only. */
    const vars = (): Env => {
      if (!from) return Object.fromEntries([...globalArgs].filter((e): e is [string, string] => e[1] !== undefined));
      const out: Env = { ...baseEnv };
      for (const [k, v] of args) if (v !== undefined) out[k] = v;
      return Object.assign(out, env);
    };
    const word = (s: string, split = false): string[] => {
      try {
        return lex(s, vars(), escape, split);
      } catch (err) {
        return fail(`${kw}: ${(err as Error).message}`);
      }
    };
    const one = (s: string) => word(s)[0]!;
    const step = (s: unknown) => {
      if (steps.length >= MAX_STEPS) fail(`more than ${MAX_STEPS} steps`);
      try {
        steps.push(validateStep(s, kw));
      } catch (err) {
        if (err instanceof SpecProblem) fail(`${kw} ${err.problem}`);
        throw err;
      }
    };
    const noFlags = (words: string[]) => {
      const f = flags(words);
      if (f.flags.size) fail(`${kw} takes no flag --${[...f.flags.keys()][0]}`);
      return f.rest;
    };

    if (!SUPPORTED.has(kw)) fail(REFUSED[kw] ?? `unknown instruction ${kw}`);
    if (!from && kw !== 'ARG' && kw !== 'FROM') fail(`${kw} before FROM: only ARG may come before FROM`);
    if (rest === '') fail(`${kw} needs arguments`);

    switch (kw) {
      case 'FROM': {
        if (from) fail('a second FROM: multi-stage builds are not supported (one FROM per Dockerfile)');
        const f = flags(splitRaw(rest, escape));
        for (const [name, value] of f.flags) {
          if (name !== 'platform') fail(`FROM takes no flag --${name}`);
          if (one(String(value)) !== 'linux/amd64') fail(`FROM --platform=${String(value)}: only linux/amd64 is built`);
        }
        if (f.rest.length === 3 && f.rest[1]!.toUpperCase() === 'AS') fail('FROM ... AS: multi-stage builds are not supported');
        if (f.rest.length !== 1) fail('FROM takes one template or image');
        const ref = one(f.rest[0]!);
        if (ref === '') fail('FROM names nothing (an ARG without value?)');
        if (ref === 'scratch') fail('FROM scratch is not supported: start from a template or an image with an operating system');
        const t = TEMPLATE_REF_RE.exec(ref);
        if (ref.startsWith(ARCHIVE_PREFIX)) {
          try {
            from = validateFrom({ archive: ref });
          } catch (err) {
            if (err instanceof SpecProblem) fail(`FROM ${err.problem}`);
            throw err;
          }
        } else if (t && isTemplate(t[1]!)) {
          from = { template: ref };
        } else {
          const problem = imageRefProblem(ref);
          if (problem) fail(`FROM "${ref}" ${problem}`);
          from = { image: ref };
        }
        break;
      }
      case 'ARG': {
        for (const raw of splitRaw(rest, escape)) {
          const eq = raw.indexOf('=');
          const name = eq < 0 ? raw : raw.slice(0, eq);
          if (!ENV_NAME_RE.test(name)) fail(`ARG "${name}" is not a variable name`);
          let value: string | undefined = eq < 0 ? undefined : one(raw.slice(eq + 1));
          if (Object.hasOwn(buildArgs, name)) {
            value = buildArgs[name];
            used.add(name);
          } else if (value === undefined && from) {
            value = globalArgs.get(name); // a global ARG declared again inside the stage keeps its value
          }
          (from ? args : globalArgs).set(name, value);
        }
        break;
      }
      case 'RUN': {
        if (HEREDOC.test(rest)) fail('heredocs (<<EOF) are not supported: write the lines with && or COPY a script');
        const lf = leadingFlags(rest);
        if (lf.names.length) fail(`RUN --${lf.names[0]} is not supported`);
        const exec = jsonForm(lf.text, fail);
        let command = exec ? shellJoin(exec) : lf.text;
        if (exec?.length === 0) fail('RUN needs a command');
        // Docker hands the ARGs in scope to RUN as environment variables (an ENV of the same name wins)
        const exported = [...args].filter(([k, v]) => v !== undefined && !Object.hasOwn(env, k));
        if (exported.length) command = `export ${exported.map(([k, v]) => `${k}=${shellQuote(v!)}`).join(' ')}; ${command}`;
        step({ type: 'run', cmd: command });
        break;
      }
      case 'COPY':
      case 'ADD': {
        if (HEREDOC.test(rest)) fail(`heredocs (<<EOF) are not supported: put the file in the build context`);
        const lf = leadingFlags(rest);
        const f = flags(splitRaw(rest.slice(0, rest.length - lf.text.length), escape));
        let chown: string | undefined;
        let mode: string | undefined;
        for (const [name, value] of f.flags) {
          if (name === 'from') fail(`${kw} --from: multi-stage builds are not supported`);
          if (name !== 'chown' && name !== 'chmod') fail(`${kw} --${name} is not supported (only --chown and --chmod)`);
          if (value === true || value === '') fail(`${kw} --${name} needs a value`);
          const v = one(value as string);
          if (name === 'chown') {
            if (!CHOWN_RE.test(v)) fail(`${kw} --chown=${v}: not an owner (user, uid, user:group or uid:gid)`);
            chown = v;
          } else {
            if (!MODE_RE.test(v)) fail(`${kw} --chmod=${v}: only octal modes are supported (0755)`);
            mode = v;
          }
        }
        const exec = jsonForm(lf.text, fail);
        const words = exec ? exec.map((w) => one(w)) : splitRaw(lf.text, escape).map((w) => one(w));
        if (words.length < 2) fail(`${kw} needs a source and a destination`);
        const destRaw = words[words.length - 1]!;
        const sources = words.slice(0, -1);
        if (sources.length > 1 && !destRaw.endsWith('/')) fail(`${kw} with several sources needs a destination directory ending with /`);
        const d = guestPath(destRaw);
        if ('problem' in d) fail(`${kw} destination "${destRaw}" ${d.problem}`);
        let dest = (d as { path: string }).path;
        if (!dest.startsWith('/') && workdir) {
          // relative to the WORKDIR before it; `.` and `x/` are directories
          const joined = path.posix.join(workdir, dest);
          dest = dest === '.' || dest.endsWith('/') ? joined.replace(/\/?$/, '/') : joined;
        }
        for (const src of sources) {
          if (kw === 'ADD' && /^[a-z][a-z0-9+.-]*:\/\/|^git@/i.test(src)) fail(`ADD of a URL is not supported: RUN curl (or wget) it`);
          if (kw === 'ADD' && ARCHIVE_NAME.test(src)) fail(`ADD of an archive (${src}) would unpack it, which is not supported: COPY it and RUN tar, or COPY it to keep it packed`);
          const c = contextPath(src);
          if ('problem' in c) fail(`${kw} source "${src}" ${c.problem}`);
          step({ type: 'copy', src: (c as { path: string }).path, dest, ...(chown ? { chown } : {}), ...(mode ? { mode } : {}) });
        }
        break;
      }
      case 'ENV': {
        const raws = splitRaw(rest, escape);
        const values: Env = {};
        if (!raws[0]!.includes('=')) {
          // the old form: ENV NAME the rest of the line
          const name = raws[0]!;
          const value = rest.slice(name.length).trim();
          if (value === '') fail(`ENV ${name} needs a value (ENV NAME=VALUE)`);
          values[name] = one(value);
        } else {
          for (const raw of raws) {
            const eq = raw.indexOf('=');
            if (eq <= 0) fail(`ENV "${raw}" is not NAME=VALUE`);
            values[raw.slice(0, eq)] = one(raw.slice(eq + 1));
          }
        }
        for (const k of Object.keys(values)) if (!ENV_NAME_RE.test(k)) fail(`ENV "${k}" is not a variable name`);
        Object.assign(env, values); // after substituting all of them: ENV A=1 B=$A sees the A before
        step({ type: 'env', envs: values });
        break;
      }
      case 'WORKDIR': {
        const p = one(rest);
        const g = guestPath(p);
        if ('problem' in g) fail(`WORKDIR "${p}" ${g.problem}`);
        let dir = (g as { path: string }).path;
        if (!dir.startsWith('/') && workdir) dir = path.posix.join(workdir, dir);
        dir = dir.length > 1 ? dir.replace(/\/$/, '') : dir;
        if (dir.startsWith('/')) workdir = dir;
        step({ type: 'workdir', path: dir });
        break;
      }
      case 'USER': {
        const u = one(rest);
        if (u.includes(':')) fail(`USER ${u}: a group is not supported (USER name)`);
        if (/^[0-9]+$/.test(u)) fail(`USER ${u}: a uid is not supported: name the user`);
        if (!USER_NAME_RE.test(u)) fail(`USER "${u}" is not a user name ([a-z_][a-z0-9_-]{0,31})`);
        step({ type: 'user', name: u });
        break;
      }
      case 'EXPOSE': {
        for (const w of noFlags(splitRaw(rest, escape))) {
          for (const item of word(w, true)) {
            const m = /^([0-9]{1,5})(?:\/(tcp|udp))?$/i.exec(item);
            if (!m) fail(`EXPOSE "${item}" is not a port (a range is not supported)`);
            if (m![2]?.toLowerCase() === 'udp') fail(`EXPOSE ${item}: only TCP ports are recorded`);
            step({ type: 'expose', port: Number(m![1]) });
          }
        }
        break;
      }
      case 'CMD':
      case 'ENTRYPOINT': {
        const exec = jsonForm(rest, fail);
        const value = exec ? { line, exec } : { line, shell: rest };
        if (kw === 'CMD') cmd = value;
        else entrypoint = value;
        break;
      }
      case 'LABEL':
      case 'MAINTAINER':
        break; // metadata: accepted, not kept
      default:
        fail(`unknown instruction ${kw}`);
    }
  }
  if (!from) throw new DockerfileError(list.length ? list[list.length - 1]!.line : 1, 'FROM', 'the Dockerfile has no FROM');

  for (const k of Object.keys(buildArgs)) {
    if (!used.has(k)) warnings.push(`build arg ${k} is not declared by an ARG of the Dockerfile: not used`);
  }
  return { from, steps, start: startCommand(entrypoint, cmd), args: Object.fromEntries(args), warnings };
}

/**
 * CMD and ENTRYPOINT as Docker combines them, as one shell command: an exec-form ENTRYPOINT gets
 * the CMD's arguments appended (a shell-form CMD as `/bin/sh -c CMD`); a shell-form ENTRYPOINT
 * ignores CMD.
 */
function startCommand(entrypoint: { line: number; exec?: string[]; shell?: string } | undefined, cmd: { line: number; exec?: string[]; shell?: string } | undefined): ResolvedStart | null {
  let command: string;
  let line: number;
  if (entrypoint?.shell !== undefined) {
    command = entrypoint.shell;
    line = entrypoint.line;
  } else {
    const args = [...(entrypoint?.exec ?? [])];
    if (cmd?.exec) args.push(...cmd.exec);
    else if (cmd?.shell !== undefined) {
      if (args.length === 0) return asStart(cmd.shell, cmd.line, 'CMD');
      args.push('/bin/sh', '-c', cmd.shell);
    }
    command = shellJoin(args);
    line = (entrypoint ?? cmd)?.line ?? 0;
  }
  return asStart(command, line, entrypoint ? 'ENTRYPOINT' : 'CMD');
}

function asStart(command: string, line: number, kw: string): ResolvedStart | null {
  if (command.trim() === '') return null;
  try {
    return validateStart({ cmd: command });
  } catch (err) {
    if (err instanceof SpecProblem) throw new DockerfileError(line, kw, `${kw} ${err.problem}`);
    throw err;
  }
}

/**
 * The spec a build runs: `spec` checked (validateSpec), its Dockerfile parsed (the Dockerfile's
 * steps first, then the spec's; the spec's `start` replaces the Dockerfile's CMD/ENTRYPOINT). Throws
 * `invalid_build_spec` or `invalid_dockerfile`.
 */
export function resolveBuildSpec(spec: unknown, opts: DockerfileOptions = {}): ResolvedBuildSpec {
  const v = validateSpec(spec);
  if (v.dockerfile === undefined) {
    const unused = Object.keys(opts.buildArgs ?? {});
    return { from: v.from!, steps: v.steps, start: v.start, warnings: unused.length ? [`build args (${unused.join(', ')}) are used only by a Dockerfile: not used`] : [] };
  }
  const df = parseDockerfile(v.dockerfile, opts);
  const steps = [...df.steps, ...v.steps];
  if (steps.length > MAX_STEPS) throw new NsError('invalid_build_spec', `invalid build spec: ${steps.length} steps with the Dockerfile's: at most ${MAX_STEPS}`, { details: { field: 'spec.steps' } });
  return { from: df.from, steps, start: v.start ?? df.start, warnings: df.warnings };
}
