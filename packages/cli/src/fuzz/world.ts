/**
 * The server objects a fuzz run aims at (a stable sandbox for files and commands, victims for
 * lifecycle calls, snapshots, volumes, processes), what it learns from answers, its clean-up; and
 * the canary: host files next to the data dir that traversal attempts aim at.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { jsonOf, send, type FuzzRequest, type FuzzResponse, type SendOpts } from './http.js';
import type { Finding } from './oracle.js';
import type { Pools } from './gen.js';

export class Api {
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  constructor(
    readonly base: URL,
    readonly key: string,
    readonly opts: Omit<SendOpts, 'agent'>,
  ) {}

  send(req: FuzzRequest, over: Partial<SendOpts> = {}): Promise<FuzzResponse> {
    return send(this.base, req, { ...this.opts, agent: this.agent, ...over });
  }

  /** A well-formed call of the fuzzer's own (set-up, checks, clean-up). */
  call(method: string, p: string, body?: unknown, over: Partial<SendOpts> = {}): Promise<FuzzResponse> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.key}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    return this.send({ route: `${method} ${p}`, method, path: p, headers, body: body === undefined ? undefined : Buffer.from(JSON.stringify(body)) }, over);
  }

  close(): void {
    this.agent.destroy();
  }
}

/**
 * States a sandbox rests in; `gone`: its record is no longer there (404), which a killed sandbox's
 * is once NULLSPACE_ENDED_RETENTION_MS has passed (the soak keeps them briefly).
 */
const ENDED = new Set(['killed', 'failed', 'gone']);
export const SETTLED = new Set(['running', 'paused', 'killed', 'failed', 'gone']);

export class World {
  stable = '';
  victims: string[] = [];
  snapshots: string[] = [];
  volumes: string[] = [];
  pids: number[] = [];
  /** Everything the run created, for the clean-up. */
  readonly created = { sandboxes: new Set<string>(), snapshots: new Set<string>(), volumes: new Set<string>() };
  /** Sandboxes created by fuzzed calls: killed after the round (they are not aimed at). */
  private toKill = new Set<string>();

  constructor(
    readonly api: Api,
    readonly tag: string,
    readonly traversals: string[],
    private readonly log: (line: string) => void,
  ) {}

  pools(): Pools {
    return {
      stable: this.stable,
      victims: [...this.victims],
      snapshots: [...this.snapshots],
      volumes: [...this.volumes],
      pids: [...this.pids],
      templates: ['base'],
      traversals: this.traversals,
      tag: this.tag,
      apiKey: this.api.key,
    };
  }

  async createSandbox(extra: Record<string, unknown> = {}): Promise<string> {
    const res = await this.api.call('POST', '/v1/sandboxes', { metadata: { fuzz: this.tag }, timeoutMs: 3_600_000, ...extra });
    const id = jsonOf<{ sandboxId?: string }>(res)?.sandboxId;
    if (res.status !== 201 || !id) throw new Error(`fuzz set-up: creating a sandbox failed: ${res.status} ${res.body.toString().slice(0, 300)}`);
    this.created.sandboxes.add(id);
    return id;
  }

  /** The stable sandbox (with a snapshot, a volume and processes) and the victims. */
  async setup(victims: number): Promise<void> {
    const vol = `fz-${this.tag}`;
    const v = await this.api.call('POST', '/v1/volumes', { name: vol });
    if (v.status === 201) {
      this.volumes.push(vol);
      this.created.volumes.add(vol);
    }
    this.stable = await this.createSandbox();
    for (let i = 0; i < victims; i++) this.victims.push(await this.createSandbox());
    const snap = await this.api.call('POST', `/v1/sandboxes/${this.stable}/snapshots`, { metadata: { fuzz: this.tag } });
    const sid = jsonOf<{ snapshotId?: string }>(snap)?.snapshotId;
    if (sid) {
      this.snapshots.push(sid);
      this.created.snapshots.add(sid);
    }
    await this.api.call('POST', `/v1/sandboxes/${this.stable}/files/mkdir`, { path: '/workspace/fuzz' });
    await this.api.call('POST', `/v1/sandboxes/${this.stable}/files/mkdir`, { path: '/tmp/fuzz' });
    for (const body of [{ cmd: 'cat', background: true, stdin: true, timeoutMs: 0 }, { cmd: 'sleep 100000', background: true, timeoutMs: 0 }]) {
      const r = await this.api.call('POST', `/v1/sandboxes/${this.stable}/commands`, body);
      const pid = jsonOf<{ pid?: number }>(r)?.pid;
      if (pid) this.pids.push(pid);
    }
    this.log(`set up: stable ${this.stable}, victims ${this.victims.join(' ')}, snapshot ${sid ?? '(failed)'}, volume ${vol}, pids ${this.pids.join(' ')}`);
  }

