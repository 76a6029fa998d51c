/** Medians, percentiles and the printed table of the benchmark. */
export function quantile(xs: number[], q: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

export const median = (xs: number[]) => quantile(xs, 0.5);

export interface Row {
  name: string;
  unit: 'ms' | 'MiB' | 'KiB' | 'count' | '%' | 'req/s' | 'MiB/s';
  samples: number[];
  /** Reference value for the ratio column, and what it is. */
  ref?: { value: number; label: string };
  target?: string;
}

export function formatTable(rows: Row[]): string {
  const head = ['measurement', 'n', 'median', 'p95', 'unit', 'ratio', 'reference', 'target'];
  const body = rows.map((r) => {
    const m = median(r.samples);
    return [
      r.name,
      String(r.samples.length),
      fmt(m),
      fmt(quantile(r.samples, 0.95)),
      r.unit,
      r.ref ? `${(m / r.ref.value).toFixed(2)}x` : '',
      r.ref ? `${r.ref.label} (${fmt(r.ref.value)} ${r.unit})` : '',
      r.target ?? '',
    ];
  });
  return textTable(head, body, (i) => i === 0 || i >= 6);
}

/** A plain text table: the columns `left` says are padded on the right, the others on the left. */
export function textTable(head: string[], body: string[][], left: (column: number) => boolean): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (left(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return '-';
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/** How long `fn` took (ms), with its value. */
export async function time<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [performance.now() - t0, v];
}
