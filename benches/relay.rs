//! `cargo bench --bench relay` (`make bench`, `make bench-quick`, `make bench-compare`):
//! end-to-end figures for the release binary, measured the way ISSUE7 asks.
//!
//! The bench provisions a data directory through the library (an all-scope API key and a
//! connection token), starts `fvtt-relay` on a loopback port, attaches its own simulated world
//! over `/relay`, and drives the relay with its own load generator (mio, keep-alive sockets).
//! Scenarios: forwarding (`GET /search` at concurrency 1/16/64/256), download (a 10 MiB file
//! through the world link, decoded by the relay), fan-out (one event per millisecond, a burst
//! and a single event to 1,000 and 10,000 subscribers over SSE, `/ws/api` and `/ws/events`,
//! each transport only when the relay offers it) and idle connections (RSS per connection,
//! wakeups per second). Relay CPU and memory come from `/proc/<pid>`; the generator reports
//! its own CPU so a saturated generator is visible in the figures.
//!
//! Output: a table on stdout, `target/bench/report.json` and `target/bench/report.md`.
//! `BENCH_QUICK=1` shortens every run (under a minute). `BENCH_ONLY=forwarding,download,
//! fanout,idle,abuse` runs a subset (`abuse`: issue 15's attacks, with the relay's RSS and a
//! probe's latency); `BENCH_FANOUT_SUBS=2000` sets the fan-out subscriber counts.
//! With `URL`, `KEY` and `CLIENT_ID` in the environment the bench runs only the forwarding
//! load, alternating between our relay and that external one (loopback only), and prints both
//! rows.
//!
//! `cargo test --all-targets` also runs this binary, without `--bench`: it then returns at once.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};
use tungstenite::Message;

use fvtt_relay::auth::{NewKey, ALL_SCOPES};
use fvtt_relay::store::{unix_ms, Store};

type Res<T> = Result<T, String>;

#[path = "common/wire.rs"]
mod wire;
use wire::{client_frame, find, server_frame, RespReader};

/// Closed-loop client counts of the forwarding scenario (ISSUE7 "What make bench measures").
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// Size of the file served by the simulated world in the download scenario.
const DOWNLOAD_BYTES: usize = 10 * 1024 * 1024;
/// USER_HZ: the unit of utime/stime in /proc/<pid>/stat (proc(5)); 100 on every Linux ABI
/// that std supports, and there is no libc crate here to ask sysconf(_SC_CLK_TCK).
const CLK_TCK: u64 = 100;
/// The chat message id prefix the world uses; subscribers find the sequence number after it
/// whatever envelope the transport wraps around the event.
const MARK: &[u8] = b"\"bench-";
/// Latencies up to this many microseconds are counted exactly; larger ones are kept apart.
const HIST_US: usize = 200_000;
/// The WebSocket key of every bench upgrade (RFC 6455 §4.1 only asks for 16 base64 bytes).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Flags that keep the relay's abuse limits out of the way of a benchmark from one IP.
const RELAY_FLAGS: [&str; 16] = [
    "--max-connections",
    "40000",
    "--max-connections-per-ip",
    "40000",
    "--ws-upgrade-rate-limit",
    "100000000",
    "--rate-limit-per-minute",
    "100000000",
    "--sse-max-per-channel",
    "100000",
    "--ws-api-max-subscriptions",
    "100000",
    "--keepalive-timeout",
    "10m",
    "--log-level",
    "warn",
];

fn main() {
    // cargo bench passes --bench; cargo test --all-targets runs us without it: then only the
    // bench's own parsers are checked (a harness = false target has no #[test] runner).
    if !std::env::args().any(|a| a == "--bench") {
        self_test();
        return;
    }
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and orchestration
// ---------------------------------------------------------------------------------------------

/// Every knob of one bench run; recorded in the report.
struct Settings {
    quick: bool,
    warmup: Duration,
    fwd_run: Duration,
    /// How long a run waits for outstanding replies after it stops sending.
    drain: Duration,
    download_conc: Vec<usize>,
    download_requests: usize,
    fanout_subs: Vec<usize>,
    burst: u64,
    idle_counts: Vec<usize>,
    idle_window: Duration,
    fd_limit: u64,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        let fd_limit = fd_soft_limit();
        // Each side of a loopback connection costs one descriptor in its own process; keep
        // headroom for the world, the listener, logs and the generator's own sockets.
        let cap = |n: usize| n.min(fd_limit.saturating_sub(512) as usize);
        let mut fanout_subs = vec![cap(1000)];
        if !quick {
            fanout_subs.push(cap(10_000));
        }
        // BENCH_FANOUT_SUBS=2000,5000 (say) replaces the subscriber counts.
        if let Ok(list) = std::env::var("BENCH_FANOUT_SUBS") {
            let custom: Vec<usize> = list
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .map(cap)
                .collect();
            if !custom.is_empty() {
                fanout_subs = custom;
            }
        }
        fanout_subs.dedup();
        let mut idle_counts = vec![0, cap(1000), cap(10_000)];
        idle_counts.dedup();
        Settings {
            quick,
            warmup: Duration::from_millis(if quick { 200 } else { 500 }),
            fwd_run: Duration::from_millis(if quick { 1500 } else { 5000 }),
            drain: Duration::from_secs(2),
            download_conc: vec![1, 4],
            download_requests: if quick { 4 } else { 20 },
            fanout_subs,
            burst: 100,
            idle_counts,
            idle_window: Duration::from_secs(if quick { 5 } else { 10 }),
            fd_limit,
        }
    }

    /// Events of the 1/ms phase: a 10,000-subscriber run at 1 event/ms is 10 M deliveries a
    /// second, so it is kept short; the point there is the per-event delivery time.
    fn rate_events(&self, subs: usize) -> u64 {
        match (subs > 1000, self.quick) {
            (false, false) => 1000,
            (false, true) => 500,
            (true, _) => 200,
        }
    }

    fn json(&self) -> Value {
        json!({
            "quick": self.quick,
            "warmup_s": self.warmup.as_secs_f64(),
            "forwarding_run_s": self.fwd_run.as_secs_f64(),
            "drain_s": self.drain.as_secs_f64(),
            "forwarding_route": "GET /search?query=goblin",
            "download_bytes": DOWNLOAD_BYTES,
            "download_concurrency": self.download_conc,
            "download_requests_per_run": self.download_requests,
            "fanout_subscribers": self.fanout_subs,
            "fanout_burst_events": self.burst,
            "idle_connections": self.idle_counts,
            "idle_window_s": self.idle_window.as_secs_f64(),
            "fd_soft_limit": self.fd_limit,
            "relay_flags": RELAY_FLAGS.join(" "),
        })
    }
}

/// What the relay needs from the world and the clients: where it is and the credentials.
struct Env {
    bin: PathBuf,
    dir: PathBuf,
    out: PathBuf,
    key: String,
    token: String,
    client_id: String,
    file_b64: Arc<str>,
}

