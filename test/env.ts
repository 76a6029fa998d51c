import fs from 'node:fs';

/** Where tests put their data dirs: on the reflink-capable storage, short enough for unix sockets. */
export const TEST_ROOT = process.env.NULLSPACE_TEST_ROOT ?? '/var/lib/nullspace/tmp';

/** Pids of QEMU processes whose command line mentions `needle` (e.g. a data dir). */
export function leftoverQemu(needle: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.startsWith('qemu-system') && cmd.includes(needle)) {
        const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
        if (!stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) out.push(Number(p));
      }
    } catch {
      /* gone */
    }
  }
  return out;
}
