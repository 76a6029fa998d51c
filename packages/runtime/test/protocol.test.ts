import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AGENT_ERROR_CODES,
  AGENT_OPS,
  encodeFrame,
  FrameDecoder,
  FrameType,
  HEADER_BYTES,
  INITIAL_WINDOW_BYTES,
  MAGIC,
  MAX_DATA_FRAME_BYTES,
  MAX_PAYLOAD_BYTES,
} from '@nullspace/runtime';
import { generate, OUTPUT_FILE, parseField } from '../../../scripts/agent-types.mjs';

const spec = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../spec/agent.json'), 'utf8')) as {
  version: number;
  transport: { magic: string };
  frame: { headerBytes: number; maxPayloadBytes: number };
  frameTypes: Record<string, { value: number }>;
  flowControl: { initialWindowBytes: number };
  limits: { maxDataFrameBytes: number };
  errorCodes: Record<string, string>;
  ops: Record<string, unknown>;
};

describe('agent protocol: the TypeScript side agrees with spec/agent.json', () => {
  it('has the same constants', () => {
    expect(MAGIC.toString('ascii')).toBe(spec.transport.magic);
    expect(HEADER_BYTES).toBe(spec.frame.headerBytes);
    expect(MAX_PAYLOAD_BYTES).toBe(spec.frame.maxPayloadBytes);
    expect(INITIAL_WINDOW_BYTES).toBe(spec.flowControl.initialWindowBytes);
    expect(MAX_DATA_FRAME_BYTES).toBe(spec.limits.maxDataFrameBytes);
  });
  it('has the same frame types, ops and error codes', () => {
    expect(Object.fromEntries(Object.entries(spec.frameTypes).map(([k, v]) => [k, v.value]))).toEqual(FrameType);
    expect([...AGENT_OPS].sort()).toEqual(Object.keys(spec.ops).sort());
    expect([...AGENT_ERROR_CODES].sort()).toEqual(Object.keys(spec.errorCodes).sort());
  });
});

describe('agent payload types (ops.generated.ts, generated from spec/agent.json)', () => {
  it('are what scripts/agent-types.mjs makes of the spec now', () => {
    expect(fs.readFileSync(OUTPUT_FILE, 'utf8'), 'spec/agent.json changed: run node scripts/agent-types.mjs').toBe(generate(spec));
  });
  it('come from a strict grammar of the spec\'s field strings (agent/spec_test.go parses it the same way)', () => {
    expect(parseField('number | null (optional, default 1): x (y)', [])).toEqual({
      type: { kind: 'union', of: [{ kind: 'number' }, { kind: 'null' }] },
      optional: true,
      notes: 'optional, default 1',
      description: 'x (y)',
    });
    expect(parseField('object string->Entry[] (diagnostic)', ['Entry'])).toMatchObject({
      type: { kind: 'map', of: { kind: 'array', of: { kind: 'ref', name: 'Entry' } } },
      optional: false,
    });
    expect(parseField('"a" | "b"', []).type).toEqual({ kind: 'union', of: [{ kind: 'literal', value: 'a' }, { kind: 'literal', value: 'b' }] });
    for (const bad of ['array of strings', 'ProcessInfo of the ended process', 'Entry', 'string (optional, see (x))', '"open']) {
      expect(() => parseField(bad, ['ProcessInfo']), bad).toThrow();
    }
  });
});

describe('frame decoder', () => {
  it('skips garbage before the magic and decodes split frames', () => {
    const f1 = encodeFrame(FrameType.RESULT, 7, Buffer.from('{"a":1}'));
    const f2 = encodeFrame(FrameType.DATA, 9, Buffer.from([1, 104, 105]));
    const all = Buffer.concat([Buffer.from('noise NSAGEN'), MAGIC, f1, f2]);
    const d = new FrameDecoder(true);
    const frames = [];
    for (let i = 0; i < all.length; i += 3) frames.push(...d.push(all.subarray(i, i + 3)));
    expect(frames.map((f) => [f.type, f.stream, f.payload.toString('latin1')])).toEqual([
      [FrameType.RESULT, 7, '{"a":1}'],
      [FrameType.DATA, 9, '\x01hi'],
    ]);
  });
  it('skips a late magic where a header is expected (a stale handshake reply)', () => {
    const d = new FrameDecoder(true);
    const frames = d.push(Buffer.concat([MAGIC, MAGIC, encodeFrame(FrameType.END, 3)]));
    expect(frames).toHaveLength(1);
    expect(frames[0]?.stream).toBe(3);
  });
  it('rejects an oversized frame', () => {
    const d = new FrameDecoder(false);
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32BE(MAX_PAYLOAD_BYTES + 1, 0);
    expect(() => d.push(header)).toThrow(/frame of/);
  });
  it('refuses to encode an oversized payload', () => {
    expect(() => encodeFrame(FrameType.DATA, 1, Buffer.alloc(MAX_PAYLOAD_BYTES + 1))).toThrow();
  });
});
