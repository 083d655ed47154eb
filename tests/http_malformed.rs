//! HTTP/1.1 framing against the real binary: keep-alive, pipelining, dribbled bytes, every
//! request-smuggling form we reject (RFC 9112 §6), HTTP/1.0, `Expect: 100-continue`, HEAD,
//! chunked request bodies, and the response writer's common headers and JSON errors.

mod support;
use support::*;

const T: Duration = DEFAULT_TIMEOUT;

fn read(c: &mut HttpConn) -> RawResponse {
    match c.read_response(T) {
        Ok(r) => r,
        Err(e) => panic!("no response: {e}"),
    }
}

/// The body of `GET /` (`{"status":"ok"}`), which carries no clock-dependent field.
fn is_root_ok(r: &RawResponse) -> bool {
    r.status == 200 && r.json() == json!({"status": "ok"})
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let relay = Relay::start(&[]);
    let mut c = HttpConn::to(&relay);
    for i in 0..5 {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = read(&mut c);
        assert!(is_root_ok(&r), "request {i}: {r:?}");
        assert!(!r.closes(), "request {i} closed the connection: {r:?}");
    }
    // Still open: one more works.
    let r = c
        .roundtrip(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", T)
        .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn pipelined_requests_answered_in_order() {
    let relay = Relay::start(&[]);
    let mut c = HttpConn::to(&relay);
    c.send(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
          DELETE /search HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let a = read(&mut c);
    let b = read(&mut c);
    let d = read(&mut c);
    assert!(is_root_ok(&a), "{a:?}");
    assert_eq!(b.status, 404, "{b:?}");
    assert_eq!(d.status, 405, "{d:?}");
    assert!(!d.closes());
}

#[test]
fn dribbled_request_equals_one_write() {
    let relay = Relay::start(&[]);
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n"[..],
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"formula\":\"1\"}",
        b"POST /roll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let one = http_request(relay.addr(), raw);
        let slow = dribble(relay.addr(), raw);
        let what = String::from_utf8_lossy(raw);
        assert_eq!(one.status, slow.status, "{what}");
        assert_eq!(one.body, slow.body, "{what}");
        assert_eq!(one.closes(), slow.closes(), "{what}");
    }
}

/// Each smuggling form (RFC 9112 §6.1, §6.3, §5.2, §2.2, §3.2) gets a 400 with a JSON error
/// and the connection closed: we no longer know where the next request would start.
#[test]
fn smuggling_forms_rejected_with_400_and_close() {
    let relay = Relay::start(&[]);
    let cases: &[(&str, &[u8])] = &[
        ("CL+TE", b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE+CL", b"POST /roll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("CL +1", b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na"),
        ("CL 1,2", b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Length: 1,2\r\n\r\nab"),
        ("CL 1 2", b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\nab"),
        ("CL -1", b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        ("CL hex", b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\na"),
        ("two differing CLs", b"POST /roll HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ("TE gzip, chunked", b"POST /roll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("TE identity", b"POST /roll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
        ("TE chunked, chunked", b"POST /roll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        ("obs-fold tab", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n"),
        ("bare LF everywhere", b"GET / HTTP/1.1\nHost: x\n\n"),
        ("bare LF in a header", b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"),
        ("control char in target", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("DEL in target", b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        // A route that reads a body without a key (a keyed route refuses the head first).
        ("bad chunk size", b"POST /auth/pair HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ];
    for (name, raw) in cases {
        let mut c = HttpConn::to(&relay);
        // A second, valid request right behind: it must not be answered.
        let mut bytes = raw.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        c.send(&bytes).unwrap();
        let r = match c.read_response(T) {
            Ok(r) => r,
            Err(e) => panic!("{name}: no response: {e}"),
        };
        assert_eq!(r.status, 400, "{name}: {r:?}");
        assert!(r.closes(), "{name}: no Connection: close: {r:?}");
        let v = r.json();
        assert!(v["error"].is_string(), "{name}: {v}");
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{name}: {v}");
        assert!(c.wait_closed(T), "{name}: connection left open");
        assert!(
            c.buffered().is_empty(),
            "{name}: something answered the smuggled request: {:?}",
            String::from_utf8_lossy(c.buffered())
        );
    }
    // The loop survived all of it.
    assert!(is_root_ok(&get(relay.addr(), "/", &[])));
}

#[test]
fn http10_closes_by_default_and_keeps_alive_on_request() {
    let relay = Relay::start(&[]);
    let mut c = HttpConn::to(&relay);
    let r = c.roundtrip(b"GET / HTTP/1.0\r\n\r\n", T).unwrap();
    assert!(is_root_ok(&r), "{r:?}");
    assert!(r.closes(), "{r:?}");
    assert!(c.wait_closed(T));

    let mut c = HttpConn::to(&relay);
    let r = c
        .roundtrip(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", T)
        .unwrap();
    assert!(is_root_ok(&r), "{r:?}");
    let ka = r.header("connection").unwrap_or("").to_ascii_lowercase();
    assert!(
        ka.contains("keep-alive"),
        "HTTP/1.0 keep-alive not confirmed: {r:?}"
    );
    // A second request on the same connection works, and without keep-alive it closes.
    let r = c.roundtrip(b"GET / HTTP/1.0\r\n\r\n", T).unwrap();
    assert!(is_root_ok(&r), "{r:?}");
    assert!(c.wait_closed(T));
}

#[test]
fn connection_close_is_honoured() {
    let relay = Relay::start(&[]);
    let mut c = HttpConn::to(&relay);
    let r = c
        .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", T)
        .unwrap();
    assert!(is_root_ok(&r));
    assert!(r.closes(), "{r:?}");
    assert!(c.wait_closed(T));
    // Token list, any case.
    let mut c = HttpConn::to(&relay);
    let r = c
        .roundtrip(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, CLOSE\r\n\r\n",
            T,
        )
        .unwrap();
    assert!(r.closes(), "{r:?}");
    assert!(c.wait_closed(T));
}

#[test]
fn expect_100_continue_then_final_response() {
    let relay = Relay::start(&[]);
    let mut c = HttpConn::to(&relay);
    let body = br#"{"formula":"1d20"}"#;
    c.send(
        format!(
            "POST /auth/pair HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let interim = read(&mut c);
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(body).unwrap();
    let r = read(&mut c);
    // /auth/pair needs no key and reads its body: no code in it → 400.
    assert_eq!(r.status, 400, "body consumed, then checked: {r:?}");
    // The connection is still usable afterwards.
    let r = c
        .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
        .unwrap();
    assert!(is_root_ok(&r), "{r:?}");
}

#[test]
fn head_has_no_body_but_the_get_content_length() {
    let relay = Relay::start(&[]);
    let mut c = HttpConn::to(&relay);
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let h = c.read_head_response(T).unwrap();
    assert_eq!(h.status, 200);
    let g = c
        .roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
        .unwrap();
    // If HEAD had sent a body, its bytes would have been read as the GET's status line.
    assert!(is_root_ok(&g), "{g:?}");
    let len = g.body.len().to_string();
    assert_eq!(h.header("content-length"), Some(len.as_str()), "{h:?}");
}

#[test]
fn chunked_request_body_is_consumed_and_connection_reused() {
    let relay = Relay::start(&[]);
    let mut c = HttpConn::to(&relay);
    c.send(
        b"POST /auth/pair HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\n{\"for\r\n\
          A;ext=1\r\nmula\":\"1\"}\r\n\
          0\r\nX-Trailer: y\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let r = read(&mut c);
    assert_eq!(r.status, 400, "no code in the body: {r:?}");
    assert!(!r.closes(), "{r:?}");
    let r = read(&mut c);
    assert!(
        is_root_ok(&r),
        "the chunked body leaked into the next request: {r:?}"
    );
}

#[test]
fn not_found_and_method_not_allowed() {
    let relay = Relay::start(&[]);
    let r = get(relay.addr(), "/no/such/route", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "Not found"}));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = http_request(
        relay.addr(),
        b"DELETE /search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405, "{r:?}");
    let allow = r
        .header("allow")
        .unwrap_or_else(|| panic!("no Allow: {r:?}"));
    assert!(
        allow.split(',').any(|m| m.trim() == "GET"),
        "Allow should list GET: {allow}"
    );
    assert!(r.json()["error"].is_string());
}

#[test]
fn common_response_headers() {
    let relay = Relay::start(&[]);
    for path in ["/", "/nope"] {
        let r = get(relay.addr(), path, &[]);
        let server = r.header("server").unwrap_or("");
        assert_eq!(server, format!("fvtt-relay/{}", env!("CARGO_PKG_VERSION")));
        // RFC 9110 §5.6.7 IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes).
        let date = r.header("date").unwrap_or("");
        assert_eq!(date.len(), 29, "{date:?}");
        assert!(
            date.ends_with(" GMT") && date.as_bytes()[3] == b',',
            "{date:?}"
        );
        let cl = r.header("content-length").unwrap_or("");
        assert_eq!(cl, r.body.len().to_string(), "{r:?}");
    }
}
