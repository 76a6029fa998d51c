/**
 * Preview URL rows of the benchmark: a request through `<port>-<id>.<domain>` (the proxy and the
 * agent's net.connect tunnel) against the same request inside the guest, throughput with 20
 * concurrent clients, a large download through the proxy against `files.read` of the same file, a
 * WebSocket echo round trip, and a request to a hibernated auto-resume sandbox.
 */
import http from 'node:http';
import { Sandbox, type SandboxOpts } from 'nullspace';
import { download, request, startGuestServer, WsClient, type Target } from './preview-guest.js';
import { median, type Row } from './stats.js';

export interface PreviewBenchCtx {
  conn: { apiUrl: string; apiKey: string };
  quick: boolean;
  create: (opts?: SandboxOpts) => Promise<Sandbox>;
  kill: (s: Sandbox) => Promise<void>;
  log: (m: string) => void;
}

const MiB = 1048576;

export async function previewRows({ conn, quick, create, kill, log }: PreviewBenchCtx): Promise<Row[]> {
  const n = quick ? 10 : 50;
  const s = await create({ timeoutMs: 1_800_000, lifecycle: { onTimeout: 'hibernate', autoResume: true } });
  await startGuestServer(s);
  const t: Target = { url: conn.apiUrl, host: s.getHost(8000) };
  const tok = { 'x-nullspace-traffic-token': s.trafficAccessToken };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
  try {
    log('preview: request latency through the preview URL and inside the guest');
    await request(t, '/', { headers: tok, agent }); // (the tunnel of the keep-alive pool opens)
    const viaProxy: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await request(t, '/', { headers: tok, agent });
      if (r.status !== 200) throw new Error(`preview request: ${r.status} ${r.body.toString().slice(0, 200)}`);
      viaProxy.push(performance.now() - t0);
    }
    // the same request by curl in the guest (its own loopback; curl's own time, without its start)
    const inGuest = (await s.commands.run(`for i in $(seq ${n}); do curl -s -o /dev/null -w '%{time_total}\\n' http://127.0.0.1:8000/; done`, { timeoutMs: 300_000 })).stdout
      .trim()
      .split('\n')
      .map((v) => Number(v) * 1000);

    log('preview: 20 concurrent clients');
    const total = quick ? 100 : 1000;
    let next = 0;
    const t1 = performance.now();
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (next < total) {
          next++;
          const r = await request(t, '/', { headers: tok, agent });
          if (r.status !== 200) throw new Error(`preview request: ${r.status}`);
        }
      }),
    );
    const rps = total / ((performance.now() - t1) / 1000);

    log('preview: large download through the proxy and by files.read');
    const size = quick ? 32 : 200;
    await s.commands.run(`head -c ${size}M /dev/urandom > /workspace/big`, { timeoutMs: 300_000 });
    const proxyMiBs: number[] = [];
    const readMiBs: number[] = [];
    const guestMiBs: number[] = [];
    for (let i = 0; i < (quick ? 1 : 3); i++) {
      let t0 = performance.now();
      const d = await download(t, '/file?path=/workspace/big', tok);
      if (d.bytes !== size * MiB) throw new Error(`download: ${d.bytes} bytes`);
      proxyMiBs.push(size / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      let got = 0;
      for await (const chunk of await s.files.read('/workspace/big', { format: 'stream' })) got += chunk.length;
      if (got !== size * MiB) throw new Error(`files.read: ${got} bytes`);
      readMiBs.push(size / ((performance.now() - t0) / 1000));
      // the guest's server alone (its loopback, no tunnel): the ceiling of the proxy's rate
      const speed = await s.commands.run("curl -s -o /dev/null -w '%{speed_download}' 'http://127.0.0.1:8000/file?path=/workspace/big'", { timeoutMs: 300_000 });
      guestMiBs.push(Number(speed.stdout) / MiB);
    }

    log('preview: WebSocket echo');
    const ws = await WsClient.open(t, '/ws', tok);
    const echo: number[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        ws.send(`ping ${i}`);
        await ws.next();
        echo.push(performance.now() - t0);
      }
    } finally {
      ws.close();
    }

    log('preview: a request to a hibernated sandbox with autoResume');
    agent.destroy();
    const wake: number[] = [];
    for (let i = 0; i < (quick ? 1 : 3); i++) {
      await s.hibernate();
      const t0 = performance.now();
      const r = await request(t, '/', { headers: tok });
      if (r.status !== 200) throw new Error(`woken request: ${r.status} ${r.body.toString().slice(0, 200)}`);
      wake.push(performance.now() - t0);
    }
    const inGuestMs = { value: median(inGuest), label: 'curl in the guest' };
    return [
      { name: 'preview URL request (keep-alive)', unit: 'ms', samples: viaProxy, ref: inGuestMs },
      { name: '  same request by curl in the guest', unit: 'ms', samples: inGuest },
      { name: 'preview URL, 20 concurrent clients', unit: 'req/s', samples: [rps] },
      { name: `preview URL download (${size} MiB)`, unit: 'MiB/s', samples: proxyMiBs, ref: { value: median(readMiBs), label: 'files.read' } },
      { name: `  files.read of the same file`, unit: 'MiB/s', samples: readMiBs },
      { name: `  the same download by curl in the guest`, unit: 'MiB/s', samples: guestMiBs },
      { name: 'preview URL WebSocket echo round trip', unit: 'ms', samples: echo },
      { name: 'request to hibernated autoResume -> answer', unit: 'ms', samples: wake },
    ];
  } finally {
    agent.destroy();
    await kill(s).catch(() => {});
  }
}
