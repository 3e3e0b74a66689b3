#!/usr/bin/env bash
# Test peers of Celery mode (tests/test_distributed.py, bench/engine.py --engine celery): Redis and RabbitMQ.
# * redis-server: the tests start their own instance on a free port of 127.0.0.1 (so one can restart it
#   mid-run); only the binary is needed here. The machine's own service on 6379 is left as it is.
# * RabbitMQ on 127.0.0.1:5672 with the guest/guest account: started when not running (tests make their
#   own vhost with rabbitmqctl and remove it after).
# Idempotent: installs only what is missing (scripts/lib/packages.sh).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing brokers redis-server rabbitmq-server

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "brokers peer: starting rabbitmq-server" >&2
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl start rabbitmq-server || true
  else
    as_root sh -c 'rabbitmq-server -detached >/dev/null 2>&1 || (nohup rabbitmq-server >/var/log/rabbitmq-peer.log 2>&1 &)'
  fi
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
fi
(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null \
  || echo "brokers peer: RabbitMQ is not reachable on 127.0.0.1:5672; its tests will fail under CI=true" >&2
command -v redis-server >/dev/null 2>&1 || { echo "brokers peer: redis-server is still missing" >&2; exit 1; }
