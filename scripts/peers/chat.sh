#!/usr/bin/env bash
# Test peers of armillary.chat: a real IRC server (ngircd) and a real XMPP server (prosody) that
# tests/support/chatpeers.py starts, one per test module, on free ports of 127.0.0.1 with their own
# configuration files, data directories and accounts under the test's tmp_path (openssl makes the
# self-signed certificate of ngircd's TLS port).
# Idempotent: installs only what is missing (and runs `apt-get update` only when it installs something and
# scripts/test-peers has not already, which it says with APT_UPDATED=1).
# The system-wide ngircd and prosody services are kept from starting during the install and stopped and
# disabled if they run anyway: the tests run their own instances and never use /etc/ngircd or /etc/prosody.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing chat ngircd prosody openssl

for service in ngircd prosody; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
if pgrep -x ngircd -u irc >/dev/null 2>&1; then
  echo "chat peer: stopping the system's ngircd service" >&2
  as_root service ngircd stop >/dev/null 2>&1 || true
fi
if pgrep -u prosody lua >/dev/null 2>&1 || pgrep -u prosody prosody >/dev/null 2>&1; then
  echo "chat peer: stopping the system's prosody service" >&2
  as_root service prosody stop >/dev/null 2>&1 || true
fi

for tool in /usr/sbin/ngircd /usr/bin/prosody /usr/bin/prosodyctl; do
  [ -e "$tool" ] || { echo "chat peer: $tool is still missing" >&2; exit 1; }
done
