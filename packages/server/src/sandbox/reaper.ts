import { errorMessage } from '@nullspace/runtime';
import type { SandboxContext } from './context.js';
import type { Hibernation } from './hibernate.js';
import type { Kills } from './kill.js';

/**
 * Timeouts: every running sandbox has `expiresAt`; once it passes, the sandbox is killed or (with
 * `onTimeout: hibernate`) hibernated. Paused sandboxes past NULLSPACE_PAUSED_RETENTION_MS are killed;
 * ended records past NULLSPACE_ENDED_RETENTION_MS are pruned now and then.
 */
export class Reaper {
  private timer: NodeJS.Timeout | undefined;
  /** Sandboxes whose timeout-hibernation failed, and when to try again. */
  private readonly hibernateRetryAt = new Map<string, number>();

  constructor(
    private readonly ctx: SandboxContext,
    private readonly kills: Kills,
    private readonly hibernation: Hibernation,
  ) {
    kills.onKill = (id) => this.hibernateRetryAt.delete(id);
  }

  start(): void {
    this.timer = setInterval(() => void this.reap(), this.ctx.config.reaperIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private async reap(): Promise<void> {
    try {
      await this.reapOnce();
    } catch (err) {
      if (!this.ctx.closing) this.ctx.log.error({ err: errorMessage(err) }, 'timeout reaper failed');
    }
  }

  private async reapOnce(): Promise<void> {
    const { ctx } = this;
    const now = Date.now();
    const expired = await ctx.store.expired(now);
    if (expired.length) await ctx.faults.wait('reaper', () => ctx.closing);
    for (const rec of expired) {
      if (ctx.closing) return;
      if (ctx.locks.busy(rec.id)) continue;
      const why = `timeout: no setTimeout within ${rec.timeoutMs} ms`;
      if ((this.hibernateRetryAt.get(rec.id) ?? 0) > now) continue;
      try {
        // checked again under the lock: an earlier sandbox of the list may have taken seconds, during
        // which this one's timeout may have been extended (or it was killed, or hibernated)
        await ctx.locks.run(rec.id, async () => {
          const cur = await ctx.store.get(rec.id);
          if (cur?.state !== 'running' || cur.expiresAt === null || cur.expiresAt > Date.now()) return;
          if (cur.onTimeout === 'hibernate') await this.hibernation.hibernateHeld(rec.id, why, { byTimeout: true });
          else await this.kills.killHeld(rec.id, why, { byTimeout: true });
        });
        this.hibernateRetryAt.delete(rec.id);
      } catch (err) {
        // a failed hibernation (volume busy, disk full) keeps the sandbox and its state: retried later
        if (rec.onTimeout === 'hibernate') this.hibernateRetryAt.set(rec.id, now + 30_000);
        ctx.log.error({ sandboxId: rec.id, err: errorMessage(err) }, `${rec.onTimeout === 'hibernate' ? 'hibernating' : 'killing'} an expired sandbox failed`);
      }
    }
    if (ctx.config.pausedRetentionMs > 0) {
      for (const rec of await ctx.store.pausedBefore(now - ctx.config.pausedRetentionMs)) {
        if (ctx.closing) return;
        if (ctx.locks.busy(rec.id)) continue;
        const why = `paused for longer than the retention of ${ctx.config.pausedRetentionMs} ms`;
        await ctx.locks
          .run(rec.id, async () => {
            const cur = await ctx.store.get(rec.id);
            if (cur?.state !== 'paused' || cur.pausedAt === null || cur.pausedAt > Date.now() - ctx.config.pausedRetentionMs) return;
            await this.kills.killHeld(rec.id, why);
          })
          .catch((err: unknown) => ctx.log.error({ sandboxId: rec.id, err: errorMessage(err) }, 'killing a paused sandbox past its retention failed'));
      }
    }
    if (ctx.config.endedRetentionMs > 0 && Math.random() < 0.01) await ctx.store.pruneEnded(now - ctx.config.endedRetentionMs);
  }
}
