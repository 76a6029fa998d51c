import { describe, expect, it } from 'vitest';
import { AGENT_ERROR_CODES, NsError } from '@nullspace/runtime';
import { fromAgentError, httpStatusFor, isPublicCode } from '../src/errors.js';

describe('agent errors as API errors', () => {
  it('maps every agent error code to a public API code (only an unknown op is internal)', () => {
    for (const code of AGENT_ERROR_CODES) {
      const e = fromAgentError(new NsError(code, `op: ${code}`), 'subject');
      expect(isPublicCode(e.code), code).toBe(true);
      if (code !== 'unknown_op') expect(e.code, code).not.toBe('internal');
    }
  });

  it('reports guest I/O failures as such, and bad requests as 4xx', () => {
    expect(fromAgentError(new NsError('io_error', 'fs.read: input/output error'), 'reading /x').code).toBe('guest_io_error');
    expect(httpStatusFor(fromAgentError(new NsError('not_found', 'nope'), 'reading /x').code)).toBe(404);
    expect(httpStatusFor(fromAgentError(new NsError('invalid_path', 'bad'), 'reading /x').code)).toBe(400);
    expect(httpStatusFor(fromAgentError(new NsError('no_space', 'full'), 'writing /x').code)).toBe(507);
  });
});
