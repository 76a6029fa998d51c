import fs from 'node:fs';
import { allocatedBytes, backingChain, errorMessage, flattenLayer, isTemplateDiskPath, NsError, type VmHandle } from '@nullspace/runtime';
import type { SandboxRecord } from '../store/sandboxes.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import { newId } from '../util.js';
import type { SandboxContext } from './context.js';

/**
 * Longest chain of frozen disk layers under a sandbox's overlay. Deeper chains are flattened: a
 * restore from a deeper layer first merges it into one layer on the template disk, and a running
 * sandbox whose own chain grew past it streams its layers into its overlay.
 */
export const MAX_CHAIN_DEPTH = 8;

/** Disk layer chains: each capture adds a layer under a sandbox's overlay; these keep chains bounded. */
export class Chains {
  constructor(private readonly ctx: SandboxContext) {}

  /**
   * Flattens a snapshot's disk chain once it is deeper than MAX_CHAIN_DEPTH (snapshots of restored
   * sandboxes, hibernate/resume cycles each add a layer), so that every restore stays bounded. The
   * caller holds the layer lock.
   */
  async boundSnapshotChain(snap: SnapshotRecord): Promise<void> {
    if ((await this.ctx.snapshots.depth(snap.diskLayer)) <= MAX_CHAIN_DEPTH) return;
    const flat = await this.flatten(snap.diskLayer);
    await this.ctx.snapshots.setDiskLayer(snap.id, flat);
    snap.diskLayer = flat;
    this.ctx.layersReleased();
  }

  /** The file a disk layer's chain rests on below the layer store (a template's disk). */
  private async chainBase(layerPath: string): Promise<string> {
    const chain = await backingChain(layerPath);
    const base = chain.find((c) => !this.ctx.layout.inLayers(c.filename));
    if (!base) throw new NsError('internal', `disk layer ${layerPath} does not rest on a template disk`);
    return base.filename;
  }

  /** A new layer with the whole content of `layerId`'s chain, backing directly onto the template disk. */
  private async flatten(layerId: string): Promise<string> {
    const top = await this.ctx.snapshots.layer(layerId);
    if (!top) throw new NsError('internal', `layer ${layerId} is missing`);
    const base = await this.chainBase(top.path);
    const id = newId('lyr');
    const out = this.ctx.layout.layerFile(id, 'disk');
    const t0 = Date.now();
    await flattenLayer(top.path, base, out);
    await this.ctx.snapshots.insertLayer({ id, kind: 'disk', path: out, parentId: null, bytes: allocatedBytes(out), createdAt: Date.now() });
    this.ctx.log.info({ layer: layerId, flat: id, ms: Date.now() - t0 }, 'flattened a deep disk layer chain');
    return id;
  }

  /** `boundChain` for a sandbox that is still running on `vm` (callers hold its lock); failures are logged. */
  async compact(id: string, vm: VmHandle): Promise<void> {
    const rec = await this.ctx.store.get(id);
    const live = this.ctx.live.get(id);
    if (rec?.state !== 'running' || !live?.attached || live.vm !== vm || !rec.diskParentLayer) return;
    await this.boundChain(id, vm, rec.diskParentLayer).catch((err: unknown) => {
      if (err instanceof NsError && err.code === 'cancelled') this.ctx.log.info({ sandboxId: id }, 'streaming the disk chain was cancelled (the sandbox is being killed)');
      else this.ctx.log.error({ sandboxId: id, err: errorMessage(err) }, 'bounding the disk chain failed (the sandbox keeps its deeper chain)');
    });
  }

  /** Keeps a running sandbox's own chain short: streams its layers into its overlay when too deep. */
  private async boundChain(id: string, vm: VmHandle, parentLayer: string): Promise<void> {
    if ((await this.ctx.snapshots.depth(parentLayer)) <= MAX_CHAIN_DEPTH) return;
    const layer = await this.ctx.snapshots.layer(parentLayer);
    if (!layer) return;
    const t0 = Date.now();
    await vm.streamDisk(await this.chainBase(layer.path));
    await this.ctx.store.patch(id, { diskParentLayer: null });
    this.ctx.log.info({ sandboxId: id, ms: Date.now() - t0 }, 'streamed a deep disk chain into the active overlay');
    this.ctx.layersReleased();
  }

  /**
   * The layers of the sandbox's recorded parent and its ancestors, by file (a disk chain streamed in
   * the background leaves the overlay on an older layer or on the template; a server stopped or
   * crashed before it recorded that leaves the record behind the header).
   */
  async lineage(rec: SandboxRecord): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (let id = rec.diskParentLayer, n = 0; id && n < 1000; n++) {
      const layer = await this.ctx.snapshots.layer(id);
      if (layer) out.set(layer.path, id);
      id = layer?.parentId ?? null;
    }
    return out;
  }

  /** A template build's disk (public: any sandbox's chain may rest on one). */
  isTemplateDisk(file: string): boolean {
    if (!isTemplateDiskPath(this.ctx.config.cacheDir, file)) return false;
    try {
      return fs.lstatSync(file).isFile();
    } catch {
      return false;
    }
  }
}
