import fs from 'node:fs';
import path from 'node:path';
import type { HostProfile } from './host.js';
import { isZombie } from './fsutil.js';

/**
 * The guest's device set. A memory snapshot restores only into a VM with exactly the same devices,
 * so this is recorded in every snapshot; bump the version whenever `qemuArgs` changes a device.
 */
export const DEVICE_SET = 'pc/virtio-blk,virtio-net,virtio-serial(agent),virtio-rng,vmgenid,serial;v1';

export const AGENT_PORT_NAME = 'org.nullspace.agent.0';
export const GUEST_MAC = '52:54:00:6e:73:01';

export interface VmSpec {
  /** Sandbox id (also shown in `ps` through -name). */
  id: string;
  memoryMiB: number;
  vcpus: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** Guest RAM lives in this file (mapped shared), so it can be snapshotted copy-on-write. */
  ramFile: string;
  /** The root disk: the active qcow2 overlay (changes with every snapshot of a running VM). */
  disk: string;
  /** QEMU block node name of the active overlay ('root' when QEMU opened `disk` itself). */
  diskNode?: string | undefined;
  /** Virtual size of the root disk (for new overlays). */
  diskSizeBytes: number;
  /** Directory (0700) for this VM's sockets, pid file and log. Keep its path short (unix socket limit). */
  runDir: string;
  /** Keep the guest console in runDir/console.log (template builds); otherwise it is discarded. */
  consoleLog: boolean;
  /** false: the NIC exists but user-mode networking is restricted (no outbound traffic at all). */
  allowInternetAccess: boolean;
  /** Unprivileged uid (= gid) QEMU switches to once it has opened its files; undefined: stay root. */
  runAsUid?: number | undefined;
  /** Group QEMU switches to (default: the uid): the shared-volumes group when it mounts volumes. */
  runAsGid?: number | undefined;
  /** Shared volumes: host directories exported over virtio-9p. */
  volumes?: VolumeDevice[] | undefined;
}

/**
 * A shared volume as a VM device: a 9p export of `hostPath` with mount tag `tag` at a fixed PCI slot.
 * `onCmdline`: the device exists from the start (a restore of a snapshot taken with it); otherwise
 * only its backend does and the device is hot-plugged after the restore (`Vm.plugVolume`).
 */
export interface VolumeDevice {
  tag: string;
  hostPath: string;
  slot: number;
  onCmdline: boolean;
}

/** First PCI slot used by volume devices (the base device set ends well before it). */
export const VOLUME_FIRST_SLOT = 0x10;

/** The device set of a VM with these volumes (recorded in snapshots). */
export function deviceSetWith(volumes: readonly VolumeDevice[] | undefined): string {
  return volumes?.length ? `${DEVICE_SET};9p@${volumes.map((v) => v.slot.toString(16)).join(',')}` : DEVICE_SET;
}

export function volumeDeviceArgs(v: VolumeDevice): Record<string, string> {
  return { driver: 'virtio-9p-pci', id: `dev-${v.tag}`, fsdev: `fs-${v.tag}`, mount_tag: v.tag, bus: 'pci.0', addr: `0x${v.slot.toString(16)}` };
}

export function vmPaths(runDir: string) {
  return {
    qmp: path.join(runDir, 'qmp.sock'),
    agent: path.join(runDir, 'agent.sock'),
    log: path.join(runDir, 'qemu.log'),
    pid: path.join(runDir, 'qemu.pid'),
    console: path.join(runDir, 'console.log'),
    migrationOut: path.join(runDir, 'mig-out.sock'),
    migrationIn: path.join(runDir, 'mig-in.sock'),
  };
}

