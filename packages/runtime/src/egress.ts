import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { NsError } from './errors.js';
import { run } from './exec.js';
import { Hasher } from './hash.js';
import type { Progress } from './progress.js';

/**
 * Egress rules: which destinations a sandbox's guest may connect to (docs/api.md "Egress rules",
 * docs/ARCHITECTURE.md "Egress rules"). A rule is an IPv4/IPv6 address, a CIDR, a domain name
 * (`example.com`: that name only) or a wildcard (`*.example.com`: any name under it, not itself).
 *
 * Decision for one connection to address A asking for name N (the TLS SNI or the HTTP Host; none
 * for other protocols): refused when a deny rule matches A or N (deny wins over any allow, however
 * specific); otherwise allowed when the allow list is empty or an allow rule matches A or N;
 * otherwise refused. This host, the link-local range and other sandboxes stay refused whatever the
 * rules say (the firewall's guard, isolation.ts, is evaluated before these rules and cannot be
 * overridden by them).
 *
 * Enforcement: addresses by nftables rules keyed by the sandbox's uid (`meta skuid`: its QEMU's
 * user-mode network makes every guest connection a host socket of that uid); names by a transparent
 * proxy per sandbox (egress/, Go) to which nftables redirects the TCP connections whose fate depends
 * on a name rule.
 */
export interface EgressRules {
  allowOut: string[];
  denyOut: string[];
}

export const EGRESS_MAX_RULES = 256;

/** The group the egress proxy runs with (its uid is the sandbox's): its own connections are not redirected. */
export const EGRESS_PROXY_GID = 65534;

type Rule = { kind: 'net'; family: 4 | 6; cidr: string } | { kind: 'domain'; name: string };

const DOMAIN_RE = /^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((a, p) => a * 256 + Number(p), 0);
}

/** One rule, normalized (lower case, no trailing dot, the CIDR's host bits zero); throws `invalid_network_rule`. */
export function parseEgressRule(raw: string, field: string): Rule {
  const fail = (why: string) =>
    new NsError('invalid_network_rule', `${field}: ${JSON.stringify(raw)} is not a rule: ${why}`, { details: { field, rule: raw } });
  if (typeof raw !== 'string') throw fail('not a string');
  const s = raw.trim().toLowerCase().replace(/\.$/, '');
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const family = net.isIP(addr);
  if (family) {
    const max = family === 4 ? 32 : 128;
    let bits = max;
    if (slash >= 0) {
      const p = s.slice(slash + 1);
      if (!/^\d{1,3}$/.test(p) || Number(p) > max) throw fail(`the prefix length must be 0..${max}`);
      bits = Number(p);
    }
    if (family === 4 && bits < 32) {
      const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      if (((ipv4ToInt(addr) & mask) >>> 0) !== ipv4ToInt(addr)) throw fail('host bits are set after the prefix (write the network address)');
    }
    return { kind: 'net', family: family as 4 | 6, cidr: bits === max ? addr : `${addr}/${bits}` };
  }
  if (slash >= 0 || s.length > 253 || !DOMAIN_RE.test(s) || s === '*') throw fail('expected an IP address, a CIDR, a domain name or *.domain');
  if (/^[\d.]+$/.test(s)) throw fail('not a valid IPv4 address');
  return { kind: 'domain', name: s };
}

/** Validates and normalizes a rule set (throws `invalid_network_rule`). */
export function parseEgressRules(input: { allowOut?: readonly string[] | undefined; denyOut?: readonly string[] | undefined }, prefix = 'network'): EgressRules {
  const norm = (list: readonly string[] | undefined, field: string): string[] => {
    if (!list) return [];
    if (list.length > EGRESS_MAX_RULES) {
      throw new NsError('invalid_network_rule', `${field}: at most ${EGRESS_MAX_RULES} rules`, { details: { field } });
    }
    const out: string[] = [];
    list.forEach((r, i) => {
      const p = parseEgressRule(r, `${field}[${i}]`);
      const s = p.kind === 'net' ? p.cidr : p.name;
      if (!out.includes(s)) out.push(s);
    });
    return out;
  };
  return { allowOut: norm(input.allowOut, `${prefix}.allowOut`), denyOut: norm(input.denyOut, `${prefix}.denyOut`) };
}

