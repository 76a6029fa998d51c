import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseField } from '../../../scripts/agent-types.mjs';
import { SignalBody } from '../src/api/schemas.js';
import { RESERVED_GUEST_PATHS } from '../src/volumes.js';

const spec = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../spec/agent.json'), 'utf8')) as {
  ops: { 'vol.mount': { reservedPaths: string[] }; 'proc.signal': { request: { signal: string } } };
};

describe('the server agrees with spec/agent.json', () => {
  it('refuses the volume mount paths the agent refuses', () => {
    expect(RESERVED_GUEST_PATHS).toEqual(spec.ops['vol.mount'].reservedPaths);
  });
  it("lets a process be sent the agent's signals, no other (commands.ts hands them on as the agent's type)", () => {
    const agent = parseField(spec.ops['proc.signal'].request.signal, []).type;
    const api = SignalBody.properties.signal.anyOf.map((s: { const: string }) => s.const);
    expect(api).toEqual(agent.kind === 'union' ? agent.of.map((t) => (t.kind === 'literal' ? t.value : t.kind)) : []);
  });
});
