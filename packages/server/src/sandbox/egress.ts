import { EgressProxy, hasEgressRules, needsEgressProxy, NsError, type EgressHost, type EgressRules } from '@nullspace/runtime';
import type { Logger } from '../log.js';
import type { SandboxStore } from '../store/sandboxes.js';
import type { LiveSandbox } from './live.js';

interface Bound {
  id: string;
  uid: number;
  proxy: EgressProxy | undefined;
}

/**
 * The egress rules of running sandboxes (runtime egress.ts): installed when a sandbox's VM runs
 * (create, resume, fork, re-adoption after a restart), replaced at once on an update, removed with
 * the VM, their refusals added to the sandbox's record then.
 */
export class EgressRulesService {
  private readonly bound = new Map<string, Bound>();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly host: EgressHost | undefined,
    private readonly store: SandboxStore,
    private readonly log: Logger,
    checkMs = 10_000,
  ) {
    if (host) {
      this.timer = setInterval(() => void this.restoreTable(), checkMs);
      this.timer.unref();
    }
  }

  /**
   * A ruleset flush (an nftables reload) removes the egress table with every sandbox's rules:
   * installed again, with the rules of the running sandboxes (their refusals counted so far are lost).
   */
  private checking = false;
  private async restoreTable(): Promise<void> {
    const host = this.host!;
    if (this.checking) return;
    this.checking = true;
    try {
      if (await host.firewall.present()) return;
      this.log.error({ table: `inet ${host.firewall.table}` }, 'the egress rules table was gone (an nftables reload?): installing it again with the running sandboxes\' rules');
      await host.firewall.install();
      for (const b of this.bound.values()) {
        const rec = await this.store.get(b.id);
        if (rec && hasEgressRules(rec.egress)) await this.install(b, rec.egress);
      }
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'reinstalling the egress rules failed');
    } finally {
      this.checking = false;
    }
  }

  /** Whether rules can be enforced here (409 `network_rules_unsupported` otherwise). */
  check(rules: EgressRules | null | undefined): void {
    if (hasEgressRules(rules) && !this.host) {
      throw new NsError(
        'network_rules_unsupported',
        'egress rules need the host firewall: this server runs with NULLSPACE_NETWORK_ISOLATION=off',
      );
    }
  }

  /** Installs the rules of the sandbox whose VM `live` now runs; their removal is registered on its lifetime. */
  async bind(live: LiveSandbox): Promise<void> {
    const rec = await this.store.get(live.id);
    const uid = live.vm.spec.runAsUid;
    if (!this.host || uid === undefined || !rec) return;
    const b: Bound = { id: live.id, uid, proxy: undefined };
    this.bound.set(live.id, b);
    live.own('egress rules', () => this.unbind(live.id, b));
    await this.install(b, rec.egress);
  }

  private async install(b: Bound, rules: EgressRules | null): Promise<void> {
    const host = this.host!;
    if (!hasEgressRules(rules)) {
      // the counter goes with the rules: its count is kept in the record first
      await this.bank(b.id, (await host.firewall.refused(b.uid)) + this.closeProxy(b));
      await host.firewall.remove(b.uid);
      return;
    }
    if (needsEgressProxy(rules)) {
      if (b.proxy && !b.proxy.exited) await b.proxy.update(rules);
      else b.proxy = await EgressProxy.start(host.proxyBinary, b.uid, rules);
    }
    await host.firewall.apply(b.uid, rules, b.proxy && !b.proxy.exited ? { port: b.proxy.port, ipv6: b.proxy.ipv6 } : undefined);
    // the redirect is gone first: then the proxy that no longer gets connections
    if (b.proxy && !needsEgressProxy(rules)) await this.bank(b.id, this.closeProxy(b));
  }

  /** Stops the proxy of `b`; returns its refusals. */
  private closeProxy(b: Bound): number {
    const n = b.proxy?.refused ?? 0;
    b.proxy?.close();
    b.proxy = undefined;
    return n;
  }

  /** Adds refusals to the sandbox's record (those of counters about to go). */
  private async bank(id: string, n: number): Promise<void> {
    // (one update adding to the stored count: never a read and a later write)
    if (n) await this.store.addEgressRefused(id, n);
  }

  /** New rules for a sandbox (stored; effective at once for new connections when its VM runs). */
  async update(id: string, rules: EgressRules): Promise<void> {
    await this.store.patch(id, { egress: hasEgressRules(rules) ? rules : null });
    const b = this.bound.get(id);
    if (b) await this.install(b, rules);
  }

  /** Connections refused in the sandbox's current VM life. */
  async liveRefused(id: string): Promise<number> {
    const b = this.bound.get(id);
    if (!b || !this.host) return 0;
    return (await this.host.firewall.refused(b.uid)) + (b.proxy?.refused ?? 0);
  }

  private async unbind(id: string, b: Bound): Promise<void> {
    if (this.bound.get(id) === b) this.bound.delete(id);
    if (!this.host) return;
    await this.bank(id, (await this.host.firewall.refused(b.uid)) + this.closeProxy(b));
    await this.host.firewall.remove(b.uid);
  }

  /**
   * The server closes: the proxies end (their counts kept in the records); the firewall rules stay
   * (address rules keep working, name-ruled connections are refused until a restarted server re-adopts
   * the VM and starts a new proxy).
   */
  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const [id, b] of this.bound) await this.bank(id, this.closeProxy(b)).catch(() => {});
    this.bound.clear();
    this.log.debug('egress proxies stopped');
  }
}