  /** Learns from an answer: what it created or deleted. */
  observe(req: FuzzRequest, res: FuzzResponse): void {
    if (res.status < 200 || res.status >= 300) return;
    const j = jsonOf<Record<string, unknown>>(res);
    const route = req.route;
    if ((route === 'POST /v1/sandboxes' || route.endsWith('/fork')) && typeof j?.sandboxId === 'string') {
      this.created.sandboxes.add(j.sandboxId);
      this.toKill.add(j.sandboxId);
    }
    // (a fork with count: {sandboxes: [...]})
    if (route.endsWith('/fork') && Array.isArray(j?.sandboxes)) {
      for (const s of j.sandboxes as Array<{ sandboxId?: unknown }>) {
        if (typeof s.sandboxId !== 'string') continue;
        this.created.sandboxes.add(s.sandboxId);
        this.toKill.add(s.sandboxId);
      }
    }
    if ((route.endsWith('/snapshots') || route.endsWith('/hibernate') || route.endsWith('/pause')) && typeof j?.snapshotId === 'string') {
      this.created.snapshots.add(j.snapshotId);
      if (this.snapshots.length < 12) this.snapshots.push(j.snapshotId);
    }
    if (route === 'POST /v1/volumes' && typeof j?.name === 'string') {
      this.created.volumes.add(j.name);
      if (this.volumes.length < 6) this.volumes.push(j.name);
    }
    if (route.endsWith('/commands') && req.method === 'POST' && typeof j?.pid === 'number' && req.path.includes(this.stable) && this.pids.length < 24) this.pids.push(j.pid);
    if (req.method === 'DELETE' && res.status === 204) {
      const last = decodeURIComponent(req.path.split('?')[0]!.split('/').pop() ?? '');
      if (route === 'DELETE /v1/snapshots/{id}') this.snapshots = this.snapshots.filter((s) => s !== last);
      if (route === 'DELETE /v1/volumes/{name}') this.volumes = this.volumes.filter((s) => s !== last);
    }
  }

  /** Kills what fuzzed calls created (children, new sandboxes). */
  async reap(): Promise<void> {
    const ids = [...this.toKill];
    this.toKill.clear();
    await Promise.all(ids.map((id) => this.api.call('DELETE', `/v1/sandboxes/${id}`)));
  }

  async state(id: string): Promise<{ state?: string; errorCode?: string | null; endReason?: string | null } | undefined> {
    const r = await this.api.call('GET', `/v1/sandboxes/${id}`);
    if (r.status === 404) return { state: 'gone' };
    return r.status === 200 ? jsonOf(r) : undefined;
  }

