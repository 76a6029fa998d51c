#!/usr/bin/env bash
# A local fleet on this machine (docs/operations.md "A fleet"): one control plane and N runtime
# hosts (`nullspace host`), each host in its own network namespace with its own data dir, run dir
# and sandbox uid range, all under one cluster dir. Needs root (ip netns, nftables).
#
#   cluster.sh up N     starts it; prints `export NULLSPACE_API_URL=...` / `export NULLSPACE_API_KEY=...`
#   cluster.sh down     stops and removes exactly what `up` made (processes, namespaces, links, files)
#   cluster.sh status   what runs, and GET /v1/hosts
#   cluster.sh restart-cp  kills the control plane (SIGKILL) and starts it again on the same store
#
# Settings (environment): NULLSPACE_CLUSTER_DIR (default $NULLSPACE_HOME/cluster, at most 40 bytes),
# NULLSPACE_CLUSTER_NAME (prefix of every namespace and link, 2-9 of [a-z0-9], default nsf),
# NULLSPACE_CLUSTER_NET (0-255: the cluster uses 10.214.NET.0/24, default 0), NULLSPACE_CLUSTER_PORT
# (the control plane's, default 7070), NULLSPACE_CLUSTER_DB (postgres, the default: a PostgreSQL of
# the cluster's own under its dir; or sqlite); NULLSPACE_HOST_HEARTBEAT_MS and the rest pass through.
#
# Addresses: one bridge NAME-br holds 10.214.NET.1/24, where the control plane listens; host i
# (1..N, N <= 62) is 10.214.NET.(4i+2)/24 in namespace NAME-hI, on a veth whose root end NAME-hI is a
# port of the bridge (setting it down cuts that host off).
# Uids: the control plane's sandboxes 4000000 + NET*70000 (+1000 of them), host i's 1000 from there
# + i*1000.
set -euo pipefail

NS_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NS_HOME="${NULLSPACE_HOME:-/var/lib/nullspace}"
DIR="${NULLSPACE_CLUSTER_DIR:-$NS_HOME/cluster}"
NAME="${NULLSPACE_CLUSTER_NAME:-nsf}"
NET="${NULLSPACE_CLUSTER_NET:-0}"
PORT="${NULLSPACE_CLUSTER_PORT:-7070}"
HOST_PORT=7071
UIDS_PER=1000
CLI="$NS_REPO/packages/cli/dist/main.js"

usage() { sed -n '6,9p' "$0" | sed 's/^# *//' >&2; exit 2; }
log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

[[ "$NAME" =~ ^[a-z0-9]{2,9}$ ]] || die "NULLSPACE_CLUSTER_NAME must be 2-9 of [a-z0-9] (link names are at most 15 bytes), got '$NAME'"
[[ "$NET" =~ ^[0-9]+$ ]] && [ "$NET" -le 255 ] || die "NULLSPACE_CLUSTER_NET must be 0-255, got '$NET'"
[ "${#DIR}" -le 40 ] || die "the cluster dir '$DIR' is longer than 40 bytes (data dirs under it hold unix sockets)"
case "$DIR" in /*) ;; *) die "the cluster dir must be an absolute path: '$DIR'" ;; esac

CP_ADDR="10.214.$NET.1"
PG_BIN="${NULLSPACE_PG_BIN:-/usr/lib/postgresql/15/bin}"
# preview URLs: <port>-<sandbox>.$DOMAIN, served by the control plane (which forwards to the host)
DOMAIN="${NULLSPACE_PUBLIC_DOMAIN:-localhost:$PORT}"
UID_BASE=$((4000000 + NET * 70000))
STATE="$DIR/cluster.state"

host_addr() { echo "10.214.$NET.$((4 * $1 + 2))"; }

# pids of processes whose command line names a path under the cluster dir (the control plane, the
# hosts, their QEMUs): nothing else is ever signalled
cluster_pids() {
  local f p self=" $$ $BASHPID $PPID "
  # (one grep over every command line: a loop of a process per pid takes seconds on a busy machine;
  # the pattern comes through a file so that the grep does not find itself)
  for f in $(grep -lzF -f <(printf '%s/\n' "$DIR") /proc/[0-9]*/cmdline 2>/dev/null); do
    p="${f#/proc/}"
    p="${p%/cmdline}"
    case "$self" in *" $p "*) continue ;; esac
    echo "$p"
  done
  return 0
}

# namespaces and links of this cluster's name, exactly (NAME-br, NAME-h<digits>; NAME-cp/-cq of older versions)
cluster_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NAME-h[0-9]+\$" || true; }
cluster_links() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$NAME-(br|cp|cq|h[0-9]+)\$" || true; }

