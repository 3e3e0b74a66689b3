#!/usr/bin/env bash
# Test peer of the /metrics exposition and the Prometheus HTTP service discovery endpoint: a real
# Prometheus that tests/support/prometheus.py starts, one per test module, on a free port of 127.0.0.1
# with its own configuration and TSDB under the test's tmp_path. Needs /usr/bin/prometheus (Debian's
# `prometheus`). Idempotent: installs only what is missing (scripts/lib/packages.sh).
# The package's own service (port 9090, /var/lib/prometheus) is kept from starting during the install
# and stopped if it runs anyway: the tests never use it.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing prometheus prometheus prometheus-alertmanager  # alertmanager: the clusters' receivers (issue 15)

if pgrep -x prometheus -u prometheus >/dev/null 2>&1; then
  echo "prometheus peer: stopping the system's prometheus service" >&2
  as_root service prometheus stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if pgrep -x prometheus-alertmanager >/dev/null 2>&1; then
  as_root service prometheus-alertmanager stop >/dev/null 2>&1 || true  # the tests start their own
fi

command -v prometheus >/dev/null 2>&1 || { echo "prometheus peer: prometheus is still missing" >&2; exit 1; }
