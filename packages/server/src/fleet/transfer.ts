import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { errorMessage, NsError, type ErrorCode } from '@nullspace/runtime';

/**
 * Fetching one file from another server's artifact routes (fleet/artifacts.ts: a snapshot's
 * layers; fleet/templates.ts: a template's files), checked: the GET with a grant, the body streamed
 * to disk (zeros left as holes, or applied as page deltas onto a base copy), its size and its
 * sha256 compared with the manifest's; and the sending side's page deltas.
 */

/** Runs of zeros this long (aligned) are left as holes in a fetched file (RAM images are sparse). */
const HOLE = 4096;
const ZEROS = Buffer.alloc(HOLE);
/** A download that receives nothing for this long is abandoned. */
const IDLE_MS = 60_000;

/**
 * A GET of another server's artifact route with a grant (`what`: what it reads, for messages); its
 * refusals as this server's codes: the source's 404 `notFound` as that code, a refused grant as
 * `artifact_source_refused`, anything else as `artifact_source_failed`.
 */
export async function sourceGet(url: string, source: string, grant: string, signal: AbortSignal, what: { what: string; notFound: ErrorCode; details: Record<string, unknown> }): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { authorization: `Grant ${grant}` }, signal, redirect: 'error' });
  } catch (err) {
    throw new NsError('artifact_source_unreachable', `${source} could not be reached: ${errorMessage(err)}`, { details: { source } });
  }
  if (res.ok) return res;
  const text = await res.text().catch(() => '');
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    /* not the API's error format */
  }
  const details = { source, status: res.status, ...(code ? { sourceCode: code } : {}) };
  if (res.status === 404 && code === what.notFound) throw new NsError(what.notFound, `${what.what} not found on ${source}`, { details: { ...what.details, ...details } });
  if (res.status === 401 || res.status === 403) throw new NsError('artifact_source_refused', `${source} refused the grant for ${what.what}: ${res.status} ${code ?? ''}`.trim(), { details });
  throw new NsError('artifact_source_failed', `${url}: ${res.status} ${code ?? text.slice(0, 200)}`.trim(), { details });
}

/** Reads of a source's manifest give up after this long. */
const MANIFEST_TIMEOUT_MS = 30_000;

/**
 * A source's manifest (`notFound.what`: what it describes, for messages), parsed but not yet
 * checked: the caller checks it field by field (a source is another server, but its answer is input).
 */
export async function fetchManifest(url: string, source: string, grant: string, notFound: CheckedFetch['notFound']): Promise<unknown> {
  const res = await sourceGet(url, source, grant, AbortSignal.timeout(MANIFEST_TIMEOUT_MS), notFound);
  try {
    return await res.json();
  } catch (err) {
    throw new NsError('artifact_source_failed', `${notFound.what} from ${source}: the manifest is not JSON: ${errorMessage(err)}`, { details: { source } });
  }
}

/** One file to fetch, as a manifest describes it. */
export interface CheckedFetch {
  url: string;
  /** The source server (its base URL) and the grant it is read with. */
  source: string;
  grant: string;
  /** What messages call it (`layer L_...`, `templates/base/disk.qcow2 of template base`). */
  what: string;
  /** The manifest's size and sha256 of the file. */
  bytes: number;
  sha256: string;
  /** The source's 404 code and what sourceGet's messages name. */
  notFound: { what: string; notFound: ErrorCode; details: Record<string, unknown> };
  /** Added to the details of errors about this file. */
  details: Record<string, unknown>;
  /** Which disk the file lands on, for a no-space message ("the data disk"). */
  disk: string;
  /** `file` holds a copy of a base the source may send page deltas against (DELTA_TYPE). */
  base?: boolean;
}

/**
 * Downloads `f` to `file` (created, or opened on the base copy already there), checking its size
 * and, once written, its whole content's sha256; the bytes received. A failed fetch leaves the file
 * for the caller's staging directory to remove.
 */
export async function fetchChecked(f: CheckedFetch, file: string): Promise<number> {
  const failed = (why: string) => new NsError('artifact_source_failed', `${f.what} from ${f.source}: ${why}`, { details: { source: f.source, ...f.details } });
  const abort = new AbortController();
  let idle: NodeJS.Timeout | undefined;
  const touch = () => {
    clearTimeout(idle);
    idle = setTimeout(() => abort.abort(new Error(`nothing received for ${IDLE_MS / 1000} s`)), IDLE_MS);
  };
  touch();
  const fh = await fs.promises.open(file, f.base ? fs.constants.O_RDWR : fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  let received = 0;
  try {
    const res = await sourceGet(f.url, f.source, f.grant, abort.signal, f.notFound);
    if (!res.body) throw failed('no body');
    const delta = res.headers.get('content-type') === DELTA_TYPE;
    if (delta && !f.base) throw failed('a delta was sent, and no base was asked for');
    if (!delta) await fh.truncate(0);
    const apply = delta ? new DeltaApplier(fh, f.bytes) : undefined;
    let pos = 0;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        touch();
        const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        received += buf.length;
        if (apply) await apply.push(buf);
        else {
          await writeSparse(fh, buf, pos);
          pos += buf.length;
          if (pos > f.bytes) break;
        }
      }
    } catch (err) {
      if (err instanceof NsError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') throw new NsError('no_space', `fetching ${f.what}: no space left on ${f.disk}`, { cause: err });
      throw new NsError('artifact_source_unreachable', `fetching ${f.what} from ${f.source}: ${errorMessage(err)}`, { details: { source: f.source } });
    }
    if (apply && !apply.complete) throw failed('the delta breaks off within a record');
    if (!apply && pos !== f.bytes) throw failed(`${pos} bytes received, the manifest says ${f.bytes}`);
    await fh.truncate(f.bytes);
    await fh.sync();
  } catch (err) {
    abort.abort();
    throw err;
  } finally {
    clearTimeout(idle);
    await fh.close();
  }
  // what is written is checked whole: a delta applied onto the base is the file, or is refused
  const sha256 = await fileSha256(file);
  if (sha256 !== f.sha256) {
    throw new NsError('artifact_digest_mismatch', `${f.what} from ${f.source}: its sha256 is ${sha256}, the manifest says ${f.sha256}`, {
      details: { source: f.source, ...f.details, expected: f.sha256, actual: sha256 },
    });
  }
  return received;
}