down() {
  local pids p i
  pids="$(cluster_pids)"
  if [ -n "$pids" ]; then
    log "stopping $(echo "$pids" | wc -l) process(es)"
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 1 50); do
      [ -z "$(cluster_pids)" ] && break
      sleep 0.1
    done
    for p in $(cluster_pids); do kill -KILL "$p" 2>/dev/null || true; done
    for i in $(seq 1 50); do
      [ -z "$(cluster_pids)" ] && break
      sleep 0.1
    done
  fi
  for n in $(cluster_netns); do ip netns del "$n" 2>/dev/null || true; done
  for l in $(cluster_links); do ip link del "$l" 2>/dev/null || true; done
  # the control plane's sandbox firewall table (root namespace); the hosts' went with their namespaces
  # (and any table named after its uid range, such as an egress table)
  for t in $(nft list tables 2>/dev/null | awk '{print $3}' | grep -E "^nullspace_${UID_BASE}_${UIDS_PER}(_[a-z]+)?\$" || true); do
    nft delete table inet "$t" 2>/dev/null || true
  done
  # the cluster's PostgreSQL (its postmaster's command line names the cluster dir: already
  # signalled above; pg_ctl makes sure, before its files go)
  if [ -f "$DIR/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
  local left
  left="$(cluster_pids)$(cluster_netns)$(cluster_links)"
  [ -z "$left" ] || die "left behind: $left"
  log "down"
}

wait_for() { # what, seconds, command...
  local what="$1" secs="$2" i
  shift 2
  for i in $(seq 1 $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "timed out waiting for $what"
}

ready_hosts() { # count of joined hosts in state ready
  curl -fsS -H "authorization: Bearer $API_KEY" "http://$CP_ADDR:$PORT/v1/hosts" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const h=JSON.parse(s).hosts.filter(h=>h.hostId!=="local"&&h.state==="ready");console.log(h.length)})'
}

hosts_ready() { [ "$(ready_hosts)" = "$1" ]; }

# starts the control plane (settings: API_KEY, JOIN_TOKEN, DB_URL; its log is appended to)
start_cp() {
  local db_args=()
  [ -z "${DB_URL:-}" ] || db_args=(--database "$DB_URL")
  # (every sandbox goes to a host: the control plane runs none itself; preview URLs are the
  # control plane's, on every host too)
  NULLSPACE_API_KEY="$API_KEY" NULLSPACE_JOIN_TOKEN="$JOIN_TOKEN" NULLSPACE_WARM_POOL="${NULLSPACE_WARM_POOL:-0}" \
    NULLSPACE_LOCAL_SANDBOXES="${NULLSPACE_LOCAL_SANDBOXES:-0}" NULLSPACE_PUBLIC_DOMAIN="$DOMAIN" \
    NULLSPACE_RUN_DIR="$DIR/run-cp" NULLSPACE_VM_UID_BASE="$UID_BASE" NULLSPACE_VM_UID_COUNT="$UIDS_PER" \
    setsid node "$CLI" serve --host "$CP_ADDR" --port "$PORT" --data-dir "$DIR/cp" "${db_args[@]}" </dev/null >>"$DIR/cp.log" 2>&1 &
  wait_for "the control plane (see $DIR/cp.log)" 60 curl -fsS -H "authorization: Bearer $API_KEY" "http://$CP_ADDR:$PORT/v1/health"
}

# stops the control plane (SIGKILL: as a crash would) and starts it again on the same store; the
# hosts and their sandboxes run on meanwhile
restart_cp() {
  local p i
  [ -f "$STATE" ] || die "no cluster in $DIR"
  # shellcheck disable=SC1090
  source "$STATE"
  for p in $(cluster_pids); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q " serve .*--data-dir $DIR/cp"; then kill -KILL "$p"; fi
  done
  for i in $(seq 1 50); do
    curl -fsS -m 1 -H "authorization: Bearer $API_KEY" "$API_URL/v1/health" >/dev/null 2>&1 || break
    sleep 0.1
  done
  start_cp
  log "control plane restarted"
}

