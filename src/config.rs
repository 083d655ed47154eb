//! Every address, limit and timeout of the relay, as one declarative table.
//!
//! The `options!` invocation below is the single source of truth: it generates the `Config`
//! struct (one documented field per option), `Config::default()`, and the `OPTIONS`
//! descriptor table that drives flag and environment parsing, `--help` and docs/CONFIG.md.
//! Help and docs therefore cannot drift from the code (STYLE.md habit 6: every limit is a
//! named field with its unit, its reason and "Default: N"; none is unlimited).
//!
//! Naming: field `max_body_bytes` is flag `--max-body-bytes VALUE` (or `--max-body-bytes=VALUE`)
//! and environment variable `FVTT_RELAY_MAX_BODY_BYTES`. A flag wins over its variable; an
//! empty variable counts as unset (systemd and compose files often carry `VAR=`).
//!
//! Value syntax: sizes are bytes or a number with a `K`, `M` or `G` suffix (KiB multiples);
//! durations are `500ms`, `10s`, `5m`, `1h` or plain seconds. Sizes, counts and durations must
//! be positive: zero would mean "nothing fits" or "never", and no limit may be unlimited.
//! Durations are capped at one year so `Instant + Duration` can never overflow (it panics).
//!
//! Subcommands (`key`, `pair`, ...) are dispatched by `main.rs` before `from_args` is called;
//! here every argument must be a known option.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

/// What `Config::from_args` decided.
// Built once at start-up and moved out at once, so the size gap costs nothing; boxing
// would only complicate the contract other code matches on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Run the relay with this (validated) configuration.
    Run(Config),
    /// `--help`/`-h`: print this text to stdout and exit 0.
    Help(String),
    /// `--version`/`-V`: print this line to stdout and exit 0.
    Version(String),
}

/// The value syntax of an option; decides its parser, its metavariable and its error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Addr,
    Path,
    Url,
    Level,
    /// A flag without a value (`--test-echo`); the variable takes 1/true/0/false.
    Switch,
    Size,
    Count,
    Duration,
    /// Comma-separated origins.
    Origins,
    /// Comma-separated names (`--mcp-tools`).
    Names,
}

impl Kind {
    /// The placeholder shown after the flag in `--help`.
    pub fn metavar(self) -> &'static str {
        match self {
            Kind::Addr => "ADDR",
            Kind::Path => "PATH",
            Kind::Url => "URL",
            Kind::Level => "LEVEL",
            Kind::Switch => "",
            Kind::Size => "SIZE",
            Kind::Count => "N",
            Kind::Duration => "DURATION",
            Kind::Origins => "LIST",
            Kind::Names => "LIST",
        }
    }
}

/// One row of the option table. Built only by the `options!` macro.
pub struct OptionSpec {
    /// The `Config` field name, e.g. `max_body_bytes`.
    pub field: &'static str,
    /// Heading in `--help` and docs/CONFIG.md.
    pub section: &'static str,
    pub kind: Kind,
    /// Default in the same syntax a user types; `Config::default()` is parsed from it.
    pub default: &'static str,
    /// What one unit of the value counts (bytes, connections, requests/min/IP, ...).
    pub unit: &'static str,
    /// The field's doc comment, one entry per line: what the option protects and why.
    pub doc: &'static [&'static str],
    /// Parse `value` into the field of `config`; the error says what was expected.
    set: fn(&mut Config, &str) -> Result<(), &'static str>,
    /// The field's current value, in a syntax that `set` accepts back.
    get: fn(&Config) -> String,
}

impl OptionSpec {
    /// `--max-body-bytes`.
    pub fn flag(&self) -> String {
        format!("--{}", self.field.replace('_', "-"))
    }

    /// `FVTT_RELAY_MAX_BODY_BYTES`.
    pub fn env(&self) -> String {
        format!("FVTT_RELAY_{}", self.field.to_ascii_uppercase())
    }

    /// The doc comment as one paragraph.
    pub fn help(&self) -> String {
        let lines: Vec<&str> = self.doc.iter().map(|l| l.trim()).collect();
        lines.join(" ")
    }

    /// The current value of this option in `config`, as a user would type it.
    pub fn value_of(&self, config: &Config) -> String {
        (self.get)(config)
    }

    /// The default as shown to people: empty lists and URLs read "(none)".
    pub fn default_display(&self) -> &'static str {
        if self.default.is_empty() {
            "(none)"
        } else {
            self.default
        }
    }

    fn invalid(&self, value: &str, expected: &str) -> String {
        // Bound the echo: a stray binary blob in an environment variable should not flood
        // the terminal, and escape_debug keeps control characters visible.
        let shown: String = value.chars().take(64).collect::<String>();
        let more = if value.chars().count() > 64 {
            "..."
        } else {
            ""
        };
        format!(
            "invalid value '{}{more}' for {} ({}): {expected}",
            shown.escape_debug(),
            self.flag(),
            self.env()
        )
    }

    fn apply(&self, config: &mut Config, value: &str) -> Result<(), String> {
        (self.set)(config, value).map_err(|expected| self.invalid(value, expected))
    }
}

/// Generates `Config`, its `Default` and `OPTIONS` from one list of sections and fields.
///
/// Each field reads `name: Type = kind("default"), "unit";` under its doc comment, where
/// `kind` names a parser module below (`size`, `duration`, ...).
macro_rules! options {
    ($(
        section $section:literal {
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty = $kind:ident ( $default:literal ), $unit:literal ;
            )+
        }
    )+) => {
        /// The relay's whole configuration. Build it with `Config::from_args` (flags and
        /// environment) or `Config::default()`; check hand-built values with `validate()`.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            $($(
                $(#[doc = $doc])+
                #[doc = ""]
                #[doc = concat!("Default: `", $default, "` (", $unit, ").")]
                pub $field: $ty,
            )+)+
        }

        impl Default for Config {
            /// The documented defaults: each is parsed from the same text that `--help` and
            /// docs/CONFIG.md show, so the three cannot disagree.
            fn default() -> Self {
                Config {
                    $($(
                        $field: match $kind::parse($default) {
                            Ok(v) => v,
                            // NOTE: unreachable while the unit test `defaults_parse` passes;
                            // defaults are ours, never a peer's.
                            Err(e) => panic!("bad default for {}: {}", stringify!($field), e),
                        },
                    )+)+
                }
            }
        }

        /// Every option, in `--help` order.
        pub static OPTIONS: &[OptionSpec] = &[
            $($(
                OptionSpec {
                    field: stringify!($field),
                    section: $section,
                    kind: $kind::KIND,
                    default: $default,
                    unit: $unit,
                    doc: &[$($doc),+],
                    set: |c: &mut Config, s: &str| {
                        c.$field = $kind::parse(s)?;
                        Ok(())
                    },
                    get: |c: &Config| $kind::show(&c.$field),
                },
            )+)+
        ];
    };
}

