/**
 * A stack of teardown steps registered as resources are acquired. `run()` executes them once, in
 * reverse order, continuing past failures (they are collected and returned, never thrown, so that
 * a failing step cannot leave later resources behind).
 */
export class CleanupStack {
  private steps: Array<{ name: string; fn: () => unknown }> = [];
  private done: Promise<Error[]> | undefined;

  /** Registers `fn` to undo an acquisition named `name`. Returns the stack for chaining. */
  defer(name: string, fn: () => unknown): this {
    if (this.done) throw new Error(`cleanup stack already ran; cannot register "${name}"`);
    this.steps.push({ name, fn });
    return this;
  }

  /** Forgets every registered step (the resources now belong to someone else). */
  release(): void {
    this.steps = [];
  }

  get size(): number {
    return this.steps.length;
  }

  run(): Promise<Error[]> {
    this.done ??= (async () => {
      const errors: Error[] = [];
      for (const step of this.steps.reverse()) {
        try {
          await step.fn();
        } catch (err) {
          errors.push(new Error(`cleanup "${step.name}": ${err instanceof Error ? err.message : String(err)}`));
        }
      }
      this.steps = [];
      return errors;
    })();
    return this.done;
  }
}
