# fvtt-relay build, test and run targets. Needs only a Rust toolchain (cargo) plus the usual
# POSIX tools; the WebSocket conformance check is skipped when its tools are unavailable.
#
#   make run          build a release binary and serve on 127.0.0.1:3010 with ./data
#   make test         lint, unit + integration tests, quick Autobahn run (what CI runs)
#   make conformance  full Autobahn run (301 cases) against a release build
#   make lint         rustfmt check and clippy with warnings as errors
#   make check-unit   systemd-analyze verify + security score of deploy/fvtt-relay.service
#   make fmt          format the code
#   make docs         regenerate docs/CONFIG.md and deploy/fvtt-relay.default from src/config.rs
#   make contract     the API contract check (schemathesis against /openapi.json)
#   make contract-deep the same with more examples per operation
#   make screenshots  re-take the admin/pair page screenshots under docs/ (Chromium)
#   make bench        benchmarks (BENCH_QUICK=1 for `make bench-quick`)
#   make bench-compare URL=http://127.0.0.1:PORT KEY=... CLIENT_ID=fvtt_...
#   make fuzz         AFL++ fuzz targets, FUZZ_SECONDS (default 60) each; not part of `make test`
#   make soak         30-minute soak under mixed load and abuse (SOAK_MINUTES, SOAK_SECONDS)
#   make clean        remove build output (never ./data)
#   make pi           stripped release binaries for the Raspberry Pi in target/pi-bin/ (cross-built)
#   make pi-test      the whole test suite built for aarch64 and armv7, run under qemu-user
#   make pi-smoke     aarch64 build under qemu: start, /api/health, a key, SIGTERM (in make test)
#   make deb          Debian packages (arm64, armhf, amd64) in target/debian/
#   make deb-check    the amd64 package: contents, modes, conffiles, lintian (in make test)

CARGO    ?= cargo
LISTEN   ?= 127.0.0.1:3010
DATA_DIR ?= ./data

MCP_NODE = target/mcp-node
MCP_VENV = target/mcp-venv
# 0.1.14 and later need Node 22 (fs.globSync); 0.1.13 runs on the Node 20 of Debian 12.
MCP_CONFORMANCE = 0.1.13
# The SDK versions tests/mcp.rs was written against (pinned so a release cannot turn CI red).
MCP_TS_SDK = 1.32.2
MCP_PY_SDK = 2.3.0


.PHONY: mcp-deps mcp-conformance run test test-deps screenshots unit conformance lint fmt docs bench bench-quick bench-compare soak clean tools check-unit contract contract-deep contract-deps fuzz
.PHONY: pi pi-deps pi-test pi-smoke deb deb-deps deb-check

run:
	$(CARGO) build --release
	target/release/fvtt-relay --listen $(LISTEN) --data-dir $(DATA_DIR)

test: lint test-deps contract-deps mcp-deps unit check-unit mcp-conformance
	scripts/conformance.sh --quick
	$(MAKE) --no-print-directory pi-smoke deb-check

# deploy/fvtt-relay.service must load in systemd and keep its hardening. `verify` checks
# that ExecStart's program exists, so it runs on a copy whose ExecStart names the binary
# just built (the rest of the unit unchanged). verify only warns about a bad value or an
# unknown key ("ignoring"), so any remark on our file fails the check. `security` must
# stay at exposure 1.7 or better (it is 1.5). Skipped where systemd-analyze is missing;
# the score check where it predates --offline (systemd 250).
UNIT_CHECK = target/unit-check/fvtt-relay.service
check-unit:
	@if ! command -v systemd-analyze >/dev/null 2>&1; then \
		echo "systemd-analyze not found: unit check SKIPPED"; exit 0; \
	fi; \
	$(CARGO) build --quiet && mkdir -p $(dir $(UNIT_CHECK)) && \
	sed -E 's|^ExecStart=[^ ]+|ExecStart=$(CURDIR)/target/debug/fvtt-relay|' \
		deploy/fvtt-relay.service > $(UNIT_CHECK) && \
	echo "systemd-analyze verify deploy/fvtt-relay.service" && \
	systemd-analyze verify $(UNIT_CHECK) > $(UNIT_CHECK).verify 2>&1; rc=$$?; \
	cat $(UNIT_CHECK).verify; \
	if [ $$rc -ne 0 ] || grep -q 'fvtt-relay.service:' $(UNIT_CHECK).verify; then \
		echo "deploy/fvtt-relay.service: systemd-analyze verify failed" >&2; exit 1; \
	fi; \
	if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then \
		systemd-analyze security --offline=yes --threshold=17 $(UNIT_CHECK) > $(UNIT_CHECK).security; \
		rc=$$?; tail -n 1 $(UNIT_CHECK).security; \
		[ $$rc -eq 0 ] || { echo "deploy/fvtt-relay.service: exposure above 1.7" >&2; exit 1; }; \
	else \
		echo "systemd-analyze security --offline unsupported: score check SKIPPED"; \
	fi