  /** Waits until the sandbox is in a settled state (not creating, hibernating, resuming or killing). */
  async settle(id: string, boundMs: number): Promise<{ state?: string; errorCode?: string | null; endReason?: string | null } | undefined> {
    const deadline = Date.now() + boundMs;
    for (;;) {
      const s = await this.state(id);
      if (!s || (s.state && SETTLED.has(s.state)) || Date.now() > deadline) return s;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** A running victim (resumed or replaced as needed), or undefined when that failed. */
  async runningVictim(index: number): Promise<string | undefined> {
    if (!this.victims.length) return undefined;
    const i = index % this.victims.length;
    const id = this.victims[i]!;
    const s = await this.settle(id, 60_000);
    if (s?.state === 'running') return id;
    if (s?.state === 'paused') {
      const r = await this.api.call('POST', `/v1/sandboxes/${id}/resume`, {}, { boundMs: 120_000 });
      if (r.status === 200) return id;
    }
    if (!s?.state || ENDED.has(s.state) || s.state === 'paused') {
      try {
        const fresh = await this.createSandbox();
        this.victims[i] = fresh;
        return fresh;
      } catch (err) {
        this.log(`could not replace victim ${id}: ${(err as Error).message}`);
      }
    }
    return undefined;
  }

  /** Replaces victims that ended (a kill, an expiry), so that lifecycle calls keep hitting live ones. */
  async heal(): Promise<void> {
    for (let i = 0; i < this.victims.length; i++) {
      const s = await this.state(this.victims[i]!);
      if (!s?.state || ENDED.has(s.state)) {
        try {
          this.victims[i] = await this.createSandbox();
        } catch (err) {
          this.log(`could not replace victim: ${(err as Error).message}`);
        }
      }
    }
  }

  /** Kills every sandbox of the run and deletes its snapshots and volumes (best effort). */
  async teardown(): Promise<void> {
    const listed = await this.api.call('GET', `/v1/sandboxes?limit=1000&state=creating,running,hibernating,paused,resuming,killing&metadata=${encodeURIComponent(`fuzz=${this.tag}`)}`);
    for (const s of jsonOf<{ sandboxes?: Array<{ sandboxId: string }> }>(listed)?.sandboxes ?? []) this.created.sandboxes.add(s.sandboxId);
    await Promise.all([...this.created.sandboxes].map((id) => this.api.call('DELETE', `/v1/sandboxes/${id}`, undefined, { boundMs: 120_000 })));
    for (const id of this.created.snapshots) await this.api.call('DELETE', `/v1/snapshots/${id}`);
    for (const name of this.created.volumes) await this.api.call('DELETE', `/v1/volumes/${encodeURIComponent(name)}`);
  }
}

/**
 * Files next to the server's data dir that traversal attempts aim at (named like what the server
 * keeps: an API key, a database, sandbox and volume directories, template files). After the run
 * they must be unchanged, and no new entry may have appeared next to the data dir.
 */
export class Canary {
  readonly dir: string;
  private readonly parent: string;
  private before = new Map<string, string>();
  private siblings = new Set<string>();
  /**
   * Whether the data dir has a directory of its own (nothing else next to it), so that any new
   * entry there is a finding. In a shared directory (the soak's, under the test root where other
   * runs come and go) that check is left out; the canary's is not.
   */
  ownDir = false;

  constructor(
    readonly dataDir: string,
    tag: string,
  ) {
    this.parent = path.dirname(path.resolve(dataDir));
    this.dir = path.join(this.parent, `.nullspace-fuzz-canary-${tag}`);
  }

  plant(): void {
    const files = ['secret', 'api-key', 'nullspace.db', 'base.json', 'sandboxes/sbx_canary0000000000/mem', 'volumes/vol_canary/file', 'layers/lyr_canary.qcow2', 'templates/base.json'];
    for (const f of files) {
      const p = path.join(this.dir, f);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, randomBytes(64).toString('hex'), { mode: 0o644 });
    }
    this.before = this.fingerprint();
    this.siblings = new Set(fs.readdirSync(this.parent));
    this.ownDir = [...this.siblings].every((n) => n === path.basename(this.dir) || n === path.basename(path.resolve(this.dataDir)));
  }

  /** Strings that lead from anywhere on the host (or from the data dir) to the canary. */
  traversals(): string[] {
    const name = path.basename(this.dir);
    const out = [this.dir, `${this.dir}/secret`, `${this.dir}/sandboxes/sbx_canary0000000000`, `${this.dir}/base`, `../${name}`, `../../${name}/secret`, `../${name}/api-key`];
    for (let d = 1; d <= 8; d += 1) out.push(`${'../'.repeat(d)}${this.dir.slice(1)}/secret`);
    out.push(`..%2F..%2F${name}%2Fsecret`, `....//....//${name}`, `..\\..\\${name}`, `${this.dir}\0.json`, `file://${this.dir}/secret`);
    return out;
  }

  private fingerprint(): Map<string, string> {
    const out = new Map<string, string>();
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        const st = fs.lstatSync(p);
        const rel = path.relative(this.dir, p);
        if (e.isDirectory()) {
          out.set(rel, `dir ${st.mode}`);
          walk(p);
        } else out.set(rel, `${e.isFile() ? 'file' : 'other'} ${st.mode} ${st.size} ${st.mtimeMs} ${e.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : ''}`);
      }
    };
    if (fs.existsSync(this.dir)) walk(this.dir);
    return out;
  }

  check(): Finding[] {
    const out: Finding[] = [];
    const after = this.fingerprint();
    for (const [rel, fp] of this.before) {
      if (after.get(rel) !== fp) out.push({ kind: 'host_file_changed', route: '(host)', message: `${path.join(this.dir, rel)} ${after.has(rel) ? 'changed' : 'disappeared'}` });
    }
    for (const rel of after.keys()) if (!this.before.has(rel)) out.push({ kind: 'host_file_changed', route: '(host)', message: `${path.join(this.dir, rel)} appeared` });
    for (const name of this.ownDir ? fs.readdirSync(this.parent) : []) {
      if (!this.siblings.has(name) && name !== path.basename(this.dir)) out.push({ kind: 'new_entry_next_to_data_dir', route: '(host)', message: `${path.join(this.parent, name)} appeared next to the data dir` });
    }
    return out;
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
