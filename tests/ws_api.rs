//! `/ws/api` against the real binary and a simulated world (relay-protocol.md §4, ws-api.tsv):
//! authentication (message, header, query) and its 4002 refusals, scope refusal, requests
//! correlated by the caller's requestId, subscriptions (counts reaching the module, duplicate
//! refusal, unsubscribe, filters and `since` resume), module disconnect, the in-flight cap,
//! timeouts, ping/pong and the message size limit.

mod support;

use support::*;

/// A relay on a data dir holding a full-scope key (`keys.api_key`), a read-only key
/// (`keys.extra_keys[0]`) and a paired world.
fn setup(args: &[&str]) -> ProvisionedRelay {
    start_provisioned_with(args, &[(&["entity:read"], &[])])
}

/// `/ws/api` sockets on a provisioned relay.
trait ApiEnv {
    /// Upgrades `path` with `headers`; panics on a refusal.
    fn connect(&self, path: &str, headers: &[(&str, &str)]) -> WsClient;
    /// A socket authenticated by first message with `key`, past its two welcome messages.
    fn client(&self, key: &str) -> WsClient;
}

impl ApiEnv for ProvisionedRelay {
    fn connect(&self, path: &str, headers: &[(&str, &str)]) -> WsClient {
        match ws_connect(self.relay.addr(), path, headers) {
            Ok(c) => c,
            Err(e) => panic!("/ws/api upgrade refused: {e:?}"),
        }
    }

    fn client(&self, key: &str) -> WsClient {
        let mut c = self.connect("/ws/api", &[]);
        send(&mut c, json!({"type": "auth", "token": key}));
        let first = c.recv_json(secs(5)).unwrap_or(Value::Null);
        assert_eq!(first["type"], "auth-success", "{first}");
        let second = c.recv_json(secs(5)).unwrap_or(Value::Null);
        assert_eq!(second["type"], "connected", "{second}");
        c
    }
}

fn send(c: &mut WsClient, v: Value) {
    if let Err(e) = c.send_json(&v) {
        panic!("send failed: {e}");
    }
}

/// The next message carrying `requestId == rid`.
fn reply(c: &mut WsClient, rid: &str) -> Value {
    match c.recv_json_where(secs(10), |v| v["requestId"] == rid) {
        Some(v) => v,
        None => panic!("no reply for {rid}"),
    }
}

#[test]
fn auth_by_message_header_and_query() {
    let s = setup(&[]);
    let _world = s.world();
    // First message, with the documented reply followed by the reference's welcome.
    let mut c = s.connect("/ws/api", &[]);
    send(&mut c, json!({"type": "auth", "token": s.keys.api_key}));
    let a = c.recv_json(secs(5)).unwrap_or(Value::Null);
    assert_eq!(
        a,
        json!({"type": "auth-success", "clientId": s.keys.client_id})
    );
    let w = c.recv_json(secs(5)).unwrap_or(Value::Null);
    assert_eq!(w["type"], "connected");
    assert_eq!(w["clientId"], s.keys.client_id.as_str());
    let types = w["supportedTypes"].as_array().cloned().unwrap_or_default();
    assert_eq!(types.len(), 94);
    assert!(types.contains(&json!("execute-js")) && types.contains(&json!("download-file")));
    assert_eq!(
        w["eventChannels"],
        json!([
            "chat-events",
            "roll-events",
            "hooks",
            "combat-events",
            "actor-events",
            "scene-events"
        ])
    );
    // Header and query: welcomed without any message.
    let key_header = [("x-api-key", s.keys.api_key.as_str())];
    let query = format!(
        "/ws/api?token={}&clientId={}",
        s.keys.api_key, s.keys.client_id
    );
    for (path, headers) in [("/ws/api", &key_header[..]), (query.as_str(), &[][..])] {
        let mut c = s.connect(path, headers);
        let a = c.recv_json(secs(5)).unwrap_or(Value::Null);
        assert_eq!(a["type"], "auth-success", "{path}");
        assert_eq!(
            c.recv_json(secs(5)).unwrap_or(Value::Null)["type"],
            "connected"
        );
        send(&mut c, json!({"type": "ping", "requestId": "p"}));
        assert_eq!(reply(&mut c, "p")["type"], "pong");
    }
    // The world's connection token works too, bound to its world.
    let mut c = s.client(&s.keys.token);
    send(&mut c, json!({"type": "world-info", "requestId": "w"}));
    assert_eq!(reply(&mut c, "w")["clientId"], s.keys.client_id.as_str());
}

