import { CleanupStack, type VmHandle } from '@nullspace/runtime';

/**
 * A sandbox whose VM this server drives (or is getting one for: a create or resume under way). It
 * owns what the sandbox holds on this host: its admission reservation, its directory and files, its
 * uid claim, its VM and agent session. Each is registered on one lifetime cleanup stack as it is
 * acquired; `teardown` releases them all, once, in reverse order (a second call waits for the first).
 */
export class LiveSandbox {
  private readonly stack = new CleanupStack();
  private vmHandle: VmHandle | undefined;
  /** Set once the VM runs and is watched (see watch.ts): its death then fails the sandbox. */
  attached = false;
  /** A capture froze the user processes and could not thaw them: thawed before the next use. */
  needsThaw = false;
  /** An agent (re)connection under way, shared by concurrent callers. */
  connecting: Promise<unknown> | undefined;
  /** Set while QEMU holds the VM stopped on a full host disk (see watch.ts). */
  diskFullTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly id: string,
    private readonly registry: LiveSet,
  ) {}

  /** Registers the release of something this sandbox just acquired. */
  own(what: string, release: () => unknown): void {
    this.stack.defer(what, release);
  }

  /** The stack acquisitions are registered on (handed to the VM host's launch). */
  get cleanup(): CleanupStack {
    return this.stack;
  }

  get vm(): VmHandle {
    if (!this.vmHandle) throw new Error(`sandbox ${this.id} has no VM yet`);
    return this.vmHandle;
  }

  get hasVm(): boolean {
    return this.vmHandle !== undefined;
  }

  /** The sandbox's VM (its kill is registered by whoever started or adopted it). */
  setVm(vm: VmHandle): void {
    this.vmHandle = vm;
  }

  /** Releases everything (idempotent); it is no longer the sandbox's live entry. Returns the failures. */
  async teardown(): Promise<Error[]> {
    clearInterval(this.diskFullTimer);
    this.diskFullTimer = undefined;
    this.registry.forget(this);
    return this.stack.run();
  }

  /** Leaves everything running (the server closes: a restarted one re-adopts the VM). */
  detach(): void {
    clearInterval(this.diskFullTimer);
    this.vmHandle?.detach();
    this.stack.release();
    this.registry.forget(this);
  }
}

/** The live sandboxes of this server, by id. */
export class LiveSet {
  private readonly byId = new Map<string, LiveSandbox>();

  /** A new live entry for `id` (a create, a resume, a re-adoption). */
  begin(id: string): LiveSandbox {
    const live = new LiveSandbox(id, this);
    this.byId.set(id, live);
    return live;
  }

  get(id: string): LiveSandbox | undefined {
    return this.byId.get(id);
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  forget(live: LiveSandbox): void {
    if (this.byId.get(live.id) === live) this.byId.delete(live.id);
  }

  all(): LiveSandbox[] {
    return [...this.byId.values()];
  }
}
