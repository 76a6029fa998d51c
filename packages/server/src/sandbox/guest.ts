import { randomBytes } from 'node:crypto';
import { errorMessage, NsError, wrapError, type GuestAgent, type OpRequest, type OpResult, type VmHandle } from '@nullspace/runtime';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { VolumeAttachment } from '../store/volumes.js';
import type { SandboxContext } from './context.js';

/** Typed calls of the guest agent that the lifecycle makes (spec/agent.json `ops`, types generated from it). */
export const guest = {
  /**
   * sys.init: the host's clock and fresh host entropy, with the given identity and default
   * environment; then the user processes run, unless `thaw: false` (the answer says whether they
   * were thawed and whether they are frozen).
   */
  init(
    agent: GuestAgent,
    identity: Required<Pick<OpRequest<'sys.init'>, 'hostname' | 'machineId' | 'bootId' | 'envs'>>,
    opts: { thaw?: false } = {},
  ): Promise<OpResult<'sys.init'>> {
    return agent.call('sys.init', { timeMs: Date.now(), entropy: randomBytes(64).toString('base64'), ...identity, ...opts });
  },
  info(agent: GuestAgent): Promise<OpResult<'sys.info'>> {
    return agent.call('sys.info');
  },
  freeze(agent: GuestAgent): Promise<OpResult<'sys.freeze'>> {
    return agent.call('sys.freeze', {}, 10_000);
  },
  thaw(agent: GuestAgent): Promise<OpResult<'sys.thaw'>> {
    return agent.call('sys.thaw', {}, 10_000);
  },
  /** An unrecorded shell start: the guest's cold process-start paths, paid ahead of demand. */
  warmup(agent: GuestAgent): Promise<OpResult<'sys.warmup'>> {
    return agent.call('sys.warmup', { cmd: 'true', timeoutMs: 20_000 }, 30_000);
  },
  mount(agent: GuestAgent, v: { tag: string; path: string }, timeoutMs?: number): Promise<OpResult<'vol.mount'>> {
    return agent.call('vol.mount', { tag: v.tag, path: v.path, ...(timeoutMs !== undefined ? { timeoutMs } : {}) }, 30_000);
  },
  unmount(agent: GuestAgent, path: string): Promise<OpResult<'vol.unmount'>> {
    return agent.call('vol.unmount', { path }, 30_000);
  },
};

/**
 * The guest side of a sandbox's lifecycle: its identity and volumes applied, and the agent of a
 * running sandbox handed to file and command requests (reconnecting when the session was lost).
 */
export class Guests {
  constructor(private readonly ctx: SandboxContext) {}

  /** sys.init with the sandbox's identity, clock, entropy and environment; then the user processes run. */
  async init(rec: SandboxRecord, agent: GuestAgent): Promise<void> {
    const r = await guest.init(agent, { hostname: rec.id, machineId: rec.identity.machineId, bootId: rec.identity.bootId, envs: rec.envs });
    this.ctx.log.debug({ sandboxId: rec.id, timingsUs: r.timingsUs }, 'sys.init');
  }

  /**
   * Mounts a sandbox's volumes in the guest (before its user processes may run); those deleted before
   * it was created from its snapshot have a placeholder device and stay unmounted.
   */
  async mountVolumes(rec: SandboxRecord, agent: GuestAgent): Promise<void> {
    for (const v of rec.volumes) {
      if (!(await this.ctx.volumes.exists(v))) continue;
      try {
        await guest.mount(agent, v, 20_000);
      } catch (err) {
        throw wrapError(err, `mounting volume ${v.name} at ${v.path}`, 'vm_start_failed');
      }
    }
  }

  /**
   * Unmounts a sandbox's volumes before a capture (QEMU cannot migrate a mounted 9p share). If one
   * is busy, the others are mounted again and the capture is refused with 409 `volume_busy`.
   */
  async unmountVolumes(rec: SandboxRecord, agent: GuestAgent): Promise<void> {
    const done: VolumeAttachment[] = [];
    for (const v of rec.volumes) {
      try {
        await guest.unmount(agent, v.path);
        done.push(v);
      } catch (err) {
        for (const d of done) await guest.mount(agent, d).catch(() => {});
        if (err instanceof NsError && err.code === 'volume_busy') {
          throw new NsError('volume_busy', `sandbox ${rec.id}: ${err.message.replace(/^vol\.unmount: /, '')}; close the files on the volume and retry`, {
            details: { volume: v.name, path: v.path },
          });
        }
        throw err;
      }
    }
  }

  /** Connects to the agent and applies the sandbox's identity, clock, entropy and environment. */
  async connectAndInit(rec: SandboxRecord, vm: VmHandle, timeoutMs: number): Promise<GuestAgent> {
    const agent = await vm.connectAgent(timeoutMs);
    // a reconnection may follow an interrupted capture: volumes back (idempotent) before any thaw
    await this.mountVolumes(rec, agent);
    await this.init(rec, agent);
    return agent;
  }

  /** The agent of a running sandbox, reconnecting (and re-initializing) when the session was lost. */
  async agent(id: string, rec: SandboxRecord): Promise<GuestAgent> {
    if (rec.state !== 'running') {
      throw new NsError('sandbox_not_running', `sandbox ${id} is ${rec.state}`, { details: { state: rec.state } });
    }
    return this.liveAgent(rec);
  }

  /**
   * The agent for starting a process or for file work, once no capture of the sandbox is under way:
   * a capture freezes user processes (the agent refuses new ones) and unmounts volumes (a file
   * written under one would land on the root disk, hidden once it is mounted again). Such a
   * request waits for the capture; one already under way counts until `done` and the capture waits
   * for it first. In a sandbox with volumes that is every file request (a guest symlink may lead
   * into a volume, whatever the path says); in one without, file work is never held up.
   */
  async agentFor(rec: SandboxRecord, use: 'start' | 'files'): Promise<{ agent: GuestAgent; done: () => void }> {
    const gated = use === 'start' || rec.volumes.length > 0;
    const done = gated ? await this.ctx.gate.enter(rec.id) : () => {};
    try {
      // (the record again: the sandbox may have moved on while the request waited at the gate)
      return { agent: await this.agent(rec.id, (await this.ctx.store.get(rec.id)) ?? rec), done };
    } catch (err) {
      done();
      throw err;
    }
  }

  /** The agent of a sandbox's live VM, whatever its state (lifecycle operations in progress use it). */
  async liveAgent(rec: SandboxRecord): Promise<GuestAgent> {
    const id = rec.id;
    const live = this.ctx.live.get(id);
    if (!live?.attached) throw new NsError('sandbox_not_running', `sandbox ${id} has no VM on this server`, { details: { state: rec.state } });
    const vm = live.vm;
    const current = vm.agent;
    if (current && !live.needsThaw) return current;
    live.connecting ??= (async () => {
      if (!current) return this.connectAndInit(rec, vm, 10_000); // sys.init thaws too
      await guest.thaw(current).catch((err: unknown) => {
        throw new NsError('agent_unavailable', `its processes are still frozen after an interrupted snapshot and did not thaw: ${errorMessage(err)}`);
      });
      return current;
    })()
      .then((agent) => {
        live.needsThaw = false;
        return agent;
      })
      .finally(() => {
        live.connecting = undefined;
      });
    try {
      return (await live.connecting) as GuestAgent;
    } catch (err) {
      if (vm.gone) throw new NsError('sandbox_not_running', `sandbox ${id}: its VM exited`);
      throw wrapError(err, `sandbox ${id}`, 'agent_unavailable');
    }
  }
}
