//! `/ws/events`, the read-only event gateway, against the real binary (issue 6): every
//! refusal before the upgrade, origin cases, the rate limit, both 4000 closes, snapshot,
//! events, re-subscribe, replacement (4001), ping, an oversize frame (1009) and a slow
//! consumer that is dropped while another keeps receiving.

mod support;

use support::*;

/// `/ws/events` sockets on a provisioned relay, with the full-scope key.
trait EventsEnv {
    /// `/ws/events/<world>`.
    fn path_world(&self) -> String;
    /// Upgrades `path`; panics on a refusal.
    fn open(&self, path: &str) -> WsClient;
    /// Open and subscribe; returns the socket and its snapshot.
    fn subscribed(&self, path: &str, sub: Value) -> (WsClient, Value);
}

impl EventsEnv for ProvisionedRelay {
    fn path_world(&self) -> String {
        format!("/ws/events/{}", self.keys.client_id)
    }

    fn open(&self, path: &str) -> WsClient {
        match ws_connect(self.relay.addr(), path, &[("x-api-key", self.key())]) {
            Ok(c) => c,
            Err(e) => panic!("{path}: {e:?}"),
        }
    }

    fn subscribed(&self, path: &str, sub: Value) -> (WsClient, Value) {
        let mut c = self.open(path);
        c.send_json(&sub).expect("send subscribe");
        let snap = c.recv_type("snapshot", secs(5)).expect("snapshot");
        (c, snap)
    }
}

fn subscribe(events: Value) -> Value {
    json!({"type": "subscribe", "events": events})
}

/// The refusal's status and body, or a panic if the upgrade went through.
fn refused(r: Result<WsClient, ConnectError>) -> RawResponse {
    match r {
        Ok(_) => panic!("upgrade accepted"),
        Err(e) => match e.response() {
            Some(resp) => resp.clone(),
            None => panic!("no response: {e:?}"),
        },
    }
}

#[test]
fn errors_before_the_upgrade() {
    let env = start_provisioned_with(
        &[],
        &[
            (&["clients:read"], &[]),
            (&["events:subscribe"], &["fvtt_0000000000000000"]),
        ],
    );
    let addr = env.relay.addr();
    let world_path = env.path_world();
    let missing = "Missing token in header, Authorization header, or query parameter";
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/ws/events", vec![], 401, missing),
        (
            "/ws/events",
            vec![("x-api-key", "nope")],
            401,
            "Invalid token",
        ),
        (
            "/ws/events",
            vec![("Authorization", "Bearer nope")],
            401,
            "Invalid token",
        ),
        ("/ws/events?token=nope", vec![], 401, "Invalid token"),
        (
            "/ws/events",
            vec![("x-api-key", &env.keys.extra_keys[0])],
            403,
            "API key lacks required scope: events:subscribe",
        ),
        (
            "/ws/events/fvtt_ffffffffffffffff",
            vec![("x-api-key", env.key())],
            404,
            "Unknown client ID",
        ),
        (
            &world_path,
            vec![("x-api-key", &env.keys.extra_keys[1])],
            403,
            "API key is not authorized for this client",
        ),
    ];
    for (path, headers, status, message) in cases {
        let r = refused(ws_connect(addr, path, &headers));
        assert_eq!(r.status, status, "{path} {headers:?}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"success": false, "error": {"message": message}}),
            "{path}"
        );
    }
}

#[test]
fn every_way_to_present_the_key() {
    let env = start_provisioned_with(&[], &[]);
    let addr = env.relay.addr();
    let key = env.key().to_string();
    let bearer = format!("Bearer {key}");
    let query = format!("/ws/events?token={key}");
    let ways: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/ws/events", vec![("x-api-key", &key)]),
        ("/ws/events", vec![("token", &key)]),
        ("/ws/events", vec![("Authorization", &bearer)]),
        (&query, vec![]),
    ];
    for (path, headers) in ways {
        let mut c = ws_connect(addr, path, &headers).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        c.send_json(&subscribe(json!([]))).expect("send");
        assert!(
            c.recv_type("snapshot", secs(5)).is_some(),
            "{path} {headers:?}"
        );
    }
}

