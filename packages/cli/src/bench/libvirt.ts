/**
 * libvirt, the usual way to drive QEMU, on the same image and the same QEMU: boot, `virsh save` /
 * `virsh restore`, and `virsh snapshot-create-as --memspec` (external memory + disk snapshot of a
 * running domain). Skipped (with the reason) when libvirtd is not reachable.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AgentClient, createOverlay, type TemplateInfo } from '@nullspace/runtime';

const URI = 'qemu:///system';

function virsh(args: string[], timeoutMs = 600_000): string {
  const r = spawnSync('virsh', ['-c', URI, ...args], { encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) throw new Error(`virsh ${args[0]}: ${(r.stderr || r.stdout || String(r.error)).trim()}`);
  return r.stdout;
}

/** Why libvirt cannot be used here, or undefined when it can. */
export function libvirtUnavailable(): string | undefined {
  const r = spawnSync('virsh', ['-c', URI, 'version'], { encoding: 'utf8', timeout: 20_000 });
  if (r.error) return 'virsh is not installed (scripts/bench.sh installs libvirt)';
  if (r.status !== 0) return `libvirtd is not reachable: ${(r.stderr || '').trim().split('\n')[0]}`;
  return undefined;
}

function domainXml(name: string, t: TemplateInfo, disk: string, agentSock: string): string {
  return `<domain type='${t.requirements.accel === 'kvm' ? 'kvm' : 'qemu'}'>
  <name>${name}</name>
  <memory unit='MiB'>${t.memoryMiB}</memory>
  <vcpu>${t.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='${t.requirements.machine}'>hvm</type>
    <kernel>${t.image.kernel}</kernel>
    <initrd>${t.image.initrd}</initrd>
    <cmdline>${t.image.cmdline}</cmdline>
  </os>
  ${t.requirements.accel === 'kvm' ? "<cpu mode='host-passthrough'/>" : "<cpu mode='maximum'/>"}
  <on_reboot>destroy</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <channel type='unix'>
      <source mode='bind' path='${agentSock}'/>
      <target type='virtio' name='org.nullspace.agent.0'/>
    </channel>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
    <video><model type='none'/></video>
  </devices>
</domain>`;
}

async function agentAnswers(sock: string, timeoutMs: number): Promise<void> {
  const agent = await AgentClient.connect(sock, { timeoutMs });
  try {
    await agent.call('sys.info');
  } finally {
    agent.close();
  }
}

export interface LibvirtResult {
  bootMs: number;
  saveMs: number;
  saveBytes: number;
  /** `virsh restore` alone (returns once the domain runs). */
  restoreCmdMs: number;
  restoreMs: number;
  snapshotMs: number;
  snapshotBytes: number;
}

export async function libvirtBaselines(t: TemplateInfo, scratch: string): Promise<LibvirtResult> {
  const dir = path.join(scratch, 'libvirt');
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const name = `nullspace-bench-${process.pid}`;
  const disk = path.join(dir, 'disk.qcow2');
  const sock = path.join(dir, 'agent.sock');
  await createOverlay(t.image.rootDisk, disk);
  fs.chmodSync(disk, 0o666);
  const xml = path.join(dir, 'domain.xml');
  fs.writeFileSync(xml, domainXml(name, t, disk, sock));
  virsh(['define', xml]);
  try {
    let t0 = performance.now();
    virsh(['start', name]);
    await agentAnswers(sock, 180_000);
    const bootMs = performance.now() - t0;

    const saveFile = path.join(dir, 'saved');
    t0 = performance.now();
    virsh(['save', name, saveFile]);
    const saveMs = performance.now() - t0;
    const saveBytes = fs.statSync(saveFile).size;
    t0 = performance.now();
    virsh(['restore', saveFile]);
    const restoreCmdMs = performance.now() - t0;
    await agentAnswers(sock, 60_000);
    const restoreMs = performance.now() - t0;

    const memFile = path.join(dir, 'snap.mem');
    t0 = performance.now();
    virsh(['snapshot-create-as', name, 's1', '--memspec', `file=${memFile},snapshot=external`, '--diskspec', `vda,snapshot=external,file=${path.join(dir, 'snap-disk.qcow2')}`, '--atomic']);
    const snapshotMs = performance.now() - t0;
    const snapshotBytes = fs.statSync(memFile).size;
    return { bootMs, saveMs, saveBytes, restoreCmdMs, restoreMs, snapshotMs, snapshotBytes };
  } finally {
    spawnSync('virsh', ['-c', URI, 'destroy', name], { encoding: 'utf8' });
    spawnSync('virsh', ['-c', URI, 'undefine', name, '--snapshots-metadata'], { encoding: 'utf8' });
    try {
      execFileSync('rm', ['-rf', dir]);
    } catch {
      /* best effort */
    }
  }
}
