#!/usr/bin/env bash
# What a test or benchmark run leaves behind, and clearing what an interrupted one left. Both look
# only at what runs in AREA created (AREA: the directory their servers' data dirs live in, e.g.
# /var/lib/nullspace/tmp): processes whose command line names a path under AREA (QEMU opens its RAM
# file and sockets there), sandbox uid claims owned by a data dir under AREA, entries of AREA itself,
# and template-build run dirs that appeared since a recorded list. A server next to the run (a
# serve.sh on /var/lib/nullspace/data) and its sandboxes are never reported nor touched.
#
#   leaks.sh check AREA [RUNDIRS_BEFORE]   prints what is left (exit 1), or nothing (exit 0)
#   leaks.sh clear AREA                    kills and removes what is left
#   leaks.sh rundirs                       lists the template-build run dirs now (for RUNDIRS_BEFORE)
set -euo pipefail

NS_HOME="${NULLSPACE_HOME:-/var/lib/nullspace}"
CLAIMS="${NULLSPACE_RUN_DIR:-/run/nullspace}/vm-uids"
RUNS="${NULLSPACE_CACHE_DIR:-$NS_HOME/cache}/run"

usage() { sed -n '9,11p' "$0" | sed 's/^# *//' >&2; exit 2; }

# pids of processes (not this script, not its parents) whose command line names a path under $1/
area_pids() {
  local area="$1" p self=" $$ $BASHPID $PPID "
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    case "$self" in *" $p "*) continue ;; esac
    tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$area/" && echo "$p"
  done
  return 0
}

# uid claim files owned by a data dir under $1/
area_claims() {
  local area="$1" f
  [ -d "$CLAIMS" ] || return 0
  for f in "$CLAIMS"/*; do
    [ -f "$f" ] || continue
    case "$(head -c 4096 "$f" 2>/dev/null)" in "$area/"*) echo "$f" ;; esac
  done
  return 0
}

rundirs() { [ -d "$RUNS" ] && ls -1 "$RUNS" 2>/dev/null | sort || true; }

check() {
  local area="${1:?}" before="${2:-}" leaks=0 pid f new
  area="${area%/}"
  for pid in $(area_pids "$area"); do
    echo "process $pid still runs: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-160)"
    leaks=1
  done
  for f in $(area_claims "$area"); do
    echo "sandbox uid claim left: $f ($(head -c 200 "$f"))"
    leaks=1
  done
  if [ -d "$area" ] && [ -n "$(ls -A "$area")" ]; then
    echo "data dirs left in $area: $(ls -A "$area" | tr '\n' ' ')"
    leaks=1
  fi
  if [ -n "$before" ]; then
    new=$(comm -13 <(sort "$before") <(rundirs))
    for f in $new; do
      # a build of someone else's still under way has a live QEMU on it
      [ -n "$(area_pids "$RUNS/$f")" ] && continue
      echo "template build run dir left: $RUNS/$f"
      leaks=1
    done
  fi
  return "$leaks"
}

clear_area() {
  local area="${1:?}" pids f
  area="${area%/}"
  mkdir -p "$area"
  pids=$(area_pids "$area")
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 1 50); do [ -z "$(area_pids "$area")" ] && break; sleep 0.1; done
  for f in $(area_claims "$area"); do rm -f "$f"; done
  find "$area" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
}

case "${1:-}" in
  check) shift; check "$@" ;;
  clear) shift; clear_area "$@" ;;
  rundirs) rundirs ;;
  *) usage ;;
esac
