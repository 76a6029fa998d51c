/**
 * Requests as fast-check arbitraries, from the OpenAPI document's schemas and what the fuzzer knows
 * of the server's objects. Four kinds: valid ones (to reach the handlers), ones naming an unknown id
 * (404), mutated ones that are invalid by construction (any answer but a 4xx is a finding), and
 * hostile ones (traversal, unicode, NUL, huge and edge numbers in every field: no 5xx, no hang).
 */
import path from 'node:path';
import fc from 'fast-check';
import type { FuzzRequest } from './http.js';
import type { Op, Param, Schema } from './openapi.js';

/** What the run has to aim at; read when a round's arbitraries are built. */
export interface Pools {
  /** Files and commands go to this sandbox; lifecycle calls never do. */
  stable: string;
  /** Sandboxes that lifecycle calls (kill, hibernate, timeout...) may hit. */
  victims: string[];
  snapshots: string[];
  volumes: string[];
  /** Processes started in the stable sandbox. */
  pids: number[];
  templates: string[];
  /** Paths that lead out of the server's data dir to the canary (relative and absolute). */
  traversals: string[];
  /** Metadata value (key `fuzz`) of everything the run creates. */
  tag: string;
  apiKey: string;
}

export type Mode = 'valid' | 'unknown' | 'mutated' | 'hostile';

/** A JSON number written as is (1e400 is Infinity once parsed; JSON.stringify cannot write it). */
class RawNumber {
  constructor(readonly text: string) {}
}

/** Routes whose valid calls start, stop or copy VMs: fewer valid calls, no shrinking. */
export function isExpensive(op: Op): boolean {
  return (
    (op.method === 'POST' && (op.template === '/v1/sandboxes' || /^\/v1\/sandboxes\/\{id\}\/(fork|hibernate|pause|resume|snapshots)$/.test(op.template))) ||
    op.route === 'POST /v1/snapshots/{id}/resume' ||
    op.route === 'DELETE /v1/sandboxes/{id}'
  );
}

/** Sandbox-scoped calls that may end or pause the sandbox: never aimed at the stable one. */
function isLifecycle(op: Op): boolean {
  if (!op.template.startsWith('/v1/sandboxes/{id}')) return false;
  if (/\/(files|commands)(\/|$)/.test(op.template) || op.method === 'GET') return false;
  return !/\/(fork|snapshots)$/.test(op.template);
}

/** Calls that change the guest's files: confined to the fuzz directories. */
function writesGuest(op: Op): boolean {
  return op.template.startsWith('/v1/sandboxes/{id}/files') && op.method !== 'GET';
}

// ---- strings

const HOSTILE_STRINGS = [
  '', ' ', '.', '..', '../', '../../', '/', '//', '\\', '..\\..\\', '%2e%2e%2f', '%00', '\0', 'a\0b', '\u202e', '\ud800', '\uffff',
  'é', '日本語', '😀', '\r\n', 'x\ny', '${PATH}', '$(id)', '`id`', "'", '"', "' OR 1=1 --", '%s%s%n', '*', '?', '#', '&', '=',
  'null', 'undefined', 'true', '0', '-1', 'NaN', 'Infinity', '1e400', '__proto__', 'constructor', 'prototype', 'toString',
  'CON', 'sbx_', 'snap_', 'sbx_0000000000000000/../..', 'base/../base', 'base\0', 'x'.repeat(65), 'x'.repeat(301), 'x'.repeat(5000),
];

const hostileString = (p: Pools): fc.Arbitrary<string> =>
  fc.oneof(
    { arbitrary: fc.constantFrom(...HOSTILE_STRINGS), weight: 5 },
    { arbitrary: fc.constantFrom(...p.traversals), weight: 4 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 2 },
    { arbitrary: fc.string({ maxLength: 12 }), weight: 1 },
  );

const unknownSandboxId = fc.stringMatching(/^sbx_[a-z0-9]{16}$/);
const unknownSnapshotId = fc.stringMatching(/^snap_[a-z0-9]{16}$/);
const volumeName = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,20}$/);
const unknownName = fc.stringMatching(/^zz[a-z0-9]{6,12}$/);

// ---- guest paths

const FUZZ_ROOTS = ['/workspace/fuzz', '/tmp/fuzz'];

