import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { NsError } from './errors.js';
import { run } from './exec.js';

/**
 * Copies of large sparse files (guest RAM images). On a reflink-capable filesystem (XFS with
 * reflink=1, btrfs) a copy shares the blocks of its source and takes milliseconds whatever the size;
 * elsewhere it is a sparse copy whose cost grows with the data.
 */
export function canReflink(dir: string): boolean {
  const a = path.join(dir, `.reflink-probe-${randomBytes(4).toString('hex')}`);
  const b = `${a}.copy`;
  try {
    fs.writeFileSync(a, 'probe');
    fs.copyFileSync(a, b, fs.constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(a, { force: true });
    fs.rmSync(b, { force: true });
  }
}

export async function cloneFile(src: string, dst: string, mode = 0o600): Promise<'reflink' | 'copy'> {
  try {
    fs.copyFileSync(src, dst, fs.constants.COPYFILE_FICLONE_FORCE);
    fs.chmodSync(dst, mode);
    return 'reflink';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw new NsError('no_space', `copying ${path.basename(src)}: no space left on the data disk`, { cause: err });
    if (code === 'ENOENT') throw new NsError('artifact_missing', `copying ${src}: file is missing`, { cause: err });
  }
  fs.rmSync(dst, { force: true });
  await run('cp', ['--sparse=always', '--', src, dst]);
  fs.chmodSync(dst, mode);
  return 'copy';
}

/**
 * Opens an existing regular file without following a symlink in its last component and without
 * blocking on a FIFO, and runs `fn` with its descriptor and a `/proc/self/fd` path to the same open
 * file. For root's work in directories that a sandbox's (possibly compromised) QEMU uid owns: a name
 * swapped for a link or a FIFO is refused, never followed.
 */
export function withRegularFile<T>(file: string, fn: (fd: number, procPath: string) => T): T {
  const fd = openRegularFile(file);
  try {
    return fn(fd, `/proc/self/fd/${fd}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** `withRegularFile` for work that outlives the call (the descriptor stays open until `fn` settles). */
export async function withRegularFileAsync<T>(file: string, fn: (fd: number) => Promise<T>): Promise<T> {
  const fd = openRegularFile(file);
  try {
    return await fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function openRegularFile(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new NsError('internal', `${file} is a symbolic link: refused`);
    throw err;
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new NsError('internal', `${file} is not a regular file: refused`);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return fd;
}

/** Reflink (or copy) a regular file that may sit in a sandbox-owned directory (see withRegularFile). */
export function cloneRegularFile(src: string, dst: string, mode: number): void {
  withRegularFile(src, (_fd, procPath) => fs.copyFileSync(procPath, dst, fs.constants.COPYFILE_FICLONE));
  fs.chmodSync(dst, mode);
}

/** Flushes a file's data to disk. */
export function fsyncFile(file: string): void {
  withRegularFile(file, (fd) => fs.fsyncSync(fd));
}

/**
 * `fsyncFile` off the event loop (libuv's thread pool): for long flushes on the request path, which
 * must neither block the server nor keep work that could overlap from starting.
 */
export async function fsyncFileAsync(file: string): Promise<void> {
  await withRegularFileAsync(file, (fd) => new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve()))));
}

/** Makes a directory's entries (new or renamed files) durable. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Creates a qcow2 overlay whose backing file is `backing`. */
export async function createOverlay(backing: string, file: string): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, file], { errorCode: 'disk_failed' });
  fs.chmodSync(file, 0o600);
}

/**
 * Names `backing` (qcow2) as the backing file of the qcow2 image `file` without reading either's
 * data (`qemu-img rebase -u`): for a layer moved to another host, whose chain below is the same
 * content under other paths. The caller checks the image's header first (no external data file).
 */
export async function setBackingFile(file: string, backing: string): Promise<void> {
  await run('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, file], { errorCode: 'disk_failed' });
}

/** Bytes actually allocated for a file (sparse files count only their data). */
export function allocatedBytes(file: string): number {
  try {
    return fs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}

export interface ChainEntry {
  filename: string;
  backingFilename: string | undefined;
}

/** The backing chain of a qcow2 file, top first. */
export async function backingChain(file: string): Promise<ChainEntry[]> {
  const out = (await run('qemu-img', ['info', '--backing-chain', '--output=json', '-U', file], { errorCode: 'disk_failed' })).stdout;
  const items = JSON.parse(out) as Array<{ filename: string; 'full-backing-filename'?: string; 'backing-filename'?: string }>;
  return items.map((i) => ({ filename: i.filename, backingFilename: i['full-backing-filename'] ?? i['backing-filename'] }));
}

/**
 * Writes `out`: the content of the chain topped by `top`, as one qcow2 layer backing directly onto
 * `base` (every cluster of the layers in between is merged in). Bounds the depth of backing chains.
 */
export async function flattenLayer(top: string, base: string, out: string): Promise<void> {
  fs.copyFileSync(top, out, fs.constants.COPYFILE_FICLONE);
  fs.chmodSync(out, 0o600);
  try {
    await run('qemu-img', ['rebase', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', out], { errorCode: 'disk_failed' });
    fs.chmodSync(out, 0o444);
  } catch (err) {
    fs.rmSync(out, { force: true });
    throw err;
  }
}
