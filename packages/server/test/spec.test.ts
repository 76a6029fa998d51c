import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RESERVED_GUEST_PATHS } from '../src/volumes.js';

const spec = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../spec/agent.json'), 'utf8')) as {
  ops: { 'vol.mount': { reservedPaths: string[] } };
};

describe('the server agrees with spec/agent.json', () => {
  it('refuses the volume mount paths the agent refuses', () => {
    expect(RESERVED_GUEST_PATHS).toEqual(spec.ops['vol.mount'].reservedPaths);
  });
});
