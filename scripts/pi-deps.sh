#!/usr/bin/env bash
# What the Pi targets need: Debian's cross compilers, qemu-user (apt), and the Rust standard
# library of each target given (rustup). Exits non-zero, saying what is missing, when it
# cannot install them (not root, or rustup cannot download a target here).
#   scripts/pi-deps.sh aarch64-unknown-linux-gnu [more targets]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/apt-install.sh crossbuild-essential-arm64 crossbuild-essential-armhf qemu-user binfmt-support
installed=$(rustup target list --installed)
for t in "$@"; do
    grep -qx "$t" <<<"$installed" && continue
    rustup target add "$t" >/dev/null 2>&1 || {
        echo "pi-deps: rustup could not add the $t standard library" >&2
        exit 1
    }
done
