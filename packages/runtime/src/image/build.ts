import fs from 'node:fs';
import path from 'node:path';
import { NsError } from '../errors.js';
import { run } from '../exec.js';
import { waitForPrune } from '../prunelock.js';
import { acquireDirLock, readJson, writeFileAtomic } from '../fsutil.js';
import { listTree } from '../hash.js';
import type { Progress } from '../progress.js';
import { extractVmlinux, findKernel, resolveModules, type KernelInfo } from './kernel.js';
import { mkdirInRoot } from './rootfs.js';
import { agentHash, debootstrapHash, imageHash, loadRecipe, type Recipe, type RecipeUser } from './recipe.js';

export interface ImageBuildOptions {
  name: string;
  imagesDir: string;
  agentDir: string;
  cacheDir: string;
  mirror: string;
  diskSizeMiB?: number;
  progress: Progress;
}

/** A built, bootable image: kernel, initramfs and root disk. Immutable once written. */
export interface ImageInfo {
  name: string;
  hash: string;
  dir: string;
  kernel: string;
  initrd: string;
  rootDisk: string;
  cmdline: string;
  kernelRelease: string;
  kernelPackageVersion: string;
  agentVersion: string;
  diskSizeMiB: number;
  defaults: Recipe['defaults'];
  builtAt: string;
}

const BUSYBOX = '/bin/busybox';

/** Builds (or finds in the cache) the image of template recipe `name`. */
export async function buildImage(opts: ImageBuildOptions): Promise<ImageInfo> {
  const { recipe, dir: recipeDir } = loadRecipe(opts.imagesDir, opts.name);
  const progress = opts.progress;
  const kernel = await findKernel(recipe.kernel.package);
  const agent = await buildAgent(opts.agentDir, opts.cacheDir, progress);
  const hash = imageHash(recipeDir, agent.version, kernel);
  const diskSizeMiB = opts.diskSizeMiB ?? recipe.defaults.diskSizeMiB;
  const imageDir = path.join(opts.cacheDir, 'images', `${recipe.name}-${hash}-${diskSizeMiB}m`);
  const manifest = path.join(imageDir, 'image.json');
  if (fs.existsSync(manifest)) {
    progress.info(`image ${path.basename(imageDir)} is cached`);
    return readJson<ImageInfo>(manifest);
  }
  fs.mkdirSync(path.dirname(imageDir), { recursive: true });
  const release = await acquireDirLock(`${imageDir}.lock`, 30 * 60_000, () => progress.info('waiting for another build of this image'));
  try {
    await waitForPrune(opts.cacheDir, () => progress.info('waiting for a cache prune to finish'));
    if (fs.existsSync(manifest)) return readJson<ImageInfo>(manifest);
    const staging = `${imageDir}.tmp`;
    fs.rmSync(staging, { recursive: true, force: true });
    fs.mkdirSync(staging, { recursive: true });
    try {
      const tarball = await debootstrap(recipe, opts, progress);
      const kernelFile = await buildBootFiles(recipe, recipeDir, kernel, staging, progress);
      await progress.step(`root filesystem (${diskSizeMiB} MiB ext4 -> qcow2)`, () =>
        buildRootDisk(recipeDir, recipe, tarball, agent.binary, diskSizeMiB, staging),
      );
      return commitImage(staging, imageDir, {
        name: recipe.name,
        hash,
        dir: imageDir,
        kernel: path.join(imageDir, kernelFile),
        initrd: path.join(imageDir, 'initrd.cpio'),
        rootDisk: path.join(imageDir, 'rootfs.qcow2'),
        cmdline: recipe.kernel.cmdline,
        kernelRelease: kernel.release,
        kernelPackageVersion: kernel.packageVersion,
        agentVersion: agent.version,
        diskSizeMiB,
        defaults: recipe.defaults,
        builtAt: new Date().toISOString(),
      });
    } catch (err) {
      fs.rmSync(staging, { recursive: true, force: true });
      throw err;
    }
  } finally {
    release();
  }
}

/**
 * Writes the boot files of an image into `staging`: the kernel (the ELF vmlinux when it can be
 * unpacked, else the bzImage) and the initramfs of `recipe` (busybox, its kernel modules, its
 * `init`). Returns the kernel's file name.
 */
export async function buildBootFiles(recipe: Recipe, recipeDir: string, kernel: KernelInfo, staging: string, progress: Progress): Promise<string> {
  const kernelFile = await progress.step('kernel', async () => {
    if (await extractVmlinux(kernel.bzImage, path.join(staging, 'vmlinux'))) return 'vmlinux';
    fs.copyFileSync(kernel.bzImage, path.join(staging, 'bzImage'));
    return 'bzImage';
  });
  await progress.step('initramfs', () => buildInitramfs(recipe, recipeDir, kernel.modulesDir, staging));
  return kernelFile;
}