options! {
    section "General" {
        /// Address and port to listen on. Port 0 picks a free port (tests use this).
        listen: SocketAddr = addr("127.0.0.1:3010"), "address";
        /// Directory for state.json and its lock file; created if missing.
        data_dir: PathBuf = path("./data"), "path";
        /// Externally reachable base URL (http, https, ws or wss, no query), e.g.
        /// https://relay.example.com. Used for the relayUrl and pairUrl handed to modules;
        /// when unset they are derived from the request's Host header.
        public_url: Option<String> = url(""), "URL";
        /// Log verbosity: off, error, warn, info, debug or trace.
        log_level: LevelFilter = level("info"), "level";
        /// Serve the unauthenticated /test/echo WebSocket route used by the Autobahn
        /// conformance run. Never enable this in production.
        test_echo: bool = switch("false"), "on/off";
    }
    section "HTTP" {
        /// Largest request head (request line plus headers); more is refused with 431.
        max_head_bytes: usize = size("16K"), "bytes";
        /// Most header fields in one request; more is refused with 431.
        max_headers: usize = count("100"), "headers";
        /// Largest request body, for `POST /upload` with a valid key only (every other
        /// route gets --max-json-body-bytes); more is refused with 413 before the body is
        /// read. 32 MiB carries a 24 MiB file as base64 JSON (or a 32 MiB raw one), and an
        /// upload also holds its base64 message to the world (4/3 of the file): about
        /// 75 MiB at most, which fits the default --memory-budget with room to spare.
        max_body_bytes: usize = size("32M"), "bytes";
        /// Largest request body on every route but `/upload`: JSON for /create, /update,
        /// /execute-js, pairing and admin calls (a big actor update is a few hundred KiB).
        /// A request whose route or key cannot use a body is refused (401/403/404/405/413,
        /// then close) before its body is read.
        max_json_body_bytes: usize = size("4M"), "bytes";
        /// Longest chunk-size line of a chunked body (size plus ignored extensions); more
        /// is refused with 400.
        max_chunk_line: usize = size("4K"), "bytes";
        /// Longest trailer section after a chunked body; more is refused with 431.
        max_trailer_bytes: usize = size("8K"), "bytes";
        /// Time allowed for a request head to arrive once a connection or request starts
        /// (slowloris guard); then 408 and close. A connection that has sent nothing since
        /// it opened is closed without an answer (after this or --keepalive-timeout, if
        /// shorter).
        head_timeout: Duration = duration("10s"), "time";
        /// Idle time allowed between keep-alive requests before the connection is closed.
        keepalive_timeout: Duration = duration("1m"), "time";
        /// Time allowed for a body to finish after its head arrived; then 408 and close.
        request_body_timeout: Duration = duration("1m"), "time";
        /// Open connections of all kinds; past the cap a new connection is answered 503 and closed.
        max_connections: usize = count("4096"), "connections";
        /// Open connections from one IP address; more are refused at accept.
        max_connections_per_ip: usize = count("512"), "connections";
        /// Bytes read from one connection per loop turn, so one flooding peer cannot
        /// starve the others.
        read_budget_bytes: usize = size("256K"), "bytes";
        /// Bytes of pipelined requests buffered behind the one in flight on a keep-alive
        /// connection; past this the connection stops reading until the answer leaves.
        pipeline_buffer_bytes: usize = size("32K"), "bytes";
        /// Response bytes queued for a keep-alive client above which its next pipelined
        /// request waits (and reading stops) until the client reads: as nginx does, so a
        /// client that pipelines without reading holds at most this plus one response.
        /// Answering a request does not restart the keep-alive timer while answers wait
        /// unread; only written bytes do.
        pipeline_outq_bytes: usize = size("64K"), "bytes";
        /// Pipelined requests answered on one connection per loop turn before the other
        /// connections get their turn (WebSocket messages have the same rule).
        requests_per_turn: usize = count("16"), "requests";
        /// How long a closing connection waits for the peer's EOF (or close frame) after
        /// our last bytes, before the socket is dropped anyway.
        close_linger: Duration = duration("2s"), "time";
    }
    section "WebSocket" {
        /// Largest message on the world link (/relay); world replies carry whole files.
        /// The read buffer cap is this plus 64 KiB.
        module_max_message: usize = size("64M"), "bytes";
        /// Largest single frame on the world link.
        module_max_frame: usize = size("64M"), "bytes";
        /// Largest message (and frame) on a world link before its auth message succeeded:
        /// the auth message is a few hundred bytes, so a stranger cannot make the relay
        /// buffer --module-max-message per connection for --auth-timeout; larger closes
        /// with 1009. The full limit applies from auth-success on.
        module_preauth_max_message: usize = size("8K"), "bytes";
        /// Interval between control pings to the world link.
        module_ping_interval: Duration = duration("20s"), "time";
        /// A world link with no frame at all for this long is dropped. Liveness rests on
        /// control pings: the module never answers a JSON ping (module-protocol.md).
        module_idle_timeout: Duration = duration("40s"), "time";
        /// Link events (connected, closed, refused) kept per paired world for "why is it
        /// offline?" on the admin page, `fvtt-relay worlds` and API errors.
        world_history: usize = count("8"), "events";
        /// A world link that has shown no life (no message, no pong) for a ping interval
        /// plus this has missed a ping; a newcomer for its clientId then replaces it (the
        /// stale link gets 1001) instead of waiting with 4004.
        module_stale_margin: Duration = duration("5s"), "time";
        /// Largest message on /ws/api.
        api_max_message: usize = size("1M"), "bytes";
        /// Largest single frame on /ws/api.
        api_max_frame: usize = size("1M"), "bytes";
        /// Interval between control pings on /ws/api.
        api_ping_interval: Duration = duration("30s"), "time";
        /// A /ws/api connection with no frame for this long is dropped.
        api_idle_timeout: Duration = duration("1m"), "time";
        /// Largest client frame on /ws/events; larger frames close with 1009.
        events_max_frame: usize = size("4K"), "bytes";
        /// Interval between control pings on /ws/events.
        events_ping_interval: Duration = duration("54s"), "time";
        /// A /ws/events connection that sent no pong or other frame for this long is
        /// dropped; a ping goes out every --events-ping-interval to prompt one.
        events_pong_timeout: Duration = duration("1m"), "time";
        /// Events queued for one /ws/events socket before it counts as a slow consumer.
        events_max_queue_messages: usize = count("256"), "messages";
        /// Largest message on /test/echo; Autobahn's 9.* cases need 16 MiB.
        echo_max_message: usize = size("16M"), "bytes";
        /// Time allowed for the first (authentication) message after an upgrade.
        auth_timeout: Duration = duration("10s"), "time";
    }
    section "Output queues" {
        /// Bytes the relay may hold for its peers in all: input buffers, request bodies,
        /// queued output. Past it, unauthenticated work is shed, the largest first (HTTP 503
        /// and close, WebSocket 1013; counted in fvtt_relay_shed_total), and a body that
        /// would pass it is refused on its head; world links and authenticated clients
        /// are never shed. 128 MiB suits a 1 GB Raspberry Pi that also runs the OS and
        /// often Foundry itself (Node, 300-500 MB): one full --max-body-bytes upload with
        /// its message to the world (about 75 MiB) still fits beside ordinary traffic.
        memory_budget: usize = size("128M"), "bytes";
        /// Bytes queued for one client above which the slow-consumer grace starts.
        outq_soft_bytes: usize = size("1M"), "bytes";
        /// Bytes queued for one client above which it is closed at once (WebSocket 1008
        /// "Slow consumer"); protects memory on a small board.
        outq_hard_bytes: usize = size("8M"), "bytes";
        /// Messages queued for one client above which it is closed at once.
        outq_hard_messages: usize = count("4096"), "messages";
        /// Bytes written to one connection per loop turn before the others get their turn.
        write_budget_bytes: usize = size("4M"), "bytes";
        /// A client over the soft limit for this long is closed; so is an HTTP response
        /// or a closing connection that writes nothing at all for this long (a slow but
        /// moving reader is never cut).
        slow_consumer_grace: Duration = duration("10s"), "time";
        /// Hard byte limit for the queue towards a world link, which carries multi-MB
        /// uploads; must hold at least one --module-max-message.
        module_outq_hard_bytes: usize = size("256M"), "bytes";
    }
    section "Relay" {
        /// Fallback timeout for a forwarded request when its route names none; then 408.
        request_timeout_default: Duration = duration("10s"), "time";
        /// Cap on every forwarded request's timeout: a route's own timeout (10 to 45 s, from
        /// routes.tsv) or --request-timeout-default is clamped to this. The default is the
        /// longest route timeout, so it changes nothing; lower it to fail sooner.
        max_request_timeout: Duration = duration("45s"), "time";
        /// Timeout for a request sent over /ws/api.
        ws_api_request_timeout: Duration = duration("30s"), "time";
        /// Timeout for a cross-world remote-request (the module's own default is 60 s);
        /// then the asking world gets remote-response with an error.
        remote_request_timeout: Duration = duration("1m"), "time";
        /// Cross-world requests one world may have in flight at once; more are answered
        /// with an error at once.
        remote_max_inflight: usize = count("100"), "requests";
        /// Requests one /ws/api connection may have in flight at once.
        ws_api_max_inflight: usize = count("100"), "requests";
        /// /ws/api event subscriptions per world, over all sockets and channels (the
        /// reference's cap, relay-protocol.md §4.5).
        ws_api_max_subscriptions: usize = count("10"), "subscriptions";
        /// SSE streams per (world, channel).
        sse_max_per_channel: usize = count("10"), "streams";
        /// Interval between SSE keepalive comments, so proxies keep idle streams open.
        sse_keepalive: Duration = duration("15s"), "time";
        /// Reconnect delay advertised to SSE clients in the `retry:` field.
        sse_retry: Duration = duration("3s"), "time";
        /// Reconnect delay sent (`retry:`) to an SSE stream refused because its channel is full,
        /// so a browser's EventSource backs off instead of retrying every few seconds.
        sse_refused_retry: Duration = duration("1m"), "time";
        /// Events kept per world for Last-Event-ID and `since` resumes.
        ring_events: usize = count("1000"), "events";
        /// Bytes of events kept per world for resumes; the oldest go first.
        ring_bytes: usize = size("4M"), "bytes";
        /// Lifetime of a pairing code printed by `fvtt-relay pair` or the admin page.
        pairing_code_ttl: Duration = duration("10m"), "time";
        /// Lifetime of a pair request opened by a module (POST /auth/pair-request).
        pair_request_ttl: Duration = duration("10m"), "time";
        /// Requests per minute per API key (the reference relay's default).
        rate_limit_per_minute: usize = count("300"), "requests/min/key";
        /// POST /auth/pair attempts per 15 minutes per IP; guards code guessing.
        pair_rate_limit: usize = count("10"), "requests/15 min/IP";
        /// POST /auth/pair-request calls per 15 minutes per IP.
        pair_request_rate_limit: usize = count("20"), "requests/15 min/IP";
        /// WebSocket upgrades per minute per IP.
        ws_upgrade_rate_limit: usize = count("100"), "upgrades/min/IP";
        /// Browser origins allowed to open WebSockets besides the relay's own (same-origin,
        /// and --public-url's), comma-separated (e.g. https://app.example.com), or * for
        /// any. The list adds to same-origin, never replaces it. Requests without an Origin
        /// header (non-browser clients) are not affected.
        allowed_ws_origins: Vec<String> = origins(""), "origins";
        /// Honour X-Forwarded-For and X-Forwarded-Proto, only from a reverse proxy on
        /// loopback. Enable when the relay sits behind nginx or Caddy on the same host.
        trust_forwarded: bool = switch("false"), "on/off";
        /// Time allowed after SIGTERM/SIGINT to close sockets and flush before exiting.
        shutdown_grace: Duration = duration("5s"), "time";
        /// Lifetime of an admin page session.
        admin_session_ttl: Duration = duration("12h"), "time";
    }
    section "MCP (AI assistants)" {
        /// Tools /mcp offers: default (the curated set of about 30), all (every forwarded
        /// route), or a comma-separated list of tool names. A key still needs each tool's scope.
        mcp_tools: Vec<String> = names("default"), "tools";
        /// Let /mcp offer the tools that run code in the world (execute_js, run_macro) to keys
        /// that hold their scope. Off: those tools are hidden and refused.
        mcp_allow_code: bool = switch("false"), "on/off";
        /// MCP sessions one API key may hold; a new one replaces the least recently used idle
        /// session, and is refused when all are busy.
        mcp_sessions_per_key: usize = count("16"), "sessions";
        /// Tool calls and resource reads one MCP session may have waiting on a world.
        mcp_max_inflight: usize = count("8"), "calls";
        /// Largest JSON-RPC message (or batch) accepted on POST /mcp.
        mcp_max_message: usize = size("1M"), "bytes";
        /// An MCP session unused for this long (and without an open stream) is forgotten when
        /// a new session is opened; its client then starts a new one.
        mcp_session_idle: Duration = duration("24h"), "time";
    }
}

