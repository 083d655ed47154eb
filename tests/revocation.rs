//! Revocation reaches every stream (issue 10): revoking an API key or a connection token, or
//! unpairing a world, ends at once every SSE stream, `/ws/api` socket and `/ws/events` socket
//! that the credential or world no longer entitles: SSE with an `event: error` frame and the
//! end of the stream, WebSockets with 1008 and the reason. Others stay open.

mod support;
use support::*;

/// A relay with the world online and an admin key to revoke with.
fn setup() -> (ProvisionedRelay, FakeWorld) {
    let p = start_provisioned(&[]);
    let w = p.world();
    (p, w)
}

fn admin(p: &ProvisionedRelay) -> [(&'static str, &str); 1] {
    [("x-api-key", p.keys.admin_key.as_str())]
}

/// A fresh full-scope API key made through the admin API: (id, secret).
fn new_key(p: &ProvisionedRelay) -> (String, String) {
    let r = post_json(
        p.relay.addr(),
        "/admin/api/keys",
        &admin(p),
        &json!({"name": "doomed", "scopes": fvtt_relay::auth::ALL_SCOPES}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let v = r.json();
    (
        v["id"].as_str().unwrap_or("").to_owned(),
        v["key"].as_str().unwrap_or("").to_owned(),
    )
}

fn delete(p: &ProvisionedRelay, path: &str) {
    let r = request(p.relay.addr(), "DELETE", path, &admin(p), None);
    assert_eq!(r.status, 200, "DELETE {path}: {r:?}");
}

fn sse(p: &ProvisionedRelay, key: &str) -> SseClient {
    let path = format!("/chat/subscribe?clientId={}", p.keys.client_id);
    let mut s = match SseClient::connect(p.relay.addr(), &path, &[("x-api-key", key)]) {
        Ok(s) => s,
        Err(r) => panic!("SSE refused: {r:?}"),
    };
    assert!(s.next_named("connected", secs(5)).is_some());
    s
}

fn ws_api(p: &ProvisionedRelay, key: &str) -> WsClient {
    let path = format!("/ws/api?clientId={}", p.keys.client_id);
    let mut c = ws_connect(p.relay.addr(), &path, &[("x-api-key", key)]).expect("/ws/api");
    assert_eq!(
        c.recv_type("auth-success", secs(5))
            .map(|v| v["type"].clone()),
        Some(json!("auth-success"))
    );
    c.send_json(&json!({"type": "subscribe", "channel": "chat-events", "requestId": "s"}))
        .expect("subscribe");
    assert!(c.recv_type("subscribed", secs(5)).is_some());
    c
}

fn ws_events(p: &ProvisionedRelay, key: &str, path: &str) -> WsClient {
    let mut c = ws_connect(p.relay.addr(), path, &[("x-api-key", key)]).expect("/ws/events");
    c.send_json(&json!({"type": "subscribe", "events": ["all"]}))
        .expect("subscribe");
    assert!(c.recv_type("snapshot", secs(5)).is_some());
    c
}

/// The stream's last event is `event: error` with this reason, and then it ends.
fn sse_ended(s: &mut SseClient, reason: &str) {
    let e = s.next_named("error", secs(5)).expect("an error frame");
    assert_eq!(e.json(), json!({"error": reason}));
    assert!(s.wait_ended(secs(5)), "the stream stayed open");
}

fn ws_closed(c: &mut WsClient, reason: &str) {
    assert_eq!(c.recv_close(secs(5)), Some((1008, reason.to_owned())));
}

/// Still open: a ping is answered.
fn ws_alive(c: &mut WsClient, api: bool) {
    let ping = if api {
        json!({"type": "ping", "requestId": "alive"})
    } else {
        json!({"type": "ping"})
    };
    c.send_json(&ping).expect("ping");
    assert!(c.recv_type("pong", secs(5)).is_some(), "socket was closed");
}

#[test]
fn revoking_a_key_ends_its_sse_streams() {
    let (p, _w) = setup();
    let (id, key) = new_key(&p);
    let mut doomed = sse(&p, &key);
    let mut other = sse(&p, p.key());
    delete(&p, &format!("/admin/api/keys/{id}"));
    sse_ended(&mut doomed, "API key revoked");
    assert!(!other.wait_ended(millis(300)), "another key's stream ended");
}

#[test]
fn revoking_a_key_closes_its_ws_api_sockets() {
    let (p, _w) = setup();
    let (id, key) = new_key(&p);
    let mut doomed = ws_api(&p, &key);
    let mut other = ws_api(&p, p.key());
    delete(&p, &format!("/admin/api/keys/{id}"));
    ws_closed(&mut doomed, "API key revoked");
    ws_alive(&mut other, true);
}

#[test]
fn revoking_a_key_closes_its_ws_events_sockets() {
    let (p, _w) = setup();
    let (id, key) = new_key(&p);
    let mut doomed = ws_events(&p, &key, "/ws/events");
    let mut other = ws_events(&p, p.key(), "/ws/events");
    delete(&p, &format!("/admin/api/keys/{id}"));
    ws_closed(&mut doomed, "API key revoked");
    ws_alive(&mut other, false);
}

#[test]
fn revoking_a_connection_token_closes_the_ws_api_sockets_it_opened() {
    // Connection tokens authenticate only the module link and /ws/api (SSE and /ws/events
    // take API keys).
    let (p, w) = setup();
    let mut doomed = ws_api(&p, &p.keys.token);
    let mut other = ws_api(&p, p.key());
    let tokens = get(p.relay.addr(), "/admin/api/tokens", &admin(&p)).json();
    let id = tokens["tokens"][0]["id"].as_str().unwrap_or("").to_owned();
    delete(&p, &format!("/admin/api/tokens/{id}"));
    ws_closed(&mut doomed, "Connection token revoked");
    assert_eq!(
        w.wait_close(1, secs(5)),
        Some((4002, "Connection token revoked".into()))
    );
    // The key's socket stays (its world went offline, which it is told as usual).
    ws_alive(&mut other, true);
}

#[test]
fn unpairing_a_world_ends_its_sse_streams() {
    let (p, _w) = setup();
    let mut s = sse(&p, p.key());
    delete(&p, &format!("/admin/api/worlds/{}", p.keys.client_id));
    sse_ended(&mut s, "World unpaired");
}

#[test]
fn unpairing_a_world_closes_its_ws_api_sockets() {
    let (p, _w) = setup();
    let mut c = ws_api(&p, p.key());
    delete(&p, &format!("/admin/api/worlds/{}", p.keys.client_id));
    ws_closed(&mut c, "World unpaired");
}

#[test]
fn unpairing_a_world_closes_the_ws_events_sockets_following_it() {
    let (p, _w) = setup();
    let path = format!("/ws/events/{}", p.keys.client_id);
    let mut following = ws_events(&p, p.key(), &path);
    // A socket following every world is not entitled by this one: it stays.
    let mut all = ws_events(&p, p.key(), "/ws/events");
    delete(&p, &format!("/admin/api/worlds/{}", p.keys.client_id));
    ws_closed(&mut following, "World unpaired");
    ws_alive(&mut all, false);
}

#[test]
fn rotating_the_admin_key_ends_what_it_opened() {
    let (p, _w) = setup();
    let admin_key = p.keys.admin_key.clone();
    let mut s = sse(&p, &admin_key);
    let mut api = ws_api(&p, &admin_key);
    let mut events = ws_events(&p, &admin_key, "/ws/events");
    let mut other = ws_events(&p, p.key(), "/ws/events");
    let r = request(
        p.relay.addr(),
        "POST",
        "/admin/api/admin-key/rotate",
        &admin(&p),
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    sse_ended(&mut s, "Admin key rotated");
    ws_closed(&mut api, "Admin key rotated");
    ws_closed(&mut events, "Admin key rotated");
    ws_alive(&mut other, false);
}