up() {
  local n="$1" i ns token
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 62 ] || die "N must be 1-62, got '$n'"
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, nftables)"
  [ -f "$CLI" ] || die "$CLI is not built (npm run build)"
  [ ! -e "$STATE" ] || die "a cluster is up in $DIR already (cluster.sh down first)"
  [ -z "$(cluster_netns)$(cluster_links)" ] || die "namespaces or links named $NAME-* exist already: $(cluster_netns) $(cluster_links) (cluster.sh down removes them)"
  UP_OK=0
  trap '[ "$UP_OK" = 1 ] || { log "up failed: removing what was made"; down || true; }' EXIT
  mkdir -p "$DIR"
  # (0711: sandbox QEMUs run as their own uids and reach their files through it, as through a data dir)
  chmod 0711 "$DIR"
  API_KEY="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
  token="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
  # (the join token too: another host can join this cluster with it)
  printf 'NAME=%s\nNET=%s\nN=%s\nPORT=%s\nAPI_URL=http://%s:%s\nAPI_KEY=%s\nJOIN_TOKEN=%s\n' "$NAME" "$NET" "$n" "$PORT" "$CP_ADDR" "$PORT" "$API_KEY" "$token" >"$STATE"
  chmod 0600 "$STATE"

  # the control plane's store: PostgreSQL from Debian's package, its data under $DIR/pg, listening
  # only on a unix socket there (NULLSPACE_CLUSTER_DB=sqlite: SQLite in $DIR/cp instead)
  local db_args=()
  if [ "${NULLSPACE_CLUSTER_DB:-postgres}" = postgres ]; then
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL is not installed ($PG_BIN/initdb): scripts/setup.sh installs the postgresql package"
    mkdir -p "$DIR/pg"
    chown postgres: "$DIR/pg"
    chmod 0700 "$DIR/pg"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$DIR/pg/data" -U nullspace --auth=trust -E UTF8 --no-instructions >"$DIR/pg-init.log" 2>&1 ||
      die "initdb failed (see $DIR/pg-init.log)"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/log" -w -t 60 \
      -o "-c listen_addresses='' -k $DIR/pg -c max_connections=200" start >/dev/null ||
      die "PostgreSQL did not start (see $DIR/pg/log)"
    db_args=(--database "postgres://nullspace@localhost/postgres?host=$DIR/pg")
    log "PostgreSQL on $DIR/pg"
  fi

  # one bridge, the cluster's network: the control plane's address on it, each host's veth a port of
  # it, so that hosts reach the control plane and each other (a host fetches a snapshot's layers
  # from another) without IP forwarding on this machine
  ip link add "$NAME-br" type bridge
  ip addr add "$CP_ADDR/24" dev "$NAME-br"
  ip link set "$NAME-br" up
  log "control plane on http://$CP_ADDR:$PORT"
  printf 'DB_URL=%s\n' "${db_args[1]:-}" >>"$STATE"
  JOIN_TOKEN="$token" DB_URL="${db_args[1]:-}" start_cp

  for i in $(seq 1 "$n"); do
    ns="$NAME-h$i"
    ip netns add "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip link set "$ns" master "$NAME-br"
    ip link set "$ns" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$CP_ADDR"
    NULLSPACE_JOIN_TOKEN="$token" NULLSPACE_RUN_DIR="$DIR/run-h$i" NULLSPACE_WARM_POOL="${NULLSPACE_WARM_POOL:-0}" \
      NULLSPACE_PUBLIC_DOMAIN="$DOMAIN" \
      NULLSPACE_VM_UID_BASE=$((UID_BASE + i * UIDS_PER)) NULLSPACE_VM_UID_COUNT="$UIDS_PER" \
      setsid ip netns exec "$ns" node "$CLI" host --control "http://$CP_ADDR:$PORT" --data-dir "$DIR/h$i" \
      --listen "$(host_addr "$i"):$HOST_PORT" </dev/null >"$DIR/h$i.log" 2>&1 &
  done
  wait_for "$n ready host(s) (see $DIR/h*.log)" 120 hosts_ready "$n"
  UP_OK=1
  log "$n host(s) ready"
  echo "export NULLSPACE_API_URL=http://$CP_ADDR:$PORT"
  echo "export NULLSPACE_API_KEY=$API_KEY"
}

status() {
  [ -f "$STATE" ] || die "no cluster in $DIR"
  # shellcheck disable=SC1090
  source "$STATE"
  echo "processes: $(cluster_pids | tr '\n' ' ')"
  echo "namespaces: $(cluster_netns | tr '\n' ' ')"
  curl -fsS -H "authorization: Bearer $API_KEY" "$API_URL/v1/hosts"
  echo
}

case "${1:-}" in
  up) [ $# -eq 2 ] || usage; up "$2" ;;
  down) [ $# -eq 1 ] || usage; down ;;
  status) [ $# -eq 1 ] || usage; status ;;
  restart-cp) [ $# -eq 1 ] || usage; restart_cp ;;
  *) usage ;;
esac
