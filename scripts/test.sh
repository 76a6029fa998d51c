#!/usr/bin/env bash
# Quick start, tests: set up everything, then run the whole suite (real VMs, real server, both SDKs,
# the CLI, the agent's own tests, typechecks, the benchmark in --quick mode), then check that nothing
# this run made is left behind. Every step runs even when an earlier one failed; the closing lines
# show each step's result and each layer's test counts (Go, TypeScript, Python), and the run fails
# when any step failed or any layer ran no test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$NS_REPO"
claim_test_area

REPORT=$(mktemp -d /tmp/nullspace-test-report.XXXXXX)
trap 'rm -rf "$REPORT"' EXIT
export NULLSPACE_TEST_REPORT_DIR="$REPORT"
bash scripts/leaks.sh rundirs >"$REPORT/rundirs-before"
: >"$REPORT/steps"
# runs a step, records "name<TAB>ok|FAILED" whatever its outcome
run_step() {
  local name="$1"
  shift
  step "$name"
  if "$@"; then printf '%s\tok\n' "$name" >>"$REPORT/steps"; else printf '%s\tFAILED\n' "$name" >>"$REPORT/steps"; fi
}

typecheck() { npm run -s typecheck; }
# The Go modules: the guest agent and the host's egress proxy (their results in one go.json).
go_tests() {
  : >"$REPORT/go.json"
  local mod ok=0
  for mod in agent egress; do
    (
      cd "$mod"
      local unformatted
      unformatted=$(gofmt -l .)
      if [ -n "$unformatted" ]; then echo "gofmt ($mod): not formatted: $unformatted" >&2; exit 1; fi
      go vet ./... && go test -count=1 -json ./... >>"$REPORT/go.json"
    ) || ok=1
  done
  [ "$ok" = 0 ] || { node scripts/test-summary.mjs --go-failures "$REPORT/go.json" >&2 || true; return 1; }
}
vitest_suite() { npx vitest run --reporter=default --reporter=json --outputFile.json="$REPORT/vitest.json"; }
leak_check() { bash scripts/leaks.sh check "$NS_HOME/tmp" "$REPORT/rundirs-before" >&2 && echo "no leftovers" >&2; }

run_step "typecheck (tests included)" typecheck
run_step "Go (agent, egress proxy): gofmt, go vet, go test (on the host, no VM)" go_tests
run_step "test suite (vitest: real VMs; the Python SDK's tests inside it)" vitest_suite
run_step "leak check (what this run made: $NS_HOME/tmp)" leak_check

step "summary"
node scripts/test-summary.mjs "$REPORT"
