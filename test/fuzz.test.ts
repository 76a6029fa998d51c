import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { runApiFuzz, type Finding } from '../packages/cli/dist/fuzz/index.js';
import { TEST_ROOT } from './env.js';
import { cleanupDataDir, ownServer } from './servers.js';

/**
 * A fixed seed by default (every CI run sends the same requests; a failure reproduces with it);
 * FUZZ_SEED picks another, FUZZ_MS another duration. The soak command runs the same fuzzer longer.
 */
const SEED = Number(process.env.FUZZ_SEED || 20261205);
const MS = Number(process.env.FUZZ_MS || 120_000);

const line = (f: Finding) => `${f.kind} ${f.route}: ${f.message} (x${f.count ?? 1})\n      ${f.request ?? ''}`;

describe('API fuzzing (fast-check, from the OpenAPI document)', () => {
  it(`no 5xx, no hang, stable documented codes, invalid input refused, nothing outside the data dir touched (FUZZ_SEED=${SEED} FUZZ_MS=${MS})`, async () => {
    // the data dir in a directory of its own: nothing may appear next to it
    const parent = path.join(TEST_ROOT, `fz-${randomBytes(3).toString('hex')}`);
    const dataDir = path.join(parent, 'data');
    // (hooks run last-registered first: the server stops, then its data dir goes, then the parent)
    onTestFinished(() => fs.rmSync(parent, { recursive: true, force: true }));
    cleanupDataDir(dataDir);
    fs.mkdirSync(parent, { recursive: true });
    // short request limits, so that the stalled requests the fuzzer sends are answered quickly
    const server = await ownServer(dataDir, { NULLSPACE_HEADERS_TIMEOUT_MS: '3000', NULLSPACE_BODY_TIMEOUT_MS: '3000', NULLSPACE_WARM_POOL: '1', NULLSPACE_SNAPSHOT_POOL: '1' });
    const report = await runApiFuzz({
      apiUrl: server.url,
      apiKey: server.key,
      dataDir,
      durationMs: MS,
      seed: SEED,
      stallBoundMs: 20_000,
      log: (l) => process.stderr.write(`[fuzz] ${l}\n`),
    });
    for (const f of report.allowed) process.stderr.write(`[fuzz] allowed (${f.allowed}): ${line(f)}\n`);
    expect(report.requests).toBeGreaterThan(100);
    if (MS >= 60_000) expect(report.storms).toBeGreaterThan(0);
    expect(report.findings.map(line), `FUZZ_SEED=${SEED} repeats this run`).toEqual([]);
  }, MS + 600_000);
});
