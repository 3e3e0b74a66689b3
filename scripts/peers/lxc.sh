#!/usr/bin/env bash
# Test peer of the lxc driver and the lxc-attach transport: the LXC command-line tools (lxc-create,
# lxc-start, lxc-attach, lxc-ls, lxc-info...), their templates (the tests use `busybox`) and
# busybox-static, which that template copies into each container's rootfs. tests/support/lxc.py makes
# its own bridge and a temporary lxcpath per test run and removes both afterwards; the system's own
# lxc-net bridge (lxcbr0) and the lxc service are not used and not started (policy-rc.d during the
# install, and stopped if something started them anyway).
# Idempotent: installs only what is missing, and runs `apt-get update` only when something is
# (and not at all when scripts/test-peers already did, which it says with APT_UPDATED=1).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing lxc lxc lxc-templates busybox-static

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  as_root systemctl disable --now lxc-net lxc >/dev/null 2>&1 || true
fi

for tool in lxc-create lxc-start lxc-stop lxc-destroy lxc-attach lxc-ls lxc-info /usr/share/lxc/templates/lxc-busybox /bin/busybox; do
  if [ "${tool#/}" != "$tool" ]; then
    [ -e "$tool" ] || { echo "lxc peer: $tool is still missing" >&2; exit 1; }
  else
    command -v "$tool" >/dev/null 2>&1 || { echo "lxc peer: $tool is still missing" >&2; exit 1; }
  fi
done