# The admin page's browser test needs Chromium (Debian's package) and axe-core (npm, into
# target/axe). Installed here when we can (root, apt; npm); otherwise tests/admin_browser.rs
# tries itself and, failing that, says SKIPPED.
test-deps:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the admin page test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } || \
		echo "chromium could not be installed; the admin browser test will say SKIPPED"; \
	fi
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing npm for axe-core"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null 2>&1 || \
		echo "npm could not be installed; the admin browser test will skip its axe checks"; \
	fi
	@if [ ! -f target/axe/node_modules/axe-core/axe.min.js ] && command -v npm >/dev/null 2>&1; then \
		echo "installing axe-core (npm) for the admin page accessibility check"; \
		npm install --silent --no-audit --no-fund --prefix target/axe axe-core >/dev/null 2>&1 || \
		echo "axe-core could not be installed; the admin browser test will skip its axe checks"; \
	fi

# Re-takes the pages' screenshots under docs/ (the browser test with FVTT_RELAY_SCREENSHOT=1).
screenshots: test-deps
	FVTT_RELAY_SCREENSHOT=1 $(CARGO) test --test admin_browser -- --test-threads=1

# The official MCP SDK clients and conformance suite for tests/mcp.rs and mcp-conformance,
# under target/ (gitignored). Quick when already installed; without npm or python3 the MCP
# tests say SKIPPED (under CI they fail instead).
mcp-deps:
	@if [ ! -f $(MCP_NODE)/node_modules/@modelcontextprotocol/sdk/package.json ] || \
	    [ ! -f $(MCP_NODE)/node_modules/@modelcontextprotocol/conformance/package.json ]; then \
		if command -v npm >/dev/null 2>&1; then \
			echo "npm install @modelcontextprotocol/sdk @modelcontextprotocol/conformance"; \
			mkdir -p $(MCP_NODE) && npm install --prefix $(MCP_NODE) --no-audit --no-fund --silent \
				@modelcontextprotocol/sdk@$(MCP_TS_SDK) @modelcontextprotocol/conformance@$(MCP_CONFORMANCE) || exit 1; \
		else echo "npm not found: TypeScript MCP tests will say SKIPPED"; fi; \
	fi
	@if ! $(MCP_VENV)/bin/python -c 'import mcp' >/dev/null 2>&1; then \
		if command -v python3 >/dev/null 2>&1; then \
			echo "python3 -m venv $(MCP_VENV) && pip install mcp==$(MCP_PY_SDK)"; \
			python3 -m venv $(MCP_VENV) && $(MCP_VENV)/bin/pip install -q mcp==$(MCP_PY_SDK) || exit 1; \
		else echo "python3 not found: Python MCP tests will say SKIPPED"; fi; \
	fi

# The official MCP conformance suite's server scenarios against a debug build (see
# scripts/mcp-conformance.sh and README "Use it from an AI assistant").
mcp-conformance: mcp-deps
	$(CARGO) build --quiet
	scripts/mcp-conformance.sh

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
	FVTT_RELAY_WRITE_DOCS=1 $(CARGO) test --lib -- config::tests::config_md_is_current config::tests::env_file_is_current

# The bench opens up to 10,000 idle sockets on each side of loopback: raise the soft
# descriptor limit (ulimit -n 65536, or the hard limit when that is lower) for it and the relay
# it starts. cargo bench builds the release binary it drives (see benches/relay.rs).
BENCH_ULIMIT = ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn) 2>/dev/null || true

