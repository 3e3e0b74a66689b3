#!/usr/bin/env bash
# Test peer of armillary.network.dns: a real BIND 9 named and a real PowerDNS Authoritative server that
# tests/support/bind9.py and tests/support/powerdns.py start, one per test module, on free ports of
# 127.0.0.1 with their own configuration, keys, zones and databases under the test's tmp_path.
# Needs named (bind9; named-checkconf, tsig-keygen come with it), bind9-dnsutils (dig, nsupdate: handy when
# a test fails), pdns_server + pdnsutil (pdns-server) and the gsqlite3 backend with its schema
# (pdns-backend-sqlite3; the fixture loads the schema with Python's sqlite3), plus the sqlite3 shell
# to look into a test's database when a test fails.
# Idempotent: installs only what is missing, and runs `apt-get update` only when something is
# (and not at all when scripts/test-peers already did, which it says with APT_UPDATED=1).
# The packages' own configuration (/etc/bind, /etc/powerdns) is left as it is; the tests never use it.
# The system-wide named and pdns services are kept from starting during the install and stopped and
# disabled if they run anyway: they must not hold port 53.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing dns bind9 bind9-dnsutils pdns-server pdns-backend-sqlite3 sqlite3

for service in named pdns; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
# Whatever started them (an init system, an earlier install without the policy above): the system's own
# servers run as their service users (bind, pdns) and must not hold port 53; the tests run their own.
if pgrep -x named -u bind >/dev/null 2>&1; then
  echo "dns peer: stopping the system's named service" >&2
  as_root service named stop >/dev/null 2>&1 || true
fi
if pgrep -x pdns_server -u pdns >/dev/null 2>&1; then
  echo "dns peer: stopping the system's pdns service" >&2
  as_root service pdns stop >/dev/null 2>&1 || true
fi

schema=""
for candidate in /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql \
                 /usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql; do
  [ -e "$candidate" ] && schema="$candidate" && break
done
[ -n "$schema" ] || { echo "dns peer: the gsqlite3 schema (schema.sqlite3.sql) is missing" >&2; exit 1; }

for tool in /usr/sbin/named /usr/sbin/pdns_server pdnsutil dig nsupdate sqlite3 tsig-keygen; do
  if [ "${tool#/}" != "$tool" ]; then
    [ -e "$tool" ] || { echo "dns peer: $tool is still missing" >&2; exit 1; }
  else
    command -v "$tool" >/dev/null 2>&1 || { echo "dns peer: $tool is still missing" >&2; exit 1; }
  fi
done
