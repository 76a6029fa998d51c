import { NsError } from '@nullspace/runtime';

/** Opaque page tokens over (created_at, id), the order of every list. */
export function encodeCursor(createdAt: number, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

export function decodeCursor(token: string): { createdAt: number; id: string } {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof createdAt === 'number' && typeof id === 'string') return { createdAt, id };
  } catch {
    /* fall through */
  }
  throw new NsError('bad_request', 'nextToken is not a token returned by this API', { details: { field: 'nextToken' } });
}
