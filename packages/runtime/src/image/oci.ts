import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { NsError, wrapError } from '../errors.js';
import { run } from '../exec.js';
import { acquireDirLock, readJson } from '../fsutil.js';
import { Hasher } from '../hash.js';
import type { Progress } from '../progress.js';
import { waitForPrune } from '../prunelock.js';
import { buildAgent, buildBootFiles, commitImage, installAgent, makeRootDisk, type ImageInfo } from './build.js';
import { findKernel } from './kernel.js';
import { loadRecipe } from './recipe.js';
import { guestPath, mkdirInRoot } from './rootfs.js';

/**
 * Bootable images from OCI / Docker images: a registry reference (Docker Registry HTTP API v2) or a
 * local `docker save` / OCI-layout tar. Debian's `skopeo` fetches the image into an OCI layout
 * (registry protocol, anonymous, basic and bearer-token auth, manifest lists, archives) and `umoci`
 * unpacks its layers (whiteouts, ownership, modes, without following the image's links out of the
 * tree); the rest is the image builder's: the agent and /workspace are added, the root file system
 * becomes an ext4 disk (qcow2), the kernel is the host's and the initramfs the base recipe's. See
 * docs/ARCHITECTURE.md, "Images from OCI registries and archives".
 */

/** Bump when the way imported images are assembled changes, so that cached imports are redone. */
export const OCI_IMPORT_VERSION = 1;

/** The recipe whose kernel (package, modules, command line) and initramfs `init` imported images boot with. */
const BOOT_RECIPE = 'base';

/** The only platform imported: the guest is an x86-64 VM. */
const PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

const INSPECT_TIMEOUT_S = 120;
const COPY_TIMEOUT_S = 3600;

export interface RegistryAuth {
  username: string;
  password: string;
}

/** Where an image comes from: a registry reference (with optional credentials) or a local tar. */
export type ImageSource = { ref: string; auth?: RegistryAuth } | { archive: string };

export interface ImportImageOptions {
  source: ImageSource;
  cacheDir: string;
  /** The template recipes (`images/`): the base recipe gives the kernel modules, command line and initramfs `init`. */
  imagesDir: string;
  agentDir: string;
  diskSizeMiB: number;
  progress: Progress;
  /**
   * Registries (`host` or `host:port`) that may be reached over plain HTTP or HTTPS without
   * certificate checks (NULLSPACE_INSECURE_REGISTRIES). Every other registry must have a valid
   * certificate. Loopback is not implied: an API user picks the reference, so plain HTTP to a
   * host-local port is the operator's decision.
   */
  insecureRegistries?: readonly string[];
}

/** The run configuration an image carries (Docker's `config`), for the template built on it. */
export interface OciImageConfig {
  /** KEY=VALUE, in the image's order. */
  env: string[];
  user: string | null;
  workingDir: string | null;
  entrypoint: string[] | null;
  cmd: string[] | null;
  /** e.g. "3000/tcp". */
  exposedPorts: string[];
}

/** What an imported image came from (ImageInfo.oci). */
export interface OciImageOrigin {
  /** `image <reference>` or `archive <file name>`: what the first import of this content was given. */
  source: string;
  /** The manifest digest a registry answered (`sha256:...`), or the sha256 of the archive file. */
  digest: string;
  /** The digest of the image's config blob: its identity whatever the transport. */
  configDigest: string;
  config: OciImageConfig;
}

/** An ImageInfo of an imported image. */
export type ImportedImageInfo = ImageInfo & { oci: OciImageOrigin };

/** A parsed image reference (the `docker://` transport's syntax). */
export interface ImageRef {
  /** Registry host[:port]; `docker.io` when none is named. */
  registry: string;
  /** Repository path, e.g. `library/debian`. */
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
}

const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const REPOSITORY_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const DOMAIN_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/**
 * Parses a reference as Docker does: `[registry[:port]/]repository[:tag][@sha256:...]`. The first
 * component is a registry when it has a `.` or a `:` or is `localhost`; else the registry is Docker
 * Hub (`docker.io`, one-component names under `library/`).
 */
export function parseImageRef(ref: string): ImageRef {
  const bad = (why: string) => new NsError('bad_request', `invalid image reference "${ref}": ${why}`);
  if (ref.length === 0 || ref.length > 512 || /\s/.test(ref)) throw bad('empty, too long or with white space');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw bad('a digest must be sha256:<64 hex digits>');
  }
  let registry = 'docker.io';
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    if (!DOMAIN_RE.test(first)) throw bad(`"${first}" is not a registry host[:port]`);
    registry = first;
    rest = rest.slice(slash + 1);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(`"${tag}" is not a tag`);
  }
  if (!REPOSITORY_RE.test(rest)) throw bad(`"${rest}" is not a repository name (lowercase letters, digits, separators)`);
  const repository = registry === 'docker.io' && !rest.includes('/') ? `library/${rest}` : rest;
  return { registry, repository, tag: tag ?? (digest ? undefined : 'latest'), digest };
}