fn run() -> Res<()> {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let set = Settings::new(quick);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target").join("bench");
    let dir = out.join("data");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let bin = relay_binary(&root)?;
    let (key, token, client_id) = provision(&dir)?;
    let env = Env {
        bin,
        dir,
        out: out.clone(),
        key,
        token,
        client_id,
        file_b64: base64(&file_pattern(DOWNLOAD_BYTES)).into(),
    };
    let started = Instant::now();
    let mut report = json!({
        "machine": machine(),
        "commit": commit(&root),
        "settings": set.json(),
        "unix_ms": unix_ms(),
    });

    let compare = external_target()?;
    if let Some(ext) = compare {
        let rows = compare_forwarding(&env, &set, &ext)?;
        report["compare"] = Value::Array(rows.clone());
        report["forwarding"] = Value::Array(
            rows.iter()
                .filter(|r| r["target"] == "fvtt-relay")
                .cloned()
                .collect(),
        );
    } else {
        // BENCH_ONLY=fanout,idle (say) runs a subset while working on one part.
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let wants = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
        if wants("forwarding") || wants("download") {
            let (fwd, dl) = forwarding_and_download(&env, &set)?;
            report["forwarding"] = Value::Array(fwd);
            report["download"] = Value::Array(dl);
        }
        if wants("idle") {
            report["idle"] = Value::Array(idle(&env, &set)?);
        }
        if wants("fanout") {
            report["fanout"] = Value::Array(fanout(&env, &set)?);
        }
        if wants("abuse") {
            report["abuse"] = Value::Array(abuse(&env, &set)?);
        }
    }
    report["elapsed_s"] = json!(round2(started.elapsed().as_secs_f64()));

    let md = markdown(&report);
    println!("\n{md}");
    let json_path = out.join("report.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    fs::write(&json_path, text + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    let md_path = out.join("report.md");
    fs::write(&md_path, md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

/// The release binary cargo built for this bench (`CARGO_BIN_EXE_*` is set for benches and
/// carries the bench profile, which inherits `release`), or `FVTT_RELAY_BIN`. Built with
/// `cargo build --release` if it is missing or older than the sources.
fn relay_binary(root: &Path) -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("FVTT_RELAY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_fvtt-relay"));
    let built = fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest = newest_source(&root.join("src"), 0);
    let stale = match (built, newest) {
        (Some(b), Some(n)) => n > b,
        (None, _) => true,
        (Some(_), None) => false,
    };
    if stale || !bin.ends_with("release/fvtt-relay") {
        eprintln!("bench: building the release binary (cargo build --release)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "fvtt-relay"])
            .current_dir(root)
            .status()
            .map_err(|e| format!("cargo build --release: {e}"))?;
        if !status.success() {
            return Err("cargo build --release failed".into());
        }
        return Ok(root.join("target").join("release").join("fvtt-relay"));
    }
    Ok(bin)
}

/// Newest modification time under `dir` (bounded depth; the source tree is shallow).
fn newest_source(dir: &Path, depth: u32) -> Option<std::time::SystemTime> {
    if depth > 4 {
        return None;
    }
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_source(&path, depth + 1)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// An all-scope key with a rate limit far above anything the bench sends, and a connection
/// token for the simulated world, written through the library the relay itself uses.
fn provision(dir: &Path) -> Res<(String, String, String)> {
    let now = unix_ms();
    let mut store = Store::open(dir).map_err(|e| format!("store: {e:?}"))?;
    let state = store.state_mut();
    state.ensure_admin_key();
    let spec = NewKey {
        name: "bench".into(),
        scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
        client_ids: vec![],
        user_id: None,
        expires_in_days: None,
        rate_limit_per_minute: Some(100_000_000),
    };
    let (_, key) = state.create_api_key(spec, now)?;
    let client_id = format!("fvtt_bench{}", now % 1_000_000);
    let (_, token) = state.create_connection_token(&client_id, now);
    store.save().map_err(|e| format!("save state: {e}"))?;
    Ok((key, token, client_id))
}

/// Scenario group 1: forwarding at each concurrency, then downloads, on one relay process.
fn forwarding_and_download(env: &Env, set: &Settings) -> Res<(Vec<Value>, Vec<Value>)> {
    let relay = RelayProc::start(env, "forwarding")?;
    let world = World::attach(relay.addr, env)?;
    let target = Target::ours(&relay, env, "/search?query=goblin");
    let mut fwd = Vec::new();
    for &c in &CONCURRENCY {
        let row = forwarding_row(&target, Some(&relay), c, set, None)?;
        print_row("forwarding", &row);
        fwd.push(row);
    }
    let path = format!("/download?path=x&clientId={}", env.client_id);
    let target = Target::ours(&relay, env, &path);
    let mut dl = Vec::new();
    for &c in &set.download_conc {
        let row = download_row(&target, &relay, c, set)?;
        print_row("download", &row);
        dl.push(row);
    }
    world.stop();
    Ok((fwd, dl))
}

/// One closed-loop forwarding run: connect `c` keep-alive clients, warm up, measure.
fn forwarding_row(
    target: &Target,
    relay: Option<&RelayProc>,
    c: usize,
    set: &Settings,
    label: Option<&str>,
) -> Res<Value> {
    let mut gen = Gen::connect(target, c, None)?;
    gen.run(set.warmup, set.drain, &mut Hist::new());
    // The peak RSS of a process we did not start is read but never reset.
    let reset = relay.is_some_and(|r| r.child.is_some());
    let pid = relay.map(|r| r.pid);
    let before = Sample::take_with(pid, reset);
    let mut hist = Hist::new();
    let stats = gen.run(set.fwd_run, set.drain, &mut hist);
    let after = Sample::take_with(pid, reset);
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let mut row = json!({
        "concurrency": c,
        "requests": stats.done,
        "rps": round1(stats.done as f64 / stats.elapsed.as_secs_f64().max(1e-9)),
        "p50_ms": hist.ms(0.50),
        "p90_ms": hist.ms(0.90),
        "p99_ms": hist.ms(0.99),
        "max_ms": hist.max_ms(),
        "unanswered": stats.unanswered,
        "errors": stats.errors,
        "relay_cpu_us_per_req": Value::Null,
        "peak_rss_kib": Value::Null,
        "loadgen_cpu_pct": round1(after.cpu_pct_self(&before, wall)),
    });
    if relay.is_some() {
        let ticks = after.relay_ticks.saturating_sub(before.relay_ticks);
        let per_req = ticks as f64 * 1e6 / CLK_TCK as f64 / stats.done.max(1) as f64;
        row["relay_cpu_us_per_req"] = json!(round1(per_req));
        row["relay_cpu_pct"] = json!(round1(after.cpu_pct_relay(&before, wall)));
        row["peak_rss_kib"] = json!(after.peak_kib);
    }
    if let Some(l) = label {
        row["target"] = json!(l);
    }
    Ok(row)
}

fn download_row(target: &Target, relay: &RelayProc, c: usize, set: &Settings) -> Res<Value> {
    let mut gen = Gen::connect(target, c, Some(DOWNLOAD_BYTES as u64))?;
    let before = Sample::take(Some(relay.pid));
    let mut hist = Hist::new();
    let stats = gen.run_count(set.download_requests, Duration::from_secs(60), &mut hist);
    let after = Sample::take(Some(relay.pid));
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let secs = stats.elapsed.as_secs_f64().max(1e-9);
    let ticks = after.relay_ticks.saturating_sub(before.relay_ticks);
    Ok(json!({
        "concurrency": c,
        "size_mib": DOWNLOAD_BYTES as f64 / 1048576.0,
        "requests": stats.done,
        "mib_per_s": round1(stats.done as f64 * DOWNLOAD_BYTES as f64 / 1048576.0 / secs),
        "p50_ms": hist.ms(0.50),
        "p99_ms": hist.ms(0.99),
        "max_ms": hist.max_ms(),
        "unanswered": stats.unanswered,
        "errors": stats.errors,
        "relay_cpu_ms_per_req": round2(ticks as f64 * 1e3 / CLK_TCK as f64 / stats.done.max(1) as f64),
        "peak_rss_kib": after.peak_kib,
        "loadgen_cpu_pct": round1(after.cpu_pct_self(&before, wall)),
    }))
}

/// Side-by-side: the same forwarding load against ours and the external relay, alternating.
fn compare_forwarding(env: &Env, set: &Settings, ext: &External) -> Res<Vec<Value>> {
    let relay = RelayProc::start(env, "compare")?;
    let world = World::attach(relay.addr, env)?;
    let ours = Target::ours(
        &relay,
        env,
        &format!("/search?query=goblin&clientId={}", env.client_id),
    );
    let theirs = Target {
        addr: ext.addr,
        host: ext.host.clone(),
        key: ext.key.clone(),
        path: format!("/search?query=goblin&clientId={}", ext.client_id),
    };
    let ext_proc = ext.pid.map(|pid| RelayRef { pid });
    let rounds = if set.quick { 1 } else { 2 };
    let mut rows = Vec::new();
    for &c in &CONCURRENCY {
        for round in 0..rounds {
            // Alternate who goes first so neither side always runs on a warmer machine.
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for mine in order {
                let mut row = if mine {
                    forwarding_row(&ours, Some(&relay), c, set, Some("fvtt-relay"))?
                } else {
                    external_row(&theirs, ext_proc.as_ref(), c, set)?
                };
                row["round"] = json!(round + 1);
                print_row("compare", &row);
                rows.push(row);
            }
        }
    }
    world.stop();
    Ok(rows)
}

fn external_row(target: &Target, pid: Option<&RelayRef>, c: usize, set: &Settings) -> Res<Value> {
    // Only the pid is needed for the /proc figures; a borrowed view keeps one code path.
    let proxy = pid.map(|p| RelayProc::view(p.pid, target.addr));
    let row = forwarding_row(target, proxy.as_ref(), c, set, Some("external"));
    if let Some(p) = proxy {
        p.forget();
    }
    row
}

/// The relay named by `URL`, `KEY`, `CLIENT_ID` (and optionally `PID` for its CPU and RSS).
struct External {
    addr: SocketAddr,
    host: String,
    key: String,
    client_id: String,
    pid: Option<u32>,
}

struct RelayRef {
    pid: u32,
}

fn external_target() -> Res<Option<External>> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (url, key, client_id) = match (get("URL"), get("KEY"), get("CLIENT_ID")) {
        (None, None, None) => return Ok(None),
        (Some(u), Some(k), Some(c)) => (u, k, c),
        _ => return Err("side-by-side mode needs URL, KEY and CLIENT_ID together".into()),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or("URL must be http://HOST:PORT (the bench speaks plain HTTP on loopback only)")?;
    let host = rest.split('/').next().unwrap_or("").to_string();
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("URL {url}: {e}"))?
        .find(|a| a.ip().is_loopback())
        .ok_or("URL must name a loopback address (the bench never leaves this machine)")?;
    let pid = match get("PID") {
        Some(p) => Some(p.parse::<u32>().map_err(|_| "PID must be a number")?),
        None => None,
    };
    Ok(Some(External {
        addr,
        host,
        key,
        client_id,
        pid,
    }))
}

// ---------------------------------------------------------------------------------------------
// Idle connections
// ---------------------------------------------------------------------------------------------

/// RSS with 0, 1,000 and 10,000 idle connections on a fresh relay, and its wakeups per second.
fn idle(env: &Env, set: &Settings) -> Res<Vec<Value>> {
    let relay = RelayProc::start(env, "idle")?;
    let world = World::attach(relay.addr, env)?;
    // /ws/events subscribers when the relay has them; else keep-alive HTTP connections that
    // completed one request (an unauthenticated /relay socket is closed after 10 s).
    let ws = open_sub(&relay, env, SubKind::WsEvents).is_ok();
    let kind = if ws {
        "ws-events-subscriber"
    } else {
        "http-keepalive"
    };
    let mut held: Vec<TcpStream> = Vec::new();
    let mut rows = Vec::new();
    let mut base_kib = 0u64;
    for &n in &set.idle_counts {
        let t0 = Instant::now();
        while held.len() < n && t0.elapsed() < Duration::from_secs(120) {
            let s = if ws {
                open_sub(&relay, env, SubKind::WsEvents)?.0
            } else {
                idle_http(&relay, env)?
            };
            held.push(s);
        }
        let connect_s = t0.elapsed().as_secs_f64();
        thread::sleep(Duration::from_millis(500));
        let rss = proc_status_kib(relay.pid, "VmRSS")?;
        if n == 0 {
            base_kib = rss;
        }
        let c0 = ctx_switches(relay.pid)?;
        let w0 = Instant::now();
        thread::sleep(set.idle_window);
        let c1 = ctx_switches(relay.pid)?;
        let secs = w0.elapsed().as_secs_f64();
        let open = held.iter().filter(|s| still_open(s)).count();
        let per_conn = if n > 0 {
            json!(round1(
                (rss.saturating_sub(base_kib) * 1024) as f64 / n as f64
            ))
        } else {
            Value::Null
        };
        let row = json!({
            "connections": held.len(),
            "kind": kind,
            "rss_kib": rss,
            "bytes_per_conn": per_conn,
            "wakeups_per_s": round2(c1.saturating_sub(c0) as f64 / secs),
            "window_s": round1(secs),
            "still_open": open,
            "connect_s": round2(connect_s),
        });
        print_row("idle", &row);
        rows.push(row);
    }
    drop(held);
    world.stop();
    Ok(rows)
}

/// Whether the relay has kept `s` open: a peek sees no EOF (unread bytes are fine).
fn still_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let open = match s.peek(&mut b) {
        Ok(n) => n > 0,
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    open
}

/// A keep-alive connection that has completed one forwarded request and then sits idle.
fn idle_http(relay: &RelayProc, env: &Env) -> Res<TcpStream> {
    let mut s = TcpStream::connect(relay.addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let req = http_request(&relay.host(), &env.key, "/search?query=goblin");
    s.write_all(&req)
        .map_err(|e| format!("idle request: {e}"))?;
    let mut rd = RespReader::default();
    let mut done = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while done.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        let n = s.read(&mut buf).map_err(|e| format!("idle read: {e}"))?;
        if n == 0 {
            return Err("idle connection closed by the relay".into());
        }
        rd.feed(buf.get(..n).unwrap_or(&[]), &mut done)?;
    }
    match done.first() {
        Some((200, _)) => Ok(s),
        Some((status, _)) => Err(format!("idle request answered {status}")),
        None => Err("idle request unanswered".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Fan-out
// ---------------------------------------------------------------------------------------------

/// One world event per millisecond, a burst and a single event, to N subscribers spread over
/// every transport the relay offers; delivery latency from the world's intended send time.
fn fanout(env: &Env, set: &Settings) -> Res<Vec<Value>> {
    let relay = RelayProc::start(env, "fanout")?;
    let world = World::attach(relay.addr, env)?;
    let mut kinds = Vec::new();
    let mut missing = Vec::new();
    for kind in [SubKind::Sse, SubKind::WsApi, SubKind::WsEvents] {
        match open_sub(&relay, env, kind) {
            Ok(_) => kinds.push(kind),
            Err(e) => missing.push(format!("{}: {e}", kind.name())),
        }
    }
    if kinds.is_empty() {
        let row = json!({
            "subscribers": 0,
            "phase": "all",
            "skipped": "skipped: no event transport accepted a subscriber",
            "probe": missing,
        });
        print_row("fanout", &row);
        world.stop();
        return Ok(vec![row]);
    }
    let mut rows = Vec::new();
    let mut seq = 1u64;
    for &n in &set.fanout_subs {
        let mut subs = Subs::new()?;
        let t0 = Instant::now();
        for kind in plan(&kinds, n) {
            subs.add(open_sub(&relay, env, kind)?)?;
        }
        subs.pump(None, Instant::now() + Duration::from_secs(20), |s| {
            s.subs.iter().all(|x| x.ready || x.refused || x.closed)
        });
        let connect_s = t0.elapsed().as_secs_f64();
        // Give the relay time to tell the world about the new subscriber counts.
        thread::sleep(Duration::from_millis(200));
        // Per transport: subscribers that are ready / that were opened.
        let mix = kinds
            .iter()
            .map(|k| {
                let of = subs.subs.iter().filter(|s| s.kind == *k);
                let ready = of.clone().filter(|s| s.ready).count();
                format!("{}={ready}/{}", k.name(), of.count())
            })
            .collect::<Vec<_>>()
            .join(" ");
        let refused: Vec<String> = subs
            .subs
            .iter()
            .filter(|s| s.refused)
            .map(|s| s.note.clone())
            .take(1)
            .collect();
        let refused_n = subs.subs.iter().filter(|s| s.refused).count();
        let phases = [
            ("single", 1, Duration::ZERO),
            ("burst", set.burst, Duration::ZERO),
            ("rate-1/ms", set.rate_events(n), Duration::from_millis(1)),
        ];
        for (name, count, interval) in phases {
            let mut row = fanout_phase(&world, &relay, &mut subs, seq, count, interval)?;
            seq += count;
            row["subscribers"] = json!(n);
            row["phase"] = json!(name);
            row["transports"] = json!(mix);
            row["ready"] = json!(subs.ready);
            row["connect_s"] = json!(round2(connect_s));
            if refused_n > 0 {
                row["refused"] = json!(refused_n);
                row["refused_reason"] = json!(refused.first());
            }
            print_row("fanout", &row);
            rows.push(row);
        }
    }
    if !missing.is_empty() {
        rows.push(json!({"subscribers": 0, "phase": "probe", "skipped": missing.join("; ")}));
    }
    world.stop();
    Ok(rows)
}

/// /ws/api subscriptions per world: the relay's default cap is the reference's 10
/// (relay-protocol.md §4.5); the bench raises it (`--ws-api-max-subscriptions`) so that
/// subscribers split evenly over the three transports.
const WS_API_PER_WORLD: usize = 100_000;

/// Which transport each of `n` subscribers uses: /ws/api up to its cap, the rest spread
/// evenly over the other available transports.
fn plan(kinds: &[SubKind], n: usize) -> Vec<SubKind> {
    let others: Vec<SubKind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != SubKind::WsApi)
        .collect();
    let api = if kinds.contains(&SubKind::WsApi) {
        let share = if others.is_empty() {
            n
        } else {
            n / kinds.len()
        };
        share.min(WS_API_PER_WORLD)
    } else {
        0
    };
    let mut out = vec![SubKind::WsApi; api];
    if !others.is_empty() {
        out.extend((0..n - api).filter_map(|i| others.get(i % others.len()).copied()));
    }
    out
}

fn fanout_phase(
    world: &World,
    relay: &RelayProc,
    subs: &mut Subs,
    first: u64,
    count: u64,
    interval: Duration,
) -> Res<Value> {
    for s in subs.subs.iter_mut() {
        s.got = 0;
        s.last = 0;
    }
    let live = subs.subs.iter().filter(|s| s.ready && !s.closed).count() as u64;
    let before = Sample::take(Some(relay.pid));
    // Leave the world a moment to pick the command up: latency counts from `start`.
    let start = Instant::now() + Duration::from_millis(10);
    world.events(first, count, interval, start)?;
    let span = interval * count as u32;
    let deadline = start + span + Duration::from_secs(10);
    let mut acc = Phase {
        first,
        count,
        start,
        interval,
        hist: Hist::new(),
        delivered: 0,
        complete: 0,
        stray: 0,
        out_of_order: 0,
        all_at: None,
        first_at: None,
    };
    let expected = live * count;
    subs.pump(Some(&mut acc), deadline, |_| false);
    let after = Sample::take(Some(relay.pid));
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let delivery_s = acc
        .all_at
        .map(|t| t.duration_since(start).as_secs_f64())
        .unwrap_or_else(|| after.at.duration_since(start).as_secs_f64());
    let closed = subs.subs.iter().filter(|s| s.closed).count();
    let (w_first, w_last) = world.sent.lock().map(|t| *t).unwrap_or((None, None));
    let lag = |t: Option<Instant>| {
        t.map(|t| round3(t.saturating_duration_since(start).as_secs_f64() * 1e3))
    };
    Ok(json!({
        "events": count,
        "rate_per_s": if interval.is_zero() { Value::Null } else { json!(round1(1.0 / interval.as_secs_f64())) },
        "expected": expected,
        "delivered": acc.delivered,
        "every_subscriber_got_every_event": acc.delivered == expected && acc.complete == live,
        "complete_subscribers": acc.complete,
        "closed_subscribers": closed,
        "out_of_order": acc.out_of_order,
        "stray": acc.stray,
        "delivered_per_s": round1(acc.delivered as f64 / delivery_s.max(1e-9)),
        "p50_ms": acc.hist.ms(0.50),
        "p99_ms": acc.hist.ms(0.99),
        "max_ms": acc.hist.max_ms(),
        "world_first_sent_ms": lag(w_first),
        "world_last_sent_ms": lag(w_last),
        "first_delivered_ms": acc.first_at.map(|t| round3(t.saturating_duration_since(start).as_secs_f64() * 1e3)),
        "all_delivered_ms": acc.all_at.map(|t| round2(t.duration_since(start).as_secs_f64() * 1e3)),
        "relay_cpu_pct": round1(after.cpu_pct_relay(&before, wall)),
        "peak_rss_kib": after.peak_kib,
        "loadgen_cpu_pct": round1(after.cpu_pct_self(&before, wall)),
    }))
}

/// Delivery bookkeeping of one fan-out phase.
struct Phase {
    first: u64,
    count: u64,
    start: Instant,
    interval: Duration,
    hist: Hist,
    delivered: u64,
    complete: u64,
    stray: u64,
    out_of_order: u64,
    all_at: Option<Instant>,
    first_at: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SubKind {
    Sse,
    WsApi,
    WsEvents,
}

impl SubKind {
    fn name(self) -> &'static str {
        match self {
            SubKind::Sse => "sse",
            SubKind::WsApi => "ws-api",
            SubKind::WsEvents => "ws-events",
        }
    }
}

/// One subscriber's state after its handshake (its socket lives in `Subs::mio`: one
/// descriptor per subscriber, so 10,000 of them fit a 20,000 descriptor limit).
struct Sub {
    kind: SubKind,
    buf: Vec<u8>,
    ready: bool,
    /// The relay answered our subscribe with an error (the reason is in `note`).
    refused: bool,
    note: String,
    closed: bool,
    got: u64,
    last: u64,
}

/// Open a subscriber with a blocking handshake; bytes read past the head stay in `buf`.
fn open_sub(relay: &RelayProc, env: &Env, kind: SubKind) -> Res<(TcpStream, Sub)> {
    let mut s = TcpStream::connect(relay.addr).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let host = relay.host();
    let req = match kind {
        SubKind::Sse => format!(
            "GET /chat/subscribe?clientId={} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {}\r\nAccept: text/event-stream\r\n\r\n",
            env.client_id, env.key
        ),
        SubKind::WsApi => ws_upgrade(&host, "/ws/api", None),
        SubKind::WsEvents => ws_upgrade(&host, "/ws/events", Some(&env.key)),
    };
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let (status, rest) = read_head(&mut s)?;
    let want = if kind == SubKind::Sse { 200 } else { 101 };
    if status != want {
        return Err(format!("HTTP {status}"));
    }
    let first: Vec<Vec<u8>> = match kind {
        SubKind::Sse => vec![],
        SubKind::WsApi => vec![
            format!(
                r#"{{"type":"auth","token":"{}","clientId":"{}"}}"#,
                env.key, env.client_id
            )
            .into_bytes(),
            br#"{"type":"subscribe","channel":"chat-events","requestId":"bench"}"#.to_vec(),
        ],
        SubKind::WsEvents => vec![br#"{"type":"subscribe","events":["all"]}"#.to_vec()],
    };
    for m in first {
        s.write_all(&client_frame(0x1, &m))
            .map_err(|e| format!("write: {e}"))?;
    }
    let sub = Sub {
        kind,
        buf: rest,
        ready: kind == SubKind::Sse,
        refused: false,
        note: String::new(),
        closed: false,
        got: 0,
        last: 0,
    };
    Ok((s, sub))
}

fn ws_upgrade(host: &str, path: &str, key: Option<&str>) -> String {
    let auth = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    )
}

/// Read a response head (blocking, bounded); returns the status and the bytes after it.
fn read_head(s: &mut TcpStream) -> Res<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < 64 * 1024 {
        let n = s.read(&mut chunk).map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            resp.parse(&buf).map_err(|e| format!("bad head: {e}"))?;
            let status = resp.code.unwrap_or(0);
            return Ok((status, buf.split_off(end + 4)));
        }
    }
    Err("response head too large".into())
}

/// All subscribers of a fan-out run, read by one mio loop on the bench's main thread.
struct Subs {
    poll: Poll,
    events: Events,
    subs: Vec<Sub>,
    mio: Vec<mio::net::TcpStream>,
    ready: usize,
    tmp: Vec<u8>,
}

impl Subs {
    fn new() -> Res<Subs> {
        Ok(Subs {
            poll: Poll::new().map_err(|e| e.to_string())?,
            events: Events::with_capacity(1024),
            subs: Vec::new(),
            mio: Vec::new(),
            ready: 0,
            tmp: vec![0; 64 * 1024],
        })
    }

    fn add(&mut self, (std, sub): (TcpStream, Sub)) -> Res<()> {
        std.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut m = mio::net::TcpStream::from_std(std);
        let token = Token(self.subs.len());
        self.poll
            .registry()
            .register(&mut m, token, Interest::READABLE)
            .map_err(|e| e.to_string())?;
        if sub.ready {
            self.ready += 1;
        }
        self.subs.push(sub);
        self.mio.push(m);
        // Bytes that arrived with the handshake are processed on the next pump.
        Ok(())
    }

    /// Read until `done` holds, every expected event arrived, or `deadline` passes.
    fn pump(
        &mut self,
        mut phase: Option<&mut Phase>,
        deadline: Instant,
        done: impl Fn(&Subs) -> bool,
    ) {
        for i in 0..self.subs.len() {
            self.process(i, phase.as_deref_mut());
        }
        loop {
            let now = Instant::now();
            if now >= deadline || done(self) {
                return;
            }
            if let Some(p) = phase.as_deref() {
                let live = self.subs.iter().filter(|s| s.ready && !s.closed).count() as u64;
                if p.complete >= live && live > 0 {
                    return;
                }
            }
            let wait = deadline
                .saturating_duration_since(now)
                .min(Duration::from_millis(20));
            if self.poll.poll(&mut self.events, Some(wait)).is_err() {
                continue;
            }
            let tokens: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for i in tokens {
                self.read(i, phase.as_deref_mut());
            }
        }
    }

    fn read(&mut self, i: usize, mut phase: Option<&mut Phase>) {
        loop {
            let (Some(m), Some(sub)) = (self.mio.get_mut(i), self.subs.get_mut(i)) else {
                return;
            };
            if sub.closed {
                return;
            }
            let mut more = false;
            loop {
                match m.read(&mut self.tmp) {
                    Ok(0) => {
                        sub.closed = true;
                        break;
                    }
                    Ok(n) => {
                        sub.buf.extend_from_slice(self.tmp.get(..n).unwrap_or(&[]));
                        // Process as we go so a busy socket cannot grow its buffer unbounded.
                        if sub.buf.len() > 256 * 1024 {
                            more = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        sub.closed = true;
                        break;
                    }
                }
            }
            self.process(i, phase.as_deref_mut());
            if !more {
                return;
            }
        }
    }

    /// Consume the complete frames (WebSocket) or blocks (SSE) buffered for subscriber `i`.
    fn process(&mut self, i: usize, mut phase: Option<&mut Phase>) {
        let Some(sub) = self.subs.get_mut(i) else {
            return;
        };
        let now = Instant::now();
        let mut used = 0;
        let mut pong = Vec::new();
        loop {
            let rest = sub.buf.get(used..).unwrap_or(&[]);
            match sub.kind {
                SubKind::Sse => {
                    let Some(end) = find(rest, b"\n\n") else {
                        break;
                    };
                    let block = rest.get(..end).unwrap_or(&[]);
                    if let Some(seq) = find_seq(block) {
                        deliver(&mut sub.got, &mut sub.last, seq, now, phase.as_deref_mut());
                    }
                    used += end + 2;
                }
                SubKind::WsApi | SubKind::WsEvents => {
                    let Some((op, range, len)) = server_frame(rest) else {
                        break;
                    };
                    let payload = rest.get(range).unwrap_or(&[]);
                    match op {
                        0x0..=0x2 => {
                            if !sub.ready {
                                // /ws/api: ready once `subscribed`; /ws/events: on any
                                // message after our subscribe (the snapshot).
                                let ok = sub.kind == SubKind::WsEvents
                                    || find(payload, b"\"subscribed\"").is_some();
                                if ok {
                                    sub.ready = true;
                                    self.ready += 1;
                                } else if !sub.refused
                                    && find(payload, b"\"type\":\"error\"").is_some()
                                {
                                    // e.g. the per-world /ws/api subscription cap.
                                    sub.refused = true;
                                    sub.note = String::from_utf8_lossy(payload)
                                        .chars()
                                        .take(160)
                                        .collect();
                                }
                            }
                            if let Some(seq) = find_seq(payload) {
                                deliver(
                                    &mut sub.got,
                                    &mut sub.last,
                                    seq,
                                    now,
                                    phase.as_deref_mut(),
                                );
                            }
                        }
                        0x8 => sub.closed = true,
                        0x9 => pong.push(client_frame(0xA, payload)),
                        _ => {}
                    }
                    used += len;
                }
            }
        }
        sub.buf.drain(..used.min(sub.buf.len()));
        if let Some(m) = self.mio.get_mut(i) {
            for f in pong {
                let _ = m.write(&f);
            }
        }
    }
}

/// Count one received event of the running phase.
fn deliver(got: &mut u64, last: &mut u64, seq: u64, now: Instant, phase: Option<&mut Phase>) {
    let Some(p) = phase else {
        return;
    };
    if seq < p.first || seq >= p.first + p.count {
        p.stray += 1;
        return;
    }
    if *last != 0 && seq <= *last {
        p.out_of_order += 1;
    }
    *last = seq;
    *got += 1;
    p.delivered += 1;
    let intended = p.start + p.interval * (seq - p.first) as u32;
    p.hist
        .record(now.saturating_duration_since(intended).as_micros() as u64);
    if *got == p.count {
        p.complete += 1;
    }
    p.all_at = Some(now);
    p.first_at.get_or_insert(now);
}

/// The number after the first `"bench-` in `bytes`.
fn find_seq(bytes: &[u8]) -> Option<u64> {
    let at = find(bytes, MARK)? + MARK.len();
    let digits = bytes.get(at..)?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(digits.get(..n)?).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The relay process and /proc figures
// ---------------------------------------------------------------------------------------------

struct RelayProc {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
}

impl RelayProc {
    /// Start the binary on 127.0.0.1:0 and read the port from its one stdout line.
    fn start(env: &Env, name: &str) -> Res<RelayProc> {
        RelayProc::start_with(env, name, &[])
    }

    /// `start` with extra flags after the bench's own.
    fn start_with(env: &Env, name: &str, extra: &[&str]) -> Res<RelayProc> {
        let log_path = env.out.join(format!("relay-{name}.log"));
        let log =
            fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let dir = env.dir.to_string_lossy().to_string();
        let mut child = Command::new(&env.bin)
            .args(["--listen", "127.0.0.1:0", "--data-dir", &dir])
            .args(RELAY_FLAGS)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start {}: {e}", env.bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Drain to EOF so the relay never blocks on (or dies of) a full pipe.
            for _ in lines.by_ref() {}
        });
        let mut proc = RelayProc {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Some(Ok(l))) => l,
            _ => {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("relay did not start; its log:\n{log}"));
            }
        };
        let url = line
            .rsplit("http://")
            .next()
            .ok_or_else(|| format!("unexpected first line: {line}"))?;
        proc.addr = url
            .trim()
            .parse()
            .map_err(|_| format!("unexpected first line: {line}"))?;
        Ok(proc)
    }

    /// A handle on a process we did not start: only its pid and address are used.
    fn view(pid: u32, addr: SocketAddr) -> RelayProc {
        RelayProc {
            child: None,
            pid,
            addr,
        }
    }

    fn forget(mut self) {
        self.child = None;
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        // Only the child we spawned, by its handle (never a process found by name).
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU and memory readings at one instant.
struct Sample {
    at: Instant,
    relay_ticks: u64,
    self_ticks: u64,
    peak_kib: Option<u64>,
}

impl Sample {
    /// Reading a sample also resets the relay's peak RSS (clear_refs 5, proc(5)), so the
    /// next sample's `peak_kib` is the peak of the run in between.
    fn take(pid: Option<u32>) -> Sample {
        Sample::take_with(pid, true)
    }

    /// `reset` false for a process the bench did not start: its peak is read, never reset.
    fn take_with(pid: Option<u32>, reset: bool) -> Sample {
        let at = Instant::now();
        let relay_ticks = pid
            .and_then(|p| cpu_ticks(&p.to_string()).ok())
            .unwrap_or(0);
        let peak_kib = pid.and_then(|p| proc_status_kib(p, "VmHWM").ok());
        if let Some(p) = pid.filter(|_| reset) {
            let _ = fs::write(format!("/proc/{p}/clear_refs"), "5");
        }
        Sample {
            at,
            relay_ticks,
            self_ticks: cpu_ticks("self").unwrap_or(0),
            peak_kib,
        }
    }

    fn cpu_pct_relay(&self, before: &Sample, wall: f64) -> f64 {
        ticks_pct(self.relay_ticks.saturating_sub(before.relay_ticks), wall)
    }

    fn cpu_pct_self(&self, before: &Sample, wall: f64) -> f64 {
        ticks_pct(self.self_ticks.saturating_sub(before.self_ticks), wall)
    }
}

fn ticks_pct(ticks: u64, wall: f64) -> f64 {
    ticks as f64 / CLK_TCK as f64 / wall.max(1e-9) * 100.0
}

/// utime + stime of `/proc/<pid>/stat` (fields 14 and 15, proc(5)), in clock ticks.
fn cpu_ticks(pid: &str) -> Res<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // The command name (field 2) may contain spaces; count fields after its closing ')'.
    let rest = stat.rsplit(')').next().ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> Res<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "bad stat".to_string())
    };
    Ok(get(11)? + get(12)?)
}

