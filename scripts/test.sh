#!/usr/bin/env bash
# Quick start, tests: set up everything, then run the whole suite (real VMs, real server, both SDKs,
# the CLI, the agent's own tests, typechecks, the benchmark in --quick mode), then check that nothing
# of ours is left behind.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$NS_REPO"
claim_test_area

step "typecheck (tests included)"
npm run -s typecheck

step "agent: go vet + go test (on the host, no VM)"
(cd agent && test -z "$(gofmt -l .)" && go vet ./... && go test -count=1 ./...)

step "test suite (vitest: real VMs)"
status=0
npx vitest run || status=$?

step "leak check"
leaks=0
if pgrep -af 'qemu-system.*-name nullspace-' >&2; then echo "QEMU processes of nullspace are still running" >&2; leaks=1; fi
if [ -n "$(ls -A "$NS_HOME/tmp" 2>/dev/null)" ]; then echo "test data dirs left in $NS_HOME/tmp:" >&2; ls "$NS_HOME/tmp" >&2; leaks=1; fi
if grep -rls "$NS_HOME/tmp/" /run/nullspace/vm-uids >/dev/null 2>&1; then echo "sandbox uid claims of test servers left in /run/nullspace/vm-uids" >&2; leaks=1; fi
if [ -n "$(ls -A "$NS_HOME/cache/run" 2>/dev/null)" ]; then echo "template build run dirs left in $NS_HOME/cache/run" >&2; leaks=1; fi
[ "$leaks" = 0 ] && echo "no leftovers" >&2

step "done (tests: $([ $status = 0 ] && echo passed || echo FAILED))"
[ "$status" = 0 ] && [ "$leaks" = 0 ]