/** Device and kernel files: reading them is the guest agent's business (see the allow-lists). */
export const DEVICE_PATHS = ['/dev/zero', '/dev/urandom', '/dev/null', '/dev/full', '/dev/tty', '/dev/console', '/dev/kmsg', '/proc/kmsg', '/proc/self/mem', '/dev/hvc0', '/dev/virtio-ports/org.nullspace.agent.0'];

const segment = fc.oneof(
  { arbitrary: fc.stringMatching(/^[a-z0-9]{1,8}$/), weight: 6 },
  { arbitrary: fc.constantFrom('..', '.', 'é', '日本語', '😀', ' ', 'a b', '-rf', '*', '?', '\\', '$(id)', '%2e%2e', 'x'.repeat(255), 'x'.repeat(256), 'new\nline', '.hidden', '~'), weight: 3 },
  // (no NUL: a path with one is refused before its sandbox is looked up, which an unknown-id request relies on)
  { arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).filter((s) => !s.includes('/') && !s.includes('\0')), weight: 1 },
);

/** A path under a fuzz directory (`..` never leads out of it: the guest's system stays usable). */
const writePath = fc.tuple(fc.constantFrom(...FUZZ_ROOTS), fc.array(segment, { minLength: 1, maxLength: 4 })).map(([root, segs]) => {
  const joined = `${root}/${segs.join('/')}`;
  const norm = path.posix.normalize(joined);
  return norm === root || norm.startsWith(`${root}/`) ? joined : `${root}/${segs.map((s) => (s === '..' ? 'up' : s)).join('/')}`;
});

const readPath = fc.oneof(
  { arbitrary: writePath, weight: 4 },
  { arbitrary: fc.constantFrom(...FUZZ_ROOTS, '/', '/etc', '/etc/hostname', '/etc/passwd', '/workspace', '/tmp', '/root', '/proc/self/status', '/proc/1/status', '/nonexistent', '/etc/hostname/x', '/usr/bin/bash', '/etc/../etc/hostname', '/workspace/fuzz/../../etc/hostname'), weight: 4 },
  { arbitrary: fc.array(segment, { minLength: 1, maxLength: 4 }).map((s) => `/${s.join('/')}`), weight: 2 },
  { arbitrary: fc.constantFrom(...DEVICE_PATHS), weight: 1 },
);

/** Paths the server must refuse (400 invalid_path) before the guest sees them. */
const INVALID_PATHS = ['', 'relative', 'a/b', './x', '../etc/passwd', '/a\0b', '\0', `/${'x'.repeat(4100)}`];

// ---- commands

const COMMANDS = [
  'true', 'false', 'echo hello', 'exit 7', 'pwd', 'id -un', 'cat /etc/hostname', 'sleep 0.3', 'cat', 'head -c 300000 /dev/zero | base64',
  'yes | head -n 5000', 'echo err >&2', 'kill -9 $$', 'printf "\\0\\377"', 'ls /workspace', 'read x; echo got $x', 'sleep 2 & echo bg', 'env',
];
const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const command = fc.oneof(
  { arbitrary: fc.constantFrom(...COMMANDS), weight: 4 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 30 }).filter((s) => !s.includes('\0')).map((s) => `printf %s ${shellQuote(s)}`), weight: 1 },
);

// ---- values from schemas

interface Ctx {
  op: Op;
  pools: Pools;
}

function between(s: Schema): { min: number; max: number } {
  return { min: s.minimum ?? -(2 ** 31), max: Math.min(s.maximum ?? 2 ** 31, Number.MAX_SAFE_INTEGER) };
}

