# Sourced by scripts/peers/*.sh: install Debian packages for a test peer, idempotently.
#   install_missing <peer name> <package>...
# Installs only the packages that are not installed yet; runs `apt-get update` only when it installs
# something and scripts/test-peers has not already (it says so with APT_UPDATED=1). The packages'
# maintainer scripts are kept from starting system-wide services (sshd on 22, slapd on 389...): a
# policy-rc.d that refuses, only during the install, and only when the machine has none of its own.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_missing() {
  local peer="$1"
  shift
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  echo "$peer peer: installing ${missing[*]}" >&2
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; fi
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    added=1
  fi
  local status=0
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || status=$?
  if [ -n "$added" ]; then as_root rm -f "$policy"; fi
  return "$status"
}