#[test]
fn auth_failures_close_4002_with_reasons() {
    let s = setup(&["--auth-timeout", "1s"]);
    // No world connected yet.
    let mut c = s.connect("/ws/api", &[]);
    send(&mut c, json!({"type": "auth", "token": s.keys.api_key}));
    assert_eq!(
        c.recv_close(secs(5)),
        Some((4002, "No connected Foundry client found".into()))
    );
    let _world = s.world();
    let cases: Vec<(Option<String>, &str)> = vec![
        (Some("hello".into()), "Invalid auth message"),
        (
            Some(r#"{"type":"ping","requestId":"x"}"#.into()),
            "Invalid auth message",
        ),
        (Some(r#"{"type":"auth"}"#.into()), "Invalid auth message"),
        (
            Some(r#"{"type":"auth","token":"0123abcd"}"#.into()),
            "Invalid API key",
        ),
        (
            Some(
                json!({"type":"auth","token": s.keys.api_key, "clientId": "fvtt_0000000000000000"})
                    .to_string(),
            ),
            "Invalid clientId",
        ),
        (None, "Authentication timeout"),
    ];
    for (first, reason) in cases {
        let mut c = s.connect("/ws/api", &[]);
        let started = std::time::Instant::now();
        if let Some(text) = &first {
            let _ = c.send_text(text);
        }
        assert_eq!(
            c.recv_close(secs(5)),
            Some((4002, reason.to_string())),
            "{first:?}"
        );
        if first.is_none() {
            assert!(
                started.elapsed() >= millis(900),
                "the deadline is --auth-timeout"
            );
        }
    }
    // A bad key on the upgrade is refused the same way, after the upgrade.
    let mut c = s.connect("/ws/api", &[("x-api-key", "nope")]);
    assert_eq!(
        c.recv_close(secs(5)),
        Some((4002, "Invalid API key".into()))
    );
}

#[test]
fn scope_is_enforced_per_message() {
    let s = setup(&[]);
    let world = s.world();
    let mut c = s.client(&s.keys.extra_keys[0]);
    send(
        &mut c,
        json!({"type": "execute-js", "requestId": "x", "script": "return 1"}),
    );
    assert_eq!(
        reply(&mut c, "x"),
        json!({"type": "error", "error": "API key lacks required scope: execute-js", "requestId": "x"})
    );
    send(
        &mut c,
        json!({"type": "subscribe", "channel": "chat-events", "requestId": "s"}),
    );
    assert_eq!(
        reply(&mut c, "s")["error"],
        "API key lacks required scope: events:subscribe"
    );
    assert!(
        world.messages_of("execute-js").is_empty(),
        "refused before the world"
    );
    send(
        &mut c,
        json!({"type": "entity", "requestId": "e", "uuid": "Actor.abc"}),
    );
    let r = reply(&mut c, "e");
    assert_eq!(r["type"], "entity-result");
    assert!(r.get("error").is_none_or(Value::is_null), "{r}");
}

#[test]
fn requests_round_trip_with_the_callers_request_id() {
    let s = setup(&[]);
    let world = s.world();
    let mut c = s.client(s.key());
    let cases = [
        json!({"type": "world-info", "requestId": "a1"}),
        json!({"type": "roll", "requestId": "a2", "formula": "1d20"}),
        json!({"type": "chat-send", "requestId": "a3", "content": "hello"}),
        json!({"type": "get-users", "requestId": "a4"}),
        json!({"type": "entity", "requestId": "a5", "uuid": "Actor.abc"}),
    ];
    // All in flight at once: replies are matched by id, whatever their order.
    for m in &cases {
        send(&mut c, m.clone());
    }
    for m in &cases {
        let ty = m["type"].as_str().unwrap_or("");
        let rid = m["requestId"].as_str().unwrap_or("");
        let r = reply(&mut c, rid);
        assert_eq!(r["type"], format!("{ty}-result"), "{r}");
        assert_eq!(r["clientId"], s.keys.client_id.as_str());
        // The module saw our own unique id, never the caller's.
        let seen = world.wait_request(ty, secs(5)).unwrap_or(Value::Null);
        assert_ne!(seen["requestId"], rid);
        assert!(seen["_scopes"].is_array());
    }
    // A numeric requestId is echoed as a number.
    send(&mut c, json!({"type": "players", "requestId": 42}));
    let r = c
        .recv_json_where(secs(10), |v| v["requestId"] == 42)
        .unwrap_or(Value::Null);
    assert_eq!(r["type"], "players-result");
}

#[test]
fn binary_types_return_the_modules_json() {
    let s = setup(&[]);
    let world = s.world();
    world.set_download_size(Some(3000));
    let mut c = s.client(s.key());
    send(
        &mut c,
        json!({"type": "download-file", "requestId": "d", "path": "x/y.bin", "format": "base64"}),
    );
    let r = reply(&mut c, "d");
    let url = r["fileData"].as_str().unwrap_or("");
    let (_, bytes) = decode_data_url(url).unwrap_or_default();
    assert_eq!(bytes, pattern_bytes(3000), "the file arrives whole");
    assert!(world
        .wait_request("download-file", secs(5))
        .is_some_and(|m| m.get("format").is_none()));
    send(
        &mut c,
        json!({"type": "sheet-screenshot", "requestId": "p", "uuid": "Actor.abc", "format": "jpeg"}),
    );
    let r = reply(&mut c, "p");
    assert!(
        r["imageData"]
            .as_str()
            .is_some_and(|d| d.starts_with("data:image/")),
        "{r}"
    );
    let seen = world
        .wait_request("sheet-screenshot", secs(5))
        .unwrap_or(Value::Null);
    assert_eq!(seen["format"], "jpeg", "screenshot handlers read format");
}

#[test]
fn subscribe_counts_duplicates_and_unsubscribe() {
    let s = setup(&[]);
    let world = s.world();
    let mut a = s.client(s.key());
    let mut b = s.client(s.key());
    send(
        &mut a,
        json!({"type": "subscribe", "channel": "chat-events", "requestId": "1"}),
    );
    assert_eq!(
        reply(&mut a, "1"),
        json!({"type": "subscribed", "channel": "chat-events", "requestId": "1"})
    );
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 1));
    send(
        &mut a,
        json!({"type": "subscribe", "channel": "chat-events", "requestId": "2"}),
    );
    assert_eq!(
        reply(&mut a, "2")["error"],
        "Already subscribed to this channel"
    );
    send(
        &mut b,
        json!({"type": "subscribe", "channel": "chat-events", "requestId": "3"}),
    );
    assert_eq!(reply(&mut b, "3")["type"], "subscribed");
    send(
        &mut b,
        json!({"type": "subscribe", "channel": "hooks", "requestId": "4"}),
    );
    assert_eq!(reply(&mut b, "4")["type"], "subscribed");
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 2));
    assert!(world.wait_subscription("hooks", secs(5), |n| n == 1));
    send(
        &mut a,
        json!({"type": "subscribe", "channel": "nope", "requestId": "5"}),
    );
    assert!(reply(&mut a, "5")["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("Invalid channel: \"nope\"")));
    send(
        &mut a,
        json!({"type": "unsubscribe", "channel": "chat-events", "requestId": "6"}),
    );
    assert_eq!(
        reply(&mut a, "6"),
        json!({"type": "unsubscribed", "channel": "chat-events", "removed": 1, "requestId": "6"})
    );
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 1));
    send(&mut b, json!({"type": "unsubscribe", "requestId": "7"}));
    assert_eq!(
        reply(&mut b, "7"),
        json!({"type": "unsubscribed", "channel": "all", "removed": 2, "requestId": "7"})
    );
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 0));
    assert!(world.wait_subscription("hooks", secs(5), |n| n == 0));
    // Closing a socket releases its subscriptions.
    send(
        &mut a,
        json!({"type": "subscribe", "channel": "roll-events", "requestId": "8"}),
    );
    assert_eq!(reply(&mut a, "8")["type"], "subscribed");
    assert!(world.wait_subscription("roll-events", secs(5), |n| n == 1));
    a.close();
    assert!(world.wait_subscription("roll-events", secs(5), |n| n == 0));
}