/** Valid values of a field, by name where the name says more than the schema. */
function valid(name: string, s: Schema, c: Ctx): fc.Arbitrary<unknown> {
  const { op, pools } = c;
  switch (name) {
    case 'path':
    case 'from':
    case 'to':
      return writesGuest(op) ? writePath : readPath;
    case 'cwd':
      return readPath;
    case 'metadata': {
      const md = fc.dictionary(fc.stringMatching(/^[A-Za-z0-9_.:/-]{1,20}$/), fc.string({ maxLength: 30 }), { maxKeys: 3 });
      return md.map((m) => ({ ...m, fuzz: pools.tag }));
    }
    case 'envs':
      return fc.dictionary(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,15}$/), fc.string({ maxLength: 30 }), { maxKeys: 3 });
    case 'template':
      return fc.constantFrom(...pools.templates);
    case 'snapshotId':
      return pools.snapshots.length ? fc.constantFrom(...pools.snapshots) : unknownSnapshotId;
    case 'sandboxId':
      return fc.constantFrom(pools.stable, ...pools.victims);
    case 'volumes':
      return pools.volumes.length
        ? fc.dictionary(fc.constantFrom('/mnt/v', '/data/fuzz', '/workspace/vol'), fc.constantFrom(...pools.volumes), { maxKeys: 1 })
        : fc.constant({});
    case 'timeoutMs':
      // (commands: short; sandboxes: long enough to stay useful)
      return op.template.endsWith('/commands') ? fc.integer({ min: 0, max: 10_000 }) : fc.integer({ min: 60_000, max: 600_000 });
    case 'cmd':
      return command;
    case 'user':
      return fc.constantFrom('root', 'nobody');
    case 'name':
      return volumeName;
    case 'state':
      return fc.subarray(['creating', 'running', 'paused', 'killed', 'failed'], { minLength: 1 }).map((a) => a.join(','));
    case 'kind':
      return fc.subarray(['reusable', 'hibernate', 'fork'], { minLength: 1 }).map((a) => a.join(','));
    case 'nextToken':
      return fc.constant(undefined);
    case 'mode':
      return fc.integer({ min: 0, max: 0o7777 });
    case 'depth':
      return fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 6 }, { arbitrary: fc.integer({ min: 4, max: 32 }), weight: 1 });
    case 'lifecycle':
      return fc.record({ onTimeout: fc.constantFrom('kill', 'hibernate') });
    case 'count':
      // (a fork's children: a few, each a VM)
      if (op.template.endsWith('/fork')) return fc.integer({ min: 1, max: 2 });
      break;
    case 'url':
      if (op.template === '/v1/webhooks') return fc.constantFrom('https://example.com/nullspace-fuzz', 'http://example.org/hook?x=1');
      break;
    case 'events':
    case 'type':
      if (op.template === '/v1/webhooks' || op.template === '/v1/events') {
        const types = fc.subarray(['created', 'paused', 'resumed', 'snapshotted', 'forked', 'killed', 'failed', 'timed_out'], { minLength: 1 });
        return name === 'type' ? types.map((a) => a.join(',')) : types;
      }
      break;
    case 'start':
    case 'end':
      if (op.template.endsWith('/metrics')) return fc.date({ min: new Date(Date.now() - 3600_000), max: new Date(Date.now() + 3600_000), noInvalidDate: true }).map((d) => d.toISOString());
      break;
    default:
      break;
  }
  if (s.enum) return fc.constantFrom(...s.enum);
  if (s.anyOf?.length) {
    const enums = s.anyOf.flatMap((a) => a.enum ?? []);
    if (enums.length === s.anyOf.length) return fc.constantFrom(...enums);
    return fc.oneof(...s.anyOf.map((a) => valid(name, a, c)));
  }
  switch (s.type) {
    case 'string':
      if (s.pattern) return fc.stringMatching(new RegExp(s.pattern));
      return fc.string({ minLength: s.minLength ?? 0, maxLength: Math.min(s.maxLength ?? 64, 64) });
    case 'integer': {
      const { min, max } = between(s);
      return fc.oneof(fc.integer({ min, max }), fc.constantFrom(min, max));
    }
    case 'number':
      return fc.double({ min: s.minimum ?? -1e9, max: s.maximum ?? 1e9, noNaN: true });
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.array(valid(name, s.items ?? {}, c), { maxLength: 3 });
    case 'object':
      if (s.properties) return objectOf(s, c);
      if (typeof s.additionalProperties === 'object') return fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), valid(name, s.additionalProperties, c), { maxKeys: 3 });
      return fc.constant({});
    default:
      return fc.constant(null);
  }
}

function objectOf(s: Schema, c: Ctx): fc.Arbitrary<Record<string, unknown>> {
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [k, v] of Object.entries(s.properties ?? {})) model[k] = valid(k, v, c);
  return fc.record(model, { requiredKeys: s.required ?? [] }) as fc.Arbitrary<Record<string, unknown>>;
}

