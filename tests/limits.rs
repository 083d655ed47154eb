//! Every HTTP and connection limit against the real binary: head bytes and header count (431),
//! body bytes (413), the slowloris head deadline (408), the idle keep-alive timeout, the global
//! and per-IP connection caps (503 at accept), and a WebSocket client that never reads (closed
//! as a slow consumer while others are served). Each limit used here is a documented option.

mod support;
use support::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

const T: Duration = DEFAULT_TIMEOUT;

/// `GET /` with enough padding in one header that the head is exactly `len` bytes.
fn head_of_len(len: usize) -> Vec<u8> {
    let fixed = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n".len();
    assert!(len >= fixed);
    let mut out = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    out.extend(std::iter::repeat_n(b'a', len - fixed));
    out.extend_from_slice(b"\r\n\r\n");
    assert_eq!(out.len(), len);
    out
}

#[test]
fn every_limit_option_is_documented_in_help() {
    let out = relay_command()
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run --help: {e}"));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--max-head-bytes",
        "--max-headers",
        "--max-body-bytes",
        "--head-timeout",
        "--keepalive-timeout",
        "--max-connections",
        "--max-connections-per-ip",
        "--outq-hard-bytes",
        "--outq-soft-bytes",
        "--echo-max-message",
        "--test-echo",
        "--shutdown-grace",
        "--ws-upgrade-rate-limit",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{opt} ")) || l.trim() == opt);
        assert!(line.is_some(), "{opt} missing from --help:\n{help}");
    }
}

#[test]
fn head_over_cap_is_431_and_at_cap_passes() {
    let relay = Relay::start(&[]);
    let cap = 16 * 1024;
    let mut c = HttpConn::to(&relay);
    let r = c.roundtrip(&head_of_len(cap), T).unwrap();
    assert_eq!(r.status, 200, "a head of exactly 16 KiB is allowed: {r:?}");
    assert!(!r.closes());

    for raw in [head_of_len(cap + 1), head_of_len(cap + 5000)] {
        let mut c = HttpConn::to(&relay);
        let r = c.roundtrip(&raw, T).unwrap();
        assert_eq!(r.status, 431, "{r:?}");
        assert!(r.closes());
        assert!(r.json()["error"].is_string());
        assert!(c.wait_closed(T));
    }
    // A head that never ends but passes the cap gets 431 without waiting for the blank line.
    let mut c = HttpConn::to(&relay);
    let mut raw = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', cap + 10));
    let r = c.roundtrip(&raw, T).unwrap();
    assert_eq!(r.status, 431, "{r:?}");
}

#[test]
fn more_than_100_headers_is_431() {
    let relay = Relay::start(&[]);
    let build = |n: usize| {
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..n {
            raw.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw
    };
    let r = http_request(relay.addr(), &build(100));
    assert_eq!(r.status, 200, "100 headers are allowed: {r:?}");
    let r = http_request(relay.addr(), &build(101));
    assert_eq!(r.status, 431, "{r:?}");
    assert!(r.closes());
}

#[test]
fn body_over_cap_is_413() {
    let p = start_provisioned(&["--max-body-bytes", "2K", "--max-json-body-bytes", "1K"]);
    let relay = &p.relay;
    // Exactly at the small cap on a route that reads bodies without a key: read, then
    // checked (no code: 400), connection kept.
    let body = vec![b' '; 1024];
    let mut c = HttpConn::to(relay);
    let raw = build_request("POST", "/auth/pair", "x", &[], Some(&body));
    let r = c.roundtrip(&raw, T).unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.closes(), "{r:?}");

    // Declared over the small cap: 413 before the body is even sent.
    let mut c = HttpConn::to(relay);
    let r = c
        .roundtrip(
            b"POST /auth/pair HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
            T,
        )
        .unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.closes());
    assert_eq!(
        r.json()["error"].as_str().map(|s| !s.is_empty()),
        Some(true)
    );

    // /upload with a valid key may send up to --max-body-bytes, no more.
    let key = p.key().to_string();
    for (len, big) in [(2048usize, false), (2049, true)] {
        let mut c = HttpConn::to(relay);
        let head = format!(
            "POST /upload?path=a&filename=b HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
        );
        c.send(head.as_bytes()).unwrap();
        if big {
            let r = c.read_response(T).unwrap();
            assert_eq!(r.status, 413, "{r:?}");
        } else {
            c.send(&vec![b'a'; len]).unwrap();
            let r = c.read_response(T).unwrap();
            assert_ne!(r.status, 413, "an upload within the cap is read: {r:?}");
        }
    }

    // Chunked, growing past the small cap chunk by chunk.
    let mut c = HttpConn::to(relay);
    let mut raw =
        b"POST /auth/pair HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend(std::iter::repeat_n(b'a', 0x200));
        raw.extend_from_slice(b"\r\n");
    }
    let r = c.roundtrip(&raw, T).unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    assert!(c.wait_closed(T));
}

