import type { CleanupStack, VmHandle } from '@nullspace/runtime';
import type { SandboxContext } from './context.js';
import type { RestoreSource } from './sources.js';

/** Nice value of warm slots until taken: preparing them ahead of demand yields to sandboxes in use. */
export const WARM_NICE = 10;

/** A sandbox's VM restored from a source: files, uid, QEMU, device state (the VM host does the host side). */
export class Restores {
  constructor(private readonly ctx: SandboxContext) {}

  /** Prepares the sandbox's RAM file and disk from `src` and restores its device state. */
  async restore(
    id: string,
    src: RestoreSource,
    allowInternetAccess: boolean,
    cleanup: CleanupStack,
    phases: Record<string, number>,
    allowMissingVolumes = false,
  ): Promise<VmHandle> {
    const t0 = Date.now();
    const vm = await this.launch(id, src, allowInternetAccess, cleanup, allowMissingVolumes, phases);
    phases.launchMs = Date.now() - t0 - (phases.prepareMs ?? 0);
    await this.finish(id, vm, src, phases);
    return vm;
  }

  /** The sandbox's directory, RAM file, overlay and uid, and its QEMU started waiting for a migration. */
  async launch(
    id: string,
    src: RestoreSource,
    allowInternetAccess: boolean,
    cleanup: CleanupStack,
    allowMissingVolumes: boolean,
    phases: Record<string, number> = {},
    warm = false,
  ): Promise<VmHandle> {
    const { devices } = await this.ctx.volumes.devices(src.volumes, src.volumesInState, { allowMissing: allowMissingVolumes });
    return this.ctx.vms.launch(
      {
        id,
        memFile: src.memFile,
        diskBacking: src.diskBacking,
        memoryMiB: src.vm.memoryMiB,
        vcpus: src.vm.vcpus,
        kernel: src.vm.kernel,
        initrd: src.vm.initrd,
        cmdline: src.vm.cmdline,
        diskSizeBytes: src.vm.diskSizeBytes,
        allowInternetAccess,
        volumes: devices,
        nice: warm ? WARM_NICE : 0,
      },
      cleanup,
      phases,
    );
  }

  /** Loads the saved state into a prepared VM and runs it; plugs volumes a template's state lacks. */
  async finish(id: string, vm: VmHandle, src: RestoreSource, phases: Record<string, number>): Promise<void> {
    await this.ctx.store.patch(id, { pid: vm.pid, vmSpec: vm.spec });
    let t = Date.now();
    await vm.restoreState(src.stateFile);
    phases.restoreMs = Date.now() - t;
    t = Date.now();
    // a template has no volume devices in its saved state: they are hot-plugged now
    for (const d of vm.spec.volumes ?? []) if (!d.onCmdline) await vm.plugVolume(d);
    if (vm.spec.volumes?.length) {
      await this.ctx.store.patch(id, { vmSpec: vm.spec });
      phases.plugMs = Date.now() - t;
    }
  }
}
