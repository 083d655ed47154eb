//! The six SSE routes against the real binary and a simulated world (issue 6;
//! relay-protocol.md §3.3): names and filters per route, headers and first frames,
//! Last-Event-ID resume across a reconnect, world restarts, subscriber counts reaching the
//! module, the per-channel cap, `?apiKey=`, keepalives.

mod support;

use support::*;

/// SSE streams on a provisioned relay, with the full-scope key.
trait SseEnv {
    /// `route?clientId=<world><query>`, connected; panics on a refusal.
    fn sse(&self, route: &str, query: &str) -> SseClient;
    /// `sse` with extra request headers.
    fn sse_with(&self, route: &str, query: &str, headers: &[(&str, &str)]) -> SseClient;
}

impl SseEnv for ProvisionedRelay {
    fn sse(&self, route: &str, query: &str) -> SseClient {
        self.sse_with(route, query, &[])
    }

    fn sse_with(&self, route: &str, query: &str, headers: &[(&str, &str)]) -> SseClient {
        let path = format!("{route}?clientId={}{query}", self.keys.client_id);
        let mut all = vec![("x-api-key", self.key())];
        all.extend_from_slice(headers);
        match SseClient::connect(self.relay.addr(), &path, &all) {
            Ok(c) => c,
            Err(r) => panic!("{path}: {} {}", r.status, r.text()),
        }
    }
}

/// The first frame, `event: connected`, with its data.
fn connected(c: &mut SseClient) -> Value {
    let e = c.next_event(secs(5)).expect("connected frame");
    assert_eq!(e.event, "connected");
    e.json()
}

fn chat_from(id: &str, alias: &str, whisper: &[&str]) -> Value {
    let mut msg = chat_message(id, "hello");
    msg["speaker"] = json!({"alias": alias, "actor": null});
    msg["whisper"] = json!(whisper);
    json!({"eventType": "create", "data": msg})
}

#[test]
fn headers_retry_and_connected_frame() {
    let env = start_provisioned_with(&[], &[]);
    let _w = env.world();
    let mut c = env.sse("/chat/subscribe", "");
    let r = &c.response;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        connected(&mut c),
        json!({"clientId": env.keys.client_id.as_str()})
    );
    assert_eq!(c.retry(), Some(3000));
}

#[test]
fn each_route_names_and_filters() {
    let env = start_provisioned_with(&[], &[]);
    let w = env.world();
    // route, query, channel, module type, (payload, expected name or None = filtered out)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Vec<(Value, Option<&'a str>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "/chat/subscribe",
            "&speaker=Bob",
            "chat-events",
            "chat-event",
            vec![
                (chat_from("c1", "Alice", &[]), None),
                (chat_from("c2", "Bob", &[]), Some("chat-create")),
                (
                    json!({"eventType": "delete", "data": {"id": "c2"}}),
                    Some("chat-delete"),
                ),
            ],
        ),
        (
            "/chat/subscribe",
            "&whisperOnly=true",
            "chat-events",
            "chat-event",
            vec![
                (chat_from("c3", "Bob", &[]), None),
                (chat_from("c4", "Bob", &["u1"]), Some("chat-create")),
            ],
        ),
        (
            "/rolls/subscribe",
            "&userId=u7",
            "roll-events",
            "roll-data",
            vec![
                (
                    json!({"id": "r1", "user": {"id": "u1", "name": "A"}, "rollTotal": 3}),
                    None,
                ),
                (
                    json!({"id": "r2", "user": {"id": "u7", "name": "B"}, "rollTotal": 4}),
                    Some("roll"),
                ),
            ],
        ),
        (
            "/hooks/subscribe",
            "&hooks=updateActor,createItem",
            "hooks",
            "hook-event",
            vec![
                (hook_event("deleteActor", json!([])), None),
                (
                    hook_event("createItem", json!([{"name": "Sword"}])),
                    Some("createItem"),
                ),
            ],
        ),
        (
            "/encounters/subscribe",
            "&encounterId=E1",
            "combat-events",
            "combat-event",
            vec![
                (combat_turn("E2", 1, 0), None),
                (combat_turn("E1", 1, 1), Some("combat-turn")),
            ],
        ),
        (
            "/actor/subscribe",
            "&actorUuid=Actor.A",
            "actor-events",
            "actor-event",
            vec![
                (actor_update("Actor.B", json!({"name": "x"})), None),
                (
                    actor_update("Actor.A", json!({"name": "y"})),
                    Some("actor-update"),
                ),
            ],
        ),
        (
            "/scene/subscribe",
            "&sceneId=S1",
            "scene-events",
            "scene-event",
            vec![
                (scene_token_update("S2", "t", json!({})), None),
                (
                    scene_token_update("S1", "t", json!({"x": 1})),
                    Some("scene-token-update"),
                ),
            ],
        ),
    ];
    for (route, query, channel, ty, events) in cases {
        let mut c = env.sse(route, query);
        let hello = connected(&mut c);
        if route == "/actor/subscribe" {
            assert_eq!(hello["actorUuid"], "Actor.A");
        }
        assert!(w.wait_subscription(channel, secs(5), |n| n == 1), "{route}");
        let mut want = Vec::new();
        for (data, name) in &events {
            assert!(w.emit_event(ty, data.clone()), "{route}: emit");
            if let Some(n) = name {
                // The delivered payload is the inner data (chat: the message itself).
                let inner = if ty == "chat-event" {
                    &data["data"]
                } else {
                    data
                };
                want.push((n.to_string(), inner.clone()));
            }
        }
        for (name, data) in want {
            let e = c
                .next_event(secs(5))
                .unwrap_or_else(|| panic!("{route}: no {name}"));
            assert_eq!(e.event, name, "{route}");
            assert_eq!(e.json(), data, "{route}");
            assert!(
                e.id.as_deref().is_some_and(|i| i.contains('-')),
                "{route}: id"
            );
        }
        drop(c);
        assert!(w.wait_subscription(channel, secs(5), |n| n == 0), "{route}");
    }
}

