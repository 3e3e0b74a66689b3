#!/usr/bin/env bash
# Test peer of the ssh driver (and of everything else that reaches machines over SSH): real sshd
# processes that tests/support/sshhosts.py starts, one per test host, each inside a network
# namespace of its own joined to this machine by a veth pair (so nothing listens on this machine's
# own interfaces). Needs openssh-server (sshd), openssh-client (ssh, ssh-keygen), iproute2 (ip netns)
# and sshd's privilege-separation directory /run/sshd, which is not there until the system's own sshd
# service has run once (and /run is emptied at boot).
# Idempotent: installs only what is missing, and runs `apt-get update` only when something is
# (and not at all when scripts/test-peers already did, which it says with APT_UPDATED=1).
# Installing openssh-server does not start the system's sshd: the tests never use it.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

wanted=(openssh-server openssh-client iproute2)
missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "ssh peer: installing ${missing[*]}" >&2
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; fi
  # Keep the package's maintainer scripts from starting a system-wide sshd on port 22 (where no
  # init system runs, invoke-rc.d would otherwise start it): a policy-rc.d that refuses, only for
  # the install, and only when the machine has none of its own.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    trap 'as_root rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# sshd refuses to start without its privilege-separation directory (root-owned, not group/world writable).
if [ ! -d /run/sshd ]; then
  as_root install -d -m 0755 -o root -g root /run/sshd
fi

for tool in /usr/sbin/sshd ssh ssh-keygen ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "ssh peer: $tool is still missing" >&2; exit 1; }
done
