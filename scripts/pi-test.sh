#!/usr/bin/env bash
# Runs the whole test suite built for an ARM target under qemu-user:
#   scripts/pi-test.sh aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf [nextest args]
# Cargo starts the test binaries through target.<triple>.runner; the relay and the other
# ARM processes that the tests start go through FVTT_TEST_RUNNER (tests/support/server.rs).
# QEMU_LD_PREFIX points qemu at the cross sysroot for the dynamic loader and libc. The
# cross linker comes from the environment (see PI_ENV in the Makefile).
set -euo pipefail
target=${1:?usage: pi-test.sh TARGET [nextest args]}
shift
case "$target" in
    aarch64-unknown-linux-gnu) qemu=qemu-aarch64 sysroot=/usr/aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) qemu=qemu-arm sysroot=/usr/arm-linux-gnueabihf ;;
    *) echo "pi-test: unsupported target $target" >&2; exit 2 ;;
esac
upper=$(tr 'a-z-' 'A-Z_' <<<"$target")
export "CARGO_TARGET_${upper}_RUNNER=$qemu"
export QEMU_LD_PREFIX=$sysroot
# The guest's libraries from the same sysroot as its loader: with QEMU_LD_PREFIX alone, a
# path missing there falls back to the host's, and where the ARM libc is also installed
# through multiarch (make deb) the loader of one glibc build would load the libc of
# another, which hangs in pthread_create.
export QEMU_SET_ENV=LD_LIBRARY_PATH=$sysroot/lib
export FVTT_TEST_RUNNER=$qemu
export FVTT_TEST_TIME_FACTOR=${FVTT_TEST_TIME_FACTOR:-8}
# Emulated tests spend most of their time waiting on sockets and timers: run more at once
# than there are cores.
threads=${PI_TEST_THREADS:-4}
# PI_TEST_TARGET_DIR: a separate target dir lets one target build while the other runs.
[ -z "${PI_TEST_TARGET_DIR:-}" ] || export CARGO_TARGET_DIR=$PI_TEST_TARGET_DIR
echo "pi-test: $target under $qemu (time factor $FVTT_TEST_TIME_FACTOR)"
cargo=${CARGO:-cargo}
if $cargo nextest --version >/dev/null 2>&1; then
    exec $cargo nextest run --cargo-profile pi-test --target "$target" --lib --bins --tests \
        --test-threads "$threads" "$@"
else
    exec $cargo test --profile pi-test --target "$target" --lib --bins --tests "$@" \
        -- --test-threads "$threads"
fi
