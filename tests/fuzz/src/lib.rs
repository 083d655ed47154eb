//! The fuzz targets of fvtt-relay. Each takes arbitrary bytes, drives one part of the relay the
//! way the server drives it, and checks what must hold whatever the bytes: a panic (including
//! a failed check, an integer overflow or an out-of-bounds index) is a finding.
//!
//! The `src/bin/*.rs` entry points wrap these in `afl::fuzz!`; `replay` runs them on files
//! without AFL. Where an input needs several values (a limit, a split point, a route), its
//! first bytes choose them and the rest is the payload, so every input is valid for AFL.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use fvtt_relay::auth::{NewKey, ALL_SCOPES};
use fvtt_relay::config::Config;
use fvtt_relay::enc;
use fvtt_relay::error::HttpError;
use fvtt_relay::http::request::{BodyDecoder, BodyKind, Head, HeadParser, Header, Limits, Method};
use fvtt_relay::http::route::{Match, RouteTable, Seg};
use fvtt_relay::ids::ConnId;
use fvtt_relay::relay::forward;
use fvtt_relay::relay::io::{Action, Bytes, Input, Timer};
use fvtt_relay::relay::{Clock, Relay};
use fvtt_relay::store::{self, KnownWorld, State};
use fvtt_relay::ws::handshake;
use fvtt_relay::ws::link::{Link, WsEvent, WsLimits};

/// A fuzz target: arbitrary bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target by name, for `replay`.
pub const TARGETS: &[(&str, Target)] = &[
    ("http_head", http_head),
    ("chunked", chunked),
    ("ws_handshake", ws_handshake),
    ("ws_frames", ws_frames),
    ("module_dispatch", module_dispatch),
    ("params", params),
    ("state_load", state_load),
    ("percent", percent),
];

type HeadVerdict = Result<Option<(Head, usize)>, HttpError>;

fn head_limits(sel: u8) -> Limits {
    Limits {
        // A small cap half of the time, so the 431 edge is within AFL's reach.
        max_head_bytes: if sel & 1 == 0 { 256 } else { 8192 },
        max_headers: if sel & 2 == 0 { 4 } else { 64 },
        max_body_bytes: 1000,
    }
}

/// Feed `buf` to a fresh parser as the growing prefixes ending at `cuts`, then whole; the
/// first verdict (as the server sees it: it calls again each time bytes arrive).
fn parse_in_steps(buf: &[u8], cuts: impl Iterator<Item = usize>, limits: &Limits) -> HeadVerdict {
    let mut p = HeadParser::new();
    for c in cuts.chain(std::iter::once(buf.len())) {
        match p.parse(buf.get(..c).unwrap_or(buf), limits) {
            Ok(None) => continue,
            other => return other,
        }
    }
    Ok(None)
}

fn check_error(e: &HttpError) {
    let status = e.status();
    assert!(
        (400..=505).contains(&status),
        "{e:?} maps to status {status}"
    );
    assert!(!e.message().is_empty());
}

/// The HTTP head parser on a request stream, as the connection drives it: heads one after the
/// other, each followed by its body. Every head must get the same verdict whole, split at a
/// chosen byte, and dribbled one byte at a time; a parsed head must end at a blank line.
pub fn http_head(data: &[u8]) {
    let Some((&sel, mut stream)) = data.split_first() else {
        return;
    };
    let limits = head_limits(sel);
    for _ in 0..16 {
        let whole = HeadParser::new().parse(stream, &limits);
        let cut = (usize::from(sel >> 2) * stream.len()) / 64;
        assert_eq!(
            parse_in_steps(stream, std::iter::once(cut), &limits),
            whole,
            "split at {cut}"
        );
        assert_eq!(
            parse_in_steps(stream, 0..stream.len(), &limits),
            whole,
            "dribbled"
        );
        let (head, n) = match whole {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => return check_error(&e),
        };
        assert!(n <= stream.len() && n <= limits.max_head_bytes);
        assert!(stream.get(..n).is_some_and(|h| h.ends_with(b"\r\n\r\n")));
        assert!(!head.method_raw.is_empty());
        assert!(
            head.path.starts_with('/') || head.path == "*",
            "{:?}",
            head.path
        );
        assert!(head
            .headers
            .iter()
            .all(|h| h.name == h.name.to_ascii_lowercase()));
        stream = stream.get(n..).unwrap_or_default();
        // The body, then the next request behind it.
        let mut dec = BodyDecoder::new(&head.body, limits.max_body_bytes);
        let mut body = Vec::new();
        match dec.decode(stream, &mut body) {
            Ok((used, true)) => {
                assert!(used <= stream.len());
                stream = stream.get(used..).unwrap_or_default();
            }
            Ok((used, false)) => {
                assert_eq!(used, stream.len(), "an unfinished body consumes all input");
                return;
            }
            Err(e) => return check_error(&e),
        }
    }
}

