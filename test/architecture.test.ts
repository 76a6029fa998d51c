import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { findCycles, importGraph, showEdge, type Edge } from './import-graph.js';

/**
 * What may import what (docs/ARCHITECTURE.md, "What may import what"): no import cycles, and the
 * rules below, over the import graph of packages/NAME/src (test/import-graph.ts). Paths are
 * repo-relative globs (`*` within a directory, `**` across directories); a pattern that starts with
 * `!` takes files back out of the list; `npm:NAME` is an npm package.
 */
interface Rule {
  name: string;
  /** the files the rule is about */
  files: string[];
  /** what they may not import */
  mayNotImport: string[];
  /** type-only imports are allowed (the shape of what they are handed, never the code) */
  typesAllowed?: boolean;
  /** printed with each violation */
  reason: string;
  /** an import that breaks the rule: the rule is checked against it, so that it can fail */
  example: [from: string, to: string];
}

const LIFECYCLE = ['packages/server/src/sandbox/**'];
/** The HTTP surfaces: nullspace's own API (/v1) and the E2B-compatible one (packages/server/src/e2b). */
const ROUTES = ['packages/server/src/api/**', 'packages/server/src/e2b/**'];
const HTTP = ['npm:fastify', 'npm:@fastify/*', 'npm:ajv', 'npm:@sinclair/typebox'];

