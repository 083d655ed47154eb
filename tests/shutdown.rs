//! Graceful shutdown against the real binary: on SIGTERM or SIGINT the relay stops
//! accepting, closes every WebSocket with 1001 "Server shutting down" (RFC 6455 §7.4.1),
//! answers or fails the HTTP exchanges in flight, and exits 0 within `--shutdown-grace`.

mod support;
use support::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Instant;

const T: Duration = DEFAULT_TIMEOUT;
const GRACE: Duration = Duration::from_secs(2);

fn shutdown_with_open_sockets(signal: &str) {
    let p = start_provisioned(&["--test-echo", "--shutdown-grace", "2s"]);
    let addr = p.relay.addr();
    let world = p.world();
    let mut echo = ws_connect(addr, "/test/echo", &[]).unwrap_or_else(|e| panic!("{e:?}"));
    echo.send_text("hello").unwrap();
    assert!(echo.recv(T).is_some());
    // An idle keep-alive HTTP connection: closed, not waited for.
    let mut idle = HttpConn::connect(addr).unwrap();
    assert_eq!(
        idle.roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
            .unwrap()
            .status,
        200
    );

    let mut relay = p.relay;
    let start = Instant::now();
    relay.signal(signal);
    let close = echo.recv_close(T);
    assert_eq!(
        close,
        Some((1001, "Server shutting down".to_string())),
        "echo socket"
    );
    let wclose = world.wait_close(1, T);
    assert_eq!(
        wclose,
        Some((1001, "Server shutting down".to_string())),
        "world link"
    );
    assert!(idle.wait_closed(T), "idle keep-alive connection left open");
    let status = relay.wait_exit(GRACE + secs(3));
    let took = start.elapsed();
    assert!(
        status.is_some(),
        "still running {took:?} after SIG{signal}; logs:\n{}",
        relay.logs()
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "logs:\n{}",
        relay.logs()
    );
    assert!(took < GRACE + secs(1), "exit took {took:?}");
    // Stopped accepting: nothing listens any more.
    assert!(HttpConn::connect(addr).is_err());
}

#[test]
fn sigterm_closes_websockets_with_1001_and_exits_0() {
    shutdown_with_open_sockets("TERM");
}

#[test]
fn sigint_closes_websockets_with_1001_and_exits_0() {
    shutdown_with_open_sockets("INT");
}

/// A request the world is slow to answer, in flight when the signal arrives, gets a
/// response (an answer or an error status), never a silently dropped connection. (The
/// world link stays open while the request waits on it: tests/lifecycle.rs.)
#[test]
fn in_flight_request_failed_when_world_link_closes() {
    let p = start_provisioned(&["--shutdown-grace", "2s"]);
    let addr = p.relay.addr();
    let world = p.world();
    world.set_delay("search", secs(30));
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
        Ok(r) => r,
        Err(_) => panic!("client thread panicked"),
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => panic!(
            "in-flight request dropped without a response: {e}; logs:\n{}",
            relay.logs()
        ),
    };
    assert!(r.status >= 400, "{r:?}");
    assert!(r.json()["error"].is_string(), "{r:?}");
    assert!(
        r.closes(),
        "a response during shutdown closes the connection: {r:?}"
    );
    let status = relay.wait_exit(GRACE + secs(3));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "logs:\n{}",
        relay.logs()
    );
}

/// A masked client text frame (zero mask key; RFC 6455 §5.3).
fn client_text(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A world link that authenticates, then never reads again: it neither answers requests
/// nor our close frame, so only the grace deadline can end the exchange in flight.
fn hung_world(addr: std::net::SocketAddr, client_id: &str, token: &str) -> TcpStream {
    let path = WorldConfig::new(client_id, token).relay_path();
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(&client_text(
        json!({"type": "auth", "token": token})
            .to_string()
            .as_bytes(),
    ))
    .unwrap();
    s.set_read_timeout(Some(millis(200))).unwrap();
    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("auth-success") {
        assert!(
            Instant::now() < deadline,
            "no auth-success: {}",
            String::from_utf8_lossy(&seen)
        );
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "relay closed the world link: {}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    s
}

#[test]
fn in_flight_request_failed_when_grace_ends_first() {
    // Grace (1 s) shorter than the close linger (2 s): the hung world's link is still open
    // when the deadline comes, so the request waiting on it is still in flight.
    let p = start_provisioned(&["--shutdown-grace", "1s"]);
    let addr = p.relay.addr();
    let _world = hung_world(addr, &p.keys.client_id, &p.keys.token);
    let key = p.keys.api_key.clone();
    let mut c = HttpConn::connect(addr).unwrap();
    c.send(&build_request(
        "GET",
        "/search?query=goblin",
        "x",
        &[("x-api-key", key.as_str())],
        None,
    ))
    .unwrap();
    // Give the relay time to forward it (nothing can answer it).
    assert!(c.read_response(millis(300)).is_err());
    let mut relay = p.relay;
    let start = Instant::now();
    relay.sigterm();
    let r = match c.read_response(secs(5)) {
        Ok(r) => r,
        Err(e) => panic!(
            "in-flight request dropped at the grace deadline: {e}; logs:\n{}",
            relay.logs()
        ),
    };
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.json()["error"].is_string());
    assert!(r.closes());
    let status = relay.wait_exit(secs(3));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "logs:\n{}",
        relay.logs()
    );
    assert!(start.elapsed() < secs(2), "exit took {:?}", start.elapsed());
}