/** The QEMU command line of a VM. `incoming`: wait for a migration stream instead of booting. */
export function qemuArgs(profile: HostProfile, spec: VmSpec, incoming: boolean): string[] {
  const p = vmPaths(spec.runDir);
  const accel = profile.accel === 'kvm' ? 'kvm' : `tcg,thread=multi${profile.tcgBufferMiB ? `,tb-size=${profile.tcgBufferMiB}` : ''}`;
  const args = [
    '-name', `nullspace-${spec.id}`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    // seccomp; set*id calls must stay allowed for -runas (QEMU 7.2 applies the filter first), and are
    // harmless once it has dropped to an unprivileged uid
    '-sandbox', `on,obsolete=deny,elevateprivileges=${spec.runAsUid !== undefined ? 'allow' : 'deny'},spawn=deny,resourcecontrol=deny`,
    '-machine', `${profile.machine},memory-backend=ram0`,
    '-accel', accel,
    '-cpu', profile.cpuModel,
    '-smp', String(spec.vcpus),
    '-m', `${spec.memoryMiB}M`,
    '-object', `memory-backend-file,id=ram0,size=${spec.memoryMiB}M,mem-path=${spec.ramFile},share=on,prealloc=off`,
    '-kernel', spec.kernel,
    '-initrd', spec.initrd,
    '-append', spec.cmdline,
    '-blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'root', discard: 'unmap', file: { driver: 'file', filename: spec.disk } }),
    '-device', 'virtio-blk-pci,drive=root,id=vda',
    '-netdev', `user,id=net0,restrict=${spec.allowInternetAccess ? 'off' : 'on'}`,
    '-device', `virtio-net-pci,netdev=net0,mac=${GUEST_MAC}`,
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,id=agent0,path=${p.agent},server=on,wait=off`,
    '-device', `virtserialport,bus=vser0.0,chardev=agent0,name=${AGENT_PORT_NAME}`,
    '-object', 'rng-random,id=rng0,filename=/dev/urandom',
    '-device', 'virtio-rng-pci,rng=rng0',
    '-device', 'vmgenid,guid=auto',
    '-chardev', spec.consoleLog ? `file,id=console0,path=${p.console}` : 'null,id=console0',
    '-serial', 'chardev:console0',
    '-qmp', `unix:${p.qmp},server=on,wait=off`,
    '-pidfile', p.pid,
    '-msg', 'timestamp=on',
  ];
  for (const v of spec.volumes ?? []) {
    // mapped-xattr: guest ownership and modes live in xattrs; host files are group-shared (0660/0770)
    args.push('-fsdev', `local,id=fs-${v.tag},path=${v.hostPath},security_model=mapped-xattr,fmode=0660,dmode=0770`);
    if (v.onCmdline) {
      const d = volumeDeviceArgs(v);
      args.push('-device', `${d.driver},id=${d.id},fsdev=${d.fsdev},mount_tag=${d.mount_tag},bus=${d.bus},addr=${d.addr}`);
    }
  }
  if (spec.runAsUid !== undefined) args.push('-runas', `${spec.runAsUid}:${spec.runAsGid ?? spec.runAsUid}`);
  if (incoming) args.push('-incoming', 'defer');
  return args;
}

/** Unix socket paths are limited to 107 bytes. */
export function checkRunDir(runDir: string): void {
  const longest = vmPaths(runDir).migrationOut;
  if (Buffer.byteLength(longest) > 100) {
    throw new Error(`run directory ${runDir} is too long for unix sockets (${Buffer.byteLength(longest)} > 100 bytes); use a shorter data dir`);
  }
}

/** Pids of running (not zombie) QEMU processes whose command line contains `needle` (e.g. a data dir). */
export function qemuPidsMatching(needle: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.startsWith('qemu-system') && cmd.includes(needle) && !isZombie(Number(p))) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Reads the -name argument of a running process, to recognise our own QEMU after a restart. */
export function processVmId(pid: number): string | undefined {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const i = argv.indexOf('-name');
    const name = i >= 0 ? argv[i + 1] : undefined;
    return name?.startsWith('nullspace-') ? name.slice('nullspace-'.length) : undefined;
  } catch {
    return undefined;
  }
}
