import fs from 'node:fs';
import path from 'node:path';
import { NsError } from './errors.js';
import { pidAlive } from './fsutil.js';

/**
 * The lock by which builds and cache prunes exclude each other (cache.ts says why): a prune holds
 * `<cache>/prune.lock`; a build takes its own lock, then waits here for any prune to finish. Its own
 * module, below both the builders (template.ts, image/build.ts) and the prune (cache.ts), which reads
 * what the builders wrote.
 */

export const PRUNE_LOCK = 'prune.lock';

/** Called by builds right after they took their own lock: waits while a prune runs. */
export async function waitForPrune(cacheDir: string, onWait?: () => void): Promise<void> {
  const lock = path.join(cacheDir, PRUNE_LOCK);
  const deadline = Date.now() + 30 * 60_000;
  let waited = false;
  while (lockHeld(lock)) {
    if (Date.now() > deadline) throw new NsError('busy', `${lock} held for more than 30 minutes`);
    if (!waited) {
      waited = true;
      onWait?.();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A lock directory of acquireDirLock whose holder is alive (or that is being taken this instant). */
export function lockHeld(lock: string): boolean {
  let pid: string;
  try {
    pid = fs.readFileSync(path.join(lock, 'pid'), 'utf8');
  } catch {
    return fs.existsSync(lock) && Date.now() - fs.statSync(lock).mtimeMs < 10_000;
  }
  return pidAlive(Number(pid));
}
