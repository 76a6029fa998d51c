import { NsError } from '@nullspace/runtime';

/** A comma-separated query value of allowed words (`state=running,paused`), or `fallback` when absent. */
export function parseList<T extends string>(raw: string | undefined, allowed: readonly T[], field: string, fallback: T[]): T[] {
  if (!raw) return fallback;
  const wanted = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (!wanted.length) return fallback; // (`state=,` is no filter word at all: the default, not everything)
  for (const w of wanted) {
    if (!(allowed as readonly string[]).includes(w)) throw new NsError('bad_request', `unknown ${field} "${w}"`, { details: { field } });
  }
  return wanted as T[];
}

export function parseMetadataFilter(raw: string | string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new NsError('bad_request', `metadata filter "${pair}" must be key=value`, { details: { field: 'metadata' } });
    const key = pair.slice(0, eq);
    if (!/^[A-Za-z0-9_.:/-]{1,128}$/.test(key)) throw new NsError('bad_request', `metadata filter key "${key}" is not a metadata key`, { details: { field: 'metadata' } });
    out[key] = pair.slice(eq + 1);
  }
  return out;
}
