#!/usr/bin/env bash
# Test peer of the puppet provisioner: Debian's `puppet` package (Puppet 7 on Debian 12), run as
# `puppet apply` on the test SSH hosts (which are this machine: tests/support/sshhosts.py). No
# puppet server, no agent service: only the `puppet` command is used.
# Idempotent: installs only when `puppet` is missing, and runs `apt-get update` only when it
# installs something (and not at all when scripts/test-peers already did: APT_UPDATED=1).
# Installing the package does not start any service the tests need (policy-rc.d keeps the
# maintainer scripts from starting one where no init system runs).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

installed() { dpkg-query -W -f='${Status}' puppet 2>/dev/null | grep -q "install ok installed"; }

if ! installed || ! command -v puppet >/dev/null 2>&1; then
  echo "puppet peer: installing puppet" >&2
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; fi
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    trap 'as_root rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends puppet >/dev/null
fi

command -v puppet >/dev/null 2>&1 || { echo "puppet peer: puppet is still missing" >&2; exit 1; }
puppet --version >/dev/null
