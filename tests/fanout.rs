//! Fan-out at scale against the real binary (issue 6, "Done when"): one world event reaches
//! 1,000 SSE streams and 1,000 `/ws/events` sockets, each exactly once and in order, within
//! a time bound. Prints the figures for the closing note (relay CPU per event to
//! 2,000 subscribers, resident memory per idle subscriber); they come from a debug build.

mod support;

use std::time::Instant;
use support::*;

/// (utime + stime) of `pid` in clock ticks, and its resident set in KiB (Linux /proc).
fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((cpu, rss))
}

const SSE: usize = 1000;
const WS: usize = 1000;
const EVENTS: i64 = 20;

#[test]
fn one_event_reaches_2000_subscribers_once_and_in_order() {
    let started = Instant::now();
    let env = start_provisioned_with(
        &[
            "--max-connections-per-ip",
            "2200",
            "--sse-max-per-channel",
            "1000",
            "--ws-upgrade-rate-limit",
            "100000",
            // 1,000 streams open with one key inside a second: far past 300/min.
            "--rate-limit-per-minute",
            "100000",
            "--log-level",
            "warn",
        ],
        &[],
    );
    let w = env.world();
    let addr = env.relay.addr();
    let pid = env.relay.pid();
    let before = proc_usage(pid);
    let path = format!("/rolls/subscribe?clientId={}", env.keys.client_id);
    let mut streams: Vec<SseClient> = (0..SSE)
        .map(|i| {
            let mut c = SseClient::connect(addr, &path, &[("x-api-key", env.key())])
                .unwrap_or_else(|r| panic!("stream {i}: {} {}", r.status, r.text()));
            assert_eq!(
                c.next_event(secs(10)).map(|e| e.event).as_deref(),
                Some("connected")
            );
            c
        })
        .collect();
    let mut sockets: Vec<WsClient> = (0..WS)
        .map(|i| {
            let mut c = ws_connect(addr, "/ws/events", &[("x-api-key", env.key())])
                .unwrap_or_else(|e| panic!("socket {i}: {e:?}"));
            c.send_json(&json!({"type": "subscribe", "events": ["roll-events"]}))
                .expect("subscribe");
            assert!(c.recv_type("snapshot", secs(10)).is_some(), "socket {i}");
            c
        })
        .collect();
    assert!(w.wait_subscription("roll-events", secs(30), |n| n == (SSE + WS) as i64));
    let idle = proc_usage(pid);

    let t = Instant::now();
    for i in 1..=EVENTS {
        assert!(w.emit_event("roll-data", roll_data(&format!("r{i}"), "1d20", i)));
    }
    // Every subscriber: exactly the events, in order...
    for (n, c) in streams.iter_mut().enumerate() {
        for i in 1..=EVENTS {
            let e = c
                .next_event(secs(20))
                .unwrap_or_else(|| panic!("stream {n}: no r{i}"));
            assert_eq!(
                (e.event.as_str(), e.json()["id"].clone()),
                ("roll", json!(format!("r{i}"))),
                "stream {n}"
            );
        }
    }
    for (n, c) in sockets.iter_mut().enumerate() {
        for i in 1..=EVENTS {
            let v = c
                .recv_json(secs(20))
                .unwrap_or_else(|| panic!("socket {n}: no r{i}"));
            assert_eq!(
                (v["type"].clone(), v["data"]["id"].clone()),
                (json!("roll"), json!(format!("r{i}"))),
                "socket {n}"
            );
            assert_eq!(v["seq"], json!(i), "socket {n}");
        }
    }
    let delivered = t.elapsed();
    let after = proc_usage(pid);
    // ...and nothing twice: the next thing each one sees is a new marker event.
    assert!(w.emit_event("roll-data", roll_data("end", "1d20", 0)));
    for (n, c) in streams.iter_mut().enumerate() {
        let e = c
            .next_event(secs(20))
            .unwrap_or_else(|| panic!("stream {n}: no end"));
        assert_eq!(e.json()["id"], "end", "stream {n}");
    }
    for (n, c) in sockets.iter_mut().enumerate() {
        let v = c
            .recv_json(secs(20))
            .unwrap_or_else(|| panic!("socket {n}: no end"));
        assert_eq!(v["data"]["id"], "end", "socket {n}");
    }
    assert!(
        started.elapsed() < secs(120),
        "took {:?}",
        started.elapsed()
    );

    if let (Some((_, rss0)), Some((cpu1, rss1)), Some((cpu2, _))) = (before, idle, after) {
        let ticks = 100.0; // USER_HZ on Linux
        let cpu_s = (cpu2.saturating_sub(cpu1)) as f64 / ticks;
        eprintln!(
            "fan-out: {EVENTS} events x {} subscribers delivered and read in {:?}; relay CPU {:.2} s \
             ({:.1} ms per event to {} subscribers, ~{:.0} events/s at 100% CPU); \
             RSS {} KiB idle with {} subscribers ({:.1} KiB per subscriber)",
            SSE + WS,
            delivered,
            cpu_s,
            cpu_s * 1000.0 / EVENTS as f64,
            SSE + WS,
            if cpu_s > 0.0 { EVENTS as f64 / cpu_s } else { f64::INFINITY },
            rss1,
            SSE + WS,
            rss1.saturating_sub(rss0) as f64 / (SSE + WS) as f64,
        );
    }
}
