#!/usr/bin/env bash
# Test peer of the libvirt driver: libvirt's own test:///default driver, built into libvirt0 (no daemon).
# Installs what building libvirt-python needs (libvirt-dev, pkg-config, a C compiler, Python headers).
# Idempotent; run as root by scripts/test-peers before the Python packages are installed.
# apt-get update runs only when something must be installed and scripts/test-peers has not run it.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

wanted=(libvirt-dev pkg-config)
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || wanted+=(gcc)
# The Python scripts/bootstrap builds .venv with (PYTHON, default python3) needs its headers: only
# Debian's own python3 gets them from apt (python3-dev); a pyenv/uv build ships its own.
python="${PYTHON:-python3}"
if command -v "$python" >/dev/null 2>&1; then
  if ! "$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    case "$("$python" -c 'import sys; print(sys.base_prefix)')" in
      /usr) wanted+=(python3-dev) ;;
      *) echo "warning: $python has no Python.h; libvirt-python cannot be built with it" >&2 ;;
    esac
  fi
fi

missing=()
for package in "${wanted[@]}"; do
  installed "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "libvirt peer: installing ${missing[*]}" >&2
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirt-python is built against this library; say which one, and that the C side is usable.
pkg-config --exists libvirt || { echo "error: pkg-config cannot find libvirt after installing libvirt-dev" >&2; exit 1; }
echo "libvirt peer: libvirt $(pkg-config --modversion libvirt) (test:///default needs no daemon)" >&2