type BodyVerdict = Result<(Vec<u8>, usize, bool), HttpError>;

fn decode_pieces(kind: &BodyKind, cap: u64, input: &[u8], sizes: &[usize]) -> BodyVerdict {
    let mut d = BodyDecoder::new(kind, cap).chunk_limits(64, 128);
    let mut out = Vec::new();
    let mut used = 0;
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    loop {
        let take = sizes.next().copied().unwrap_or(1).max(1).min(rest.len());
        let piece = rest.get(..take).unwrap_or_default();
        let (n, done) = d.decode(piece, &mut out)?;
        assert!(n <= piece.len());
        used += n;
        if done {
            // Once done, nothing more is consumed.
            assert_eq!(d.decode(b"0\r\n\r\n", &mut out)?, (0, true));
            return Ok((out, used, true));
        }
        assert_eq!(
            n,
            piece.len(),
            "input before the end of the body is all consumed"
        );
        rest = rest.get(take..).unwrap_or_default();
        if rest.is_empty() {
            return Ok((out, used, false));
        }
    }
}

/// The body decoder (chunked mostly, fixed length too): one call, byte by byte and in pieces
/// of chosen sizes must give the same body, length and verdict; the body never exceeds the cap.
pub fn chunked(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let cap = u64::from(sel & 0x3f) * 4;
    let kind = match sel >> 6 {
        0 | 1 => BodyKind::Chunked,
        2 => BodyKind::Length(u64::from(sel & 0x1f)),
        _ => BodyKind::Length(cap + 1),
    };
    let once = decode_pieces(&kind, cap, input, &[input.len()]);
    let sizes: Vec<usize> = input
        .iter()
        .take(4)
        .map(|&b| usize::from(b % 7) + 1)
        .collect();
    assert_eq!(decode_pieces(&kind, cap, input, &[1]), once, "byte by byte");
    assert_eq!(
        decode_pieces(&kind, cap, input, &sizes),
        once,
        "pieces {sizes:?}"
    );
    match &once {
        Ok((body, used, _)) => {
            assert!(
                body.len() as u64 <= cap,
                "body {} over cap {cap}",
                body.len()
            );
            assert!(*used <= input.len());
        }
        Err(e) => check_error(e),
    }
}

/// The WebSocket handshake check on whatever head the HTTP parser accepts, with the server's
/// header getter (values joined by ", "), then the accept key, the 101 and the Origin policy.
pub fn ws_handshake(data: &[u8]) {
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let Ok(Some((head, _))) = HeadParser::new().parse(buf, &head_limits(sel | 2)) else {
        return;
    };
    let getter = |name: &str| -> Option<String> {
        let vals: Vec<&str> = head
            .headers
            .iter()
            .filter(|h| h.name == name)
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    };
    match handshake::validate(head.method_raw.as_str(), head.minor_version, &getter) {
        Ok(key) => {
            assert_eq!(head.method, Method::Get);
            assert_eq!(enc::base64_decode(&key).map(|k| k.len()), Some(16));
            let accept = handshake::accept_key(&key);
            assert_eq!(accept.len(), 28);
            let server = head.header("user-agent").unwrap_or("fvtt-relay");
            let resp = handshake::response_101(&accept, server);
            assert!(resp.ends_with(b"\r\n\r\n"));
            // No injected line: the only blank line is the last.
            let lines = resp.windows(4).filter(|w| w == b"\r\n\r\n").count();
            assert_eq!(lines, 1);
        }
        Err(e) => assert!(e.status == 400 || e.status == 426, "{e:?}"),
    }
    let allow: Vec<String> = head
        .header("x-allow")
        .map(|v| v.split(' ').map(str::to_owned).collect())
        .unwrap_or_default();
    let origin = head.header("origin");
    let host = head.header("host");
    let allowed = handshake::origin_allowed(origin, host, &allow);
    // Same-origin (RFC 6454 §5): `http://<Host>` is always welcome without an allow-list.
    if let (Some(host), true) = (host, allow.is_empty()) {
        let plain = !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ', '\t']);
        if plain && origin == Some(format!("http://{host}").as_str()) {
            assert!(allowed, "origin http://{host} refused for Host {host}");
        }
    }
    if origin.is_none() {
        assert!(allowed, "no Origin (not a browser) is always allowed");
    }
}

