//! `cargo bench --bench soak` (`make soak`): a long run of the release binary under mixed
//! load and low-rate abuse, watching for growth (ISSUE15 "Soak you can rerun").
//!
//! The harness provisions a data directory through the library (admin key, an all-scope API
//! key, a connection token), starts `fvtt-relay` on a loopback port and, for `SOAK_MINUTES`
//! (default 30; `SOAK_SECONDS` for quick runs), runs at once:
//!
//! - a simulated world on `/relay` that answers every request, pushes chat events, and
//!   reconnects every minute (alternately a clean close and a dropped socket);
//! - REST clients: keep-alive `GET /search`, paced, reconnecting every few hundred requests;
//! - a `/ws/api` client sending `search` requests over the WebSocket;
//! - subscribers over SSE, `/ws/api` and `/ws/events`, with one replaced every churn tick;
//! - abuse clients at a low rate, one kind after another: slowloris heads, slow POST bodies,
//!   pipelining without reading, half-open connections, garbage bytes, oversized heads, bodies
//!   and frames, and junk on `/relay` before authentication;
//! - a probe: one keep-alive connection timing a `GET /search` every 100 ms.
//!
//! Every 10 s it samples the relay's RSS and descriptors (`/proc/<pid>`) and its open
//! connections (`GET /metrics`, admin key). At the end it stops the load, waits for the
//! relay's connection count to fall back, writes `target/soak/report.json` and
//! `target/soak/soak.svg`, and exits non-zero when the verdict fails: growth of RSS or
//! descriptors (median of the last third of the samples after warm-up against the first
//! third), any request left unanswered, a probe p99 over 50 ms, or connections still open
//! after the load stopped.
//!
//! Threads are fine here: this is the load generator, not the relay.
//! `cargo test --all-targets` runs this binary without `--bench`: it then only checks its
//! own pure helpers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
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

/// The WebSocket key of every raw upgrade (RFC 6455 §4.1 only asks for 16 base64 bytes).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The id prefix of the world's chat events; subscribers count blocks that carry it.
const MARK: &[u8] = b"\"soak-";
/// A request with no answer after this long counts as unanswered (the relay's longest
/// forwarded-request timeout is 45 s; it must answer, with 408 at worst, before this).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// The verdict's probe latency bound (ISSUE15).
const PROBE_P99_MAX_MS: f64 = 50.0;
/// Growth allowed between the first and the last third of the samples after warm-up.
const RSS_GROWTH_MAX_KIB: u64 = 2048;
const RSS_GROWTH_MAX_PCT: f64 = 10.0;
const FD_GROWTH_MAX: u64 = 16;
const FD_GROWTH_MAX_PCT: f64 = 20.0;
/// Limits raised so that many clients from one loopback address are not refused as abuse;
/// every other limit keeps its default, which is what the abuse clients meet.
const RELAY_FLAGS: [&str; 14] = [
    "--max-connections-per-ip",
    "4096",
    "--ws-upgrade-rate-limit",
    "1000000",
    "--sse-max-per-channel",
    "1000",
    "--ws-api-max-subscriptions",
    "1000",
    "--log-level",
    "warn",
    "--pair-rate-limit",
    "1000",
    "--pair-request-rate-limit",
    "1000",
];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        self_test();
        return;
    }
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and orchestration
// ---------------------------------------------------------------------------------------------

/// Every knob of one soak run; recorded in the report.
struct Settings {
    duration: Duration,
    warmup: Duration,
    sample_every: Duration,
    world_cycle: Duration,
    world_event_interval: Duration,
    rest_clients: usize,
    rest_interval: Duration,
    rest_reconnect_every: u64,
    ws_api_interval: Duration,
    subscribers: usize,
    churn_every: Duration,
    probe_interval: Duration,
    abuse_every: Duration,
    abuse_hold: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let secs = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| *v > 0.0)
        };
        let duration = secs("SOAK_SECONDS")
            .or_else(|| secs("SOAK_MINUTES").map(|m| m * 60.0))
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(30 * 60));
        Settings {
            duration,
            // A fifth of the run, from 30 s (the subscriber pool takes 15 s to fill) to 5
            // minutes: buffers, allocator arenas and the event ring fill up before the
            // comparison starts.
            warmup: (duration / 5).clamp(Duration::from_secs(30), Duration::from_secs(300)),
            sample_every: Duration::from_secs(10),
            world_cycle: Duration::from_secs(60),
            world_event_interval: Duration::from_millis(50),
            rest_clients: 4,
            rest_interval: Duration::from_millis(10),
            rest_reconnect_every: 500,
            ws_api_interval: Duration::from_millis(20),
            subscribers: 60,
            churn_every: Duration::from_millis(250),
            probe_interval: Duration::from_millis(100),
            abuse_every: Duration::from_secs(2),
            abuse_hold: Duration::from_secs(30),
        }
    }

    fn json(&self) -> Value {
        let ms = |d: Duration| d.as_millis() as u64;
        json!({
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "sample_every_s": self.sample_every.as_secs_f64(),
            "world_reconnect_every_s": self.world_cycle.as_secs_f64(),
            "world_event_interval_ms": ms(self.world_event_interval),
            "rest_clients": self.rest_clients,
            "rest_interval_ms_per_client": ms(self.rest_interval),
            "rest_reconnect_every_requests": self.rest_reconnect_every,
            "ws_api_request_interval_ms": ms(self.ws_api_interval),
            "subscribers": self.subscribers,
            "subscriber_churn_every_ms": ms(self.churn_every),
            "probe_interval_ms": ms(self.probe_interval),
            "abuse_client_every_ms": ms(self.abuse_every),
            "abuse_client_max_hold_s": self.abuse_hold.as_secs_f64(),
            "relay_flags": RELAY_FLAGS.join(" "),
            "thresholds": {
                "rss_growth_max_kib": RSS_GROWTH_MAX_KIB,
                "rss_growth_max_pct": RSS_GROWTH_MAX_PCT,
                "fd_growth_max": FD_GROWTH_MAX,
                "fd_growth_max_pct": FD_GROWTH_MAX_PCT,
                "probe_p99_max_ms": PROBE_P99_MAX_MS,
                "answer_within_s": ANSWER_WITHIN.as_secs(),
            },
        })
    }
}

/// Where the relay is and the credentials every client uses.
#[derive(Clone)]
struct Env {
    addr: SocketAddr,
    key: String,
    admin: String,
    token: String,
    client_id: String,
}