/** Writes `buf` at `pos`, leaving aligned runs of zeros as holes (the file is truncated to its size at the end). */
export async function writeSparse(fh: fs.promises.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let start = 0;
  while (start < buf.length) {
    // the next aligned boundary after `start`
    const end = Math.min(buf.length, start + HOLE - ((pos + start) % HOLE));
    const piece = buf.subarray(start, end);
    const zero = piece.length === HOLE && piece.equals(ZEROS);
    if (!zero) {
      // coalesce the following non-zero pieces into one write
      let stop = end;
      while (stop < buf.length) {
        const next = Math.min(buf.length, stop + HOLE);
        const p = buf.subarray(stop, next);
        if (p.length === HOLE && p.equals(ZEROS)) break;
        stop = next;
      }
      await fh.write(buf, start, stop - start, pos + start);
      start = stop;
    } else start = end;
  }
}

/** The sha256 (hex) of a file's content. */
export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The content type of a layer sent as what differs from a base layer. */
export const DELTA_TYPE = 'application/x-nullspace-delta';
/** A delta record's header: the offset (u64) and length (u32) of the bytes that follow, big-endian. */
const RECORD_HEADER = 12;
/** Deltas compare pages (the guest's RAM is paged in 4 KiB), read 1 MiB at a time. */
const PAGE = 4096;
const CHUNK = 1 << 20;

/** The pages of the file open at `fd` (`bytes` long) that differ from the file open at `baseFd`, as records; closes both. */
export async function* deltaRecords(fd: number, bytes: number, baseFd: number): AsyncGenerator<Buffer> {
  const a = Buffer.alloc(CHUNK);
  const b = Buffer.alloc(CHUNK);
  const read = (f: number, buf: Buffer, len: number, at: number) =>
    new Promise<number>((resolve, reject) => fs.read(f, buf, 0, len, at, (err, n) => (err ? reject(err) : resolve(n))));
  try {
    for (let off = 0; off < bytes; off += CHUNK) {
      const n = await read(fd, a, Math.min(CHUNK, bytes - off), off);
      const nb = await read(baseFd, b, n, off);
      let run = -1;
      const emit = (from: number, to: number) => {
        const rec = Buffer.alloc(RECORD_HEADER + (to - from));
        rec.writeBigUInt64BE(BigInt(off + from), 0);
        rec.writeUInt32BE(to - from, 8);
        a.copy(rec, RECORD_HEADER, from, to);
        return rec;
      };
      for (let i = 0; i < n; i += PAGE) {
        const end = Math.min(n, i + PAGE);
        const same = end <= nb && a.compare(b, i, end, i, end) === 0;
        if (!same && run < 0) run = i;
        if (same && run >= 0) {
          yield emit(run, i);
          run = -1;
        }
      }
      if (run >= 0) yield emit(run, n);
      if (n === 0) break;
    }
  } finally {
    fs.closeSync(fd);
    fs.closeSync(baseFd);
  }
}

/** Applies delta records, as they arrive in pieces, onto the file open as `fh` (`bytes` long). */
class DeltaApplier {
  private header = Buffer.alloc(0);
  private at = 0;
  private left = 0;

  constructor(
    private readonly fh: fs.promises.FileHandle,
    private readonly bytes: number,
  ) {}

  /** Whether the records ended between two records (not within one). */
  get complete(): boolean {
    return this.left === 0 && this.header.length === 0;
  }

  async push(buf: Buffer): Promise<void> {
    let i = 0;
    while (i < buf.length) {
      if (this.left === 0) {
        const take = Math.min(RECORD_HEADER - this.header.length, buf.length - i);
        this.header = Buffer.concat([this.header, buf.subarray(i, i + take)]);
        i += take;
        if (this.header.length < RECORD_HEADER) return;
        const at = this.header.readBigUInt64BE(0);
        const len = this.header.readUInt32BE(8);
        this.header = Buffer.alloc(0);
        if (len === 0 || at + BigInt(len) > BigInt(this.bytes)) throw new NsError('artifact_source_failed', `a delta record (${at}+${len}) lies outside the layer (${this.bytes} bytes)`);
        this.at = Number(at);
        this.left = len;
        continue;
      }
      const n = Math.min(this.left, buf.length - i);
      await this.fh.write(buf, i, n, this.at);
      this.at += n;
      this.left -= n;
      i += n;
    }
  }
}
