/**
 * Constants of the host<->agent protocol. The written spec is spec/agent.json; this file mirrors the
 * parts the host needs, and packages/runtime/test/protocol.test.ts checks that the two agree. The ops'
 * payload types are generated from the spec (ops.generated.ts, scripts/agent-types.mjs).
 */
export const MAGIC = Buffer.from('NSAGENT1', 'ascii');
export const HEADER_BYTES = 9;
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
export const INITIAL_WINDOW_BYTES = 256 * 1024;
export const MAX_DATA_FRAME_BYTES = 64 * 1024;

export const FrameType = {
  OPEN: 1,
  DATA: 2,
  END: 3,
  EVENT: 4,
  RESULT: 5,
  ERROR: 6,
  CANCEL: 7,
  WINDOW: 8,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

export const Channel = { MAIN: 0, STDOUT: 1, STDERR: 2 } as const;

// The ops and their payloads (requests, results, events) are generated from the spec.
export * from './ops.generated.js';
import type { AgentOps } from './ops.generated.js';

export type AgentOp = keyof AgentOps;
/** The OPEN payload of `O` (without its `op` field). */
export type OpRequest<O extends AgentOp> = AgentOps[O]['request'];
/** The RESULT payload of `O`. */
export type OpResult<O extends AgentOp> = AgentOps[O]['result'];
/** The EVENT payloads of `O` (`never` for an op that sends none). */
export type OpEvent<O extends AgentOp> = AgentOps[O]['event'];

export const AGENT_ERROR_CODES = [
  'bad_request',
  'unknown_op',
  'not_found',
  'already_exists',
  'not_a_directory',
  'is_a_directory',
  'not_empty',
  'permission_denied',
  'no_space',
  'invalid_path',
  'process_failed',
  'not_running',
  'cancelled',
  'io_error',
  'volume_busy',
  'port_not_open',
] as const;

export interface Frame {
  type: number;
  stream: number;
  payload: Buffer;
}

export function encodeFrame(type: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_PAYLOAD_BYTES) throw new Error(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt32BE(stream, 4);
  header.writeUInt8(type, 8);
  return Buffer.concat([header, payload]);
}

/** Incremental decoder: feed bytes, get whole frames. Throws on an oversized frame (session is then unusable). */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private synced: boolean;

  /** `expectMagic`: discard everything up to and including the first MAGIC. */
  constructor(expectMagic: boolean) {
    this.synced = !expectMagic;
  }

  /** True once the magic has been seen (always true for a decoder that does not expect it). */
  get isSynced(): boolean {
    return this.synced;
  }

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (!this.synced) {
      const i = this.buf.indexOf(MAGIC);
      if (i < 0) {
        // keep a possible partial magic at the end
        this.buf = this.buf.subarray(Math.max(0, this.buf.length - (MAGIC.length - 1)));
        return [];
      }
      this.buf = this.buf.subarray(i + MAGIC.length);
      this.synced = true;
    }
    const frames: Frame[] = [];
    while (this.buf.length >= HEADER_BYTES) {
      // A magic where a header is expected is a late handshake reply of an abandoned connection
      // attempt (QEMU delivers it to whoever is connected). Its length field is far above the limit,
      // so it can never be a real header: skip it.
      if (this.buf.subarray(0, MAGIC.length).equals(MAGIC)) {
        this.buf = this.buf.subarray(MAGIC.length);
        continue;
      }
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_PAYLOAD_BYTES) throw new Error(`agent sent a frame of ${len} bytes (max ${MAX_PAYLOAD_BYTES})`);
      if (this.buf.length < HEADER_BYTES + len) break;
      frames.push({
        type: this.buf.readUInt8(8),
        stream: this.buf.readUInt32BE(4),
        payload: Buffer.from(this.buf.subarray(HEADER_BYTES, HEADER_BYTES + len)),
      });
      this.buf = this.buf.subarray(HEADER_BYTES + len);
    }
    return frames;
  }
}