/// `fvtt-relay 0.1.0`.
pub fn version_line() -> String {
    format!("fvtt-relay {}", env!("CARGO_PKG_VERSION"))
}

fn spec(field: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|s| s.field == field)
}

impl Config {
    /// Build a configuration from command-line arguments and environment variables.
    ///
    /// `args` excludes the program name (pass `std::env::args().skip(1)`), and any
    /// subcommand has already been dispatched by `main`. `env` looks a variable up (pass
    /// `|k| std::env::var(k).ok()`; tests pass a map). Flags win over variables; an empty
    /// variable is unset; a flag given twice, an unknown flag or a stray argument is an
    /// error. `--help` and `--version` return at once. The result is validated.
    pub fn from_args(
        args: impl Iterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Parsed, String> {
        let mut from_flags: Vec<Option<String>> = vec![None; OPTIONS.len()];
        let mut args = args;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(Parsed::Help(help_text())),
                "-V" | "--version" => return Ok(Parsed::Version(version_line())),
                _ => {}
            }
            if !arg.starts_with("--") {
                return Err(format!(
                    "unexpected argument '{}' (options start with --; see --help)",
                    arg.escape_debug()
                ));
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let Some((index, spec)) = OPTIONS.iter().enumerate().find(|(_, s)| s.flag() == name)
            else {
                return Err(format!(
                    "unknown option '{}' (see --help)",
                    name.escape_debug()
                ));
            };
            let value = match (inline, spec.kind) {
                (Some(v), _) => v,
                (None, Kind::Switch) => "true".to_string(),
                (None, _) => match args.next() {
                    Some(v) => v,
                    None => {
                        return Err(format!(
                            "missing value for {} ({})",
                            spec.flag(),
                            spec.env()
                        ))
                    }
                },
            };
            match from_flags.get_mut(index) {
                Some(slot @ None) => *slot = Some(value),
                _ => return Err(format!("{} given more than once", spec.flag())),
            }
        }

        let mut config = Config::default();
        for (spec, flag_value) in OPTIONS.iter().zip(from_flags) {
            let value = match flag_value {
                Some(v) => v,
                None => match env(&spec.env()) {
                    Some(v) if !v.is_empty() => v,
                    _ => continue,
                },
            };
            spec.apply(&mut config, &value)?;
        }
        config.validate()?;
        Ok(Parsed::Run(config))
    }