export function hasEgressRules(r: EgressRules | null | undefined): r is EgressRules {
  return !!r && (r.allowOut.length > 0 || r.denyOut.length > 0);
}

/** Whether some connection's fate depends on its name (then TCP goes through the proxy). */
export function needsEgressProxy(r: EgressRules): boolean {
  return [...r.allowOut, ...r.denyOut].some((s) => parseEgressRule(s, 'rule').kind === 'domain');
}

function classify(list: string[]): { nets: Array<{ family: 4 | 6; cidr: string }>; domains: string[] } {
  const nets: Array<{ family: 4 | 6; cidr: string }> = [];
  const domains: string[] = [];
  for (const s of list) {
    const r = parseEgressRule(s, 'rule');
    if (r.kind === 'net') nets.push({ family: r.family, cidr: r.cidr });
    else domains.push(r.name);
  }
  return { nets, domains };
}

/** The nameservers the guest's DNS (QEMU's 10.0.2.3) is forwarded to: always reachable on port 53. */
export function hostResolvers(resolvConf = '/etc/resolv.conf'): string[] {
  try {
    return fs
      .readFileSync(resolvConf, 'utf8')
      .split('\n')
      .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
      .filter((a): a is string => !!a && net.isIP(a) !== 0);
  } catch {
    return [];
  }
}

/** The nftables table of the egress rules of one sandbox uid range (next to the guard's, isolation.ts). */
export function egressTable(base: number, count: number): string {
  return `nullspace_${Math.trunc(base)}_${Math.trunc(count)}_egress`;
}

/**
 * The per-sandbox egress rules in nftables: a filter chain (priority 10, after the guard's) and a
 * nat chain (redirects to the sandbox's proxy), each reached from a verdict map keyed by uid.
 */
export class EgressFirewall {
  readonly table: string;

  constructor(
    base: number,
    count: number,
    private readonly resolvers: string[] = hostResolvers(),
  ) {
    this.table = egressTable(base, count);
  }

  private async nft(script: string): Promise<void> {
    await run('nft', ['-f', '-'], { input: script + '\n', errorCode: 'network_isolation_failed' });
  }

  /** Creates the table (keeps it and its sandboxes' chains when it exists: a restarted server re-applies its sandboxes). */
  async install(): Promise<void> {
    const t = `inet ${this.table}`;
    await this.nft(
      [
        `add table ${t}`,
        `add map ${t} filter_uids { type uid : verdict; }`,
        `add map ${t} nat_uids { type uid : verdict; }`,
        `add chain ${t} filter_out { type filter hook output priority 10; policy accept; }`,
        `add chain ${t} nat_out { type nat hook output priority -90; policy accept; }`,
        `flush chain ${t} filter_out`,
        `flush chain ${t} nat_out`,
        `add rule ${t} filter_out meta skuid vmap @filter_uids`,
        `add rule ${t} nat_out meta skuid vmap @nat_uids`,
      ].join('\n'),
    );
  }

  async present(): Promise<boolean> {
    try {
      const out = (await run('nft', ['list', 'table', 'inet', this.table], { errorCode: 'network_isolation_failed' })).stdout;
      return out.includes('filter_uids');
    } catch {
      return false;
    }
  }

