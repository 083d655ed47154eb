//! What `/mcp` costs the relay, measured in-process on the sans-IO core (`Relay::handle`), so
//! the figures are the relay's own CPU and heap with nothing else on the machine counted:
//!
//! 1. A tool call's added CPU over the equivalent REST call: `POST /roll` and `tools/call
//!    roll_dice` each run from request to response (request in, module message out, module
//!    reply in, HTTP response out), alternating, and only the time inside `Relay::handle` is
//!    summed. HTTP parsing and socket work happen in the loop, outside the core, and are the
//!    same for both but for the body length (goal: under 50 µs added per call).
//! 2. Heap per idle MCP session: bytes still allocated after `initialize` + `notifications/
//!    initialized` for N sessions, divided by N (a counting global allocator; goal: < 8 KiB).
//!
//! 3. The same seen from outside: the release binary's VmRSS before and after N idle sessions
//!    opened over HTTP (includes allocator slack; the in-process figure is the exact one).
//!
//! `cargo bench --bench mcp` (`BENCH_QUICK=1`: fewer rounds). Prints a table and one JSON line.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use fvtt_relay::auth::NewKey;
use fvtt_relay::config::Config;
use fvtt_relay::http::request::{BodyKind, Head, Header, Method};
use fvtt_relay::ids::ConnId;
use fvtt_relay::relay::io::{Action, Bytes, Input};
use fvtt_relay::relay::{Clock, Relay};
use fvtt_relay::store::State;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const WORLD: &str = "fvtt_00000000000000aa";
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn head(method: Method, target: &str, headers: &[(&str, &str)]) -> Head {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Head {
        method,
        method_raw: method.as_str().to_owned(),
        target: target.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        minor_version: 1,
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        keep_alive: true,
        expect_continue: false,
        body: BodyKind::None,
        wants_upgrade: false,
    }
}

struct Bench {
    relay: Relay,
    now: Instant,
    key: String,
    link: ConnId,
    next: usize,
    /// Time spent inside `Relay::handle`.
    spent: Duration,
}

