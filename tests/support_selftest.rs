//! Self-tests of tests/support that need no relay: the parsers against canned bytes, the
//! clients against std and tungstenite servers, and FakeWorld against a tiny in-test relay.

// tungstenite's server handshake callback fixes its (large) error type.
#![allow(clippy::result_large_err)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;
use support::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::{Message, WebSocket};

// ---- pure codecs --------------------------------------------------------------------------

#[test]
fn base64_rfc4648_vectors() {
    // RFC 4648 §10.
    let cases: &[(&str, &str)] = &[
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in cases {
        assert_eq!(
            base64_encode(plain.as_bytes()),
            *encoded,
            "encode {plain:?}"
        );
        assert_eq!(
            base64_decode(encoded).unwrap(),
            plain.as_bytes(),
            "decode {encoded:?}"
        );
    }
    assert!(base64_decode("Zm9v!").is_err());
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
}

#[test]
fn ws_accept_key_rfc6455_sample() {
    // RFC 6455 §1.3.
    assert_eq!(
        ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn relay_url_matches_module_protocol_example() {
    // module-protocol.md §1.2, the worked example.
    let mut cfg = WorldConfig::new("fvtt_abc123", "t");
    cfg.world_id = "my-world".into();
    cfg.world_title = "My World & Co".into();
    cfg.foundry_version = "13.345".into();
    cfg.system_id = "dnd5e".into();
    cfg.system_title = "Dungeons & Dragons Fifth Edition".into();
    cfg.system_version = "5.1.2".into();
    cfg.custom_name = Some("GM Laptop".into());
    assert_eq!(
        cfg.relay_path(),
        "/relay?id=fvtt_abc123&worldId=my-world&worldTitle=My+World+%26+Co&foundryVersion=13.345\
         &systemId=dnd5e&systemTitle=Dungeons+%26+Dragons+Fifth+Edition&systemVersion=5.1.2&customName=GM+Laptop"
    );
    cfg.base_path = "/".into();
    cfg.custom_name = None;
    assert!(cfg.relay_path().starts_with("//relay?id=fvtt_abc123&"));
    assert!(!cfg.relay_path().contains("customName"));
    assert_eq!(form_encode("a+b/c~é"), "a%2Bb%2Fc%7E%C3%A9");
}

#[test]
fn backoff_schedule_is_the_modules() {
    // module-protocol.md §1.5: 1, 2, 4, 8, 16, then 30 s.
    let base = millis(1000);
    let got: Vec<u64> = (1..=8).map(|n| backoff(base, n).as_secs()).collect();
    assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(backoff(base, 200), secs(30));
    assert_eq!(backoff(millis(20), 3), millis(80));
}

#[test]
fn chunked_decoder_any_split() {
    let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: v\r\n\r\nNEXT";
    let body_end = wire.len() - 4;
    for split in 0..=body_end {
        let mut dec = ChunkedDecoder::default();
        let mut buf = wire[..split].to_vec();
        let used = dec.feed(&buf).unwrap();
        buf.drain(..used);
        buf.extend_from_slice(&wire[split..]);
        let used = dec.feed(&buf).unwrap();
        assert!(dec.done(), "split {split}");
        assert_eq!(dec.out, b"Wikipedia in\r\n\r\nchunks.", "split {split}");
        assert_eq!(&buf[used..], b"NEXT", "split {split}");
    }
    assert!(ChunkedDecoder::default().feed(b"zz\r\n").is_err());
    assert!(ChunkedDecoder::default().feed(b"1\r\nabc").is_err());
    assert_eq!(
        ChunkedDecoder::default().feed(b"1\r\nab").unwrap(),
        4,
        "waits for the CRLF"
    );
}

/// Parses `input` fed in two pieces at every split point; all results must agree.
fn sse_parse(input: &[u8]) -> (Vec<SseEvent>, Vec<String>, Option<u64>, String) {
    let mut first = None;
    for split in 0..=input.len() {
        let mut p = SseParser::default();
        p.feed(&input[..split]);
        p.feed(&input[split..]);
        let evs: Vec<SseEvent> = std::iter::from_fn(|| p.next_event()).collect();
        let got = (evs, p.comments.clone(), p.retry, p.last_event_id.clone());
        match &first {
            None => first = Some(got),
            Some(f) => assert_eq!(
                &got,
                f,
                "split at {split} of {:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
    first.unwrap()
}

fn ev(id: Option<&str>, event: &str, data: &str) -> SseEvent {
    SseEvent {
        id: id.map(str::to_string),
        event: event.into(),
        data: data.into(),
    }
}

#[test]
fn sse_parser_whatwg_rules() {
    let cases: &[(&[u8], &[SseEvent])] = &[
        (b"data: a\n\n", &[]),
        (b"data: YHOO\ndata: +2\ndata: 10\n\n", &[]),
        (b": keepalive\n\n", &[]),
        (b"event: add\ndata: 73857293\n\n", &[]),
        (b"data:x\r\n\r\ndata:y\r\rdata: z\n\n", &[]),
        (b"event: only\n\n", &[]),
        (b"data\n\n", &[]),
        (b"data: unfinished", &[]),
        (b"\xEF\xBB\xBFdata: bom\n\n", &[]),
        (b"id: 7\ndata: x\n\nid: 8\0\ndata: y\n\n", &[]),
    ];
    let expected: Vec<Vec<SseEvent>> = vec![
        vec![ev(None, "message", "a")],
        vec![ev(None, "message", "YHOO\n+2\n10")],
        vec![],
        vec![ev(None, "add", "73857293")],
        vec![
            ev(None, "message", "x"),
            ev(None, "message", "y"),
            ev(None, "message", "z"),
        ],
        vec![],
        vec![ev(None, "message", "")],
        vec![],
        vec![ev(None, "message", "bom")],
        vec![ev(Some("7"), "message", "x"), ev(None, "message", "y")],
    ];
    for ((input, _), want) in cases.iter().zip(expected) {
        let (got, _, _, _) = sse_parse(input);
        assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
    }
    // `data` with no value yields an empty line: one event with data "" (WHATWG example 3
    // dispatches "" then "\n" for "data\n\ndata\ndata\n\n").
    let (got, _, _, _) = sse_parse(b"data\n\ndata\ndata\n\n");
    assert_eq!(
        got,
        vec![ev(None, "message", ""), ev(None, "message", "\n")]
    );
    let (_, comments, retry, last_id) =
        sse_parse(b": keepalive\n:x\nretry: 1500\nretry: 1x\nid: 9\n\n");
    assert_eq!(comments, vec!["keepalive".to_string(), "x".to_string()]);
    assert_eq!(retry, Some(1500));
    assert_eq!(last_id, "9");
}

// ---- raw HTTP against a std server --------------------------------------------------------

/// Serves one connection: reads until the request head (and `expect_body` more bytes) has
/// arrived, hands the bytes back, writes `response`, then closes.
fn one_shot_server(
    response: Vec<u8>,
    expect_body: usize,
) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() >= p + 4 + expect_body {
                    break;
                }
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        s.write_all(&response).unwrap();
        got
    });
    (addr, h)
}

#[test]
fn http_parses_content_length_chunked_and_close_delimited() {
    let (addr, h) = one_shot_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 11\r\n\r\n{\"ok\":true}".to_vec(),
        0,
    );
    let r = get(addr, "/x?y=1", &[("x-api-key", "k")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"ok": true}));
    assert_eq!(r.header("CONTENT-TYPE"), Some("application/json"));
    assert_eq!(r.headers_all("x-a"), vec!["1", "2"]);
    let req = String::from_utf8(h.join().unwrap()).unwrap();
    assert!(req.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{req}");
    assert!(
        req.contains("\r\nx-api-key: k\r\n") && req.contains("\r\nConnection: close\r\n"),
        "{req}"
    );

    let (addr, _h) = one_shot_server(
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        0,
    );
    let r = post_json(addr, "/p", &[], &json!({"a": 1}));
    assert_eq!(
        (r.status, r.chunked, r.text().as_str()),
        (400, true, "hello")
    );

    let (addr, _h) = one_shot_server(b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(), 0);
    let r = http_request(addr, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (r.version, r.text().as_str(), r.closes()),
        (0, "until close", true)
    );
}

#[test]
fn http_post_sends_body_and_length() {
    let body = json!({"formula": "1d20"});
    let len = body.to_string().len();
    let (addr, h) = one_shot_server(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), len);
    let r = post_json(addr, "/roll", &[], &body);
    assert_eq!((r.status, r.body.len()), (204, 0));
    let req = String::from_utf8(h.join().unwrap()).unwrap();
    assert!(req.contains(&format!("Content-Length: {len}\r\n")), "{req}");
    assert!(req.contains("Content-Type: application/json\r\n"), "{req}");
    assert!(req.ends_with(&body.to_string()), "{req}");
}

#[test]
fn http_keep_alive_pipelined_and_head() {
    let (addr, _h) = one_shot_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none\
          HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\
          HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n\
          HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\ntwo"
            .to_vec(),
        0,
    );
    let mut c = HttpConn::connect(addr).unwrap();
    c.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let a = c.read_response(secs(5)).unwrap();
    let b = c.read_head_response(secs(5)).unwrap();
    let n = c.read_response(secs(5)).unwrap();
    let d = c.read_response(secs(5)).unwrap();
    assert_eq!((a.status, a.text().as_str()), (200, "one"));
    assert_eq!(
        (b.status, b.body.len(), b.header("content-length")),
        (200, 0, Some("100"))
    );
    assert_eq!((n.status, n.body.len()), (304, 0));
    assert_eq!((d.status, d.text().as_str()), (201, "two"));
    assert!(c.wait_closed(secs(5)));
    assert!(matches!(
        c.read_response(millis(200)),
        Err(ReadError::Closed { .. })
    ));
}

#[test]
fn http_read_times_out_and_dribble_delivers_every_byte() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        thread::sleep(millis(400));
        drop(s);
    });
    let mut c = HttpConn::connect(addr).unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        c.read_response(millis(150)),
        Err(ReadError::Timeout { .. })
    ));
    assert!(t0.elapsed() < secs(2));
    h.join().unwrap();

    let raw = b"POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    let (addr, h) = one_shot_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        5,
    );
    let r = dribble(addr, raw);
    assert_eq!(r.text(), "ok");
    assert_eq!(h.join().unwrap(), raw.to_vec());
}

