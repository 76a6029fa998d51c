import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { sendFile } from '../src/vm.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-sendfile-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'state');
fs.writeFileSync(file, Buffer.alloc(4 << 20, 7));

/** A unix socket peer that reads `limit` bytes (all when undefined) and closes; resolves with what it read. */
async function peer(name: string, limit?: number): Promise<{ sock: string; got: Promise<number> }> {
  const sock = path.join(dir, name);
  let done!: (n: number) => void;
  const got = new Promise<number>((r) => (done = r));
  const server = net.createServer((c) => {
    let n = 0;
    c.on('data', (b: Buffer) => {
      n += b.length;
      if (limit !== undefined && n >= limit) c.destroy();
    });
    c.on('close', () => {
      done(n);
      server.close();
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return { sock, got };
}

const openOnFile = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
  } catch {
    return false;
  }
}).length;

it('streams the whole file when the peer reads it all', async () => {
  const p = await peer('all.sock');
  await sendFile(file, p.sock);
  expect(await p.got).toBe(4 << 20);
  expect(openOnFile()).toBe(0);
});

it('closes the file when the peer closes first (as QEMU does at the end marker of a migration)', async () => {
  for (let i = 0; i < 5; i++) {
    const p = await peer(`early-${i}.sock`, 4 << 20);
    await sendFile(file, p.sock);
    await p.got;
    await new Promise((r) => setTimeout(r, 50));
    expect(openOnFile()).toBe(0);
  }
});

it('fails, closing the connection, when the file cannot be read', async () => {
  const p = await peer('missing.sock');
  await expect(sendFile(path.join(dir, 'missing'), p.sock)).rejects.toMatchObject({ code: 'ENOENT' });
  expect(await p.got).toBe(0);
});