    /// Check a configuration as a whole: every value must be one the parser would accept
    /// (so a hand-built `Config` meets the same bounds), and the cross-field rules below
    /// must hold. Errors name the options involved. Called by `from_args`; call it again
    /// after building or editing a `Config` by hand. tungstenite panics on some bad
    /// configurations, so we refuse them here first with a readable message.
    pub fn validate(&self) -> Result<(), String> {
        for spec in OPTIONS {
            let mut scratch = self.clone();
            spec.apply(&mut scratch, &spec.value_of(self))?;
        }

        for r in RULES {
            if !(r.holds)(self) {
                return Err(format!("{}; {}", rule(self, r.a, r.op.words(), r.b), r.why));
            }
        }
        Ok(())
    }
}

/// "--a must ... --b (now: x and y)", with the values as a user would type them.
fn rule(config: &Config, a: &str, relation: &str, b: &str) -> String {
    let show = |field: &str| match spec(field) {
        Some(s) => (s.flag(), s.value_of(config)),
        None => (field.to_string(), String::new()),
    };
    let ((fa, va), (fb, vb)) = (show(a), show(b));
    format!("{fa} {relation} {fb} (now: {va} and {vb})")
}

#[derive(Clone, Copy)]
enum Op {
    Longer,
    AtMost,
}

impl Op {
    fn words(self) -> &'static str {
        match self {
            Op::Longer => "must be longer than",
            Op::AtMost => "must not exceed",
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            Op::Longer => ">",
            Op::AtMost => "≤",
        }
    }
}

/// A cross-field rule: `a op b`, checked by `validate` and listed in docs/CONFIG.md.
struct Rule {
    a: &'static str,
    op: Op,
    b: &'static str,
    why: &'static str,
    holds: fn(&Config) -> bool,
}

/// Rules between options. Deliberately absent: module_max_message <= max_body_bytes (a
/// world reply may be larger than any request body).
static RULES: &[Rule] = &[
    Rule {
        a: "module_idle_timeout",
        op: Op::Longer,
        b: "module_ping_interval",
        why: "a peer must get a ping before it can be dropped for silence",
        holds: |c| c.module_idle_timeout > c.module_ping_interval,
    },
    Rule {
        a: "api_idle_timeout",
        op: Op::Longer,
        b: "api_ping_interval",
        why: "a peer must get a ping before it can be dropped for silence",
        holds: |c| c.api_idle_timeout > c.api_ping_interval,
    },
    Rule {
        a: "events_pong_timeout",
        op: Op::Longer,
        b: "events_ping_interval",
        why: "a peer must get a ping before it can be dropped for silence",
        holds: |c| c.events_pong_timeout > c.events_ping_interval,
    },
    Rule {
        a: "module_max_frame",
        op: Op::AtMost,
        b: "module_max_message",
        why: "a larger frame could never be accepted whole",
        holds: |c| c.module_max_frame <= c.module_max_message,
    },
    Rule {
        a: "api_max_frame",
        op: Op::AtMost,
        b: "api_max_message",
        why: "a larger frame could never be accepted whole",
        holds: |c| c.api_max_frame <= c.api_max_message,
    },
    Rule {
        a: "outq_soft_bytes",
        op: Op::AtMost,
        b: "outq_hard_bytes",
        why: "the grace period starts below the hard limit",
        holds: |c| c.outq_soft_bytes <= c.outq_hard_bytes,
    },
    Rule {
        a: "module_max_message",
        op: Op::AtMost,
        b: "module_outq_hard_bytes",
        why: "one full-size message to the world must not close its link",
        holds: |c| c.module_max_message <= c.module_outq_hard_bytes,
    },
    Rule {
        a: "max_json_body_bytes",
        op: Op::AtMost,
        b: "max_body_bytes",
        why: "the upload limit is the largest body limit",
        holds: |c| c.max_json_body_bytes <= c.max_body_bytes,
    },
    Rule {
        a: "max_connections_per_ip",
        op: Op::AtMost,
        b: "max_connections",
        why: "the per-IP cap is part of the total",
        holds: |c| c.max_connections_per_ip <= c.max_connections,
    },
];

/// The text printed by `--help`: usage, value syntax, then every option by section with its
/// flag, variable, default and help.
pub fn help_text() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", version_line());
    out.push_str(
        "A self-hosted, wire-compatible relay between apps and a Foundry VTT world.\n\
         \n\
         Usage: fvtt-relay [OPTIONS]\n\
         \x20      fvtt-relay <COMMAND> [ARGS]   (admin commands such as `pair`; see the README)\n\
         \n\
         Every option can also be set by the environment variable shown beside it; a\n\
         flag wins over its variable, and an empty variable counts as unset.\n\
         SIZE is bytes or a number with a K, M or G suffix (multiples of 1024).\n\
         DURATION is 500ms, 10s, 5m, 1h, or plain seconds.\n\
         \n\
         \x20 -h, --help       Print this help\n\
         \x20 -V, --version    Print the version\n",
    );
    let mut section = "";
    for s in OPTIONS {
        if s.section != section {
            section = s.section;
            let _ = writeln!(out, "\n{section}:");
        }
        let metavar = s.kind.metavar();
        let sep = if metavar.is_empty() { "" } else { " " };
        let _ = writeln!(out, "  {}{sep}{metavar}   {}", s.flag(), s.env());
        let text = format!("{} Default: {}.", s.help(), s.default_display());
        for line in wrap(&text, 72) {
            let _ = writeln!(out, "        {line}");
        }
    }
    out
}

