#!/usr/bin/env bash
# Installs Debian packages (apt) that are not installed yet: `apt-install.sh PKG...`.
# Tries without `apt-get update` first (fast when the lists are fresh), then with it; waits
# for another apt or dpkg to finish rather than failing on its lock.
set -euo pipefail
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "apt-install: need root to install: ${missing[*]}" >&2
    exit 1
fi
echo "apt-install: ${missing[*]}"
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -qq "$@"; }
apt_get install "${missing[@]}" >/dev/null 2>&1 || {
    # A mirror mid-sync can fail one index; the install says whether what we need came.
    apt_get update >/dev/null 2>&1 || true
    apt_get install "${missing[@]}" >/dev/null
}