fn proc_status_kib(pid: u32, field: &str) -> Res<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status_field(&status, field).ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Context switches of every thread of `pid`: each one is a wakeup of that thread.
fn ctx_switches(pid: u32) -> Res<u64> {
    let mut total = 0;
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    for t in tasks.flatten() {
        let Ok(s) = fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        total += status_field(&s, "voluntary_ctxt_switches").unwrap_or(0);
        total += status_field(&s, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Ok(total)
}

fn fd_soft_limit() -> u64 {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| status_field(&m, "MemTotal"));
    json!({
        "nproc": thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "mem_total_kib": mem_kib,
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "arch": std::env::consts::ARCH,
    })
}

fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated world
// ---------------------------------------------------------------------------------------------

enum Cmd {
    Events {
        first: u64,
        count: u64,
        interval: Duration,
        start: Instant,
    },
    Stop,
}

/// A Foundry module stand-in on `/relay`: answers every request from a preformatted template
/// and pushes chat events on command. It parses only `type` and `requestId`.
struct World {
    tx: mpsc::Sender<Cmd>,
    /// When the world actually wrote the first and the last event of the latest stream.
    sent: Arc<std::sync::Mutex<(Option<Instant>, Option<Instant>)>>,
    handle: Option<JoinHandle<()>>,
    answered: Arc<AtomicU64>,
}

type Ws = tungstenite::WebSocket<TcpStream>;

impl World {
    fn attach(addr: SocketAddr, env: &Env) -> Res<World> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("world connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let url = format!(
            "ws://{addr}/relay?id={}&worldId=bench&worldTitle=Bench&foundryVersion=13.345\
             &systemId=dnd5e&systemTitle=DnD5e&systemVersion=5.1.2",
            env.client_id
        );
        let (mut ws, _) = tungstenite::client::client(url.as_str(), stream)
            .map_err(|e| format!("world handshake: {e}"))?;
        let auth = format!(r#"{{"type":"auth","token":"{}"}}"#, env.token);
        ws.send(Message::text(auth))
            .map_err(|e| format!("world auth: {e}"))?;
        let t0 = Instant::now();
        loop {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err("world: no auth-success within 5 s".into());
            }
            match ws.read() {
                Ok(Message::Text(t)) if t.as_str().contains("\"auth-success\"") => break,
                Ok(Message::Close(c)) => return Err(format!("world refused: {c:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("world auth: {e}")),
            }
        }
        let (tx, rx) = mpsc::channel();
        let answered = Arc::new(AtomicU64::new(0));
        let count = answered.clone();
        let file = env.file_b64.clone();
        let sent = Arc::new(std::sync::Mutex::new((None, None)));
        let times = sent.clone();
        let handle = thread::spawn(move || world_loop(ws, rx, count, file, times));
        Ok(World {
            tx,
            sent,
            handle: Some(handle),
            answered,
        })
    }

    fn events(&self, first: u64, count: u64, interval: Duration, start: Instant) -> Res<()> {
        self.tx
            .send(Cmd::Events {
                first,
                count,
                interval,
                start,
            })
            .map_err(|_| "the world thread has stopped".to_string())
    }

    fn stop(mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        eprintln!(
            "bench: world answered {} requests",
            self.answered.load(Ordering::Relaxed)
        );
    }
}

/// Search results as a real dnd5e world returns them (spec/examples/search-examples.json).
const SEARCH_RESULTS: &str = r#""query":"goblin","results":[{"documentType":"Actor","folder":null,"id":"w8wIGpE73y2AYrCo","name":"Goblin Boss","package":null,"packageName":null,"subType":"npc","uuid":"Actor.w8wIGpE73y2AYrCo","icon":"systems/dnd5e/tokens/humanoid/GoblinBoss.webp","journalLink":"@UUID[Actor.w8wIGpE73y2AYrCo]{Goblin Boss}","tagline":"Actors Directory","formattedMatch":"<strong>Goblin</strong> Boss","resultType":"WorldEntity"},{"documentType":"Actor","folder":null,"id":"V5OF1QXHjaIy6iO8","name":"Goblin","package":null,"packageName":null,"subType":"npc","uuid":"Actor.V5OF1QXHjaIy6iO8","icon":"systems/dnd5e/tokens/humanoid/Goblin.webp","journalLink":"@UUID[Actor.V5OF1QXHjaIy6iO8]{Goblin}","tagline":"Actors Directory","formattedMatch":"<strong>Goblin</strong>","resultType":"WorldEntity"}]"#;

/// The event stream the world is pushing: `count` events from sequence `first`, the i-th due
/// at `start + i * interval`.
struct Sched {
    first: u64,
    count: u64,
    interval: Duration,
    start: Instant,
    sent: u64,
}

type SendTimes = Arc<std::sync::Mutex<(Option<Instant>, Option<Instant>)>>;

fn world_loop(
    mut ws: Ws,
    rx: mpsc::Receiver<Cmd>,
    answered: Arc<AtomicU64>,
    file: Arc<str>,
    times: SendTimes,
) {
    // Idle: block up to 2 ms per read (a command waits at most that long; these wakeups are
    // the bench's, not the relay's); while events are due, 200 µs so 1/ms pacing holds.
    let slow = Some(Duration::from_millis(2));
    let fast = Some(Duration::from_micros(200));
    let _ = ws.get_mut().set_read_timeout(slow);
    let mut sched: Option<Sched> = None;
    loop {
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Stop => {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    return;
                }
                Cmd::Events {
                    first,
                    count,
                    interval,
                    start,
                } => {
                    if let Ok(mut t) = times.lock() {
                        *t = (None, None);
                    }
                    sched = Some(Sched {
                        first,
                        count,
                        interval,
                        start,
                        sent: 0,
                    });
                    let _ = ws.get_mut().set_read_timeout(fast);
                }
            }
        }
        if let Some(sc) = sched.as_mut() {
            let now = Instant::now();
            let mut wrote = false;
            let was_zero = sc.sent == 0;
            while sc.sent < sc.count && now >= sc.start + sc.interval * (sc.sent as u32) {
                let ev = format!(
                    r#"{{"type":"chat-event","data":{{"eventType":"create","data":{{"id":"bench-{}","content":"hi"}}}}}}"#,
                    sc.first + sc.sent
                );
                if ws.write(Message::text(ev)).is_err() {
                    return;
                }
                sc.sent += 1;
                wrote = true;
            }
            if wrote {
                if ws.flush().is_err() {
                    return;
                }
                let now = Instant::now();
                if let Ok(mut t) = times.lock() {
                    if was_zero {
                        t.0 = Some(now);
                    }
                    t.1 = Some(now);
                }
            }
        }
        if sched.as_ref().is_some_and(|sc| sc.sent >= sc.count) {
            sched = None;
            let _ = ws.get_mut().set_read_timeout(slow);
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let text = t.as_str();
                let (Some(ty), Some(id)) = (str_field(text, "type"), str_field(text, "requestId"))
                else {
                    continue; // event-subscription-update, pong, ...: nothing to answer
                };
                let reply = if ty == "download-file" {
                    let mut r = String::with_capacity(file.len() + 256);
                    let _ = write!(
                        r,
                        r#"{{"type":"download-file-result","requestId":"{id}","success":true,"path":"x","filename":"bench.bin","mimeType":"application/octet-stream","size":{DOWNLOAD_BYTES},"fileData":"data:application/octet-stream;base64,"#
                    );
                    r.push_str(&file);
                    r.push_str("\"}");
                    r
                } else {
                    format!(r#"{{"type":"{ty}-result","requestId":"{id}",{SEARCH_RESULTS}}}"#)
                };
                if ws.send(Message::text(reply)).is_err() {
                    return;
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// The string value of `"name":"…"` (no escapes: ids and types are plain ASCII).
fn str_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("\"{name}\":\"");
    let at = text.find(&pat)? + pat.len();
    let rest = text.get(at..)?;
    rest.get(..rest.find('"')?)
}

fn file_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

/// Standard base64 (RFC 4648 §4) of the download file.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| char::from(A[(v & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let v = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(v >> 18));
        out.push(sym(v >> 12));
        out.push(if chunk.len() > 1 { sym(v >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(v) } else { '=' });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The HTTP load generator
// ---------------------------------------------------------------------------------------------

/// Where the generator sends its requests.
struct Target {
    addr: SocketAddr,
    host: String,
    key: String,
    path: String,
}

impl Target {
    fn ours(relay: &RelayProc, env: &Env, path: &str) -> Target {
        Target {
            addr: relay.addr,
            host: relay.host(),
            key: env.key.clone(),
            path: path.to_string(),
        }
    }
}

fn http_request(host: &str, key: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

/// One keep-alive client connection of the generator (one request in flight at most).
struct Conn {
    s: mio::net::TcpStream,
    pos: usize,
    rd: RespReader,
    sent: Option<Instant>,
    dead: bool,
}

/// A closed-loop generator: `c` connections, each sends its next request as soon as the
/// previous reply is complete. One mio thread drives them all.
struct Gen {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    req: Vec<u8>,
    expect_body: Option<u64>,
    tmp: Vec<u8>,
    /// Replies completed by the last read, reused so the hot path does not allocate.
    done: Vec<(u16, u64)>,
}

/// Counts of one generator run.
struct RunStats {
    done: u64,
    errors: u64,
    unanswered: u64,
    elapsed: Duration,
}

impl Gen {
    fn connect(t: &Target, c: usize, expect_body: Option<u64>) -> Res<Gen> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut conns = Vec::with_capacity(c);
        for i in 0..c {
            let s = TcpStream::connect(t.addr).map_err(|e| format!("connect {}: {e}", t.addr))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            let mut s = mio::net::TcpStream::from_std(s);
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            conns.push(Conn {
                s,
                pos: 0,
                rd: RespReader::default(),
                sent: None,
                dead: false,
            });
        }
        Ok(Gen {
            poll,
            events: Events::with_capacity(1024),
            conns,
            req: http_request(&t.host, &t.key, &t.path),
            expect_body,
            tmp: vec![0; 256 * 1024],
            done: Vec::new(),
        })
    }

    /// Send for `dur`, then wait up to `drain` for the replies still outstanding.
    fn run(&mut self, dur: Duration, drain: Duration, hist: &mut Hist) -> RunStats {
        self.drive(Some(dur), u64::MAX, drain, hist)
    }

    /// Send exactly `n` requests (spread over the connections); bounded by `limit`.
    fn run_count(&mut self, n: usize, limit: Duration, hist: &mut Hist) -> RunStats {
        self.drive(None, n as u64, limit, hist)
    }

    fn drive(
        &mut self,
        dur: Option<Duration>,
        max: u64,
        drain: Duration,
        hist: &mut Hist,
    ) -> RunStats {
        let start = Instant::now();
        let stop_at = dur.map(|d| start + d);
        let hard_end = stop_at.unwrap_or(start) + drain;
        let mut st = RunStats {
            done: 0,
            errors: 0,
            unanswered: 0,
            elapsed: Duration::ZERO,
        };
        let mut issued = 0u64;
        for i in 0..self.conns.len() {
            if issued < max {
                if let Some(c) = self.conns.get_mut(i).filter(|c| !c.dead) {
                    c.pos = 0;
                    c.sent = Some(Instant::now());
                    issued += 1;
                }
            }
            self.progress(i, &mut st, hist, stop_at, max, &mut issued);
        }
        loop {
            let now = Instant::now();
            let outstanding = self.conns.iter().filter(|c| c.sent.is_some()).count();
            let sending = stop_at.is_none_or(|s| now < s) && issued < max;
            if now >= hard_end || (outstanding == 0 && !sending) {
                break;
            }
            let wait = hard_end
                .saturating_duration_since(now)
                .min(Duration::from_millis(10));
            if self.poll.poll(&mut self.events, Some(wait)).is_err() {
                continue;
            }
            let tokens: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for i in tokens {
                self.progress(i, &mut st, hist, stop_at, max, &mut issued);
            }
        }
        st.elapsed = start.elapsed();
        for c in self.conns.iter_mut() {
            if c.sent.take().is_some() {
                st.unanswered += 1;
            }
        }
        st
    }

    /// Write what is pending, read until WouldBlock (mio is edge-triggered), account replies.
    fn progress(
        &mut self,
        i: usize,
        st: &mut RunStats,
        hist: &mut Hist,
        stop_at: Option<Instant>,
        max: u64,
        issued: &mut u64,
    ) {
        let mut done = std::mem::take(&mut self.done);
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.dead {
            return;
        }
        loop {
            // Write the request in flight, if any part of it is still unsent.
            while c.sent.is_some() && c.pos < self.req.len() {
                match c.s.write(self.req.get(c.pos..).unwrap_or(&[])) {
                    Ok(0) => c.dead = true,
                    Ok(n) => c.pos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => c.dead = true,
                }
                if c.dead {
                    break;
                }
            }
            if c.dead {
                break;
            }
            let n = match c.s.read(&mut self.tmp) {
                Ok(0) => {
                    c.dead = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.dead = true;
                    break;
                }
            };
            if c.rd
                .feed(self.tmp.get(..n).unwrap_or(&[]), &mut done)
                .is_err()
            {
                c.dead = true;
                break;
            }
            for (status, body) in done.drain(..) {
                let now = Instant::now();
                let Some(sent) = c.sent.take() else {
                    st.errors += 1; // a reply nobody asked for
                    continue;
                };
                hist.record(now.duration_since(sent).as_micros() as u64);
                st.done += 1;
                let body_ok = self.expect_body.is_none_or(|b| b == body);
                if !(200..300).contains(&status) || !body_ok {
                    st.errors += 1;
                }
                if stop_at.is_none_or(|s| now < s) && *issued < max {
                    c.pos = 0;
                    c.sent = Some(now);
                    *issued += 1;
                }
            }
        }
        if c.dead {
            if c.sent.take().is_some() {
                st.errors += 1;
            }
            let _ = self.poll.registry().deregister(&mut c.s);
        }
        self.done = done;
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------

/// Exact counts per microsecond up to 200 ms; rarer larger values are kept as they are.
struct Hist {
    buckets: Vec<u32>,
    over: Vec<u64>,
    n: u64,
    max: u64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            buckets: vec![0; HIST_US],
            over: Vec::new(),
            n: 0,
            max: 0,
        }
    }

    fn record(&mut self, us: u64) {
        self.n += 1;
        self.max = self.max.max(us);
        match self.buckets.get_mut(us as usize) {
            Some(b) => *b = b.saturating_add(1),
            None => self.over.push(us),
        }
    }

    /// The `p` quantile in µs (nearest rank), `None` without samples.
    fn quantile(&mut self, p: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((p * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0u64;
        for (us, &count) in self.buckets.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(us as u64);
            }
        }
        self.over.sort_unstable();
        let idx = (rank - seen).saturating_sub(1) as usize;
        self.over.get(idx).copied().or(Some(self.max))
    }

    fn ms(&mut self, p: f64) -> Value {
        match self.quantile(p) {
            Some(us) => json!(round3(us as f64 / 1000.0)),
            None => Value::Null,
        }
    }

    fn max_ms(&self) -> Value {
        if self.n == 0 {
            Value::Null
        } else {
            json!(round3(self.max as f64 / 1000.0))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Columns of each table: (JSON field, header).
fn columns(section: &str) -> &'static [(&'static str, &'static str)] {
    match section {
        "forwarding" | "compare" => &[
            ("target", "target"),
            ("round", "round"),
            ("concurrency", "conc"),
            ("requests", "requests"),
            ("rps", "req/s"),
            ("p50_ms", "p50 ms"),
            ("p90_ms", "p90 ms"),
            ("p99_ms", "p99 ms"),
            ("max_ms", "max ms"),
            ("unanswered", "unanswered"),
            ("errors", "errors"),
            ("relay_cpu_us_per_req", "relay µs CPU/req"),
            ("relay_cpu_pct", "relay CPU %"),
            ("peak_rss_kib", "peak RSS KiB"),
            ("loadgen_cpu_pct", "loadgen CPU %"),
        ],
        "download" => &[
            ("concurrency", "conc"),
            ("size_mib", "MiB"),
            ("requests", "requests"),
            ("mib_per_s", "MiB/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("max_ms", "max ms"),
            ("unanswered", "unanswered"),
            ("errors", "errors"),
            ("relay_cpu_ms_per_req", "relay ms CPU/req"),
            ("peak_rss_kib", "peak RSS KiB"),
            ("loadgen_cpu_pct", "loadgen CPU %"),
        ],
        "fanout" => &[
            ("subscribers", "subs"),
            ("phase", "phase"),
            ("transports", "transports"),
            ("events", "events"),
            ("expected", "expected"),
            ("delivered", "delivered"),
            ("every_subscriber_got_every_event", "all got all"),
            ("closed_subscribers", "closed"),
            ("delivered_per_s", "deliveries/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("max_ms", "max ms"),
            ("world_first_sent_ms", "world sent ms"),
            ("first_delivered_ms", "first ms"),
            ("all_delivered_ms", "all by ms"),
            ("refused", "refused"),
            ("relay_cpu_pct", "relay CPU %"),
            ("peak_rss_kib", "peak RSS KiB"),
            ("loadgen_cpu_pct", "loadgen CPU %"),
            ("skipped", "note"),
        ],
        "abuse" => &[
            ("attack", "attack"),
            ("rss_before_kib", "RSS before KiB"),
            ("rss_peak_kib", "RSS peak KiB"),
            ("rss_after_1s_kib", "RSS +1 s KiB"),
            ("rss_after_1min_kib", "RSS +1 min KiB"),
            ("probe_answers", "probe n"),
            ("probe_p50_ms", "probe p50 ms"),
            ("probe_p99_ms", "probe p99 ms"),
            ("probe_max_ms", "probe max ms"),
            ("probe_p99_target_ms", "p99 target ms"),
            ("probe_p99_met", "target met"),
            ("attack_s", "attack s"),
        ],
        _ => &[
            ("connections", "connections"),
            ("kind", "kind"),
            ("rss_kib", "RSS KiB"),
            ("bytes_per_conn", "bytes/conn"),
            ("wakeups_per_s", "wakeups/s"),
            ("window_s", "window s"),
            ("still_open", "still open"),
        ],
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A markdown table of `rows`, leaving out columns no row has.
fn table(section: &str, rows: &[Value]) -> String {
    let cols: Vec<_> = columns(section)
        .iter()
        .filter(|(k, _)| rows.iter().any(|r| r.get(*k).is_some()))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} |",
        cols.iter().map(|(_, h)| *h).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(cols.len()));
    for r in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|(k, _)| r.get(*k).map(cell).unwrap_or_default())
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

fn print_row(section: &str, row: &Value) {
    let parts: Vec<String> = columns(section)
        .iter()
        .filter_map(|(k, h)| row.get(*k).map(|v| format!("{h}={}", cell(v))))
        .collect();
    eprintln!("bench: {section}: {}", parts.join(", "));
}

fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# fvtt-relay benchmark\n");
    let m = &r["machine"];
    let _ = writeln!(
        md,
        "- machine: {} cores, {}, {} KiB RAM, Linux {} ({})",
        cell(&m["nproc"]),
        cell(&m["cpu_model"]),
        cell(&m["mem_total_kib"]),
        cell(&m["kernel"]),
        cell(&m["arch"])
    );
    let _ = writeln!(md, "- commit: {}", cell(&r["commit"]));
    let _ = writeln!(md, "- elapsed: {} s", cell(&r["elapsed_s"]));
    let _ = writeln!(
        md,
        "- settings: `{}`",
        serde_json::to_string(&r["settings"]).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "- the world, the load generator and the relay share the same cores; relay CPU and \
         peak RSS are read from /proc/<pid> (peak reset per run with clear_refs); CPU % is of one core; loadgen CPU % is the \
         whole bench process: load generator, simulated world and subscriber readers\n"
    );
    for (section, title) in [
        ("compare", "Side by side (GET /search, closed loop)"),
        (
            "forwarding",
            "Forwarding: GET /search through the world link (closed loop)",
        ),
        (
            "download",
            "Download: 10 MiB through the world link (base64 decoded by the relay)",
        ),
        (
            "fanout",
            "Fan-out: chat events from the world to subscribers",
        ),
        ("idle", "Idle connections"),
        (
            "abuse",
            "Abuse (issue 15): relay RSS and a probe's latency while one client misbehaves",
        ),
    ] {
        if let Some(rows) = r[section].as_array() {
            let _ = writeln!(md, "## {title}\n\n{}", table(section, rows));
        }
    }
    md
}

// ---------------------------------------------------------------------------------------------
// Abuse (issue 15): memory and loop stalls under one misbehaving client
// ---------------------------------------------------------------------------------------------

/// The strict probe target of issue 15: p99 of `GET /api/health` under each attack.
const PROBE_P99_TARGET_MS: f64 = 50.0;

/// Each attack of issue 15 against one relay with the default `--memory-budget`, while a
/// probe asks `GET /api/health` every 10 ms on its own keep-alive connection: RSS before,
/// its peak (sampled every 10 ms), one second after the attack's sockets closed, and (after
/// the last attack) a minute later; the probe's latencies against `PROBE_P99_TARGET_MS`.
fn abuse(env: &Env, set: &Settings) -> Res<Vec<Value>> {
    let relay = RelayProc::start_with(env, "abuse", &[])?;
    let addr = relay.addr;
    let pid = relay.pid;
    thread::sleep(Duration::from_millis(500));
    let idle_kib = proc_status_kib(pid, "VmRSS")?;
    let mut rows = vec![json!({"attack": "idle", "rss_before_kib": idle_kib})];
    let scale = if set.quick { 4 } else { 1 };
    type Attack = Box<dyn Fn(SocketAddr, &str) -> Vec<TcpStream>>;
    let attacks: Vec<(String, Attack)> = vec![
        (
            format!(
                "8 x {} pipelined GET /admin/app.js, never read",
                20_000 / scale
            ),
            Box::new(move |a, _| {
                let req = b"GET /admin/app.js HTTP/1.1\r\nHost: b\r\n\r\n";
                (0..8)
                    .filter_map(|_| abuse_pipeline(a, req, 20_000 / scale, false))
                    .collect()
            }),
        ),
        (
            "16 x 4 MiB unauthenticated bodies + 16 x 32 MiB keyed uploads, held".into(),
            Box::new(|a, key| {
                let mut socks = abuse_bodies(
                    a,
                    "POST /auth/pair HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n",
                    4 << 20,
                    16,
                );
                let up = format!(
                    "POST /upload?path=a&filename=b HTTP/1.1\r\nHost: b\r\nx-api-key: {key}\r\nContent-Type: application/octet-stream\r\nContent-Length: 33554432\r\n\r\n"
                );
                socks.extend(abuse_bodies(a, &up, 32 << 20, 16));
                socks
            }),
        ),
        (
            "16 x /relay first message of 64 MiB (4 MiB sent)".into(),
            Box::new(|a, _| (0..16).filter_map(|i| abuse_preauth(a, i)).collect()),
        ),
        (
            format!("{} pipelined GET /openapi.json, read", 2000 / scale),
            Box::new(move |a, _| {
                let req = b"GET /openapi.json HTTP/1.1\r\nHost: b\r\n\r\n";
                abuse_pipeline(a, req, 2000 / scale, true)
                    .into_iter()
                    .collect()
            }),
        ),
        (
            format!("{} pipelined GET /asyncapi.json, read", 5000 / scale),
            Box::new(move |a, _| {
                let req = b"GET /asyncapi.json HTTP/1.1\r\nHost: b\r\n\r\n";
                abuse_pipeline(a, req, 5000 / scale, true)
                    .into_iter()
                    .collect()
            }),
        ),
    ];
    for (name, attack) in attacks {
        let before = proc_status_kib(pid, "VmRSS")?;
        let stop = Arc::new(AtomicU64::new(0));
        let sampler = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut peak = 0;
                while stop.load(Ordering::Relaxed) == 0 {
                    peak = peak.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
                    thread::sleep(Duration::from_millis(10));
                }
                peak
            })
        };
        let probe = {
            let stop = stop.clone();
            thread::spawn(move || abuse_probe(addr, &stop))
        };
        let t0 = Instant::now();
        let socks = attack(addr, &env.key);
        // Let the relay work through what it was sent (the readers drain the answers).
        thread::sleep(Duration::from_millis(1500));
        let attack_s = t0.elapsed().as_secs_f64();
        stop.store(1, Ordering::Relaxed);
        let peak = sampler.join().unwrap_or(0);
        let mut lat = probe.join().unwrap_or_default();
        drop(socks);
        thread::sleep(Duration::from_secs(1));
        let after = proc_status_kib(pid, "VmRSS")?;
        lat.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| -> Value {
            if lat.is_empty() {
                return Value::Null;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            json!(round2(lat[i]))
        };
        let p99 = q(0.99);
        let row = json!({
            "attack": name,
            "rss_before_kib": before,
            "rss_peak_kib": peak,
            "rss_after_1s_kib": after,
            "probe_answers": lat.len(),
            "probe_p50_ms": q(0.50),
            "probe_p99_ms": p99,
            "probe_max_ms": lat.last().map(|v| json!(round2(*v))).unwrap_or(Value::Null),
            "probe_p99_target_ms": PROBE_P99_TARGET_MS,
            "probe_p99_met": p99.as_f64().is_some_and(|v| v < PROBE_P99_TARGET_MS),
            "attack_s": round2(attack_s),
        });
        print_row("abuse", &row);
        rows.push(row);
    }
    let wait = Duration::from_secs(if set.quick { 10 } else { 60 });
    thread::sleep(wait);
    let later = proc_status_kib(pid, "VmRSS")?;
    let row = json!({
        "attack": format!("{} s after the last attack", wait.as_secs()),
        "rss_after_1min_kib": later,
        "rss_before_kib": idle_kib,
    });
    print_row("abuse", &row);
    rows.push(row);
    Ok(rows)
}

/// `GET /api/health` every 10 ms until `stop`; latencies in ms (a failure counts as 10 s).
fn abuse_probe(addr: SocketAddr, stop: &AtomicU64) -> Vec<f64> {
    let mut lat = Vec::new();
    let mut conn: Option<TcpStream> = None;
    let mut buf = vec![0u8; 4096];
    while stop.load(Ordering::Relaxed) == 0 {
        let t0 = Instant::now();
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = s.set_nodelay(true);
                    conn.insert(s)
                }
                Err(_) => {
                    lat.push(10_000.0);
                    continue;
                }
            },
        };
        let ok = s
            .write_all(b"GET /api/health HTTP/1.1\r\nHost: probe\r\n\r\n")
            .is_ok()
            && {
                // One small response: read until the blank line and the Content-Length body.
                let mut got = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break false,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break true;
                        }
                    }
                }
            };
        if ok {
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        } else {
            lat.push((t0.elapsed().as_secs_f64() * 1000.0).max(10_000.0));
            conn = None;
        }
        thread::sleep(Duration::from_millis(10));
    }
    lat
}