/// Greedy word wrap; a word longer than `width` gets a line of its own.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The whole of docs/CONFIG.md. A unit test keeps the file equal to this.
pub fn markdown_table() -> String {
    let mut out = String::new();
    out.push_str(
        "# fvtt-relay configuration\n\
         \n\
         <!-- Generated from src/config.rs by `make docs`; do not edit by hand. -->\n\
         \n\
         Every option is a flag (`--name VALUE` or `--name=VALUE`) and an environment\n\
         variable; the flag wins, and an empty variable counts as unset. `fvtt-relay --help`\n\
         prints the same list. Sizes are bytes or a number with a `K`, `M` or `G` suffix\n\
         (multiples of 1024). Durations are `500ms`, `10s`, `5m`, `1h`, or plain seconds.\n\
         Sizes, counts and durations must be positive; durations are at most one year.\n\
         \n\
         Rules between options, checked at start-up:\n\
         \n",
    );
    for r in RULES {
        let (a, b) = (spec(r.a), spec(r.b));
        let flag = |s: Option<&OptionSpec>| s.map(OptionSpec::flag).unwrap_or_default();
        let _ = writeln!(
            out,
            "- `{}` {} `{}`: {}.",
            flag(a),
            r.op.symbol(),
            flag(b),
            r.why
        );
    }
    let mut section = "";
    for s in OPTIONS {
        if s.section != section {
            section = s.section;
            let _ = write!(
                out,
                "\n## {section}\n\n\
                 | Flag | Environment | Default | Unit | Description |\n\
                 |---|---|---|---|---|\n"
            );
        }
        let metavar = s.kind.metavar();
        let sep = if metavar.is_empty() { "" } else { " " };
        let default = if s.default.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{}`", s.default)
        };
        let _ = writeln!(
            out,
            "| `{}{sep}{metavar}` | `{}` | {default} | {} | {} |",
            s.flag(),
            s.env(),
            s.unit,
            s.help().replace('|', "\\|")
        );
    }
    out
}

/// The text of `/etc/default/fvtt-relay`, the Debian package's settings file
/// (deploy/fvtt-relay.default, read by the unit's `EnvironmentFile=`): every option's
/// variable, commented out with its default, under its description. Generated, like
/// docs/CONFIG.md, so that it cannot fall behind the options (`make docs`).
pub fn env_file() -> String {
    let mut out = String::from(
        "# /etc/default/fvtt-relay: settings of the fvtt-relay service. systemd reads this file\n\
         # when it starts the relay (EnvironmentFile= in fvtt-relay.service).\n\
         #\n\
         # Every option of the relay is an environment variable, listed below commented out\n\
         # with its default. To change one, remove the '#' in front of it, edit the value,\n\
         # then run: sudo systemctl restart fvtt-relay\n\
         # An empty value counts as unset. Sizes are bytes or a number with a K, M or G suffix\n\
         # (multiples of 1024); durations are 500ms, 10s, 5m, 1h or plain seconds. A bad value\n\
         # stops the relay at start-up with a message naming the option (journalctl -u\n\
         # fvtt-relay). `fvtt-relay --help` and /usr/share/doc/fvtt-relay/docs/CONFIG.md list\n\
         # the same options.\n\
         #\n\
         # The unit passes --listen 0.0.0.0:3010 and --data-dir /var/lib/fvtt-relay as flags,\n\
         # and flags win over variables, so FVTT_RELAY_LISTEN and FVTT_RELAY_DATA_DIR have no\n\
         # effect here: change those two by replacing ExecStart (sudo systemctl edit\n\
         # fvtt-relay; see /usr/share/doc/fvtt-relay/deploy/README.md).\n\
         #\n\
         # Generated from src/config.rs by `make docs`; do not edit the copy in the source tree\n\
         # by hand.\n",
    );
    let mut section = "";
    for s in OPTIONS {
        if s.section != section {
            section = s.section;
            let _ = write!(out, "\n# ---- {section} ----\n");
        }
        out.push('\n');
        let text = format!("{} ({}; {})", s.help(), s.flag(), s.unit);
        let mut line = String::from("#");
        for word in text.split_whitespace() {
            if line.len() + 1 + word.len() > 90 && line.len() > 1 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
        let _ = writeln!(out, "#{}={}", s.env(), s.default);
    }
    out
}

// ---- value syntaxes: one module per `Kind`, each with parse, show and KIND ----

mod addr {
    use super::*;
    pub const KIND: Kind = Kind::Addr;
    pub fn parse(s: &str) -> Result<SocketAddr, &'static str> {
        s.trim()
            .parse()
            .map_err(|_| "expected an IP address and port such as 127.0.0.1:3010 or [::]:3010")
    }
    pub fn show(v: &SocketAddr) -> String {
        v.to_string()
    }
}

mod path {
    use super::*;
    pub const KIND: Kind = Kind::Path;
    pub fn parse(s: &str) -> Result<PathBuf, &'static str> {
        if s.is_empty() {
            return Err("expected a directory path");
        }
        Ok(PathBuf::from(s))
    }
    pub fn show(v: &std::path::Path) -> String {
        v.display().to_string()
    }
}

mod url {
    use super::*;
    pub const KIND: Kind = Kind::Url;
    const EXPECTED: &str =
        "expected an http, https, ws or wss URL with a host and no query, e.g. https://relay.example.com";

    /// Empty means unset. Trailing slashes are removed: the module compares relay URLs
    /// literally, and `ws://h:3010/` differs from `ws://h:3010` (module-protocol.md §1).
    pub fn parse(s: &str) -> Result<Option<String>, &'static str> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let (scheme, rest) = s.split_once("://").ok_or(EXPECTED)?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ws" | "wss") {
            return Err(EXPECTED);
        }
        if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EXPECTED);
        }
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() || host.contains('@') {
            return Err(EXPECTED);
        }
        let rest = rest.trim_end_matches('/');
        Ok(Some(format!("{scheme}://{rest}")))
    }
    pub fn show(v: &Option<String>) -> String {
        v.clone().unwrap_or_default()
    }
}

mod level {
    use super::*;
    pub const KIND: Kind = Kind::Level;
    pub fn parse(s: &str) -> Result<LevelFilter, &'static str> {
        s.trim()
            .parse()
            .map_err(|_| "expected one of off, error, warn, info, debug, trace")
    }
    pub fn show(v: &LevelFilter) -> String {
        v.as_str().to_ascii_lowercase()
    }
}

mod switch {
    use super::*;
    pub const KIND: Kind = Kind::Switch;
    pub fn parse(s: &str) -> Result<bool, &'static str> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("expected 1, true, 0 or false"),
        }
    }
    pub fn show(v: &bool) -> String {
        v.to_string()
    }
}

mod count {
    use super::*;
    pub const KIND: Kind = Kind::Count;
    pub fn parse(s: &str) -> Result<usize, &'static str> {
        let s = s.trim();
        match s.parse::<usize>() {
            Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err("expected a positive integer"),
        }
    }
    pub fn show(v: &usize) -> String {
        v.to_string()
    }
}

