import fs from 'node:fs';
import path from 'node:path';
import { SandboxError } from './errors.js';

/**
 * A template's build context as a tar stream: a POSIX ustar writer (PAX records for long or
 * non-ASCII names and links) over directories walked lazily, each file read as the upload goes
 * (nothing held whole in memory), `.dockerignore` applied as Docker does. The SDK has no
 * dependencies, and this is all of tar it needs: files, directories, symbolic links, owned by root.
 */

export interface TarEntry {
  /** The path inside the archive (relative, `/`-separated; no trailing `/`). */
  name: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits. */
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Files: the local file read into the archive, and its size when it was walked. */
  source?: string;
  size?: number;
  /** Symbolic links: the target. */
  linkname?: string;
}

const BLOCK = 512;
const MAX_OCTAL_SIZE = 8 ** 11 - 1;

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

/** A PAX record: "<length> key=value\n", the length counting itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

const ascii = (s: string) => /^[\x20-\x7e]*$/.test(s);

/** `name` as ustar's prefix + name fields, or undefined when it does not fit. */
function ustarName(name: string): { prefix: string; name: string } | undefined {
  if (!ascii(name)) return undefined;
  if (name.length <= 100) return { prefix: '', name };
  for (let i = name.indexOf('/'); i >= 0; i = name.indexOf('/', i + 1)) {
    if (i <= 155 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) return { prefix: name.slice(0, i), name: name.slice(i + 1) };
  }
  return undefined;
}