fn chat(id: &str, alias: &str) -> Value {
    json!({"eventType": "create", "data": {"_id": id, "speaker": {"alias": alias}, "content": id, "type": "base"}})
}

/// Needs the events branch's `publish_event` (the world link's events reach the hub there).
#[test]
fn filters_and_since_resume() {
    let s = setup(&[]);
    let world = s.world();
    let mut c = s.client(s.key());
    send(
        &mut c,
        json!({"type": "subscribe", "channel": "chat-events", "requestId": "s",
        "filters": {"speaker": "Alice"}}),
    );
    assert_eq!(reply(&mut c, "s")["type"], "subscribed");
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 1));
    for (id, alias) in [("m1", "Alice"), ("m2", "Bob"), ("m3", "Alice")] {
        assert!(world.emit_event("chat-event", chat(id, alias)));
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        match c.recv_type("chat-event", secs(5)) {
            Some(v) => got.push(v),
            None => break,
        }
    }
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|v| v["data"]["_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["m1", "m3"], "Bob's message is filtered out");
    assert_eq!(got[0]["event"], "chat-create");
    let first_seq = got[0]["seq"].as_u64().unwrap_or(0);
    assert!(c.recv_type("chat-event", millis(300)).is_none());
    // A second socket resumes after the first event, unfiltered: it gets m2 and m3 only.
    let mut d = s.client(s.key());
    send(
        &mut d,
        json!({"type": "subscribe", "channel": "chat-events", "requestId": "r", "since": first_seq}),
    );
    assert_eq!(reply(&mut d, "r")["type"], "subscribed");
    let mut resumed = Vec::new();
    while resumed.len() < 2 {
        match d.recv_type("chat-event", secs(5)) {
            Some(v) => resumed.push(v["data"]["_id"].as_str().unwrap_or("").to_string()),
            None => break,
        }
    }
    assert_eq!(resumed, vec!["m2", "m3"]);
}

