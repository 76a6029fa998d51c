import fs from 'node:fs';
import path from 'node:path';
import { NsError } from './errors.js';
import { run } from './exec.js';

/**
 * Each sandbox's QEMU runs under its own unprivileged uid (QEMU `-runas uid:gid`, after it opened
 * its files as root). The uid owns only that sandbox's directory, so a compromised QEMU can read no
 * other sandbox's disk or memory, and the host firewall can tell sandbox traffic apart.
 *
 * Uids come from a host-wide range and are claimed with lock files in a host-wide directory (on
 * tmpfs: a reboot ends every VM and frees every uid), so several servers on one host never share one.
 */
export class UidAllocator {
  constructor(
    private readonly dir: string,
    readonly base: number,
    readonly count: number,
  ) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** Claims a free uid for `owner` (a string naming the sandbox, e.g. "<dataDir> <id>"). */
  allocate(owner: string): number {
    for (let attempt = 0; attempt < 1000; attempt++) {
      const uid = this.base + Math.floor(Math.random() * this.count);
      try {
        fs.writeFileSync(path.join(this.dir, String(uid)), owner, { flag: 'wx', mode: 0o600 });
        return uid;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    throw new NsError('too_many_sandboxes', `no free sandbox uid in ${this.base}..${this.base + this.count - 1}`);
  }

  /** Re-claims a uid after a server restart (true when it is ours or was free). */
  claim(uid: number, owner: string): boolean {
    const file = path.join(this.dir, String(uid));
    try {
      fs.writeFileSync(file, owner, { flag: 'wx', mode: 0o600 });
      return true;
    } catch {
      try {
        return fs.readFileSync(file, 'utf8') === owner;
      } catch {
        return false;
      }
    }
  }

  release(uid: number, owner: string): void {
    const file = path.join(this.dir, String(uid));
    try {
      if (fs.readFileSync(file, 'utf8') === owner) fs.rmSync(file, { force: true });
    } catch {
      /* already free */
    }
  }

  /** Frees uids claimed by owners starting with `prefix` that `keep` does not list. */
  sweep(prefix: string, keep: Set<number>): void {
    for (const f of fs.readdirSync(this.dir)) {
      const uid = Number(f);
      if (!Number.isInteger(uid) || keep.has(uid)) continue;
      try {
        if (fs.readFileSync(path.join(this.dir, f), 'utf8').startsWith(prefix)) fs.rmSync(path.join(this.dir, f), { force: true });
      } catch {
        /* raced */
      }
    }
  }
}

/**
 * The nftables table of one sandbox uid range (`inet nullspace_<base>_<count>`). One per range, so
 * that servers with different ranges on one host each keep their own rules (one fixed table would
 * be replaced by whichever server started last).
 */
export function nftTable(base: number, count: number): string {
  return `nullspace_${Math.trunc(base)}_${Math.trunc(count)}`;
}

/**
 * Installs (atomically replaces) the host firewall rules that keep sandboxes off the host: packets
 * that sandbox QEMU processes (uids base..base+count-1, i.e. the guests' user-mode networking) send
 * to any address of this host (the API server, other sandboxes' ports, anything on loopback) or to
 * link-local addresses (cloud metadata services) are rejected. DNS to a resolver on this host stays
 * allowed. Requires root and nftables.
 */
export async function installNetworkGuard(base: number, count: number): Promise<void> {
  const range = `${base}-${base + count - 1}`;
  const table = nftTable(base, count);
  const script = [
    `table inet ${table}`,
    `delete table inet ${table}`,
    `table inet ${table} {`,
    `  chain sandbox_egress {`,
    `    type filter hook output priority 0; policy accept;`,
    `    meta skuid ${range} fib daddr type local udp dport 53 accept`,
    `    meta skuid ${range} fib daddr type local tcp dport 53 accept`,
    // connections the egress rules (egress.ts) redirected to the sandbox's own egress proxy on
    // loopback, and that proxy's answers (it runs as the sandbox's uid)
    `    meta skuid ${range} ct direction original ct status dnat ip daddr 127.0.0.1 accept`,
    `    meta skuid ${range} ct direction original ct status dnat ip6 daddr ::1 accept`,
    `    meta skuid ${range} ct direction reply ct status dnat accept`,
    // (TCP with a reset: the guest's connect fails at once instead of hanging)
    `    meta skuid ${range} fib daddr type local meta l4proto tcp counter reject with tcp reset`,
    `    meta skuid ${range} fib daddr type local counter reject`,
    `    meta skuid ${range} ip daddr 169.254.0.0/16 meta l4proto tcp counter reject with tcp reset`,
    `    meta skuid ${range} ip daddr 169.254.0.0/16 counter reject`,
    `    meta skuid ${range} ip6 daddr fe80::/10 counter reject`,
    `  }`,
    `}`,
  ].join('\n');
  try {
    await run('nft', ['-f', '-'], { input: script + '\n', errorCode: 'network_isolation_failed' });
  } catch (err) {
    throw new NsError(
      'network_isolation_failed',
      `cannot install the sandbox firewall rules (nftables, as root): ${(err as Error).message}. ` +
        'Install nftables and run the server as root, or set NULLSPACE_NETWORK_ISOLATION=off to run without them (sandboxes could then reach this host).',
      { cause: err },
    );
  }
}

/** Whether the rules of `installNetworkGuard` are in place (a ruleset flush, e.g. an nftables reload, removes them). */
export async function networkGuardPresent(base: number, count: number): Promise<boolean> {
  try {
    const out = (await run('nft', ['list', 'table', 'inet', nftTable(base, count)], { errorCode: 'network_isolation_failed' })).stdout;
    // (the redirect exception too: a server of an older version on this host installs the guard without it)
    return out.includes('sandbox_egress') && out.includes('reject') && out.includes('ct status dnat');
  } catch {
    return false;
  }
}

/** Gives a sandbox directory tree to its VM uid. */
export function chownTree(dir: string, uid: number): void {
  fs.chownSync(dir, uid, uid);
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) chownTree(p, uid);
    else fs.lchownSync(p, uid, uid);
  }
}
