import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { NsError } from '@nullspace/runtime';
import { TemplateBuildBody } from '../src/api/schemas.js';
import { parseDockerfile } from '../src/templates/dockerfile.js';
import { aptCommand, templateDefaults, validateSpec, type BuildStep } from '../src/templates/spec.js';

/** The build spec's validator (packages/server/src/templates/spec.ts) and the JSON schema of POST /v1/templates. */

/** The invalid_build_spec error validating `spec` throws (fails the test when it passes). */
function problem(spec: unknown): { field: unknown; message: string } {
  try {
    validateSpec(spec);
  } catch (err) {
    expect(err).toBeInstanceOf(NsError);
    expect((err as NsError).code).toBe('invalid_build_spec');
    return { field: (err as NsError).details.field, message: err instanceof Error ? err.message : '' };
  }
  throw new Error(`accepted: ${JSON.stringify(spec)}`);
}

const from = { template: 'base' };
const withStep = (step: unknown) => ({ from, steps: [step] });
/** Expects one step refused, naming `field` (under spec.steps[0]) with a message matching `msg`. */
function stepRefused(step: unknown, field: string, msg: RegExp): void {
  const p = problem(withStep(step));
  expect(p.field).toBe(`spec.steps[0]${field}`);
  expect(p.message).toMatch(msg);
}

// the JSON schema as the server compiles body schemas (app.ts: strict types, defaults)
const bodySchema = new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false, strict: false }).compile(TemplateBuildBody);
const schemaAccepts = (spec: unknown) => bodySchema({ name: 'my-app', spec });

const FULL = {
  from: { image: 'registry.example:5000/team/app:1', auth: { username: 'u', password: 'p' } },
  steps: [
    { type: 'apt', packages: ['jq', 'postgresql-client', 'libc6:amd64', 'curl=7.88.1-10', 'nodejs/bookworm-backports'] },
    { type: 'run', cmd: 'npm ci' },
    { type: 'copy', src: './app/', dest: '/srv//app/', chown: 'user:user', mode: '755' },
    { type: 'copy', src: 'a/../*.json', dest: 'rel' },
    { type: 'env', envs: { NODE_ENV: 'production', EMPTY: '' } },
    { type: 'workdir', path: '/srv/app/' },
    { type: 'user', name: 'user' },
    { type: 'expose', port: 3000 },
  ],
  start: { cmd: 'node server.js', ready: { port: 3000 }, timeoutMs: 120000 },
};

