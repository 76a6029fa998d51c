import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentHash } from '../src/image/recipe.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-agent-hash-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("the agent's recipe hash", () => {
  it('covers exactly what go build compiles: Go sources (not tests), go.mod, go.sum', () => {
    const write = (rel: string, text: string) => {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      fs.writeFileSync(path.join(dir, rel), text);
    };
    write('main.go', 'package main\n');
    write('go.mod', 'module x\n');
    const h0 = agentHash(dir);
    // build outputs, tests, test data and docs lying around do not change it
    write('agent', 'ELF... a binary someone built here');
    write('bin/nullspace-agent', 'another binary');
    write('main_test.go', 'package main\n');
    write('testdata/x.go', 'package x\n');
    write('README.md', 'docs');
    write('build.sh', '#!/bin/sh');
    expect(agentHash(dir)).toBe(h0);
    // sources do
    write('proc.go', 'package main\n');
    const h1 = agentHash(dir);
    expect(h1).not.toBe(h0);
    write('sub/pkg.go', 'package sub\n');
    const h2 = agentHash(dir);
    expect(h2).not.toBe(h1);
    write('go.sum', 'x v1 h1:abc\n');
    expect(agentHash(dir)).not.toBe(h2);
  });

  it('the repository holds no agent binary', () => {
    const agentDir = path.resolve(__dirname, '../../../agent');
    for (const f of fs.readdirSync(agentDir)) {
      const head = fs.readFileSync(path.join(agentDir, f)).subarray(0, 4);
      if (fs.statSync(path.join(agentDir, f)).isFile()) expect(head.toString('latin1'), f).not.toBe('\x7fELF');
    }
  });
});
