import fs from 'node:fs';
import path from 'node:path';
import { errorMessage } from '@nullspace/runtime';
import { TERMINAL_STATES, STATES } from './sandbox/lifecycle.js';
import type { Logger } from './log.js';
import type { SandboxStore } from './store/sandboxes.js';
import type { LayerKind, SnapshotStore } from './store/snapshots.js';
import type { RwLock } from './util.js';

export interface GcLayer {
  layerId: string;
  kind: LayerKind;
  bytes: number;
}

export interface GcReport {
  dryRun: boolean;
  /** Layers that nothing references: freed (or, in a dry run, that would be). */
  freed: GcLayer[];
  freedBytes: number;
  /** Files in the layer store that no layer record knows (left by a crash); freed too. */
  orphanFiles: string[];
  /** Every other layer, with what holds it. */
  retained: Array<GcLayer & { heldBy: string[] }>;
  retainedBytes: number;
}

/**
 * Mark and sweep over the layer store. Roots: every snapshot (its RAM, state and disk layers) and
 * every sandbox that is not ended (the layer its active overlay backs onto). A disk layer holds its
 * parent, so whole backing chains stay while anything uses their top. Runs under the layer lock's
 * write side: no capture or restore is halfway through the store meanwhile.
 */
export class Gc {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<GcReport> | undefined;

  constructor(
    private readonly snapshots: SnapshotStore,
    private readonly sandboxes: SandboxStore,
    private readonly lock: RwLock,
    private readonly layersDir: string,
    private readonly log: Logger,
  ) {}

  /** Runs soon, once for a burst of releases. */
  schedule(delayMs = 500): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run(false).catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'garbage collection failed'));
    }, delayMs);
    this.timer.unref();
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  async run(dryRun: boolean): Promise<GcReport> {
    if (!dryRun && this.running) await this.running.catch(() => {});
    const work = this.lock.write(async () => this.sweep(dryRun));
    if (!dryRun) this.running = work;
    return work;
  }

  private async sweep(dryRun: boolean): Promise<GcReport> {
    // (one transaction: the three reads see one state of the store)
    const [allLayers, snapshots, sandboxes] = await this.snapshots.transaction(async () => [
      await this.snapshots.layers(),
      await this.snapshots.all(),
      await this.sandboxes.inStates(STATES.filter((s) => !TERMINAL_STATES.includes(s))),
    ] as const);
    const layers = new Map(allLayers.map((l) => [l.id, l]));
    const holders = new Map<string, string[]>();
    const hold = (layerId: string | null, holder: string) => {
      for (let cur = layerId; cur; cur = layers.get(cur)?.parentId ?? null) {
        const list = holders.get(cur) ?? [];
        list.push(holder);
        holders.set(cur, list);
      }
    };
    for (const s of snapshots) {
      const holder = `snapshot ${s.id} (${s.kind})`;
      hold(s.memLayer, holder);
      hold(s.stateLayer, holder);
      hold(s.diskLayer, holder);
    }
    for (const sbx of sandboxes) hold(sbx.diskParentLayer, `sandbox ${sbx.id} (${sbx.state})`);

    const freed = [...layers.values()].filter((l) => !holders.has(l.id));
    const known = new Set([...layers.values()].map((l) => l.path));
    const orphanFiles = fs.existsSync(this.layersDir)
      ? fs
          .readdirSync(this.layersDir)
          .filter((f) => f !== '.staging')
          .map((f) => path.join(this.layersDir, f))
          .filter((f) => !known.has(f))
      : [];
    if (!dryRun) {
      // children before parents (a layer row references its parent)
      const depth = (id: string) => {
        let n = 0;
        for (let cur: string | null = id; cur; cur = layers.get(cur)?.parentId ?? null) n++;
        return n;
      };
      for (const l of [...freed].sort((a, b) => depth(b.id) - depth(a.id))) {
        fs.rmSync(l.path, { force: true });
        await this.snapshots.deleteLayer(l.id);
      }
      for (const f of orphanFiles) fs.rmSync(f, { force: true, recursive: true });
      if (freed.length || orphanFiles.length) {
        this.log.info({ layers: freed.length, bytes: freed.reduce((a, l) => a + l.bytes, 0), orphanFiles: orphanFiles.length }, 'garbage collected layers');
      }
    }
    const retained = [...layers.values()]
      .filter((l) => holders.has(l.id))
      .map((l) => ({ layerId: l.id, kind: l.kind, bytes: l.bytes, heldBy: holders.get(l.id)! }));
    return {
      dryRun,
      freed: freed.map((l) => ({ layerId: l.id, kind: l.kind, bytes: l.bytes })),
      freedBytes: freed.reduce((a, l) => a + l.bytes, 0),
      orphanFiles,
      retained,
      retainedBytes: retained.reduce((a, l) => a + l.bytes, 0),
    };
  }
}