/// Issue 15: a body is never read for a request its route or key cannot serve. The head
/// alone is answered (and the connection closed): the body is never sent here at all.
#[test]
fn a_body_the_route_or_key_cannot_use_is_refused_on_its_head() {
    let p = start_provisioned(&[]);
    let relay = &p.relay;
    let key = p.key().to_string();
    let cases: Vec<(String, u16)> = vec![
        // No key on a keyed route (and /upload's big limit needs a valid key).
        ("POST /roll".into(), 401),
        ("POST /upload?path=a&filename=b".into(), 401),
        (format!("POST /roll\r\nx-api-key: {key}-wrong"), 401),
        // No such route, or not this method.
        ("POST /no-such-route".into(), 404),
        ("PATCH /roll".into(), 405),
        // A valid key on a route that is not /upload: the small limit (4 MiB).
        (format!("POST /roll\r\nx-api-key: {key}"), 413),
    ];
    for (start, status) in cases {
        let (line, extra) = start.split_once("\r\n").unwrap_or((&start, ""));
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("{extra}\r\n")
        };
        let head = format!(
            "{line} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\nContent-Length: 8000000\r\n\r\n"
        );
        let mut c = HttpConn::to(relay);
        let r = c.roundtrip(head.as_bytes(), T).unwrap();
        assert_eq!(r.status, status, "{start}: {r:?}");
        assert!(
            r.closes(),
            "{start}: refused before the body, so closed: {r:?}"
        );
        assert!(c.wait_closed(T), "{start}");
    }
}

#[test]
fn slowloris_head_gets_408_and_close() {
    let relay = Relay::start(&["--head-timeout", "1s"]);
    // A head that stops half way.
    let mut c = HttpConn::to(&relay);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let start = Instant::now();
    let r = c.read_response(secs(8)).unwrap();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.closes());
    assert!(
        start.elapsed() >= millis(800),
        "408 came early: {:?}",
        start.elapsed()
    );
    assert!(c.wait_closed(T));

    // A head that keeps trickling in: the deadline runs from its first byte, not its last.
    let mut c = HttpConn::to(&relay);
    let start = Instant::now();
    let mut got = None;
    for b in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if c.send(std::slice::from_ref(b)).is_err() {
            break;
        }
        if let Ok(r) = c.read_response(millis(150)) {
            got = Some(r);
            break;
        }
        if start.elapsed() > secs(6) {
            break;
        }
    }
    let r = match got {
        Some(r) => r,
        None => c.read_response(secs(3)).unwrap(),
    };
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        start.elapsed() < secs(4),
        "trickle kept the head alive: {:?}",
        start.elapsed()
    );

    // A connection that sends nothing at all: its first head is due within --head-timeout
    // too (it was kept for the whole keep-alive time, 1 min by default).
    let mut c = HttpConn::to(&relay);
    let start = Instant::now();
    assert!(c.wait_closed(secs(8)), "a silent connection was kept");
    assert!(
        start.elapsed() < secs(4),
        "a silent connection waited out the keep-alive time: {:?}",
        start.elapsed()
    );
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let relay = Relay::start(&["--keepalive-timeout", "1s"]);
    let mut c = HttpConn::to(&relay);
    let r = c
        .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
        .unwrap();
    assert_eq!(r.status, 200);
    let start = Instant::now();
    assert!(
        c.wait_closed(secs(6)),
        "idle keep-alive connection left open"
    );
    assert!(
        start.elapsed() >= millis(800),
        "closed early: {:?}",
        start.elapsed()
    );
    assert!(c.buffered().is_empty(), "idle close sends nothing");
    // A connection that never sends a byte is closed too.
    let mut c = HttpConn::to(&relay);
    assert!(c.wait_closed(secs(6)));
}

fn expect_503(relay: &Relay) {
    let mut c = HttpConn::to(relay);
    // The refusal is written at accept, whatever we send.
    let _ = c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.closes());
    assert!(r.json()["error"].is_string());
    assert!(c.wait_closed(T));
}