/** A value of another JSON type than the schema's (never valid for it). */
function wrongType(s: Schema): fc.Arbitrary<unknown> {
  const t = s.type ?? (s.anyOf?.every((a) => a.type === 'string') ? 'string' : undefined);
  const all: Array<[string, fc.Arbitrary<unknown>]> = [
    ['string', fc.constantFrom('', 'x', '12', 'true')],
    ['integer', fc.constantFrom(0, 7, -1)],
    ['boolean', fc.boolean()],
    ['null', fc.constant(null)],
    ['array', fc.constantFrom([], ['x'], [1])],
    ['object', fc.constantFrom({}, { a: 1 })],
  ];
  const ok = (k: string) => k !== t && !(t === 'number' && k === 'integer') && !(s.anyOf?.some((a) => a.type === 'array') && k === 'array');
  const picks = all.filter(([k]) => ok(k)).map(([, a]) => a);
  if (t === 'integer') picks.push(fc.constantFrom(1.5, -0.25));
  return fc.oneof(...picks);
}

/** A number outside the field's bounds (or not an integer): every numeric field must be bounded. */
function outOfRange(s: Schema): fc.Arbitrary<unknown> {
  const out: unknown[] = [2 ** 53, 2 ** 53 + 2, 1e20, 1e308, -1e20, new RawNumber('1e400'), new RawNumber('-1e400'), new RawNumber('123456789012345678901234567890')];
  if (s.minimum !== undefined) out.push(s.minimum - 1);
  if (s.maximum !== undefined && s.maximum < 2 ** 53) out.push(s.maximum + 1);
  if (s.type === 'integer') out.push((s.minimum ?? 0) + 0.5);
  return fc.constantFrom(...out);
}

/** Query-string forms of an integer that are not decimal digits (and octal ones where they are wrong). */
function badIntegerText(s: Schema): fc.Arbitrary<string> {
  const forms = ['0x1ff', '1e3', ' 12', '12 ', '+5', '-1', '1.0', '', '0b11', 'Infinity', 'NaN', '99999999999999999999', '1_0', '١٢'];
  if (s['x-mode']) forms.push('0999', '010000', '4096', '0o644');
  else if (s.maximum !== undefined) forms.push(String(s.maximum + 1));
  return fc.constantFrom(...forms);
}

// ---- the request

interface Parts {
  pathValues: Record<string, string>;
  query: Array<[string, string]>;
  body?: unknown;
  bodyText?: string | undefined;
  bodyBytes?: Buffer | undefined;
  contentType?: string | null;
  auth: 'ok' | 'none' | 'wrong' | 'basic';
  reject?: string;
  unknown?: string;
  /** Put the path values in the URL unencoded. */
  rawPath?: boolean;
}

function serializeJson(v: unknown): string {
  const raws: string[] = [];
  const text = JSON.stringify(v, (_k, x: unknown) => {
    if (x instanceof RawNumber) {
      raws.push(x.text);
      return `@@RAW${raws.length - 1}@@`;
    }
    return x;
  });
  return text.replace(/"@@RAW(\d+)@@"/g, (_m, i: string) => raws[Number(i)] ?? 'null');
}

/** Percent-encoding of the UTF-8 bytes of any string (lone surrogates included, as U+FFFD). */
export function pct(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) out += /[A-Za-z0-9\-_.~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

const queryValue = (v: unknown): string => (typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v));