/// `n` copies of `req` on one connection, written by a thread (given up after 5 s blocked);
/// with `read`, another thread discards the answers.
fn abuse_pipeline(addr: SocketAddr, req: &[u8], n: usize, read: bool) -> Option<TcpStream> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    if read {
        let mut r = s.try_clone().ok()?;
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
    let mut w = s.try_clone().ok()?;
    let batch = req.repeat(100);
    let per = req.len();
    thread::spawn(move || {
        let mut sent = 0;
        while sent < n {
            let k = (n - sent).min(100);
            if w.write_all(&batch[..k * per]).is_err() {
                break;
            }
            sent += k;
        }
    });
    Some(s)
}

/// `n` connections that send `head` and all but the last byte of a `len`-byte body.
fn abuse_bodies(addr: SocketAddr, head: &str, len: usize, n: usize) -> Vec<TcpStream> {
    let chunk = vec![b'a'; 256 * 1024];
    let mut out = Vec::new();
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        if s.write_all(head.as_bytes()).is_ok() {
            let mut left = len - 1;
            while left > 0 {
                let k = left.min(chunk.len());
                if s.write_all(&chunk[..k]).is_err() {
                    break; // refused on its head: the relay stopped reading
                }
                left -= k;
            }
        }
        out.push(s);
    }
    out
}