// ---- SSE against a std server -------------------------------------------------------------

#[test]
fn sse_client_reads_chunked_stream_until_end() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let n = s.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        let chunk = |s: &mut TcpStream, text: &str| {
            s.write_all(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes())
                .unwrap();
        };
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        chunk(&mut s, "event: connected\ndata: {\"clientId\":\"c1\"}\n\n");
        thread::sleep(millis(50));
        chunk(&mut s, ": keepalive\n\n");
        // An event split across two chunks, and a chunk-size line split across writes.
        chunk(&mut s, "event: roll\nda");
        let rest = "ta: {\"n\":1}\n\n ".repeat(2);
        let size = format!("{:x}", rest.len());
        assert!(size.len() == 2);
        s.write_all(&size.as_bytes()[..1]).unwrap();
        thread::sleep(millis(30));
        s.write_all(format!("{}\r\n{rest}\r\n0\r\n\r\n", &size[1..]).as_bytes())
            .unwrap();
        req
    });
    let mut sse =
        SseClient::connect(addr, "/rolls/subscribe?clientId=c1", &[("x-api-key", "k")]).unwrap();
    let e = sse.next_event(secs(5)).unwrap();
    assert_eq!(
        (e.event.as_str(), e.json()),
        ("connected", json!({"clientId": "c1"}))
    );
    let e = sse.next_event(secs(5)).unwrap();
    assert_eq!(
        (e.event.as_str(), e.data.as_str(), e.id),
        ("roll", "{\"n\":1}", None)
    );
    // The second copy starts with a space: a field named " ta", ignored; no event follows.
    assert_eq!(sse.comments(), 1);
    assert!(sse.wait_ended(secs(5)));
    assert!(sse.next_event(millis(50)).is_none());
    let req = h.join().unwrap();
    assert!(
        req.contains("Accept: text/event-stream\r\n") && req.contains("x-api-key: k\r\n"),
        "{req}"
    );
}

