import type { EventLog } from '../events/log.js';
import type { SandboxRecord, SandboxStore } from '../store/sandboxes.js';
import { next, type Effect, type LifecycleEvent, type Publish, type Step } from './lifecycle.js';

/** How the effects of lifecycle steps are carried out (wired by the manager). */
export interface EffectHandlers {
  /** The sandbox's VM, files, uid claim and admission slot go (idempotent). */
  teardown(rec: SandboxRecord): Promise<void>;
  dropHibernations(id: string): Promise<void>;
  dropMetrics(id: string): void;
  pruneHibernations(id: string): Promise<void>;
  layersReleased(): void;
}

/**
 * Carries out lifecycle steps: the one place where a sandbox's state changes. `apply` asks the pure
 * `next` (lifecycle.ts) what `event` does from the record's state, runs the step's `before` effects,
 * persists the move (state, patch, event row and the event users see, with its webhook outbox rows,
 * in one transaction; `sandbox_busy` when the stored state moved meanwhile), then runs its `after`
 * effects. It is also the one place lifecycle events are published (`GET /v1/events`, webhooks).
 */
export class Lifecycle {
  constructor(
    private readonly store: SandboxStore,
    private readonly effects: EffectHandlers,
    private readonly events: EventLog,
  ) {}

  async apply(rec: SandboxRecord, event: LifecycleEvent): Promise<SandboxRecord> {
    return (await this.applyStep(rec, event)).rec;
  }

  /** `apply`, also returning the step taken (recovery reads `adopt`). */
  async applyStep(rec: SandboxRecord, event: LifecycleEvent): Promise<{ rec: SandboxRecord; step: Step }> {
    const step = next(rec, event);
    for (const e of step.before) await this.run(e, rec);
    const out = await this.events.transaction(async () => {
      const moved = step.persist ? await this.store.transition(rec.id, step.from, step.to, step.reason, step.patch) : ((await this.store.get(rec.id)) ?? rec);
      if (step.publish) await this.publish(moved, step.publish);
      return moved;
    });
    for (const e of step.after) await this.run(e, rec);
    return { rec: out, step };
  }

  private async publish(rec: SandboxRecord, p: Publish): Promise<void> {
    const data = p.type === 'created' ? { template: rec.template, snapshotId: rec.snapshotId, forkedFrom: rec.forkedFrom, metadata: rec.metadata } : p.data;
    await this.events.append({ type: p.type, sandboxId: rec.id, at: Date.now(), data });
  }

  private async run(effect: Effect, rec: SandboxRecord): Promise<void> {
    switch (effect) {
      case 'teardown':
        return this.effects.teardown(rec);
      case 'dropHibernations':
        return this.effects.dropHibernations(rec.id);
      case 'dropMetrics':
        return this.effects.dropMetrics(rec.id);
      case 'pruneHibernations':
        return this.effects.pruneHibernations(rec.id);
      case 'layersReleased':
        return this.effects.layersReleased();
    }
  }
}
