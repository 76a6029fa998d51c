/**
 * The benchmark's E2B rows: the same operations through E2B's own SDK (`e2b`, driving nullspace's
 * E2B-compatible surface) and through nullspace's SDK, in the same run on the same server: create,
 * a command round trip, a 1 MiB file write + read. The ratio column is E2B's SDK over nullspace's:
 * what the translation (and E2B's wire: Connect envelopes, multipart) costs. E2B's SDK runs every
 * command in a login shell (`/bin/bash -l -c`): a second command row compares it with nullspace's
 * SDK running that same login shell, so that the guest does the same work on both sides.
 */
import { randomBytes } from 'node:crypto';
import { Sandbox } from 'nullspace';
import { median, type Row } from './stats.js';

interface Ctx {
  conn: { apiUrl: string; apiKey: string };
  n: number;
  log: (m: string) => void;
  /** Resolves once the server's warm pools are full (nothing else measured takes CPU). */
  poolReady: () => Promise<unknown>;
}

const MiB = 1048576;

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** One sample of each operation with one SDK, on a sandbox it creates and kills. */
interface Client {
  create(): Promise<{ run(): Promise<void>; runLogin(): Promise<void>; fileRoundTrip(data: Buffer): Promise<void>; kill(): Promise<void> }>;
}

/** Command round trips per sandbox (after one that warms the guest's page cache). */
const RUNS = 3;

export async function e2bRows(ctx: Ctx): Promise<{ rows: Row[]; notes: string[] }> {
  // (a devDependency of the repository, not of the CLI: without it the rows are skipped)
  let E2bSandbox: typeof import('e2b').Sandbox;
  try {
    E2bSandbox = (await import('e2b')).Sandbox;
  } catch (err) {
    return { rows: [], notes: [`E2B rows skipped: the e2b package is not installed (${(err as Error).message.split('\n')[0]})`] };
  }
  const { apiUrl, apiKey } = ctx.conn;
  const metadata = { bench: `e2b-${randomBytes(3).toString('hex')}` };
  const data = randomBytes(MiB);
  const check = (got: Buffer) => {
    if (!got.equals(data)) throw new Error('file read back differs');
  };
  const clients: Record<'e2b' | 'nullspace', Client> = {
    e2b: {
      create: async () => {
        const s = await E2bSandbox.create({ apiUrl, sandboxUrl: apiUrl, apiKey, metadata });
        return {
          run: async () => void (await s.commands.run('true')),
          // (the SDK sends /bin/bash -l -c true already)
          runLogin: async () => void (await s.commands.run('true')),
          fileRoundTrip: async (d) => {
            await s.files.write('/tmp/bench.bin', new Uint8Array(d).buffer);
            check(Buffer.from(await s.files.read('/tmp/bench.bin', { format: 'bytes' })));
          },
          kill: async () => void (await s.kill()),
        };
      },
    },
    nullspace: {
      create: async () => {
        const s = await Sandbox.create({ ...ctx.conn, metadata });
        return {
          run: async () => void (await s.commands.run('true')),
          runLogin: async () => void (await s.commands.run('/bin/bash -l -c true')),
          fileRoundTrip: async (d) => {
            await s.files.write('/tmp/bench.bin', d);
            check(Buffer.from(await s.files.read('/tmp/bench.bin', { format: 'bytes' })));
          },
          kill: async () => void (await s.kill()),
        };
      },
    },
  };
  const fresh = () => ({ create: [] as number[], run: [] as number[], login: [] as number[], file: [] as number[] });
  const samples = { e2b: fresh(), nullspace: fresh() };
  for (let i = 0; i < ctx.n; i++) {
    ctx.log(`E2B SDK vs nullspace SDK ${i + 1}/${ctx.n}: create, command, 1 MiB file`);
    // alternating which goes first, so that neither always meets a pool being refilled
    for (const name of (i % 2 ? ['nullspace', 'e2b'] : ['e2b', 'nullspace']) as Array<'e2b' | 'nullspace'>) {
      await ctx.poolReady();
      let sbx: Awaited<ReturnType<Client['create']>> | undefined;
      try {
        samples[name].create.push(await time(async () => (sbx = await clients[name].create())));
        await sbx!.run(); // (the first command warms the guest's page cache)
        await sbx!.runLogin();
        for (let r = 0; r < RUNS; r++) {
          samples[name].run.push(await time(() => sbx!.run()));
          samples[name].login.push(await time(() => sbx!.runLogin()));
        }
        samples[name].file.push(await time(() => sbx!.fileRoundTrip(data)));
      } finally {
        await sbx?.kill().catch(() => {});
      }
    }
  }
  const vs = (xs: number[]) => ({ value: median(xs), label: 'nullspace SDK' });
  return {
    rows: [
      { name: 'E2B SDK: create', unit: 'ms', samples: samples.e2b.create, ref: vs(samples.nullspace.create), target: '<= 1.2x' },
      { name: 'E2B SDK: command round trip (true)', unit: 'ms', samples: samples.e2b.run, ref: vs(samples.nullspace.run), target: '<= 1.2x' },
      { name: 'E2B SDK: the same, vs bash -l -c true', unit: 'ms', samples: samples.e2b.login, ref: { value: median(samples.nullspace.login), label: 'nullspace SDK, bash -l' }, target: '<= 1.2x' },
      { name: 'E2B SDK: 1 MiB file write + read', unit: 'ms', samples: samples.e2b.file, ref: vs(samples.nullspace.file), target: '<= 1.2x' },
      { name: '  nullspace SDK: create', unit: 'ms', samples: samples.nullspace.create },
      { name: '  nullspace SDK: command round trip (true)', unit: 'ms', samples: samples.nullspace.run },
      { name: '  nullspace SDK: bash -l -c true', unit: 'ms', samples: samples.nullspace.login },
      { name: '  nullspace SDK: 1 MiB file write + read', unit: 'ms', samples: samples.nullspace.file },
    ],
    notes: [],
  };
}
