import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { NsError } from './errors.js';
import { run } from './exec.js';
import { Hasher } from './hash.js';
import { readJson, writeFileAtomic } from './fsutil.js';

export type Accel = 'kvm' | 'tcg';

/**
 * What this host runs VMs with. Everything in it must be equal for a memory snapshot taken on one
 * host to restore on another (the snapshot records it; see `compatibility()`).
 */
export interface HostProfile {
  qemuBinary: string;
  qemuVersion: string;
  /** Concrete versioned machine type, e.g. pc-i440fx-7.2 (never an alias, whose meaning moves). */
  machine: string;
  accel: Accel;
  cpuModel: string;
  /** For cpuModel "host": the host CPU's model name and flags hash (snapshots then need the same CPU). */
  hostCpu: string;
  /**
   * TCG only: the translation buffer of each VM in MiB (QEMU's `tb-size`); undefined: QEMU's default.
   * Not part of a snapshot's requirements (it is not guest state).
   */
  tcgBufferMiB?: number | undefined;
}

export const QEMU_BINARY = 'qemu-system-x86_64';

export async function qemuVersion(binary = QEMU_BINARY): Promise<string> {
  let out: string;
  try {
    out = (await run(binary, ['--version'])).stdout;
  } catch (err) {
    throw new NsError('qemu_missing', `${binary} is not installed (apt-get install qemu-system-x86 qemu-utils)`, { cause: err });
  }
  const m = /version (\d+\.\d+\.\d+)/.exec(out);
  if (!m?.[1]) throw new NsError('qemu_missing', `cannot read the version of ${binary}: ${out.trim()}`);
  return m[1];
}

export async function resolveMachineType(alias: string, binary = QEMU_BINARY): Promise<string> {
  const out = (await run(binary, ['-machine', 'help'])).stdout;
  for (const line of out.split('\n')) {
    const [name] = line.trim().split(/\s+/);
    if (name !== alias) continue;
    const m = /\(alias of ([^)]+)\)/.exec(line);
    return m?.[1] ?? alias;
  }
  throw new NsError('qemu_missing', `${binary} does not know machine type "${alias}"`);
}

function hostCpuIdentity(): string {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const model = /model name\s*:\s*(.*)/.exec(info)?.[1] ?? 'unknown';
    const flags = /flags\s*:\s*(.*)/.exec(info)?.[1] ?? '';
    return `${model.trim()} [flags ${new Hasher().add('flags', flags.trim()).hex(12)}]`;
  } catch {
    return 'unknown';
  }
}

export interface ProbeKernel {
  kernel: string;
  initrd: string;
}

interface ProbeVerdict {
  key: string;
  accel: Accel;
  reason: string;
  probedAt: string;
}

/**
 * Decides the accelerator. KVM is used only when a guest was seen to run under it: on some hosts
 * /dev/kvm exists but cannot run ordinary guests (e.g. a PVM nested hypervisor, where a probe spins
 * forever), so the probe boots our initramfs in probe mode with a deadline and kills it on expiry.
 * The verdict is remembered per host kernel and QEMU version in `cacheDir`.
 */
export async function detectAccel(opts: {
  forced?: Accel | undefined;
  cacheDir: string;
  /**
   * The KVM device looked for (default /dev/kvm). A path that does not exist makes this host count
   * as one without KVM (a laptop VM, a container): NULLSPACE_KVM_DEVICE, used by tests.
   */
  kvmDevice?: string | undefined;
  probe?: ProbeKernel | undefined;
  log: (msg: string) => void;
  qemuBinary?: string;
  deadlineMs?: number;
}): Promise<{ accel: Accel; reason: string }> {
  if (opts.forced) return { accel: opts.forced, reason: 'forced by NULLSPACE_ACCEL' };
  const device = opts.kvmDevice ?? '/dev/kvm';
  try {
    fs.accessSync(device, fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: `${device} is not available` };
  }
  const binary = opts.qemuBinary ?? QEMU_BINARY;
  const key = `${os.release()} qemu ${await qemuVersion(binary)}`;
  const file = path.join(opts.cacheDir, 'accel-probe.json');
  if (fs.existsSync(file)) {
    const v = readJson<ProbeVerdict>(file);
    if (v.key === key) return { accel: v.accel, reason: `${v.reason} (probed ${v.probedAt})` };
  }
  if (!opts.probe) return { accel: 'tcg', reason: '/dev/kvm exists but no probe image is built yet' };
  const ok = await probeKvm(binary, opts.probe, opts.deadlineMs ?? 15_000);
  const verdict: ProbeVerdict = {
    key,
    accel: ok ? 'kvm' : 'tcg',
    reason: ok ? 'a probe guest ran under KVM' : 'a probe guest did not run under KVM within the deadline (KVM present but unusable)',
    probedAt: new Date().toISOString(),
  };
  fs.mkdirSync(opts.cacheDir, { recursive: true });
  writeFileAtomic(file, JSON.stringify(verdict, null, 2));
  return { accel: verdict.accel, reason: verdict.reason };
}

function probeKvm(binary: string, probe: ProbeKernel, deadlineMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(
      binary,
      ['-nodefaults', '-no-user-config', '-display', 'none', '-machine', 'pc,accel=kvm', '-cpu', 'host', '-m', '256M', '-no-reboot',
        '-kernel', probe.kernel, '-initrd', probe.initrd, '-append', 'console=ttyS0 quiet panic=-1 nullspace.probe=1', '-serial', 'stdio'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let settled = false;
    const finish = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), deadlineMs);
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('NULLSPACE_PROBE_OK')) finish(true);
    });
    child.on('error', () => finish(false));
    child.on('exit', () => finish(out.includes('NULLSPACE_PROBE_OK')));
  });
}

export async function hostProfile(opts: {
  accel: Accel;
  cpuModel?: string | undefined;
  qemuBinary?: string;
  tcgBufferMiB?: number | undefined;
}): Promise<HostProfile> {
  const qemuBinary = opts.qemuBinary ?? QEMU_BINARY;
  const cpuModel = opts.cpuModel ?? (opts.accel === 'kvm' ? 'host' : 'max');
  return {
    qemuBinary,
    qemuVersion: await qemuVersion(qemuBinary),
    machine: await resolveMachineType('pc', qemuBinary),
    accel: opts.accel,
    cpuModel,
    hostCpu: cpuModel === 'host' ? hostCpuIdentity() : '',
    ...(opts.tcgBufferMiB ? { tcgBufferMiB: opts.tcgBufferMiB } : {}),
  };
}
