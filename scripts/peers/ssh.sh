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

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing ssh openssh-server openssh-client iproute2

# sshd refuses to start without its privilege-separation directory (root-owned, not group/world writable).
if [ ! -d /run/sshd ]; then
  as_root install -d -m 0755 -o root -g root /run/sshd
fi

for tool in /usr/sbin/sshd ssh ssh-keygen ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "ssh peer: $tool is still missing" >&2; exit 1; }
done