#[test]
fn origin_allow_list() {
    // Empty list: same origin only. No Origin: allowed (the token protects).
    let env = start_provisioned_with(&[], &[]);
    let addr = env.relay.addr();
    let key = env.key().to_string();
    let same = format!("http://{addr}");
    let ok = |origin: Option<&str>| {
        let mut h = vec![("x-api-key", key.as_str())];
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        ws_connect(addr, "/ws/events", &h)
    };
    assert!(ok(None).is_ok());
    assert!(ok(Some(&same)).is_ok());
    let r = refused(ok(Some("https://evil.example")));
    assert_eq!((r.status, r.body.len()), (403, 0));
    let r = refused(ok(Some("null")));
    assert_eq!(r.status, 403);

    let env = start_provisioned_with(
        &[
            "--allowed-ws-origins",
            "https://app.example, https://b.example",
        ],
        &[],
    );
    let addr = env.relay.addr();
    let key = env.key().to_string();
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://b.example", true),
        ("https://c.example", false),
        ("http://app.example", false),
        // The list adds to same-origin, never replaces it (the admin page's live view).
        (&format!("http://{addr}")[..], true),
    ] {
        let r = ws_connect(
            addr,
            "/ws/events",
            &[("x-api-key", &key), ("Origin", origin)],
        );
        assert_eq!(r.is_ok(), allowed, "{origin}");
    }
    // A refusal is logged at info with its origin.
    assert!(
        wait_for(secs(5), || env.relay.logs().contains("https://c.example")),
        "refused origin not logged: {}",
        env.relay.logs()
    );

    // --public-url's origin counts as the relay's own (a proxy may rewrite Host).
    let env = start_provisioned_with(&["--public-url", "https://relay.example/base"], &[]);
    let addr = env.relay.addr();
    let key = env.key().to_string();
    for (origin, allowed) in [
        ("https://relay.example", true),
        ("http://relay.example", false),
        ("https://other.example", false),
    ] {
        let r = ws_connect(
            addr,
            "/ws/events",
            &[("x-api-key", &key), ("Origin", origin)],
        );
        assert_eq!(r.is_ok(), allowed, "{origin}");
    }
}

#[test]
fn upgrade_rate_limit() {
    let env = start_provisioned_with(&["--ws-upgrade-rate-limit", "3"], &[]);
    let addr = env.relay.addr();
    for _ in 0..3 {
        assert!(ws_connect(addr, "/ws/events", &[("x-api-key", env.key())]).is_ok());
    }
    let r = refused(ws_connect(addr, "/ws/events", &[("x-api-key", env.key())]));
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"success": false, "error": {"message": "Rate limit exceeded. Try again later."}})
    );
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

#[test]
fn first_message_must_be_subscribe_within_the_timeout() {
    let env = start_provisioned_with(&["--auth-timeout", "300ms"], &[]);
    let mut c = env.open("/ws/events");
    c.send_json(&json!({"type": "ping"})).expect("send");
    assert_eq!(
        c.recv_close(secs(5)),
        Some((4000, "First message must be subscribe".into()))
    );
    let mut c = env.open("/ws/events");
    assert_eq!(
        c.recv_close(secs(5)),
        Some((4000, "Subscription timeout".into()))
    );
    // Subscribed in time: the deadline passes harmlessly.
    let (mut c, _) = env.subscribed("/ws/events", subscribe(json!(["all"])));
    std::thread::sleep(millis(500));
    c.send_json(&json!({"type": "ping"})).expect("send");
    assert!(c.recv_type("pong", secs(5)).is_some());
}

#[test]
fn snapshot_events_resubscribe_and_ping() {
    let env = start_provisioned_with(&[], &[]);
    let w = env.world();
    let (mut c, snap) = env.subscribed(
        "/ws/events",
        subscribe(json!(["roll-events", "world-disconnected"])),
    );
    let worlds = snap["state"]["worlds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(worlds.len(), 1);
    assert_eq!(worlds[0]["clientId"], env.keys.client_id.as_str());
    assert_eq!(worlds[0]["worldTitle"], "Test World & Co");
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 1));
    assert!(w.emit_event("roll-data", roll_data("r1", "1d20", 7)));
    let ev = c.recv_type("roll", secs(5)).expect("roll event");
    assert_eq!(ev["clientId"], env.keys.client_id.as_str());
    assert_eq!(ev["seq"], 1);
    assert!(ev["timestamp"]
        .as_u64()
        .is_some_and(|t| t > 1_600_000_000_000));
    assert_eq!(ev["data"]["id"], "r1");
    // Re-subscribe: chat only. The module is told both changes.
    c.send_json(&subscribe(json!(["chat-events"])))
        .expect("send");
    assert!(c.recv_type("snapshot", secs(5)).is_some());
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 0));
    assert!(w.wait_subscription("chat-events", secs(5), |n| n == 1));
    assert!(!w.emit_event("roll-data", roll_data("r2", "1d20", 1)));
    assert!(w.emit_event("chat-event", chat_event_create("m1", "hi")));
    let ev = c.recv_json(secs(5)).expect("chat");
    assert_eq!(
        (ev["type"].clone(), ev["seq"].clone()),
        (json!("chat-create"), json!(2))
    );
    c.send_json(&json!({"type": "ping"})).expect("send");
    assert_eq!(c.recv_json(secs(5)), Some(json!({"type": "pong"})));
    // Anything else has no effect; the socket stays.
    c.send_json(&json!({"type": "get", "uuid": "x"}))
        .expect("send");
    c.send_json(&json!({"type": "ping"})).expect("send");
    assert_eq!(c.recv_json(secs(5)), Some(json!({"type": "pong"})));
}