#[test]
fn counts_reach_the_module() {
    let env = start_provisioned_with(&[], &[]);
    let w = env.world();
    let a = env.sse("/rolls/subscribe", "");
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 1));
    let b = env.sse("/rolls/subscribe", "");
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 2));
    drop(a);
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 1));
    drop(b);
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 0));
    let log: Vec<i64> = w
        .subscription_log()
        .into_iter()
        .filter(|(c, _)| c == "roll-events")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(log, vec![1, 2, 1, 0]);
}

#[test]
fn last_event_id_resumes_across_a_reconnect() {
    let env = start_provisioned_with(&[], &[]);
    let w = env.world();
    // A second stream keeps the channel on while the first is away.
    let _keeper = env.sse("/rolls/subscribe", "");
    let mut a = env.sse("/rolls/subscribe", "");
    connected(&mut a);
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 2));
    for i in 1..=2 {
        w.emit_event("roll-data", roll_data(&format!("r{i}"), "1d20", i));
    }
    let e1 = a.next_named("roll", secs(5)).expect("r1");
    let e2 = a.next_named("roll", secs(5)).expect("r2");
    assert_eq!(
        (e1.json()["id"].clone(), e2.json()["id"].clone()),
        (json!("r1"), json!("r2"))
    );
    let last = a.last_event_id().to_string();
    drop(a);
    assert!(w.wait_subscription("roll-events", secs(5), |n| n == 1));
    for i in 3..=4 {
        w.emit_event("roll-data", roll_data(&format!("r{i}"), "1d20", i));
    }
    let mut b = env.sse_with("/rolls/subscribe", "", &[("Last-Event-ID", &last)]);
    connected(&mut b);
    w.emit_event("roll-data", roll_data("r5", "1d20", 5));
    let got: Vec<Value> = (0..3)
        .map(|_| b.next_named("roll", secs(5)).expect("replayed").json()["id"].clone())
        .collect();
    assert_eq!(got, vec![json!("r3"), json!("r4"), json!("r5")]);
    // An id from another relay process: a reset frame, then live events.
    let mut c = env.sse_with("/rolls/subscribe", "", &[("Last-Event-ID", "feedface-3")]);
    connected(&mut c);
    let reset = c.next_event(secs(5)).expect("reset");
    assert_eq!(reset.event, "reset");
}

#[test]
fn world_restart_keeps_the_stream() {
    let env = start_provisioned_with(&[], &[]);
    let mut cfg = WorldConfig::new(&env.keys.client_id, &env.keys.token);
    cfg.reconnect_base = millis(100);
    let w = FakeWorld::start(env.relay.addr(), cfg);
    assert!(w.wait_connected(secs(10)));
    let mut c = env.sse("/hooks/subscribe", "");
    connected(&mut c);
    assert!(w.wait_subscription("hooks", secs(5), |n| n == 1));
    let before = w.subscription_log().len();
    w.drop_connection();
    let e = c.next_event(secs(5)).expect("world-disconnected");
    assert_eq!(e.event, "world-disconnected");
    assert_eq!(e.json()["clientId"], env.keys.client_id.as_str());
    // The module reconnects; the relay resends the count after auth-success.
    assert!(w.wait_auth_successes(2, secs(10)));
    assert!(wait_for(secs(5), || w.subscription_log().len() > before));
    assert_eq!(w.subscription_log().last(), Some(&("hooks".to_string(), 1)));
    assert!(w.emit_event("hook-event", hook_event("updateActor", json!([]))));
    let e = c.next_event(secs(5)).expect("event after the restart");
    assert_eq!(e.event, "updateActor");
    assert!(!c.is_ended());
}

