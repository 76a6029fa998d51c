#!/usr/bin/env node
// The closing lines of scripts/test.sh: each step's result and each layer's test counts, from the
// reports the steps wrote (go test -json, vitest's JSON reporter, test/report.ts for Python). Exits
// non-zero when a step failed, a report is missing, or a layer ran no test; prints "passed" only
// when none of that happened.
//   test-summary.mjs REPORT_DIR
//   test-summary.mjs --go-failures GO_JSON      (prints the output of failed Go tests)
import fs from 'node:fs';
import path from 'node:path';

function readLines(file) {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : undefined;
}

/** Counts of `go test -json` events: every test and subtest that ended. */
export function goCounts(file) {
  const lines = readLines(file);
  if (!lines) return undefined;
  const c = { passed: 0, failed: 0, skipped: 0 };
  for (const l of lines) {
    let e;
    try {
      e = JSON.parse(l);
    } catch {
      continue;
    }
    if (!e.Test) continue;
    if (e.Action === 'pass') c.passed++;
    else if (e.Action === 'fail') c.failed++;
    else if (e.Action === 'skip') c.skipped++;
  }
  return c;
}

function goFailures(file) {
  const out = new Map();
  const failed = new Set();
  for (const l of readLines(file) ?? []) {
    let e;
    try {
      e = JSON.parse(l);
    } catch {
      continue;
    }
    const key = `${e.Package} ${e.Test ?? ''}`;
    if (e.Action === 'output') out.set(key, (out.get(key) ?? '') + e.Output);
    if (e.Action === 'fail') failed.add(key);
  }
  for (const k of failed) process.stdout.write(`--- ${k}\n${out.get(k) ?? ''}`);
}

function vitestCounts(file) {
  if (!fs.existsSync(file)) return undefined;
  const r = JSON.parse(fs.readFileSync(file, 'utf8'));
  return { passed: r.numPassedTests, failed: r.numFailedTests, skipped: r.numPendingTests + (r.numTodoTests ?? 0) };
}

/** The failed tests of vitest's JSON report: "file > name" and the first lines of the first failure (colours stripped). */
export function vitestFailures(file, maxLines = 8) {
  if (!fs.existsSync(file)) return [];
  const r = JSON.parse(fs.readFileSync(file, 'utf8'));
  const out = [];
  for (const f of r.testResults ?? []) {
    const rel = path.relative(process.cwd(), f.name ?? '');
    const failed = (f.assertionResults ?? []).filter((a) => a.status === 'failed');
    // a file that failed as a whole (a hook, an import, an unhandled error) has a message of its own
    if (!failed.length && f.status === 'failed' && f.message) out.push({ test: rel, lines: clip(f.message, maxLines) });
    for (const a of failed) out.push({ test: `${rel} > ${a.fullName ?? a.title}`, lines: clip((a.failureMessages ?? []).join('\n'), maxLines) });
  }
  return out;
}

function clip(text, maxLines) {
  // eslint-disable-next-line no-control-regex
  const plain = String(text).replace(/\x1b\[[0-9;]*m/g, '');
  return plain.split('\n').filter((l) => l.trim()).slice(0, maxLines);
}

function jsonCounts(file) {
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
}

if (process.argv[2] === '--go-failures') {
  goFailures(process.argv[3]);
  process.exit(0);
}

const dir = process.argv[2];
const steps = (readLines(path.join(dir, 'steps')) ?? []).map((l) => l.split('\t'));
const layers = [
  ['Go (agent, egress)', goCounts(path.join(dir, 'go.json'))],
  ['TypeScript (vitest: server, SDK, CLI, runtime, end to end)', vitestCounts(path.join(dir, 'vitest.json'))],
  ['Python (SDK unit + integration)', jsonCounts(path.join(dir, 'python.json'))],
];
const problems = [];
console.log('steps:');
for (const [name, result] of steps) {
  console.log(`  ${result === 'ok' ? 'ok    ' : 'FAILED'}  ${name}`);
  if (result !== 'ok') problems.push(`step failed: ${name}`);
}
if (steps.length < 4) problems.push(`only ${steps.length} of 4 steps ran`);
console.log('tests per layer:');
for (const [name, c] of layers) {
  if (!c) {
    console.log(`  ${name}: no report (the layer did not run)`);
    problems.push(`${name}: did not run`);
    continue;
  }
  console.log(`  ${name}: ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`);
  if (c.passed + c.failed === 0) problems.push(`${name}: ran no test`);
  if (c.failed > 0) problems.push(`${name}: ${c.failed} failed`);
}
const failures = vitestFailures(path.join(dir, 'vitest.json'));
if (failures.length) {
  // (last, next to the verdict: a CI log's tail names what failed and why)
  console.log('failed tests (first lines of each failure):');
  for (const f of failures) {
    console.log(`  ${f.test}`);
    for (const l of f.lines) console.log(`      ${l.length > 200 ? `${l.slice(0, 200)}...` : l}`);
  }
}
if (problems.length) {
  console.log(`tests: FAILED (${problems.join('; ')})`);
  process.exit(1);
}
console.log('tests: passed');