function assemble(op: Op, p: Parts, pools: Pools): FuzzRequest {
  let url = op.template;
  for (const [k, v] of Object.entries(p.pathValues)) {
    const plain = p.rawPath && /^[\x21-\x7e]*$/.test(v) && !/[?#%]/.test(v);
    url = url.replace(`{${k}}`, plain ? v : pct(v));
  }
  if (p.query.length) url += '?' + p.query.map(([k, v]) => `${pct(k)}=${pct(v)}`).join('&');
  const headers: Record<string, string> = {};
  if (p.auth === 'ok') headers.authorization = `Bearer ${pools.apiKey}`;
  else if (p.auth === 'wrong') headers.authorization = 'Bearer not-the-key-not-the-key';
  else if (p.auth === 'basic') headers.authorization = `Basic ${Buffer.from(`x:${pools.apiKey}`).toString('base64')}`;
  let body: Buffer | undefined;
  if (p.bodyBytes) body = p.bodyBytes;
  else if (p.bodyText !== undefined) body = Buffer.from(p.bodyText, 'latin1');
  else if (p.body !== undefined) body = Buffer.from(serializeJson(p.body));
  if (body && p.contentType !== null) headers['content-type'] = p.contentType ?? 'application/json';
  const note: Record<string, unknown> = {};
  const guest = [p.query.find(([k]) => k === 'path')?.[1], ...['path', 'from', 'to', 'cwd'].map((k) => (p.body as Record<string, unknown> | undefined)?.[k])].filter((x) => typeof x === 'string');
  if (guest.length) note.guestPaths = guest;
  const cmd = (p.body as Record<string, unknown> | undefined)?.cmd;
  if (typeof cmd === 'string') note.cmd = cmd.slice(0, 200);
  if ((p.body as Record<string, unknown> | undefined)?.input !== undefined) note.input = true;
  return {
    route: op.route,
    method: op.method,
    path: url,
    headers,
    body,
    ...(p.reject ? { reject: p.reject } : {}),
    ...(p.unknown ? { unknown: p.unknown } : {}),
    note,
  };
}

/** The path parameters: the sandbox the route may aim at, snapshots, volumes, templates, pids. */
function validPathValues(op: Op, pools: Pools): fc.Arbitrary<Record<string, string>> {
  const model: Record<string, fc.Arbitrary<string>> = {};
  for (const prm of op.pathParams) model[prm.name] = validPathValue(op, prm, pools);
  return fc.record(model) as fc.Arbitrary<Record<string, string>>;
}

function validPathValue(op: Op, prm: Param, pools: Pools): fc.Arbitrary<string> {
  if (prm.name === 'pid') return pools.pids.length ? fc.constantFrom(...pools.pids.map(String)) : fc.constant('1');
  if (op.template.startsWith('/v1/sandboxes/{id}')) {
    const victims = pools.victims.length ? pools.victims : [pools.stable];
    if (isLifecycle(op)) return fc.constantFrom(...victims);
    return fc.oneof({ arbitrary: fc.constant(pools.stable), weight: 5 }, { arbitrary: fc.constantFrom(...victims), weight: 1 });
  }
  if (op.template.startsWith('/v1/snapshots/{id}')) return pools.snapshots.length ? fc.constantFrom(...pools.snapshots) : unknownSnapshotId;
  if (op.template.startsWith('/v1/volumes/{name}')) return pools.volumes.length ? fc.constantFrom(...pools.volumes) : volumeName;
  if (op.template.startsWith('/v1/templates/{name}')) return fc.constantFrom(...pools.templates);
  return fc.string({ minLength: 1, maxLength: 10 });
}

function validQuery(op: Op, c: Ctx): fc.Arbitrary<Array<[string, string]>> {
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const q of op.query) model[q.name] = valid(q.name, q.schema, c);
  const required = op.query.filter((q) => q.required || q.name === 'path').map((q) => q.name);
  const record = (fc.record(model, { requiredKeys: required }) as fc.Arbitrary<Record<string, unknown>>).map((v) =>
    // a deep listing only under the fuzz directories: one of / (its /proc and /sys) takes minutes
    typeof v.depth === 'number' && v.depth > 3 && !FUZZ_ROOTS.some((r) => String(v.path).startsWith(`${r}/`)) ? { ...v, depth: 2 } : v,
  );
  return record.chain((values) =>
    fc.boolean().map((octal) =>
      Object.entries(values)
        .filter(([, v]) => v !== undefined)
        .flatMap(([k, v]): Array<[string, string]> => {
          if (Array.isArray(v)) return v.map((x) => [k, queryValue(x)]);
          // a mode as octal digits after a 0 (0644) as often as decimal (420)
          if (k === 'mode' && typeof v === 'number' && octal) return [[k, `0${v.toString(8)}`]];
          return [[k, queryValue(v)]];
        }),
    ),
  );
}

function validBody(op: Op, c: Ctx): fc.Arbitrary<Partial<Parts>> {
  if (op.rawBody) {
    return fc
      .oneof(fc.uint8Array({ maxLength: 4096 }), fc.constant(new Uint8Array(0)), fc.integer({ min: 65536, max: 600_000 }).map((n) => new Uint8Array(n).fill(120)))
      .chain((bytes) => fc.constantFrom('application/octet-stream', 'text/plain', 'application/json', null).map((ct) => ({ bodyBytes: Buffer.from(bytes), contentType: ct })));
  }
  if (!op.body) return fc.constant({});
  let body = objectOf(op.body, c);
  if (op.route === 'POST /v1/sandboxes') {
    // a template or a snapshot, not both; a snapshot brings its own volumes
    body = fc.tuple(body, fc.boolean()).map(([b, fromSnapshot]) => {
      const { template, snapshotId, volumes, allowMissingVolumes, ...rest } = b;
      return fromSnapshot && snapshotId !== undefined ? { ...rest, snapshotId, allowMissingVolumes } : { ...rest, template, volumes };
    });
  }
  return fc.oneof({ arbitrary: body.map((b) => ({ body: b })), weight: 9 }, { arbitrary: fc.constant({}), weight: op.body.required?.length ? 0 : 1 });
}

