import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { apiKey, apiUrl } from './helpers.js';

const repo = path.resolve(__dirname, '..');

it('Python SDK: its unit and integration tests pass against the real server', () => {
  const r = spawnSync('python3', ['-m', 'unittest', 'discover', '-s', 'sdk/python/tests', '-v'], {
    cwd: repo,
    env: { ...process.env, PYTHONPATH: path.join(repo, 'sdk/python'), NULLSPACE_TEST_API_URL: apiUrl(), NULLSPACE_TEST_API_KEY: apiKey() },
    encoding: 'utf8',
    timeout: 900_000,
  });
  const output = `${r.stdout}\n${r.stderr}`;
  if (r.status !== 0) console.error(output);
  expect(r.status, output.slice(-3000)).toBe(0);
  // the integration tests ran (they skip only without a server)
  expect(output).not.toMatch(/skipped 'NULLSPACE_TEST_API_URL/);
  expect(output).toMatch(/\nOK/);
}, 900_000);