const RULES: Rule[] = [
  {
    name: 'the runtime imports nothing of the server, SDK or CLI, and no npm package',
    files: ['packages/runtime/src/**'],
    mayNotImport: ['packages/server/**', 'packages/sdk/**', 'packages/cli/**', 'npm:**'],
    reason: 'the runtime is the bottom layer (QEMU, images, host files; no HTTP, no database) and has no dependencies',
    example: ['packages/runtime/src/vm.ts', 'packages/server/src/config.ts'],
  },
  {
    name: 'the SDK imports nothing of the server, runtime or CLI, and no npm package',
    files: ['packages/sdk/src/**'],
    mayNotImport: ['packages/server/**', 'packages/runtime/**', 'packages/cli/**', 'npm:**'],
    reason: 'the SDK is a published HTTP client without dependencies: it knows the API, not the code behind it',
    example: ['packages/sdk/src/sandbox/index.ts', 'packages/server/src/config.ts'],
  },
  {
    name: 'the web console imports nothing of the server, runtime, SDK or CLI',
    files: ['packages/console/src/**'],
    mayNotImport: ['packages/server/**', 'packages/runtime/**', 'packages/sdk/**', 'packages/cli/**'],
    reason: 'the console uses only the public HTTP API (what a script can do): it knows the API, not the code behind it',
    example: ['packages/console/src/api.ts', 'packages/server/src/api/schemas.ts'],
  },
  {
    name: 'the server imports nothing of the SDK or CLI',
    files: ['packages/server/src/**'],
    mayNotImport: ['packages/sdk/**', 'packages/cli/**'],
    reason: 'the CLI is built on the server and the SDK, not the other way round',
    example: ['packages/server/src/index.ts', 'packages/cli/src/template.ts'],
  },
  {
    name: 'routes reach the runtime only for its errors',
    files: ROUTES,
    mayNotImport: ['packages/runtime/**', '!packages/runtime/src/errors.ts'],
    typesAllowed: true,
    reason:
      'routes go through the manager and services (which hold the locks and the state machine); ' +
      'they may name the types of what those hand them (an AgentClient lent by agentFor)',
    example: ['packages/server/src/api/files.ts', 'packages/runtime/src/agent/client.ts'],
  },
  {
    name: 'routes never import the store',
    files: ROUTES,
    mayNotImport: ['packages/server/src/store/**', 'npm:better-sqlite3', 'npm:pg'],
    typesAllowed: true,
    reason:
      'routes go through the manager and services, which keep the invariants (locks, transitions, events); ' +
      'they may name the record types those return',
    example: ['packages/server/src/api/sandboxes.ts', 'packages/server/src/store/sandboxes.ts'],
  },
  {
    name: 'the server reaches VMs only through the VmHost seam (no Vm, QmpClient, agent socket of its own)',
    files: ['packages/server/src/**'],
    mayNotImport: ['packages/runtime/src/vm.ts', 'packages/runtime/src/qmp.ts', 'packages/runtime/src/snapshot.ts'],
    reason:
      'everything that starts, adopts or talks to a VM goes through VmHost/VmHandle (runtime/src/vmhost.ts): ' +
      'a fake drives the lifecycle in unit tests, and a host across a network can stand in for this one',
    example: ['packages/server/src/sandbox/create.ts', 'packages/runtime/src/vm.ts'],
  },
  {
    name: 'the server connects no agent itself (the seam hands out GuestAgent sessions; the protocol types are fine)',
    files: ['packages/server/src/**'],
    mayNotImport: ['packages/runtime/src/agent/client.ts'],
    typesAllowed: true,
    reason: "a sandbox's agent session comes from its VmHandle (connectAgent); the manager lends it out (agentFor)",
    example: ['packages/server/src/agentio.ts', 'packages/runtime/src/agent/client.ts'],
  },
  {
    name: 'only the sandbox manager picks the VM host (types of the seam elsewhere)',
    files: ['packages/server/src/**', '!packages/server/src/sandbox/manager.ts'],
    mayNotImport: ['packages/runtime/src/vmhost.ts'],
    typesAllowed: true,
    reason: 'the manager decides what runs VMs (LocalVmHost by default); its modules only use the VmHost and VmHandle interfaces',
    example: ['packages/server/src/sandbox/create.ts', 'packages/runtime/src/vmhost.ts'],
  },
  {
    name: 'the rest of the server reaches the sandbox lifecycle only through its manager (and the states)',
    files: ['packages/server/src/**', ...LIFECYCLE.map((p) => `!${p}`)],
    mayNotImport: ['packages/server/src/sandbox/**', '!packages/server/src/sandbox/manager.ts', '!packages/server/src/sandbox/lifecycle.ts'],
    reason: 'the manager is the facade of packages/server/src/sandbox; its modules share state (locks, live VMs) that only it wires',
    example: ['packages/server/src/api/sandboxes.ts', 'packages/server/src/sandbox/create.ts'],
  },
  {
    name: 'only the store talks SQL',
    files: ['packages/**', '!packages/server/src/store/**'],
    mayNotImport: ['npm:better-sqlite3', 'npm:pg'],
    reason: 'persistence is one layer (packages/server/src/store): migrations, queries and the transitions they record',
    example: ['packages/server/src/gc.ts', 'npm:better-sqlite3'],
  },
  {
    name: 'only the routes speak HTTP',
    files: ['packages/**', ...ROUTES.map((p) => `!${p}`)],
    mayNotImport: HTTP,
    reason: 'the manager and services know nothing of requests (api/ maps them), so that anything can drive them',
    example: ['packages/server/src/volumes.ts', 'npm:fastify'],
  },
  {
    name: 'nothing in the server below the routes imports them',
    files: ['packages/server/src/**', ...ROUTES.map((p) => `!${p}`), '!packages/server/src/index.ts'],
    mayNotImport: ROUTES,
    reason: 'routes sit on top of the manager and services; only index.ts (startServer) assembles them',
    example: ['packages/server/src/admission.ts', 'packages/server/src/api/schemas.ts'],
  },
  {
    name: 'the E2B surface is a translation: the native routes do not depend on it (app.ts only mounts it)',
    files: ['packages/server/src/api/**', '!packages/server/src/api/app.ts'],
    mayNotImport: ['packages/server/src/e2b/**'],
    reason: 'E2B compatibility maps E2B\'s wire onto the manager; /v1 keeps its own shapes, codes and defaults whatever E2B does',
    example: ['packages/server/src/api/sandboxes.ts', 'packages/server/src/e2b/control.ts'],
  },
  {
    name: 'the E2B surface reaches sandboxes through the manager and agentio, not the native routes',
    files: ['packages/server/src/e2b/**'],
    mayNotImport: ['packages/server/src/api/**', '!packages/server/src/api/deps.ts'],
    reason: 'no second implementation and no coupling to /v1 handlers: both surfaces sit side by side on the manager and services (AppDeps)',
    example: ['packages/server/src/e2b/control.ts', 'packages/server/src/api/sandboxes.ts'],
  },
  {
    name: 'the store imports nothing of the server above it',
    files: ['packages/server/src/store/**'],
    mayNotImport: ['packages/server/src/**', '!packages/server/src/store/**', '!packages/server/src/sandbox/lifecycle.ts'],
    reason: 'the store is below the manager and services: it records states, checking each transition with the state machine (sandbox/lifecycle.ts)',
    example: ['packages/server/src/store/sandboxes.ts', 'packages/server/src/gc.ts'],
  },
];

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const graph = importGraph(ROOT);

