//! How connections end, against the real binary (issues 14 and 15):
//!
//! - the close linger starts after our last byte is written, so a slow but moving reader
//!   gets the whole of a large `Connection: close` response, however short `--close-linger`;
//! - a client that half-closes (request, then FIN) still gets every response it is owed,
//!   pipelined ones and forwarded ones included, before the relay closes;
//! - at SIGTERM the world links stay open while requests wait on them, so a world that
//!   answers within `--shutdown-grace` still reaches its caller; a slower one gets 503.

mod support;
use support::*;

use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::Instant;

const T: Duration = DEFAULT_TIMEOUT;

/// Reads `stream` to EOF in small pieces with a pause between them: a slow but steady
/// reader. Gives up (returning what it has) after `limit`.
fn read_slowly(stream: &mut TcpStream, piece: usize, pause: Duration, limit: Duration) -> Vec<u8> {
    read_slowly_until(stream, piece, pause, limit, |_| false)
}

/// `read_slowly`, stopping early once `done` says the bytes so far are enough.
fn read_slowly_until(
    stream: &mut TcpStream,
    piece: usize,
    pause: Duration,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; piece];
    let _ = stream.set_read_timeout(Some(secs(5)));
    while Instant::now() < deadline && !done(&out) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if timed_out(&e) => continue,
            Err(_) => break, // reset: what we have is what arrived
        }
        thread::sleep(pause);
    }
    out
}

/// Issue 14: `--close-linger` used to start when the `Connection: close` response was
/// queued, so it bounded the whole transfer and a slow reader lost the tail of a large
/// download. The linger now starts after the last byte is written.
#[test]
fn close_linger_does_not_cut_a_slow_download() {
    const SIZE: usize = 8 << 20;
    let p = start_provisioned(&["--close-linger", "20ms"]);
    let world = p.world();
    world.set_download_mib(SIZE >> 20);
    let raw = build_request(
        "GET",
        "/download?path=big%2Ffile.bin",
        "x",
        &[
            ("x-api-key", p.keys.api_key.as_str()),
            ("Connection", "close"),
        ],
        None,
    );
    let mut c = HttpConn::to(&p.relay);
    c.send(&raw).unwrap();
    let (mut stream, mut got) = c.into_parts();
    // 64 KiB every 20 ms: about 2.5 s for 8 MiB, far longer than the 20 ms linger.
    got.extend(read_slowly(&mut stream, 64 << 10, millis(20), secs(60)));
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or_else(|| panic!("no response head in {} bytes", got.len()));
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body = &got[head_end..];
    assert_eq!(
        body.len(),
        SIZE,
        "slow reader got {} of {SIZE} body bytes; logs:\n{}",
        body.len(),
        p.relay.logs()
    );
    assert!(body == pattern_bytes(SIZE), "download corrupted");
}

/// The same for a keep-alive response: `--keepalive-timeout` bounds the idle time between
/// requests, not the time a response takes to leave (it used to cut this download).
#[test]
fn keepalive_timeout_does_not_cut_a_slow_download() {
    const SIZE: usize = 8 << 20;
    let p = start_provisioned(&["--keepalive-timeout", "1s"]);
    let world = p.world();
    world.set_download_mib(SIZE >> 20);
    let raw = build_request(
        "GET",
        "/download?path=big%2Ffile.bin",
        "x",
        &[("x-api-key", p.keys.api_key.as_str())],
        None,
    );
    let mut c = HttpConn::to(&p.relay);
    c.send(&raw).unwrap();
    let (mut stream, mut got) = c.into_parts();
    let head_len = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    got.extend(read_slowly_until(
        &mut stream,
        64 << 10,
        millis(20),
        secs(60),
        |b| head_len(b).is_some_and(|h| b.len() >= h + SIZE),
    ));
    let h = head_len(&got).unwrap_or_else(|| panic!("no head in {} bytes", got.len()));
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        got.len() - h,
        SIZE,
        "slow keep-alive reader got {} of {SIZE}; logs:\n{}",
        got.len() - h,
        p.relay.logs()
    );
}

