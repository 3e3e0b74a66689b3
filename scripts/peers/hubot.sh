#!/usr/bin/env bash
# Test peer of contrib/hubot-armillary (tests/test_hubot.py): Node.js and npm (Debian's), so the test can
# `npm install hubot` once into ~/.cache/armillary-hubot/<hash of the package's package.json> and run Hubot's
# Shell adapter. The npm registry must be reachable the first time; later runs reuse the cached install.
# Idempotent: installs only what is missing (scripts/lib/packages.sh).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

# Some Node.js builds (NodeSource's) ship npm inside the nodejs package: install only when a command is missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  install_missing hubot nodejs npm
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || { echo "hubot peer: node or npm is still missing" >&2; exit 1; }
