import fs from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { NsError } from '@nullspace/runtime';
import * as tar from 'tar';
import { newId } from '../util.js';

/** How long an uploaded build context is kept. */
const CONTEXT_TTL_MS = 3600_000;
const CONTEXT_ID_RE = /^ctx_[0-9a-z]{16}$/;

export interface ContextInfo {
  contextId: string;
  files: number;
  bytes: number;
  sha256: string;
}

/**
 * Uploaded build contexts (the files a template build's COPY steps take): a tar archive (gzip'd or
 * not) unpacked into `<data dir>/contexts/<ctx id>/`, root-owned and private. Only plain files,
 * directories and symbolic links are taken (links are never followed: a COPY copies them as links),
 * at relative paths inside the context; anything else refuses the whole upload with
 * `invalid_context`. Extraction is node-tar's (the npm client's own, which refuses `..` and absolute
 * paths and never writes through a link it created). Kept an hour.
 */
export class BuildContexts {
  private readonly root: string;
  private timer: NodeJS.Timeout | undefined;

  constructor(dataDir: string, private readonly maxBytes: number) {
    this.root = path.join(dataDir, 'contexts');
  }

  start(): void {
    fs.mkdirSync(this.root, { recursive: true, mode: 0o700 });
    this.expire();
    this.timer = setInterval(() => this.expire(), 60_000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async receive(body: Readable): Promise<ContextInfo> {
    const contextId = newId('ctx');
    const dir = path.join(this.root, contextId);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    let bytes = 0;
    let files = 0;
    const refused: string[] = [];
    const sha = createHash('sha256');
    const limit = this.maxBytes;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        if (bytes > limit) return done(new NsError('payload_too_large', `the build context is larger than ${limit} bytes`, { details: { limit } }));
        sha.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(
        body,
        counter,
        tar.x({
          cwd: dir,
          strict: true,
          preserveOwner: false,
          filter: (p, entry) => {
            const type = 'type' in entry ? entry.type : 'File';
            const normal = path.posix.normalize(p);
            if (path.posix.isAbsolute(p) || normal === '..' || normal.startsWith('../')) refused.push(`${p}: outside the context`);
            else if (!['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink'].includes(type)) refused.push(`${p}: a ${type} (only files, directories and symbolic links)`);
            else {
              if (type !== 'Directory') files++;
              return true;
            }
            return false;
          },
        }),
      );
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      if (err instanceof NsError) throw err;
      throw new NsError('invalid_context', `the build context is not a valid tar archive: ${(err as Error).message}`);
    }
    if (refused.length) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw new NsError('invalid_context', `the build context holds what a build cannot take: ${refused.slice(0, 5).join('; ')}${refused.length > 5 ? ` (and ${refused.length - 5} more)` : ''}`, {
        details: { entries: refused.slice(0, 20) },
      });
    }
    return { contextId, files, bytes, sha256: sha.digest('hex') };
  }

  /** The unpacked context `id` (404-like `invalid_context` when unknown or expired). */
  dir(id: string): string {
    const dir = CONTEXT_ID_RE.test(id) ? path.join(this.root, id) : undefined;
    if (!dir || !fs.existsSync(dir)) throw new NsError('invalid_context', `build context ${id} does not exist (expired after an hour, or never uploaded): upload it again`, { details: { contextId: id } });
    return dir;
  }

  private expire(): void {
    const now = Date.now();
    for (const id of fs.existsSync(this.root) ? fs.readdirSync(this.root) : []) {
      const dir = path.join(this.root, id);
      try {
        if (now - fs.statSync(dir).mtimeMs > CONTEXT_TTL_MS) fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        /* gone */
      }
    }
  }
}
