import fs from 'node:fs';
import path from 'node:path';
import {
  buildEgressProxy,
  EgressFirewall,
  canReflink,
  installNetworkGuard,
  networkGuardPresent,
  nftTable,
  UidAllocator,
  compareRequirements,
  detectAccel,
  findTemplate,
  hostProfile,
  listTemplates,
  parseTemplateRef,
  NsError,
  TEMPLATE_NAME_RE,
  type EgressHost,
  type HostProfile,
  type TemplateInfo,
} from '@nullspace/runtime';
import type { Config } from './config.js';
import type { Logger } from './log.js';

/** What the server learned about its host at start: accelerator, VM profile, templates. */
export class HostContext {
  private constructor(
    readonly profile: HostProfile,
    readonly accelReason: string,
    readonly reflink: boolean,
    /** undefined when VMs run as root (only with NULLSPACE_NETWORK_ISOLATION=off). */
    readonly uids: UidAllocator | undefined,
    private readonly cacheDir: string,
    /** Egress rules' firewall and proxy (undefined without network isolation). */
    readonly egress: EgressHost | undefined,
  ) {}

  /**
   * Checks every `intervalMs` that the firewall rules are still in place and installs them again
   * when they are not (an nftables reload or `nft flush ruleset` removes them while sandboxes run),
   * with an error in the log. Returns the function that stops the checks. Nothing without isolation.
   */
  watchNetworkGuard(log: Logger, intervalMs = 10_000): () => void {
    const uids = this.uids;
    if (!uids) return () => {};
    let checking = false;
    const timer = setInterval(() => {
      if (checking) return;
      checking = true;
      void (async () => {
        if (await networkGuardPresent(uids.base, uids.count)) return;
        log.error({ table: `inet ${nftTable(uids.base, uids.count)}` }, 'the sandbox firewall rules were gone (an nftables reload?): installing them again');
        await installNetworkGuard(uids.base, uids.count);
      })()
        .catch((err: unknown) => log.error({ err: (err as Error).message }, 'reinstalling the sandbox firewall rules failed: sandboxes may reach this host'))
        .finally(() => (checking = false));
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  static async init(config: Config, log: Logger): Promise<HostContext> {
    fs.mkdirSync(config.cacheDir, { recursive: true });
    const probeTemplate = findTemplate(config.cacheDir, 'base') ?? listTemplates(config.cacheDir)[0];
    const accel = await detectAccel({
      forced: config.accel,
      cacheDir: config.cacheDir,
      kvmDevice: config.kvmDevice,
      probe: probeTemplate ? { kernel: probeTemplate.image.kernel, initrd: probeTemplate.image.initrd } : undefined,
      log: (m) => log.info(m),
    });
    if (accel.accel === 'tcg') {
      log.warn({ accel: 'tcg', reason: accel.reason }, `accelerator: TCG (software emulation, slow) because ${accel.reason}`);
    } else {
      log.info({ accel: 'kvm', reason: accel.reason }, `accelerator: KVM (${accel.reason})`);
    }
    const profile = await hostProfile({ accel: accel.accel, cpuModel: config.cpuModel, tcgBufferMiB: config.tcgBufferMiB || undefined });
    if (config.tcgBufferMiB && accel.accel === 'kvm') log.warn({ tcgBufferMiB: config.tcgBufferMiB }, 'NULLSPACE_TCG_BUFFER_MIB is ignored: VMs run under KVM');
    const reflink = canReflink(config.dataDir) && canReflink(config.cacheDir);
    if (!reflink) {
      log.warn(
        { dataDir: config.dataDir },
        'the data dir is not on a reflink-capable filesystem (XFS reflink=1 or btrfs): every sandbox start copies its RAM image (slow); scripts/setup.sh can mount one',
      );
    }
    let uids: UidAllocator | undefined;
    let egress: EgressHost | undefined;
    if (config.networkIsolation === 'nft') {
      if (process.getuid?.() !== 0) {
        throw new NsError(
          'invalid_config',
          'the server must run as root: it runs each sandbox VM under its own uid and installs firewall rules that keep sandboxes off this host (NULLSPACE_NETWORK_ISOLATION=off skips both: unsafe)',
        );
      }
      await installNetworkGuard(config.vmUidBase, config.vmUidCount);
      uids = new UidAllocator(path.join(config.runDir, 'vm-uids'), config.vmUidBase, config.vmUidCount);
      const firewall = new EgressFirewall(config.vmUidBase, config.vmUidCount);
      await firewall.install();
      egress = { firewall, proxyBinary: await buildEgressProxy(config.egressProxyDir, config.cacheDir) };
      log.info({ binary: egress.proxyBinary }, 'egress proxy');
    } else {
      log.warn('NULLSPACE_NETWORK_ISOLATION=off: sandbox VMs run as the server user and can reach this host (development only)');
    }
    return new HostContext(profile, accel.reason, reflink, uids, config.cacheDir, egress);
  }

  /** The template registered as `name`, checked against this host. */
  template(ref: string): TemplateInfo {
    const { name } = parseTemplateRef(ref);
    if (!TEMPLATE_NAME_RE.test(name)) throw new NsError('template_not_found', `template ${JSON.stringify(ref)} not found`, { details: { template: ref } });
    const t = findTemplate(this.cacheDir, ref);
    if (!t) {
      throw new NsError('template_not_found', `template "${name}" is not built on this host (run: nullspace template build ${name})`, {
        details: { template: name },
      });
    }
    const mismatches = compareRequirements(t.requirements, this.profile);
    if (mismatches.length) {
      throw new NsError(
        'template_incompatible',
        `template "${name}" was built for another VM profile (${mismatches.map((m) => `${m.field}: ${m.snapshot} vs ${m.host}`).join(', ')}); rebuild it: nullspace template build ${name}`,
        { details: { template: name, mismatches } },
      );
    }
    return t;
  }

  /** Whether sandboxes of `t` can start on this host. */
  compatible(t: TemplateInfo): boolean {
    return compareRequirements(t.requirements, this.profile).length === 0;
  }

  templates(): Array<TemplateInfo & { compatible: boolean }> {
    return listTemplates(this.cacheDir).map((t) => ({ ...t, compatible: compareRequirements(t.requirements, this.profile).length === 0 }));
  }
}
