#!/usr/bin/env bash
# Quick start, main job: set up everything, then run the server in the foreground on 127.0.0.1:7070.
# Extra arguments go to `nullspace serve` (e.g. --port 8080).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$NS_REPO"
exec node packages/cli/dist/main.js serve "$@"