/** Checks a list of insecure registries (`host` or `host:port` each); returns it normalized. */
export function parseRegistryList(list: string): string[] {
  const out = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const r of out) if (!DOMAIN_RE.test(r)) throw new NsError('invalid_config', `"${r}" is not a registry host or host:port`);
  return out;
}

/** Whether TLS verification is off for `registry` (host:port): listed as is, or its host listed without a port. */
export function isInsecureRegistry(registry: string, insecure: readonly string[]): boolean {
  const host = registry.replace(/:[0-9]+$/, '');
  return insecure.some((r) => r === registry || r === host);
}

/**
 * Imports an OCI / Docker image as a bootable image (or finds it in the cache): the image's root
 * file system with the agent as init, the host's kernel, the base recipe's initramfs. Cached as
 * `<cache>/images/oci-<digest16>-<agent>-<boot>-<disk>m`, keyed by the image's digest (the
 * registry's manifest digest, or the archive's sha256), the agent version, a hash of the boot parts
 * (kernel version, the base recipe's init and modules, OCI_IMPORT_VERSION) and the disk size.
 *
 * Errors: `bad_request` (a reference that does not parse), `image_not_found`, `registry_auth_failed`,
 * `registry_unreachable`, `image_invalid` (no linux/amd64 image, not an image archive, layers that
 * do not unpack), `disk_too_small`. A failed import leaves nothing behind.
 */
export async function importImage(opts: ImportImageOptions): Promise<ImportedImageInfo> {
  const { progress } = opts;
  if (!Number.isInteger(opts.diskSizeMiB) || opts.diskSizeMiB < 1) throw new NsError('bad_request', `diskSizeMiB must be a positive integer, got ${opts.diskSizeMiB}`);
  const { recipe, dir: recipeDir } = loadRecipe(opts.imagesDir, BOOT_RECIPE);
  const kernel = await findKernel(recipe.kernel.package);
  const source = resolveSource(opts);
  const digest = await progress.step(`${source.describe} (digest)`, () => source.digest());
  const agent = await buildAgent(opts.agentDir, opts.cacheDir, progress);
  const boot = new Hasher()
    .add('importer', OCI_IMPORT_VERSION)
    .add('kernel', `${kernel.release} ${kernel.packageVersion}`)
    .add('modules', recipe.kernel)
    .add('init', fs.readFileSync(path.join(recipeDir, 'init')))
    .hex(8);
  const digest16 = digest.replace(/^sha256:/, '').slice(0, 16);
  const imageDir = path.join(opts.cacheDir, 'images', `oci-${digest16}-${agent.version}-${boot}-${opts.diskSizeMiB}m`);
  const manifest = path.join(imageDir, 'image.json');
  if (fs.existsSync(manifest)) {
    progress.info(`image ${path.basename(imageDir)} is cached`);
    return readJson<ImportedImageInfo>(manifest);
  }
  fs.mkdirSync(path.dirname(imageDir), { recursive: true });
  const release = await acquireDirLock(`${imageDir}.lock`, 30 * 60_000, () => progress.info('waiting for another import of this image'));
  try {
    await waitForPrune(opts.cacheDir, () => progress.info('waiting for a cache prune to finish'));
    if (fs.existsSync(manifest)) return readJson<ImportedImageInfo>(manifest);
    const staging = `${imageDir}.tmp`;
    fs.rmSync(staging, { recursive: true, force: true });
    fs.mkdirSync(staging, { mode: 0o755 });
    fs.mkdirSync(path.join(staging, 'work', 'tmp'), { recursive: true, mode: 0o700 });
    try {
      const work = path.join(staging, 'work');
      const layout = path.join(work, 'layout');
      await progress.step(`${source.describe} (copy)`, () => source.copy(digest, layout, path.join(work, 'tmp')));
      const image = readLayout(layout);
      const rootfs = path.join(work, 'rootfs');
      await progress.step(`unpack ${image.layers} layer(s) (umoci)`, () =>
        run('umoci', ['raw', 'unpack', '--image', `${layout}:img`, rootfs], { errorCode: 'image_invalid', timeoutMs: COPY_TIMEOUT_S * 1000 }).catch((err: unknown) => {
          throw wrapError(err, 'unpacking the image layers', 'image_invalid');
        }),
      );
      prepareGuestRoot(rootfs, agent.binary, progress);
      await progress.step(`root filesystem (${opts.diskSizeMiB} MiB ext4 -> qcow2)`, () => rootDisk(rootfs, opts.diskSizeMiB, staging));
      fs.rmSync(work, { recursive: true, force: true });
      const kernelFile = await buildBootFiles(recipe, recipeDir, kernel, staging, progress);
      return commitImage(staging, imageDir, {
        name: `oci-${digest16}`,
        hash: new Hasher().add('digest', digest).add('agent', agent.version).add('boot', boot).hex(),
        dir: imageDir,
        kernel: path.join(imageDir, kernelFile),
        initrd: path.join(imageDir, 'initrd.cpio'),
        rootDisk: path.join(imageDir, 'rootfs.qcow2'),
        cmdline: recipe.kernel.cmdline,
        kernelRelease: kernel.release,
        kernelPackageVersion: kernel.packageVersion,
        agentVersion: agent.version,
        diskSizeMiB: opts.diskSizeMiB,
        defaults: { ...recipe.defaults, diskSizeMiB: opts.diskSizeMiB },
        builtAt: new Date().toISOString(),
        oci: { source: source.describe, digest, configDigest: image.configDigest, config: image.config },
      });
    } catch (err) {
      fs.rmSync(staging, { recursive: true, force: true });
      throw err;
    }
  } finally {
    release();
  }
}

