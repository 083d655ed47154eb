#!/usr/bin/env bash
# Smoke test of an ARM release binary under qemu-user: it starts, answers GET /api/health,
# creates an API key through the CLI (which talks to the running relay's admin API), and
# exits 0 on SIGTERM. Prints the relay's resident memory once it is up.
#   scripts/pi-smoke.sh target/aarch64-unknown-linux-gnu/pi/fvtt-relay
set -euo pipefail
bin=${1:?usage: pi-smoke.sh BINARY}
case "$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')" in
    AArch64) qemu=qemu-aarch64 sysroot=/usr/aarch64-linux-gnu ;;
    ARM) qemu=qemu-arm sysroot=/usr/arm-linux-gnueabihf ;;
    *) echo "pi-smoke: $bin is not an ARM binary" >&2; exit 2 ;;
esac
export QEMU_LD_PREFIX=$sysroot
# The guest's libraries from the same sysroot as its loader: with QEMU_LD_PREFIX alone, a
# path missing there falls back to the host's, and where the ARM libc is also installed
# through multiarch (make deb) the loader of one glibc build would load the libc of
# another, which hangs in pthread_create.
export QEMU_SET_ENV=LD_LIBRARY_PATH=$sysroot/lib
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "pi-smoke: FAILED: $*" >&2
    echo "--- relay stderr:" >&2
    cat "$work/stderr" >&2 || true
    exit 1
}

: >"$work/stdout"  # exists before the background redirection runs (the wait below reads it)
"$qemu" "$bin" --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/stdout" 2>"$work/stderr" &
pid=$!
addr=
for _ in $(seq 1 300); do # 30 s: emulated start-up on a busy machine
    addr=$(sed -n 's|^fvtt-relay listening on http://||p' "$work/stdout")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || fail "the relay exited at start-up"
    sleep 0.1
done
[ -n "$addr" ] || fail "no ready line within 30 s"
rss=$(sed -n 's/^VmRSS:[[:space:]]*//p' "/proc/$pid/status")

# GET /api/health over bash's /dev/tcp: no curl needed.
host=${addr%:*} port=${addr##*:}
exec 3<>"/dev/tcp/$host/$port"
printf 'GET /api/health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$addr" >&3
health=$(timeout 20 cat <&3) || fail "GET /api/health did not finish"
exec 3<&-
grep -q '^HTTP/1.1 200' <<<"$health" || fail "GET /api/health: ${health%%$'\r'*}"
grep -q '"status"' <<<"$health" || fail "GET /api/health: no status in the body"

key=$(timeout 60 "$qemu" "$bin" key create --name pi-smoke --data-dir "$work/data") ||
    fail "key create failed"
[ -n "$key" ] || fail "key create printed no key"
timeout 60 "$qemu" "$bin" key list --data-dir "$work/data" | grep -q pi-smoke ||
    fail "key list does not show the new key"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || fail "exit status $status after SIGTERM"
echo "pi-smoke: ok: $(basename "$bin") under $qemu: health 200, key created, exit 0 on SIGTERM; VmRSS after start $rss"