#[test]
fn sse_refusal_returns_the_response() {
    let (addr, _h) = one_shot_server(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"error\":\"Invalid client ID\"}"[..].to_vec(),
        0,
    );
    // The canned length is deliberately 2 bytes short of the body: the reader must stop at
    // Content-Length, not at the close.
    let r = SseClient::connect(addr, "/chat/subscribe", &[])
        .err()
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "{\"error\":\"Invalid client ID");
}

// ---- WebSocket client against a tungstenite server ----------------------------------------

/// Accepts one WebSocket with tungstenite's server handshake, captures the request target
/// and headers, and hands the socket to `serve`.
fn ws_server<F>(serve: F) -> (SocketAddr, thread::JoinHandle<String>)
where
    F: FnOnce(&mut WebSocket<TcpStream>) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(secs(5))).unwrap();
        let mut target = String::new();
        let mut ws =
            tungstenite::accept_hdr(s, |req: &tungstenite::handshake::server::Request, resp| {
                target = req.uri().to_string();
                Ok(resp)
            })
            .unwrap();
        serve(&mut ws);
        target
    });
    (addr, h)
}

#[test]
fn ws_client_echo_and_close_code() {
    let (addr, h) = ws_server(|ws| {
        loop {
            match ws.read() {
                Ok(Message::Text(t)) if t.as_str() == "{\"bye\":true}" => break,
                Ok(Message::Text(t)) => ws.send(Message::text(t.as_str())).unwrap(),
                Ok(_) => {}
                Err(e) => panic!("server read: {e}"),
            }
        }
        ws.send(Message::Ping(vec![1u8].into())).unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::from(4002),
            reason: "Invalid auth message".into(),
        }))
        .unwrap();
        while ws.read().is_ok() {}
    });
    let mut c = ws_connect(addr, "/ws/api?x=1", &[("Origin", "http://o")]).unwrap();
    assert_eq!(c.handshake.status, 101);
    c.send_json(&json!({"type": "ping", "n": 1})).unwrap();
    assert_eq!(c.recv_json(secs(5)), Some(json!({"type": "ping", "n": 1})));
    assert!(c.recv_json(millis(100)).is_none(), "nothing else was sent");
    c.send_json(&json!({"bye": true})).unwrap();
    assert_eq!(
        c.recv_close(secs(5)),
        Some((4002, "Invalid auth message".to_string()))
    );
    assert_eq!(h.join().unwrap(), "/ws/api?x=1");
}