/// Opens `n` keep-alive connections and proves each one was accepted with a request.
fn open_served(relay: &Relay, n: usize) -> Vec<HttpConn> {
    (0..n)
        .map(|i| {
            let mut c = HttpConn::to(relay);
            let r = c
                .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
                .unwrap();
            assert_eq!(r.status, 200, "connection {i}: {r:?}");
            c
        })
        .collect()
}

#[test]
fn max_connections_refuses_with_503_and_others_keep_working() {
    let relay = Relay::start(&["--max-connections", "20", "--max-connections-per-ip", "20"]);
    let mut open = open_served(&relay, 20);
    expect_503(&relay);
    expect_503(&relay);
    for (i, c) in open.iter_mut().enumerate() {
        let r = c
            .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
            .unwrap();
        assert_eq!(r.status, 200, "connection {i} after the cap: {r:?}");
    }
    // One leaves: a new client gets in again (accepting resumed below the cap).
    drop(open.pop());
    let ok = wait_for(T, || {
        let mut c = HttpConn::to(&relay);
        matches!(c.roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T), Ok(r) if r.status == 200)
    });
    assert!(ok, "no connection accepted after one closed");
}

#[test]
fn per_ip_cap_refuses_with_503() {
    let relay = Relay::start(&["--max-connections-per-ip", "3"]);
    let mut open = open_served(&relay, 3);
    expect_503(&relay);
    let r = open[0]
        .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
        .unwrap();
    assert_eq!(r.status, 200);
    drop(open.pop());
    assert!(wait_for(T, || {
        let mut c = HttpConn::to(&relay);
        matches!(c.roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T), Ok(r) if r.status == 200)
    }));
}

/// Upgrades a raw socket on `path`; returns it with any bytes read past the 101.
fn raw_ws(relay: &Relay, path: &str) -> (TcpStream, Vec<u8>) {
    let mut c = HttpConn::to(relay);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let r = c.roundtrip(req.as_bytes(), T).unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    c.into_parts()
}

#[test]
fn client_that_never_reads_is_dropped_and_others_are_served() {
    let relay = Relay::start(&[
        "--test-echo",
        "--echo-max-message",
        "64K",
        "--outq-soft-bytes",
        "256K",
        "--outq-hard-bytes",
        "1M",
        // Long enough that only the hard limit can explain a prompt close.
        "--slow-consumer-grace",
        "1m",
    ]);
    let (mut stuck, _) = raw_ws(&relay, "/test/echo");
    stuck.set_write_timeout(Some(millis(200))).unwrap();
    let mut healthy = match ws_connect(relay.addr(), "/test/echo", &[]) {
        Ok(w) => w,
        Err(e) => panic!("{e:?}"),
    };
    let frame = client_frame(0x2, &vec![0x5a; 60_000]);
    let start = Instant::now();
    let mut sent = 0usize;
    let mut dropped = false;
    let mut round = 0;
    let mut off = 0;
    while start.elapsed() < secs(30) {
        // Whole frames only (a write may be partial): the server must see valid traffic.
        match stuck.write(&frame[off..]) {
            Ok(n) => {
                sent += n;
                off = (off + n) % frame.len();
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => {
                dropped = true;
                break;
            }
        }
        // The healthy client keeps getting its echoes while the other one is stuck.
        round += 1;
        if round % 5 == 0 {
            let msg = format!("ping {round}");
            healthy.send_text(&msg).unwrap();
            match healthy.recv(T) {
                Some(tungstenite::Message::Text(t)) => assert_eq!(t.as_str(), msg),
                other => panic!("healthy client not served: {other:?}"),
            }
        }
        if relay.logs().contains("slow consumer") {
            break;
        }
    }
    assert!(
        dropped || wait_for(secs(10), || relay.logs().contains("slow consumer")),
        "never-reading client was not dropped after {sent} bytes; logs:\n{}",
        relay.logs()
    );
    // The stuck socket ends (after the close linger) even though it never reads.
    stuck.set_read_timeout(Some(millis(100))).unwrap();
    let ended = wait_for(secs(10), || {
        let mut buf = vec![0u8; 1 << 20];
        match stuck.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !timed_out(&e),
        }
    });
    assert!(ended, "stuck connection still open");
    healthy.send_text("after").unwrap();
    match healthy.recv(T) {
        Some(tungstenite::Message::Text(t)) => assert_eq!(t.as_str(), "after"),
        other => panic!("healthy client not served after the drop: {other:?}"),
    }
}