function validParts(op: Op, c: Ctx): fc.Arbitrary<Parts> {
  return fc
    .tuple(validPathValues(op, c.pools), validQuery(op, c), validBody(op, c))
    .map(([pathValues, query, body]) => ({ pathValues, query, ...body, auth: 'ok' as const }));
}

/** The same request, one id in it unknown: a 404 whatever the route. */
function unknownParts(op: Op, c: Ctx): fc.Arbitrary<Parts> | undefined {
  const idParam = op.pathParams.find((p) => p.name === 'id' || p.name === 'name' || p.name === 'pid');
  const withBody = (over: Record<string, unknown>, kind: string) =>
    validParts(op, c).map((p): Parts => ({ ...p, body: { ...(p.body as Record<string, unknown> | undefined), ...over }, unknown: kind }));
  if (op.route === 'POST /v1/sandboxes') {
    return fc.oneof(
      unknownName.chain((t) => withBody({ template: t, snapshotId: undefined }, 'template')),
      unknownSnapshotId.chain((s) => withBody({ snapshotId: s, template: undefined, volumes: undefined }, 'snapshot')),
      unknownName.chain((v) => withBody({ volumes: { '/mnt/nowhere': v }, snapshotId: undefined }, 'volume')),
    );
  }
  if (!idParam) return undefined;
  const pid = op.pathParams.some((p) => p.name === 'pid');
  const [kind, arb]: [string, fc.Arbitrary<string>] = pid
    ? ['process', fc.integer({ min: 100_000, max: 4_194_304 }).filter((n) => !c.pools.pids.includes(n)).map(String)]
    : op.template.startsWith('/v1/sandboxes/')
      ? ['sandbox', unknownSandboxId]
      : op.template.startsWith('/v1/snapshots/')
        ? ['snapshot', unknownSnapshotId]
        : op.template.startsWith('/v1/volumes/')
          ? ['volume', unknownName]
          : ['template', unknownName];
  const param = pid ? 'pid' : idParam.name;
  return fc.tuple(validParts(op, c), arb).map(([p, v]): Parts => {
    // (the process routes aim at the stable sandbox: only the pid is unknown)
    const pathValues = { ...p.pathValues, [param]: v, ...(pid ? { id: c.pools.stable } : {}) };
    // a resume names a snapshot of its own: only the id in the path is unknown
    const body = op.route === 'POST /v1/sandboxes/{id}/resume' ? {} : p.body;
    return { ...p, pathValues, body, unknown: kind };
  });
}

type Mutation = (p: Parts) => fc.Arbitrary<Parts>;