/// What a server may write back while reading: pongs and close frames, unmasked, final, at
/// most 125 bytes of payload (RFC 6455 §5.5), a close with a sendable code.
fn check_server_frames(mut out: &[u8]) {
    while !out.is_empty() {
        let (b0, b1) = match out {
            [b0, b1, ..] => (*b0, *b1),
            _ => panic!("truncated frame header {out:?}"),
        };
        assert_eq!(b0 & 0x80, 0x80, "FIN set");
        assert_eq!(b0 & 0x70, 0, "no RSV bits");
        assert!(
            matches!(b0 & 0x0f, 0x8 | 0xA),
            "only close and pong, got {b0:#x}"
        );
        assert_eq!(b1 & 0x80, 0, "a server never masks");
        let len = usize::from(b1 & 0x7f);
        assert!(len <= 125, "control payload {len}");
        let payload = out.get(2..2 + len).expect("whole frame in out");
        if b0 & 0x0f == 0x8 {
            assert!(len != 1, "a close body is empty or has a code");
            if let [hi, lo, reason @ ..] = payload {
                let code = u16::from_be_bytes([*hi, *lo]);
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                    "close code {code} must not be sent"
                );
                assert!(std::str::from_utf8(reason).is_ok());
            }
        }
        out = out.get(2 + len..).unwrap_or_default();
    }
}

type LinkRun = (Vec<WsEvent>, Vec<u8>, Option<(u16, String)>);

/// Drive a `Link` as `conn.rs` does: append what arrives, read with a message budget, call
/// again while the budget ran out; stop at the close or the error.
fn run_link(limits: WsLimits, input: &[u8], sizes: &[usize], budget: usize) -> LinkRun {
    let mut link = Link::new(limits);
    let mut inbuf = Vec::new();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    loop {
        let take = sizes.next().copied().unwrap_or(1).max(1).min(rest.len());
        inbuf.extend_from_slice(rest.get(..take).unwrap_or_default());
        rest = rest.get(take..).unwrap_or_default();
        loop {
            let before = events.len();
            match link.read(&mut inbuf, &mut out, &mut events, budget) {
                Ok(true) => assert!(events.len() - before <= budget),
                Ok(false) => break,
                Err(close) => return (events, out, Some((close.code, close.reason.into()))),
            }
        }
        if events.iter().any(|e| matches!(e, WsEvent::Closed { .. })) || rest.is_empty() {
            return (events, out, None);
        }
    }
}

/// The frame layer (tungstenite on our buffers, `ws::link`) on an arbitrary client byte stream:
/// the same events, replies and verdict whether the bytes come at once or in pieces; only
/// well-formed server control frames written back; messages within the limits.
pub fn ws_frames(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let limits = WsLimits {
        max_message: 64 + usize::from(sel & 0x0f) * 64,
        max_frame: 32 + usize::from(sel & 0x30),
        read_chunk: if sel & 0x40 == 0 { 256 } else { 4096 },
    };
    let budget = if sel & 0x80 == 0 { 1 } else { 64 };
    let once = run_link(limits, input, &[input.len()], budget);
    let sizes: Vec<usize> = input
        .iter()
        .take(3)
        .map(|&b| usize::from(b % 13) + 1)
        .collect();
    let pieces = run_link(limits, input, &sizes, budget);
    assert_eq!(pieces, once, "pieces {sizes:?}");
    let (events, out, err) = once;
    check_server_frames(&out);
    for e in &events {
        match e {
            WsEvent::Text(t) => assert!(t.len() <= limits.max_message),
            WsEvent::Binary(b) => assert!(b.len() <= limits.max_message),
            _ => {}
        }
    }
    if let Some((code, _)) = err {
        assert!(
            matches!(code, 1002 | 1007 | 1009),
            "read error closes with {code}"
        );
    }
}

