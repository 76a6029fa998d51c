import type { SandboxRecord, SandboxStore } from '../store/sandboxes.js';
import { next, type Effect, type LifecycleEvent, type Step } from './lifecycle.js';

/** How the effects of lifecycle steps are carried out (wired by the manager). */
export interface EffectHandlers {
  /** The sandbox's VM, files, uid claim and admission slot go (idempotent). */
  teardown(rec: SandboxRecord): Promise<void>;
  dropHibernations(id: string): void;
  pruneHibernations(id: string): void;
  layersReleased(): void;
}

/**
 * Carries out lifecycle steps: the one place where a sandbox's state changes. `apply` asks the pure
 * `next` (lifecycle.ts) what `event` does from the record's state, runs the step's `before` effects,
 * persists the move (state, patch and event row in one transaction; `sandbox_busy` when the stored
 * state moved meanwhile), then runs its `after` effects.
 */
export class Lifecycle {
  constructor(
    private readonly store: SandboxStore,
    private readonly effects: EffectHandlers,
  ) {}

  async apply(rec: SandboxRecord, event: LifecycleEvent): Promise<SandboxRecord> {
    return (await this.applyStep(rec, event)).rec;
  }

  /** `apply`, also returning the step taken (recovery reads `adopt`). */
  async applyStep(rec: SandboxRecord, event: LifecycleEvent): Promise<{ rec: SandboxRecord; step: Step }> {
    const step = next(rec, event);
    for (const e of step.before) await this.run(e, rec);
    const out = step.persist ? this.store.transition(rec.id, step.from, step.to, step.reason, step.patch) : (this.store.get(rec.id) ?? rec);
    for (const e of step.after) await this.run(e, rec);
    return { rec: out, step };
  }

  private async run(effect: Effect, rec: SandboxRecord): Promise<void> {
    switch (effect) {
      case 'teardown':
        return this.effects.teardown(rec);
      case 'dropHibernations':
        return this.effects.dropHibernations(rec.id);
      case 'pruneHibernations':
        return this.effects.pruneHibernations(rec.id);
      case 'layersReleased':
        return this.effects.layersReleased();
    }
  }
}