/// A `/relay` upgrade whose first frame announces 64 MiB, followed by 4 MiB of it.
fn abuse_preauth(addr: SocketAddr, i: usize) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let up = format!(
        "GET /relay?id=abuse{i} HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(up.as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let mut frame = vec![0x81u8, 0xFF];
    frame.extend_from_slice(&(64u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    let _ = s.write_all(&frame);
    let _ = s.write_all(&vec![b'a'; 4 << 20]);
    Some(s)
}

// ---------------------------------------------------------------------------------------------
// Self-test of the pure helpers (run by `cargo test --all-targets`, which omits --bench)
// ---------------------------------------------------------------------------------------------

fn self_test() {
    // Response framing: (input split into pieces, expected (status, body length) list).
    type Case<'a> = (&'a [&'a [u8]], &'a [(u16, u64)]);
    let cases: &[Case] = &[
        (&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"], &[(200, 5)]),
        (&[b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 3\r\n\r\nab", b"c"], &[(200, 3)]),
        (&[b"HTTP/1.1 204 No Content\r\n\r\n"], &[(204, 0)]),
        (
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"],
            &[(200, 5)],
        ),
        (
            &[b"HTTP/1.1 400 Bad\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n", b"x"],
            &[(400, 2), (200, 1)],
        ),
        (&[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"], &[]),
    ];
    for (pieces, want) in cases {
        let mut rd = RespReader::default();
        let mut got = Vec::new();
        for p in pieces.iter() {
            assert!(rd.feed(p, &mut got).is_ok(), "feed failed on {pieces:?}");
        }
        assert_eq!(&got[..], *want, "framing of {pieces:?}");
    }
    assert!(RespReader::default()
        .feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            &mut Vec::new()
        )
        .is_err());

    // Server frames: (bytes, expected (opcode, payload, frame length)).
    let mut long = vec![0x81, 126, 0x01, 0x00];
    long.extend(std::iter::repeat_n(b'a', 256));
    type Frame<'a> = (&'a [u8], Option<(u8, usize, usize)>);
    let frames: &[Frame] = &[
        (&[0x81, 2, b'h', b'i'], Some((1, 2, 4))),
        (&[0x81, 3, b'h', b'i'], None),
        (&[0x89, 0], Some((9, 0, 2))),
        (&long, Some((1, 256, 260))),
        (&[0x81], None),
    ];
    for (bytes, want) in frames {
        let got = server_frame(bytes).map(|(op, r, len)| (op, r.len(), len));
        assert_eq!(got, *want, "frame {bytes:?}");
    }
    // A masked client frame unmasks back to its payload.
    let f = client_frame(1, b"subscribe");
    let key: Vec<u8> = f.get(2..6).map(<[u8]>::to_vec).unwrap_or_default();
    let plain: Vec<u8> = f
        .iter()
        .skip(6)
        .zip(key.iter().cycle())
        .map(|(b, k)| b ^ k)
        .collect();
    assert_eq!(plain, b"subscribe");

    let seqs: &[(&[u8], Option<u64>)] = &[
        (br#"{"data":{"id":"bench-42","content":"hi"}}"#, Some(42)),
        (b"event: chat-create\ndata: {\"id\":\"bench-7\"}", Some(7)),
        (br#"{"type":"snapshot"}"#, None),
        (br#"{"id":"bench-"}"#, None),
    ];
    for (bytes, want) in seqs {
        assert_eq!(find_seq(bytes), *want);
    }
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
    ] {
        assert_eq!(base64(input.as_bytes()), want);
    }
    assert_eq!(
        str_field(r#"{"type":"search","requestId":"r1"}"#, "requestId"),
        Some("r1")
    );
    assert_eq!(str_field(r#"{"type":"search"}"#, "requestId"), None);
    assert_eq!(
        status_field("VmHWM:\t  1234 kB\nVmRSS: 9 kB\n", "VmRSS"),
        Some(9)
    );

    use SubKind::{Sse, WsApi, WsEvents};
    let count = |v: &[SubKind], k: SubKind| v.iter().filter(|x| **x == k).count();
    let p = plan(&[Sse, WsApi, WsEvents], 1000);
    assert_eq!(
        (count(&p, Sse), count(&p, WsApi), count(&p, WsEvents)),
        (495, 10, 495)
    );
    let p = plan(&[WsApi], 1000);
    assert_eq!(p.len(), 10);
    let p = plan(&[Sse], 7);
    assert_eq!(count(&p, Sse), 7);
    let p = plan(&[WsApi, WsEvents], 3);
    assert_eq!((count(&p, WsApi), count(&p, WsEvents)), (1, 2));

    let mut h = Hist::new();
    for us in [5, 1, 3, 2, 4, 300_000] {
        h.record(us);
    }
    assert_eq!(h.quantile(0.5), Some(3));
    assert_eq!(h.quantile(0.99), Some(300_000));
    assert_eq!(Hist::new().quantile(0.5), None);
}
