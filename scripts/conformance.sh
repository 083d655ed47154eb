#!/usr/bin/env bash
# Autobahn|Testsuite WebSocket conformance (RFC 6455) against the relay's /test/echo route.
#
#   scripts/conformance.sh [--quick]
#
# Starts the relay on a free loopback port with --test-echo and a temporary data dir, reads
# the port from the one line it prints when ready ("fvtt-relay listening on
# http://127.0.0.1:PORT"), runs ../shared/tools/ws-conformance against it, then stops it.
# When the tool is missing or cannot install its engine here (its exit code 4), the check
# is reported as SKIPPED and passes; every other failure fails.
#
# Environment:
#   FVTT_RELAY_BIN       relay binary (default target/debug/fvtt-relay, built if missing)
#   WS_CONFORMANCE_TOOL  path to ws-conformance (default ../shared/tools/ws-conformance)
#   READY_TIMEOUT        seconds to wait for the listening line (default 30)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=()
case "${1:-}" in
  --quick) mode=(--quick) ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

tool="${WS_CONFORMANCE_TOOL:-../shared/tools/ws-conformance}"
if [ ! -f "$tool" ]; then
  echo "ws-conformance: SKIPPED ($tool not found; set WS_CONFORMANCE_TOOL)"
  exit 0
fi

bin="${FVTT_RELAY_BIN:-target/debug/fvtt-relay}"
if [ -z "${FVTT_RELAY_BIN:-}" ]; then
  cargo build --quiet --bin fvtt-relay
fi
[ -x "$bin" ] || { echo "conformance: $bin is not an executable" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/fvtt-relay-conformance.XXXXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$work/data"
# Created here, not by the background job's redirection, which may not have run yet when the
# loop below first reads it (a race seen on a loaded machine).
: >"$work/stdout"
"$bin" --listen 127.0.0.1:0 --test-echo --data-dir "$work/data" \
  >"$work/stdout" 2>"$work/stderr" &
pid=$!

# Wait for the ready line; fail early if the relay exits instead.
port=""
deadline=$(( SECONDS + ${READY_TIMEOUT:-30} ))
while [ -z "$port" ]; do
  port="$(sed -n 's#^fvtt-relay listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$#\1#p' "$work/stdout" | head -n 1)"
  [ -n "$port" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "conformance: the relay exited before it was ready; its output:" >&2
    cat "$work/stdout" "$work/stderr" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "conformance: no 'fvtt-relay listening on http://127.0.0.1:PORT' line within ${READY_TIMEOUT:-30}s; output so far:" >&2
    cat "$work/stdout" "$work/stderr" >&2
    exit 1
  fi
  sleep 0.1
done

rc=0
bash "$tool" "ws://127.0.0.1:$port/test/echo" ${mode[@]+"${mode[@]}"} || rc=$?
if [ "$rc" -eq 4 ]; then
  echo "ws-conformance: SKIPPED (its tools are unavailable on this machine: exit 4)"
  rc=0
elif [ "$rc" -ne 0 ] && ! kill -0 "$pid" 2>/dev/null; then
  echo "conformance: the relay died during the run; its stderr:" >&2
  tail -n 50 "$work/stderr" >&2
fi
exit "$rc"