#[test]
fn ws_connect_refused_carries_status_and_body() {
    let body = "{\"error\":\"Missing client ID\"}";
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (addr, h) = one_shot_server(resp.into_bytes(), 0);
    let err = ws_connect(addr, "/relay", &[("Sec-WebSocket-Version", "8")])
        .err()
        .unwrap();
    assert_eq!(err.status(), Some(400));
    assert_eq!(
        err.response().unwrap().json(),
        json!({"error": "Missing client ID"})
    );
    let req = String::from_utf8(h.join().unwrap()).unwrap();
    assert!(
        req.contains("Sec-WebSocket-Version: 8\r\n") && !req.contains(": 13\r\n"),
        "{req}"
    );
}

// ---- FakeWorld against a tiny in-test relay -----------------------------------------------

/// A hand-driven relay side: accepts module sockets one at a time.
struct MiniRelay {
    listener: TcpListener,
}

struct ModuleSide {
    ws: WebSocket<TcpStream>,
    target: String,
    origin: Option<String>,
}

impl MiniRelay {
    fn new() -> MiniRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        MiniRelay { listener }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    fn accept_tcp(&self, timeout: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(secs(5))).unwrap();
                    return Some(s);
                }
                Err(_) if Instant::now() < deadline => thread::sleep(millis(5)),
                Err(_) => return None,
            }
        }
    }

    fn accept(&self, timeout: Duration) -> ModuleSide {
        let s = self.accept_tcp(timeout).expect("no module connection");
        let mut target = String::new();
        let mut origin = None;
        let ws =
            tungstenite::accept_hdr(s, |req: &tungstenite::handshake::server::Request, resp| {
                target = req.uri().to_string();
                origin = req
                    .headers()
                    .get("origin")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(resp)
            })
            .unwrap();
        ModuleSide { ws, target, origin }
    }

    /// Answers one upgrade attempt with a plain HTTP error, as a relay refusing it would.
    fn refuse(&self, timeout: Duration) -> bool {
        let Some(mut s) = self.accept_tcp(timeout) else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy");
        true
    }
}

impl ModuleSide {
    fn recv(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn recv_type(&mut self, ty: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.recv(deadline.saturating_duration_since(Instant::now()))?;
            if v["type"] == ty {
                return Some(v);
            }
        }
    }

    fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    fn close(&mut self, code: u16, reason: &str) {
        let _ = self.ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        }));
        let deadline = Instant::now() + secs(2);
        while Instant::now() < deadline && self.ws.read().is_ok() {}
    }
}

