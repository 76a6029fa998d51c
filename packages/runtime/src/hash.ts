import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** A sha256 over labelled parts; order matters. */
export class Hasher {
  private h = createHash('sha256');
  add(label: string, value: string | Buffer | number | boolean | object): this {
    const data = Buffer.isBuffer(value) ? value : Buffer.from(typeof value === 'object' ? JSON.stringify(value) : String(value));
    this.h.update(`${label}\0${data.length}\0`);
    this.h.update(data);
    return this;
  }
  /** Adds every regular file under `dir` (sorted, relative paths and modes included), skipping `skip` names. */
  addTree(label: string, dir: string, skip: (rel: string) => boolean = () => false): this {
    for (const rel of listTree(dir).filter((r) => !skip(r))) {
      const full = path.join(dir, rel);
      const st = fs.lstatSync(full);
      if (st.isSymbolicLink()) this.add(`${label}:${rel}:link`, fs.readlinkSync(full));
      else if (st.isFile()) this.add(`${label}:${rel}:${st.mode & 0o7777}`, fs.readFileSync(full));
    }
    return this;
  }
  hex(len = 16): string {
    return this.h.digest('hex').slice(0, len);
  }
}

/** Relative paths of all files and symlinks under dir, sorted. */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const ent of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.isDirectory()) walk(r);
      else out.push(r);
    }
  };
  if (fs.existsSync(dir)) walk('');
  return out.sort();
}
