import fs from 'node:fs';
import path from 'node:path';
import { NsError } from '../errors.js';

/**
 * Host-side edits of a guest root file system that may come from anyone (an imported OCI image).
 * Its symbolic links are the guest's: `/usr/local -> /etc` in an image must not make the host write
 * into its own /etc. Paths are resolved as the guest would see them (chroot semantics: an absolute
 * link target starts at the guest's root, `..` stops there), so every edit stays inside `root`.
 */

const MAX_LINKS = 40;

/**
 * The host path of guest path `p` inside `root`, every symbolic link on the way followed the guest's
 * way (the last component too unless `followLast` is false). Components that do not exist are kept
 * as they are: what is returned has no symbolic link in the part that exists.
 */
export function guestPath(root: string, p: string, followLast = true): string {
  const done: string[] = [];
  const todo = p.split('/').filter((c) => c !== '' && c !== '.');
  let links = 0;
  while (todo.length) {
    const name = todo.shift()!;
    if (name === '..') {
      done.pop();
      continue;
    }
    const host = path.join(root, ...done, name);
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(host);
    } catch {
      st = undefined; // does not exist (or is not reachable): kept as a plain name
    }
    if (st?.isSymbolicLink() && (todo.length > 0 || followLast)) {
      if (++links > MAX_LINKS) throw new NsError('image_invalid', `too many levels of symbolic links in /${[...done, name].join('/')} of the image`);
      const target = fs.readlinkSync(host);
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...target.split('/').filter((c) => c !== '' && c !== '.'));
      continue;
    }
    done.push(name);
  }
  return path.join(root, ...done);
}

/** Makes guest directory `p` (and its parents) inside `root`; returns its host path. */
export function mkdirInRoot(root: string, p: string, mode = 0o755): string {
  const dir = guestPath(root, p);
  try {
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir, { recursive: true, mode });
      fs.chmodSync(dir, mode); // not narrowed by the umask
    } else if (!fs.statSync(dir).isDirectory()) {
      throw new NsError('image_invalid', `${p} in the image is not a directory`);
    }
  } catch (err) {
    if (err instanceof NsError) throw err;
    throw new NsError('image_invalid', `cannot make ${p} in the image: ${(err as Error).message}`, { cause: err });
  }
  return dir;
}