/// Accepts the world's next connection, reads its auth message, answers `auth-success`,
/// and waits until the world counts itself connected.
fn accept_authed(relay: &MiniRelay, world: &FakeWorld) -> ModuleSide {
    let mut m = relay.accept(secs(5));
    m.recv(secs(5)).unwrap();
    m.send(json!({"type": "auth-success"}));
    assert!(world.wait_connected(secs(5)));
    m
}

fn quick_config(token: &str) -> WorldConfig {
    let mut cfg = WorldConfig::new("fvtt_selftest0001", token);
    cfg.reconnect_base = millis(40);
    cfg.deferred_retry = millis(150);
    cfg.connect_timeout = secs(2);
    cfg
}

#[test]
fn world_handshake_requests_and_events() {
    let relay = MiniRelay::new();
    let mut cfg = quick_config("tok-1");
    cfg.ping_interval = millis(150);
    let world = FakeWorld::start(relay.addr(), cfg.clone());
    let mut m = relay.accept(secs(5));
    assert_eq!(m.target, cfg.relay_path());
    assert_eq!(m.origin.as_deref(), Some("http://localhost:30000"));
    assert_eq!(
        m.recv(secs(5)),
        Some(json!({"type": "auth", "token": "tok-1"}))
    );

    // Before auth-success everything is dropped (module-protocol.md §1.3).
    m.send(json!({"type": "entity", "requestId": "early", "uuid": "Actor.x"}));
    m.send(json!({"type": "event-subscription-update", "channel": "chat-events", "count": 1}));
    assert!(wait_for(secs(5), || world.dropped_before_auth().len() == 2));
    assert!(!world.is_connected());

    m.send(json!({"type": "auth-success"}));
    assert_eq!(m.recv(secs(5)), Some(json!({"type": "ping"})));
    let pl = m.recv(secs(5)).unwrap();
    assert_eq!(pl["type"], "player-list");
    assert_eq!(
        pl["users"][0],
        json!({"id": "cpvaGKk3hgoBCzCS", "name": "Gamemaster", "role": 4, "active": true})
    );
    assert!(world.wait_connected(secs(5)));
    assert_eq!(world.auth_success_count(), 1);
    assert_eq!(
        world.subscription("chat-events"),
        0,
        "the early update was dropped"
    );

    // Requests: echo requestId (any JSON value), reply type <type>-result.
    m.send(json!({"type": "entity", "requestId": 42, "uuid": "Actor.abc"}));
    let r = m.recv_type("entity-result", secs(5)).unwrap();
    assert_eq!(
        (r["requestId"].clone(), r["uuid"].clone()),
        (json!(42), json!("Actor.abc"))
    );
    assert!(r["data"].is_object());

    // Unknown types and the app-level ping get no reply (§3.1, §1.7).
    m.send(json!({"type": "no-such-type", "requestId": "u"}));
    m.send(json!({"type": "ping"}));
    m.send(json!({"type": "roll", "requestId": "r1", "formula": "2d20kh"}));
    let r = m.recv_type("roll-result", secs(5)).unwrap();
    assert_eq!(
        (r["requestId"].clone(), r["data"]["roll"]["formula"].clone()),
        (json!("r1"), json!("2d20kh"))
    );
    assert!(world
        .sent()
        .iter()
        .all(|v| v["type"] != "pong" && v["type"] != "no-such-type-result"));

    // JSON pings keep coming at the configured interval.
    let before = world.sent().iter().filter(|v| v["type"] == "ping").count();
    assert!(wait_for(secs(5), || world
        .sent()
        .iter()
        .filter(|v| v["type"] == "ping")
        .count()
        >= before + 2));

    // Events only flow on enabled channels (§4.1).
    assert!(!world.emit_event("chat-event", chat_event_create("m1", "hi")));
    m.send(json!({"type": "event-subscription-update", "channel": "chat-events", "count": 2}));
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 2));
    assert!(world.emit_event("chat-event", chat_event_create("m1", "hi")));
    let e = m.recv_type("chat-event", secs(5)).unwrap();
    assert_eq!(
        (
            e["data"]["eventType"].clone(),
            e["data"]["data"]["content"].clone()
        ),
        (json!("create"), json!("hi"))
    );
    m.send(json!({"type": "event-subscription-update", "channel": "chat-events", "count": 0}));
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 0));
    assert!(!world.emit_event("chat-event", json!({})));
    assert_eq!(
        world.subscription_log(),
        vec![
            ("chat-events".to_string(), 2),
            ("chat-events".to_string(), 0)
        ]
    );
    assert!(
        world.wait_request("no-such-type", secs(1)).is_some(),
        "received messages are recorded"
    );
}