  /**
   * Installs (atomically replaces) the rules of the sandbox running as `uid`. `proxy`: its egress
   * proxy's port (needed when a rule is a name). Connections already open are left alone.
   */
  async apply(uid: number, rules: EgressRules, proxy?: { port: number; ipv6: boolean }): Promise<void> {
    const t = `inet ${this.table}`;
    const f = `f_${uid}`;
    const n = `n_${uid}`;
    const c = `r_${uid}`;
    const allow = classify(rules.allowOut);
    const deny = classify(rules.denyOut);
    const ipx = (fam: 4 | 6) => (fam === 4 ? 'ip' : 'ip6');
    const lines = [`add chain ${t} ${f}`, `flush chain ${t} ${f}`, `add chain ${t} ${n}`, `flush chain ${t} ${n}`, `add counter ${t} ${c}`];
    const fr = (rule: string) => lines.push(`add rule ${t} ${f} ${rule}`);
    const refuse = (match: string) => {
      fr(`${match} meta l4proto tcp counter name ${c} reject with tcp reset`);
      fr(`${match} counter name ${c} reject`);
    };
    fr(`meta skgid ${EGRESS_PROXY_GID} return`);
    fr('ct state established,related return');
    // redirected to this sandbox's proxy by the nat chain below (which decides by name)
    fr('ct status dnat return');
    // this host's addresses: the guard's (DNS to a local resolver is allowed there, the rest refused)
    fr('fib daddr type local return');
    for (const r of this.resolvers) {
      const fam = net.isIP(r) as 4 | 6;
      fr(`${ipx(fam)} daddr ${r} udp dport 53 return`);
      fr(`${ipx(fam)} daddr ${r} tcp dport 53 return`);
    }
    for (const d of deny.nets) refuse(`${ipx(d.family)} daddr ${d.cidr}`);
    if (rules.allowOut.length) {
      for (const a of allow.nets) fr(`${ipx(a.family)} daddr ${a.cidr} return`);
      refuse('');
    }
    if (proxy && (allow.domains.length || deny.domains.length)) {
      const nr = (rule: string) => lines.push(`add rule ${t} ${n} ${rule}`);
      nr(`meta skgid ${EGRESS_PROXY_GID} return`);
      nr('meta l4proto != tcp return');
      nr('fib daddr type local return');
      nr('ip daddr 169.254.0.0/16 return');
      nr('ip6 daddr fe80::/10 return');
      for (const d of deny.nets) nr(`${ipx(d.family)} daddr ${d.cidr} return`);
      // an allowed address needs no name unless a name can still deny it
      if (!deny.domains.length) for (const a of allow.nets) nr(`${ipx(a.family)} daddr ${a.cidr} return`);
      nr(`${proxy.ipv6 ? '' : 'meta nfproto ipv4 '}meta l4proto tcp redirect to :${proxy.port}`);
    }
    lines.push(`add element ${t} filter_uids { ${uid} : jump ${f} }`, `add element ${t} nat_uids { ${uid} : jump ${n} }`);
    await this.nft(lines.join('\n'));
  }

  /** Removes the rules of `uid` (nothing when there are none). */
  async remove(uid: number): Promise<void> {
    const t = `inet ${this.table}`;
    // each object is added first so that its deletion cannot fail: one atomic transaction either way
    await this.nft(
      [
        `add chain ${t} f_${uid}`,
        `add chain ${t} n_${uid}`,
        `add counter ${t} r_${uid}`,
        `add element ${t} filter_uids { ${uid} : jump f_${uid} }`,
        `add element ${t} nat_uids { ${uid} : jump n_${uid} }`,
        `delete element ${t} filter_uids { ${uid} }`,
        `delete element ${t} nat_uids { ${uid} }`,
        `delete chain ${t} f_${uid}`,
        `delete chain ${t} n_${uid}`,
        `delete counter ${t} r_${uid}`,
      ].join('\n'),
    );
  }

  /** Connections (packets of new flows) the firewall refused for `uid` since its rules were installed. */
  async refused(uid: number): Promise<number> {
    try {
      const out = (await run('nft', ['-j', 'list', 'counter', 'inet', this.table, `r_${uid}`], { errorCode: 'network_isolation_failed' })).stdout;
      const j = JSON.parse(out) as { nftables: Array<{ counter?: { packets: number } }> };
      return j.nftables.find((e) => e.counter)?.counter?.packets ?? 0;
    } catch {
      return 0;
    }
  }
}

/** What enforces egress rules on a host (absent without network isolation). */
export interface EgressHost {
  readonly firewall: EgressFirewall;
  /** The egress proxy binary (egress/, built at server start). */
  readonly proxyBinary: string;
}

