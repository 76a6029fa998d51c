import os from 'node:os';
import type { FastifyPluginAsync } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { NsError } from '@nullspace/runtime';
import { freeDiskMiB, hostAvailableMiB } from '../admission.js';
import type { MetricsSample as Sample } from '../sandbox/manager.js';
import type { AppDeps } from './deps.js';
import { IdParams, MetricsQuery, MetricsSample } from './schemas.js';

/** `start`/`end` of the metrics query: an ISO 8601 time or ms since the epoch. */
function parseTime(raw: string | undefined, field: string): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  const ms = /^\d{1,15}$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (!Number.isFinite(ms)) throw new NsError('validation_failed', `${field} must be an ISO 8601 time or ms since the epoch, got "${raw.slice(0, 64)}"`, { details: { field } });
  return ms;
}

function sampleView(s: Sample): Static<typeof MetricsSample> {
  const { at, ...rest } = s;
  return { timestamp: new Date(at).toISOString(), ...rest };
}

/** Prometheus text exposition (version 0.0.4) of one gauge. */
function gauge(name: string, help: string, values: Array<[Record<string, string>, number]>): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`];
  for (const [labels, v] of values) {
    const l = Object.entries(labels).map(([k, x]) => `${k}="${x.replace(/["\\\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`);
    lines.push(`${name}${l.length ? `{${l.join(',')}}` : ''} ${v}`);
  }
  return lines.join('\n');
}

export const metricsRoutes =
  (deps: AppDeps): FastifyPluginAsync =>
  async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { sandboxes } = deps;

    app.get(
      '/sandboxes/:id/metrics',
      {
        schema: {
          summary: "A sandbox's metrics samples (every NULLSPACE_METRICS_INTERVAL_MS while it runs), oldest first",
          params: IdParams,
          querystring: MetricsQuery,
          response: { 200: Type.Object({ metrics: Type.Array(MetricsSample) }) },
        },
      },
      async (req) => {
        const q = req.query as Static<typeof MetricsQuery>;
        await sandboxes.get(req.params.id); // (an unknown sandbox is a 404, whatever the query)
        const start = parseTime(q.start, 'start');
        const end = parseTime(q.end, 'end');
        if (start !== undefined && end !== undefined && start > end) throw new NsError('validation_failed', 'start is after end', { details: { field: 'start' } });
        return { metrics: (await sandboxes.metrics(req.params.id, start, end)).map(sampleView) };
      },
    );

    app.get('/metrics', { schema: { summary: 'Host-wide figures for operators, in the Prometheus text format' } }, async (_req, reply) => {
      const latest = sandboxes.latestMetrics();
      const per = (f: (s: Sample) => number | null) =>
        latest.flatMap(({ sandboxId, sample }) => {
          const v = f(sample);
          return v === null ? [] : [[{ sandbox_id: sandboxId }, v] as [Record<string, string>, number]];
        });
      const usage = sandboxes.usage;
      const warm = sandboxes.warmPool;
      const text = [
        gauge('nullspace_sandboxes_running', 'Sandboxes whose VM runs or is starting (admission count)', [[{}, usage.sandboxes]]),
        gauge('nullspace_sandboxes_memory_nominal_bytes', 'Nominal RAM of those sandboxes', [[{}, usage.memoryMiB * 1024 * 1024]]),
        gauge('nullspace_sandboxes_host_memory_bytes', 'Host memory of the sampled sandboxes (sum of their QEMU PSS)', [[{}, latest.reduce((a, l) => a + (l.sample.hostMemBytes ?? 0), 0)]]),
        gauge('nullspace_host_memory_total_bytes', 'Host memory', [[{}, os.totalmem()]]),
        gauge('nullspace_host_memory_available_bytes', 'Host MemAvailable', [[{}, hostAvailableMiB() * 1024 * 1024]]),
        gauge('nullspace_host_load1', 'Host load average over 1 minute', [[{}, os.loadavg()[0] ?? 0]]),
        gauge('nullspace_host_cpus', 'Host CPUs', [[{}, os.cpus().length]]),
        gauge('nullspace_data_disk_free_bytes', 'Free space of the data disk', [[{}, freeDiskMiB(deps.config.dataDir) * 1024 * 1024]]),
        gauge('nullspace_warm_pool_ready', 'Warm sandboxes of base ready', [[{}, warm.ready]]),
        gauge('nullspace_events_last_id', 'Id of the latest lifecycle event', [[{}, await deps.events.latestId()]]),
        gauge('nullspace_sandbox_cpu_used_percent', 'CPU use of a sandbox in its last sample, % of its vCPUs', per((s) => s.cpuUsedPct)),
        gauge('nullspace_sandbox_memory_used_bytes', 'Guest memory in use (MemTotal - MemAvailable)', per((s) => s.memUsedBytes)),
        gauge('nullspace_sandbox_host_memory_bytes', 'Host memory of its VM (QEMU PSS)', per((s) => s.hostMemBytes)),
        gauge('nullspace_sandbox_disk_used_bytes', 'Bytes in use on its root file system (the guest\'s view)', per((s) => s.diskUsedBytes)),
      ].join('\n\n');
      return reply.type('text/plain; version=0.0.4; charset=utf-8').send(`${text}\n`);
    });
  };
