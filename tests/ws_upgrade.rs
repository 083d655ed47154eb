//! The WebSocket upgrade against the real binary (RFC 6455 §4.2): every refusal with its
//! status and JSON error, the accept key of the RFC's own sample, a handshake dribbled one
//! byte at a time, and frames that arrive in the same packet as the handshake.

mod support;
use support::*;

use std::time::Instant;

const T: Duration = DEFAULT_TIMEOUT;
/// RFC 6455 §1.3: this key must give this accept value.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn echo_relay() -> Relay {
    Relay::start(&["--test-echo"])
}

fn upgrade_request(method: &str, path: &str, version: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let defaults = [
        ("Host", "x"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", SAMPLE_KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut out = format!("{method} {path} {version}\r\n").into_bytes();
    for (n, v) in defaults {
        if let Some((_, over)) = headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(n)) {
            if !over.is_empty() {
                out.extend_from_slice(format!("{n}: {over}\r\n").as_bytes());
            }
        } else {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    for (n, v) in headers {
        if !defaults.iter().any(|(d, _)| d.eq_ignore_ascii_case(n)) {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A masked client frame (zero mask key; RFC 6455 §5.3) with a payload under 126 bytes.
fn small_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Reads `n` small unmasked server frames after the 101: (opcode, payload) each, and
/// checks nothing else arrived with them.
fn read_frames(c: &mut HttpConn, n: usize) -> Vec<(u8, Vec<u8>)> {
    let deadline = Instant::now() + T;
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while got.len() < n {
        buf.extend(c.take_buffered());
        while buf.len() >= 2 {
            let len = (buf[1] & 0x7f) as usize;
            assert!(len < 126, "test frames are small");
            assert_eq!(
                buf[1] & 0x80,
                0,
                "server frames are never masked (RFC 6455 §5.1)"
            );
            if buf.len() < 2 + len {
                break;
            }
            got.push((buf[0] & 0x0f, buf[2..2 + len].to_vec()));
            buf.drain(..2 + len);
        }
        if got.len() >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} frames: {got:?}",
            got.len()
        );
        if let Ok(0) = c.read_some(millis(500)) {
            panic!("closed after {} of {n} frames: {got:?}", got.len());
        }
    }
    assert!(buf.is_empty(), "unexpected bytes after the frames: {buf:?}");
    got
}

fn read_frame(c: &mut HttpConn) -> (u8, Vec<u8>) {
    read_frames(c, 1).remove(0)
}

/// Sends a refused upgrade; checks the JSON error. Refusals found by the handshake check
/// (400, 426) close the connection; the relay's own (404 for an unknown path) may keep it
/// alive like any other answered request, and then it must still serve.
fn refused(relay: &Relay, raw: &[u8]) -> RawResponse {
    let mut c = HttpConn::connect(relay.addr()).unwrap();
    let r = c.roundtrip(raw, T).unwrap();
    assert_ne!(r.status, 101, "{r:?}");
    let v = r.json();
    assert!(v["error"].is_string(), "{v}");
    if r.status == 400 || r.status == 426 {
        assert!(
            r.closes(),
            "a malformed upgrade closes the connection: {r:?}"
        );
    }
    if r.closes() {
        assert!(c.wait_closed(T));
    } else {
        let next = c
            .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
            .unwrap();
        assert_eq!(next.status, 200, "kept alive but not serving: {next:?}");
    }
    r
}

#[test]
fn upgrade_errors() {
    let relay = echo_relay();
    let cases: &[(&str, Vec<u8>, u16)] = &[
        // handshake::validate refuses a non-GET upgrade with 400 (RFC 6455 §4.1 item 2).
        (
            "POST",
            upgrade_request("POST", "/test/echo", "HTTP/1.1", &[("Content-Length", "0")]),
            400,
        ),
        (
            "HTTP/1.0",
            upgrade_request("GET", "/test/echo", "HTTP/1.0", &[]),
            400,
        ),
        (
            "missing key",
            upgrade_request(
                "GET",
                "/test/echo",
                "HTTP/1.1",
                &[("Sec-WebSocket-Key", "")],
            ),
            400,
        ),
        // base64 of 8 bytes, not 16 (RFC 6455 §4.1 item 7).
        (
            "short key",
            upgrade_request(
                "GET",
                "/test/echo",
                "HTTP/1.1",
                &[("Sec-WebSocket-Key", "AAAAAAAAAAA=")],
            ),
            400,
        ),
        (
            "key not base64",
            upgrade_request(
                "GET",
                "/test/echo",
                "HTTP/1.1",
                &[("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!==")],
            ),
            400,
        ),
        (
            "Connection without upgrade",
            upgrade_request(
                "GET",
                "/test/echo",
                "HTTP/1.1",
                &[("Connection", "keep-alive")],
            ),
            400,
        ),
        (
            "unknown WS path",
            upgrade_request("GET", "/no/such/socket", "HTTP/1.1", &[]),
            404,
        ),
    ];
    for (name, raw, status) in cases {
        let r = refused(&relay, raw);
        assert_eq!(r.status, *status, "{name}: {r:?}");
    }
    // RFC 6455 §4.4: a version we do not speak gets 426 and the versions we do.
    let r = refused(
        &relay,
        &upgrade_request(
            "GET",
            "/test/echo",
            "HTTP/1.1",
            &[("Sec-WebSocket-Version", "8")],
        ),
    );
    assert_eq!(r.status, 426, "{r:?}");
    assert_eq!(r.header("sec-websocket-version"), Some("13"), "{r:?}");
    // The loop is fine afterwards.
    assert_eq!(get(relay.addr(), "/", &[]).status, 200);
}

#[test]
fn accept_key_of_the_rfc_sample_and_token_list_connection() {
    let relay = echo_relay();
    for connection in [
        "Upgrade",
        "keep-alive, Upgrade",
        "UPGRADE",
        "foo,upgrade , bar",
    ] {
        let mut c = HttpConn::connect(relay.addr()).unwrap();
        let raw = upgrade_request(
            "GET",
            "/test/echo",
            "HTTP/1.1",
            &[
                ("Connection", connection),
                ("Upgrade", "WebSocket"),
                // We negotiate no extension (the issue: no permessage-deflate).
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; client_max_window_bits",
                ),
            ],
        );
        let r = c.roundtrip(&raw, T).unwrap();
        assert_eq!(r.status, 101, "Connection: {connection}: {r:?}");
        assert_eq!(r.header("sec-websocket-accept"), Some(SAMPLE_ACCEPT));
        assert!(r
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
        assert!(r.header("sec-websocket-extensions").is_none(), "{r:?}");
        c.send(&small_frame(0x1, b"hi")).unwrap();
        assert_eq!(read_frame(&mut c), (0x1, b"hi".to_vec()));
    }
}

#[test]
fn dribbled_handshake_and_frame_work() {
    let relay = echo_relay();
    let mut c = HttpConn::connect(relay.addr()).unwrap();
    c.dribble(&upgrade_request("GET", "/test/echo", "HTTP/1.1", &[]))
        .unwrap();
    let r = c.read_response(T).unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("sec-websocket-accept"), Some(SAMPLE_ACCEPT));
    c.dribble(&small_frame(0x1, b"dribbled")).unwrap();
    assert_eq!(read_frame(&mut c), (0x1, b"dribbled".to_vec()));
}

#[test]
fn frames_in_the_handshake_packet_are_processed() {
    let relay = echo_relay();
    let mut raw = upgrade_request("GET", "/test/echo", "HTTP/1.1", &[]);
    raw.extend_from_slice(&small_frame(0x1, b"first"));
    raw.extend_from_slice(&small_frame(0x9, b"are you there"));
    raw.extend_from_slice(&small_frame(0x2, b"second"));
    let mut c = HttpConn::connect(relay.addr()).unwrap();
    c.send(&raw).unwrap();
    let r = c.read_response(T).unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    // Text echo, pong (RFC 6455 §5.5.3: same payload), binary echo: in arrival order.
    let got = read_frames(&mut c, 3);
    assert_eq!(
        got,
        vec![
            (0x1, b"first".to_vec()),
            (0xA, b"are you there".to_vec()),
            (0x2, b"second".to_vec())
        ]
    );
}

#[test]
fn echo_route_is_off_by_default() {
    let relay = Relay::start(&[]);
    let r = refused(
        &relay,
        &upgrade_request("GET", "/test/echo", "HTTP/1.1", &[]),
    );
    assert_eq!(r.status, 404, "{r:?}");
}

#[test]
fn close_handshake_echoes_code() {
    let relay = echo_relay();
    let mut c = HttpConn::connect(relay.addr()).unwrap();
    c.send(&upgrade_request("GET", "/test/echo", "HTTP/1.1", &[]))
        .unwrap();
    assert_eq!(c.read_response(T).unwrap().status, 101);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send(&small_frame(0x8, &payload)).unwrap();
    let (op, p) = read_frame(&mut c);
    assert_eq!(op, 0x8);
    assert_eq!(p.get(..2), Some(&1000u16.to_be_bytes()[..]));
    assert!(c.wait_closed(T));
    assert!(c.buffered().is_empty(), "bytes after the close frame");
}