#[test]
fn world_knobs_delay_silence_error_download_disconnect() {
    let relay = MiniRelay::new();
    let world = FakeWorld::start(relay.addr(), quick_config("tok"));
    let mut m = accept_authed(&relay, &world);

    // A delayed reply does not hold up the next request.
    world.set_delay("search", millis(300));
    m.send(json!({"type": "search", "requestId": "slow", "query": "goblin"}));
    m.send(json!({"type": "players", "requestId": "fast"}));
    let first = m.recv_type("players-result", secs(5)).unwrap();
    assert_eq!(first["requestId"], "fast");
    let second = m.recv_type("search-result", secs(5)).unwrap();
    assert_eq!(
        (second["requestId"].clone(), second["query"].clone()),
        (json!("slow"), json!("goblin"))
    );

    world.set_silent("world-info", true);
    m.send(json!({"type": "world-info", "requestId": "w"}));
    m.send(json!({"type": "chat-flush", "requestId": "after"}));
    let r = m.recv(secs(5)).unwrap();
    assert_eq!(r["requestId"], "after", "the silenced request got no reply");

    // Error shapes, including the last-round quirk (module-protocol.md §3.3).
    world.set_error("last-round", Some("No active combat"));
    world.set_error("download-file", Some("File not found"));
    m.send(json!({"type": "last-round", "requestId": "lr"}));
    let r = m.recv(secs(5)).unwrap();
    assert_eq!(
        r,
        json!({"type": "encounter-navigation", "requestId": "lr", "error": "No active combat"})
    );
    m.send(json!({"type": "download-file", "requestId": "d0", "path": "x.bin"}));
    let r = m.recv(secs(5)).unwrap();
    assert_eq!(
        (r["success"].clone(), r["error"].clone()),
        (json!(false), json!("File not found"))
    );
    world.set_error("download-file", None);

    // A 3 MiB download decodes back to the pattern.
    world.set_download_mib(3);
    m.send(json!({"type": "download-file", "requestId": "d1", "path": "maps/big.png"}));
    let r = m.recv_type("download-file-result", secs(20)).unwrap();
    let (mime, bytes) = decode_data_url(r["fileData"].as_str().unwrap()).unwrap();
    assert_eq!(
        (mime.as_str(), r["filename"].clone(), r["mimeType"].clone()),
        ("image/png", json!("big.png"), json!("image/png"))
    );
    assert_eq!(bytes.len(), 3 << 20);
    assert!(bytes == pattern_bytes(3 << 20));

    // disconnect_on drops TCP; the world backs off and comes back (1006 is transient).
    world.disconnect_on("kill");
    m.send(json!({"type": "kill", "requestId": "k"}));
    assert!(world.wait_close(1, secs(5)).is_some());
    assert_eq!(world.last_close(), Some((1006, String::new())));
    let mut m2 = relay.accept(secs(5));
    assert_eq!(m2.recv(secs(5)).unwrap()["type"], "auth");
    m2.send(json!({"type": "auth-success"}));
    assert!(world.wait_auth_successes(2, secs(5)));
    m2.send(json!({"type": "kill", "requestId": "k2"}));
    assert_eq!(
        m2.recv_type("kill-result", secs(5)).unwrap()["requestId"],
        "k2",
        "disconnect_on is one-shot"
    );
}

#[test]
fn world_close_codes_drive_reconnects() {
    let relay = MiniRelay::new();
    let world = FakeWorld::start(relay.addr(), quick_config("tok"));

    // 1001: transient, reconnect after the base delay.
    let mut m = accept_authed(&relay, &world);
    m.send(json!({"type": "event-subscription-update", "channel": "hooks", "count": 1}));
    assert!(world.wait_subscription("hooks", secs(5), |n| n == 1));
    m.close(1001, "Server shutting down");
    assert_eq!(
        world.wait_close(1, secs(5)),
        Some((1001, "Server shutting down".to_string()))
    );

    // 4004: deferred retry, outside the backoff budget.
    let mut m = relay.accept(secs(5));
    m.recv(secs(5)).unwrap();
    m.close(4004, "Client ID already connected");
    let closed_at = Instant::now();
    assert_eq!(world.wait_close(2, secs(5)).unwrap().0, 4004);
    let mut m = relay.accept(secs(5));
    assert!(
        closed_at.elapsed() >= millis(120),
        "4004 waits for the deferred retry"
    );
    assert_eq!(m.recv(secs(5)).unwrap()["type"], "auth");
    m.send(json!({"type": "auth-success"}));
    assert!(world.wait_auth_successes(2, secs(5)));
    assert_eq!(
        world.subscription("hooks"),
        1,
        "channel state survives reconnects (§4.1)"
    );

    // 4002: permanent, token cleared, no further attempt.
    m.close(4002, "Connection token revoked");
    assert!(world.wait_finished(secs(5)));
    assert!(world.token_cleared());
    assert_eq!(
        world.last_close(),
        Some((4002, "Connection token revoked".to_string()))
    );
    assert!(relay.accept_tcp(millis(300)).is_none());
    assert_eq!(world.connect_attempts(), 3);
}

