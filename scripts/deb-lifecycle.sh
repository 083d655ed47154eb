#!/usr/bin/env bash
# Runs a built package's maintainer scripts through install, first start, upgrade, remove
# and purge, and checks what each leaves behind: the state directory, the enabled unit, that
# an upgrade or a remove keeps the state and the admin key, that only purge deletes them, and
# what they print. It runs in a private mount namespace whose /var/lib, /etc/systemd and
# unit directory are empty tmpfs mounts, so this machine is not touched; without systemd
# running, the scripts enable the unit but do not start it, and the relay's first start is
# made here instead.
#   scripts/deb-lifecycle.sh target/debian/fvtt-relay_0.1.0-1_amd64.deb   (as root)
set -euo pipefail
deb=${1:?usage: deb-lifecycle.sh PACKAGE.deb}

if [ "${FVTT_DEB_LIFECYCLE_NS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ] || ! unshare --mount --propagation private true 2>/dev/null; then
        echo "deb-lifecycle: SKIPPED (needs root and a mount namespace)"
        exit 0
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    dpkg-deb -x "$deb" "$work/root"
    dpkg-deb -e "$deb" "$work/DEBIAN"
    FVTT_DEB_LIFECYCLE_NS=1 WORK=$work unshare --mount --propagation private "$0" "$deb"
    exit
fi

# ---- inside the namespace ----
fail() {
    echo "deb-lifecycle: $(basename "$deb"): $*" >&2
    exit 1
}
unitdir=/usr/lib/systemd/system
[ -e "$WORK/root/$unitdir/fvtt-relay.service" ] || unitdir=/lib/systemd/system
mkdir -p /etc/systemd "$unitdir"
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /etc/systemd
mount -t tmpfs tmpfs "$unitdir"
[ ! -d /run/systemd/system ] || mount -t tmpfs tmpfs /run/systemd # never talk to a real systemd
cp "$WORK/root/$unitdir/fvtt-relay.service" "$unitdir/"
bin=$WORK/root/usr/bin/fvtt-relay
state=/var/lib/private/fvtt-relay
wants=/etc/systemd/system/multi-user.target.wants/fvtt-relay.service
version=$(dpkg-deb -f "$deb" Version)
run() { # script args...: runs a maintainer script as dpkg would, keeps its output in $out
    out=$(DPKG_MAINTSCRIPT_PACKAGE=fvtt-relay DPKG_MAINTSCRIPT_NAME=$1 \
        DPKG_MAINTSCRIPT_ARCH=$(dpkg-deb -f "$deb" Architecture) \
        "$WORK/DEBIAN/$1" "${@:2}" 2>&1) || fail "$* exited $?: $out"
}

# Install.
run postinst configure
[ "$(stat -c %a /var/lib/private)" = 700 ] || fail "/var/lib/private is not 0700"
[ "$(stat -c %a "$state")" = 700 ] || fail "$state is not a 0700 directory"
[ "$(readlink /var/lib/fvtt-relay)" = private/fvtt-relay ] || fail "/var/lib/fvtt-relay is not a link to private/fvtt-relay"
[ -L "$wants" ] || fail "postinst did not enable the unit"
grep -q 'admin-key --data-dir /var/lib/fvtt-relay' <<<"$out" || fail "postinst does not say how to see the admin key: $out"

# First start (systemd's job on a real system): the relay writes the admin key.
# Its ready line comes once it listens, with its signal handlers in place.
"$bin" --listen 127.0.0.1:0 --data-dir /var/lib/fvtt-relay >"$WORK/stdout" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    grep -q '^fvtt-relay listening on' "$WORK/stdout" && break
    sleep 0.1
done
kill -TERM "$pid"
wait "$pid" || fail "the relay did not exit 0 on SIGTERM"
[ -s "$state/admin.key" ] || fail "no admin key after the first start"
before=$(cat "$state/admin.key" "$state/state.json" | sha256sum)

# Upgrade to the same version again: state and key stay.
run prerm upgrade "$version"
run postrm upgrade "$version"
run postinst configure "$version"
[ "$(cat "$state/admin.key" "$state/state.json" | sha256sum)" = "$before" ] || fail "an upgrade changed the state"
grep -q 'admin key is in /var/lib/fvtt-relay/admin.key' <<<"$out" || fail "postinst after the first start: $out"
[ -L "$wants" ] || fail "the unit is not enabled after an upgrade"

# Remove: state stays, and postrm says so.
run prerm remove
run postrm remove
[ "$(cat "$state/admin.key" "$state/state.json" | sha256sum)" = "$before" ] || fail "remove changed the state"
grep -q 'apt purge fvtt-relay' <<<"$out" || fail "postrm remove does not say how to delete the state: $out"

# Purge: the state goes, and postrm says so.
run postrm purge
[ ! -e "$state" ] && [ ! -e /var/lib/fvtt-relay ] && [ ! -L /var/lib/fvtt-relay ] || fail "purge left the state"
grep -q 'deleted its state' <<<"$out" || fail "postrm purge does not say what it deleted: $out"
[ ! -e "$wants" ] || fail "purge left the unit enabled"
echo "deb-lifecycle: ok: $(basename "$deb"): install, first start, upgrade, remove keep the state; purge deletes it"
