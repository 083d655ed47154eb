#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance, installed by
# `make mcp-deps` under target/mcp-node) against /mcp: the server scenarios that apply to a
# server without the suite's sample tools, resources and prompts (README, "Use it from an AI
# assistant", lists the others and why they do not apply).
#
# Starts the relay on a free loopback port with a temporary data dir and a full-scope key
# (`fvtt-relay key create`), and a loopback proxy that adds that key (the suite's client
# sends no credentials; scripts/mcp-auth-proxy.mjs). Without node or the suite: SKIPPED,
# except under CI (CI set), where that fails.
#
# Environment: FVTT_RELAY_BIN (default target/debug/fvtt-relay), READY_TIMEOUT (30 s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCENARIOS=(server-initialize ping tools-list resources-list prompts-list
  dns-rebinding-protection server-sse-multiple-streams)

suite=target/mcp-node/node_modules/.bin/conformance
if ! command -v node >/dev/null 2>&1 || [ ! -x "$suite" ]; then
  if [ -n "${CI:-}" ]; then echo "mcp-conformance: suite not installed (make mcp-deps)" >&2; exit 1; fi
  echo "mcp-conformance: SKIPPED (node or $suite missing; run make mcp-deps)"
  exit 0
fi

bin="${FVTT_RELAY_BIN:-target/debug/fvtt-relay}"
[ -x "$bin" ] || { echo "mcp-conformance: $bin is not an executable" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/fvtt-relay-mcp-conformance.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$work/data"
key="$("$bin" key create --name mcp-conformance --scopes all --data-dir "$work/data")"
# The files the waits read exist before the background jobs' redirections run.
: >"$work/stdout"
: >"$work/proxy"
"$bin" --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/stdout" 2>"$work/stderr" &
pids+=($!)

wait_line() { # file sed-expression -> first match, or fail after READY_TIMEOUT
  local out="" deadline=$(( SECONDS + ${READY_TIMEOUT:-30} ))
  while [ -z "$out" ]; do
    out="$(sed -n "$2" "$1" | head -n 1)"
    [ -n "$out" ] && break
    if [ $SECONDS -ge $deadline ]; then echo "mcp-conformance: no ready line in $1" >&2; cat "$work/stderr" >&2; exit 1; fi
    sleep 0.1
  done
  echo "$out"
}
port="$(wait_line "$work/stdout" 's#^fvtt-relay listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$#\1#p')"
MCP_KEY="$key" node scripts/mcp-auth-proxy.mjs "$port" >"$work/proxy" 2>&1 &
pids+=($!)
proxy="$(wait_line "$work/proxy" 's#^proxy listening on \([0-9][0-9]*\)$#\1#p')"

failed=()
for s in "${SCENARIOS[@]}"; do
  if out="$("$suite" server --url "http://127.0.0.1:$proxy/mcp" --scenario "$s" 2>&1)" &&
     grep -q "0 failed" <<<"$out"; then
    echo "mcp-conformance: $s: $(grep -o 'Passed: [0-9]*/[0-9]*' <<<"$out")"
  else
    echo "$out"
    failed+=("$s")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "mcp-conformance: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "mcp-conformance: ${#SCENARIOS[@]} scenarios passed"
