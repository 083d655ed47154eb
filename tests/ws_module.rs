//! The `/relay` world link as the Foundry module sees it (module-protocol.md §1, issue 4):
//! query checks before the upgrade, first-message auth and its close codes, the heartbeat,
//! duplicate links, message handling, large messages and shutdown.

mod support;
use support::*;

use std::time::Instant;

fn relay_query(id: &str) -> String {
    format!("id={id}&worldId=w1&worldTitle=My+World+%26+Co&systemId=dnd5e&customName=GM+Laptop")
}

/// A raw module link at `path`, authenticated; returns it after `auth-success`.
fn raw_module(p: &ProvisionedRelay, path: &str) -> WsClient {
    let mut ws = ws_connect(p.relay.addr(), path, &[]).unwrap_or_else(|e| panic!("{path}: {e:?}"));
    ws.send_json(&json!({"type": "auth", "token": p.keys.token}))
        .expect("send auth");
    let v = ws
        .recv_json(secs(5))
        .unwrap_or_else(|| panic!("{path}: no auth reply"));
    assert_eq!(v, json!({"type": "auth-success"}), "{path}");
    ws
}

fn clients(p: &ProvisionedRelay) -> Value {
    let r = get(
        p.relay.addr(),
        "/clients",
        &[("x-api-key", p.keys.api_key.as_str())],
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn online_count(p: &ProvisionedRelay) -> u64 {
    get(p.relay.addr(), "/api/status", &[]).json()["connectedWorlds"]
        .as_u64()
        .unwrap_or(99)
}

#[test]
fn query_errors_are_400_before_the_upgrade() {
    let p = start_provisioned(&[]);
    for path in ["/relay", "/relay?worldId=w", "/relay?id="] {
        match ws_connect(p.relay.addr(), path, &[]) {
            Err(e) => assert_eq!(e.status(), Some(400), "{path}: {e:?}"),
            Ok(_) => panic!("{path}: upgraded"),
        }
    }
    let path = format!("/relay?id={}&token={}", p.keys.client_id, p.keys.token);
    match ws_connect(p.relay.addr(), &path, &[]) {
        Err(e) => {
            assert_eq!(e.status(), Some(400), "{e:?}");
            let body = e.response().map(|r| r.text()).unwrap_or_default();
            assert!(
                body.contains("Token URL parameter is not supported"),
                "{body}"
            );
        }
        Ok(_) => panic!("token in the URL was accepted"),
    }
}

#[test]
fn every_module_path_form_works_and_metadata_is_form_decoded() {
    let p = start_provisioned(&[]);
    let q = relay_query(&p.keys.client_id);
    for path in ["/relay", "/relay/", "//relay", "/"] {
        let mut ws = raw_module(&p, &format!("{path}?{q}"));
        let v = clients(&p);
        let c = &v["clients"][0];
        assert_eq!(c["isOnline"], true, "{path}: {v}");
        assert_eq!(c["worldTitle"], "My World & Co", "{path}");
        assert_eq!(c["customName"], "GM Laptop", "{path}");
        ws.close();
        assert!(
            wait_for(secs(5), || online_count(&p) == 0),
            "{path}: still online after close"
        );
    }
}

#[test]
fn the_first_message_must_authenticate() {
    let p = start_provisioned(&["--auth-timeout", "1s"]);
    let path = format!("/relay?{}", relay_query(&p.keys.client_id));
    let addr = p.relay.addr();

    // Silence: closed 4002 after the auth timeout.
    let t0 = Instant::now();
    let mut ws = ws_connect(addr, &path, &[]).expect("upgrade");
    assert_eq!(
        ws.recv_close(secs(5)),
        Some((4002, "Authentication timeout".into()))
    );
    let took = t0.elapsed();
    assert!(took >= millis(900) && took < secs(4), "{took:?}");

    // Not an auth message.
    for bad in [
        r#"{"type":"ping"}"#,
        "not json",
        r#"{"type":"auth"}"#,
        r#"{"type":"auth","token":""}"#,
    ] {
        let mut ws = ws_connect(addr, &path, &[]).expect("upgrade");
        ws.send_text(bad).expect("send");
        assert_eq!(
            ws.recv_close(secs(5)),
            Some((4002, "Invalid auth message".into())),
            "{bad}"
        );
    }

    // A wrong token, or the right token for another clientId.
    let mut ws = ws_connect(addr, &path, &[]).expect("upgrade");
    ws.send_json(&json!({"type": "auth", "token": "0".repeat(64)}))
        .expect("send");
    let (code, _) = ws.recv_close(secs(5)).expect("closed");
    assert_eq!(code, 4002);
    let other = format!("/relay?{}", relay_query("fvtt_0000000000000001"));
    let mut ws = ws_connect(addr, &other, &[]).expect("upgrade");
    ws.send_json(&json!({"type": "auth", "token": p.keys.token}))
        .expect("send");
    let (code, _) = ws.recv_close(secs(5)).expect("closed");
    assert_eq!(code, 4002);
    assert_eq!(online_count(&p), 0);

    // Success is exactly {"type":"auth-success"}, byte for byte.
    let mut ws = ws_connect(addr, &path, &[]).expect("upgrade");
    ws.send_json(&json!({"type": "auth", "token": p.keys.token}))
        .expect("send");
    match ws.recv(secs(5)) {
        Some(tungstenite::Message::Text(t)) => assert_eq!(t.as_str(), r#"{"type":"auth-success"}"#),
        other => panic!("expected auth-success, got {other:?}"),
    }
    // And the module's JSON ping gets a JSON pong.
    ws.send_json(&json!({"type": "ping"})).expect("ping");
    assert_eq!(ws.recv_json(secs(5)), Some(json!({"type": "pong"})));
}

#[test]
fn a_module_that_stops_answering_pings_is_dropped() {
    let p = start_provisioned(&[
        "--module-ping-interval",
        "1s",
        "--module-idle-timeout",
        "2s",
    ]);
    let path = format!("/relay?{}", relay_query(&p.keys.client_id));
    // A module that keeps reading answers the control pings and stays.
    let mut alive = raw_module(&p, &path);
    let t0 = Instant::now();
    while t0.elapsed() < millis(3500) {
        let _ = alive.recv(millis(200));
    }
    assert!(!alive.is_ended(), "a reading module was dropped");
    assert_eq!(online_count(&p), 1);
    alive.close();
    assert!(wait_for(secs(5), || online_count(&p) == 0));

    // A raw client that authenticates and then never reads answers no ping.
    let (mut ws, _) = ws_handshake(p.relay.addr(), &path, &[], secs(5)).expect("upgrade");
    ws.send(tungstenite::Message::text(
        json!({"type": "auth", "token": p.keys.token}).to_string(),
    ))
    .expect("auth");
    assert!(wait_for(secs(3), || online_count(&p) == 1), "never online");
    let t0 = Instant::now();
    assert!(
        wait_for(secs(6), || online_count(&p) == 0),
        "a silent module was not dropped"
    );
    let took = t0.elapsed();
    assert!(took >= millis(1000), "dropped too early: {took:?}");
}

/// Two GM tabs (module doubles) from one address, the module's 4004 poll shortened from
/// 30 s to `poll`: the first keeps the slot, the second waits and is connected within one
/// poll (plus slack) of the first leaving; nothing is ever closed with 1000.
fn two_tabs(p: &ProvisionedRelay, leave: impl FnOnce(&mut FakeWorld)) {
    let poll = millis(500);
    let mut cfg = WorldConfig::new(&p.keys.client_id, &p.keys.token);
    cfg.deferred_retry = poll;
    let mut first = FakeWorld::start(p.relay.addr(), cfg.clone());
    assert!(first.wait_connected(secs(5)), "first tab never connected");
    let second = FakeWorld::start(p.relay.addr(), cfg);
    assert_eq!(
        second.wait_close(1, secs(5)),
        Some((4004, "Client ID already connected".into()))
    );
    // It keeps polling (every 500 ms) and keeps being told to wait while the first is
    // alive, for longer than a ping interval plus the stale margin (so the first's pongs are
    // what keep its slot).
    assert!(
        second.wait_attempts(10, secs(15)),
        "the second tab stopped polling"
    );
    assert!(first.is_connected(), "the first tab lost its slot");
    assert!(first.closes().is_empty(), "{:?}", first.closes());
    assert_eq!(online_count(p), 1);
    let t0 = Instant::now();
    leave(&mut first);
    assert!(
        second.wait_connected(secs(15)),
        "the second tab never took the slot: {:?}",
        second.closes()
    );
    let took = t0.elapsed();
    eprintln!("second tab connected {took:?} after the first left");
    for (who, w) in [("first", &first), ("second", &second)] {
        assert!(
            w.closes().iter().all(|c| c.0 != 1000),
            "{who} was closed with 1000: {:?}",
            w.closes()
        );
    }
    assert!(
        second.closes().iter().all(|c| c.0 == 4004),
        "{:?}",
        second.closes()
    );
    assert_eq!(online_count(p), 1);
}

#[test]
fn a_second_tab_from_the_same_address_waits_with_4004_and_takes_over_when_the_first_closes() {
    let p = start_provisioned(&[]);
    // The tab closes: the browser sends a close frame (1001 going away).
    two_tabs(&p, FakeWorld::close_tab);
}

#[test]
fn a_second_tab_takes_over_from_a_first_that_vanished_without_a_close() {
    // The first tab's machine drops off the network: no close frame, no pongs. With pings
    // every second and a 2 s margin (slack for a busy machine) it counts as stale 3 s after
    // its last sign of life.
    let p = start_provisioned(&[
        "--module-ping-interval",
        "1s",
        "--module-stale-margin",
        "2s",
        "--module-idle-timeout",
        "30s",
    ]);
    two_tabs(&p, |first| first.freeze());
}

#[test]
fn unknown_messages_are_ignored_and_never_echoed() {
    let (p, (id2, tok2)) = start_provisioned_edited(&[], |st, _| {
        let id = "fvtt_00000000000000c2".to_string();
        let (_, tok) = st.create_connection_token(&id, 1);
        (id, tok)
    });
    let (relay, keys) = (&p.relay, &p.keys);
    let a = FakeWorld::online(relay.addr(), &keys.client_id, &keys.token);
    let b = FakeWorld::online(relay.addr(), &id2, &tok2);
    // Each world pings once after auth-success; let that pong arrive first.
    assert!(a.wait_request("pong", secs(5)).is_some());
    assert!(b.wait_request("pong", secs(5)).is_some());
    let before_a = a.received_len();
    let before_b = b.received_len();
    for m in [
        json!({"type": "totally-unknown", "data": {"x": 1}}),
        json!({"type": "search-result", "requestId": "nobody-asked", "results": []}),
        json!({"no": "type"}),
        json!([1, 2, 3]),
    ] {
        assert!(a.send_json(&m));
    }
    assert!(a.send_text("not json at all"));
    assert!(a.send_json(&json!({"type": "module-notify", "event": "test", "details": "hi"})));
    std::thread::sleep(millis(500));
    assert_eq!(a.received_len(), before_a, "{:?}", a.received());
    assert_eq!(b.received_len(), before_b, "{:?}", b.received());
    // Both links are still up and serving.
    assert!(a.is_connected() && b.is_connected());
    let r = get(
        relay.addr(),
        &format!("/search?query=x&clientId={id2}"),
        &[("x-api-key", keys.api_key.as_str())],
    );
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_20_mib_module_message_is_accepted() {
    let p = start_provisioned(&[]);
    let path = format!("/relay?{}", relay_query(&p.keys.client_id));
    let mut ws = raw_module(&p, &path);
    let addr = p.relay.addr();
    let key = p.keys.api_key.clone();
    let caller = std::thread::spawn(move || {
        let raw = build_request(
            "GET",
            "/download?path=big.bin",
            &addr.to_string(),
            &[("x-api-key", key.as_str()), ("Connection", "close")],
            None,
        );
        try_http_request(addr, &raw, secs(60))
    });
    let req = ws.recv_type("download-file", secs(5)).expect("request");
    let bytes = pattern_bytes(15 << 20); // 20 MiB once base64-encoded
    let reply = json!({"type": "download-file-result", "requestId": req["requestId"],
        "success": true, "fileData": data_url("application/octet-stream", &bytes),
        "filename": "big.bin", "mimeType": "application/octet-stream"});
    let text = reply.to_string();
    assert!(text.len() >= 20 << 20, "{}", text.len());
    ws.send_text(&text).expect("send 20 MiB");
    let r = caller.join().expect("caller").expect("response");
    assert_eq!(r.status, 200, "{:?}", r.raw_head);
    assert!(r.body == bytes, "corrupted: {} bytes", r.body.len());
    // The link survived.
    ws.send_json(&json!({"type": "ping"})).expect("ping");
    assert_eq!(ws.recv_json(secs(5)), Some(json!({"type": "pong"})));
}

#[test]
fn sigterm_closes_the_module_with_1001() {
    let mut p = start_provisioned(&[]);
    let path = format!("/relay?{}", relay_query(&p.keys.client_id));
    let mut ws = raw_module(&p, &path);
    p.relay.sigterm();
    let (code, reason) = ws.recv_close(secs(10)).expect("a close frame");
    assert_eq!(code, 1001, "reason {reason:?}");
    assert!(p.relay.wait_exit(secs(10)).is_some(), "relay did not exit");
}

#[test]
fn an_overloaded_world_link_is_closed_1013_never_1008() {
    // A queue towards the world of at most 1 MiB, and a module that stops reading.
    let p = start_provisioned(&[
        "--module-max-message",
        "1M",
        "--module-max-frame",
        "1M",
        "--module-outq-hard-bytes",
        "1M",
        "--outq-soft-bytes",
        "256K",
        "--close-linger",
        "10s",
        "--rate-limit-per-minute",
        "100000",
    ]);
    let path = format!("/relay?{}", relay_query(&p.keys.client_id));
    let mut ws = raw_module(&p, &path);
    let slow_modules = || {
        get(
            p.relay.addr(),
            "/metrics",
            &[("x-api-key", p.keys.admin_key.as_str())],
        )
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("fvtt_relay_slow_consumers_total{transport=\"module\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
    };
    // Uploads of 200 KiB each travel as ~270 KiB JSON messages: a few fill the queue once
    // the socket buffers are full, because the module does not read.
    let body = vec![b'u'; 200 * 1024];
    let deadline = Instant::now() + secs(30);
    let mut cut = false;
    while Instant::now() < deadline {
        let mut conn = HttpConn::to(&p.relay);
        let raw = build_request(
            "POST",
            "/upload?path=x&filename=f.bin",
            &p.relay.addr().to_string(),
            &[
                ("x-api-key", p.keys.api_key.as_str()),
                ("content-type", "application/octet-stream"),
                ("connection", "close"),
            ],
            Some(&body),
        );
        let _ = conn.send(&raw);
        drop(conn);
        if slow_modules() == 1 {
            cut = true;
            break;
        }
    }
    assert!(cut, "the link that never reads was never cut off");
    // Reading now (within the linger) drains the queued frames and then the close: a
    // transient code, so the module reconnects by itself; 1008 would erase its token.
    let close = ws.recv_close(secs(10));
    assert_eq!(close.as_ref().map(|c| c.0), Some(1013), "{close:?}");
}

/// A raw module link whose TCP peer looks like `ip` to the relay (it trusts the loopback
/// proxy's X-Forwarded-For), authenticated.
fn module_from(p: &ProvisionedRelay, ip: &str) -> (WsClient, Option<(u16, String)>) {
    let path = format!("/relay?{}", relay_query(&p.keys.client_id));
    let mut ws = ws_connect(p.relay.addr(), &path, &[("x-forwarded-for", ip)])
        .unwrap_or_else(|e| panic!("{ip}: {e:?}"));
    ws.send_json(&json!({"type": "auth", "token": p.keys.token}))
        .expect("send auth");
    match ws.recv_json(secs(5)) {
        Some(v) => {
            assert_eq!(v, json!({"type": "auth-success"}), "{ip}");
            (ws, None)
        }
        None => {
            let close = ws.recv_close(secs(5));
            (ws, close)
        }
    }
}

#[test]
fn another_host_waits_for_a_live_link_and_replaces_a_dead_one() {
    // Pings every second: a link silent for 1 s + 5 s counts as dead; the idle drop (30 s)
    // stays out of the way.
    let p = start_provisioned(&[
        "--trust-forwarded",
        "--module-ping-interval",
        "1s",
        "--module-idle-timeout",
        "30s",
    ]);
    // A live link (it reads, so its pongs go back) keeps the slot.
    let (mut live, refused) = module_from(&p, "10.0.0.1");
    assert_eq!(refused, None);
    let t0 = Instant::now();
    while t0.elapsed() < millis(7000) {
        let _ = live.recv(millis(200));
    }
    let (_, refused) = module_from(&p, "10.0.0.2");
    assert_eq!(
        refused,
        Some((4004, "Client ID already connected".into())),
        "a live link from another host keeps its slot"
    );
    live.close();
    assert!(wait_for(secs(5), || online_count(&p) == 0));

    // A link that stops reading answers no ping: after 6 s another host takes over.
    let (mut dead, refused) = module_from(&p, "10.0.0.3");
    assert_eq!(refused, None);
    std::thread::sleep(millis(7000));
    let (_newer, refused) = module_from(&p, "10.0.0.4");
    assert_eq!(refused, None, "the newcomer replaces the dead link");
    assert_eq!(online_count(&p), 1);
    // The old socket was told a transient code (1001), never one that erases its token.
    assert_eq!(
        dead.recv_close(secs(10)).map(|c| c.0),
        Some(1001),
        "old link's close"
    );
}
