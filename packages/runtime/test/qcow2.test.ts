import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkQcow2Backing } from '../src/qcow2.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-qcow2-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const img = (name: string, args: string[]) => {
  const f = path.join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, f, '64M']);
  return f;
};
const base = img('base.qcow2', []);
const expected = (b: string) => b === base;

describe('qcow2 header checks (what root follows in a layer copied from a sandbox)', () => {
  it('accepts an overlay on the expected qcow2 backing file, v3 and v2', () => {
    const h = checkQcow2Backing(img('ok3.qcow2', ['-u', '-F', 'qcow2', '-b', base]), expected);
    expect(h).toMatchObject({ version: 3, backingFile: base, backingFormat: 'qcow2', externalData: false, encrypted: false, virtualSize: 64n << 20n });
    expect(checkQcow2Backing(img('ok2.qcow2', ['-o', 'compat=0.10', '-u', '-F', 'qcow2', '-b', base]), expected).version).toBe(2);
  });

  it('refuses another backing file, a raw backing format, a json: name, no backing, an external data file, a non-qcow2 file', () => {
    const cases: Array<[string, RegExp]> = [
      [img('other.qcow2', ['-u', '-F', 'qcow2', '-b', '/etc/passwd']), /backing file "\/etc\/passwd" is not the expected one/],
      [img('raw.qcow2', ['-u', '-F', 'raw', '-b', base]), /backing format is "raw"/],
      [img('json.qcow2', ['-u', '-F', 'qcow2', '-b', `json:{"driver":"file","filename":"${base}"}`]), /is not the expected one/],
      [img('relative.qcow2', ['-u', '-F', 'qcow2', '-b', 'base.qcow2']), /is not the expected one/],
      [img('none.qcow2', []), /no backing file/],
      [img('data.qcow2', ['-o', `data_file=${path.join(dir, 'data.raw')}`, '-u', '-F', 'qcow2', '-b', base]), /external data file/],
    ];
    for (const [file, why] of cases) {
      expect(() => checkQcow2Backing(file, expected), file).toThrow(why);
      try {
        checkQcow2Backing(file, expected);
      } catch (err) {
        expect((err as { code?: string }).code).toBe('disk_invalid');
      }
    }
    const text = path.join(dir, 'text');
    fs.writeFileSync(text, 'QFI but not really');
    expect(() => checkQcow2Backing(text, expected)).toThrow(/not a valid qcow2 header/);
  });
});