/** Identity of the egress proxy binary (its Go sources). */
export function egressProxyHash(dir: string): string {
  return new Hasher().addTree('egress', dir, (rel) => !(rel === 'go.mod' || (rel.endsWith('.go') && !rel.endsWith('_test.go')))).hex(12);
}

/** Builds the egress proxy (Go, standard library only) into the cache, keyed by its sources; readable by sandbox uids. */
export async function buildEgressProxy(dir: string, cacheDir: string, progress?: Progress): Promise<string> {
  const version = egressProxyHash(dir);
  const out = path.join(cacheDir, 'egress', version);
  const binary = path.join(out, 'nullspace-egress');
  if (fs.existsSync(binary)) return binary;
  const build = async () => {
    fs.mkdirSync(out, { recursive: true, mode: 0o755 });
    const tmp = `${binary}.tmp${process.pid}`;
    await run('go', ['build', '-trimpath', '-ldflags', '-s -w', '-o', tmp, '.'], {
      cwd: dir,
      env: { ...process.env, CGO_ENABLED: '0', GOCACHE: path.join(cacheDir, 'go-build'), GOFLAGS: '-mod=readonly' },
      errorCode: 'network_isolation_failed',
    });
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, binary);
  };
  if (progress) await progress.step(`egress proxy ${version} (go build)`, build);
  else await build();
  fs.chmodSync(path.join(cacheDir, 'egress'), 0o755);
  return binary;
}

/**
 * One sandbox's egress proxy process (egress/main.go): runs as the sandbox's uid with the group
 * EGRESS_PROXY_GID, takes its rules as JSON lines on stdin, reports its port and its refusals on
 * stdout. It ends when its stdin closes (this server's end included).
 */
export class EgressProxy {
  private refusedCount = 0;
  private exitedFlag = false;
  private waiters: Array<() => void> = [];

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly port: number,
    readonly ipv6: boolean,
    private readonly lines: readline.Interface,
  ) {
    lines.on('line', (l) => {
      try {
        const m = JSON.parse(l) as { refused?: number; applied?: boolean };
        if (m.refused) this.refusedCount += m.refused;
        if (m.applied) this.waiters.shift()?.();
      } catch {
        /* not ours */
      }
    });
    child.on('exit', () => {
      this.exitedFlag = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async start(binary: string, uid: number, rules: EgressRules): Promise<EgressProxy> {
    const child = spawn(binary, [], { uid, gid: EGRESS_PROXY_GID, stdio: ['pipe', 'pipe', 'pipe'] }) as ChildProcessWithoutNullStreams;
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
    const lines = readline.createInterface({ input: child.stdout });
    child.stdin.write(JSON.stringify(rules) + '\n');
    const first = await new Promise<{ port: number; ipv6: boolean }>((resolve, reject) => {
      const onLine = (l: string) => {
        try {
          const m = JSON.parse(l) as { port?: number; ipv6?: boolean };
          if (m.port) {
            lines.off('line', onLine);
            resolve({ port: m.port, ipv6: m.ipv6 === true });
          }
        } catch {
          /* ignore */
        }
      };
      lines.on('line', onLine);
      child.once('error', reject);
      child.once('exit', (code) => reject(new NsError('network_isolation_failed', `the egress proxy exited (${code}): ${stderr.trim()}`)));
    });
    return new EgressProxy(child, first.port, first.ipv6, lines);
  }

  get refused(): number {
    return this.refusedCount;
  }

  get exited(): boolean {
    return this.exitedFlag;
  }

  /** Replaces its rules (resolves once the proxy applies them to new connections). */
  async update(rules: EgressRules): Promise<void> {
    if (this.exitedFlag) return;
    const done = new Promise<void>((resolve) => this.waiters.push(resolve));
    this.child.stdin.write(JSON.stringify(rules) + '\n');
    await done;
  }

  close(): void {
    this.lines.close();
    this.child.stdin.end();
    if (!this.exitedFlag) this.child.kill('SIGKILL');
  }
}
