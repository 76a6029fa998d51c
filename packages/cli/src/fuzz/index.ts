/**
 * The API fuzzer: property-based (fast-check) requests against a running nullspace server, driven by
 * its OpenAPI document. Properties: no 5xx but DOCUMENTED_FAULTS; every answer within a bound, and
 * the server's health after; every 4xx with an error body whose code is in the status map and in
 * docs/api.md; invalid requests refused, unknown ids 404; concurrent conflicting calls on a sandbox
 * leave it settled and usable; stalled requests answered or closed; nothing outside the data dir
 * touched. Used by test/fuzz.test.ts (a short run) and by the soak command (a long one).
 */
import { randomBytes, randomInt } from 'node:crypto';
import path from 'node:path';
import fc from 'fast-check';
import { type FuzzRequest, type FuzzResponse, jsonOf, sendRaw } from './http.js';
import { isExpensive, requestArb } from './gen.js';
import { operations, unboundedNumbers, type Op } from './openapi.js';
import { describe, documentedCodes, judge, knownDefect, signature, type Finding } from './oracle.js';
import { Api, Canary, SETTLED, World } from './world.js';

export type { Finding } from './oracle.js';
export { DOCUMENTED_FAULTS, KNOWN_GUEST_DEFECTS } from './oracle.js';

export interface FuzzOptions {
  apiUrl: string;
  apiKey: string;
  /**
   * The server's data dir, when it is on this host: canary files are planted next to it (traversal
   * attempts aim at them) and must be unchanged after the run; when the data dir has a directory of
   * its own, no new entry may appear next to it either (in a shared one that check is left out).
   * Without it those checks are skipped.
   */
  dataDir?: string | undefined;
  durationMs: number;
  /** Default: a random one. Printed; the same seed sends the same requests again. */
  seed?: number | undefined;
  log?: ((line: string) => void) | undefined;
  /** Every answer's status line must come within this; default 60 s (calls in storms: twice that). */
  requestTimeoutMs?: number | undefined;
  /**
   * A stalled request (headers or body) must be answered or closed within this; default 75 s (the
   * server's limits are 20 s for headers and 30 s for bodies unless configured).
   */
  stallBoundMs?: number | undefined;
  /** Sandboxes the lifecycle calls aim at; default 1. */
  victims?: number | undefined;
  /** docs/api.md (its error codes); default: the repository's. */
  docsFile?: string | undefined;
  /** Called with every request and its answer (a line each): to see what led to a finding. */
  trace?: ((line: string) => void) | undefined;
}

export interface FuzzReport {
  seed: number;
  durationMs: number;
  requests: number;
  rounds: number;
  storms: number;
  /** Answers by route and status ("POST /v1/sandboxes 400"). */
  statuses: Record<string, number>;
  /** Defects: the run failed when there is any. */
  findings: Finding[];
  /** Seen, but on the explicit allow-list (KNOWN_GUEST_DEFECTS). */
  allowed: Finding[];
}