/// Counters shared by the load threads; the sampler reads them.
#[derive(Default)]
struct Counters {
    rest_sent: AtomicU64,
    rest_ok: AtomicU64,
    rest_err_status: AtomicU64,
    rest_unanswered: AtomicU64,
    rest_conn_failures: AtomicU64,
    ws_api_sent: AtomicU64,
    ws_api_ok: AtomicU64,
    ws_api_err_reply: AtomicU64,
    ws_api_unanswered: AtomicU64,
    ws_api_conn_failures: AtomicU64,
    world_answered: AtomicU64,
    world_events: AtomicU64,
    world_connects: AtomicU64,
    world_connect_failures: AtomicU64,
    subs_opened: AtomicU64,
    subs_open_failed: AtomicU64,
    subs_closed_by_us: AtomicU64,
    subs_closed_by_relay: AtomicU64,
    sub_events: AtomicU64,
    probe_sent: AtomicU64,
    probe_unanswered: AtomicU64,
    probe_non_2xx: AtomicU64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Everything the load threads share.
struct Shared {
    env: Env,
    stop: AtomicBool,
    c: Counters,
    /// Probe latencies in µs since the last sample (the sampler takes them).
    probe_window: Mutex<Vec<u32>>,
    /// Outcomes of the abuse clients: kind -> outcome -> count.
    abuse: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    abuse_active: AtomicU64,
    /// Statuses of the REST answers (2xx included): what the non-2xx ones were.
    rest_status: Mutex<BTreeMap<u16, u64>>,
    /// Subscribers the relay closed: (transport, what it sent last, seconds open).
    subs_relay_closed: Mutex<Vec<(SubKind, String, f64)>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn abuse_outcome(&self, kind: &str, outcome: &str) {
        if let Ok(mut m) = self.abuse.lock() {
            *m.entry(kind.to_string())
                .or_default()
                .entry(outcome.to_string())
                .or_insert(0) += 1;
        }
    }
}

/// One sample of the relay every `sample_every`.
#[derive(Clone, Debug, Default)]
struct Row {
    t_s: f64,
    rss_kib: u64,
    fds: u64,
    connections: Option<u64>,
    cpu_pct: f64,
    rest_done: u64,
    sub_events: u64,
    abuse_active: u64,
    probe_n: usize,
    probe_p50_ms: Option<f64>,
    probe_p99_ms: Option<f64>,
    probe_max_ms: Option<f64>,
}

impl Row {
    fn json(&self) -> Value {
        json!({
            "t_s": round1(self.t_s),
            "rss_kib": self.rss_kib,
            "fds": self.fds,
            "connections": self.connections,
            "cpu_pct": round1(self.cpu_pct),
            "rest_done": self.rest_done,
            "sub_events": self.sub_events,
            "abuse_active": self.abuse_active,
            "probe_n": self.probe_n,
            "probe_p50_ms": self.probe_p50_ms.map(round3),
            "probe_p99_ms": self.probe_p99_ms.map(round3),
            "probe_max_ms": self.probe_max_ms.map(round3),
        })
    }
}

fn run() -> Res<bool> {
    let set = Settings::from_env();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target").join("soak");
    let dir = out.join("data");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let bin = relay_binary(&root)?;
    let (key, admin, token, client_id) = provision(&dir)?;
    let relay = RelayProc::start(&bin, &dir, &out)?;
    let env = Env {
        addr: relay.addr,
        key,
        admin,
        token,
        client_id,
    };
    eprintln!(
        "soak: relay pid {} on {}, running {:.0} s (warm-up {:.0} s), sampling every {:.0} s",
        relay.pid,
        relay.addr,
        set.duration.as_secs_f64(),
        set.warmup.as_secs_f64(),
        set.sample_every.as_secs_f64()
    );
    let shared = Arc::new(Shared {
        env: env.clone(),
        stop: AtomicBool::new(false),
        c: Counters::default(),
        probe_window: Mutex::new(Vec::new()),
        abuse: Mutex::new(BTreeMap::new()),
        abuse_active: AtomicU64::new(0),
        rest_status: Mutex::new(BTreeMap::new()),
        subs_relay_closed: Mutex::new(Vec::new()),
    });
    let started_unix_ms = unix_ms();
    // Taken now: the tree may be edited while a long run goes on.
    let commit = commit(&root);
    let idle_before = sample_idle(&relay, &env);

    let t0 = Instant::now();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .map_err(|e| format!("spawn {name}: {e}"))
    };
    {
        let (sh, cycle, every) = (shared.clone(), set.world_cycle, set.world_event_interval);
        threads.push(spawn(
            "world",
            Box::new(move || world_thread(&sh, cycle, every)),
        )?);
    }
    // Let the world attach before the clients that need it start.
    let attach_by = Instant::now() + Duration::from_secs(10);
    while get(&shared.c.world_connects) == 0 && Instant::now() < attach_by {
        thread::sleep(Duration::from_millis(20));
    }
    if get(&shared.c.world_connects) == 0 {
        shared.stop.store(true, Ordering::Relaxed);
        return Err("the simulated world could not attach".into());
    }
    for i in 0..set.rest_clients {
        let (sh, every, re) = (shared.clone(), set.rest_interval, set.rest_reconnect_every);
        threads.push(spawn(
            &format!("rest-{i}"),
            Box::new(move || rest_thread(&sh, every, re)),
        )?);
    }
    {
        let (sh, every) = (shared.clone(), set.ws_api_interval);
        threads.push(spawn(
            "ws-api",
            Box::new(move || ws_api_thread(&sh, every)),
        )?);
    }
    {
        let (sh, n, every) = (shared.clone(), set.subscribers, set.churn_every);
        threads.push(spawn("subs", Box::new(move || subs_thread(&sh, n, every)))?);
    }
    {
        let (sh, every) = (shared.clone(), set.probe_interval);
        threads.push(spawn("probe", Box::new(move || probe_thread(&sh, every)))?);
    }
    {
        let (sh, every, hold) = (shared.clone(), set.abuse_every, set.abuse_hold);
        threads.push(spawn(
            "abuse",
            Box::new(move || abuse_thread(&sh, every, hold)),
        )?);
    }

