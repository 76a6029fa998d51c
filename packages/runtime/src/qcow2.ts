import fs from 'node:fs';
import { NsError } from './errors.js';

/**
 * The parts of a qcow2 header that decide which other files a QEMU or qemu-img opening the image
 * reads: the backing file (name and format) and an external data file. A sandbox's overlay is
 * written by its QEMU, which runs as the sandbox's uid and must be assumed compromised: before root
 * (a restore's QEMU opens the chain before dropping privileges, qemu-img flattens and prunes it)
 * follows such a header, the server checks it with this (the qcow2 format is QEMU's
 * docs/interop/qcow2.txt).
 */
export interface Qcow2Header {
  version: number;
  virtualSize: bigint;
  backingFile: string | undefined;
  backingFormat: string | undefined;
  /** An external data file is named (incompatible feature bit 2, or the header extension). */
  externalData: boolean;
  encrypted: boolean;
}

const MAGIC = 0x514649fb;
const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_DATA_FILE = 0x44415441;
const INCOMPAT_DATA_FILE = 1n << 2n;
/** Header, extensions and backing name all live in the first cluster; 64 KiB covers QEMU's images. */
const READ_BYTES = 65536;

/** Parses the header of the qcow2 image open at `fd` (throws `disk_invalid` for anything else). */
export function readQcow2Header(fd: number, what = 'image'): Qcow2Header {
  const buf = Buffer.alloc(READ_BYTES);
  const n = fs.readSync(fd, buf, 0, READ_BYTES, 0);
  const bad = (why: string) => new NsError('disk_invalid', `${what}: not a valid qcow2 header: ${why}`);
  if (n < 72 || buf.readUInt32BE(0) !== MAGIC) throw bad('no qcow2 magic');
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw bad(`version ${version}`);
  const backingOffset = buf.readBigUInt64BE(8);
  const backingSize = buf.readUInt32BE(16);
  const virtualSize = buf.readBigUInt64BE(24);
  const encrypted = buf.readUInt32BE(32) !== 0;
  let extStart = 72;
  let externalData = false;
  if (version === 3) {
    if (n < 104) throw bad('truncated v3 header');
    externalData = (buf.readBigUInt64BE(72) & INCOMPAT_DATA_FILE) !== 0n;
    extStart = buf.readUInt32BE(100);
    if (extStart < 104 || extStart > n) throw bad(`header length ${extStart}`);
  }
  let backingFormat: string | undefined;
  for (let off = extStart; ; ) {
    if (off + 8 > n) throw bad('header extensions run past the first 64 KiB');
    const type = buf.readUInt32BE(off);
    const len = buf.readUInt32BE(off + 4);
    if (type === EXT_END) break;
    if (off + 8 + len > n) throw bad('a header extension runs past the first 64 KiB');
    if (type === EXT_BACKING_FORMAT) backingFormat = buf.toString('latin1', off + 8, off + 8 + len);
    if (type === EXT_DATA_FILE) externalData = true;
    off += 8 + Math.ceil(len / 8) * 8;
  }
  let backingFile: string | undefined;
  if (backingOffset !== 0n) {
    if (backingSize === 0 || backingSize > 1023 || backingOffset + BigInt(backingSize) > BigInt(n)) throw bad('backing file name out of range');
    const raw = buf.subarray(Number(backingOffset), Number(backingOffset) + backingSize);
    backingFile = raw.toString('utf8');
    if (!Buffer.from(backingFile, 'utf8').equals(raw) || backingFile.includes('\0')) throw bad('backing file name is not text');
  }
  return { version, virtualSize, backingFile, backingFormat, externalData, encrypted };
}

/**
 * Checks that the qcow2 image `file` (which only root can write: e.g. a layer just copied out of a
 * sandbox's directory) reads nothing but its own data and the backing file `allowed` accepts, as
 * qcow2: no external data file, no encryption, an absolute backing path accepted as is (no
 * `json:` or protocol names). Throws `disk_invalid` otherwise.
 */
export function checkQcow2Backing(file: string, allowed: (backingFile: string) => boolean): Qcow2Header {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  let h: Qcow2Header;
  try {
    h = readQcow2Header(fd, file);
  } finally {
    fs.closeSync(fd);
  }
  const refuse = (why: string) => new NsError('disk_invalid', `${file}: ${why}: refused (a disk image names files it must not)`);
  if (h.externalData) throw refuse('it names an external data file');
  if (h.encrypted) throw refuse('it is encrypted');
  if (h.backingFile === undefined) throw refuse('it has no backing file');
  if (h.backingFormat !== 'qcow2') throw refuse(`its backing format is ${JSON.stringify(h.backingFormat ?? 'unset')}, not qcow2`);
  if (!h.backingFile.startsWith('/') || !allowed(h.backingFile)) throw refuse(`its backing file ${JSON.stringify(h.backingFile)} is not the expected one`);
  return h;
}
