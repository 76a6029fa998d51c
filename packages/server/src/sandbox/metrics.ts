import fs from 'node:fs';
import path from 'node:path';
import { errorMessage, NsError, SANDBOX_ID_RE } from '@nullspace/runtime';
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
  /** Lines in its file (it is rewritten with the ring when it holds twice as many). */
  fileLines: number;
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
 * ring of MAX_SAMPLES per sandbox, kept for its life: in memory while it runs on this server, and
 * appended to its file (`<data dir>/metrics/<id>.jsonl`) so that a hibernation or a server restart
 * keeps them; the file goes when the sandbox ends (`forget`, a lifecycle effect). A sample that
 * cannot be taken (a capture holds the guest, the agent is busy) is skipped.
 */
export class MetricsSampler {
  private timer: NodeJS.Timeout | undefined;
  private readonly series = new Map<string, Series>();

  constructor(
    private readonly ctx: SandboxContext,
    private readonly guests: Guests,
  ) {}

  start(): void {
    void this.sweep().catch(() => {});
    this.timer = setInterval(() => this.tick(), this.ctx.config.metricsIntervalMs);
    this.timer.unref();
  }

  /** Sandbox `id` ended: its samples go (idempotent). */
  forget(id: string): void {
    this.series.delete(id);
    fs.rmSync(this.ctx.layout.metricsFile(id), { force: true });
  }

  /** Files of sandboxes that ended while no server ran (or are gone from the store) go. */
  private async sweep(): Promise<void> {
    for (const f of listDir(this.ctx.layout.metrics)) {
      const id = f.endsWith('.jsonl') ? f.slice(0, -'.jsonl'.length) : '';
      const rec = SANDBOX_ID_RE.test(id) ? await this.ctx.store.get(id) : undefined;
      if (!rec || rec.state === 'killed' || rec.state === 'failed') fs.rmSync(path.join(this.ctx.layout.metrics, f), { force: true });
    }
  }

  /** Sandbox `id`'s series as its file has it (the ring's last MAX_SAMPLES). */
  private stored(id: string): Series {
    const samples = readSamples(this.ctx.layout.metricsFile(id));
    return { samples: samples.slice(-MAX_SAMPLES), fileLines: samples.length };
  }

  /** Sandbox `id`'s series: in memory, else as its file has it (after a restart or a hibernation). */
  private seriesOf(id: string): Series {
    let s = this.series.get(id);
    if (!s) {
      s = this.stored(id);
      this.series.set(id, s);
    }
    return s;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The samples of sandbox `id` within [start, end] (ms), oldest first. */
  samples(id: string, start = 0, end = Number.MAX_SAFE_INTEGER): MetricsSample[] {
    const { samples } = this.series.get(id) ?? this.stored(id);
    return samples.filter((x) => x.at >= start && x.at <= end);
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
      const s = this.seriesOf(l.id);
      if (s.busy) continue;
      s.busy = true;
      void this.sample(l.id, s)
        .catch((err: unknown) => this.ctx.log.debug({ sandboxId: l.id, err: errorMessage(err) }, 'metrics sample skipped'))
        .finally(() => (s.busy = false));
    }
    // a series stays in memory while its VM runs on this server (its file keeps it meanwhile)
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
    this.persist(id, s, sample);
  }

  /** Appends `sample` to the sandbox's file; past twice the ring's size, the file is rewritten with the ring. */
  private persist(id: string, s: Series, sample: MetricsSample): void {
    const file = this.ctx.layout.metricsFile(id);
    try {
      fs.mkdirSync(this.ctx.layout.metrics, { recursive: true, mode: 0o700 });
      if (s.fileLines + 1 > 2 * MAX_SAMPLES) {
        const tmp = `${file}.tmp`;
        fs.writeFileSync(tmp, s.samples.map((x) => JSON.stringify(x) + '\n').join(''), { mode: 0o600 });
        fs.renameSync(tmp, file);
        s.fileLines = s.samples.length;
      } else {
        fs.appendFileSync(file, JSON.stringify(sample) + '\n', { mode: 0o600 });
        s.fileLines++;
      }
    } catch (err) {
      // a full disk loses the history past this point, not the sample in memory
      this.ctx.log.warn({ sandboxId: id, err: errorMessage(err) }, 'metrics sample not kept on disk');
    }
  }
}

/** The samples a file holds (none when it is missing; a line torn by a crash is skipped). */
function readSamples(file: string): MetricsSample[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: MetricsSample[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line) as MetricsSample);
    } catch {
      // skipped
    }
  }
  return out;
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
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
