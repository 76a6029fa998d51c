#!/usr/bin/env node
// The `nullspace` command (npx nullspace, npm link): a source file, so that npm links it at install
// time, before the TypeScript build has made dist/main.js.
import fs from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!fs.existsSync(main)) {
  process.stderr.write('nullspace: the CLI is not built yet: run `npm run build` in the repository (scripts/setup.sh does)\n');
  process.exit(1);
}
await import(main.href);