/// A response nobody reads is not kept forever: with no write progress for
/// `--slow-consumer-grace` the connection is dropped.
#[test]
fn a_response_that_never_drains_is_dropped() {
    let p = start_provisioned(&["--slow-consumer-grace", "1s", "--log-level", "debug"]);
    let world = p.world();
    world.set_download_mib(16);
    let raw = build_request(
        "GET",
        "/download?path=big%2Ffile.bin",
        "x",
        &[("x-api-key", p.keys.api_key.as_str())],
        None,
    );
    let mut c = HttpConn::to(&p.relay);
    c.send(&raw).unwrap();
    // Never read: the socket buffers fill, the relay's queue stops moving.
    assert!(
        wait_for(secs(15), || p
            .relay
            .logs()
            .contains("no write progress on a response")),
        "stalled response never dropped; logs:\n{}",
        p.relay.logs()
    );
}

/// The linger still ends a connection whose peer never sends its FIN: after our last byte,
/// `--close-linger` later, the socket is closed.
#[test]
fn close_linger_still_ends_a_silent_peer() {
    let relay = Relay::start(&["--close-linger", "100ms"]);
    let mut c = HttpConn::to(&relay);
    let r = c
        .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", T)
        .unwrap();
    assert_eq!(r.status, 200);
    // We never shut our side down; the relay does not wait for us forever.
    assert!(
        c.wait_closed(secs(5)),
        "connection left open after the linger"
    );
}

/// Reads responses until `n` arrived or the connection ends; returns their statuses.
fn statuses(c: &mut HttpConn, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    while out.len() < n {
        match c.read_response(T) {
            Ok(r) => out.push(r.status),
            Err(_) => break,
        }
    }
    out
}