interface ResolvedSource {
  describe: string;
  /** The identity of the content: `sha256:<hex>`. */
  digest(): Promise<string>;
  /** Copies the image (linux/amd64) pinned to `digest` into an OCI layout at `layout`, tag `img`. */
  copy(digest: string, layout: string, tmpDir: string): Promise<void>;
}

function resolveSource(opts: ImportImageOptions): ResolvedSource {
  const src = opts.source;
  // skopeo: our own policy (signatures are not checked: the content is pinned by its digest), the
  // platform named, temporary files in the staging directory
  const global = (tmpDir?: string, timeoutS = INSPECT_TIMEOUT_S) => [
    '--insecure-policy',
    '--override-os',
    PLATFORM.os,
    '--override-arch',
    PLATFORM.architecture,
    '--command-timeout',
    `${timeoutS}s`,
    ...(tmpDir ? ['--tmpdir', tmpDir] : []),
  ];
  if ('archive' in src) {
    const file = path.resolve(src.archive);
    return {
      describe: `archive ${path.basename(file)}`,
      digest: async () => {
        let st: fs.Stats;
        try {
          st = fs.statSync(file);
        } catch (err) {
          throw new NsError('image_invalid', `archive ${path.basename(file)}: ${(err as Error).message}`, { cause: err });
        }
        if (!st.isFile()) throw new NsError('image_invalid', `archive ${path.basename(file)} is not a regular file`);
        return `sha256:${await sha256File(file)}`;
      },
      copy: async (_digest, layout, tmpDir) => {
        const transport = await archiveTransport(file);
        // by a link of our own: skopeo would read a `:` in the path as the start of a reference
        const link = path.join(tmpDir, 'archive.tar');
        fs.symlinkSync(file, link);
        await run('skopeo', [...global(tmpDir, COPY_TIMEOUT_S), 'copy', '-q', `${transport}:${link}`, `oci:${layout}:img`], { errorCode: 'image_invalid' }).catch((err: unknown) => {
          throw wrapError(err, `reading ${transport} ${path.basename(file)}`, 'image_invalid');
        });
      },
    };
  }
  const ref = parseImageRef(src.ref);
  const insecure = isInsecureRegistry(ref.registry, opts.insecureRegistries ?? []);
  const name = `${ref.registry}/${ref.repository}`;
  const what = `image ${src.ref}`;
  return {
    describe: what,
    digest: async () => {
      if (ref.digest) return ref.digest;
      const { stdout } = await withAuth(opts.cacheDir, ref.registry, src.auth, (creds, fds) =>
        skopeo(
          [...global(), 'inspect', '-n', '--format', '{{.Digest}}', `--tls-verify=${!insecure}`, ...creds('--authfile', '--no-creds'), `docker://${name}:${ref.tag}`],
          what,
          fds,
        ),
      );
      const digest = stdout.trim();
      if (!DIGEST_RE.test(digest)) throw new NsError('image_invalid', `${what}: the registry answered a digest "${digest.slice(0, 80)}" that is not sha256`);
      return digest;
    },
    copy: (digest, layout, tmpDir) =>
      withAuth(opts.cacheDir, ref.registry, src.auth, (creds, fds) =>
        skopeo(
          [...global(tmpDir, COPY_TIMEOUT_S), 'copy', '-q', `--src-tls-verify=${!insecure}`, ...creds('--src-authfile', '--src-no-creds'), `docker://${name}@${digest}`, `oci:${layout}:img`],
          what,
          fds,
        ),
      ).then(() => undefined),
  };
}