/** Makes a staging directory the image `imageDir`: its manifest written, its files read-only, renamed in place. */
export function commitImage<T extends ImageInfo>(staging: string, imageDir: string, info: T): T {
  writeFileAtomic(path.join(staging, 'image.json'), JSON.stringify(info, null, 2));
  for (const f of fs.readdirSync(staging)) fs.chmodSync(path.join(staging, f), 0o444);
  // sandbox QEMU processes (unprivileged uids) open the root disk, kernel and initrd
  fs.chmodSync(staging, 0o755);
  fs.renameSync(staging, imageDir);
  return info;
}

/** Builds the static guest agent (Go, standard library only) into the cache, keyed by its sources. */
export async function buildAgent(agentDir: string, cacheDir: string, progress: Progress): Promise<{ version: string; binary: string }> {
  const version = agentHash(agentDir);
  const dir = path.join(cacheDir, 'agent', version);
  const binary = path.join(dir, 'nullspace-agent');
  if (fs.existsSync(binary)) return { version, binary };
  await progress.step(`agent ${version} (go build)`, async () => {
    fs.mkdirSync(dir, { recursive: true });
    const tmp = `${binary}.tmp`;
    await run('go', ['build', '-trimpath', '-ldflags', `-s -w -X main.version=${version}`, '-o', tmp, '.'], {
      cwd: agentDir,
      env: { ...process.env, CGO_ENABLED: '0', GOCACHE: path.join(cacheDir, 'go-build'), GOFLAGS: '-mod=readonly' },
      errorCode: 'image_build_failed',
    });
    fs.renameSync(tmp, binary);
  });
  return { version, binary };
}

async function debootstrap(recipe: Recipe, opts: ImageBuildOptions, progress: Progress): Promise<string> {
  const hash = debootstrapHash(recipe);
  const tarball = path.join(opts.cacheDir, 'debootstrap', `${recipe.debootstrap.suite}-${hash}.tar`);
  if (fs.existsSync(tarball)) return tarball;
  fs.mkdirSync(path.dirname(tarball), { recursive: true });
  const target = `${tarball}.rootfs`;
  fs.rmSync(target, { recursive: true, force: true });
  try {
    const d = recipe.debootstrap;
    let lastLine = Date.now();
    await progress.step(`debootstrap ${d.suite} (${d.variant}, ${d.packages.length} packages, from ${opts.mirror})`, () =>
      run('debootstrap', [`--variant=${d.variant}`, `--include=${d.packages.join(',')}`, d.suite, target, opts.mirror], {
        errorCode: 'image_build_failed',
        onOutput: (chunk) => {
          // one progress line every few seconds at most
          if (Date.now() - lastLine > 5000) {
            lastLine = Date.now();
            const line = chunk.trim().split('\n').pop();
            if (line) progress.info(`  debootstrap: ${line.slice(0, 120)}`);
          }
        },
      }),
    );
    await progress.step('debootstrap archive', () =>
      run('tar', ['--numeric-owner', '--xattrs', '-C', target, '-cf', `${tarball}.tmp`, '.'], { errorCode: 'image_build_failed' }),
    );
    fs.renameSync(`${tarball}.tmp`, tarball);
    return tarball;
  } finally {
    fs.rmSync(target, { recursive: true, force: true });
    fs.rmSync(`${tarball}.tmp`, { force: true });
  }
}

async function buildInitramfs(recipe: Recipe, recipeDir: string, modulesDir: string, out: string): Promise<void> {
  if (!fs.existsSync(BUSYBOX)) throw new NsError('image_build_failed', `${BUSYBOX} is missing (apt-get install busybox-static)`);
  const root = path.join(out, 'initrd.d');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'newroot', 'lib/modules']) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(root, 'bin/busybox'));
  fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
  const order = resolveModules(fs.readFileSync(path.join(modulesDir, 'modules.dep'), 'utf8'), recipe.kernel.modules);
  const names: string[] = [];
  for (const rel of order) {
    const src = path.join(modulesDir, rel);
    const name = path.basename(rel);
    if (/\.(xz|zst|gz)$/.test(name)) throw new NsError('image_build_failed', `compressed kernel module ${rel} is not supported`);
    fs.copyFileSync(src, path.join(root, 'lib/modules', name));
    names.push(name);
  }
  fs.writeFileSync(path.join(root, 'modules.order'), names.join('\n') + '\n');
  fs.copyFileSync(path.join(recipeDir, 'init'), path.join(root, 'init'));
  fs.chmodSync(path.join(root, 'init'), 0o755);
  const list = ['.', ...listDirsAndFiles(root)].join('\n') + '\n';
  await run('cpio', ['--quiet', '-o', '-H', 'newc', '--reproducible', '-F', path.join(out, 'initrd.cpio')], {
    cwd: root,
    input: list,
    errorCode: 'image_build_failed',
  });
  fs.rmSync(root, { recursive: true, force: true });
}

function listDirsAndFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const ent of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      out.push(r);
      if (ent.isDirectory()) walk(r);
    }
  };
  walk('');
  return out.sort();
}

async function buildRootDisk(
  recipeDir: string,
  recipe: Recipe,
  tarball: string,
  agentBinary: string,
  diskSizeMiB: number,
  out: string,
): Promise<void> {
  const rootfs = path.join(out, 'rootfs.d');
  fs.mkdirSync(rootfs);
  try {
    await run('tar', ['--numeric-owner', '--xattrs', '-C', rootfs, '-xf', tarball], { errorCode: 'image_build_failed' });
    for (const p of recipe.prune) {
      if (p.includes('..') || path.isAbsolute(p)) throw new NsError('invalid_recipe', `prune path "${p}" must be relative`);
      fs.rmSync(path.join(rootfs, p), { recursive: true, force: true });
    }
    fs.rmSync(path.join(rootfs, 'etc/resolv.conf'), { force: true });
    for (const u of recipe.users ?? []) addUser(rootfs, u);
    const overlay = path.join(recipeDir, 'overlay');
    for (const rel of listTree(overlay)) {
      const dst = path.join(rootfs, rel);
      fs.mkdirSync(path.dirname(dst), { recursive: true });
      fs.copyFileSync(path.join(overlay, rel), dst);
      fs.chmodSync(dst, fs.statSync(path.join(overlay, rel)).mode & 0o7777);
    }
    installAgent(rootfs, agentBinary);
    await makeRootDisk(rootfs, diskSizeMiB, out);
  } finally {
    fs.rmSync(rootfs, { recursive: true, force: true });
  }
}

/** Puts the agent at /usr/local/bin/nullspace-agent (the init the initramfs hands over to) and makes /workspace. */
export function installAgent(rootfs: string, agentBinary: string): void {
  const dir = mkdirInRoot(rootfs, '/usr/local/bin');
  const dst = path.join(dir, 'nullspace-agent');
  fs.rmSync(dst, { recursive: true, force: true });
  fs.copyFileSync(agentBinary, dst);
  fs.chmodSync(dst, 0o755);
  mkdirInRoot(rootfs, '/workspace');
}

/** `rootfs` as an ext4 file system of `diskSizeMiB` (label nsroot), converted to `<out>/rootfs.qcow2`. */
export async function makeRootDisk(rootfs: string, diskSizeMiB: number, out: string): Promise<void> {
  const raw = path.join(out, 'rootfs.raw');
  try {
    await run('mkfs.ext4', ['-q', '-F', '-L', 'nsroot', '-d', rootfs, raw, `${diskSizeMiB}M`], { errorCode: 'image_build_failed' });
    await run('qemu-img', ['convert', '-O', 'qcow2', raw, path.join(out, 'rootfs.qcow2')], { errorCode: 'image_build_failed' });
  } finally {
    fs.rmSync(raw, { force: true });
  }
}

/**
 * Adds an account to a root filesystem (passwd, group, shadow with a locked password, a home made
 * from /etc/skel, owned by it; with `sudo`, a sudoers.d entry without a password), without running
 * anything of the guest's.
 */
function addUser(rootfs: string, u: RecipeUser): void {
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(u.name) || !path.posix.isAbsolute(u.home) || u.home.includes('..')) {
    throw new NsError('invalid_recipe', `user ${JSON.stringify(u.name)}: a name [a-z_][a-z0-9_-]* and an absolute home are needed`);
  }
  const append = (rel: string, line: string, mode?: number) => {
    const f = path.join(rootfs, rel);
    const text = fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '';
    if (text.split('\n').some((l) => l.startsWith(`${u.name}:`))) return;
    fs.writeFileSync(f, `${text}${text && !text.endsWith('\n') ? '\n' : ''}${line}\n`);
    if (mode !== undefined) fs.chmodSync(f, mode);
  };
  append('etc/passwd', `${u.name}:x:${u.uid}:${u.uid}::${u.home}:${u.shell}`);
  append('etc/group', `${u.name}:x:${u.uid}:`);
  append('etc/shadow', `${u.name}:!:19000:0:99999:7:::`, 0o640);
  const home = mkdirInRoot(rootfs, u.home);
  const skel = path.join(rootfs, 'etc/skel');
  if (fs.existsSync(skel)) fs.cpSync(skel, home, { recursive: true, verbatimSymlinks: true });
  const own = (p: string) => {
    fs.lchownSync(p, u.uid, u.uid);
    if (fs.lstatSync(p).isDirectory()) for (const e of fs.readdirSync(p)) own(path.join(p, e));
  };
  own(home);
  fs.chmodSync(home, 0o750);
  if (u.sudo) {
    const dir = mkdirInRoot(rootfs, '/etc/sudoers.d');
    fs.writeFileSync(path.join(dir, u.name), `${u.name} ALL=(ALL) NOPASSWD:ALL\n`, { mode: 0o440 });
  }
}
