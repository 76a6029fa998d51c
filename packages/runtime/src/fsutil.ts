import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { NsError } from './errors.js';

/** Writes a file atomically (temp file in the same directory, fsync, rename). */
export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

export function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/**
 * A lock held by creating a directory; stale locks (dead pid) are broken. Returns a release function.
 * Used so that two processes never build the same artifact at once.
 */
export async function acquireDirLock(lockDir: string, timeoutMs: number, onWait?: () => void): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  let waited = false;
  for (;;) {
    try {
      fs.mkdirSync(lockDir);
      fs.writeFileSync(path.join(lockDir, 'pid'), String(process.pid));
      return () => fs.rmSync(lockDir, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = 0;
    try {
      holder = Number(fs.readFileSync(path.join(lockDir, 'pid'), 'utf8'));
    } catch {
      /* being created or removed */
    }
    if (holder && !pidAlive(holder)) {
      fs.rmSync(lockDir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new NsError('busy', `lock ${lockDir} held by pid ${holder} for more than ${timeoutMs} ms`);
    if (!waited) {
      waited = true;
      onWait?.();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether a process has exited and waits to be reaped (or is gone already). */
export function isZombie(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}