#[test]
fn world_notices() {
    let env = start_provisioned_with(&[], &[]);
    let (mut c, snap) = env.subscribed("/ws/events", subscribe(json!(["all"])));
    assert_eq!(snap["state"]["worlds"], json!([]));
    let mut w = env.world();
    let on = c.recv_type("world-connected", secs(5)).expect("connected");
    assert_eq!(on["clientId"], env.keys.client_id.as_str());
    assert_eq!(on["data"]["worldTitle"], "Test World & Co");
    w.stop();
    let off = c
        .recv_type("world-disconnected", secs(5))
        .expect("disconnected");
    assert_eq!(off["clientId"], env.keys.client_id.as_str());
}

#[test]
fn same_client_id_replaces_the_older_socket() {
    let env = start_provisioned_with(&[], &[]);
    let w = env.world();
    // Exactly what the seed gateway clients send: client_id is the subscriber's own id.
    let sub = json!({"type": "subscribe", "client_id": "python-example", "events": ["hooks"]});
    let (mut old, snap) = env.subscribed("/ws/events", sub.clone());
    assert_eq!(snap["client_id"], "python-example");
    assert_eq!(
        snap["state"]["worlds"][0]["clientId"],
        env.keys.client_id.as_str()
    );
    let (mut new, _) = env.subscribed("/ws/events", sub);
    assert_eq!(
        old.recv_close(secs(5)),
        Some((4001, "Replaced by a newer connection".into()))
    );
    assert!(w.wait_subscription("hooks", secs(5), |n| n == 1));
    assert!(!w.subscription_log().contains(&("hooks".to_string(), 0)));
    assert!(w.emit_event("hook-event", hook_event("updateActor", json!([]))));
    assert!(new.recv_type("updateActor", secs(5)).is_some());
    // Without a client_id one is generated, and nobody is replaced; the path still chooses
    // the world, and so does `worlds`.
    let (_, snap) = env.subscribed(&env.path_world(), subscribe(json!(["hooks"])));
    assert!(snap["client_id"]
        .as_str()
        .is_some_and(|s| s.starts_with("events_")));
    let pick = json!({"type": "subscribe", "worlds": [env.keys.client_id], "events": ["hooks"]});
    let (_, snap) = env.subscribed("/ws/events", pick);
    assert_eq!(snap["state"]["worlds"].as_array().map(Vec::len), Some(1));
    new.send_json(&json!({"type": "ping"})).expect("ping");
    assert!(new.recv_type("pong", secs(5)).is_some(), "replaced wrongly");
}

#[test]
fn oversize_client_frame_closes_1009() {
    let env = start_provisioned_with(&[], &[]);
    let (mut c, _) = env.subscribed("/ws/events", subscribe(json!([])));
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4096));
    c.send_text(&big).expect("send");
    assert_eq!(c.recv_close(secs(5)).map(|c| c.0), Some(1009));
    // At the limit is fine.
    let (mut c, _) = env.subscribed("/ws/events", subscribe(json!([])));
    let pad = 4096 - r#"{"type":"ping","pad":""}"#.len();
    c.send_text(&format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(pad)))
        .expect("send");
    assert!(c.recv_type("pong", secs(5)).is_some());
}