describe('validateSpec', () => {
  it('accepts a full spec and normalizes it: paths, modes, defaults', () => {
    expect(validateSpec(FULL)).toEqual({
      from: FULL.from,
      steps: [
        FULL.steps[0],
        FULL.steps[1],
        { type: 'copy', src: 'app', dest: '/srv/app/', chown: 'user:user', mode: '0755' },
        { type: 'copy', src: '*.json', dest: 'rel' },
        FULL.steps[4],
        { type: 'workdir', path: '/srv/app' },
        FULL.steps[6],
        FULL.steps[7],
      ],
      start: { cmd: 'node server.js', ready: { port: 3000 }, timeoutMs: 120000 },
    });
    expect(validateSpec({ from: { template: 'my-node:2' } })).toEqual({ from: { template: 'my-node:2' }, steps: [], start: null });
    expect(validateSpec({ from: { archive: 'ctx:./images/app.tar' } }).from).toEqual({ archive: 'ctx:images/app.tar' });
    expect(validateSpec({ dockerfile: 'FROM base', start: { cmd: 'x', ready: { file: '/tmp//ready' } } })).toEqual({
      dockerfile: 'FROM base',
      steps: [],
      start: { cmd: 'x', ready: { file: '/tmp/ready' }, timeoutMs: 60000 },
    });
    expect(validateSpec({ from, start: { cmd: 'x', ready: { cmd: 'curl -sf localhost:3000' } } }).start?.ready).toEqual({ cmd: 'curl -sf localhost:3000' });
    expect(validateSpec({ from, steps: [{ type: 'copy', src: '.', dest: '.' }] }).steps).toEqual([{ type: 'copy', src: '.', dest: '.' }]);
  });

  it('refuses a spec without exactly one start, unknown fields, and bad starts', () => {
    expect(problem(null)).toMatchObject({ field: 'spec.' });
    expect(problem({})).toMatchObject({ field: 'spec.from', message: expect.stringMatching(/needs "from" or a "dockerfile"/) });
    expect(problem({ from, dockerfile: 'FROM base' })).toMatchObject({ field: 'spec.from' });
    expect(problem({ from, stepz: [] })).toMatchObject({ field: 'spec.stepz', message: expect.stringMatching(/not a field/) });
    expect(problem({ from: { template: 'base', image: 'debian' } })).toMatchObject({ field: 'spec.from', message: expect.stringMatching(/exactly one of .* \(has template, image\)/) });
    expect(problem({ from: {} })).toMatchObject({ field: 'spec.from' });
    expect(problem({ from: 'base' })).toMatchObject({ field: 'spec.from' });
    expect(problem({ from: { template: 'Base_1' } })).toMatchObject({ field: 'spec.from.template' });
    expect(problem({ from: { template: 'base:0' } })).toMatchObject({ field: 'spec.from.template' });
    expect(problem({ from: { image: 'UPPER/case' } })).toMatchObject({ field: 'spec.from.image', message: expect.stringMatching(/not an image reference/) });
    expect(problem({ from: { image: 'a b' } })).toMatchObject({ field: 'spec.from.image' });
    for (const image of ['localhost/app', 'Registry.Example:5000/app', 'ghcr.io/o/app:v1.2_x', 'a/b/c@sha256:' + '0'.repeat(64)]) {
      expect(validateSpec({ from: { image } }).from, image).toEqual({ image });
    }
    expect(problem({ from: { image: 'x', auth: { username: 'u' } } })).toMatchObject({ field: 'spec.from.auth.password' });
    expect(problem({ from: { template: 'base', auth: { username: 'u', password: 'p' } } })).toMatchObject({ field: 'spec.from.auth' });
    expect(problem({ from: { archive: 'images/app.tar' } })).toMatchObject({ field: 'spec.from.archive', message: expect.stringMatching(/must be "ctx:"/) });
    expect(problem({ from: { archive: 'ctx:../app.tar' } })).toMatchObject({ field: 'spec.from.archive', message: expect.stringMatching(/outside the build context/) });
    expect(problem({ from: { archive: 'ctx:.' } })).toMatchObject({ field: 'spec.from.archive', message: expect.stringMatching(/one file/) });
    expect(problem({ from, dockerfile: 5 })).toMatchObject({ field: 'spec.dockerfile' });
    expect(problem({ from, steps: {} })).toMatchObject({ field: 'spec.steps' });
    expect(problem({ from, steps: Array.from({ length: 501 }, () => ({ type: 'run', cmd: 'x' })) })).toMatchObject({ field: 'spec.steps', message: expect.stringMatching(/at most 500/) });
  });

  it('refuses each field of each step type that breaks its rule', () => {
    stepRefused('run', '', /must be an object/);
    stepRefused({ type: 'shell', cmd: 'x' }, '.type', /"shell": must be one of run, copy/);
    stepRefused({ cmd: 'x' }, '.type', /missing/);
    stepRefused({ type: 'run' }, '.cmd', /must be a string/);
    stepRefused({ type: 'run', cmd: '  ' }, '.cmd', /is empty/);
    stepRefused({ type: 'run', cmd: 'x'.repeat(131072) }, '.cmd', /longer than 131071 bytes/);
    stepRefused({ type: 'run', cmd: 'a\0b' }, '.cmd', /NUL/);
    stepRefused({ type: 'run', cmd: 'x', src: 'a' }, '.src', /not a field/);
    // copy: the source stays inside the context
    stepRefused({ type: 'copy', src: '../x', dest: '/x' }, '.src', /"\.\.\/x" is outside the build context/);
    stepRefused({ type: 'copy', src: 'a/../../x', dest: '/x' }, '.src', /outside the build context/);
    stepRefused({ type: 'copy', src: '..', dest: '/x' }, '.src', /outside/);
    stepRefused({ type: 'copy', src: '/etc/passwd', dest: '/x' }, '.src', /is absolute/);
    stepRefused({ type: 'copy', src: 'https://example.com/x', dest: '/x' }, '.src', /is a URL/);
    stepRefused({ type: 'copy', src: '', dest: '/x' }, '.src', /is empty/);
    stepRefused({ type: 'copy', src: 'a', dest: '' }, '.dest', /is empty/);
    stepRefused({ type: 'copy', src: 'a', dest: `/${'x'.repeat(4096)}` }, '.dest', /longer than 4096/);
    stepRefused({ type: 'copy', src: 'a', dest: '/x', chown: 'a b' }, '.chown', /not an owner/);
    stepRefused({ type: 'copy', src: 'a', dest: '/x', mode: '0999' }, '.mode', /octal/);
    stepRefused({ type: 'copy', src: 'a', dest: '/x', mode: 493 }, '.mode', /must be a string/);
    stepRefused({ type: 'copy', src: 'a', dest: '/x', owner: 'u' }, '.owner', /not a field/);
    // env
    stepRefused({ type: 'env', envs: {} }, '.envs', /1 to 256 variables/);
    stepRefused({ type: 'env', envs: { '1X': 'a' } }, '.envs', /"1X" is not a variable name/);
    stepRefused({ type: 'env', envs: { 'A-B': 'a' } }, '.envs', /not a variable name/);
    stepRefused({ type: 'env', envs: { A: 1 } }, '.envs.A', /must be a string/);
    stepRefused({ type: 'env', envs: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`V${i}`, 'x'])) }, '.envs', /1 to 256/);
    // workdir, user, expose
    stepRefused({ type: 'workdir', path: '' }, '.path', /is empty/);
    stepRefused({ type: 'user', name: 'Root' }, '.name', /not a user name/);
    stepRefused({ type: 'user', name: '1000' }, '.name', /not a user name/);
    stepRefused({ type: 'user', name: 'a'.repeat(33) }, '.name', /not a user name/);
    for (const port of [0, 65536, 80.5, '80']) stepRefused({ type: 'expose', port }, '.port', /integer from 1 to 65535/);
    // apt: names only (they become words of a shell command)
    stepRefused({ type: 'apt', packages: [] }, '.packages', /1 to 500/);
    stepRefused({ type: 'apt', packages: 'jq' }, '.packages', /1 to 500/);
    stepRefused({ type: 'apt', packages: ['jq', 'x; rm -rf /'] }, '.packages[1]', /not a Debian package name/);
    stepRefused({ type: 'apt', packages: ['-y'] }, '.packages[0]', /not a Debian package name/);
    stepRefused({ type: 'apt', packages: ['$(id)'] }, '.packages[0]', /not a Debian package name/);
  });

  it('refuses a bad start: empty command, not exactly one ready form, a relative ready file, timeouts out of bounds', () => {
    const start = (s: unknown) => problem({ from, start: s });
    expect(start({ cmd: '' })).toMatchObject({ field: 'spec.start.cmd' });
    expect(start({ ready: { port: 1 } })).toMatchObject({ field: 'spec.start.cmd' });
    expect(start({ cmd: 'x', ready: {} })).toMatchObject({ field: 'spec.start.ready' });
    expect(start({ cmd: 'x', ready: { port: 80, file: '/x' } })).toMatchObject({ field: 'spec.start.ready', message: expect.stringMatching(/\(has port, file\)/) });
    expect(start({ cmd: 'x', ready: { port: 0 } })).toMatchObject({ field: 'spec.start.ready.port' });
    expect(start({ cmd: 'x', ready: { file: 'tmp/ready' } })).toMatchObject({ field: 'spec.start.ready.file', message: expect.stringMatching(/not an absolute path/) });
    expect(start({ cmd: 'x', ready: { url: 'http://x' } })).toMatchObject({ field: 'spec.start.ready' });
    expect(start({ cmd: 'x', timeoutMs: 999 })).toMatchObject({ field: 'spec.start.timeoutMs' });
    expect(start({ cmd: 'x', timeoutMs: 1_800_001 })).toMatchObject({ field: 'spec.start.timeoutMs' });
    expect(start({ cmd: 'x', wait: 1 })).toMatchObject({ field: 'spec.start.wait' });
    // the bounds themselves are accepted
    expect(validateSpec({ from, start: { cmd: 'x', timeoutMs: 1000 } }).start?.timeoutMs).toBe(1000);
    expect(validateSpec({ from, start: { cmd: 'x', timeoutMs: 1_800_000 } }).start?.timeoutMs).toBe(1_800_000);
  });
});

