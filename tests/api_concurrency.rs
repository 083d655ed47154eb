//! Many concurrent API clients through one world: every request answered, every answer
//! matched to its caller (issue 4, "64 concurrent clients × 2,000 requests each lose
//! nothing"). Each request carries its own query, which the world echoes back in its
//! `search-result`, so a reply delivered to the wrong caller is caught.
//!
//! The latency measurement is `#[ignore]`d: run it with
//! `cargo test --release --test api_concurrency -- --ignored --nocapture`.

mod support;
use support::*;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// One client: `n` keep-alive requests, each checked; returns (requestIds, latencies).
fn client(
    addr: SocketAddr,
    key: &str,
    who: usize,
    n: usize,
    start: &Barrier,
) -> (Vec<String>, Vec<Duration>) {
    let mut conn = HttpConn::connect(addr).expect("connect");
    let host = addr.to_string();
    let mut ids = Vec::with_capacity(n);
    let mut lat = Vec::with_capacity(n);
    start.wait();
    for i in 0..n {
        let query = format!("c{who}r{i}");
        let raw = build_request(
            "GET",
            &format!("/search?query={query}"),
            &host,
            &[("x-api-key", key)],
            None,
        );
        let t0 = Instant::now();
        let r = conn
            .roundtrip(&raw, secs(30))
            .unwrap_or_else(|e| panic!("client {who} request {i}: {e}"));
        lat.push(t0.elapsed());
        assert_eq!(r.status, 200, "client {who} request {i}: {r:?}");
        assert!(!r.closes(), "client {who}: keep-alive ended at {i}");
        let v = r.json();
        assert_eq!(
            v["query"],
            query.as_str(),
            "client {who} got another's reply: {v}"
        );
        assert_eq!(v["type"], "search-result");
        let id = v["requestId"].as_str().unwrap_or_default().to_string();
        assert!(!id.is_empty(), "{v}");
        ids.push(id);
    }
    (ids, lat)
}

/// A lean module for load: authenticates like the module, then answers every `search` with
/// a `search-result` echoing its `query` (as `FakeWorld` does). `FakeWorld` records every
/// message it sends and receives, which for 128,000 requests costs most of a gigabyte and
/// makes the simulator, not the relay, the bottleneck of the measurement.
struct EchoWorld {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoWorld {
    fn online(addr: SocketAddr, client_id: &str, token: &str) -> EchoWorld {
        use tungstenite::Message;
        let path = WorldConfig::new(client_id, token).relay_path();
        let (mut ws, _) = ws_handshake(addr, &path, &[], secs(5)).expect("module upgrade");
        ws.send(Message::text(
            json!({"type": "auth", "token": token}).to_string(),
        ))
        .expect("auth");
        match ws.read() {
            Ok(Message::Text(t)) => assert_eq!(t.as_str(), r#"{"type":"auth-success"}"#),
            other => panic!("no auth-success: {other:?}"),
        }
        ws.get_ref()
            .set_read_timeout(Some(millis(50)))
            .expect("timeout");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let text = match ws.read() {
                    Ok(Message::Text(t)) => t,
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        continue
                    }
                    Err(_) => return,
                };
                let Ok(req) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if req["type"] != "search" {
                    continue;
                }
                let reply = json!({"type": "search-result", "requestId": req["requestId"],
                    "query": req["query"], "results": []});
                if ws.send(Message::text(reply.to_string())).is_err() {
                    return;
                }
            }
            let _ = ws.close(None);
            let _ = ws.flush();
        });
        EchoWorld {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoWorld {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `clients` × `per_client` requests; returns the wall time and every latency.
fn run(clients: usize, per_client: usize) -> (Duration, Vec<Duration>) {
    let p = start_provisioned(&[
        "--log-level",
        "warn",
        "--rate-limit-per-minute",
        "100000000",
    ]);
    let _world = EchoWorld::online(p.relay.addr(), &p.keys.client_id, &p.keys.token);
    let addr = p.relay.addr();
    let start = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|who| {
            let key = p.keys.api_key.clone();
            let start = Arc::clone(&start);
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || client(addr, &key, who, per_client, &start))
                .expect("spawn")
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut all_ids = HashSet::with_capacity(clients * per_client);
    let mut all_lat = Vec::with_capacity(clients * per_client);
    for h in handles {
        let (ids, lat) = h.join().expect("a client failed");
        for id in ids {
            assert!(all_ids.insert(id), "a requestId was used twice");
        }
        all_lat.extend(lat);
    }
    let took = t0.elapsed();
    assert_eq!(all_ids.len(), clients * per_client);
    let health = get(addr, "/api/health", &[]).json();
    assert_eq!(health["pendingRequests"], 0, "{health}");
    (took, all_lat)
}

fn p99(lat: &mut [Duration]) -> Duration {
    lat.sort_unstable();
    let i = (lat.len() * 99 / 100).min(lat.len().saturating_sub(1));
    lat.get(i).copied().unwrap_or_default()
}

/// The issue's figure: 64 × 2,000 within 60 s even in a debug build.
#[test]
fn sixty_four_clients_times_two_thousand_lose_nothing() {
    let (took, mut lat) = run(64, 2000);
    eprintln!(
        "64 x 2000 forwarded requests in {took:?} ({:.0} req/s, p99 {:?})",
        128_000.0 / took.as_secs_f64(),
        p99(&mut lat)
    );
    assert!(took < scaled(secs(60)), "{took:?}");
}

#[test]
#[ignore = "measurement: run with --release --ignored --nocapture"]
fn forwarded_throughput_and_p99() {
    for (clients, per_client) in [(1, 5000), (64, 300)] {
        let (took, mut lat) = run(clients, per_client);
        let n = clients * per_client;
        eprintln!(
            "c={clients}: {n} requests in {took:?}: {:.0} req/s, p50 {:?}, p99 {:?}",
            n as f64 / took.as_secs_f64(),
            {
                let mut l = lat.clone();
                l.sort_unstable();
                l[l.len() / 2]
            },
            p99(&mut lat)
        );
    }
}