/** The events of an NDJSON body (lines that do not parse are left out). */
function ndjson(body: Buffer): Array<Record<string, unknown>> {
  return body
    .toString()
    .split('\n')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

/** A small seeded generator for the schedule (which operation next): the same seed, the same run. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every how many rounds a storm of conflicting lifecycle calls hits a victim sandbox. */
const STORM_EVERY = 12;

const LIFECYCLE_ACTIONS = ['kill', 'hibernate', 'pause', 'snapshot', 'fork', 'resume', 'timeout'] as const;
const IO_ACTIONS = ['write', 'read', 'bigread', 'list', 'slowlist', 'mkdir', 'command', 'bgcommand', 'get', 'stat', 'processes'] as const;
type StormAction = (typeof LIFECYCLE_ACTIONS)[number] | (typeof IO_ACTIONS)[number];
const stormCall = fc.record({
  action: fc.oneof({ arbitrary: fc.constantFrom(...LIFECYCLE_ACTIONS), weight: 3 }, { arbitrary: fc.constantFrom(...IO_ACTIONS), weight: 2 }) as fc.Arbitrary<StormAction>,
  delayMs: fc.integer({ min: 0, max: 300 }),
});
/** Calls at once on one sandbox: at least two of them lifecycle calls. */
const stormArb = fc
  .tuple(fc.array(fc.record({ action: fc.constantFrom(...LIFECYCLE_ACTIONS), delayMs: fc.integer({ min: 0, max: 300 }) }), { minLength: 2, maxLength: 2 }), fc.array(stormCall, { minLength: 2, maxLength: 7 }))
  .map(([a, b]) => [...a, ...b]);

export async function runApiFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const seed = opts.seed ?? randomInt(2 ** 31);
  const log = opts.log ?? ((line: string) => process.stderr.write(`[fuzz] ${line}\n`));
  const boundMs = opts.requestTimeoutMs ?? 60_000;
  const stallBoundMs = opts.stallBoundMs ?? 75_000;
  const t0 = Date.now();
  const deadline = t0 + opts.durationMs;
  const tag = `${seed.toString(36)}${randomBytes(2).toString('hex')}`;
  log(`seed ${seed} (FUZZ_SEED=${seed} repeats this run), ${Math.round(opts.durationMs / 1000)} s against ${opts.apiUrl}`);

  const api = new Api(new URL(opts.apiUrl), opts.apiKey, { boundMs, maxBody: 256 * 1024, bodyMs: 5000 });
  const judgeCtx = { documented: documentedCodes(opts.docsFile), boundMs };
  const findings = new Map<string, Finding>();
  const allowed = new Map<string, Finding>();
  const statuses: Record<string, number> = {};
  let requests = 0;
  let round = 0;
  let storms = 0;

  /** Records findings; returns those that are new (not seen before, not allow-listed). */
  const record = (found: Finding[], req: FuzzRequest | undefined): Finding[] => {
    const fresh: Finding[] = [];
    for (const f of found) {
      const sig = signature(f);
      const why = knownDefect(f, req);
      const into = why ? allowed : findings;
      const seen = into.get(sig);
      if (seen) {
        seen.count = (seen.count ?? 1) + 1;
        continue;
      }
      const full = { ...f, seed, round, count: 1, ...(why ? { allowed: why } : {}) };
      into.set(sig, full);
      if (!why) {
        fresh.push(full);
        log(`FINDING ${f.kind} ${f.route}: ${f.message}\n    ${f.request ?? ''}`);
      }
    }
    return fresh;
  };
  const count = (req: FuzzRequest, res: FuzzResponse) => {
    requests++;
    opts.trace?.(`${new Date().toISOString()} r${round} ${res.timedOut ? 'HANG' : res.error ? 'NO-ANSWER' : res.status} ${res.ms}ms ${describe(req).slice(0, 400)}`);
    const key = `${req.route} ${res.timedOut ? 'hang' : res.error ? 'no-answer' : res.status}`;
    statuses[key] = (statuses[key] ?? 0) + 1;
  };
  /** Sends, counts, learns from and judges one request; the findings that are new. */
  const exchange = async (world: World | undefined, req: FuzzRequest, bound = boundMs): Promise<{ res: FuzzResponse; fresh: Finding[] }> => {
    const res = await api.send(req, { boundMs: bound });
    count(req, res);
    world?.observe(req, res);
    return { res, fresh: record(judge(req, res, { ...judgeCtx, boundMs: bound }), req) };
  };

  const doc = jsonOf(await api.call('GET', '/v1/openapi.json'));
  if (!doc) throw new Error('fuzz: GET /v1/openapi.json did not answer with JSON');
  const ops = operations(doc);
  for (const where of unboundedNumbers(ops)) record([{ kind: 'unbounded_number', route: where.split(' ').slice(0, 2).join(' '), message: `${where}: a number without a minimum and a maximum in the OpenAPI document` }], undefined);

  const canary = opts.dataDir ? new Canary(opts.dataDir, tag) : undefined;
  canary?.plant();
  if (canary && !canary.ownDir) log(`the data dir shares ${path.dirname(path.resolve(canary.dataDir))} with other entries: new entries there are not checked (the canary is)`);
  const world = new World(api, tag, canary?.traversals() ?? ['../../../../../../etc/passwd', '/etc/passwd'], log);
  const stalls: Array<Promise<void>> = [];
  try {
    await world.setup(opts.victims ?? 1);
    stalls.push(...stallProbes(world));
    const rng = mulberry32(seed);
    const weights = ops.map((op) => (isExpensive(op) ? 0.6 : 1));
    const total = weights.reduce((a, b) => a + b, 0);
    const pick = (): Op => {
      let x = rng() * total;
      for (const [i, w] of weights.entries()) if ((x -= w) <= 0) return ops[i]!;
      return ops[ops.length - 1]!;
    };

    for (; Date.now() < deadline; round++) {
      const roundSeed = (seed + round * 7919) | 0;
      const left = deadline - Date.now();
      // (the schedule draws the same numbers whatever the round does)
      const op = pick();
      const r = rng();
      // (by round, not by time: the same seed, the same schedule; none close to the end)
      if (round % STORM_EVERY === STORM_EVERY - 1 && left > 40_000) await storm(roundSeed);
      else if (r < 0.07) await rawRound(roundSeed);
      else if (r < 0.25 && !isExpensive(op)) await burstRound(op, roundSeed);
      else await opRound(op, roundSeed);
      await world.reap();
      if (round % 8 === 7) {
        await health();
        await world.heal();
      }
    }
  } finally {
    await Promise.all(stalls);
    await health();
    const s = world.stable ? await world.state(world.stable) : undefined;
    if (world.stable && s?.state !== 'running') record([{ kind: 'sandbox_failed', route: 'GET /v1/sandboxes/{id}', message: `the stable sandbox ${world.stable} is ${s?.state ?? 'gone'} (${s?.errorCode ?? ''} ${s?.endReason ?? ''})` }], undefined);
    await world.teardown().catch((err: unknown) => log(`clean-up failed: ${(err as Error).message}`));
    if (canary) {
      record(canary.check(), undefined);
      canary.remove();
    }
    api.close();
  }

  const report: FuzzReport = { seed, durationMs: Date.now() - t0, requests, rounds: round, storms, statuses, findings: [...findings.values()], allowed: [...allowed.values()] };
  log(`done: ${requests} requests in ${round} rounds (${storms} storms), ${report.findings.length} finding(s), ${report.allowed.length} allowed; seed ${seed}`);
  return report;

  async function health(): Promise<void> {
    const res = await api.call('GET', '/v1/health');
    count({ route: 'GET /v1/health', method: 'GET', path: '/v1/health', headers: {} }, res);
    if (res.status !== 200 || jsonOf<{ ok?: boolean }>(res)?.ok !== true) {
      record([{ kind: 'health', route: 'GET /v1/health', message: `health answered ${res.timedOut ? 'nothing in time' : res.error ?? res.status}` }], undefined);
    }
  }

  /** One operation, fuzzed: fast-check generates requests and shrinks a failing one (cheap routes). */
  async function opRound(op: Op, roundSeed: number): Promise<void> {
    const expensive = isExpensive(op);
    const numRuns = expensive ? 5 : 25;
    const maxCalls = numRuns + (expensive ? 0 : 30);
    let calls = 0;
    let failing: Finding[] = [];
    const property = fc.asyncProperty(requestArb(op, world.pools()), async (req) => {
      // (past the budget or the run's end, shrinking stops: the smallest failing request so far
      // is kept; fast-check's own time limit would leave a request running past the round)
      if (++calls > maxCalls || Date.now() > deadline) return true;
      const { fresh } = await exchange(world, req);
      if (!fresh.length) return true;
      failing = fresh;
      return false;
    });
    const details = await fc.check(property, { seed: roundSeed, numRuns, endOnFailure: expensive });
    if (details.failed && failing.length && details.counterexamplePath) {
      for (const f of failing) f.counterexamplePath = details.counterexamplePath;
    }
  }

  /** Requests of one operation all at once (races among them: files, commands, lists). */
  async function burstRound(op: Op, roundSeed: number): Promise<void> {
    const reqs = fc.sample(requestArb(op, world.pools()), { seed: roundSeed, numRuns: 12 });
    await Promise.all(reqs.map((req) => exchange(world, req)));
  }

  /** Malformed HTTP: every one answered (4xx with a code) or, for what is not HTTP at all, closed. */
  async function rawRound(roundSeed: number): Promise<void> {
    const key = opts.apiKey;
    const auth = `authorization: Bearer ${key}\r\n`;
    const fixed: Array<[string, string]> = [
      ['not HTTP', 'GARBAGE\r\n\r\n'],
      ['unknown method', 'FOO /v1/health HTTP/1.1\r\nhost: x\r\n\r\n'],
      ['HTTP/7.0', 'GET /v1/health HTTP/7.0\r\nhost: x\r\n\r\n'],
      ['NUL in the path', `GET /v1/sandboxes/\0 HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
      ['bytes above 0x7f in the path', `GET /v1/sandboxes/\xff\xfe HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
      ['bad percent-encoding', `GET /v1/sandboxes/%ZZ HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
      ['bad percent-encoding in the query', `GET /v1/sandboxes?state=%ZZ HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
      ['huge header', `GET /v1/health HTTP/1.1\r\nhost: x\r\n${auth}x-big: ${'a'.repeat(20_000)}\r\n\r\n`],
      ['two content lengths', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}`],
      ['bad chunk', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`],
      ['content length not a number', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ncontent-length: abc\r\n\r\n{}`],
      ['chunked and a length', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n2\r\n{}\r\n0\r\n\r\n`],
      ['header without a colon', `GET /v1/health HTTP/1.1\r\nhost x\r\n${auth}\r\n`],
      ['absolute URI', `GET http://example.com/v1/health HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
      ['no host', `GET /v1/health HTTP/1.1\r\n${auth}\r\n`],
      ['HTTP/1.0', `GET /v1/health HTTP/1.0\r\n${auth}\r\n`],
      ['h2c upgrade', `GET /v1/health HTTP/1.1\r\nhost: x\r\n${auth}connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`],
      ['JSON in UTF-16', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json; charset=utf-16\r\ncontent-length: 4\r\n\r\n\xff\xfe{\0`],
      ['HEAD of a file', `HEAD /v1/sandboxes/${world.stable}/files?path=/etc/hostname HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
      ['OPTIONS', `OPTIONS /v1/sandboxes HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
      ['TRACE', `TRACE /v1/health HTTP/1.1\r\nhost: x\r\n${auth}\r\n`],
    ];
    const randomLine = fc
      .tuple(fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'), fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/1.1 x', ''))
      .map(([m, bytes, v]): [string, string] => ['random request line', `${m} /v1/${Buffer.from(bytes).toString('latin1')} ${v}\r\nhost: x\r\n${auth}\r\n`]);
    const probes = fc.sample(fc.oneof(fc.constantFrom(...fixed), randomLine), { seed: roundSeed, numRuns: 6 });
    for (const [name, text] of probes) {
      const req: FuzzRequest = { route: `(raw) ${name}`, method: text.split(' ')[0] ?? 'RAW', path: '', headers: {}, raw: Buffer.from(text, 'latin1') };
      const res = await sendRaw(api.base, req.raw!, { boundMs, maxBody: 64 * 1024, bodyMs: 2000, agent: api.agent });
      count(req, res);
      // (bytes that are not an HTTP request at all may be answered by closing the connection)
      const closedIsFine = res.error && !res.timedOut;
      record(closedIsFine ? [] : judge(req, res, judgeCtx), req);
    }
  }

  /**
   * Requests that stop half-way (headers, a JSON body, an upload's body): each must be answered
   * (408) or closed within stallBoundMs. They run in the background while the rest goes on.
   */
  function stallProbes(w: World): Array<Promise<void>> {
    const auth = `authorization: Bearer ${opts.apiKey}\r\n`;
    const probes: Array<[string, string]> = [
      ['stalled headers', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: appl`],
      ['stalled JSON body', `POST /v1/sandboxes/${w.victims[0] ?? w.stable}/timeout HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ncontent-length: 100\r\n\r\n{"timeoutMs":`],
      ['stalled chunked body', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n`],
      ['stalled upload', `PUT /v1/sandboxes/${w.stable}/files?path=/workspace/fuzz/stalled HTTP/1.1\r\nhost: x\r\n${auth}content-length: 1000000\r\n\r\n${'x'.repeat(5000)}`],
      ['body never sent after 100-continue', `POST /v1/gc HTTP/1.1\r\nhost: x\r\n${auth}content-type: application/json\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n`],
    ];
    return probes.map(async ([name, text]) => {
      const req: FuzzRequest = { route: `(stall) ${name}`, method: 'RAW', path: '', headers: {}, raw: Buffer.from(text, 'latin1') };
      const res = await sendRaw(api.base, req.raw!, { boundMs: stallBoundMs, maxBody: 64 * 1024, bodyMs: stallBoundMs, agent: api.agent });
      count(req, res);
      if (res.timedOut) record([{ kind: 'stall_held_open', route: req.route, message: `neither answered nor closed within ${stallBoundMs} ms`, request: describe(req) }], req);
      else if (!res.error) {
        const found = judge(req, res, judgeCtx);
        if (res.status !== 408) found.push({ kind: 'stall_answer', route: req.route, message: `answered ${res.status}, not 408`, request: describe(req), status: res.status });
        record(found, req);
      }
    });
  }

  /** Conflicting calls at once on one sandbox; then it must settle, not fail, and work. */
  async function storm(roundSeed: number): Promise<void> {
    const id = await world.runningVictim(storms);
    if (!id) {
      record([{ kind: 'storm_setup', route: '(storm)', message: 'no running victim sandbox could be had (resume and create failed)' }], undefined);
      return;
    }
    storms++;
    const stormBound = boundMs * 2;
    const property = fc.asyncProperty(stormArb, async (calls) => {
      log(`storm on ${id}: ${calls.map((c) => c.action).join(' ')}`);
      const answers = await Promise.all(
        calls.map(async ({ action, delayMs }, i) => {
          await new Promise((r) => setTimeout(r, delayMs));
          return exchange(world, stormRequest(action, id, i), stormBound);
        }),
      );
      const fresh = answers.flatMap((a) => a.fresh);
      const s = await world.settle(id, stormBound);
      const actions = calls.map((c) => c.action).join(' ');
      const f = (kind: string, message: string) => fresh.push(...record([{ kind, route: '(storm)', message: `${message} after: ${actions}` }], undefined));
      if (!s?.state) f('storm_lost_sandbox', `GET /v1/sandboxes/${id} failed`);
      else if (!SETTLED.has(s.state)) f('stuck_state', `${id} is still ${s.state} ${stormBound} ms after the last answer`);
      else if (s.state === 'failed') f('sandbox_failed', `${id} failed (${s.errorCode ?? ''}: ${s.endReason ?? ''})`);
      else if ((s.state === 'killed' || s.state === 'gone') && !calls.some((c) => c.action === 'kill')) f('sandbox_killed', `${id} is ${s.state} without a kill (${s.endReason ?? ''})`);
      else if (s.state !== 'killed' && s.state !== 'gone') {
        if (s.state === 'paused') {
          const r = await api.call('POST', `/v1/sandboxes/${id}/resume`, {}, { boundMs: stormBound });
          if (r.status !== 200) f('unusable_after_storm', `resume of the paused ${id} answered ${r.status} ${r.body.toString().slice(0, 200)}`);
        }
        const out = await api.call('POST', `/v1/sandboxes/${id}/commands`, { cmd: 'echo ok', timeoutMs: 30_000 }, { boundMs: stormBound, bodyMs: 30_000 });
        const ended = ndjson(out.body).find((e) => e.type === 'end');
        if (out.status !== 200 || ended?.exitCode !== 0) f('unusable_after_storm', `a command in ${id} answered ${out.status} ${out.body.toString().slice(0, 200)}`);
      }
      return fresh.length === 0;
    });
    await fc.check(property, { seed: roundSeed, numRuns: 1, endOnFailure: true });
  }

  function stormRequest(action: StormAction, id: string, i: number): FuzzRequest {
    const json = (route: string, method: string, p: string, body?: unknown): FuzzRequest => ({
      route,
      method,
      path: p,
      headers: { authorization: `Bearer ${opts.apiKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : Buffer.from(JSON.stringify(body)),
    });
    const s = `/v1/sandboxes/${id}`;
    const meta = { metadata: { fuzz: tag } };
    switch (action) {
      case 'kill':
        return json('DELETE /v1/sandboxes/{id}', 'DELETE', s);
      case 'hibernate':
        return json('POST /v1/sandboxes/{id}/hibernate', 'POST', `${s}/hibernate`, {});
      case 'pause':
        return json('POST /v1/sandboxes/{id}/pause', 'POST', `${s}/pause`);
      case 'snapshot':
        return json('POST /v1/sandboxes/{id}/snapshots', 'POST', `${s}/snapshots`, meta);
      case 'fork':
        return json('POST /v1/sandboxes/{id}/fork', 'POST', `${s}/fork`, meta);
      case 'resume':
        return json('POST /v1/sandboxes/{id}/resume', 'POST', `${s}/resume`, {});
      case 'timeout':
        return json('POST /v1/sandboxes/{id}/timeout', 'POST', `${s}/timeout`, { timeoutMs: 3_600_000 });
      case 'write':
        return { ...json('PUT /v1/sandboxes/{id}/files', 'PUT', `${s}/files?path=/workspace/fuzz/storm-${i}`), body: Buffer.alloc(200_000, 0x61) };
      case 'read':
        return json('GET /v1/sandboxes/{id}/files', 'GET', `${s}/files?path=/etc/hostname`);
      case 'bigread':
        return json('GET /v1/sandboxes/{id}/files', 'GET', `${s}/files?path=/usr/bin/bash`);
      case 'list':
        return json('GET /v1/sandboxes/{id}/files/list', 'GET', `${s}/files/list?path=/workspace&depth=2`);
      case 'slowlist':
        return json('GET /v1/sandboxes/{id}/files/list', 'GET', `${s}/files/list?path=/usr&depth=4`);
      case 'processes':
        return json('GET /v1/sandboxes/{id}/commands', 'GET', `${s}/commands`);
      case 'mkdir':
        return json('POST /v1/sandboxes/{id}/files/mkdir', 'POST', `${s}/files/mkdir`, { path: `/workspace/fuzz/d-${i}` });
      case 'command':
        return json('POST /v1/sandboxes/{id}/commands', 'POST', `${s}/commands`, { cmd: 'echo storm; sleep 0.5', timeoutMs: 10_000 });
      case 'bgcommand':
        return json('POST /v1/sandboxes/{id}/commands', 'POST', `${s}/commands`, { cmd: 'sleep 5', background: true, timeoutMs: 10_000 });
      case 'get':
        return json('GET /v1/sandboxes/{id}', 'GET', s);
      case 'stat':
        return json('GET /v1/sandboxes/{id}/files/stat', 'GET', `${s}/files/stat?path=/workspace`);
    }
  }
}
