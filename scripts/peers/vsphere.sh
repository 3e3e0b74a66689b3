#!/usr/bin/env bash
# Test peer of the vsphere driver: VMware's vCenter simulator (vcsim), built by the tests themselves
# (tests/support/vcsim.py) from tests/support/vcsim/main.go with Debian's Go toolchain and govmomi
# sources, GO111MODULE=off: nothing is downloaded. The binary is cached by a hash of main.go, Go and
# govmomi in ~/.cache/armillary/vcsim (or $ARMILLARY_VCSIM_CACHE), outside the work tree, so a fresh
# clone on the same machine skips the ~15 s build. pyvmomi, the driver's client library, comes with
# the Python packages (scripts/bootstrap).
# Idempotent: installs only what is missing, and runs `apt-get update` only when something is
# (and not at all when scripts/test-peers already did, which it says with APT_UPDATED=1).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

wanted=(golang-go golang-github-vmware-govmomi-dev)
missing=()
for package in "${wanted[@]}"; do
  installed "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "vsphere peer: installing ${missing[*]}" >&2
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v go >/dev/null 2>&1 || { echo "vsphere peer: go is still missing" >&2; exit 1; }
simulator=/usr/share/gocode/src/github.com/vmware/govmomi/simulator
[ -d "$simulator" ] || { echo "vsphere peer: $simulator is missing" >&2; exit 1; }
echo "vsphere peer: $(go version), govmomi $(dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev) (vcsim is built by the tests)" >&2
