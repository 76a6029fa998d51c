import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { NsError } from '../errors.js';
import { run } from '../exec.js';

export interface KernelInfo {
  /** e.g. 6.1.0-57-amd64 */
  release: string;
  /** Debian package version, e.g. 6.1.192-3 */
  packageVersion: string;
  bzImage: string;
  modulesDir: string;
}

/** Finds the kernel that Debian's metapackage (e.g. linux-image-amd64) currently points to. */
export async function findKernel(metaPackage: string): Promise<KernelInfo> {
  let depends: string;
  try {
    depends = (await run('dpkg-query', ['-W', '-f=${Depends}', metaPackage])).stdout;
  } catch (err) {
    throw new NsError('kernel_missing', `kernel package ${metaPackage} is not installed (apt-get install ${metaPackage})`, { cause: err });
  }
  const m = /linux-image-([0-9][^\s,()]*)/.exec(depends);
  if (!m?.[1]) throw new NsError('kernel_missing', `cannot tell which kernel ${metaPackage} depends on: "${depends}"`);
  const release = m[1];
  const packageVersion = (await run('dpkg-query', ['-W', '-f=${Version}', `linux-image-${release}`])).stdout.trim();
  const bzImage = `/boot/vmlinuz-${release}`;
  const modulesDir = `/lib/modules/${release}`;
  for (const p of [bzImage, path.join(modulesDir, 'modules.dep')]) {
    if (!fs.existsSync(p)) throw new NsError('kernel_missing', `kernel ${release}: ${p} is missing (reinstall linux-image-${release})`);
  }
  return { release, packageVersion, bzImage, modulesDir };
}

/**
 * Extracts the uncompressed ELF kernel from a bzImage. The Debian kernel has CONFIG_PVH, so QEMU can
 * start the ELF directly through its PVH entry point; this skips the in-guest decompression, which
 * costs seconds under TCG. Returns false when the image is not xz-compressed (the caller then boots
 * the bzImage as is).
 */
export async function extractVmlinux(bzImage: string, out: string): Promise<boolean> {
  const data = fs.readFileSync(bzImage);
  const xzMagic = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
  const offset = data.indexOf(xzMagic);
  if (offset < 0) return false;
  await new Promise<void>((resolve, reject) => {
    const outFd = fs.openSync(out, 'w');
    const xz = spawn('xz', ['-dc', '--single-stream'], { stdio: ['pipe', outFd, 'pipe'] });
    fs.closeSync(outFd);
    let stderr = '';
    xz.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    xz.on('error', reject);
    xz.on('close', (code) => (code === 0 ? resolve() : reject(new NsError('image_build_failed', `xz -d of ${bzImage}: ${stderr.trim()}`))));
    // --single-stream: xz stops reading after the kernel's stream, so the rest of the write may fail
    // with EPIPE; the exit code says whether the kernel came out (an unhandled 'error' killed the build)
    xz.stdin!.on('error', () => {});
    xz.stdin!.end(data.subarray(offset));
  });
  const head = Buffer.alloc(4);
  const fd = fs.openSync(out, 'r');
  fs.readSync(fd, head, 0, 4, 0);
  fs.closeSync(fd);
  if (!head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
    fs.rmSync(out, { force: true });
    return false;
  }
  return true;
}

/**
 * Orders kernel modules so that every module comes after its dependencies (from modules.dep).
 * Returns paths relative to the modules directory.
 */
export function resolveModules(modulesDep: string, wanted: readonly string[]): string[] {
  const deps = new Map<string, { file: string; deps: string[] }>();
  for (const line of modulesDep.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const file = line.slice(0, colon).trim();
    const name = moduleName(file);
    deps.set(name, { file, deps: line.slice(colon + 1).trim().split(/\s+/).filter(Boolean).map(moduleName) });
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    if (seen.has(name)) return;
    const entry = deps.get(name) ?? deps.get(name.replace(/-/g, '_')) ?? deps.get(name.replace(/_/g, '-'));
    if (!entry) throw new NsError('kernel_missing', `kernel module ${name} not found${chain.length ? ` (needed by ${chain.join(' <- ')})` : ''}`);
    seen.add(name);
    for (const d of entry.deps) visit(d, [name, ...chain]);
    order.push(entry.file);
  };
  for (const w of wanted) visit(w, []);
  return order;
}

function moduleName(file: string): string {
  return path.basename(file).replace(/\.ko(\.(xz|zst|gz))?$/, '');
}
