import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { guestPath, mkdirInRoot } from '../src/image/rootfs.js';
import { installAgent } from '../src/image/build.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ns-rootfs-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A guest root whose links point out of it, as an image may have them; and a host dir they would hit. */
function hostileRoot(name: string): { root: string; outside: string } {
  const root = path.join(dir, name, 'root');
  const outside = path.join(dir, name, 'outside');
  fs.mkdirSync(path.join(root, 'usr'), { recursive: true });
  fs.mkdirSync(outside, { recursive: true });
  fs.symlinkSync(outside, path.join(root, 'usr', 'local')); // absolute: the host's path
  fs.symlinkSync('../../../outside', path.join(root, 'up')); // relative, climbing above the root
  fs.mkdirSync(path.join(root, 'etc'));
  fs.symlinkSync('/etc/passwd', path.join(root, 'etc', 'hosts'));
  fs.symlinkSync('loop2', path.join(root, 'loop1'));
  fs.symlinkSync('loop1', path.join(root, 'loop2'));
  return { root, outside };
}

describe("a guest root's paths, resolved the guest's way", () => {
  it('follows links inside the root: an absolute target starts at the root, .. stops there', () => {
    const { root, outside } = hostileRoot('resolve');
    // the guest's /usr/local is "<outside>" under its own root, not the host's <outside>
    expect(guestPath(root, '/usr/local/bin')).toBe(path.join(root, outside, 'bin'));
    expect(guestPath(root, '/up/x')).toBe(path.join(root, 'outside', 'x'));
    expect(guestPath(root, '/../../etc')).toBe(path.join(root, 'etc'));
    expect(guestPath(root, '/etc/hosts')).toBe(path.join(root, 'etc', 'passwd'));
    expect(guestPath(root, '/etc/hosts', false)).toBe(path.join(root, 'etc', 'hosts'));
    expect(() => guestPath(root, '/loop1/x')).toThrow(expect.objectContaining({ code: 'image_invalid' }));
  });

  it('the agent and directories go inside the root whatever its links say', () => {
    const { root, outside } = hostileRoot('install');
    const agent = path.join(dir, 'agent-binary');
    fs.writeFileSync(agent, 'ELF');
    installAgent(root, agent);
    expect(fs.readdirSync(outside)).toEqual([]);
    mkdirInRoot(root, '/up/made');
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(fs.readFileSync(path.join(root, outside, 'bin', 'nullspace-agent'), 'utf8')).toBe('ELF');
    expect(fs.statSync(path.join(root, 'outside', 'made')).isDirectory()).toBe(true);
    expect(fs.statSync(path.join(root, 'workspace')).isDirectory()).toBe(true);
    // a file where a directory must be
    fs.writeFileSync(path.join(root, 'file'), '');
    expect(() => mkdirInRoot(root, '/file/sub')).toThrow(expect.objectContaining({ code: 'image_invalid' }));
  });
});