#[test]
fn offline_known_world_can_be_subscribed() {
    let env = start_provisioned_with(&[], &[]);
    let mut w = env.world();
    w.stop();
    assert!(w.wait_disconnected(secs(5)));
    let mut c = env.sse("/chat/subscribe", "");
    connected(&mut c);
    let e = c.next_event(secs(5)).expect("offline notice");
    assert_eq!(e.event, "world-disconnected");
    let w = env.world();
    assert!(w.wait_subscription("chat-events", secs(5), |n| n == 1));
    assert!(w.emit_event("chat-event", chat_from("m", "Bob", &[])));
    assert_eq!(c.next_event(secs(5)).expect("live").event, "chat-create");
    // A world the relay never saw is 404.
    let r = get(
        env.relay.addr(),
        "/chat/subscribe?clientId=fvtt_ffffffffffffffff",
        &[("x-api-key", env.key())],
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "Invalid client ID");
}

#[test]
fn ten_streams_per_world_and_channel() {
    let env = start_provisioned_with(&[], &[]);
    let w = env.world();
    let mut open: Vec<SseClient> = (0..10).map(|_| env.sse("/scene/subscribe", "")).collect();
    for c in &mut open {
        connected(c);
    }
    assert!(w.wait_subscription("scene-events", secs(5), |n| n == 10));
    let mut over = env.sse("/scene/subscribe", "");
    let e = over.next_event(secs(5)).expect("error frame");
    assert_eq!(e.event, "error");
    assert_eq!(e.json(), json!({"error": "Too many SSE connections"}));
    // A long retry before the error, so a browser's EventSource backs off (--sse-refused-retry).
    assert_eq!(over.retry(), Some(60_000));
    assert!(over.wait_ended(secs(5)));
    // Other channels are separate, and a slot frees when a stream leaves.
    let mut other = env.sse("/actor/subscribe", "");
    connected(&mut other);
    open.pop();
    assert!(w.wait_subscription("scene-events", secs(5), |n| n == 9));
    let mut again = env.sse("/scene/subscribe", "");
    connected(&mut again);
    // The count update travels to the world on its own socket: wait for it, don't race it.
    assert!(w.wait_subscription("scene-events", secs(5), |n| n == 10));
}

#[test]
fn api_key_in_the_query_and_auth_errors() {
    let env = start_provisioned_with(
        &[],
        &[
            (&["clients:read"], &[]),
            (&["events:subscribe"], &["fvtt_0000000000000000"]),
        ],
    );
    let _w = env.world();
    let addr = env.relay.addr();
    let id = env.keys.client_id.clone();
    let key = env.key().to_string();
    let q = format!("/chat/subscribe?clientId={id}&apiKey={key}");
    let mut c = SseClient::connect(addr, &q, &[]).unwrap_or_else(|r| panic!("{}", r.text()));
    connected(&mut c);
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        (format!("/chat/subscribe?clientId={id}"), vec![], 401),
        (
            format!("/chat/subscribe?clientId={id}&apiKey=wrong"),
            vec![],
            401,
        ),
        (
            format!("/chat/subscribe?clientId={id}"),
            vec![("x-api-key", &env.keys.extra_keys[0])],
            403,
        ),
        (
            format!("/chat/subscribe?clientId={id}"),
            vec![("x-api-key", &env.keys.extra_keys[1])],
            403,
        ),
        (format!("/clients?apiKey={key}"), vec![], 401),
    ];
    for (path, headers, status) in cases {
        let r = get(addr, &path, &headers);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
}

#[test]
fn keepalive_comments() {
    let env = start_provisioned_with(&["--sse-keepalive", "200ms"], &[]);
    let _w = env.world();
    let mut c = env.sse("/hooks/subscribe", "");
    connected(&mut c);
    assert!(c.wait_comments(2, secs(5)));
    assert_eq!(
        c.comment_texts().first().map(String::as_str),
        Some("keepalive")
    );
}

/// Six EventSources from one browser origin use up its connections to the host; the seventh
/// stream of one key from one origin logs a hint that points at /ws/events.
#[test]
fn a_seventh_stream_from_one_browser_origin_logs_a_hint() {
    let env = start_provisioned_with(&[], &[]);
    let _w = env.world();
    let origin = [("Origin", "http://app.example")];
    let routes = [
        "/rolls/subscribe",
        "/chat/subscribe",
        "/scene/subscribe",
        "/actor/subscribe",
        "/rolls/subscribe",
        "/chat/subscribe",
    ];
    let mut open: Vec<SseClient> = routes
        .iter()
        .map(|r| env.sse_with(r, "", &origin))
        .collect();
    // Another origin, and a stream without one, count apart.
    open.push(env.sse_with(
        "/scene/subscribe",
        "",
        &[("Origin", "http://other.example")],
    ));
    open.push(env.sse("/scene/subscribe", ""));
    for c in &mut open {
        connected(c);
    }
    assert!(
        !env.relay.logs().contains("SSE streams for"),
        "a hint before the seventh stream:\n{}",
        env.relay.logs()
    );
    let mut seventh = env.sse_with("/actor/subscribe", "", &origin);
    connected(&mut seventh);
    let mut logs = String::new();
    let hinted = wait_for(secs(5), || {
        logs = env.relay.logs();
        logs.contains("7 SSE streams for") && logs.contains("from http://app.example")
    });
    assert!(hinted, "no hint in the log:\n{logs}");
    assert!(logs.contains("/ws/events"), "{logs}");
}