#[test]
fn module_disconnect_fails_in_flight_requests_at_once() {
    let s = setup(&[]);
    let world = s.world();
    world.set_silent("world-info", true);
    let mut c = s.client(s.key());
    send(&mut c, json!({"type": "world-info", "requestId": "q"}));
    assert!(world.wait_request("world-info", secs(5)).is_some());
    let started = std::time::Instant::now();
    world.drop_connection();
    let r = reply(&mut c, "q");
    assert!(
        started.elapsed() < secs(5),
        "failed at once, not after 30 s"
    );
    assert_eq!(r["type"], "world-info-result");
    assert_eq!(r["error"], "Foundry client is no longer connected", "{r}");
}

#[test]
fn forbidden_scripts_are_screened_like_http() {
    let s = setup(&[]);
    let world = s.world();
    let mut c = s.client(s.key());
    send(
        &mut c,
        json!({"type": "execute-js", "requestId": "bad", "script": "return eval('1')"}),
    );
    let r = reply(&mut c, "bad");
    assert_eq!(r["error"], "Script contains forbidden patterns", "{r}");
    send(
        &mut c,
        json!({"type": "execute-js", "requestId": "ok", "script": "return 1"}),
    );
    assert!(reply(&mut c, "ok").get("error").is_none_or(|e| e.is_null()));
    let sent = world.messages_of("execute-js");
    assert_eq!(
        sent.len(),
        1,
        "only the clean script reached the world: {sent:?}"
    );
}

