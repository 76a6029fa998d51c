import fs from 'node:fs';
import path from 'node:path';

/**
 * Test counts of a layer of the suite that vitest does not count itself (the Python SDK's unittest
 * run), for the closing lines of scripts/test.sh: written to $NULLSPACE_TEST_REPORT_DIR/<layer>.json
 * when that is set.
 */
export function writeLayerReport(layer: string, counts: { passed: number; failed: number; skipped: number }): void {
  const dir = process.env.NULLSPACE_TEST_REPORT_DIR;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${layer}.json`), JSON.stringify(counts) + '\n');
}

/** `Ran N tests` and the skip/failure counts of a Python unittest run's output. */
export function unittestCounts(output: string): { ran: number; skipped: number; failures: number; errors: number } {
  const ran = Number(/^Ran (\d+) tests? in /m.exec(output)?.[1] ?? 0);
  const verdict = /^(OK|FAILED)\b.*$/m.exec(output)?.[0] ?? '';
  const n = (what: string) => Number(new RegExp(`${what}=(\\d+)`).exec(verdict)?.[1] ?? 0);
  return { ran, skipped: n('skipped'), failures: n('failures'), errors: n('errors') };
}