describe('the JSON schema of POST /v1/templates agrees with validateSpec', () => {
  it('accepts every spec validateSpec accepts, and what the Dockerfile parser produces', () => {
    expect(schemaAccepts(FULL), JSON.stringify(bodySchema.errors)).toBe(true);
    const parsed = parseDockerfile('FROM base\nARG V=1\nENV A=1\nWORKDIR /srv\nCOPY --chown=user --chmod=644 a b/\nUSER user\nEXPOSE 80\nRUN echo $V\nCMD ["x"]');
    const asRequest = { from: parsed.from, steps: parsed.steps, start: { cmd: parsed.start!.cmd } };
    expect(schemaAccepts(asRequest), JSON.stringify(bodySchema.errors)).toBe(true);
    expect(validateSpec(asRequest).steps).toEqual(parsed.steps);
  });

  it('catches types and unknown fields itself (400 validation_failed), and leaves the rules between fields to validateSpec', () => {
    expect(schemaAccepts({ from, steps: [{ type: 'run', cmd: 5 }] })).toBe(false);
    expect(bodySchema.errors?.[0]?.instancePath).toBe('/spec/steps/0/cmd');
    expect(schemaAccepts({ from, steps: [{ type: 'run', cmd: 'x', bogus: 1 }] })).toBe(false);
    expect(bodySchema.errors?.[0]?.params).toEqual({ additionalProperty: 'bogus' });
    expect(schemaAccepts({ from, steps: [{ type: 'expose', port: 70000 }] })).toBe(false);
    expect(bodySchema({ name: 'x', spec: { from }, buildArgs: { 'bad-name': '1' } })).toBe(false);
    expect(bodySchema({ name: 'x', spec: { from }, cpuCount: 0 })).toBe(false);
    expect(bodySchema({ name: 'x', spec: { from }, contextId: 'ctx_0123456789abcdef', buildArgs: { V: '2' }, cpuCount: 2, memoryMiB: 1024, diskSizeMiB: 8192, noCache: true })).toBe(true);
    // shape-valid, rule-breaking: the schema lets these through for validateSpec to name the rule
    for (const spec of [{ from, steps: [{ type: 'copy', src: '../x', dest: '/x' }] }, { from, steps: [{ type: 'run', src: 'a' }] }, { from: { template: 'base', image: 'x' } }, {}]) {
      expect(schemaAccepts(spec), JSON.stringify(spec)).toBe(true);
      expect(() => validateSpec(spec)).toThrow(expect.objectContaining({ code: 'invalid_build_spec' }));
    }
  });
});

