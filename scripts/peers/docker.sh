#!/usr/bin/env bash
# Test peer of the docker driver: podman's Docker-compatible API service (started per test run by
# tests/support/podman.py), the runc runtime it is configured with, busybox-static from which the
# tests build their image locally (nothing can be pulled from outside), and docker-registry, run on
# loopback by the tests to exercise pulls (one open registry, one wanting a password). The registry
# package's own service is not started (policy-rc.d); the tests start their own instances.
# Idempotent: installs only what is missing, and runs `apt-get update` only when something is
# (and not at all when scripts/test-peers already did, which it says with APT_UPDATED=1).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing docker podman runc conmon uidmap netavark aardvark-dns iptables busybox-static docker-registry

for tool in podman runc docker-registry /bin/busybox; do
  command -v "$tool" >/dev/null 2>&1 || { echo "docker peer: $tool is still missing" >&2; exit 1; }
done