#[test]
fn slow_consumer_is_dropped_and_others_keep_receiving() {
    let env = start_provisioned_with(&["--events-max-queue-messages", "16"], &[]);
    let w = env.world();
    let (mut slow, _) = env.subscribed("/ws/events", subscribe(json!(["hooks"])));
    let (mut good, _) = env.subscribed("/ws/events", subscribe(json!(["hooks"])));
    assert!(w.wait_subscription("hooks", secs(5), |n| n == 2));
    const N: u64 = 300;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        while (seqs.len() as u64) < N {
            match good.recv_json(secs(20)) {
                Some(v) => {
                    let seq = v["seq"].as_u64().unwrap_or(0);
                    seqs.push(seq);
                    let _ = tx.send(seq);
                }
                None => break,
            }
        }
        (seqs, good)
    });
    // 300 events of 64 KiB, paced by the reader: far more than the kernel buffers of a
    // socket nobody reads can hold, while the reading client never falls behind.
    let pad = "p".repeat(64 * 1024);
    for i in 0..N {
        assert!(w.emit_event("hook-event", hook_event("updateToken", json!([i, pad]))));
        assert!(
            rx.recv_timeout(secs(10)).is_ok(),
            "the reader stalled at {i}"
        );
    }
    let (seqs, _good) = reader.join().expect("reader");
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<u64>>(),
        "the reading client got every event in order"
    );
    // Its queue was discarded and a 1008 close queued behind bytes it never read; the close
    // frame reaches it only if it reads before the close linger runs out, so accept both.
    let end = slow.recv_close(secs(20));
    assert!(
        matches!(&end, Some((1008, r)) if r == "Slow consumer")
            || end == Some((1006, String::new())),
        "{end:?}"
    );
    assert!(
        env.relay.logs().contains("slow consumer"),
        "the relay says why"
    );
    // The world link was never held up: it still answers.
    assert!(w.wait_subscription("hooks", secs(5), |n| n == 1));
}

/// `module-notify` reaches `/ws/events` sockets that ask for it (and `all`), is counted in
/// `/metrics`; `player-list` shows who is logged in on `/clients` and the admin API.
#[test]
fn module_notify_and_player_list() {
    let env = start_provisioned_with(&[], &[]);
    let w = env.world();
    let addr = env.relay.addr();
    let (mut notices, _) = env.subscribed("/ws/events", subscribe(json!(["module-notify"])));
    let (mut all, _) = env.subscribed("/ws/events", subscribe(json!(["all"])));
    let (mut hooks, _) = env.subscribed("/ws/events", subscribe(json!(["hooks"])));
    let notice = json!({"type": "module-notify", "event": "settings-change",
        "details": "Setting `wsRelayUrl` was changed", "actor": "Gamemaster",
        "world": "Test World & Co"});
    assert!(w.send_json(&notice));
    for c in [&mut notices, &mut all] {
        let got = c
            .recv_type("module-notify", secs(5))
            .expect("module-notify");
        assert_eq!(got["clientId"], env.keys.client_id.as_str());
        assert_eq!(got["data"]["details"], "Setting `wsRelayUrl` was changed");
        assert_eq!(got["data"]["actor"], "Gamemaster");
        assert!(got["timestamp"].as_u64().is_some());
    }
    hooks.send_json(&json!({"type": "ping"})).expect("ping");
    let next = hooks.recv_json(secs(5)).unwrap_or(Value::Null);
    assert_eq!(next["type"], "pong", "a hooks-only socket got {next}");
    let m = get(
        addr,
        "/metrics",
        &[("x-api-key", env.keys.admin_key.as_str())],
    )
    .text();
    assert!(
        m.lines().any(|l| l == "fvtt_relay_module_notices_total 1"),
        "{m}"
    );

    // player-list (sent by the world right after auth-success).
    let clients = get(addr, "/clients", &[("x-api-key", env.key())]).json();
    let users = &clients["clients"][0]["users"];
    assert_eq!(users[0]["name"], "Gamemaster", "{clients}");
    assert_eq!(users[0]["active"], true);
    let admin = [("x-api-key", env.keys.admin_key.as_str())];
    let worlds = get(addr, "/admin/api/worlds", &admin).json();
    assert_eq!(worlds["worlds"][0]["users"][1]["name"], "test", "{worlds}");
    // A new list replaces the old.
    assert!(w.send_json(&json!({"type": "player-list", "users": [
        {"id": "u9", "name": "Newcomer", "role": 1, "active": true}]})));
    assert!(wait_for(secs(5), || {
        get(addr, "/clients", &[("x-api-key", env.key())]).json()["clients"][0]["users"][0]["name"]
            == "Newcomer"
    }));
}