/// Issue 15: request, then FIN at once. Every iteration must get its response and then
/// the relay's EOF; before the fix 1-11 % of responses were lost.
#[test]
fn half_closed_client_gets_its_response_every_time() {
    let relay = Relay::start(&[]);
    let mut lost = Vec::new();
    for i in 0..200 {
        let mut c = HttpConn::to(&relay);
        c.send(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        c.shutdown_write().unwrap();
        let got = statuses(&mut c, 1);
        if got != [200] {
            lost.push((i, got));
            continue;
        }
        assert!(c.wait_closed(T), "iteration {i}: relay did not close");
    }
    assert!(
        lost.is_empty(),
        "{} of 200 half-closed requests lost their response: {lost:?}",
        lost.len()
    );
}

/// Pipelined requests followed by FIN: all of them are answered, in order.
#[test]
fn half_closed_client_gets_every_pipelined_response() {
    let relay = Relay::start(&[]);
    let three = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n\
GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut short = Vec::new();
    for i in 0..200 {
        let mut c = HttpConn::to(&relay);
        c.send(three).unwrap();
        c.shutdown_write().unwrap();
        let got = statuses(&mut c, 3);
        if got != [200, 404, 200] {
            short.push((i, got));
            continue;
        }
        assert!(c.wait_closed(T), "iteration {i}: relay did not close");
    }
    assert!(
        short.is_empty(),
        "{} of 200 pipelined+FIN connections were not fully answered: {short:?}",
        short.len()
    );
}

/// Forwarded requests (waiting on the world) behind a FIN: the world's answers still
/// reach the half-closed client, a local one pipelined behind them too.
#[test]
fn half_closed_client_gets_forwarded_responses() {
    let p = start_provisioned(&[]);
    let world = p.world();
    world.set_delay("search", millis(30));
    let key = p.keys.api_key.clone();
    let search = build_request(
        "GET",
        "/search?query=goblin",
        "x",
        &[("x-api-key", key.as_str()), ("Connection", "keep-alive")],
        None,
    );
    let mut raw = search.clone();
    raw.extend_from_slice(&search);
    raw.extend_from_slice(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut short = Vec::new();
    for i in 0..50 {
        let mut c = HttpConn::to(&p.relay);
        c.send(&raw).unwrap();
        c.shutdown_write().unwrap();
        let got = statuses(&mut c, 3);
        if got != [200, 200, 200] {
            short.push((i, got));
            continue;
        }
        assert!(c.wait_closed(T), "iteration {i}: relay did not close");
    }
    assert!(
        short.is_empty(),
        "{} of 50 forwarded+FIN connections were not fully answered: {short:?}; logs:\n{}",
        short.len(),
        p.relay.logs()
    );
}

/// A large answer to a request sent with FIN, read only after a pause: the relay's queue
/// blocks with the peer's EOF already seen, and must still deliver every byte (it used
/// to drop the connection at the next readiness event, cutting the body).
#[test]
fn half_closed_client_gets_a_large_response_whole() {
    const SIZE: usize = 8 << 20;
    let p = start_provisioned(&[]);
    let world = p.world();
    world.set_download_mib(SIZE >> 20);
    let raw = build_request(
        "GET",
        "/download?path=big%2Ffile.bin",
        "x",
        &[("x-api-key", p.keys.api_key.as_str())],
        None,
    );
    for i in 0..3 {
        let mut c = HttpConn::to(&p.relay);
        c.send(&raw).unwrap();
        c.shutdown_write().unwrap();
        // Let the answer fill the socket buffers before reading any of it.
        thread::sleep(millis(300));
        let r = match c.read_response(secs(30)) {
            Ok(r) => r,
            Err(e) => panic!("iteration {i}: {e}; logs:\n{}", p.relay.logs()),
        };
        assert_eq!(r.status, 200, "iteration {i}");
        assert!(r.closes(), "the last answer to a half-closed client closes");
        assert_eq!(r.body.len(), SIZE, "iteration {i}");
        assert!(r.body == pattern_bytes(SIZE), "iteration {i}: corrupted");
        assert!(c.wait_closed(T), "iteration {i}: relay did not close");
    }
}

/// Issue 15: at SIGTERM a request waiting on the world is answered by the world when the
/// world replies within the grace; the world link is closed (1001) after that.
#[test]
fn sigterm_keeps_world_link_until_its_reply() {
    let p = start_provisioned(&["--shutdown-grace", "3s"]);
    let addr = p.relay.addr();
    let world = p.world();
    world.set_delay("search", millis(800));
    let key = p.keys.api_key.clone();
    let client = thread::spawn(move || {
        let raw = build_request(
            "GET",
            "/search?query=goblin",
            "x",
            &[("x-api-key", key.as_str())],
            None,
        );
        try_http_request(addr, &raw, secs(10))
    });
    assert!(
        world.wait_request("search", T).is_some(),
        "request never reached the world"
    );
    let mut relay = p.relay;
    let start = Instant::now();
    relay.sigterm();
    let r = match client.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("no response: {e}; logs:\n{}", relay.logs()),
        Err(_) => panic!("client thread panicked"),
    };
    assert_eq!(r.status, 200, "{r:?}; logs:\n{}", relay.logs());
    assert!(r.closes(), "{r:?}");
    assert_eq!(
        world.wait_close(1, T),
        Some((1001, "Server shutting down".to_string())),
        "world link"
    );
    let status = relay.wait_exit(secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "logs:\n{}",
        relay.logs()
    );
    // Closed once its last reply went out, not at the grace deadline.
    assert!(start.elapsed() < secs(3), "exit took {:?}", start.elapsed());
}

/// A world slower than the grace: the caller gets 503 at the deadline, the world link
/// its 1001, and the relay exits 0.
#[test]
fn sigterm_world_slower_than_grace_gets_503() {
    let p = start_provisioned(&["--shutdown-grace", "1s"]);
    let addr = p.relay.addr();
    let world = p.world();
    world.set_delay("search", secs(5));
    let key = p.keys.api_key.clone();
    let client = thread::spawn(move || {
        let raw = build_request(
            "GET",
            "/search?query=goblin",
            "x",
            &[("x-api-key", key.as_str())],
            None,
        );
        try_http_request(addr, &raw, secs(10))
    });
    assert!(
        world.wait_request("search", T).is_some(),
        "request never reached the world"
    );
    let mut relay = p.relay;
    relay.sigterm();
    let r = match client.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("no response: {e}; logs:\n{}", relay.logs()),
        Err(_) => panic!("client thread panicked"),
    };
    assert_eq!(r.status, 503, "{r:?}; logs:\n{}", relay.logs());
    assert_eq!(r.json()["error"], "Server shutting down");
    assert_eq!(
        world.wait_close(1, T),
        Some((1001, "Server shutting down".to_string())),
        "world link"
    );
    let status = relay.wait_exit(secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "logs:\n{}",
        relay.logs()
    );
}

/// A world link with nothing pending is closed at once at SIGTERM, as before.
#[test]
fn sigterm_closes_an_idle_world_link_at_once() {
    let p = start_provisioned(&["--shutdown-grace", "5s"]);
    let world = p.world();
    let mut relay = p.relay;
    let start = Instant::now();
    relay.sigterm();
    assert_eq!(
        world.wait_close(1, T),
        Some((1001, "Server shutting down".to_string()))
    );
    assert!(relay.wait_exit(secs(8)).is_some());
    assert!(
        start.elapsed() < secs(4),
        "idle world link held open: exit took {:?}",
        start.elapsed()
    );
}