    // Sample until the end of the run.
    let mut rows = Vec::new();
    let mut probe_all: Vec<u32> = Vec::new();
    let mut last_ticks = cpu_ticks(relay.pid).unwrap_or(0);
    let mut last_at = Instant::now();
    let end = t0 + set.duration;
    let mut next = t0 + set.sample_every;
    let mut relay_died = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        thread::sleep(next.min(end).saturating_duration_since(now));
        if Instant::now() < next {
            continue;
        }
        next += set.sample_every;
        if !relay.alive() {
            relay_died = Some(t0.elapsed().as_secs_f64());
            break;
        }
        let mut window = shared
            .probe_window
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        probe_all.extend_from_slice(&window);
        let ticks = cpu_ticks(relay.pid).unwrap_or(last_ticks);
        let wall = last_at.elapsed().as_secs_f64();
        last_at = Instant::now();
        let row = Row {
            t_s: t0.elapsed().as_secs_f64(),
            rss_kib: proc_status_kib(relay.pid, "VmRSS").unwrap_or(0),
            fds: fd_count(relay.pid).unwrap_or(0),
            connections: metrics_connections(&env),
            cpu_pct: (ticks.saturating_sub(last_ticks)) as f64 / CLK_TCK / wall.max(1e-9) * 100.0,
            rest_done: get(&shared.c.rest_ok) + get(&shared.c.rest_err_status),
            sub_events: get(&shared.c.sub_events),
            abuse_active: get(&shared.abuse_active),
            probe_n: window.len(),
            probe_p50_ms: quantile_ms(&mut window, 0.50),
            probe_p99_ms: quantile_ms(&mut window, 0.99),
            probe_max_ms: window.iter().max().map(|&us| us as f64 / 1000.0),
        };
        last_ticks = ticks;
        eprintln!(
            "soak: t={:>6.0}s rss={} KiB fds={} conns={} cpu={:.0}% rest={} events={} probe p99={} ms",
            row.t_s,
            row.rss_kib,
            row.fds,
            row.connections.map_or("?".into(), |c| c.to_string()),
            row.cpu_pct,
            row.rest_done,
            row.sub_events,
            row.probe_p99_ms.map_or("-".into(), |v| format!("{v:.2}"))
        );
        rows.push(row);
    }

    // Stop the load and wait for the clients (each bounded by ANSWER_WITHIN or its hold).
    shared.stop.store(true, Ordering::Relaxed);
    let join_by = Instant::now() + ANSWER_WITHIN + Duration::from_secs(10);
    for h in threads {
        while !h.is_finished() && Instant::now() < join_by {
            thread::sleep(Duration::from_millis(20));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    if let Ok(mut w) = shared.probe_window.lock() {
        probe_all.append(&mut w);
    }
    // After the load: every client has closed its sockets; the relay should be back to
    // what it held before (the metrics connection of the reading itself aside).
    let quiesce_by = Instant::now() + Duration::from_secs(20);
    let mut after = sample_idle(&relay, &env);
    while relay.alive() && Instant::now() < quiesce_by {
        if after
            .connections
            .is_some_and(|c| c <= idle_before.connections.unwrap_or(1))
        {
            break;
        }
        thread::sleep(Duration::from_millis(500));
        after = sample_idle(&relay, &env);
    }
    if relay_died.is_none() && !relay.alive() {
        relay_died = Some(t0.elapsed().as_secs_f64());
    }
    let relay_log = fs::read_to_string(out.join("relay.log")).unwrap_or_default();
    drop(relay);

    let verdict = verdict(
        &set,
        &rows,
        &mut probe_all,
        &shared.c,
        &idle_before,
        &after,
        relay_died,
    );
    let report = report_json(
        &set,
        &commit,
        started_unix_ms,
        &rows,
        &shared,
        &idle_before,
        &after,
        &verdict,
        &relay_log,
    );
    let json_path = out.join("report.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    fs::write(&json_path, text + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    let svg_path = out.join("soak.svg");
    fs::write(&svg_path, svg(&rows, &verdict))
        .map_err(|e| format!("{}: {e}", svg_path.display()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report["summary"]).unwrap_or_default()
    );
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    for f in &verdict.failures {
        println!("soak: FAIL: {f}");
    }
    println!("soak: {}", if verdict.pass() { "PASS" } else { "FAIL" });
    Ok(verdict.pass())
}

/// The relay's RSS, descriptors and connections with no load running.
fn sample_idle(relay: &RelayProc, env: &Env) -> Row {
    Row {
        rss_kib: proc_status_kib(relay.pid, "VmRSS").unwrap_or(0),
        fds: fd_count(relay.pid).unwrap_or(0),
        connections: metrics_connections(env),
        ..Row::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Verdict and report
// ---------------------------------------------------------------------------------------------

struct Verdict {
    failures: Vec<String>,
    summary: Value,
}

impl Verdict {
    fn pass(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Median of the first and of the last third of `values` (those sampled after warm-up).
fn thirds(values: &[u64]) -> Option<(u64, u64)> {
    if values.len() < 3 {
        return None;
    }
    let n = values.len() / 3;
    let median = |s: &[u64]| {
        let mut v = s.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    Some((
        median(values.get(..n)?)?,
        median(values.get(values.len() - n..)?)?,
    ))
}

/// Growth from `first` to `last` beyond both an absolute and a relative allowance.
fn grew(first: u64, last: u64, max_abs: u64, max_pct: f64) -> bool {
    let allowed = max_abs.max((first as f64 * max_pct / 100.0) as u64);
    last > first.saturating_add(allowed)
}

fn verdict(
    set: &Settings,
    rows: &[Row],
    probe: &mut [u32],
    c: &Counters,
    before: &Row,
    after: &Row,
    relay_died: Option<f64>,
) -> Verdict {
    let mut failures = Vec::new();
    if let Some(t) = relay_died {
        failures.push(format!("the relay process exited at t={t:.0} s"));
    }
    let warm = set.warmup.as_secs_f64();
    let steady: Vec<&Row> = rows.iter().filter(|r| r.t_s >= warm).collect();
    let rss: Vec<u64> = steady.iter().map(|r| r.rss_kib).collect();
    let fds: Vec<u64> = steady.iter().map(|r| r.fds).collect();
    let rss_thirds = thirds(&rss);
    let fd_thirds = thirds(&fds);
    match rss_thirds {
        Some((a, b)) if grew(a, b, RSS_GROWTH_MAX_KIB, RSS_GROWTH_MAX_PCT) => {
            failures.push(format!(
                "RSS grew: median {a} KiB in the first third after warm-up, {b} KiB in the last"
            ))
        }
        Some(_) => {}
        None => failures.push("too few samples after warm-up to judge growth".into()),
    }
    if let Some((a, b)) = fd_thirds {
        if grew(a, b, FD_GROWTH_MAX, FD_GROWTH_MAX_PCT) {
            failures.push(format!(
                "descriptors grew: median {a} in the first third after warm-up, {b} in the last"
            ));
        }
    }
    let unanswered = get(&c.rest_unanswered) + get(&c.ws_api_unanswered) + get(&c.probe_unanswered);
    if unanswered > 0 {
        failures.push(format!(
            "{unanswered} requests unanswered within {} s (REST {}, /ws/api {}, probe {})",
            ANSWER_WITHIN.as_secs(),
            get(&c.rest_unanswered),
            get(&c.ws_api_unanswered),
            get(&c.probe_unanswered)
        ));
    }
    let p50 = quantile_ms(probe, 0.50);
    let p99 = quantile_ms(probe, 0.99);
    let pmax = probe.iter().max().map(|&us| us as f64 / 1000.0);
    match p99 {
        Some(p) if p > PROBE_P99_MAX_MS => {
            failures.push(format!("probe p99 {p:.2} ms is over {PROBE_P99_MAX_MS} ms"))
        }
        Some(_) => {}
        None => failures.push("the probe got no answer at all".into()),
    }
    let base = before.connections.unwrap_or(1);
    match after.connections {
        Some(n) if n > base => failures.push(format!(
            "{n} connections still open 20 s after the load stopped (before the load: {base})"
        )),
        Some(_) => {}
        None => failures.push("GET /metrics did not answer after the load".into()),
    }
    let max_rss = rows.iter().map(|r| r.rss_kib).max();
    let max_fds = rows.iter().map(|r| r.fds).max();
    let max_conns = rows.iter().filter_map(|r| r.connections).max();
    let summary = json!({
        "pass": failures.is_empty(),
        "failures": failures,
        "duration_s": round1(rows.last().map_or(0.0, |r| r.t_s)),
        "samples": rows.len(),
        "rss_kib": {
            "idle_before": before.rss_kib,
            "first_sample": rows.first().map(|r| r.rss_kib),
            "last_sample": rows.last().map(|r| r.rss_kib),
            "max": max_rss,
            "after_load": after.rss_kib,
            "median_first_third_after_warmup": rss_thirds.map(|t| t.0),
            "median_last_third_after_warmup": rss_thirds.map(|t| t.1),
        },
        "fds": {
            "idle_before": before.fds,
            "first_sample": rows.first().map(|r| r.fds),
            "last_sample": rows.last().map(|r| r.fds),
            "max": max_fds,
            "after_load": after.fds,
            "median_first_third_after_warmup": fd_thirds.map(|t| t.0),
            "median_last_third_after_warmup": fd_thirds.map(|t| t.1),
        },
        "connections": {
            "idle_before": before.connections,
            "max": max_conns,
            "after_load": after.connections,
        },
        "requests": {
            "rest_sent": get(&c.rest_sent),
            "rest_2xx": get(&c.rest_ok),
            "rest_other_status": get(&c.rest_err_status),
            "rest_unanswered": get(&c.rest_unanswered),
            "rest_connect_failures": get(&c.rest_conn_failures),
            "ws_api_sent": get(&c.ws_api_sent),
            "ws_api_ok": get(&c.ws_api_ok),
            "ws_api_error_reply": get(&c.ws_api_err_reply),
            "ws_api_unanswered": get(&c.ws_api_unanswered),
            "ws_api_connect_failures": get(&c.ws_api_conn_failures),
            "probe_sent": get(&c.probe_sent),
            "probe_non_2xx": get(&c.probe_non_2xx),
            "probe_unanswered": get(&c.probe_unanswered),
            "unanswered_total": unanswered,
        },
        "world": {
            "connects": get(&c.world_connects),
            "connect_failures": get(&c.world_connect_failures),
            "answered": get(&c.world_answered),
            "events_sent": get(&c.world_events),
        },
        "subscribers": {
            "opened": get(&c.subs_opened),
            "open_failed": get(&c.subs_open_failed),
            "closed_by_us": get(&c.subs_closed_by_us),
            "closed_by_relay": get(&c.subs_closed_by_relay),
            "events_received": get(&c.sub_events),
        },
        "probe_ms": {
            "n": probe.len(),
            "p50": p50.map(round3),
            "p99": p99.map(round3),
            "max": pmax.map(round3),
        },
    });
    Verdict { failures, summary }
}

#[allow(clippy::too_many_arguments)]
fn report_json(
    set: &Settings,
    commit: &str,
    started_unix_ms: u64,
    rows: &[Row],
    shared: &Shared,
    before: &Row,
    after: &Row,
    verdict: &Verdict,
    relay_log: &str,
) -> Value {
    let abuse = shared.abuse.lock().map(|m| m.clone()).unwrap_or_default();
    // The relay logs at warn: its last lines say what it refused or closed, if anything.
    let log_tail: Vec<&str> = relay_log.lines().rev().take(20).collect();
    json!({
        "machine": machine(),
        "commit": commit,
        "started_unix_ms": started_unix_ms,
        "settings": set.json(),
        "summary": verdict.summary,
        "idle_before": before.json(),
        "after_load": after.json(),
        "abuse": abuse,
        "subscribers_closed_by_relay": subs_closed_json(shared),
        "rest_statuses": shared
            .rest_status
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>())
            .unwrap_or_default(),
        "relay_log_lines": relay_log.lines().count(),
        "relay_log_tail": log_tail.into_iter().rev().collect::<Vec<_>>(),
        "samples": rows.iter().map(Row::json).collect::<Vec<_>>(),
    })
}

/// Subscribers the relay closed, counted by transport and what it sent last, with their ages.
fn subs_closed_json(shared: &Shared) -> Value {
    let list = shared
        .subs_relay_closed
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let mut by: BTreeMap<String, (u64, f64, f64)> = BTreeMap::new();
    for (kind, why, age) in list {
        let e = by
            .entry(format!("{}: {why}", kind.name()))
            .or_insert((0, f64::MAX, 0.0));
        e.0 += 1;
        e.1 = e.1.min(age);
        e.2 = e.2.max(age);
    }
    by.into_iter()
        .map(|(k, (n, lo, hi))| {
            (
                k,
                json!({"count": n, "min_open_s": round1(lo), "max_open_s": round1(hi)}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

// ---------------------------------------------------------------------------------------------
// SVG plot (hand-written: four panels over time)
// ---------------------------------------------------------------------------------------------

/// One plotted line: its name, its colour and its (t_s, value) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// One panel: a title and up to three series.
struct Panel<'a> {
    title: &'a str,
    series: Vec<Series<'a>>,
    /// A horizontal limit line (the probe's 50 ms), if any.
    limit: Option<f64>,
    /// A logarithmic value axis, one grid line per decade.
    log: bool,
}

fn svg(rows: &[Row], verdict: &Verdict) -> String {
    let pts = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| Some((r.t_s, f(r)?))).collect()
    };
    let panels = [
        Panel {
            title: "relay RSS (MiB)",
            series: vec![("RSS", "#1f77b4", pts(&|r| Some(r.rss_kib as f64 / 1024.0)))],
            limit: None,
            log: false,
        },
        Panel {
            title: "relay descriptors and open connections",
            series: vec![
                ("fds", "#2ca02c", pts(&|r| Some(r.fds as f64))),
                (
                    "connections",
                    "#ff7f0e",
                    pts(&|r| r.connections.map(|c| c as f64)),
                ),
            ],
            limit: None,
            log: false,
        },
        Panel {
            title: "probe latency per 10 s window (ms, log scale)",
            series: vec![
                ("p50", "#1f77b4", pts(&|r| r.probe_p50_ms)),
                ("p99", "#d62728", pts(&|r| r.probe_p99_ms)),
                ("max", "#bbbbbb", pts(&|r| r.probe_max_ms)),
            ],
            limit: Some(PROBE_P99_MAX_MS),
            // p50 sits near 0.2 ms and the tail near 50: only a log axis shows both.
            log: true,
        },
        Panel {
            title: "relay CPU (%)",
            series: vec![("cpu", "#9467bd", pts(&|r| Some(r.cpu_pct)))],
            limit: None,
            log: false,
        },
    ];
    let (w, ph, left, right, top) = (900.0, 170.0, 70.0, 20.0, 40.0);
    let gap = 45.0;
    let height = top + panels.len() as f64 * (ph + gap) + 10.0;
    let t_max = rows.last().map_or(1.0, |r| r.t_s).max(1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let status = if verdict.pass() { "PASS" } else { "FAIL" };
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="15" font-weight="bold">fvtt-relay soak: {status}, {} min, sampled every 10 s</text>"#,
        tick((t_max / 6.0).round() / 10.0)
    );
    for (i, p) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (ph + gap) + 18.0;
        let pw = w - left - right;
        let v_max = p
            .series
            .iter()
            .flat_map(|(_, _, v)| v.iter().map(|(_, y)| *y))
            .chain(p.limit)
            .fold(0.0f64, f64::max);
        let v_min = p
            .series
            .iter()
            .flat_map(|(_, _, v)| v.iter().map(|(_, y)| *y))
            .filter(|v| *v > 0.0)
            .fold(f64::MAX, f64::min);
        // Linear: 0 to a round top. Log: whole decades around the data.
        let (lo, hi) = if p.log {
            let lo = if v_min == f64::MAX { 0.1 } else { v_min };
            (lo.log10().floor(), v_max.max(lo * 10.0).log10().ceil())
        } else {
            (0.0, nice_ceiling(v_max))
        };
        let x = |t: f64| left + t / t_max * pw;
        let frac = |v: f64| {
            if p.log {
                (v.max(1e-9).log10() - lo) / (hi - lo).max(1e-9)
            } else {
                v / hi
            }
        };
        let y = |v: f64| y0 + ph - frac(v).clamp(0.0, 1.0) * ph;
        let grid: Vec<f64> = if p.log {
            (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=4).map(|k| hi * k as f64 / 4.0).collect()
        };
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="{}" font-weight="bold">{}</text>"#,
            y0 - 6.0,
            p.title
        );
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
        );
        for v in grid {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 5.0,
                yy + 4.0,
                tick(v)
            );
        }
        let step = minute_step(t_max);
        let mut m = 0.0;
        while m * 60.0 <= t_max + 0.1 {
            let xx = x(m * 60.0);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" y1="{}" x2="{xx:.1}" y2="{:.1}" stroke="#888"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{} min</text>"##,
                y0 + ph,
                y0 + ph + 4.0,
                y0 + ph + 16.0,
                tick(m)
            );
            m += step;
        }
        if let Some(l) = p.limit {
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}" fill="#d62728" text-anchor="end">limit {l} ms</text>"##,
                y(l),
                left + pw,
                y(l),
                left + pw - 4.0,
                y(l) - 4.0
            );
        }
        let mut legend_x = left + pw;
        for (name, color, v) in p.series.iter().rev() {
            let line: Vec<String> = v
                .iter()
                .map(|&(t, val)| format!("{:.1},{:.1}", x(t), y(val)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                line.join(" ")
            );
            legend_x -= 90.0;
            let _ = writeln!(
                s,
                r#"<rect x="{legend_x:.1}" y="{:.1}" width="12" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
                y0 - 12.0,
                legend_x + 16.0,
                y0 - 6.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn minute_step(t_max_s: f64) -> f64 {
    let minutes = t_max_s / 60.0;
    [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0]
        .into_iter()
        .find(|s| minutes / s <= 10.0)
        .unwrap_or(120.0)
}

fn tick(v: f64) -> String {
    // f64's Display is the shortest form that reads back: 0.001, 2.5, 1000.
    format!("{}", (v * 1000.0).round() / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// The simulated world
// ---------------------------------------------------------------------------------------------

/// Search results as a real dnd5e world returns them (spec/examples/search-examples.json).
const SEARCH_RESULTS: &str = r#""query":"goblin","results":[{"documentType":"Actor","folder":null,"id":"w8wIGpE73y2AYrCo","name":"Goblin Boss","package":null,"packageName":null,"subType":"npc","uuid":"Actor.w8wIGpE73y2AYrCo","icon":"systems/dnd5e/tokens/humanoid/GoblinBoss.webp","journalLink":"@UUID[Actor.w8wIGpE73y2AYrCo]{Goblin Boss}","tagline":"Actors Directory","formattedMatch":"<strong>Goblin</strong> Boss","resultType":"WorldEntity"}]"#;

type Ws = tungstenite::WebSocket<TcpStream>;

/// Attach a world over `/relay` with the module's first-message auth.
fn world_attach(env: &Env) -> Res<Ws> {
    let stream = TcpStream::connect(env.addr).map_err(|e| format!("world connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let url = format!(
        "ws://{}/relay?id={}&worldId=soak&worldTitle=Soak&foundryVersion=13.345\
         &systemId=dnd5e&systemTitle=DnD5e&systemVersion=5.1.2",
        env.addr, env.client_id
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
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(5)))
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The world: answers requests, pushes a chat event every `every`, and every `cycle` leaves
/// and comes back (odd cycles with a close frame, even ones by dropping the socket, as a
/// browser reload does).
fn world_thread(sh: &Shared, cycle: Duration, every: Duration) {
    let mut seq = 0u64;
    let mut round = 0u64;
    while !sh.stopped() {
        let mut ws = match world_attach(&sh.env) {
            Ok(ws) => ws,
            Err(e) => {
                add(&sh.c.world_connect_failures);
                eprintln!("soak: {e}");
                thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        add(&sh.c.world_connects);
        round += 1;
        let leave_at = Instant::now() + cycle;
        let mut next_event = Instant::now() + every;
        let alive = loop {
            if sh.stopped() || Instant::now() >= leave_at {
                break true;
            }
            if Instant::now() >= next_event {
                next_event += every;
                seq += 1;
                let ev = format!(
                    r#"{{"type":"chat-event","data":{{"eventType":"create","data":{{"id":"soak-{seq}","content":"hi"}}}}}}"#
                );
                if ws.send(Message::text(ev)).is_err() {
                    break false;
                }
                add(&sh.c.world_events);
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    let text = t.as_str();
                    let (Some(ty), Some(id)) =
                        (str_field(text, "type"), str_field(text, "requestId"))
                    else {
                        continue; // event-subscription-update, pong: nothing to answer
                    };
                    let reply =
                        format!(r#"{{"type":"{ty}-result","requestId":"{id}",{SEARCH_RESULTS}}}"#);
                    if ws.send(Message::text(reply)).is_err() {
                        break false;
                    }
                    add(&sh.c.world_answered);
                }
                Ok(Message::Close(_)) => break false,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break false,
            }
        };
        if alive && round % 2 == 1 {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
        drop(ws);
        // The module waits a moment before reconnecting.
        if !sh.stopped() {
            thread::sleep(Duration::from_millis(300));
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

// ---------------------------------------------------------------------------------------------
// REST clients and the probe
// ---------------------------------------------------------------------------------------------

/// One keep-alive HTTP connection that sends a request and waits for its answer.
struct HttpClient {
    s: TcpStream,
    rd: RespReader,
    buf: Vec<u8>,
}

enum Answer {
    Status(u16),
    /// The relay closed the connection (or the write failed) before an answer came.
    Closed,
    /// No answer within ANSWER_WITHIN.
    Unanswered,
}

impl HttpClient {
    fn connect(addr: SocketAddr) -> Res<HttpClient> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        Ok(HttpClient {
            s,
            rd: RespReader::default(),
            buf: vec![0; 16 * 1024],
        })
    }

    fn request(&mut self, req: &[u8]) -> Answer {
        if self.s.write_all(req).is_err() {
            return Answer::Closed;
        }
        let sent = Instant::now();
        let mut done = Vec::new();
        loop {
            if sent.elapsed() >= ANSWER_WITHIN {
                return Answer::Unanswered;
            }
            match self.s.read(&mut self.buf) {
                Ok(0) => return Answer::Closed,
                Ok(n) => {
                    if self
                        .rd
                        .feed(self.buf.get(..n).unwrap_or(&[]), &mut done)
                        .is_err()
                    {
                        return Answer::Closed;
                    }
                    if let Some(&(status, _)) = done.first() {
                        return Answer::Status(status);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Answer::Closed,
            }
        }
    }
}

fn search_request(env: &Env) -> Vec<u8> {
    format!(
        "GET /search?query=goblin&clientId={} HTTP/1.1\r\nHost: {}\r\nx-api-key: {}\r\nAccept: */*\r\n\r\n",
        env.client_id, env.addr, env.key
    )
    .into_bytes()
}

/// A paced keep-alive client: one `GET /search` every `every`, a new connection every
/// `reconnect_every` requests (or when the relay closes one).
fn rest_thread(sh: &Shared, every: Duration, reconnect_every: u64) {
    let req = search_request(&sh.env);
    let mut conn: Option<HttpClient> = None;
    let mut on_conn = 0u64;
    let mut next = Instant::now();
    while !sh.stopped() {
        pace(&mut next, every);
        if conn.is_none() || on_conn >= reconnect_every {
            on_conn = 0;
            conn = match HttpClient::connect(sh.env.addr) {
                Ok(c) => Some(c),
                Err(_) => {
                    add(&sh.c.rest_conn_failures);
                    continue;
                }
            };
        }
        let Some(c) = conn.as_mut() else { continue };
        add(&sh.c.rest_sent);
        on_conn += 1;
        match c.request(&req) {
            Answer::Status(s) => {
                if (200..300).contains(&s) {
                    add(&sh.c.rest_ok);
                } else {
                    add(&sh.c.rest_err_status);
                }
                if let Ok(mut m) = sh.rest_status.lock() {
                    *m.entry(s).or_insert(0) += 1;
                }
            }
            // The relay must answer (an error at worst) before it closes a keep-alive
            // connection with a request in flight: a close without an answer counts too.
            Answer::Closed => {
                add(&sh.c.rest_unanswered);
                conn = None;
            }
            Answer::Unanswered => {
                add(&sh.c.rest_unanswered);
                conn = None;
            }
        }
    }
}

/// Sleep until `next`, then move `next` on by `every` (never bursting to catch up).
fn pace(next: &mut Instant, every: Duration) {
    let now = Instant::now();
    if *next > now {
        thread::sleep(*next - now);
    }
    *next = (*next + every).max(Instant::now());
}

/// The probe: one keep-alive connection, one `GET /search` every `every`, each latency
/// recorded for the sampler.
fn probe_thread(sh: &Shared, every: Duration) {
    let req = search_request(&sh.env);
    let mut conn: Option<HttpClient> = None;
    let mut next = Instant::now();
    while !sh.stopped() {
        pace(&mut next, every);
        if conn.is_none() {
            conn = HttpClient::connect(sh.env.addr).ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        add(&sh.c.probe_sent);
        let t = Instant::now();
        match c.request(&req) {
            Answer::Status(s) => {
                let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if let Ok(mut w) = sh.probe_window.lock() {
                    w.push(us);
                }
                if !(200..300).contains(&s) {
                    add(&sh.c.probe_non_2xx);
                }
            }
            Answer::Closed | Answer::Unanswered => {
                add(&sh.c.probe_unanswered);
                conn = None;
            }
        }
    }
}

/// `/ws/api` requests: `search` over the client WebSocket, one every `every`, each matched
/// to its reply by requestId. Reconnects when the relay closes the socket.
fn ws_api_thread(sh: &Shared, every: Duration) {
    let mut next = Instant::now();
    let mut n = 0u64;
    while !sh.stopped() {
        let mut ws = match ws_api_connect(&sh.env) {
            Ok(ws) => ws,
            Err(_) => {
                // The world may be between two connections: /ws/api auth needs it online.
                add(&sh.c.ws_api_conn_failures);
                thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        while !sh.stopped() {
            pace(&mut next, every);
            n += 1;
            let id = format!("soak-req-{n}");
            let msg = format!(r#"{{"type":"search","requestId":"{id}","query":"goblin"}}"#);
            if ws.send(Message::text(msg)).is_err() {
                add(&sh.c.ws_api_conn_failures);
                break;
            }
            add(&sh.c.ws_api_sent);
            let sent = Instant::now();
            let mut answered = None;
            while answered.is_none() && sent.elapsed() < ANSWER_WITHIN {
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        let text = t.as_str();
                        if str_field(text, "requestId") == Some(id.as_str()) {
                            answered = Some(!text.contains("\"error\""));
                        }
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            match answered {
                Some(true) => add(&sh.c.ws_api_ok),
                Some(false) => add(&sh.c.ws_api_err_reply),
                None => {
                    add(&sh.c.ws_api_unanswered);
                    break;
                }
            }
        }
        let _ = ws.close(None);
        let _ = ws.flush();
    }
}

fn ws_api_connect(env: &Env) -> Res<Ws> {
    let stream = TcpStream::connect(env.addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let url = format!("ws://{}/ws/api", env.addr);
    let (mut ws, _) =
        tungstenite::client::client(url.as_str(), stream).map_err(|e| format!("upgrade: {e}"))?;
    let auth = format!(
        r#"{{"type":"auth","token":"{}","clientId":"{}"}}"#,
        env.key, env.client_id
    );
    ws.send(Message::text(auth)).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str().contains("\"connected\"") => return Ok(ws),
            Ok(Message::Close(c)) => return Err(format!("refused: {c:?}")),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("no welcome within 5 s".into())
}

// ---------------------------------------------------------------------------------------------
// Subscribers with churn
// ---------------------------------------------------------------------------------------------

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

struct Sub {
    kind: SubKind,
    s: mio::net::TcpStream,
    buf: Vec<u8>,
    opened: Instant,
    /// The close frame's code and reason, once the relay sent one.
    close: Option<String>,
}

/// Keeps `n` subscribers open over the three transports, reads them with one mio loop, and
/// every `churn` replaces one (a WebSocket one alternately with a close frame and by
/// dropping the socket).
fn subs_thread(sh: &Shared, n: usize, churn: Duration) {
    let Ok(mut poll) = Poll::new() else { return };
    let mut events = Events::with_capacity(256);
    let mut subs: HashMap<usize, Sub> = HashMap::new();
    let mut next_token = 0usize;
    let mut rng = Rng::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let kinds = [SubKind::Sse, SubKind::WsApi, SubKind::WsEvents];
    let mut next_churn = Instant::now();
    let mut opened = 0usize;
    while !sh.stopped() {
        if Instant::now() >= next_churn {
            next_churn += churn;
            // Replace one (once the pool is full), then top the pool up by one.
            if subs.len() >= n {
                let keys: Vec<usize> = subs.keys().copied().collect();
                if let Some(&k) = keys.get(rng.below(keys.len())) {
                    if let Some(mut sub) = subs.remove(&k) {
                        let _ = poll.registry().deregister(&mut sub.s);
                        if sub.kind != SubKind::Sse && rng.below(2) == 0 {
                            let _ = sub.s.write(&client_frame(0x8, &1000u16.to_be_bytes()));
                        }
                        add(&sh.c.subs_closed_by_us);
                    }
                }
            }
            if subs.len() < n {
                let kind = kinds[opened % kinds.len()];
                opened += 1;
                match open_sub(&sh.env, kind) {
                    Ok((std, buf)) => {
                        if std.set_nonblocking(true).is_ok() {
                            let mut s = mio::net::TcpStream::from_std(std);
                            let token = next_token;
                            next_token += 1;
                            if poll
                                .registry()
                                .register(&mut s, Token(token), Interest::READABLE)
                                .is_ok()
                            {
                                let sub = Sub {
                                    kind,
                                    s,
                                    buf,
                                    opened: Instant::now(),
                                    close: None,
                                };
                                subs.insert(token, sub);
                                add(&sh.c.subs_opened);
                                consume(sh, subs.get_mut(&token));
                            }
                        }
                    }
                    Err(_) => add(&sh.c.subs_open_failed),
                }
            }
        }
        let wait = next_churn.saturating_duration_since(Instant::now());
        if poll.poll(&mut events, Some(wait)).is_err() {
            continue;
        }
        for ev in events.iter() {
            let k = ev.token().0;
            let mut closed = false;
            if let Some(sub) = subs.get_mut(&k) {
                loop {
                    match sub.s.read(&mut tmp) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => {
                            sub.buf.extend_from_slice(tmp.get(..n).unwrap_or(&[]));
                            consume(sh, Some(sub));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            if closed {
                if let Some(mut sub) = subs.remove(&k) {
                    let _ = poll.registry().deregister(&mut sub.s);
                    add(&sh.c.subs_closed_by_relay);
                    let why = sub.close.take().unwrap_or_else(|| "EOF".into());
                    let age = sub.opened.elapsed().as_secs_f64();
                    if let Ok(mut v) = sh.subs_relay_closed.lock() {
                        v.push((sub.kind, why, age));
                    }
                }
            }
        }
    }
}

/// Count the complete events buffered for a subscriber; answer WebSocket pings.
fn consume(sh: &Shared, sub: Option<&mut Sub>) {
    let Some(sub) = sub else { return };
    let mut used = 0;
    let mut pongs = Vec::new();
    loop {
        let rest = sub.buf.get(used..).unwrap_or(&[]);
        match sub.kind {
            SubKind::Sse => {
                let Some(end) = find(rest, b"\n\n") else {
                    break;
                };
                if find(rest.get(..end).unwrap_or(&[]), MARK).is_some() {
                    add(&sh.c.sub_events);
                }
                used += end + 2;
            }
            SubKind::WsApi | SubKind::WsEvents => {
                let Some((op, range, len)) = server_frame(rest) else {
                    break;
                };
                let payload = rest.get(range).unwrap_or(&[]);
                match op {
                    0x1 | 0x2 if find(payload, MARK).is_some() => add(&sh.c.sub_events),
                    0x9 => pongs.push(client_frame(0xA, payload)),
                    // RFC 6455 §5.5.1: a two-byte code, then a UTF-8 reason.
                    0x8 => {
                        let code = payload
                            .get(..2)
                            .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                        sub.close = Some(format!("close {code} {reason}"));
                    }
                    _ => {}
                }
                used += len;
            }
        }
    }
    sub.buf.drain(..used.min(sub.buf.len()));
    for p in pongs {
        let _ = sub.s.write(&p);
    }
}

/// Open a subscriber with a blocking handshake; bytes read past the head are returned.
fn open_sub(env: &Env, kind: SubKind) -> Res<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(env.addr).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let host = env.addr.to_string();
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
            br#"{"type":"subscribe","channel":"chat-events","requestId":"soak"}"#.to_vec(),
        ],
        SubKind::WsEvents => vec![br#"{"type":"subscribe","events":["all"]}"#.to_vec()],
    };
    for m in first {
        s.write_all(&client_frame(0x1, &m))
            .map_err(|e| format!("write: {e}"))?;
    }
    Ok((s, rest))
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
            return Ok((status_of(&buf), buf.split_off(end + 4)));
        }
    }
    Err("response head too large".into())
}

/// The status code of an HTTP/1.x status line at the start of `buf` (0 when there is none).
fn status_of(buf: &[u8]) -> u16 {
    if !buf.starts_with(b"HTTP/1.") {
        return 0;
    }
    buf.get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Abuse clients
// ---------------------------------------------------------------------------------------------

/// The kinds ISSUE15 lists, started one after another.
const ABUSE: [&str; 10] = [
    "slowloris-head",
    "slow-post-body",
    "pipeline-no-read",
    "half-open",
    "garbage-bytes",
    "oversized-head",
    "oversized-body",
    "oversized-ws-frame",
    "relay-junk-before-auth",
    "silent-connection",
];

/// Requests the `pipeline-no-read` client writes. The relay at commit 84d967d keeps every
/// answer queued while the client does not read (about 0.5 KB each: 200,000 took its RSS
/// from 3.5 to 97 MB, released only at close), so this is kept to a size the run survives.
const PIPELINED: usize = 10_000;

/// Starts one abuse client every `every`, each in its own thread and bounded by `hold`.
fn abuse_thread(sh: &Arc<Shared>, every: Duration, hold: Duration) {
    let mut next = Instant::now() + every;
    let mut i = 0usize;
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    while !sh.stopped() {
        pace(&mut next, every);
        if sh.stopped() {
            break;
        }
        running.retain(|h| !h.is_finished());
        let kind = ABUSE[i % ABUSE.len()];
        i += 1;
        let sh2 = sh.clone();
        let spawned = thread::Builder::new()
            .name(format!("abuse-{kind}"))
            .spawn(move || {
                sh2.abuse_active.fetch_add(1, Ordering::Relaxed);
                let outcome = abuse_one(&sh2, kind, hold).unwrap_or_else(|e| format!("error: {e}"));
                sh2.abuse_outcome(kind, &outcome);
                sh2.abuse_active.fetch_sub(1, Ordering::Relaxed);
            });
        if let Ok(h) = spawned {
            running.push(h);
        }
    }
    for h in running {
        let _ = h.join();
    }
}

/// Wait (bounded by `until` and the stop flag) for the relay to close `s`; returns the
/// outcome: the first status line's code if an HTTP answer came, and who ended it.
fn await_close(s: &mut TcpStream, until: Instant, stop: &AtomicBool) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        if Instant::now() >= until || stop.load(Ordering::Relaxed) {
            return outcome_text(&head, total, "held until we closed");
        }
        match s.read(&mut chunk) {
            Ok(0) => return outcome_text(&head, total, "closed by relay"),
            Ok(n) => {
                total += n as u64;
                if head.len() < 64 {
                    head.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return outcome_text(&head, total, "reset by relay"),
        }
    }
}

fn outcome_text(head: &[u8], total: u64, end: &str) -> String {
    let status = status_of(head);
    if status != 0 {
        format!("HTTP {status}, {end}")
    } else if head.first().is_some_and(|b| b & 0x0f == 0x8) {
        // A WebSocket close frame: opcode 8, status code in the payload (RFC 6455 §5.5.1).
        let code = head
            .get(2..4)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .unwrap_or(0);
        format!("close {code}, {end}")
    } else if total > 0 {
        format!("{total} bytes, {end}")
    } else {
        end.to_string()
    }
}

/// Write what the socket accepts without blocking past `until` (the relay may stop reading).
fn write_bounded(s: &mut TcpStream, data: &[u8], until: Instant) -> usize {
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut at = 0;
    while at < data.len() && Instant::now() < until {
        match s.write(data.get(at..).unwrap_or(&[])) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    at
}

/// Dribble `data` one piece every `gap` until it is sent, the relay closes, or `until`.
fn dribble(
    s: &mut TcpStream,
    data: &[u8],
    piece: usize,
    gap: Duration,
    until: Instant,
    stop: &AtomicBool,
) -> bool {
    for chunk in data.chunks(piece.max(1)) {
        if Instant::now() >= until || stop.load(Ordering::Relaxed) {
            return true;
        }
        if s.write_all(chunk).is_err() {
            return false;
        }
        thread::sleep(gap);
    }
    true
}

fn abuse_one(sh: &Shared, kind: &str, hold: Duration) -> Res<String> {
    let env = &sh.env;
    let until = Instant::now() + hold;
    let mut s = TcpStream::connect(env.addr).map_err(|e| format!("connect: {e}"))?;
    let host = env.addr;
    let stop = &sh.stop;
    let outcome = match kind {
        // A head that never ends: one byte a second (the head timeout should end it).
        "slowloris-head" => {
            let head = format!(
                "GET /search?query=goblin HTTP/1.1\r\nHost: {host}\r\nx-api-key: {}\r\nX-Slow: {}",
                env.key,
                "a".repeat(200)
            );
            if dribble(
                &mut s,
                head.as_bytes(),
                1,
                Duration::from_secs(1),
                until,
                stop,
            ) {
                await_close(&mut s, Instant::now(), stop)
            } else {
                await_close(&mut s, Instant::now() + Duration::from_secs(1), stop)
            }
        }
        // A complete head announcing 1 MiB, then 16 bytes a second.
        "slow-post-body" => {
            let head = format!(
                "POST /roll?clientId={} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {}\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n",
                env.client_id, env.key
            );
            s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
            let body = vec![b' '; 1 << 20];
            if dribble(&mut s, &body, 16, Duration::from_secs(1), until, stop) {
                await_close(&mut s, Instant::now(), stop)
            } else {
                await_close(&mut s, Instant::now() + Duration::from_secs(1), stop)
            }
        }
        // PIPELINED requests in one write, answers never read; held, then dropped. Local
        // routes answer at once, so their answers pile up (forwarded ones go one at a time).
        "pipeline-no-read" => {
            let one = format!("GET /api/health HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
            let all: Vec<u8> = one
                .iter()
                .copied()
                .cycle()
                .take(one.len() * PIPELINED)
                .collect();
            let sent = write_bounded(&mut s, &all, Instant::now() + Duration::from_secs(5));
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            // Not reading: only watch for the relay closing us, by peeking.
            let mut peek = [0u8; 1];
            let mut end = "held until we closed";
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                match s.peek(&mut peek) {
                    Ok(0) => {
                        end = "closed by relay";
                        break;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Ok(_) => thread::sleep(Duration::from_millis(200)),
                    Err(_) => {
                        end = "reset by relay";
                        break;
                    }
                }
            }
            format!(
                "{} of {PIPELINED} requests written, {end}",
                sent / one.len()
            )
        }
        // Half a request, then our write side shut (FIN); we keep reading.
        "half-open" => {
            let part = format!("GET /search?query=goblin HTTP/1.1\r\nHost: {host}\r\n");
            s.write_all(part.as_bytes()).map_err(|e| e.to_string())?;
            let _ = s.shutdown(Shutdown::Write);
            await_close(&mut s, until, stop)
        }
        "garbage-bytes" => {
            let mut rng = Rng::new();
            let junk: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
            write_bounded(&mut s, &junk, Instant::now() + Duration::from_secs(2));
            await_close(&mut s, Instant::now() + Duration::from_secs(10), stop)
        }
        // 64 KiB of headers against the 16 KiB head cap.
        "oversized-head" => {
            let mut head = format!("GET /search HTTP/1.1\r\nHost: {host}\r\n");
            for i in 0..512 {
                let _ = write!(head, "X-Fill-{i}: {}\r\n", "b".repeat(120));
            }
            head.push_str("\r\n");
            write_bounded(
                &mut s,
                head.as_bytes(),
                Instant::now() + Duration::from_secs(5),
            );
            await_close(&mut s, Instant::now() + Duration::from_secs(10), stop)
        }
        // A body declared far past --max-body-bytes, then as much of it as the relay takes
        // within 3 s.
        "oversized-body" => {
            let head = format!(
                "POST /upload?clientId={} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {}\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n",
                env.client_id, env.key
            );
            s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
            let body = vec![b'x'; 1 << 20];
            write_bounded(&mut s, &body, Instant::now() + Duration::from_secs(3));
            await_close(&mut s, Instant::now() + Duration::from_secs(10), stop)
        }
        // /ws/api: a frame header claiming 16 MiB (over --api-max-frame), then 256 KiB of it.
        "oversized-ws-frame" => {
            s.write_all(ws_upgrade(&host.to_string(), "/ws/api", None).as_bytes())
                .map_err(|e| e.to_string())?;
            let (status, _) = read_head(&mut s)?;
            if status != 101 {
                return Ok(format!("upgrade refused: HTTP {status}"));
            }
            let mut frame = vec![0x81, 0x80 | 127];
            frame.extend_from_slice(&(16u64 << 20).to_be_bytes());
            frame.extend_from_slice(&[1, 2, 3, 4]);
            frame.extend(std::iter::repeat_n(b'a', 256 * 1024));
            write_bounded(&mut s, &frame, Instant::now() + Duration::from_secs(3));
            await_close(&mut s, Instant::now() + Duration::from_secs(10), stop)
        }
        // /relay: junk frames instead of the auth message: not JSON, binary, JSON without a
        // token, then 1 MiB of text (the module link allows large messages once paired).
        "relay-junk-before-auth" => {
            let path = format!(
                "/relay?id=fvtt_{}&worldId=junk",
                fvtt_relay::ids::random_hex(16)
            );
            s.write_all(ws_upgrade(&host.to_string(), &path, None).as_bytes())
                .map_err(|e| e.to_string())?;
            let (status, _) = read_head(&mut s)?;
            if status != 101 {
                return Ok(format!("upgrade refused: HTTP {status}"));
            }
            let mut junk = client_frame(0x1, b"not json {{{");
            junk.extend(client_frame(0x2, &[0xff; 512]));
            junk.extend(client_frame(0x1, br#"{"type":"hello"}"#));
            junk.extend(client_frame(0x1, &vec![b'z'; 1 << 20]));
            write_bounded(&mut s, &junk, Instant::now() + Duration::from_secs(5));
            await_close(&mut s, until, stop)
        }
        // Connect and say nothing at all.
        _ => await_close(&mut s, until, stop),
    };
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// The relay process and /proc
// ---------------------------------------------------------------------------------------------

/// USER_HZ: the unit of utime/stime in /proc/<pid>/stat (proc(5)); 100 on every Linux ABI.
const CLK_TCK: f64 = 100.0;

struct RelayProc {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl RelayProc {
    /// Start the binary on 127.0.0.1:0 and read the port from its one stdout line.
    fn start(bin: &Path, dir: &Path, out: &Path) -> Res<RelayProc> {
        let log_path = out.join("relay.log");
        let log =
            fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let dir = dir.to_string_lossy().to_string();
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--data-dir", &dir])
            .args(RELAY_FLAGS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let pid = child.id();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no stdout pipe".into());
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines.by_ref() {}
        });
        let mut proc = RelayProc {
            child,
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
        proc.addr = line
            .rsplit("http://")
            .next()
            .and_then(|u| u.trim().parse().ok())
            .ok_or_else(|| format!("unexpected first line: {line}"))?;
        Ok(proc)
    }

    fn alive(&self) -> bool {
        fs::metadata(format!("/proc/{}/stat", self.pid)).is_ok()
            && proc_status_kib(self.pid, "VmRSS").is_ok()
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        // Only the child we spawned, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release binary cargo built for this bench, or `FVTT_RELAY_BIN`; rebuilt with
/// `cargo build --release` when older than the sources (as benches/relay.rs does).
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
        eprintln!("soak: building the release binary (cargo build --release)");
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

/// The admin key, an all-scope API key with a rate limit far above the soak's load, and a
/// connection token for the simulated world, written through the relay's own store code.
fn provision(dir: &Path) -> Res<(String, String, String, String)> {
    let now = unix_ms();
    let mut store = Store::open(dir).map_err(|e| format!("store: {e:?}"))?;
    let state = store.state_mut();
    let admin = state.rotate_admin_key();
    let spec = NewKey {
        name: "soak".into(),
        scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
        client_ids: vec![],
        user_id: None,
        expires_in_days: None,
        rate_limit_per_minute: Some(100_000_000),
    };
    let (_, key) = state.create_api_key(spec, now)?;
    let client_id = fvtt_relay::ids::new_client_id();
    let (_, token) = state.create_connection_token(&client_id, now);
    store.save().map_err(|e| format!("save state: {e}"))?;
    Ok((key, admin, token, client_id))
}

/// `fvtt_relay_connections_open` from `GET /metrics` (admin key), on a fresh connection.
fn metrics_connections(env: &Env) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&env.addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nx-api-key: {}\r\nConnection: close\r\n\r\n",
        env.addr, env.admin
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut body = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    metric(&text, "fvtt_relay_connections_open")
}

/// The value of an unlabelled sample `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn fd_count(pid: u32) -> Res<u64> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| e.to_string())?
        .count() as u64)
}

/// utime + stime of `/proc/<pid>/stat` (fields 14 and 15, proc(5)), in clock ticks.
fn cpu_ticks(pid: u32) -> Res<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
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
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "nproc": thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "mem_total_kib": mem_kib,
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "arch": std::env::consts::ARCH,
        "loadavg_at_start": load.trim(),
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
// Small helpers: framing, search, numbers
// ---------------------------------------------------------------------------------------------

/// The `p` quantile (nearest rank) of latencies in µs, in ms; sorts `v`.
fn quantile_ms(v: &mut [u32], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).map(|&us| us as f64 / 1000.0)
}

/// xorshift64*: enough to pick which subscriber to drop and to make garbage bytes.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let mut b = [0u8; 8];
        fvtt_relay::ids::fill_random(&mut b);
        Rng(u64::from_le_bytes(b) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Self-test of the pure helpers (run by `cargo test --all-targets`, which omits --bench)
// ---------------------------------------------------------------------------------------------

fn self_test() {
    // The growth verdict: medians of thirds, absolute and relative allowances.
    assert_eq!(thirds(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), Some((2, 8)));
    assert_eq!(thirds(&[5, 5]), None);
    assert!(
        !grew(4000, 5000, 2048, 10.0),
        "1 MiB on 4 MiB is within 2 MiB"
    );
    assert!(grew(4000, 7000, 2048, 10.0));
    assert!(!grew(100_000, 109_000, 2048, 10.0), "9% is within 10%");
    assert!(grew(100_000, 111_000, 2048, 10.0));
    assert!(!grew(40, 56, 16, 20.0));
    assert!(grew(40, 57, 16, 20.0));
    // Quantiles are nearest-rank.
    let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
    assert_eq!(quantile_ms(&mut v, 0.99), Some(99.0));
    assert_eq!(quantile_ms(&mut v, 0.50), Some(50.0));
    assert_eq!(quantile_ms(&mut [], 0.5), None);
    // Metrics text, response framing, status lines.
    let text = "# HELP x\nfvtt_relay_connections_open 7\nfvtt_relay_connections_open_max 9\n";
    assert_eq!(metric(text, "fvtt_relay_connections_open"), Some(7));
    let mut rd = RespReader::default();
    let mut done = Vec::new();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
    for b in resp.chunks(5) {
        assert!(rd.feed(b, &mut done).is_ok());
    }
    assert_eq!(done, vec![(200, 3), (404, 2)]);
    assert_eq!(status_of(b"HTTP/1.1 408 Request Timeout\r\n"), 408);
    assert_eq!(status_of(b"\x88\x02\x03\xe8"), 0);
    assert_eq!(
        outcome_text(b"\x88\x02\x03\xf1", 4, "closed by relay"),
        "close 1009, closed by relay"
    );
    // Axis helpers and the plot's shape.
    assert_eq!(nice_ceiling(37.0), 50.0);
    assert_eq!(nice_ceiling(0.0), 1.0);
    assert_eq!(minute_step(1800.0), 5.0);
    assert_eq!(
        (tick(0.001), tick(2.5), tick(1000.0)),
        ("0.001".into(), "2.5".into(), "1000".into())
    );
    let rows: Vec<Row> = (1..=6)
        .map(|i| Row {
            t_s: i as f64 * 10.0,
            rss_kib: 4000,
            fds: 20,
            connections: Some(10),
            probe_p99_ms: Some(1.0),
            ..Row::default()
        })
        .collect();
    let plot = svg(
        &rows,
        &Verdict {
            failures: vec![],
            summary: Value::Null,
        },
    );
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert_eq!(plot.matches("<polyline").count(), 7);
    println!("soak: self-test of the helpers passed (run `make soak` for the soak itself)");
}
