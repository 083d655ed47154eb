#!/usr/bin/env bash
# Checks a built fvtt-relay .deb without installing it on this machine: unpacks it into a
# throwaway root (dpkg-deb -x) and checks its file list, modes, owners, conffiles, control
# fields, maintainer scripts, that the unit and /etc/default file are the ones in deploy/,
# and that lintian reports no errors. For a package of this machine's architecture it also
# runs the binary and the maintainer scripts (scripts/deb-lifecycle.sh).
#   scripts/deb-check.sh target/debian/fvtt-relay_0.1.0-1_amd64.deb
set -euo pipefail
deb=${1:?usage: deb-check.sh PACKAGE.deb}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
bad() {
    echo "deb-check: $(basename "$deb"): $*" >&2
    failures=$((failures + 1))
}

dpkg-deb -x "$deb" "$work/root"
dpkg-deb -e "$deb" "$work/DEBIAN"
arch=$(dpkg-deb -f "$deb" Architecture)

# The file list: exactly these files (directories aside).
unit=usr/lib/systemd/system/fvtt-relay.service
[ -e "$work/root/$unit" ] || unit=lib/systemd/system/fvtt-relay.service
want=$(printf '%s\n' \
    ./etc/default/fvtt-relay \
    "./$unit" \
    ./usr/bin/fvtt-relay \
    ./usr/share/doc/fvtt-relay/README.md \
    ./usr/share/doc/fvtt-relay/changelog.Debian.gz \
    ./usr/share/doc/fvtt-relay/copyright \
    ./usr/share/doc/fvtt-relay/deploy/Caddyfile \
    ./usr/share/doc/fvtt-relay/deploy/README.md \
    ./usr/share/doc/fvtt-relay/docs/ADMIN.md \
    ./usr/share/doc/fvtt-relay/docs/CONFIG.md | sort)
have=$(cd "$work/root" && find . -type f -o -type l | sort)
[ "$have" = "$want" ] || bad "file list differs:$(diff <(echo "$want") <(echo "$have") | sed -n 's/^[<>]/\n  &/p' | tr -d '\n')"

# Modes and owners as dpkg will install them (the archive's, not the unpacked copy's).
listing=$(dpkg-deb -c "$deb")
mode_of() { awk -v f="./$1" '$6 == f { sub("^root/root$", "0/0", $2); print $1 " " $2 }' <<<"$listing"; }
[ "$(mode_of usr/bin/fvtt-relay)" = "-rwxr-xr-x 0/0" ] || bad "usr/bin/fvtt-relay: $(mode_of usr/bin/fvtt-relay), want 0755 root/root"
[ "$(mode_of etc/default/fvtt-relay)" = "-rw-r--r-- 0/0" ] || bad "etc/default/fvtt-relay: $(mode_of etc/default/fvtt-relay), want 0644 root/root"
[ "$(mode_of "$unit")" = "-rw-r--r-- 0/0" ] || bad "$unit: $(mode_of "$unit"), want 0644 root/root"

# Conffiles: the settings file, and nothing else.
[ "$(cat "$work/DEBIAN/conffiles" 2>/dev/null)" = "/etc/default/fvtt-relay" ] ||
    bad "conffiles: '$(cat "$work/DEBIAN/conffiles" 2>/dev/null)', want /etc/default/fvtt-relay"

# Shipped as they are in the source tree.
cmp -s "$work/root/$unit" deploy/fvtt-relay.service || bad "the unit differs from deploy/fvtt-relay.service"
cmp -s "$work/root/etc/default/fvtt-relay" deploy/fvtt-relay.default ||
    bad "/etc/default/fvtt-relay differs from deploy/fvtt-relay.default"
grep -q '^ExecStart=/usr/bin/fvtt-relay ' "$work/root/$unit" || bad "the unit does not start /usr/bin/fvtt-relay"

# The changelog's newest entry is this version.
version=$(dpkg-deb -f "$deb" Version)
top=$(zcat "$work/root/usr/share/doc/fvtt-relay/changelog.Debian.gz" 2>/dev/null | head -n1 || true)
[[ "$top" == "fvtt-relay ($version) "* ]] || bad "changelog starts '$top', want version $version (deploy/debian/changelog)"

# Control: Depends computed from the binary (libc6 with a version), maintainer scripts.
depends=$(dpkg-deb -f "$deb" Depends)
grep -Eq '(^|, )libc6 \(>= 2\.[0-9]+\)' <<<"$depends" || bad "Depends: '$depends', want libc6 (>= 2.x)"
for s in postinst prerm postrm; do
    [ -x "$work/DEBIAN/$s" ] || bad "no executable $s"
done
grep -q 'deb-systemd-helper.*enable' "$work/DEBIAN/postinst" || bad "postinst does not enable the unit"
grep -q 'start' "$work/DEBIAN/postinst" || bad "postinst does not start the unit"
grep -q 'admin-key' "$work/DEBIAN/postinst" || bad "postinst does not say where the admin key is"
grep -q 'purge)' "$work/DEBIAN/postrm" || bad "postrm has no purge case"
for s in postinst prerm postrm; do
    sh -n "$work/DEBIAN/$s" || bad "$s: syntax error"
done

# The binary itself, where it can run here.
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
    "$work/root/usr/bin/fvtt-relay" --help | grep -q FVTT_RELAY_LISTEN || bad "fvtt-relay --help failed"
    # The maintainer scripts through install, upgrade, remove and purge.
    scripts/deb-lifecycle.sh "$deb" || bad "maintainer scripts (scripts/deb-lifecycle.sh)"
fi

# lintian: no errors (warnings are listed in README.md).
if command -v lintian >/dev/null; then
    lintian --no-tag-display-limit "$deb" >"$work/lintian" 2>&1 || true
    if grep -q '^E: ' "$work/lintian"; then
        bad "lintian errors:"
        grep '^E: ' "$work/lintian" >&2
    fi
    lint="lintian: $(grep -c '^E: ' "$work/lintian" || true) errors, $(grep -c '^W: ' "$work/lintian" || true) warnings"
else
    bad "lintian is not installed"
    lint=""
fi

[ "$failures" = 0 ] || exit 1
echo "deb-check: ok: $(basename "$deb") ($arch, Depends: $depends; $lint)"
