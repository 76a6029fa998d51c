#!/usr/bin/env node
// Lifecycle traces of a test run, to keep behaviour identical across a refactor of the lifecycle.
// A run of the suite with NULLSPACE_LIFECYCLE_TRACE=FILE makes every server append each transition
// (sandbox, from, to, reason) to FILE. This script turns such a file into the multiset of per-sandbox
// chains ("creating>running: started | running>killing: killed by request | ..."), with ids, numbers
// and paths normalized, and compares two of them.
//
//   lifecycle-traces.mjs summarize TRACE.jsonl > BASELINE.txt    (one "count<TAB>chain" line each)
//   lifecycle-traces.mjs compare BASELINE.txt TRACE.jsonl         (exit 1 when the multisets differ)
import fs from 'node:fs';

function normalize(reason) {
  return String(reason ?? '')
    .replace(/\b(sbx|snap|lyr|vol)_[0-9a-z]{16}\b/g, '$1_*')
    // names tests make up (a volume "t-4f642797")
    .replace(/\b([a-z]{1,3})-[0-9a-f]{6,}\b/g, '$1-*')
    .replace(/\/[^\s:;,'"()]+/g, 'PATH')
    .replace(/\d+(\.\d+)?/g, 'N');
}

export function chains(file) {
  const bySandbox = new Map();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const e = JSON.parse(line);
    const key = `${e.dataDir} ${e.sandboxId}`;
    const steps = bySandbox.get(key) ?? [];
    steps.push(`${e.from ?? '-'}>${e.to}: ${normalize(e.reason)}`);
    bySandbox.set(key, steps);
  }
  const counts = new Map();
  for (const steps of bySandbox.values()) {
    const chain = steps.join(' | ');
    counts.set(chain, (counts.get(chain) ?? 0) + 1);
  }
  return counts;
}

function readSummary(file) {
  const counts = new Map();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const tab = line.indexOf('\t');
    counts.set(line.slice(tab + 1), Number(line.slice(0, tab)));
  }
  return counts;
}

function summary(counts) {
  return [...counts].sort((a, b) => (a[1] === b[1] ? a[0].localeCompare(b[0]) : b[1] - a[1])).map(([c, n]) => `${n}\t${c}`).join('\n') + '\n';
}

const [cmd, a, b] = process.argv.slice(2);
if (cmd === 'summarize' && a) {
  process.stdout.write(summary(chains(a)));
} else if (cmd === 'compare' && a && b) {
  const base = readSummary(a);
  const now = b.endsWith('.jsonl') ? chains(b) : readSummary(b);
  let differ = false;
  for (const chain of new Set([...base.keys(), ...now.keys()])) {
    const x = base.get(chain) ?? 0;
    const y = now.get(chain) ?? 0;
    if (x !== y) {
      differ = true;
      console.log(`${x} -> ${y}\t${chain}`);
    }
  }
  if (!differ) console.log(`same: ${[...now.values()].reduce((s, n) => s + n, 0)} sandboxes, ${now.size} distinct chains`);
  process.exit(differ ? 1 : 0);
} else {
  console.error('usage: lifecycle-traces.mjs summarize TRACE.jsonl | compare BASELINE.txt TRACE.jsonl|SUMMARY.txt');
  process.exit(2);
}