/**
 * Runs `fn` with the arguments that give skopeo `auth` for `registry`: an auth file (never the
 * password on a command line, where `ps` shows it) that is unlinked before skopeo starts and handed
 * over as an open descriptor (/dev/fd/3), so that no copy of the credentials stays on disk, even
 * after a crash. Without credentials, skopeo is told to use none (not the host's own).
 */
async function withAuth<T>(
  cacheDir: string,
  registry: string,
  auth: RegistryAuth | undefined,
  fn: (creds: (fileFlag: string, noneFlag: string) => string[], fds: number[]) => Promise<T>,
): Promise<T> {
  if (!auth) return fn((_file, none) => [none], []);
  const dir = path.join(cacheDir, 'run');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `oci-auth-${randomBytes(8).toString('hex')}.json`);
  const fd = fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_RDWR, 0o600);
  try {
    fs.unlinkSync(file);
    const token = Buffer.from(`${auth.username}:${auth.password}`).toString('base64');
    fs.writeSync(fd, JSON.stringify({ auths: { [registry]: { auth: token } } }));
    return await fn((flag) => [flag, '/dev/fd/3'], [fd]);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

/** skopeo against a registry, its failures mapped to the import's error codes. */
async function skopeo(args: string[], what: string, fds: number[] = []) {
  try {
    return await run('skopeo', args, { fds, timeoutMs: (COPY_TIMEOUT_S + 60) * 1000 });
  } catch (err) {
    throw registryError(err, what);
  }
}

/** A failure of skopeo against a registry as one of the import's codes (from skopeo's message). */
export function registryError(err: unknown, what: string): NsError {
  const message = err instanceof Error ? err.message : String(err);
  // skopeo's fatal line: `level=fatal msg="..."`
  const said = /msg="((?:[^"\\]|\\.)*)"/.exec(message)?.[1]?.replace(/\\"/g, '"') ?? message;
  const text = `${what}: ${said}`;
  const m = said.toLowerCase();
  if (err instanceof NsError && err.code === 'no_space') return new NsError('no_space', text, { cause: err });
  if (/no image found in (image index|manifest list)|choosing an image from manifest list/.test(m)) {
    return new NsError('image_invalid', `${what}: no ${PLATFORM.os}/${PLATFORM.architecture} image in its manifest list (${said})`, { cause: err });
  }
  if (/invalid reference format/.test(m)) return new NsError('bad_request', text, { cause: err });
  if (/dial tcp|connection refused|no such host|i\/o timeout|timed out|timeout|deadline exceeded|tls|x509|certificate|http response to https client|connection reset|unexpected eof|network is unreachable|no route to host/.test(m)) {
    return new NsError('registry_unreachable', text, { cause: err });
  }
  if (/unauthorized|authentication required|invalid username|incorrect username|denied|forbidden|\b40[13]\b/.test(m)) {
    return new NsError('registry_auth_failed', text, { cause: err });
  }
  if (/manifest unknown|name unknown|blob unknown|not found|\b404\b/.test(m)) return new NsError('image_not_found', text, { cause: err });
  if (/unsupported|invalid|malformed|schema|mime type/.test(m)) return new NsError('image_invalid', text, { cause: err });
  return new NsError('command_failed', text, { cause: err });
}