mod size {
    use super::*;
    pub const KIND: Kind = Kind::Size;
    const EXPECTED: &str =
        "expected a positive integer of bytes, optionally with a K, M or G suffix (x1024)";

    pub fn parse(s: &str) -> Result<usize, &'static str> {
        let s = s.trim();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (number, suffix) = s.split_at(digits);
        let shift = match suffix.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kib" => 10,
            "m" | "mib" => 20,
            "g" | "gib" => 30,
            _ => return Err(EXPECTED),
        };
        let n: usize = number.parse().map_err(|_| EXPECTED)?;
        if n == 0 {
            return Err(EXPECTED);
        }
        // checked: "8G" does not fit a 32-bit usize (a 32-bit Raspberry Pi OS).
        n.checked_mul(1usize << shift)
            .ok_or("size too large for this platform")
    }

    pub fn show(v: &usize) -> String {
        for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
            let unit = 1usize << shift;
            if *v >= unit && v.is_multiple_of(unit) {
                return format!("{}{suffix}", v / unit);
            }
        }
        v.to_string()
    }
}

mod duration {
    use super::*;
    pub const KIND: Kind = Kind::Duration;
    const EXPECTED: &str =
        "expected a positive duration such as 500ms, 10s, 5m, 1h, or plain seconds";
    /// One year: far beyond any sensible timeout, and far below `Instant` overflow.
    const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    pub fn parse(s: &str) -> Result<Duration, &'static str> {
        let s = s.trim();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (number, suffix) = s.split_at(digits);
        let n: u64 = number.parse().map_err(|_| EXPECTED)?;
        let millis_per_unit: u64 = match suffix {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(EXPECTED),
        };
        if n == 0 {
            return Err(EXPECTED);
        }
        let d = n
            .checked_mul(millis_per_unit)
            .map(Duration::from_millis)
            .filter(|d| *d <= MAX)
            .ok_or("duration too long (at most 8760h)")?;
        Ok(d)
    }

    /// The largest unit that divides exactly; sub-millisecond values print in `ns`, which
    /// `parse` rejects, so `validate` refuses them.
    pub fn show(v: &Duration) -> String {
        if !v.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{}ns", v.as_nanos());
        }
        let ms = v.as_millis();
        for (unit_ms, suffix) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
            if ms >= unit_ms && ms.is_multiple_of(unit_ms) {
                return format!("{}{suffix}", ms / unit_ms);
            }
        }
        format!("{ms}ms")
    }
}

mod origins {
    use super::*;
    pub const KIND: Kind = Kind::Origins;
    const EXPECTED: &str =
        "expected comma-separated origins such as https://app.example.com:8443, or *";

    /// Browsers send `Origin: scheme://host[:port]` in lower case (RFC 6454 §6.1), so each
    /// entry is normalised to that form; a path or query could never match and is refused.
    pub fn parse(s: &str) -> Result<Vec<String>, &'static str> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                out.push(item.to_string());
                continue;
            }
            let (scheme, host) = item.split_once("://").ok_or(EXPECTED)?;
            let scheme = scheme.to_ascii_lowercase();
            let host = host.trim_end_matches('/');
            let bad = |c: char| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace();
            if !matches!(scheme.as_str(), "http" | "https") || host.is_empty() || host.contains(bad)
            {
                return Err(EXPECTED);
            }
            out.push(format!("{scheme}://{}", host.to_ascii_lowercase()));
        }
        Ok(out)
    }
    pub fn show(v: &[String]) -> String {
        v.join(",")
    }
}

mod names {
    use super::*;
    pub const KIND: Kind = Kind::Names;
    const EXPECTED: &str = "expected default, all, or comma-separated tool names (a-z, 0-9, _)";

