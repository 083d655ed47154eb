#!/usr/bin/env bash
# The ARM C libraries as dpkg packages (multiarch: libc6:arm64, libc6:armhf, libgcc-s1),
# so that dpkg-shlibdeps can compute the Depends of the ARM packages from their symbols
# files. Adds the arm64 and armhf architectures to dpkg once (they only make apt fetch
# their package lists too; nothing else changes).
set -euo pipefail
want=(libc6:arm64 libgcc-s1:arm64 libc6:armhf libgcc-s1:armhf)
missing=0
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing=1
done
[ "$missing" = 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deb-cross-libc: need root to install ${want[*]}" >&2
    exit 1
fi
foreign=$(dpkg --print-foreign-architectures)
for a in arm64 armhf; do
    grep -qx "$a" <<<"$foreign" || dpkg --add-architecture "$a"
done
echo "deb-cross-libc: ${want[*]}"
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -qq "$@"; }
# A mirror mid-sync can fail one index; the install below says whether what we need came.
apt_get update >/dev/null 2>&1 || true
apt_get install "${want[@]}" >/dev/null