/** Mutations that make any request of `op` invalid (a 4xx, never a 2xx). */
function mutations(op: Op): Array<[string, Mutation]> {
  const out: Array<[string, Mutation]> = [];
  const bodyFields = Object.entries(op.body?.properties ?? {});
  const rejectWith = (reason: string, over: Partial<Parts>) => (p: Parts): Parts => ({ ...p, ...over, reject: reason });
  const setField = (p: Parts, k: string, v: unknown): Parts => ({ ...p, body: { ...((typeof p.body === 'object' && p.body) || {}), [k]: v } });
  out.push(['auth', (p) => fc.constantFrom('none', 'wrong', 'basic').map((auth) => ({ ...p, auth: auth as Parts['auth'], reject: `authorization ${auth}` }))]);
  if (op.body && !op.rawBody) {
    out.push(['unknown body field', (p) => fc.constantFrom('surprise', '__fuzz__', 'timeout_ms', 'TimeoutMs', '', ' ').map((k) => ({ ...setField(p, k, 1), reject: `unknown body field "${k}"` }))]);
    out.push([
      'not an object',
      (p) => fc.constantFrom('[]', '"x"', '1', 'true', 'null', '[{}]').map((t) => ({ ...p, body: undefined, bodyText: t, reject: `body ${t}` })),
    ]);
    out.push([
      'malformed JSON',
      (p) =>
        fc
          .constantFrom('{"a":', '{a:1}', "{'a':1}", '{"a":1}}', '\0', 'NaN', '{"a":NaN}', '{"a":0x10}', '{"timeoutMs":1e400', '\xff\xfe{}', '{"a":"\\x"}', '{"a":"\\ud800"', `{${'['.repeat(20000)}`, ' ')
          .map((t) => ({ ...p, body: undefined, bodyText: t, reject: `malformed JSON ${JSON.stringify(t.slice(0, 20))}` })),
    ]);
    out.push([
      'prototype keys',
      (p) => fc.constantFrom('{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}').map((t) => ({ ...p, body: undefined, bodyText: t, reject: 'prototype poisoning' })),
    ]);
    out.push([
      'content type',
      (p) =>
        fc
          .constantFrom('text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', null)
          .map((ct) => ({ ...p, body: p.body ?? {}, contentType: ct, reject: `content type ${ct ?? 'missing'}` })),
    ]);
    out.push(['huge body', (p) => fc.constant(rejectWith('a body over 1 MiB', { body: undefined, bodyText: `{"x":"${'y'.repeat(1_100_000)}"}` })(p))]);
    if (bodyFields.length) {
      out.push(['wrong type', (p) => fc.constantFrom(...bodyFields).chain(([k, s]) => wrongType(s).map((v) => ({ ...setField(p, k, v), reject: `body.${k} of a wrong type` })))]);
    }
    const numeric = bodyFields.filter(([, s]) => s.type === 'integer' || s.type === 'number');
    if (numeric.length) {
      out.push(['out of range', (p) => fc.constantFrom(...numeric).chain(([k, s]) => outOfRange(s).map((v) => ({ ...setField(p, k, v), reject: `body.${k} = ${v instanceof RawNumber ? v.text : String(v)}` })))]);
    }
    const bounded = bodyFields.filter(([, s]) => s.type === 'string' && s.maxLength !== undefined && s.maxLength < 300_000);
    if (bounded.length) {
      out.push(['too long', (p) => fc.constantFrom(...bounded).map(([k, s]) => ({ ...setField(p, k, 'x'.repeat((s.maxLength ?? 0) + 1)), reject: `body.${k} longer than ${s.maxLength}` }))]);
    }
    const required = op.body.required ?? [];
    if (required.length) {
      out.push([
        'missing field',
        (p) =>
          fc.constantFrom(...required).map((k) => {
            const body = { ...((typeof p.body === 'object' && p.body) || {}) } as Record<string, unknown>;
            delete body[k];
            return { ...p, body, reject: `body.${k} missing` };
          }),
      ]);
    }
    const enums = bodyFields.filter(([, s]) => s.enum || s.anyOf?.every((a) => a.enum) || s.pattern);
    if (enums.length) out.push(['not one of', (p) => fc.constantFrom(...enums).map(([k]) => ({ ...setField(p, k, 'SIG-NOPE Root!'), reject: `body.${k} not an allowed value` }))]);
  }
  if (op.method === 'POST' && !op.body) {
    out.push(['body where none is taken', (p) => fc.constant({ ...p, body: { surprise: 1 }, reject: 'a body on a route that takes none' })]);
  }
  out.push(['unknown query parameter', (p) => fc.constantFrom('surprise', 'Path', 'path ', '__proto__').map((k) => ({ ...p, query: [...p.query, [k, '1']], reject: `unknown query parameter "${k}"` }))]);
  const ints = op.query.filter((q) => q.schema.type === 'integer');
  if (ints.length) {
    out.push([
      'integer text',
      (p) => fc.constantFrom(...ints).chain((q) => badIntegerText(q.schema).map((t) => ({ ...p, query: [...p.query.filter(([k]) => k !== q.name), [q.name, t]], reject: `query ${q.name}=${JSON.stringify(t)}` }))),
    ]);
  }
  const bools = op.query.filter((q) => q.schema.type === 'boolean');
  if (bools.length) {
    out.push([
      'boolean text',
      (p) => fc.tuple(fc.constantFrom(...bools), fc.constantFrom('yes', '1', '0', 'TRUE', '')).map(([q, t]) => ({ ...p, query: [...p.query.filter(([k]) => k !== q.name), [q.name, t]], reject: `query ${q.name}=${JSON.stringify(t)}` })),
    ]);
  }
  const pathQuery = op.query.find((q) => q.name === 'path');
  if (pathQuery) {
    out.push(['repeated path', (p) => fc.constant({ ...p, query: [...p.query.filter(([k]) => k !== 'path'), ['path', '/a'], ['path', '/b']], reject: 'path given twice' })]);
    out.push([
      'invalid guest path',
      (p) => fc.constantFrom(...INVALID_PATHS).map((g) => ({ ...p, query: [...p.query.filter(([k]) => k !== 'path'), ['path', g]], reject: `guest path ${JSON.stringify(g.slice(0, 20))}` })),
    ]);
    if (pathQuery.required) out.push(['no path', (p) => fc.constant({ ...p, query: p.query.filter(([k]) => k !== 'path'), reject: 'no path' })]);
  }
  for (const k of ['path', 'from', 'to', 'cwd']) {
    if (op.body?.properties?.[k]) {
      out.push([`invalid ${k}`, (p) => fc.constantFrom(...INVALID_PATHS).map((g) => ({ ...setField(p, k, g), reject: `body.${k} ${JSON.stringify(g.slice(0, 20))}` }))]);
    }
  }
  if (op.pathParams.some((q) => q.name === 'pid')) {
    out.push(['pid text', (p) => badIntegerText({ type: 'integer', minimum: 1, maximum: 4_194_304 }).filter((t) => t.trim() !== '' && !t.includes(' ')).map((t) => ({ ...p, pathValues: { ...p.pathValues, pid: t }, reject: `pid ${JSON.stringify(t)}` }))]);
  }
  return out;
}

