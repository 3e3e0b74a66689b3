#!/usr/bin/env bash
# Test peer of armillary.auth.ldap: a real OpenLDAP slapd that tests/support/slapd.py starts, one per
# test module, on free ports of 127.0.0.1 with its own slapd.conf, database and TLS certificates under
# the test's tmp_path. Needs slapd (/usr/sbin/slapd, its backend modules in /usr/lib/ldap and the
# schemas in /etc/ldap/schema) and ldap-utils (ldapsearch & co., handy when a test fails).
# Idempotent: installs only what is missing, and runs `apt-get update` only when something is
# (and not at all when scripts/test-peers already did, which it says with APT_UPDATED=1).
# The package's own configuration (a default directory in /etc/ldap/slapd.d) is left as it is; the
# tests never use it. The system-wide slapd service on port 389 is kept from starting during the
# install and stopped if it runs anyway.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing ldap slapd ldap-utils

# Whatever started it (an init system, an earlier install without the policy above), the system's own
# slapd must not hold port 389: the tests run their own.
if pgrep -x slapd -u openldap >/dev/null 2>&1; then
  echo "ldap peer: stopping the system's slapd service" >&2
  as_root service slapd stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  as_root systemctl disable --now slapd >/dev/null 2>&1 || true
fi

for tool in /usr/sbin/slapd /usr/lib/ldap/back_mdb.so /etc/ldap/schema/inetorgperson.schema ldapsearch; do
  if [ "${tool#/}" != "$tool" ]; then
    [ -e "$tool" ] || { echo "ldap peer: $tool is still missing" >&2; exit 1; }
  else
    command -v "$tool" >/dev/null 2>&1 || { echo "ldap peer: $tool is still missing" >&2; exit 1; }
  fi
done