const WORLD: &str = "fvtt_00000000000000aa";
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn conn(key: usize) -> ConnId {
    ConnId { key, gen: 1 }
}

fn make_head(method: Method, target: &str, headers: Vec<Header>) -> Head {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Head {
        method,
        method_raw: method.as_str().to_owned(),
        target: target.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        minor_version: 1,
        headers,
        keep_alive: true,
        expect_continue: false,
        body: BodyKind::None,
        wants_upgrade: false,
    }
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

/// The relay core with one authenticated world link, driven the way `server.rs` drives it:
/// every `Close` it asks for comes back as `Closed`, armed timers fire when time passes.
struct Sim {
    relay: Relay,
    now: Instant,
    key: String,
    token: String,
    world: ConnId,
    /// A `/ws/api` client socket, authenticated with the key at the upgrade.
    api: ConnId,
    /// The socket opened by the last `WS <target>` line (e.g. a `/ws/events` gateway).
    sock: ConnId,
    next: usize,
    timers: Vec<(Instant, Timer)>,
    /// The `requestId` of the last message the relay sent to the world.
    last_request_id: String,
    /// Every HTTP status the relay answered with, in order (for the harness's own tests).
    statuses: Vec<u16>,
    /// The `type` of every message sent to the `/ws/api` or `WS` socket (for the same tests).
    api_types: Vec<String>,
}

impl Sim {
    fn new() -> Sim {
        let t0 = Instant::now();
        let base_ms = 1_780_000_000_000;
        let mut state = State::default();
        let _ = state.ensure_admin_key();
        let (_, token) = state.create_connection_token(WORLD, base_ms);
        state.upsert_world(KnownWorld {
            client_id: WORLD.to_owned(),
            ..KnownWorld::default()
        });
        let spec = NewKey {
            name: "fuzz".into(),
            scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            ..NewKey::default()
        };
        let key = match state.create_api_key(spec, 0) {
            Ok((_, k)) => k,
            Err(e) => panic!("create_api_key: {e}"),
        };
        let clock = Clock { base: t0, base_ms };
        let mut sim = Sim {
            relay: Relay::new(Config::default(), state, clock),
            now: t0,
            key,
            token,
            world: conn(0),
            api: conn(0),
            sock: conn(0),
            next: 10,
            timers: Vec::new(),
            last_request_id: String::new(),
            statuses: Vec::new(),
            api_types: Vec::new(),
        };
        sim.connect_world();
        sim.connect_api();
        sim
    }

    fn connect_api(&mut self) {
        self.api = self.upgrade(&format!("/ws/api?clientId={WORLD}"));
    }

    /// A WebSocket upgrade with the full-scope key in `x-api-key`.
    fn upgrade(&mut self, target: &str) -> ConnId {
        let c = self.conn();
        let key = header("x-api-key", &self.key.clone());
        let mut h = make_head(Method::Get, target, vec![key]);
        h.wants_upgrade = true;
        self.input(Input::Upgrade {
            conn: c,
            peer: PEER,
            head: &h,
        });
        c
    }

    fn conn(&mut self) -> ConnId {
        self.next += 1;
        conn(self.next)
    }

    fn connect_world(&mut self) {
        let c = self.conn();
        let mut h = make_head(
            Method::Get,
            &format!("/relay?id={WORLD}&worldTitle=T"),
            vec![],
        );
        h.wants_upgrade = true;
        self.input(Input::Upgrade {
            conn: c,
            peer: PEER,
            head: &h,
        });
        let auth = format!(r#"{{"type":"auth","token":"{}"}}"#, self.token);
        self.input(Input::WsText {
            conn: c,
            text: auth,
        });
        self.world = c;
    }

    fn input(&mut self, input: Input<'_>) {
        let mut out = Vec::new();
        self.relay.handle(input, self.now, &mut out);
        let mut closed = Vec::new();
        for a in &out {
            match a {
                Action::Respond { resp, .. } => {
                    assert!((100..=599).contains(&resp.status), "status {}", resp.status);
                    self.statuses.push(resp.status);
                    for (name, value) in &resp.headers {
                        assert!(!name.is_empty());
                        assert!(!value.contains(['\r', '\n']), "{name}: {value:?}");
                    }
                }
                Action::Text { conn, payload } => {
                    let bytes: &[u8] = match payload {
                        Bytes::Owned(v) => v,
                        Bytes::Shared(r) => r,
                    };
                    // A WebSocket text frame must carry UTF-8 (RFC 6455 §5.6).
                    let text = std::str::from_utf8(bytes).expect("text payload is UTF-8");
                    if [self.world, self.api, self.sock].contains(conn) {
                        let v: serde_json::Value =
                            serde_json::from_str(text).expect("relay→socket is JSON");
                        if *conn == self.api || *conn == self.sock {
                            let t = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
                            self.api_types.push(t.to_owned());
                        } else if let Some(id) = v.get("requestId").and_then(|i| i.as_str()) {
                            self.last_request_id = id.to_owned();
                        }
                    }
                }
                Action::TextFanout { payload, .. } => {
                    assert!(std::str::from_utf8(payload).is_ok());
                }
                Action::Arm { at, timer } => self.timers.push((*at, timer.clone())),
                Action::Close { conn, close } => {
                    assert!(close.reason.len() <= 123, "close reason too long");
                    closed.push(*conn);
                }
                _ => {}
            }
        }
        for c in closed {
            self.input(Input::Closed { conn: c });
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        loop {
            let due = self.timers.iter().position(|(at, _)| *at <= self.now);
            let Some(i) = due else { break };
            let (_, t) = self.timers.swap_remove(i);
            self.input(Input::Timer(t));
        }
    }

    fn request(&mut self, method: Method, target: &str, body: &str) {
        let c = self.conn();
        let mut h = make_head(method, target, vec![header("x-api-key", &self.key.clone())]);
        if !body.is_empty() {
            h.headers.push(header("content-type", "application/json"));
            h.body = BodyKind::Length(body.len() as u64);
        }
        self.input(Input::Request {
            conn: c,
            peer: PEER,
            head: &h,
            body: body.as_bytes().to_vec(),
        });
    }
}

/// The module message dispatcher: arbitrary text from an authenticated world link, mixed with
/// REST calls that create pending requests and the passage of time. One line per step:
///
/// - `GET /path?query`, `POST /path<TAB>body` (also `PUT`, `DELETE`): an API call with a
///   full-scope key;
/// - `~N`: N seconds pass (due timers fire);
/// - `#close`: the world link drops; `#auth`: a world link connects and authenticates;
/// - `api <text>`: a message from a `/ws/api` client socket; `#api`: a new one connects;
/// - `WS /path?query`: a WebSocket upgrade with the key; `ws <text>`: a message on it;
/// - anything else: a WebSocket text message from the world, with `@ID` replaced by the
///   `requestId` of the last message the relay sent to the world (so replies can match).
pub fn module_dispatch(data: &[u8]) {
    let _ = dispatch_run(data);
}

fn dispatch_run(data: &[u8]) -> Option<Sim> {
    let text = std::str::from_utf8(data).ok()?;
    let mut sim = Sim::new();
    for line in text.split('\n').take(64) {
        let method = [
            ("GET ", Method::Get),
            ("POST ", Method::Post),
            ("PUT ", Method::Put),
            ("DELETE ", Method::Delete),
        ]
        .into_iter()
        .find_map(|(p, m)| line.strip_prefix(p).map(|rest| (m, rest)));
        if let Some((m, rest)) = method {
            let (target, body) = rest.split_once('\t').unwrap_or((rest, ""));
            if target.starts_with('/') {
                sim.request(m, target, body);
            }
        } else if let Some(n) = line.strip_prefix('~') {
            let secs = n.trim().parse::<u64>().unwrap_or(1).min(24 * 3600);
            sim.advance(Duration::from_secs(secs));
        } else if line == "#close" {
            let w = sim.world;
            sim.input(Input::Closed { conn: w });
        } else if line == "#auth" {
            sim.connect_world();
        } else if line == "#api" {
            sim.connect_api();
        } else if let Some(target) = line.strip_prefix("WS ") {
            sim.sock = sim.upgrade(target);
        } else if let Some(msg) = line.strip_prefix("ws ") {
            let s = sim.sock;
            sim.input(Input::WsText {
                conn: s,
                text: msg.to_owned(),
            });
        } else if let Some(msg) = line.strip_prefix("api ") {
            let a = sim.api;
            sim.input(Input::WsText {
                conn: a,
                text: msg.to_owned(),
            });
        } else {
            let msg = line.replace("@ID", &sim.last_request_id);
            let w = sim.world;
            sim.input(Input::WsText { conn: w, text: msg });
        }
    }
    // Whatever happened, the world link can leave and every timer can run out cleanly.
    for c in [sim.world, sim.api, sim.sock] {
        sim.input(Input::Closed { conn: c });
    }
    sim.advance(Duration::from_secs(24 * 3600));
    Some(sim)
}

/// Parameter coercion and reply shaping (`relay::forward`) for a chosen route, reached
/// through the router as a request would: the path parameter, the query string, the JSON body
/// and the module's reply are fuzzed; the module message built from accepted params must be
/// one JSON object with the relay's fields.
///
/// Input: `[route index] query \0 body \0 reply \0 path-value` (missing parts are empty).
pub fn params(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = rest.splitn(4, '\0');
    let query = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    let reply = parts.next().unwrap_or("");
    let path_value = parts.next().unwrap_or("");
    // Parsed once: building the table costs more than the rest of the target.
    static TABLE: std::sync::OnceLock<RouteTable> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(RouteTable::builtin);
    let routes = table.routes();
    let Some(chosen) = routes.get(usize::from(sel) % routes.len().max(1)) else {
        return;
    };
    // The chosen pattern with every parameter segment set to the fuzzed value.
    let path: String = chosen
        .segments
        .iter()
        .map(|seg| match seg {
            Seg::Lit(s) => format!("/{s}"),
            Seg::Param(_) | Seg::Rest(_) => format!("/{path_value}"),
        })
        .collect();
    let (route, path_params) = match table.find(chosen.method.as_str(), &path) {
        Match::Found(route, pp) => (route, pp),
        Match::MethodNotAllowed(methods) => {
            assert!(!methods.is_empty());
            return;
        }
        Match::NotFound => return,
    };
    let query = enc::parse_query(query);
    let body_json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    // As rest.rs does for `/upload`: a body that is not JSON travels as a data URL.
    let content_type = if body.starts_with('{') {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let raw_upload;
    let body_ref =
        if route.ws_type == "upload-file" && !forward::upload_body_is_json(Some(content_type)) {
            raw_upload = serde_json::Value::Object(forward::upload_params_from_raw(
                &query,
                Some(content_type),
                body.as_bytes(),
            ));
            Some(&raw_upload)
        } else {
            body_json.as_ref()
        };
    match forward::extract_params(route, &query, body_ref, &path_params) {
        Ok(p) => {
            let _ = forward::script_refusal(&route.ws_type, &p);
            let _ = forward::extra_scope(route, &p);
            let scopes = vec!["entity:read".to_owned()];
            let msg = forward::build_message(route, p, "req_1", &scopes, Some("u1"));
            let v: serde_json::Value = serde_json::from_slice(&msg).expect("message is JSON");
            let obj = v.as_object().expect("message is an object");
            assert_eq!(obj.get("requestId").and_then(|v| v.as_str()), Some("req_1"));
            assert_eq!(obj.get("userId").and_then(|v| v.as_str()), Some("u1"));
            assert_eq!(
                obj.get("type").and_then(|v| v.as_str()),
                Some(route.ws_type.as_str())
            );
        }
        Err(e) => {
            assert_eq!(e.status, 400);
            assert!(e.body.get("error").is_some_and(|m| m.is_string()));
        }
    }
    let r = forward::reply_to_http(route, &query, reply.as_bytes());
    assert!(matches!(r.status, 200 | 400), "status {}", r.status);
    for (name, value) in &r.headers {
        assert!(!value.contains(['\r', '\n']), "{name}: {value:?}");
    }
}

/// The state-file loader (`store::read_state` minus the file): any bytes either fail with a
/// message or give a state that saves and loads back to the same state.
pub fn state_load(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let state = match store::migrate(value) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    // Lookups on the loaded state must not panic, whatever the indexes say.
    for t in &state.tokens {
        let _ = state.find_connection_token(&t.prefix);
    }
    for k in &state.api_keys {
        let _ = state.authenticate(Some(k.prefix.as_str()), 0);
    }
    let saved = serde_json::to_value(&state).expect("a state serializes");
    let again = store::migrate(saved.clone()).expect("a saved state loads");
    let resaved = serde_json::to_value(&again).expect("a state serializes");
    assert_eq!(saved, resaved, "save → load → save changed the state");
}

/// Percent, form, base64 and hex coding (`enc`): decoders never panic; encode then decode is
/// the identity; a strict decode re-encodes to something that decodes the same.
pub fn percent(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let encoded = enc::percent_encode_component(s);
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        assert_eq!(enc::percent_decode(&encoded).as_deref(), Some(s));
        assert_eq!(enc::form_decode(&encoded), s);
        if let Some(d) = enc::percent_decode(s) {
            assert!(d.len() <= s.len());
            assert_eq!(
                enc::percent_decode(&enc::percent_encode_component(&d)),
                Some(d)
            );
        }
        let f = enc::form_decode(s);
        if !s.contains('%') {
            assert_eq!(f, s.replace('+', " "));
        }
        for (k, v) in enc::parse_query(s) {
            let q = format!(
                "{}={}",
                enc::percent_encode_component(&k),
                enc::percent_encode_component(&v)
            );
            assert_eq!(enc::parse_query(&q), vec![(k, v)]);
        }
        if let Some(b) = enc::base64_decode(s) {
            assert_eq!(enc::base64_decode(&enc::base64_encode(&b)), Some(b));
        }
        if let Some(b) = enc::hex_decode(s) {
            assert_eq!(enc::hex_decode(&enc::hex_encode(&b)), Some(b));
        }
    }
    assert_eq!(
        enc::base64_decode(&enc::base64_encode(data)).as_deref(),
        Some(data)
    );
    assert_eq!(
        enc::hex_decode(&enc::hex_encode(data)).as_deref(),
        Some(data)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed runs clean (AFL refuses a corpus whose seeds crash).
    #[test]
    fn seeds_run_clean() {
        for (name, target) in TARGETS {
            let dir = format!("{}/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
            let entries = std::fs::read_dir(&dir).expect("a corpus per target");
            let mut n = 0;
            for e in entries {
                let data = std::fs::read(e.expect("entry").path()).expect("seed");
                target(&data);
                n += 1;
            }
            assert!(n > 0, "{dir} is empty");
        }
    }

    /// The dispatcher harness reaches what it claims: a forwarded request, the module's reply
    /// matched through `@ID`, a timeout after `~N`, a world that leaves, a `/ws/api` request,
    /// a `/ws/events` subscription.
    #[test]
    fn dispatch_harness_reaches_replies_and_timeouts() {
        let api = "api {\"type\":\"entity\",\"requestId\":\"c1\",\"uuid\":\"A\"}\n\
                   {\"type\":\"entity-result\",\"requestId\":\"@ID\",\"data\":{}}";
        let sim = dispatch_run(api.as_bytes()).expect("runs");
        assert!(
            sim.api_types.iter().any(|t| t == "entity-result"),
            "{:?}",
            sim.api_types
        );
        let w = WORLD;
        let reply = format!(
            "GET /get?clientId={w}&uuid=A\n{{\"type\":\"get-result\",\"requestId\":\"@ID\",\"data\":{{}}}}"
        );
        let sim = dispatch_run(reply.as_bytes()).expect("runs");
        assert_eq!(sim.statuses, vec![200], "the reply answers the GET");
        let events = format!(
            "WS /ws/events\nws {{\"type\":\"subscribe\",\"client_id\":\"{w}\",\"events\":[\"chat-events\"]}}"
        );
        let sim = dispatch_run(events.as_bytes()).expect("runs");
        assert!(
            sim.api_types.iter().any(|t| t == "snapshot"),
            "{:?}",
            sim.api_types
        );
        let timeout = format!("GET /get?clientId={w}&uuid=A\n~1000");
        let sim = dispatch_run(timeout.as_bytes()).expect("runs");
        assert_eq!(sim.statuses, vec![408], "the request times out");
        let gone = format!("GET /get?clientId={w}&uuid=A\n#close\nGET /get?clientId={w}&uuid=A");
        let sim = dispatch_run(gone.as_bytes()).expect("runs");
        // The waiter fails when its world leaves; the next call finds no world.
        assert!(
            matches!(sim.statuses[..], [500..=599, 400..=599]),
            "{:?}",
            sim.statuses
        );
    }
}
