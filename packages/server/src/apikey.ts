import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '@nullspace/runtime';

export const API_KEY_FILE = 'api-key';

/**
 * The server's API key: NULLSPACE_API_KEY when set, otherwise the key kept in the data dir
 * (generated at first start, readable only by the server's user).
 */
export function resolveApiKey(dataDir: string, fromEnv: string | undefined): { key: string; source: string } {
  if (fromEnv) return { key: fromEnv, source: 'NULLSPACE_API_KEY' };
  const file = path.join(dataDir, API_KEY_FILE);
  if (fs.existsSync(file)) {
    const key = fs.readFileSync(file, 'utf8').trim();
    if (key.length >= 16) return { key, source: file };
  }
  const key = `ns_${randomBytes(24).toString('base64url')}`;
  writeFileAtomic(file, key + '\n', 0o600);
  return { key, source: file };
}
