#!/usr/bin/env bash
# Test peer of the puppet provisioner: Debian's `puppet` package (Puppet 7 on Debian 12), run as
# `puppet apply` on the test SSH hosts (which are this machine: tests/support/sshhosts.py). No
# puppet server, no agent service: only the `puppet` command is used.
# Idempotent: installs only when `puppet` is missing, and runs `apt-get update` only when it
# installs something (and not at all when scripts/test-peers already did: APT_UPDATED=1).
# Installing the package does not start any service the tests need (policy-rc.d keeps the
# maintainer scripts from starting one where no init system runs).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing puppet puppet

command -v puppet >/dev/null 2>&1 || { echo "puppet peer: puppet is still missing" >&2; exit 1; }
puppet --version >/dev/null