describe('templateDefaults and aptCommand', () => {
  it('folds the steps into what the template gives its sandboxes', () => {
    const steps: BuildStep[] = [
      { type: 'env', envs: { A: '1', B: '1' } },
      { type: 'workdir', path: 'rel' },
      { type: 'user', name: 'user' },
      { type: 'env', envs: { B: '2' } },
      { type: 'workdir', path: '../srv/app' },
      { type: 'expose', port: 3000 },
      { type: 'expose', port: 3000 },
      { type: 'run', cmd: 'true' },
    ];
    expect(templateDefaults(steps)).toEqual({ envs: { A: '1', B: '2' }, user: 'user', workdir: '/srv/app', exposedPorts: [3000] });
    expect(templateDefaults([{ type: 'workdir', path: 'sub' }], { envs: { X: 'base' }, user: null, workdir: '/home/user', exposedPorts: [22] })).toEqual({
      envs: { X: 'base' },
      user: null,
      workdir: '/home/user/sub',
      exposedPorts: [22],
    });
    expect(templateDefaults([])).toEqual({ envs: {}, user: null, workdir: null, exposedPorts: [] });
  });

  it('installs the packages non-interactively without recommends', () => {
    expect(aptCommand(['jq', 'curl'])).toBe('apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq curl');
  });
});
