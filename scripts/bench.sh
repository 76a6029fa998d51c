#!/usr/bin/env bash
# The benchmark: set up everything (as serve.sh / test.sh), install and start libvirt to compare
# with, then `npm run bench` (extra arguments are passed on, e.g. --quick or --density=50).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$NS_REPO"
claim_test_area
missing=()
for p in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing libvirt to compare with: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
# what libvirt-daemon-system would have created
mkdir -p /var/run/libvirt /var/log/libvirt /var/lib/libvirt/qemu /var/cache/libvirt
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
# the daemons outlive this script: they must not inherit the test-area lock (fd 9)
pgrep -x virtlogd >/dev/null || virtlogd -d 9>&-
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  step "starting libvirtd"
  libvirtd -d 9>&-
  for _ in $(seq 1 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
fi
step "benchmark"
npm run -s bench -- "$@"
