#!/usr/bin/env bash
# Prints, for each binary given, its size, machine, how it links, and the newest glibc
# symbol version it needs (the oldest glibc it starts on). readelf reads any architecture.
set -euo pipefail
printf '%-28s %10s %-9s %-8s %s\n' file bytes machine linking "glibc floor"
for f in "$@"; do
    size=$(stat -c %s "$f")
    machine=$(readelf -h "$f" | sed -n 's/^ *Machine: *//p')
    case "$machine" in
        AArch64) machine=aarch64 ;;
        ARM) machine=armv7 ;;
        Advanced\ Micro\ Devices\ X86-64) machine=x86_64 ;;
    esac
    if readelf -l "$f" | grep -q 'Requesting program interpreter'; then
        linking=dynamic
        floor=$(readelf --dyn-syms -W "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -V | tail -n1)
    else
        linking=static
        floor="none"
    fi
    printf '%-28s %10s %-9s %-8s %s\n' "$(basename "$f")" "$size" "$machine" "$linking" "${floor:-none}"
done