function globRe(glob: string): RegExp {
  const re = glob
    .split(/(\*\*\/|\*\*|\*)/)
    .map((part) => (part === '**/' ? '(?:.*/)?' : part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${re}$`);
}

/** whether `file` is in the list: a positive pattern takes it, no `!` pattern takes it back */
function inList(list: string[], file: string): boolean {
  const hit = (g: string) => globRe(g).test(file);
  return list.some((g) => !g.startsWith('!') && hit(g)) && !list.some((g) => g.startsWith('!') && hit(g.slice(1)));
}

const breaks = (rule: Rule, e: Pick<Edge, 'from' | 'to' | 'typeOnly'>): boolean =>
  inList(rule.files, e.from) && inList(rule.mayNotImport, e.to) && !(rule.typesAllowed && e.typeOnly);

describe('what may import what', () => {
  it('sees every kind of import (relative, type-only, through a workspace package, npm)', () => {
    // a graph that lost its edges would pass every rule: these are known ones
    const has = (from: string, to: string, typeOnly: boolean) =>
      graph.edges.some((e) => e.from === from && e.to === to && e.typeOnly === typeOnly);
    expect(graph.files.length).toBeGreaterThan(50);
    expect(has('packages/server/src/index.ts', 'packages/server/src/api/app.ts', false)).toBe(true);
    expect(has('packages/server/src/index.ts', 'packages/server/src/config.ts', true)).toBe(true);
    expect(has('packages/server/src/hostctx.ts', 'packages/runtime/src/host.ts', false)).toBe(true);
    expect(has('packages/server/src/config.ts', 'packages/runtime/src/host.ts', true)).toBe(true);
    expect(has('packages/cli/src/main.ts', 'npm:commander', false)).toBe(true);
  });

  it('has no import cycles (type-only imports count)', () => {
    const cycles = findCycles(graph).map((c) => c.map(showEdge).join('\n  -> '));
    expect(cycles.length, `import cycles:\n${cycles.join('\n')}\n`).toBe(0);
  });

  for (const rule of RULES) {
    it(rule.name, () => {
      // the rule is about files that exist, and its example breaks it
      const [from, to] = rule.example;
      expect(graph.files, `example of "${rule.name}"`).toContain(from);
      if (!to.startsWith('npm:')) expect(graph.files, `example of "${rule.name}"`).toContain(to);
      expect(breaks(rule, { from, to, typeOnly: false }), `the example import ${from} -> ${to} breaks "${rule.name}"`).toBe(true);
      const violations = graph.edges.filter((e) => breaks(rule, e)).map((e) => `${showEdge(e)}: ${rule.reason}`);
      expect(violations.length, `${violations.join('\n')}\n`).toBe(0);
    });
  }
});
