import fs from 'node:fs';
import { NsError } from '@nullspace/runtime';
import type { Config } from './config.js';

/**
 * Admission control: a sandbox gets a VM only within the configured limits (count and nominal
 * memory of running VMs) and while the host still has memory available. A refusal is a clear
 * 429/503, never an overloaded host. Reservations are taken synchronously, so concurrent creates
 * cannot overshoot.
 */
export class Admission {
  private count = 0;
  private memoryMiB = 0;

  constructor(private readonly limits: Config['limits'], private readonly availableMiB: () => number = hostAvailableMiB) {}

  /** `force`: count it without checking (a VM that already runs, re-adopted after a restart). */
  reserve(memoryMiB: number, opts: { force?: boolean } = {}): { release: () => void } {
    if (!opts.force) this.check(memoryMiB);
    this.count += 1;
    this.memoryMiB += memoryMiB;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.count -= 1;
        this.memoryMiB -= memoryMiB;
      },
    };
  }

  /** Throws the refusal `reserve` would, without reserving (to refuse before expensive work). */
  check(memoryMiB: number): void {
    if (this.count + 1 > this.limits.maxSandboxes) {
      throw new NsError('too_many_sandboxes', `the server runs its maximum of ${this.limits.maxSandboxes} sandboxes; kill or hibernate one first`, {
        details: { limit: this.limits.maxSandboxes, running: this.count },
      });
    }
    if (this.memoryMiB + memoryMiB > this.limits.maxMemoryMiB) {
      throw new NsError('too_many_sandboxes', `running sandboxes already use ${this.memoryMiB} MiB of the ${this.limits.maxMemoryMiB} MiB limit`, {
        details: { limitMiB: this.limits.maxMemoryMiB, usedMiB: this.memoryMiB, requestedMiB: memoryMiB },
      });
    }
    const available = this.availableMiB();
    if (available < this.limits.minHostAvailableMiB) {
      throw new NsError('insufficient_memory', `the host has only ${available} MiB of memory available (minimum ${this.limits.minHostAvailableMiB} MiB)`, {
        details: { availableMiB: available, minimumMiB: this.limits.minHostAvailableMiB },
      });
    }
  }

  get usage(): { sandboxes: number; memoryMiB: number } {
    return { sandboxes: this.count, memoryMiB: this.memoryMiB };
  }
}

/** Free space of the file system holding `dir`, in MiB. */
export function freeDiskMiB(dir: string): number {
  const st = fs.statfsSync(dir);
  return Math.floor((st.bavail * st.bsize) / 1024 / 1024);
}

/**
 * Guest RAM lives in files on the data disk: a guest writing to memory on a full disk would fault,
 * so new sandboxes and snapshots keep a reserve free.
 */
export function checkFreeDisk(dir: string, minMiB: number, what: string): void {
  if (minMiB <= 0) return;
  const free = freeDiskMiB(dir);
  if (free < minMiB) {
    throw new NsError('no_space', `${what}: the data disk has ${free} MiB free, below the reserve of ${minMiB} MiB`, {
      details: { freeMiB: free, reserveMiB: minMiB },
    });
  }
}

export function hostAvailableMiB(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m?.[1] ? Math.floor(Number(m[1]) / 1024) : Number.MAX_SAFE_INTEGER;
  } catch {
    return Number.MAX_SAFE_INTEGER;
  }
}
