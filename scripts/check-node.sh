#!/usr/bin/env bash
# Checks that Node.js and npm are new enough for nullspace, before anything is installed or built.
# Debian 12's own `nodejs` package is 18, too old: say so and how to get a newer one, instead of
# letting `npm ci` fail with nothing useful said. Run by setup.sh first; usable on its own.
set -euo pipefail
NODE_MIN=20
NPM_MIN=9

how="Install Node.js ${NODE_MIN} or newer (it comes with npm): Debian 12's own nodejs package is 18.
  - NodeSource's Debian packages: https://github.com/nodesource/distributions (nodejs 20.x or 22.x), or
  - the official binaries: https://nodejs.org/en/download (unpack under /usr/local, put its bin on PATH),
then run this again."

major() { sed -E 's/^v?([0-9]+).*/\1/' <<<"$1"; }

if ! command -v node >/dev/null 2>&1; then
  printf 'nullspace needs Node.js >= %s, and no `node` is on PATH.\n%s\n' "$NODE_MIN" "$how" >&2
  exit 1
fi
node_v=$(node --version 2>/dev/null || true)
if ! [[ "$(major "$node_v")" =~ ^[0-9]+$ ]] || [ "$(major "$node_v")" -lt "$NODE_MIN" ]; then
  printf 'nullspace needs Node.js >= %s; found %s (%s).\n%s\n' "$NODE_MIN" "${node_v:-an unknown version}" "$(command -v node)" "$how" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  printf 'nullspace needs npm >= %s next to Node.js %s, and no `npm` is on PATH (some distributions package it apart: install npm, or Node.js from one of the sources below).\n%s\n' "$NPM_MIN" "$node_v" "$how" >&2
  exit 1
fi
npm_v=$(npm --version 2>/dev/null || true)
if ! [[ "$(major "$npm_v")" =~ ^[0-9]+$ ]] || [ "$(major "$npm_v")" -lt "$NPM_MIN" ]; then
  printf 'nullspace needs npm >= %s; found %s (%s). `npm install -g npm@10` updates it.\n' "$NPM_MIN" "${npm_v:-an unknown version}" "$(command -v npm)" >&2
  exit 1
fi