    pub fn parse(s: &str) -> Result<Vec<String>, &'static str> {
        let out: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .collect();
        let ok = |n: &String| {
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if out.is_empty() || !out.iter().all(ok) {
            return Err(EXPECTED);
        }
        Ok(out)
    }
    pub fn show(v: &[String]) -> String {
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_args(args.iter().map(|a| a.to_string()), move |k| {
            env.get(k).cloned()
        })
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse(args, env) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("expected Run for {args:?} {env:?}, got {other:?}"),
        }
    }

    fn err(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse(args, env) {
            Err(e) => e,
            other => panic!("expected an error for {args:?} {env:?}, got {other:?}"),
        }
    }

    const K: usize = 1024;
    const M: usize = 1024 * 1024;
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults_parse() {
        for s in OPTIONS {
            let mut c = Config::default();
            assert_eq!(s.apply(&mut c, s.default), Ok(()), "{}", s.field);
        }
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let c = Config::default();
        let expected = Config {
            listen: "127.0.0.1:3010".parse().unwrap(),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            log_level: LevelFilter::Info,
            test_echo: false,
            max_head_bytes: 16 * K,
            max_headers: 100,
            max_body_bytes: 32 * M,
            max_json_body_bytes: 4 * M,
            max_chunk_line: 4 * K,
            max_trailer_bytes: 8 * K,
            head_timeout: secs(10),
            keepalive_timeout: secs(60),
            request_body_timeout: secs(60),
            max_connections: 4096,
            max_connections_per_ip: 512,
            read_budget_bytes: 256 * K,
            pipeline_buffer_bytes: 32 * K,
            pipeline_outq_bytes: 64 * K,
            requests_per_turn: 16,
            close_linger: secs(2),
            module_max_message: 64 * M,
            module_max_frame: 64 * M,
            module_preauth_max_message: 8 * K,
            module_ping_interval: secs(20),
            module_idle_timeout: secs(40),
            world_history: 8,
            module_stale_margin: secs(5),
            api_max_message: M,
            api_max_frame: M,
            api_ping_interval: secs(30),
            api_idle_timeout: secs(60),
            events_max_frame: 4096,
            events_ping_interval: secs(54),
            events_pong_timeout: secs(60),
            events_max_queue_messages: 256,
            echo_max_message: 16 * M,
            auth_timeout: secs(10),
            memory_budget: 128 * M,
            outq_soft_bytes: M,
            outq_hard_bytes: 8 * M,
            outq_hard_messages: 4096,
            write_budget_bytes: 4 * M,
            slow_consumer_grace: secs(10),
            module_outq_hard_bytes: 256 * M,
            request_timeout_default: secs(10),
            max_request_timeout: secs(45),
            ws_api_request_timeout: secs(30),
            remote_request_timeout: secs(60),
            remote_max_inflight: 100,
            ws_api_max_inflight: 100,
            ws_api_max_subscriptions: 10,
            sse_max_per_channel: 10,
            sse_keepalive: secs(15),
            sse_retry: secs(3),
            sse_refused_retry: secs(60),
            ring_events: 1000,
            ring_bytes: 4 * M,
            pairing_code_ttl: secs(600),
            pair_request_ttl: secs(600),
            rate_limit_per_minute: 300,
            pair_rate_limit: 10,
            pair_request_rate_limit: 20,
            ws_upgrade_rate_limit: 100,
            allowed_ws_origins: vec![],
            trust_forwarded: false,
            shutdown_grace: secs(5),
            admin_session_ttl: secs(12 * 3600),
            mcp_tools: vec!["default".into()],
            mcp_allow_code: false,
            mcp_sessions_per_key: 16,
            mcp_max_inflight: 8,
            mcp_max_message: M,
            mcp_session_idle: secs(24 * 3600),
        };
        assert_eq!(c, expected);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(run(&[], &[]), expected);
    }

    #[test]
    fn every_value_round_trips_through_show() {
        let c = Config::default();
        for s in OPTIONS {
            let mut d = Config::default();
            s.apply(&mut d, &s.value_of(&c)).unwrap();
            assert_eq!(d, c, "{}", s.field);
            assert_eq!(s.value_of(&c), s.default, "{} shows its default", s.field);
        }
    }

    #[test]
    fn names_follow_the_field() {
        let s = spec("max_body_bytes").unwrap();
        assert_eq!(s.flag(), "--max-body-bytes");
        assert_eq!(s.env(), "FVTT_RELAY_MAX_BODY_BYTES");
        let fields: Vec<&str> = OPTIONS.iter().map(|s| s.field).collect();
        let mut unique = fields.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), fields.len());
        for r in RULES {
            assert!(
                spec(r.a).is_some() && spec(r.b).is_some(),
                "{} {}",
                r.a,
                r.b
            );
        }
    }

    #[test]
    fn flag_wins_over_env_and_env_beats_default() {
        let env = [
            ("FVTT_RELAY_MAX_HEADERS", "7"),
            ("FVTT_RELAY_LISTEN", "0.0.0.0:1"),
            ("FVTT_RELAY_DATA_DIR", ""), // empty: unset
        ];
        let c = run(&["--listen", "127.0.0.1:0"], &env);
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.max_headers, 7);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        // a bad env value is not even read when the flag is given
        let c = run(&["--max-headers=9"], &[("FVTT_RELAY_MAX_HEADERS", "nope")]);
        assert_eq!(c.max_headers, 9);
    }

    #[test]
    fn switches() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            (&[], &[], false),
            (&["--test-echo"], &[], true),
            (
                &["--test-echo=false"],
                &[("FVTT_RELAY_TEST_ECHO", "1")],
                false,
            ),
            (&[], &[("FVTT_RELAY_TEST_ECHO", "1")], true),
            (&[], &[("FVTT_RELAY_TEST_ECHO", "true")], true),
            (&[], &[("FVTT_RELAY_TEST_ECHO", "0")], false),
        ];
        for (args, env, want) in cases {
            assert_eq!(run(args, env).test_echo, *want, "{args:?} {env:?}");
        }
        // a switch does not swallow the next argument
        let c = run(&["--test-echo", "--trust-forwarded"], &[]);
        assert!(c.test_echo && c.trust_forwarded);
        assert!(err(&[], &[("FVTT_RELAY_TEST_ECHO", "maybe")]).contains("--test-echo"));
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<usize>)] = &[
            ("1", Some(1)),
            ("4096", Some(4096)),
            ("16K", Some(16 * K)),
            ("16k", Some(16 * K)),
            ("3KiB", Some(3 * K)),
            ("64M", Some(64 * M)),
            ("2MiB", Some(2 * M)),
            ("1G", Some(1024 * M)),
            (" 5M ", Some(5 * M)),
            ("0", None),
            ("0K", None),
            ("", None),
            ("K", None),
            ("-1", None),
            ("1.5M", None),
            ("1T", None),
            ("10 M", None),
            ("+4", None),
        ];
        for (text, want) in cases {
            assert_eq!(size::parse(text).ok(), *want, "{text:?}");
        }
        assert!(size::parse("99999999999999999999G").is_err());
        assert_eq!(size::show(&(16 * K)), "16K");
        assert_eq!(size::show(&(1536)), "1536");
        assert_eq!(size::show(&(1024 * M)), "1G");
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("500ms", Some(ms(500))),
            ("10s", Some(secs(10))),
            ("10", Some(secs(10))),
            ("5m", Some(secs(300))),
            ("1h", Some(secs(3600))),
            ("8760h", Some(secs(365 * 24 * 3600))),
            ("8761h", None),
            ("0", None),
            ("0ms", None),
            ("", None),
            ("s", None),
            ("1.5s", None),
            ("10 s", None),
            ("1d", None),
            ("10S", None),
            ("18446744073709551615h", None),
        ];
        for (text, want) in cases {
            assert_eq!(duration::parse(text).ok(), *want, "{text:?}");
        }
        let shows: &[(Duration, &str)] = &[
            (ms(500), "500ms"),
            (ms(1500), "1500ms"),
            (secs(90), "90s"),
            (secs(600), "10m"),
            (secs(12 * 3600), "12h"),
            (Duration::from_nanos(1), "1ns"),
        ];
        for (d, text) in shows {
            assert_eq!(duration::show(d), *text);
        }
    }

    #[test]
    fn urls_and_origins() {
        let cases: &[(&str, Result<Option<&str>, ()>)] = &[
            ("", Ok(None)),
            (
                "https://relay.example.com",
                Ok(Some("https://relay.example.com")),
            ),
            (
                "HTTPS://relay.example.com/",
                Ok(Some("https://relay.example.com")),
            ),
            ("wss://h:3010/prefix//", Ok(Some("wss://h:3010/prefix"))),
            ("ws://10.0.0.2:3010", Ok(Some("ws://10.0.0.2:3010"))),
            ("ftp://h", Err(())),
            ("relay.example.com", Err(())),
            ("https://", Err(())),
            ("https:///path", Err(())),
            ("https://h/?a=1", Err(())),
            ("https://h/#x", Err(())),
            ("https://u:p@h", Err(())),
            ("https://h /x", Err(())),
        ];
        for (text, want) in cases {
            let got = url::parse(text)
                .map(|o| o.map(|s| s.to_string()))
                .map_err(|_| ());
            assert_eq!(got, want.map(|o| o.map(str::to_string)), "{text:?}");
        }
        let o = |s: &str| origins::parse(s).map_err(|_| ());
        assert_eq!(o(""), Ok(vec![]));
        assert_eq!(
            o(" https://A.example.com/ , http://localhost:30000,"),
            Ok(vec![
                "https://a.example.com".into(),
                "http://localhost:30000".into()
            ])
        );
        assert_eq!(o("*"), Ok(vec!["*".into()]));
        assert_eq!(o("https://a.example.com/path"), Err(()));
        assert_eq!(o("ws://a.example.com"), Err(()));
        assert_eq!(o("a.example.com"), Err(()));
        let c = run(
            &[],
            &[(
                "FVTT_RELAY_ALLOWED_WS_ORIGINS",
                "https://x.org,https://y.org",
            )],
        );
        assert_eq!(c.allowed_ws_origins, vec!["https://x.org", "https://y.org"]);
    }

    #[test]
    fn bad_values_name_the_option() {
        assert_eq!(
            err(&["--max-body-bytes", "x"], &[]),
            "invalid value 'x' for --max-body-bytes (FVTT_RELAY_MAX_BODY_BYTES): expected a \
             positive integer of bytes, optionally with a K, M or G suffix (x1024)"
        );
        assert_eq!(
            err(&[], &[("FVTT_RELAY_MAX_HEADERS", "0")]),
            "invalid value '0' for --max-headers (FVTT_RELAY_MAX_HEADERS): expected a positive integer"
        );
        let cases: &[(&[&str], &str)] = &[
            (
                &["--listen", "localhost:3010"],
                "--listen (FVTT_RELAY_LISTEN)",
            ),
            (
                &["--head-timeout", "soon"],
                "--head-timeout (FVTT_RELAY_HEAD_TIMEOUT)",
            ),
            (
                &["--log-level", "loud"],
                "--log-level (FVTT_RELAY_LOG_LEVEL)",
            ),
            (
                &["--public-url", "https://h?x"],
                "--public-url (FVTT_RELAY_PUBLIC_URL)",
            ),
            (&["--data-dir", ""], "--data-dir (FVTT_RELAY_DATA_DIR)"),
            (&["--data-dir"], "missing value for --data-dir"),
            (&["--nope", "1"], "unknown option '--nope'"),
            (&["-x"], "unexpected argument '-x'"),
            (&["serve"], "unexpected argument 'serve'"),
            (
                &["--listen", "127.0.0.1:1", "--listen=127.0.0.1:2"],
                "--listen given more than once",
            ),
        ];
        for (args, needle) in cases {
            let e = err(args, &[]);
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        let long = "9".repeat(200);
        assert!(err(&["--max-headers", &long], &[]).len() < 200);
    }

    #[test]
    fn help_and_version_return_early() {
        assert_eq!(
            parse(&["--version"], &[]),
            Ok(Parsed::Version(version_line()))
        );
        assert_eq!(parse(&["-V"], &[]), Ok(Parsed::Version(version_line())));
        assert_eq!(
            parse(&["--test-echo", "-h"], &[]),
            Ok(Parsed::Help(help_text()))
        );
        assert!(version_line().starts_with("fvtt-relay "));
        assert!(version_line().ends_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn validate_rules() {
        type Edit = fn(&mut Config);
        let cases: &[(Edit, Option<&str>)] = &[
            (|_| {}, None),
            (
                |c| c.module_idle_timeout = c.module_ping_interval,
                Some("--module-idle-timeout must be longer than --module-ping-interval"),
            ),
            (
                |c| c.api_idle_timeout = secs(1),
                Some("--api-idle-timeout must be longer than --api-ping-interval"),
            ),
            (
                |c| c.events_pong_timeout = secs(54),
                Some("--events-pong-timeout must be longer than --events-ping-interval"),
            ),
            (
                |c| c.module_max_frame = c.module_max_message + 1,
                Some("--module-max-frame must not exceed --module-max-message"),
            ),
            (
                |c| c.api_max_frame = 2 * M,
                Some("--api-max-frame must not exceed --api-max-message"),
            ),
            (
                |c| c.outq_soft_bytes = 9 * M,
                Some("--outq-soft-bytes must not exceed --outq-hard-bytes"),
            ),
            (
                |c| c.module_max_message = 512 * M,
                Some("--module-max-message must not exceed --module-outq-hard-bytes"),
            ),
            (
                |c| c.max_connections_per_ip = 5000,
                Some("--max-connections-per-ip must not exceed --max-connections"),
            ),
            // NOT a rule: the module message limit may exceed the HTTP body limit.
            (
                |c| {
                    c.max_body_bytes = 1024;
                    c.max_json_body_bytes = 1024;
                },
                None,
            ),
            (
                |c| c.max_json_body_bytes = 64 * M,
                Some("--max-json-body-bytes must not exceed --max-body-bytes"),
            ),
            (|c| c.outq_soft_bytes = c.outq_hard_bytes, None),
            // hand-built values meet the parser's bounds
            (
                |c| c.max_headers = 0,
                Some("--max-headers (FVTT_RELAY_MAX_HEADERS)"),
            ),
            (|c| c.head_timeout = Duration::ZERO, Some("--head-timeout")),
            (
                |c| c.sse_retry = Duration::from_micros(1500),
                Some("--sse-retry"),
            ),
            (
                |c| c.public_url = Some("gopher://x".into()),
                Some("--public-url"),
            ),
        ];
        for (i, (edit, want)) in cases.iter().enumerate() {
            let mut c = Config::default();
            edit(&mut c);
            match (c.validate(), want) {
                (Ok(()), None) => {}
                (Err(e), Some(needle)) => assert!(e.contains(needle), "case {i}: {e}"),
                (got, _) => panic!("case {i}: got {got:?}, wanted {want:?}"),
            }
        }
        // from_args validates too
        let e = err(&["--outq-soft-bytes", "16M"], &[]);
        assert!(
            e.contains("--outq-soft-bytes must not exceed --outq-hard-bytes"),
            "{e}"
        );
    }

    #[test]
    fn help_lists_every_option() {
        let help = help_text();
        for s in OPTIONS {
            assert!(
                help.contains(&format!("  {} ", s.flag()))
                    || help.contains(&format!("  {}\n", s.flag())),
                "{}",
                s.field
            );
            assert!(help.contains(&s.env()), "{}", s.env());
        }
        let md = markdown_table();
        for s in OPTIONS {
            assert!(md.contains(&format!("`{}", s.flag())), "{}", s.field);
        }
        assert_eq!(help.matches("FVTT_RELAY_").count(), OPTIONS.len());
        assert!(
            help.lines().all(|l| l.chars().count() <= 100),
            "help lines stay short"
        );
    }

    /// docs/CONFIG.md is generated; regenerate with `make docs`
    /// (`FVTT_RELAY_WRITE_DOCS=1 cargo test --lib config::tests::config_md_is_current`).
    /// deploy/fvtt-relay.default (the Debian package's /etc/default/fvtt-relay) matches
    /// `env_file()`: every option, its variable and its default (`make docs` rewrites it).
    #[test]
    fn env_file_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/fvtt-relay.default");
        let want = env_file();
        if std::env::var_os("FVTT_RELAY_WRITE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "deploy/fvtt-relay.default is out of date with src/config.rs; regenerate it with \
             `make docs`"
        );
        // Every option appears once, commented out, with its default.
        for s in OPTIONS {
            let line = format!("#{}={}", s.env(), s.default);
            assert_eq!(want.lines().filter(|l| *l == line).count(), 1, "{line}");
        }
        assert!(
            want.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "only comments"
        );
    }

    #[test]
    fn config_md_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md");
        let want = markdown_table();
        if std::env::var_os("FVTT_RELAY_WRITE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/CONFIG.md is out of date with src/config.rs; regenerate it with `make docs` \
             (FVTT_RELAY_WRITE_DOCS=1 cargo test --lib config::tests::config_md_is_current)"
        );
    }
}