/** skopeo's transport for a local tar: a `docker save` has manifest.json, an OCI layout index.json and oci-layout. */
async function archiveTransport(file: string): Promise<'docker-archive' | 'oci-archive'> {
  let names: string[];
  try {
    names = (await run('tar', ['-tf', file], { timeoutMs: 10 * 60_000 })).stdout.split('\n').map((n) => n.replace(/^\.\//, ''));
  } catch (err) {
    throw new NsError('image_invalid', `archive ${path.basename(file)} is not a tar archive: ${(err as Error).message}`, { cause: err });
  }
  if (names.includes('manifest.json')) return 'docker-archive';
  if (names.includes('oci-layout') && names.includes('index.json')) return 'oci-archive';
  throw new NsError('image_invalid', `archive ${path.basename(file)} is neither a docker save (manifest.json) nor an OCI layout (oci-layout, index.json)`);
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** What the import needs of the OCI layout skopeo wrote: the platform checked, the run configuration. */
function readLayout(layout: string): { layers: number; configDigest: string; config: OciImageConfig } {
  const blob = (digest: unknown): Record<string, unknown> => {
    if (typeof digest !== 'string' || !DIGEST_RE.test(digest)) throw new NsError('image_invalid', `the image names a blob "${String(digest).slice(0, 80)}" that is not a sha256 digest`);
    return JSON.parse(fs.readFileSync(path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length)), 'utf8')) as Record<string, unknown>;
  };
  try {
    const index = readJson<{ manifests?: Array<{ digest?: string; annotations?: Record<string, string> }> }>(path.join(layout, 'index.json'));
    const entry = index.manifests?.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'img');
    if (!entry) throw new NsError('image_invalid', 'the copied image has no manifest');
    const manifest = blob(entry.digest) as { config?: { digest?: string }; layers?: unknown[] };
    const configDigest = manifest.config?.digest;
    const config = blob(configDigest) as { os?: string; architecture?: string; config?: Record<string, unknown> };
    if ((config.os && config.os !== PLATFORM.os) || (config.architecture && config.architecture !== PLATFORM.architecture)) {
      throw new NsError('image_invalid', `the image is for ${config.os ?? '?'}/${config.architecture ?? '?'}, not ${PLATFORM.os}/${PLATFORM.architecture}`);
    }
    const c = config.config ?? {};
    const strings = (v: unknown): string[] | null => (Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : null);
    const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
    return {
      layers: Array.isArray(manifest.layers) ? manifest.layers.length : 0,
      configDigest: configDigest as string,
      config: {
        env: strings(c.Env) ?? [],
        user: str(c.User),
        workingDir: str(c.WorkingDir),
        entrypoint: strings(c.Entrypoint),
        cmd: strings(c.Cmd),
        exposedPorts: c.ExposedPorts && typeof c.ExposedPorts === 'object' ? Object.keys(c.ExposedPorts) : [],
      },
    };
  } catch (err) {
    if (err instanceof NsError) throw err;
    throw new NsError('image_invalid', `reading the image's manifest and config: ${(err as Error).message}`, { cause: err });
  }
}

const HOSTS = '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n';

/**
 * What the agent needs in a root file system of any distribution (or none): its binary, the mount
 * points it mounts on (which an image may lack: Docker provides them at run time), /workspace, a
 * home for root, /etc/hosts naming localhost and /etc/hostname when the image has none (Docker
 * writes both at run time too). /etc/resolv.conf goes: the agent writes it at boot. Nothing else of
 * the image is changed.
 */
function prepareGuestRoot(rootfs: string, agentBinary: string, progress: Progress): void {
  installAgent(rootfs, agentBinary);
  for (const d of ['/dev', '/proc', '/sys', '/run', '/etc']) mkdirInRoot(rootfs, d);
  mkdirInRoot(rootfs, '/tmp', 0o1777);
  mkdirInRoot(rootfs, '/root', 0o700);
  for (const [file, content] of [
    ['/etc/hosts', HOSTS],
    ['/etc/hostname', 'sandbox\n'],
  ] as const) {
    const p = guestPath(rootfs, file, false);
    if (!lexists(p)) fs.writeFileSync(p, content, { mode: 0o644 });
  }
  fs.rmSync(guestPath(rootfs, '/etc/resolv.conf', false), { recursive: true, force: true });
  if (!['/bin/sh', '/bin/bash'].some((s) => fs.existsSync(guestPath(rootfs, s)))) {
    progress.info('warning: the image has no /bin/sh: commands cannot run in it (files can be read and written)');
  }
}

function lexists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** The root disk, or `disk_too_small` when the tree does not fit `diskSizeMiB`. */
async function rootDisk(rootfs: string, diskSizeMiB: number, out: string): Promise<void> {
  const { stdout } = await run('du', ['-sxk', rootfs], { errorCode: 'image_build_failed' });
  const neededMiB = Math.ceil(Number(stdout.split(/\s/)[0]) / 1024);
  const tooSmall = (why: string) =>
    new NsError('disk_too_small', `the image's root file system (${neededMiB} MiB) does not fit a ${diskSizeMiB} MiB disk${why}: ask for a larger diskSizeMiB`, {
      details: { neededMiB, diskSizeMiB },
    });
  // ext4's own metadata (inode tables, journal) takes a few percent on top
  if (neededMiB > diskSizeMiB) throw tooSmall('');
  try {
    await makeRootDisk(rootfs, diskSizeMiB, out);
  } catch (err) {
    if (/could not allocate|too small|no free space in the filesystem/i.test((err as Error).message)) throw tooSmall(` (with ext4's metadata)`);
    throw err;
  }
}