impl Bench {
    fn new() -> Bench {
        let base_ms = 1_780_000_000_000;
        let mut state = State::default();
        let _ = state.ensure_admin_key();
        let (_, token) = state.create_connection_token(WORLD, base_ms);
        let spec = NewKey {
            name: "bench".into(),
            scopes: fvtt_relay::auth::ALL_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..NewKey::default()
        };
        let key = match state.create_api_key(spec, base_ms) {
            Ok((_, k)) => k,
            Err(e) => panic!("key: {e}"),
        };
        let cfg = Config {
            rate_limit_per_minute: 1_000_000_000,
            mcp_sessions_per_key: 1_000_000,
            ..Config::default()
        };
        let now = Instant::now();
        let relay = Relay::new(cfg, state, Clock { base: now, base_ms });
        let mut b = Bench {
            relay,
            now,
            key,
            link: ConnId { key: 1, gen: 1 },
            next: 10,
            spent: Duration::ZERO,
        };
        let mut h = head(Method::Get, &format!("/relay?id={WORLD}&worldTitle=T"), &[]);
        h.wants_upgrade = true;
        let link = b.link;
        b.handle(Input::Upgrade {
            conn: link,
            peer: PEER,
            head: &h,
        });
        b.handle(Input::WsText {
            conn: link,
            text: format!(r#"{{"type":"auth","token":"{token}"}}"#),
        });
        b
    }

    fn handle(&mut self, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        let t = Instant::now();
        self.relay.handle(input, self.now, &mut out);
        self.spent += t.elapsed();
        out
    }

    fn conn(&mut self) -> ConnId {
        self.next += 1;
        ConnId {
            key: self.next,
            gen: 1,
        }
    }

    /// One request answered by the world; returns the response status.
    fn roundtrip(&mut self, h: &Head, body: &[u8]) -> u16 {
        let conn = self.conn();
        let out = self.handle(Input::Request {
            conn,
            peer: PEER,
            head: h,
            body: body.to_vec(),
        });
        let link = self.link;
        let rid = out.iter().find_map(|a| match a {
            Action::Text {
                conn,
                payload: Bytes::Owned(p),
            } if *conn == link => request_id(p),
            _ => None,
        });
        let Some(rid) = rid else {
            return status_of(&out, conn);
        };
        let reply = format!(
            r#"{{"type":"roll-result","requestId":"{rid}","success":true,"data":{{"id":"manual_1","chatMessageCreated":false,"roll":{{"formula":"1d20","total":7,"isCritical":false,"isFumble":false,"dice":[{{"faces":20,"results":[{{"result":7,"active":true}}]}}]}}}}}}"#
        );
        let out = self.handle(Input::WsText {
            conn: link,
            text: reply,
        });
        self.now += Duration::from_micros(50);
        let status = status_of(&out, conn);
        self.handle(Input::Closed { conn });
        status
    }
}

fn request_id(msg: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(msg).ok()?;
    let start = s.find(r#""requestId":""#)? + 13;
    let len = s[start..].find('"')?;
    Some(s[start..start + len].to_string())
}

fn status_of(out: &[Action], conn: ConnId) -> u16 {
    out.iter()
        .find_map(|a| match a {
            Action::Respond { conn: c, resp } if *c == conn => Some(resp.status),
            _ => None,
        })
        .unwrap_or(0)
}

fn session(b: &mut Bench) -> String {
    let key = b.key.clone();
    let h = head(
        Method::Post,
        "/mcp",
        &[
            ("x-api-key", &key),
            ("accept", "application/json, text/event-stream"),
        ],
    );
    let conn = b.conn();
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    let out = b.handle(Input::Request {
        conn,
        peer: PEER,
        head: &h,
        body: body.to_vec(),
    });
    let sid = out
        .iter()
        .find_map(|a| match a {
            Action::Respond { resp, .. } => resp
                .headers
                .iter()
                .find(|(n, _)| *n == "Mcp-Session-Id")
                .map(|(_, v)| v.clone()),
            _ => None,
        })
        .unwrap_or_default();
    drop(out);
    let h = head(
        Method::Post,
        "/mcp",
        &[
            ("x-api-key", &key),
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    );
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    drop(b.handle(Input::Request {
        conn,
        peer: PEER,
        head: &h,
        body: note.to_vec(),
    }));
    b.handle(Input::Closed { conn });
    sid
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// One keep-alive POST /mcp; returns the response head (lower-cased) after reading the body.
fn post(s: &mut TcpStream, key: &str, sid: Option<&str>, body: &str) -> String {
    let sid = sid.map_or(String::new(), |v| format!("Mcp-Session-Id: {v}\r\n"));
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         {sid}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    head
}

/// Part 3: RSS per idle session of the real binary.
fn rss_per_session(n: usize) -> f64 {
    let bin = env!("CARGO_BIN_EXE_fvtt-relay");
    let dir = std::env::temp_dir().join(format!("fvtt-relay-mcp-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let data = dir.to_string_lossy().to_string();
    let out = Command::new(bin)
        .args(["key", "create", "--name", "bench", "--scopes", "all"])
        .args(["--rate-limit", "100000000", "--data-dir", &data])
        .output()
        .expect("key create");
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let sessions = (n * 2).to_string();
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir", &data])
        .args(["--mcp-sessions-per-key", &sessions, "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the relay");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap_or("")
        .to_string();
    let mut s = TcpStream::connect(&addr).expect("connect");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let mut open = |count: usize| {
        for _ in 0..count {
            let head = post(&mut s, &key, None, init);
            let sid = head
                .lines()
                .find_map(|l| l.strip_prefix("mcp-session-id:"))
                .map(|v| v.trim().to_string());
            post(&mut s, &key, sid.as_deref(), note);
        }
    };
    open(100); // warm up: tables and buffers the first sessions grow
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(child.id());
    open(n);
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (after.saturating_sub(before) * 1024) as f64 / n as f64
}

fn main() {
    // cargo bench passes --bench; `cargo test --all-targets` runs us without it: then a short
    // run checks that both paths still answer (the figures mean nothing in a debug build).
    let measuring = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let rounds = match (measuring, quick) {
        (false, _) => 20,
        (true, true) => 2_000,
        (true, false) => 20_000,
    };

    // 1. Latency: alternate REST and MCP so both see the same caches and heap.
    let mut b = Bench::new();
    let key = b.key.clone();
    let sid = session(&mut b);
    let rest = head(
        Method::Post,
        "/roll",
        &[("x-api-key", &key), ("content-type", "application/json")],
    );
    let rest_body = br#"{"formula":"1d20"}"#;
    let mcp = head(
        Method::Post,
        "/mcp",
        &[
            ("x-api-key", &key),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    );
    let mcp_body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"roll_dice","arguments":{"formula":"1d20"}}}"#;
    // Warm up, and check both paths answer 200.
    for _ in 0..rounds.min(200) {
        assert_eq!(b.roundtrip(&rest, rest_body), 200, "REST /roll");
        assert_eq!(b.roundtrip(&mcp, mcp_body), 200, "MCP tools/call");
    }
    let (mut t_rest, mut t_mcp) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        b.spent = Duration::ZERO;
        b.roundtrip(&rest, rest_body);
        t_rest += b.spent;
        b.spent = Duration::ZERO;
        b.roundtrip(&mcp, mcp_body);
        t_mcp += b.spent;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / rounds as f64;
    let (rest_us, mcp_us) = (per(t_rest), per(t_mcp));

    // 2. Memory per idle session.
    let n = if quick || !measuring { 1_000 } else { 10_000 };
    let mut m = Bench::new();
    let _ = session(&mut m); // first use builds lazily grown tables
    let before = LIVE.load(Ordering::Relaxed);
    let mut sids = Vec::with_capacity(n);
    let ids_bytes = n * (std::mem::size_of::<String>() + 32);
    for _ in 0..n {
        sids.push(session(&mut m));
    }
    let after = LIVE.load(Ordering::Relaxed);
    // The ids kept here are the bench's, not the relay's.
    let per_session = (after - before - ids_bytes as isize) as f64 / n as f64;

    let rss = if measuring { rss_per_session(n) } else { 0.0 };

    println!("MCP overhead (relay core, in-process; {rounds} calls each, alternating)");
    println!("  REST POST /roll           {rest_us:8.2} µs/call");
    println!("  MCP tools/call roll_dice  {mcp_us:8.2} µs/call");
    println!(
        "  added by MCP              {:8.2} µs/call   (goal < 50)",
        mcp_us - rest_us
    );
    println!(
        "  idle MCP session          {:8.0} bytes     (goal < 8192; {n} sessions)",
        per_session
    );
    if measuring {
        println!("  idle MCP session, binary  {rss:8.0} bytes RSS (release binary, {n} sessions)");
    }
    println!(
        "{}",
        serde_json::json!({"bench": "mcp", "rounds": rounds, "rest_us": rest_us, "mcp_us": mcp_us,
            "added_us": mcp_us - rest_us, "session_bytes": per_session, "sessions": n,
            "session_rss_bytes": rss})
    );
    drop(sids);
}
