#!/usr/bin/env bash
# Test peer of the web console (tests/test_web_ui.py, bench/ui.py): Debian's Chromium, driven by
# Playwright for Python through executable_path (Playwright's own browser download is not used).
# Idempotent: installs only what is missing.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"

install_missing chromium chromium fonts-dejavu-core

command -v chromium >/dev/null 2>&1 || { echo "chromium peer: /usr/bin/chromium is still missing" >&2; exit 1; }