function mutatedParts(op: Op, c: Ctx): fc.Arbitrary<Parts> {
  const muts = mutations(op);
  return fc.tuple(validParts(op, c), fc.constantFrom(...muts)).chain(([p, [, m]]) => m(p));
}

/** Every string of the request (ids, query values, body fields) may become a hostile one. */
function hostileParts(op: Op, c: Ctx): fc.Arbitrary<Parts> {
  const h = hostileString(c.pools);
  const swapRecord = (r: Record<string, unknown>): fc.Arbitrary<Record<string, unknown>> => {
    const keys = Object.keys(r);
    if (!keys.length) return fc.constant(r);
    return fc.tuple(fc.subarray(keys, { minLength: 1 }), fc.array(h, { minLength: keys.length, maxLength: keys.length })).map(([which, vals]) => {
      const out: Record<string, unknown> = { ...r };
      which.forEach((k, i) => {
        const v = r[k];
        if (typeof v === 'string') out[k] = vals[i];
        else if (typeof v === 'number') out[k] = v === 0 ? 0 : Math.sign(v) * (2 ** 31 - 1);
        else if (v && typeof v === 'object' && !Array.isArray(v)) out[k] = { [vals[i] ?? '']: vals[(i + 1) % vals.length] ?? '' };
      });
      return out;
    });
  };
  return validParts(op, c).chain((p) =>
    fc
      .tuple(
        swapRecord(p.pathValues) as fc.Arbitrary<Record<string, string>>,
        swapRecord(Object.fromEntries(p.query)),
        typeof p.body === 'object' && p.body ? swapRecord(p.body as Record<string, unknown>) : fc.constant(p.body),
        fc.boolean(),
      )
      .map(([pathValues, q, body, rawPath]): Parts => ({
        ...p,
        pathValues: Object.fromEntries(Object.entries(pathValues).map(([k, v]) => [k, String(v)])),
        query: Object.entries(q).map(([k, v]) => [k, queryValue(v)]),
        body,
        rawPath,
      })),
  );
}

export interface RequestArbOpts {
  /** Relative weights of the kinds of requests. */
  weights?: Partial<Record<Mode, number>>;
}

/** The requests of one operation. */
export function requestArb(op: Op, pools: Pools, opts: RequestArbOpts = {}): fc.Arbitrary<FuzzRequest> {
  const c: Ctx = { op, pools };
  const expensive = isExpensive(op);
  const w = { valid: expensive ? 1 : 6, unknown: 2, mutated: 6, hostile: expensive ? 2 : 4, ...opts.weights };
  const unknown = unknownParts(op, c);
  const kinds: Array<fc.WeightedArbitrary<Parts>> = [
    { arbitrary: validParts(op, c), weight: w.valid },
    { arbitrary: mutatedParts(op, c), weight: w.mutated },
    { arbitrary: hostileParts(op, c), weight: w.hostile },
  ];
  if (unknown) kinds.push({ arbitrary: unknown, weight: w.unknown });
  return fc.oneof(...kinds.filter((k) => k.weight > 0)).map((p) => assemble(op, p, pools));
}
