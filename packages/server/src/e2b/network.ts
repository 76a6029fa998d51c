import type { EgressRules } from '@nullspace/runtime';
import { E2bError, notSupported } from './errors.js';

/** E2B's name for every IPv4 destination (the SDK's ALL_TRAFFIC). */
const ALL_TRAFFIC = '0.0.0.0/0';

function strings(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new E2bError(400, `network.${field} must be an array of strings (IPs, CIDRs or domain names)`);
  return v as string[];
}

/**
 * E2B's egress settings (`network.allowOut` / `network.denyOut` at create, the body of
 * `PUT /sandboxes/{id}/network`) as nullspace's rules, or undefined when none are given.
 *
 * The two differ in precedence: on E2B an allow rule is an exception to the deny rules (its usual
 * form: `denyOut: [ALL_TRAFFIC], allowOut: [...]`); in nullspace a deny rule wins, and a non-empty
 * allow list refuses everything else. What maps exactly:
 * - `denyOut` containing ALL_TRAFFIC: nullspace's allow list is `allowOut` (everything else refused);
 *   with no `allowOut`, the deny rules as given (ALL_TRAFFIC refuses every IPv4 destination).
 * - `denyOut` without ALL_TRAFFIC and no `allowOut`: the deny rules as given.
 * What does not (an exception inside a narrower deny rule, `rules` transforms, an `egressProxy`)
 * is refused with a message saying so, never silently widened or narrowed.
 */
export function e2bEgressRules(network: Record<string, unknown>): EgressRules | undefined {
  if (network.rules !== undefined && network.rules !== null) throw notSupported('network.rules (per-host request transforms)');
  if (network.egressProxy !== undefined && network.egressProxy !== null) throw notSupported('network.egressProxy');
  if (network.allowOut === undefined && network.denyOut === undefined) return undefined;
  const allow = strings(network.allowOut, 'allowOut');
  const deny = strings(network.denyOut, 'denyOut');
  if (deny.includes(ALL_TRAFFIC)) {
    // (other deny rules are moot on E2B then: everything is denied but the allow list)
    return allow.length ? { allowOut: allow, denyOut: [] } : { allowOut: [], denyOut: deny };
  }
  if (allow.length) {
    throw new E2bError(
      400,
      'network.allowOut without ALL_TRAFFIC in network.denyOut is not supported: nullspace cannot make an allow rule an exception to a narrower deny rule (use denyOut: [ALL_TRAFFIC] with allowOut, or denyOut alone; see docs/api.md, "E2B compatibility")',
    );
  }
  return { allowOut: [], denyOut: deny };
}
