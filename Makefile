# fvtt-relay build, test and run targets. Needs only a Rust toolchain (cargo) plus the usual
# POSIX tools; the WebSocket conformance check is skipped when its tools are unavailable.
#
#   make run          build a release binary and serve on 127.0.0.1:3010 with ./data
#   make test         lint, unit + integration tests, quick Autobahn run (what CI runs)
#   make conformance  full Autobahn run (301 cases) against a release build
#   make lint         rustfmt check and clippy with warnings as errors
#   make fmt          format the code
#   make docs         regenerate docs/CONFIG.md from src/config.rs
#   make bench        benchmarks (BENCH_QUICK=1 for `make bench-quick`)
#   make bench-compare URL=http://127.0.0.1:PORT KEY=... CLIENT_ID=fvtt_...
#   make soak         30-minute soak under mixed load and abuse (SOAK_MINUTES, SOAK_SECONDS)
#   make clean        remove build output (never ./data)

CARGO    ?= cargo
LISTEN   ?= 127.0.0.1:3010
DATA_DIR ?= ./data

.PHONY: run test test-deps unit conformance lint fmt docs bench bench-quick bench-compare soak clean tools

run:
	$(CARGO) build --release
	target/release/fvtt-relay --listen $(LISTEN) --data-dir $(DATA_DIR)

test: lint test-deps unit
	scripts/conformance.sh --quick

# The admin page's browser test needs Chromium (Debian's package). Installed here when we can
# (root, apt); otherwise tests/admin_browser.rs tries itself and, failing that, says SKIPPED.
test-deps:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the admin page test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || \
		echo "chromium could not be installed; the admin browser test will say SKIPPED"; \
	fi

# cargo-nextest when installed (parallel, one process per test), else cargo test.
# nextest gets --lib --bins --tests: a harness = false bench has no test list to offer it.
unit:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --lib --bins --tests"; \
		$(CARGO) nextest run --lib --bins --tests; \
	else \
		echo "$(CARGO) test --all-targets"; \
		$(CARGO) test --all-targets; \
	fi

conformance:
	$(CARGO) build --release
	FVTT_RELAY_BIN=target/release/fvtt-relay scripts/conformance.sh

lint: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# rustfmt and clippy are rustup components that a minimal toolchain may lack.
tools:
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

fmt: tools
	$(CARGO) fmt --all

docs:
	FVTT_RELAY_WRITE_DOCS=1 $(CARGO) test --lib config::tests::config_md_is_current

# The bench opens up to 10,000 idle sockets on each side of loopback: raise the soft
# descriptor limit (ulimit -n 65536, or the hard limit when that is lower) for it and the relay
# it starts. cargo bench builds the release binary it drives (see benches/relay.rs).
BENCH_ULIMIT = ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn) 2>/dev/null || true

bench:
	$(BENCH_ULIMIT); $(CARGO) bench --bench relay

bench-quick:
	$(BENCH_ULIMIT); BENCH_QUICK=1 $(CARGO) bench --bench relay

# Runs the same forwarding load against another relay on loopback (which must already have a
# world attached), alternating with ours. URL, KEY and CLIENT_ID (and optionally PID, for its
# CPU and RSS) reach the bench through the environment (make exports command-line variables),
# never through the echoed command.
bench-compare:
	@test -n "$${URL:-}" && test -n "$${KEY:-}" && test -n "$${CLIENT_ID:-}" || \
		{ echo "usage: make bench-compare URL=http://127.0.0.1:PORT KEY=<api key> CLIENT_ID=<clientId> [PID=<relay pid>]" >&2; exit 2; }
	@echo "$(CARGO) bench --bench relay  (URL, KEY and CLIENT_ID from the environment)"
	@$(BENCH_ULIMIT); $(CARGO) bench --bench relay

# Not part of `make test`: 30 minutes by default. SOAK_MINUTES=N or SOAK_SECONDS=N (quick
# runs) set the length; the report goes to target/soak/report.json and target/soak/soak.svg,
# and the target fails when the verdict does (see benches/soak.rs, docs/soak/README.md).
soak:
	$(BENCH_ULIMIT); $(CARGO) bench --bench soak

clean:
	$(CARGO) clean