#[test]
fn replies_are_typed_after_the_request_like_the_reference() {
    let s = setup(&[]);
    let world = s.world();
    world.set_error("last-round", Some("No active encounter"));
    let mut c = s.client(s.key());
    send(&mut c, json!({"type": "last-round", "requestId": "lr"}));
    let r = reply(&mut c, "lr");
    // The module answers a failed last-round as `encounter-navigation`; /ws/api clients
    // wait for `last-round-result`, as the reference sends.
    assert_eq!(r["type"], "last-round-result", "{r}");
    assert_eq!(r["error"], "No active encounter", "{r}");
}

#[test]
fn offline_world_and_timeout() {
    let s = setup(&["--ws-api-request-timeout", "1s"]);
    let mut world = s.world();
    world.set_silent("roll", true);
    let mut c = s.client(s.key());
    let started = std::time::Instant::now();
    send(
        &mut c,
        json!({"type": "roll", "requestId": "t", "formula": "1d4"}),
    );
    let r = reply(&mut c, "t");
    assert_eq!(r["error"], "Request timed out");
    assert!(started.elapsed() >= millis(900));
    world.stop();
    assert!(wait_for(secs(5), || {
        send(&mut c, json!({"type": "roll", "requestId": "o"}));
        reply(&mut c, "o")["error"] == "Foundry client is no longer connected"
    }));
}

#[test]
fn in_flight_cap_per_socket() {
    let s = setup(&["--ws-api-max-inflight", "3"]);
    let world = s.world();
    world.set_silent("world-info", true);
    let mut c = s.client(s.key());
    for i in 0..4 {
        send(
            &mut c,
            json!({"type": "world-info", "requestId": format!("r{i}")}),
        );
    }
    let r = reply(&mut c, "r3");
    assert_eq!(
        r,
        json!({"type": "world-info-result", "requestId": "r3", "clientId": s.keys.client_id,
            "error": "Too many concurrent requests; try again shortly"})
    );
    // Another socket has its own budget.
    let mut d = s.client(s.key());
    send(&mut d, json!({"type": "players", "requestId": "other"}));
    assert_eq!(reply(&mut d, "other")["type"], "players-result");
}

#[test]
fn ping_pong_and_message_errors() {
    let s = setup(&[]);
    let _world = s.world();
    let mut c = s.client(s.key());
    send(&mut c, json!({"type": "ping", "requestId": "p1"}));
    assert_eq!(
        reply(&mut c, "p1"),
        json!({"type": "pong", "requestId": "p1"})
    );
    send(&mut c, json!({"type": "zap", "requestId": "z"}));
    assert_eq!(reply(&mut c, "z")["error"], "Unknown message type: \"zap\"");
    send(&mut c, json!({"type": "entity"}));
    assert_eq!(
        c.recv_json(secs(5)).unwrap_or(Value::Null),
        json!({"type": "error", "error": "Missing \"requestId\" field for request messages"})
    );
    let _ = c.send_text("{not json");
    assert_eq!(
        c.recv_json(secs(5)).unwrap_or(Value::Null),
        json!({"type": "error", "error": "Invalid JSON"})
    );
    send(
        &mut c,
        json!({"type": "interactive-session-start", "requestId": "i", "uuid": "Actor.abc"}),
    );
    assert_eq!(reply(&mut c, "i")["type"], "interactive-session-error");
}

#[test]
fn oversize_message_closes_1009() {
    let s = setup(&["--api-max-message", "4K", "--api-max-frame", "4K"]);
    let _world = s.world();
    let mut c = s.client(s.key());
    let big = json!({"type": "ping", "requestId": "x".repeat(8 * 1024)});
    let _ = c.send_json(&big);
    assert_eq!(c.recv_close(secs(5)).map(|x| x.0), Some(1009));
}