bench:
	$(BENCH_ULIMIT); $(CARGO) bench --bench relay
	$(CARGO) bench --bench mcp

bench-quick:
	$(BENCH_ULIMIT); BENCH_QUICK=1 $(CARGO) bench --bench relay
	BENCH_QUICK=1 $(CARGO) bench --bench mcp

# Runs the same forwarding load against another relay on loopback (which must already have a
# world attached), alternating with ours. URL, KEY and CLIENT_ID (and optionally PID, for its
# CPU and RSS) reach the bench through the environment (make exports command-line variables),
# never through the echoed command.
bench-compare:
	@test -n "$${URL:-}" && test -n "$${KEY:-}" && test -n "$${CLIENT_ID:-}" || \
		{ echo "usage: make bench-compare URL=http://127.0.0.1:PORT KEY=<api key> CLIENT_ID=<clientId> [PID=<relay pid>]" >&2; exit 2; }
	@echo "$(CARGO) bench --bench relay  (URL, KEY and CLIENT_ID from the environment)"
	@$(BENCH_ULIMIT); $(CARGO) bench --bench relay

# Coverage-guided fuzzing with cargo-afl (installed here when missing). tests/fuzz/run.sh sets
# the AFL++ environment a container needs; it exits non-zero and lists the files when any
# target found a crash or a hang. FUZZ_TARGETS="http_head chunked" picks targets.
FUZZ_SECONDS ?= 60

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) tests/fuzz/run.sh

# Not part of `make test`: 30 minutes by default. SOAK_MINUTES=N or SOAK_SECONDS=N (quick
# runs) set the length; the report goes to target/soak/report.json and target/soak/soak.svg,
# and the target fails when the verdict does (see benches/soak.rs, docs/soak/README.md).
soak:
	$(BENCH_ULIMIT); $(CARGO) bench --bench soak

clean:
	$(CARGO) clean

# The API contract check (tests/contract.rs): schemathesis from PyPI in a venv under target/.
SCHEMATHESIS_VERSION ?= 4.32.5
CONTRACT_VENV = target/contract-venv

ASYNCAPI_PARSER_VERSION ?= 3.6.6
CONTRACT_NODE = target/contract-node

contract-deps:
	@if [ ! -x $(CONTRACT_VENV)/bin/schemathesis ]; then \
		echo "installing schemathesis $(SCHEMATHESIS_VERSION) into $(CONTRACT_VENV)"; \
		python3 -m venv $(CONTRACT_VENV) && \
		$(CONTRACT_VENV)/bin/pip install -q "schemathesis==$(SCHEMATHESIS_VERSION)"; \
	fi
	@if [ ! -d $(CONTRACT_NODE)/node_modules/@asyncapi/parser ]; then \
		echo "installing @asyncapi/parser $(ASYNCAPI_PARSER_VERSION) into $(CONTRACT_NODE)"; \
		mkdir -p $(CONTRACT_NODE) && \
		npm install --silent --no-audit --no-fund --prefix $(CONTRACT_NODE) \
			"@asyncapi/parser@$(ASYNCAPI_PARSER_VERSION)"; \
	fi

contract: contract-deps
	$(CARGO) test --test contract -- --nocapture

contract-deep: contract-deps
	CONTRACT_MAX_EXAMPLES=50 $(CARGO) test --test contract -- --nocapture

# ---- Raspberry Pi: cross builds, the suite under qemu-user, Debian packages ----------------
# Cross linkers per target, given as environment variables here rather than in
# .cargo/config.toml, which would also apply on a Pi building for itself.
PI_ENV = CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
PI_TARGETS = aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl

# Cross compilers, qemu-user and the Rust standard libraries for the Pi targets.
pi-deps:
	@scripts/pi-deps.sh $(PI_TARGETS)

