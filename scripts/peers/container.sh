#!/usr/bin/env bash
# Test peer of the production Containerfile (tests/test_production.py): podman and runc build and run
# the image (scripts/peers/docker.sh installs them), debootstrap makes the local Debian base image it
# is built FROM (nothing is pulled from a registry; the Debian mirror is used), and systemd provides
# systemd-analyze, which checks the units of contrib/systemd. Installing the systemd package does not
# make it this machine's init.
# Idempotent: installs only what is missing, and runs `apt-get update` only when something is
# (and not at all when scripts/test-peers already did, which it says with APT_UPDATED=1).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing container podman runc conmon uidmap netavark aardvark-dns iptables debootstrap systemd

for tool in podman runc debootstrap systemd-analyze; do
  command -v "$tool" >/dev/null 2>&1 || { echo "container peer: $tool is still missing" >&2; exit 1; }
done
