import fs from 'node:fs';
import { errorMessage, NsError } from '@nullspace/runtime';
import { readFile } from '../agentio.js';
import type { SandboxContext } from './context.js';
import type { Guests } from './guest.js';

/** Samples kept per sandbox (a ring): an hour at the default interval of 5 s. */
export const MAX_SAMPLES = 720;

/** One sample of a running sandbox. */
export interface MetricsSample {
  at: number;
  /** CPU use since the previous sample, % of all its vCPUs (0-100; guest /proc/stat). */
  cpuUsedPct: number;
  cpuCount: number;
  /** Guest view (/proc/meminfo): MemTotal - MemAvailable, and MemTotal. */
  memUsedBytes: number;
  memTotalBytes: number;
  /** Host memory of its VM: the PSS of its QEMU process (/proc/<pid>/smaps_rollup); null when unreadable. */
  hostMemBytes: number | null;
  /** The guest's root file system as df sees it (fs.statfs): bytes in use and its size. */
  diskUsedBytes: number;
  diskTotalBytes: number;
}

interface CpuTimes {
  busy: number;
  total: number;
}

interface Series {
  samples: MetricsSample[];
  prevCpu?: CpuTimes | undefined;
  busy?: boolean;
}

/** `cpu` line of /proc/stat: busy and total jiffies over all CPUs; and how many CPUs. */
export function parseProcStat(text: string): CpuTimes & { cpus: number } {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('no cpu line in /proc/stat');
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest times are inside user/nice)
  const total = v.slice(0, 8).reduce((a, b) => a + (b || 0), 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total, cpus: text.split('\n').filter((l) => /^cpu\d+ /.test(l)).length };
}

export function parseMeminfo(text: string): { total: number; available: number } {
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  const total = kb('MemTotal');
  const available = kb('MemAvailable');
  if (!Number.isFinite(total) || !Number.isFinite(available)) throw new Error('no MemTotal/MemAvailable in /proc/meminfo');
  return { total, available };
}

/** PSS of a process in bytes (/proc/PID/smaps_rollup), or null. */
export function processPss(pid: number): number | null {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * Metrics of running sandboxes: every `metricsIntervalMs` (NULLSPACE_METRICS_INTERVAL_MS) each
 * running sandbox on this server is sampled: the guest's /proc/stat and /proc/meminfo read through
 * the agent's file reads, its root file system's use (the agent's fs.statfs), its QEMU's PSS. A
 * ring of MAX_SAMPLES per sandbox, kept in memory for its life (not across server restarts). A
 * sample that cannot be taken (a capture holds the guest, the agent is busy) is skipped.
 */
export class MetricsSampler {
  private timer: NodeJS.Timeout | undefined;
  private readonly series = new Map<string, Series>();

  constructor(
    private readonly ctx: SandboxContext,
    private readonly guests: Guests,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), this.ctx.config.metricsIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The samples of sandbox `id` within [start, end] (ms), oldest first. */
  samples(id: string, start = 0, end = Number.MAX_SAFE_INTEGER): MetricsSample[] {
    return (this.series.get(id)?.samples ?? []).filter((s) => s.at >= start && s.at <= end);
  }

  /** The latest sample of each sandbox sampled. */
  latest(): Array<{ sandboxId: string; sample: MetricsSample }> {
    const out: Array<{ sandboxId: string; sample: MetricsSample }> = [];
    for (const [sandboxId, s] of this.series) {
      const last = s.samples[s.samples.length - 1];
      if (last) out.push({ sandboxId, sample: last });
    }
    return out;
  }

  private tick(): void {
    if (this.ctx.closing) return;
    const live = new Set<string>();
    for (const l of this.ctx.live.all()) {
      if (!l.attached || !l.hasVm) continue;
      live.add(l.id);
      const s = this.series.get(l.id) ?? { samples: [] };
      this.series.set(l.id, s);
      if (s.busy) continue;
      s.busy = true;
      void this.sample(l.id, s)
        .catch((err: unknown) => this.ctx.log.debug({ sandboxId: l.id, err: errorMessage(err) }, 'metrics sample skipped'))
        .finally(() => (s.busy = false));
    }
    // a sandbox's series lives as long as its VM does on this server
    for (const id of this.series.keys()) if (!live.has(id)) this.series.delete(id);
  }

  private async sample(id: string, s: Series): Promise<void> {
    const rec = await this.ctx.store.get(id);
    if (rec?.state !== 'running') return;
    const live = this.ctx.live.get(id);
    if (!live?.attached) return;
    const signal = AbortSignal.timeout(Math.max(2000, this.ctx.config.metricsIntervalMs * 2));
    const { agent, done } = await this.guests.agentFor(rec, 'files');
    let stat: string;
    let meminfo: string;
    let disk: { totalBytes: number; usedBytes: number };
    try {
      stat = await text(await readFile(agent, '/proc/stat', signal));
      meminfo = await text(await readFile(agent, '/proc/meminfo', signal));
      // the guest's root file system as df sees it
      disk = await agent.call('fs.statfs', { path: '/' }, 5000);
    } finally {
      done();
    }
    const cpu = parseProcStat(stat);
    const mem = parseMeminfo(meminfo);
    const prev = s.prevCpu;
    s.prevCpu = cpu;
    // the first reading is the baseline of the second sample's CPU use
    if (!prev) return;
    const dTotal = cpu.total - prev.total;
    const cpuUsedPct = dTotal > 0 ? Math.min(100, Math.max(0, (100 * (cpu.busy - prev.busy)) / dTotal)) : 0;
    const sample: MetricsSample = {
      at: Date.now(),
      cpuUsedPct: Math.round(cpuUsedPct * 10) / 10,
      cpuCount: cpu.cpus || rec.vcpus,
      memUsedBytes: mem.total - mem.available,
      memTotalBytes: mem.total,
      hostMemBytes: live.hasVm ? processPss(live.vm.pid) : null,
      diskUsedBytes: disk.usedBytes,
      diskTotalBytes: disk.totalBytes,
    };
    s.samples.push(sample);
    if (s.samples.length > MAX_SAMPLES) s.samples.splice(0, s.samples.length - MAX_SAMPLES);
  }
}

async function text(stream: AsyncIterable<Buffer | string>): Promise<string> {
  let out = '';
  for await (const chunk of stream) {
    out += chunk.toString();
    if (out.length > 1024 * 1024) throw new NsError('internal', 'a /proc file larger than 1 MiB');
  }
  return out;
}
