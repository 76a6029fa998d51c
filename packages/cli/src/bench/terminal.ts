/**
 * The benchmark's terminal rows: the round trip of one keystroke through a terminal (typed through
 * the API, echoed by the guest's line discipline, back in the output stream), against the round
 * trip of one command (`true`) on the same sandbox.
 */
import { Sandbox } from 'nullspace';
import type { Row } from './stats.js';

export async function terminalRows(conn: { apiUrl: string; apiKey: string }, n: number, poolReady: () => Promise<unknown>): Promise<Row[]> {
  const sbx = await Sandbox.create({ ...conn, metadata: { bench: 'terminal' } });
  try {
    let seen = '';
    let waiting: { text: string; resolve: () => void } | undefined;
    const h = await sbx.pty.create({
      // cat: no prompt redraws, each key echoed as it is typed
      cmd: 'stty -icanon; exec cat >/dev/null',
      onData: (d) => {
        seen += Buffer.from(d).toString('utf8');
        if (waiting && seen.includes(waiting.text)) waiting.resolve();
      },
    });
    const echoOf = async (key: string): Promise<number> => {
      seen = '';
      const done = new Promise<void>((resolve) => (waiting = { text: key, resolve }));
      const t0 = performance.now();
      await h.sendInput(key);
      await done;
      return performance.now() - t0;
    };
    await echoOf('w'); // the first key wakes the paths up
    await poolReady();
    const keys: number[] = [];
    const commands: number[] = [];
    for (let i = 0; i < n * 3; i++) {
      keys.push(await echoOf(String.fromCharCode(97 + (i % 26))));
      const t0 = performance.now();
      await sbx.commands.run('true');
      commands.push(performance.now() - t0);
    }
    await h.kill();
    return [
      { name: 'terminal keystroke echo round trip', unit: 'ms', samples: keys, ref: { value: commands.sort((a, b) => a - b)[commands.length >> 1]!, label: 'command round trip' } },
      { name: 'command round trip (`true`)', unit: 'ms', samples: commands },
    ];
  } finally {
    await sbx.kill().catch(() => {});
  }
}