function header(fields: { name: string; prefix?: string; mode: number; size: number; mtime: number; type: string; linkname?: string }): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(fields.name, 0, 100, 'utf8');
  h.write(octal(fields.mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(fields.size, 12), 124, 'ascii');
  h.write(octal(Math.max(0, Math.floor(fields.mtime)), 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(fields.type, 156, 'ascii');
  if (fields.linkname) h.write(fields.linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  if (fields.prefix) h.write(fields.prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The header blocks of one entry (a PAX header first when ustar cannot hold its name, link or size). */
function headersOf(e: TarEntry): Buffer[] {
  const name = e.type === 'dir' ? `${e.name}/` : e.name;
  const size = e.type === 'file' ? (e.size ?? 0) : 0;
  const fitted = ustarName(name);
  const records: string[] = [];
  if (!fitted) records.push(paxRecord('path', name));
  if (e.linkname !== undefined && (!ascii(e.linkname) || e.linkname.length > 100)) records.push(paxRecord('linkpath', e.linkname));
  if (size > MAX_OCTAL_SIZE) records.push(paxRecord('size', String(size)));
  const out: Buffer[] = [];
  if (records.length) {
    const data = Buffer.from(records.join(''), 'utf8');
    out.push(header({ name: `PaxHeaders/${ascii(name) ? name.slice(-80) : 'entry'}`.slice(0, 100), mode: 0o644, size: data.length, mtime: e.mtime, type: 'x' }), data, padding(data.length));
  }
  const short = fitted ?? { prefix: '', name: ascii(name) ? name.slice(-100) : 'pax-named-entry' };
  const link = e.linkname !== undefined && ascii(e.linkname) && e.linkname.length <= 100 ? e.linkname : undefined;
  out.push(header({ ...short, mode: e.mode, size: Math.min(size, MAX_OCTAL_SIZE), mtime: e.mtime, type: e.type === 'file' ? '0' : e.type === 'dir' ? '5' : '2', ...(link ? { linkname: link } : {}) }));
  return out;
}

/** A file's bytes, exactly `size` of them (a file that changed size while it was read fails the build). */
async function* fileData(source: string, size: number): AsyncGenerator<Buffer> {
  let read = 0;
  const stream = fs.createReadStream(source, { highWaterMark: 256 * 1024 });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      read += chunk.length;
      if (read > size) break;
      yield chunk;
    }
  } catch (err) {
    throw new SandboxError(`build context: cannot read ${source}: ${(err as Error).message}`, { code: 'bad_request', cause: err });
  } finally {
    stream.destroy();
  }
  if (read !== size) throw new SandboxError(`build context: ${source} changed while it was read (${size} bytes when listed, ${read} read)`, { code: 'bad_request' });
}

/** The tar archive of `entries`, block by block. */
export async function* tarStream(entries: AsyncIterable<TarEntry> | Iterable<TarEntry>): AsyncGenerator<Buffer> {
  for await (const e of entries) {
    yield* headersOf(e);
    if (e.type === 'file' && e.size) {
      yield* fileData(e.source!, e.size);
      yield padding(e.size);
    }
  }
  yield Buffer.alloc(2 * BLOCK);
}

/**
 * `.dockerignore` rules as Docker applies them: one pattern a line (`#` comments, blank lines
 * skipped), `*` and `?` within a path segment, `**` across segments, `[...]` classes, `!` takes
 * paths back; the last pattern that matches a path (or one of its parent directories) decides.
 */
export class IgnoreRules {
  private readonly rules: Array<{ re: RegExp; exclude: boolean }> = [];

  constructor(text: string) {
    for (let line of text.split(/\r?\n/)) {
      line = line.trim();
      if (!line || line.startsWith('#')) continue;
      const exclude = line.startsWith('!');
      if (exclude) line = line.slice(1).trim();
      line = path.posix.normalize(line).replace(/^\/+/, '').replace(/\/+$/, '');
      if (!line || line === '.') continue;
      this.rules.push({ re: patternRegExp(line), exclude });
    }
  }

  /** Whether `p` (relative to the context, `/`-separated) stays out of the context. */
  ignores(p: string): boolean {
    const parents: string[] = [];
    for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) parents.push(p.slice(0, i));
    let ignored = false;
    for (const r of this.rules) {
      if (r.re.test(p) || parents.some((d) => r.re.test(d))) ignored = !r.exclude;
    }
    return ignored;
  }

  /** Whether a directory that is ignored may still hold a path taken back by a `!` rule. */
  get hasExceptions(): boolean {
    return this.rules.some((r) => r.exclude);
  }
}

function patternRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '*') {
      if (pattern[i + 1] === '*') {
        i++;
        if (pattern[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (ch === '?') re += '[^/]';
    else if (ch === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        const body = pattern.slice(i + 1, end);
        re += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
        i = end;
      }
    } else if (ch === '\\' && i + 1 < pattern.length) {
      re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else re += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function entryOf(local: string, name: string, st: fs.Stats): TarEntry | undefined {
  const common = { name, mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) };
  if (st.isFile()) return { ...common, type: 'file', source: local, size: st.size };
  if (st.isDirectory()) return { ...common, type: 'dir' };
  if (st.isSymbolicLink()) return { ...common, type: 'symlink', linkname: fs.readlinkSync(local) };
  return undefined; // sockets, FIFOs, devices: not part of a context
}

/**
 * The entries of `local` (a file, a directory and everything under it, or a symbolic link, not
 * followed) under the archive path `name` ('' = the archive's root), skipping what `ignore` rules out.
 */
export async function* walk(local: string, name: string, ignore?: IgnoreRules): AsyncGenerator<TarEntry> {
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(local);
  } catch (err) {
    throw new SandboxError(`build context: cannot read ${local}: ${(err as Error).message}`, { code: 'bad_request', cause: err });
  }
  const rel = (child: string) => (name ? `${name}/${child}` : child);
  if (name) {
    if (ignore?.ignores(name) && !(st.isDirectory() && ignore.hasExceptions)) return;
    const e = entryOf(local, name, st);
    if (e && !ignore?.ignores(name)) yield e;
  }
  if (!st.isDirectory()) return;
  const children = (await fs.promises.readdir(local)).sort();
  for (const child of children) yield* walk(path.join(local, child), rel(child), ignore);
}

/** A ReadableStream of an async generator's chunks; `onError` sees an error of the source before the upload fails with it. */
export function readableOf(gen: AsyncGenerator<Uint8Array>, onError: (err: unknown) => void): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await gen.next();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (err) {
        onError(err);
        controller.error(err);
      }
    },
    async cancel() {
      await gen.return(undefined);
    },
  });
}
