#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for nullspace (idempotent; quick when everything is there):
#   0. checks Node.js >= 20 and npm (scripts/check-node.sh; Debian 12's own nodejs is too old)
#   1. Debian packages: QEMU, the standard kernel, debootstrap, Go, nftables, ...
#   2. a reflink-capable filesystem (XFS) at /var/lib/nullspace, for copy-on-write RAM and disk images
#   3. npm dependencies and the TypeScript build
#   4. the `base` template (cached outside the repo by recipe hash: rebuilt only when it changes)
# Sourced by scripts/serve.sh and scripts/test.sh.
set -euo pipefail

NS_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NS_HOME="${NULLSPACE_HOME:-/var/lib/nullspace}"
T0=$(date +%s)

step() { printf '\n==> [%3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "nullspace needs root (QEMU per-sandbox uids, firewall rules, loop-mounted storage): run with sudo" >&2
  exit 1
fi

# Node.js and npm come from outside Debian 12 (its nodejs is 18): checked before anything is done
bash "$NS_REPO/scripts/check-node.sh"

# skopeo, umoci: importing OCI / Docker images (templates from an image); docker-registry: the tests'
# own registries (the packaged service is not wanted: see below); chromium: the preview URL test opens a
# signed URL in it (playwright-core drives it); tmux: the test of `sandbox shell` types into a real terminal;
# postgresql: the store tests start private clusters of it (the packaged service is not needed)
PACKAGES=(qemu-system-x86 qemu-utils linux-image-amd64 debootstrap e2fsprogs cpio busybox-static golang-go
  xz-utils xfsprogs nftables kmod curl ca-certificates python3 make g++ skopeo umoci docker-registry chromium tmux postgresql)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 || echo "apt-get update reported errors (unreachable third-party sources?); continuing" >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
else
  step "Debian packages present"
fi
# Debian's docker-registry package starts a registry on *:5000 for everyone (under systemd); the tests
# start their own on loopback ports, nothing else needs it
if command -v systemctl >/dev/null && systemctl is-enabled --quiet docker-registry 2>/dev/null; then
  step "stopping and disabling the packaged docker-registry service (the tests start their own)"
  systemctl disable --now docker-registry >&2 || echo "could not disable docker-registry.service" >&2
fi

# Guest RAM and disk images are cloned with reflinks (FICLONE): a sandbox start or a snapshot then
# costs milliseconds whatever the RAM size. ext4 cannot do it, so we loop-mount an XFS image.
probe_reflink() {
  local d="$1" f
  f="$d/.reflink-probe.$$"
  echo probe >"$f" 2>/dev/null || return 1
  if cp --reflink=always "$f" "$f.copy" 2>/dev/null; then rm -f "$f" "$f.copy"; return 0; fi
  rm -f "$f" "$f.copy"; return 1
}
mkdir -p "$NS_HOME"
if probe_reflink "$NS_HOME"; then
  step "storage: $NS_HOME supports reflinks"
else
  IMG="${NULLSPACE_STORAGE_IMAGE:-${NS_HOME%/}.xfs}"
  SIZE="${NULLSPACE_STORAGE_SIZE:-200G}"
  step "storage: mounting a reflink-capable XFS image ($IMG, sparse, up to $SIZE) at $NS_HOME"
  if [ -n "$(ls -A "$NS_HOME" 2>/dev/null)" ] && ! mountpoint -q "$NS_HOME"; then
    echo "$NS_HOME is not empty and not reflink-capable; move its content away or set NULLSPACE_HOME" >&2
    exit 1
  fi
  if [ ! -f "$IMG" ]; then
    truncate -s "$SIZE" "$IMG"
    mkfs.xfs -q -m reflink=1 "$IMG"
  fi
  mountpoint -q "$NS_HOME" || mount -o loop "$IMG" "$NS_HOME"
  probe_reflink "$NS_HOME" || { echo "reflinks still unavailable at $NS_HOME" >&2; exit 1; }
fi
avail_kb=$(df -Pk "$NS_HOME" | awk 'NR==2 {print $4}')
if [ "$avail_kb" -lt $((4 * 1024 * 1024)) ]; then
  echo "warning: less than 4 GiB free under $NS_HOME" >&2
fi

# When this host is itself a VM whose balloon driver reports free memory to its hypervisor, memory
# that a stopped sandbox freed is handed back within ~2 s, and the next restore pays to fault it in
# again (measured here: creates from a snapshot 0.55-0.9 s after a quiet gap instead of 0.3-0.5 s).
# A sandbox host keeps its free memory: reporting is limited to blocks larger than the kernel's
# largest, i.e. none. NULLSPACE_KEEP_PAGE_REPORTING=1 leaves it as it is (see docs/operations.md).
PR_ORDER=/sys/module/page_reporting/parameters/page_reporting_order
if [ -w "$PR_ORDER" ] && [ "${NULLSPACE_KEEP_PAGE_REPORTING:-0}" != 1 ]; then
  orders=$(awk 'NR == 1 {print NF - 4}' /proc/buddyinfo)
  if [ -n "$orders" ] && [ "$(cat "$PR_ORDER")" -lt "$orders" ]; then
    step "free page reporting to the hypervisor: off (page_reporting_order $(cat "$PR_ORDER") -> $orders)"
    echo "$orders" >"$PR_ORDER" || echo "could not change $PR_ORDER: restores after quiet gaps stay slower" >&2
  fi
fi

cd "$NS_REPO"
stamp=node_modules/.nullspace-lock-hash
lockhash=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lockhash" ]; then
  step "npm ci"
  npm ci --no-audit --no-fund >&2
  echo "$lockhash" >"$stamp"
else
  step "npm dependencies present"
fi

step "build (TypeScript)"
npm run -s build >&2

step "template base (cached by recipe hash under $NS_HOME/cache)"
node packages/cli/dist/main.js template build base >&2

step "set-up done"

# Test and benchmark runs put their servers' data dirs under $NS_HOME/tmp. One run at a time (a lock
# held until the calling script exits): whoever holds the lock knows that anything already there is
# what an earlier run left when it was killed (a machine restart, a timeout), so it clears that away
# before it starts and its own leak check then judges only itself.
lock_holders() {
  local p
  for p in /proc/[0-9]*; do
    case "${p#/proc/}" in "$$" | "$BASHPID") continue ;; esac
    ls -l "$p/fd" 2>/dev/null | grep -q "$NS_HOME/tmp.lock" && printf '%s(%s) ' "${p#/proc/}" "$(tr '\0' ' ' <"$p/cmdline" | cut -c1-60)"
  done
}
# (the lock is fd 9 of the calling script: a daemon it starts must be started with 9>&-)
claim_test_area() {
  local tmp="$NS_HOME/tmp"
  mkdir -p "$tmp"
  exec 9>"$NS_HOME/tmp.lock"
  if ! flock -n 9; then
    step "waiting for another test or benchmark run on this machine to finish (lock held by: $(lock_holders))"
    flock -w 3600 9 || { echo "gave up waiting for $NS_HOME/tmp.lock, held by: $(lock_holders)" >&2; exit 1; }
  fi
  # (only what runs in $tmp made: processes naming a path under it, uid claims of its data dirs)
  if ! bash "$NS_REPO/scripts/leaks.sh" check "$tmp" >/dev/null; then
    step "clearing what an interrupted earlier run left in $tmp: $(ls "$tmp" | tr '\n' ' ')"
    bash "$NS_REPO/scripts/leaks.sh" clear "$tmp"
  fi
}