#[test]
fn world_close_1000_stops_and_stop_sends_1000() {
    let relay = MiniRelay::new();
    let mut world = FakeWorld::start(relay.addr(), quick_config("tok"));
    let mut m = relay.accept(secs(5));
    m.recv(secs(5)).unwrap();
    m.close(1000, "Replaced by reconnect");
    assert!(world.wait_finished(secs(5)));
    assert!(!world.token_cleared());
    assert!(relay.accept_tcp(millis(300)).is_none());

    let relay = MiniRelay::new();
    world = FakeWorld::start(relay.addr(), quick_config("tok"));
    let mut m = accept_authed(&relay, &world);
    world.stop();
    let mut close = None;
    let deadline = Instant::now() + secs(5);
    while close.is_none() && Instant::now() < deadline {
        match m.ws.read() {
            Ok(Message::Close(f)) => {
                close = f.map(|f| (u16::from(f.code), f.reason.as_str().to_string()))
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(close, Some((1000, "Disconnecting".to_string())));
    assert!(world.is_finished());
}

#[test]
fn world_backoff_doubles_then_gives_up() {
    let relay = MiniRelay::new();
    let mut cfg = quick_config("tok");
    cfg.reconnect_max_attempts = 3;
    let world = FakeWorld::start(relay.addr(), cfg);
    for _ in 0..4 {
        assert!(relay.refuse(secs(5)));
    }
    assert!(world.wait_finished(secs(5)));
    assert!(world.gave_up());
    assert!(relay.accept_tcp(millis(300)).is_none());
    let t = world.attempt_times();
    assert_eq!(t.len(), 4);
    // Delays 40, 80, 160 ms (base 40 ms, doubling).
    for (i, want) in [40u64, 80, 160].iter().enumerate() {
        let gap = t[i + 1] - t[i];
        assert!(
            gap >= millis(*want),
            "gap {i} was {gap:?}, want >= {want} ms"
        );
    }
    assert!(
        world.connect_errors()[0].contains("503"),
        "{:?}",
        world.connect_errors()
    );
}

/// Every ws_type of spec/routes.tsv (column 3), and the reply type the module sends.
const ROUTES_WS_TYPES: &[&str] = &[
    "ability-check",
    "ability-save",
    "add-effect",
    "add-to-encounter",
    "attune-item",
    "break-concentration",
    "chat-delete",
    "chat-flush",
    "chat-messages",
    "chat-send",
    "concentration-save",
    "create",
    "create-canvas-document",
    "create-folder",
    "create-scene",
    "create-user",
    "death-save",
    "decrease",
    "delete",
    "delete-canvas-document",
    "delete-folder",
    "delete-scene",
    "delete-user",
    "download-file",
    "encounters",
    "end-encounter",
    "entity",
    "equip-item",
    "execute-js",
    "file-system",
    "get-actor-details",
    "get-canvas-documents",
    "get-concentration",
    "get-effects",
    "get-folder",
    "get-playlists",
    "get-scene",
    "get-status-effects",
    "get-user",
    "get-users",
    "give",
    "increase",
    "kill",
    "last-roll",
    "last-round",
    "last-turn",
    "long-rest",
    "macro-execute",
    "macros",
    "measure-distance",
    "modify-currency",
    "modify-experience",
    "modify-item-charges",
    "move-token",
    "next-round",
    "next-turn",
    "play-sound",
    "players",
    "playlist-next",
    "playlist-play",
    "playlist-stop",
    "playlist-volume",
    "prepare-spell",
    "remove",
    "remove-effect",
    "remove-from-encounter",
    "roll",
    "rolls",
    "scene-raw-image",
    "scene-screenshot",
    "search",
    "select",
    "selected",
    "sheet-screenshot",
    "short-rest",
    "skill-check",
    "start-encounter",
    "stop-sound",
    "structure",
    "switch-scene",
    "transfer-currency",
    "update",
    "update-canvas-document",
    "update-scene",
    "update-user",
    "upload-file",
    "use-ability",
    "use-feature",
    "use-item",
    "use-spell",
    "world-info",
];

#[test]
fn replies_cover_every_routed_type() {
    let ctx = ReplyCtx {
        world_id: "w".into(),
        world_title: "W".into(),
        foundry_version: "13.345".into(),
        system_id: "dnd5e".into(),
        system_title: "D&D".into(),
        system_version: "5.1.2".into(),
        users: vec![json!({"id": "u1", "name": "Gamemaster", "role": 4, "active": true})],
        download_size: None,
    };
    for ty in ROUTES_WS_TYPES {
        let req = json!({"type": ty, "requestId": {"n": ty}, "uuid": "Actor.a", "data": {"name": "n"}, "id": "u1"});
        let r = module_reply(&req, &ctx).unwrap_or_else(|| panic!("no reply for {ty}"));
        assert_eq!(r["type"], format!("{ty}-result"), "{ty}");
        assert_eq!(r["requestId"], json!({"n": ty}), "{ty}");
        assert!(r.get("error").is_none(), "{ty}: {r}");
        let e = error_reply(&req, "boom").unwrap();
        assert_eq!(
            (e["requestId"].clone(), e["error"].clone()),
            (json!({"n": ty}), json!("boom")),
            "{ty}"
        );
    }
    // Binary-bearing replies decode (relay-protocol.md §2.6).
    let shot = module_reply(
        &json!({"type": "sheet-screenshot", "requestId": 1, "format": "png"}),
        &ctx,
    )
    .unwrap();
    let (mime, png) = decode_data_url(shot["imageData"].as_str().unwrap()).unwrap();
    assert_eq!(
        (mime.as_str(), png.as_slice(), shot["success"].clone()),
        ("image/png", TINY_PNG, json!(true))
    );
    let dl = module_reply(
        &json!({"type": "download-file", "requestId": 1, "path": "a/b.txt"}),
        &ctx,
    )
    .unwrap();
    assert_eq!(
        decode_data_url(dl["fileData"].as_str().unwrap()).unwrap().1,
        DEFAULT_FILE_TEXT
    );
    // dnd5e types are not answered on another system; unknown types never.
    let mut other = ctx.clone();
    other.system_id = "pf2e".into();
    assert!(module_reply(&json!({"type": "skill-check", "requestId": 1}), &other).is_none());
    assert!(module_reply(&json!({"type": "add-item", "requestId": 1}), &ctx).is_none());
    // Upload bytes from either accepted form.
    let up = json!({"fileData": data_url("text/plain", b"hi"), "binaryData": null});
    assert_eq!(upload_bytes(&up), Some(b"hi".to_vec()));
    assert_eq!(
        upload_bytes(&json!({"binaryData": [104, 105]})),
        Some(b"hi".to_vec())
    );
    assert_eq!(upload_bytes(&json!({"binaryData": [300]})), None);
}

// ---- the process handle -------------------------------------------------------------------

#[test]
fn relay_start_never_hangs_and_cleans_up() {
    let dir = TempDir::new("selftest");
    let path = dir.path().to_path_buf();
    assert!(path.is_dir());
    let t0 = Instant::now();
    match Relay::try_start_in(dir.path(), &[], &[]) {
        // The finished binary: it must print its address and exit 0 on SIGTERM.
        Ok(mut relay) => {
            assert_ne!(relay.addr().port(), 0);
            assert_eq!(
                relay.url("/api/health"),
                format!("http://{}/api/health", relay.addr())
            );
            assert!(relay.stdout_lines()[0].starts_with(READY_PREFIX));
            relay.sigterm();
            let status = relay.wait_exit(secs(10)).expect("no exit after SIGTERM");
            assert!(status.success(), "exit {status:?}\n{}", relay.logs());
        }
        // A binary that exits without the ready line is reported, not waited on forever.
        Err(f) => {
            assert!(f.status.is_some(), "{f:?}");
            assert!(t0.elapsed() < START_TIMEOUT);
        }
    }
    drop(dir);
    assert!(!path.exists(), "TempDir is removed on drop");
}
