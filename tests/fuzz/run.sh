#!/bin/sh
# Build the fuzz targets with cargo-afl (AFL++) and run each for FUZZ_SECONDS (default 60),
# non-interactively. Exits 1 when any target saved a crash or a hang, listing the files.
# `make fuzz` runs this; README "Fuzzing" says how to reproduce a finding.
#
#   FUZZ_SECONDS=60      fuzzing time per target
#   FUZZ_TARGETS="..."   the targets to run (default: all)
#   FUZZ_TIMEOUT_MS=2000 an execution slower than this is a hang (generous: a busy machine
#                        must not report one; every target runs in microseconds)
set -eu
cd "$(dirname "$0")"

CARGO=${CARGO:-cargo}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TIMEOUT_MS=${FUZZ_TIMEOUT_MS:-2000}
ALL="http_head chunked ws_handshake ws_frames module_dispatch params state_load percent"
FUZZ_TARGETS=${FUZZ_TARGETS:-$ALL}

# AFL++ in a container or CI runner: no CPU governor to read, core dumps may be piped to a
# handler we cannot change (the target aborts on panic either way), no fixed core to bind
# to, no terminal for the UI. AFL_FAST_CAL keeps start-up short.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_AFFINITY=1 AFL_FAST_CAL=1

if ! $CARGO afl --version >/dev/null 2>&1; then
    echo "installing cargo-afl (builds AFL++ with the C compiler)"
    $CARGO install --locked cargo-afl
fi
# cargo-afl builds AFL++ on install; `config --build` does it if that step was skipped.
if ! $CARGO afl fuzz -h 2>&1 | grep -q 'Required parameters'; then
    $CARGO afl config --build
fi

$CARGO fmt --check
# The harness self-tests: every seed runs clean, the dispatcher harness reaches replies.
$CARGO test --lib --locked
$CARGO afl build --release --locked

mkdir -p out
status=0
summary=""
for t in $FUZZ_TARGETS; do
    if [ ! -d "corpus/$t" ]; then
        echo "unknown target $t (targets: $ALL)" >&2
        exit 2
    fi
    rm -rf "out/$t"
    echo "== fuzzing $t for ${FUZZ_SECONDS}s"
    # A dictionary of the tokens the target compares against (header names, message types,
    # route parameters): AFL++ built without LLVM plugins cannot solve such comparisons.
    dict=""
    [ -f "dict/$t.dict" ] && dict="-x dict/$t.dict"
    # shellcheck disable=SC2086 # $dict is empty or two words
    if ! $CARGO afl fuzz -i "corpus/$t" -o "out/$t" $dict -V "$FUZZ_SECONDS" -t "$FUZZ_TIMEOUT_MS" \
        "target/release/$t" >"out/$t.log" 2>&1; then
        tail -20 "out/$t.log" >&2
        echo "afl-fuzz failed for $t; full log: tests/fuzz/out/$t.log" >&2
        status=1
        continue
    fi
    stats="out/$t/default/fuzzer_stats"
    execs=$(sed -n 's/^execs_done *: *//p' "$stats")
    found=$(find "out/$t/default/crashes" "out/$t/default/hangs" -type f ! -name README.txt 2>/dev/null | sort)
    n=$(printf '%s' "$found" | grep -c . || true)
    summary="$summary$(printf '%-16s %12s execs  %s finding(s)' "$t" "$execs" "$n")
"
    if [ "$n" -gt 0 ]; then
        status=1
        printf '%s\n' "$found" | sed 's|^|  tests/fuzz/|' >&2
    fi
done

echo "== fuzzing summary (${FUZZ_SECONDS}s per target)"
printf '%s' "$summary"
if [ "$status" -ne 0 ]; then
    echo "findings above: reproduce one with" >&2
    echo "  (cd tests/fuzz && cargo run --bin replay -- <target> <file>)" >&2
fi
exit "$status"
