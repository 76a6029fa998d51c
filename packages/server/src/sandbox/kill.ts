import type { SandboxRecord } from '../store/sandboxes.js';
import type { SandboxContext } from './context.js';
import { isTerminal } from './lifecycle.js';

/** Ending sandboxes: a kill is recorded (killing), its VM and files go, then it is killed. */
export class Kills {
  /** Told when a sandbox is being killed (the reaper forgets its retry schedule). */
  onKill: (id: string) => void = () => {};

  constructor(private readonly ctx: SandboxContext) {}

  async kill(id: string, reason = 'killed by request'): Promise<SandboxRecord> {
    await this.ctx.record(id);
    // a disk chain streamed in the background holds the sandbox's lock: a kill does not wait for it
    const live = this.ctx.live.get(id);
    if (live?.hasVm) await live.vm.cancelStream();
    return this.ctx.locks.run(id, () => this.killHeld(id, reason));
  }

  /** `kill`, for a caller that holds the sandbox's lock. Killing twice is a no-op. */
  async killHeld(id: string, reason: string, opts: { byTimeout?: boolean } = {}): Promise<SandboxRecord> {
    let rec = await this.ctx.record(id);
    if (isTerminal(rec.state)) return rec;
    rec = await this.ctx.lifecycle.apply(rec, { type: 'kill', reason, byTimeout: opts.byTimeout });
    this.onKill(id);
    const done = await this.ctx.lifecycle.apply(rec, { type: 'killed', at: Date.now(), reason });
    this.ctx.log.info({ sandboxId: id, reason }, 'sandbox killed');
    return done;
  }
}
