/**
 * Egress rows of the benchmark: connection setup and download throughput from a guest to a host
 * outside it, without rules (user-mode networking alone) and with a name rule (every TCP connection
 * then goes through the sandbox's egress proxy: SNI/Host peek, splice). The destination is a
 * network namespace the benchmark creates (10.213.78.0/24; the guest cannot reach this host's own
 * addresses), serving HTTP; removed at the end, also on failure.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Sandbox, SandboxOpts } from 'nullspace';
import { median, type Row } from './stats.js';

export interface EgressBenchCtx {
  quick: boolean;
  create: (opts?: SandboxOpts) => Promise<Sandbox>;
  kill: (s: Sandbox) => Promise<void>;
  log: (m: string) => void;
}

const NET = '10.213.78';
const IP = `${NET}.2`;
const NAME = 'bench.example.test';

/** The namespace and its HTTP server (`/` a short answer, `/big?mib=N` N MiB); returns its removal. */
async function destination(): Promise<() => Promise<void>> {
  const tag = randomBytes(3).toString('hex');
  const ns = `nsbeg-${tag}`;
  const hostSide = `nbeh${tag}`;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  const undo: Array<() => unknown> = [];
  const remove = async () => {
    for (const u of undo.splice(0).reverse()) {
      try {
        await u();
      } catch {
        /* already gone */
      }
    }
  };
  try {
    ip('netns', 'add', ns);
    undo.push(() => ip('netns', 'del', ns));
    ip('link', 'add', hostSide, 'type', 'veth', 'peer', 'name', `nben${tag}`, 'netns', ns);
    undo.push(() => ip('link', 'del', hostSide));
    ip('addr', 'add', `${NET}.1/24`, 'dev', hostSide);
    ip('link', 'set', hostSide, 'up');
    ip('-n', ns, 'addr', 'add', `${IP}/24`, 'dev', `nben${tag}`);
    ip('-n', ns, 'link', 'set', `nben${tag}`, 'up');
    const server = `
      const chunk = Buffer.alloc(1 << 20, 120);
      require('http').createServer((q, s) => {
        const m = /mib=(\\d+)/.exec(q.url);
        if (!m) return s.end('ok');
        let left = Number(m[1]);
        s.writeHead(200, { 'content-length': left * chunk.length });
        const more = () => { while (left > 0) { left--; if (!s.write(chunk)) return s.once('drain', more); } s.end(); };
        more();
      }).listen(80, '0.0.0.0', () => console.log('ready'));`;
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', server], { stdio: ['ignore', 'pipe', 'inherit'] });
    undo.push(
      () =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the benchmark's egress destination exited with ${code}`)));
    });
    return remove;
  } catch (err) {
    await remove();
    throw err;
  }
}

export async function egressRows({ quick, create, kill, log }: EgressBenchCtx): Promise<Row[]> {
  const n = quick ? 10 : 50;
  const mib = quick ? 32 : 200;
  const remove = await destination();
  const sandboxes: Sandbox[] = [];
  try {
    const measure = async (s: Sandbox) => {
      const curl = `curl -s -o /dev/null --resolve ${NAME}:80:${IP}`;
      // a new connection each time: connect, request, answer (curl's own time, without its start)
      const setup = (await s.commands.run(`for i in $(seq ${n}); do ${curl} -w '%{time_total}\\n' http://${NAME}/; done`, { timeoutMs: 300_000 })).stdout
        .trim()
        .split('\n')
        .map((v) => Number(v) * 1000);
      const rates: number[] = [];
      for (let i = 0; i < (quick ? 1 : 3); i++) {
        const r = await s.commands.run(`${curl} -w '%{size_download} %{speed_download}' 'http://${NAME}/big?mib=${mib}'`, { timeoutMs: 300_000 });
        const [size, speed] = r.stdout.trim().split(' ').map(Number);
        if (size !== mib * 1048576) throw new Error(`egress download: ${r.stdout} ${r.stderr}`);
        rates.push(speed! / 1048576);
      }
      return { setup, rates };
    };
    log('egress: without rules');
    const plain = await create({});
    sandboxes.push(plain);
    const none = await measure(plain);
    log('egress: with a name rule (through the egress proxy)');
    // a deny name: every TCP connection goes through the proxy, which lets this one through
    const proxied = await create({ network: { denyOut: ['blocked.example.test'] } });
    sandboxes.push(proxied);
    const named = await measure(proxied);
    return [
      { name: 'egress: new connection + request, no rules', unit: 'ms', samples: none.setup },
      { name: '  same with a name rule (egress proxy)', unit: 'ms', samples: named.setup, ref: { value: median(none.setup), label: 'no rules' } },
      { name: `egress: download (${mib} MiB), no rules`, unit: 'MiB/s', samples: none.rates },
      { name: '  same with a name rule (egress proxy)', unit: 'MiB/s', samples: named.rates, ref: { value: median(none.rates), label: 'no rules' } },
    ];
  } finally {
    for (const s of sandboxes) await kill(s);
    await remove();
  }
}