# target/pi-bin/ gets one file per kind of Pi OS (README.md, "Install on a Raspberry Pi"). The
# static armv7 build links glibc statically (crt-static), in its own target dir so that its
# flags do not mix with the dynamic build's.
pi: pi-deps
	$(PI_ENV) $(CARGO) build --profile pi --target aarch64-unknown-linux-gnu
	$(PI_ENV) $(CARGO) build --profile pi --target armv7-unknown-linux-gnueabihf
	$(PI_ENV) $(CARGO) build --profile pi --target aarch64-unknown-linux-musl
	$(PI_ENV) CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static" \
		$(CARGO) build --profile pi --target armv7-unknown-linux-gnueabihf --target-dir target/static
	@mkdir -p target/pi-bin
	cp target/aarch64-unknown-linux-gnu/pi/fvtt-relay target/pi-bin/fvtt-relay-aarch64-gnu
	cp target/armv7-unknown-linux-gnueabihf/pi/fvtt-relay target/pi-bin/fvtt-relay-armv7-gnueabihf
	cp target/aarch64-unknown-linux-musl/pi/fvtt-relay target/pi-bin/fvtt-relay-aarch64-static
	cp target/static/armv7-unknown-linux-gnueabihf/pi/fvtt-relay target/pi-bin/fvtt-relay-armv7-static
	@scripts/pi-report.sh target/pi-bin/fvtt-relay-*
	@for f in target/pi-bin/fvtt-relay-*; do scripts/pi-smoke.sh $$f || exit 1; done

# The whole suite (lib, bins, integration tests) for each ARM target under qemu-user, with
# speed-only limits stretched by PI_TIME_FACTOR (tests/support/server.rs).
PI_TIME_FACTOR ?= 8
# Both targets run to the end, every test (--no-fail-fast); it fails if either had a failure.
pi-test: pi-deps
	@export $(PI_ENV) FVTT_TEST_TIME_FACTOR=$(PI_TIME_FACTOR); status=0; \
	for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do \
		scripts/pi-test.sh $$t --no-fail-fast || status=1; \
	done; exit $$status

# The aarch64 release binary under qemu-user: start, GET /api/health, create a key with the
# CLI, SIGTERM, exit 0. The quick ARM check that make test runs; SKIPPED (and passing) on a
# machine where the cross tools or the target's standard library cannot be installed.
pi-smoke:
	@if scripts/pi-deps.sh aarch64-unknown-linux-gnu; then \
		echo "$(CARGO) build --profile pi --target aarch64-unknown-linux-gnu"; \
		$(PI_ENV) $(CARGO) build --profile pi --target aarch64-unknown-linux-gnu && \
		scripts/pi-smoke.sh target/aarch64-unknown-linux-gnu/pi/fvtt-relay; \
	else \
		echo "pi-smoke: SKIPPED (the aarch64 cross tools could not be installed here)"; \
	fi

# cargo-deb and the tools the packages are checked with.
deb-deps:
	@scripts/apt-install.sh dpkg-dev lintian
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked

# target/debian/fvtt-relay_VERSION-1_{arm64,armhf,amd64}.deb, from the pi profile. Depends
# comes from dpkg-shlibdeps ($auto in Cargo.toml); for the ARM packages it reads the ARM libc's
# symbols files, installed through multiarch (scripts/deb-cross-libc.sh), with the wrapper in
# scripts/deb-tools/ keeping it off the cross toolchain's copy.
DEB_CROSS = $(PI_ENV) PATH="$(CURDIR)/scripts/deb-tools:$$PATH"
deb: pi-deps deb-deps
	@scripts/deb-cross-libc.sh
	$(CARGO) deb --profile pi --no-strip
	$(DEB_CROSS) $(CARGO) deb --profile pi --no-strip --target aarch64-unknown-linux-gnu
	$(DEB_CROSS) $(CARGO) deb --profile pi --no-strip --target armv7-unknown-linux-gnueabihf
	@for d in target/debian/fvtt-relay_*_amd64.deb target/debian/fvtt-relay_*_arm64.deb target/debian/fvtt-relay_*_armhf.deb; do \
		scripts/deb-check.sh $$d || exit 1; done

# The amd64 package, checked (scripts/deb-check.sh): what make test runs; SKIPPED (and
# passing) where cargo-deb or lintian cannot be installed (not root, say).
deb-check:
	@if $(MAKE) --no-print-directory deb-deps; then \
		echo "$(CARGO) deb --profile pi --no-strip"; \
		$(CARGO) deb --profile pi --no-strip && \
		scripts/deb-check.sh target/debian/fvtt-relay_*_amd64.deb; \
	else \
		echo "deb-check: SKIPPED (cargo-deb, dpkg-dev or lintian could not be installed here)"; \
	fi
