//! `/ws/events`: the read-only event gateway (issue 6): per-IP upgrade rate limit, browser
//! origin allow-list, authentication before the upgrade, a first `subscribe` message within
//! the auth timeout, a `snapshot` reply, then events; replacement of an older socket that
//! used the same key for the same world. Also the origin and upgrade-rate checks `/ws/api`
//! shares.
//!
//! ```text
//!  upgrade ─▶ rate (429) ─▶ origin (403, empty) ─▶ token (401) ─▶ scope (403) ─▶ world (404)
//!     └─▶ 101 ─▶ waiting ──subscribe──▶ subscribed ──subscribe──▶ subscribed (re-subscribe)
//!                  ├─ other first message ─▶ close 4000 "First message must be subscribe"
//!                  └─ auth timeout ───────▶ close 4000 "Subscription timeout"
//! ```
//!
//! Errors before the upgrade are HTTP JSON `{"success":false,"error":{"message":…}}`, the
//! shape gateway clients parse; a refused browser origin gets an empty 403 so a page learns
//! nothing (RFC 6455 §10.2). Frame size (1009), the send-queue cap (slow consumer, 1008) and
//! control pings are enforced by the loop from `Endpoint::Events` (conn.rs `ws_settings`).
//!
//! `client_id` in `subscribe` is **the subscriber's own id**, as the seed gateway clients send
//! it (`"client_id":"python-example"`): any string of 1 to 128 characters, generated
//! (`events_<16 hex>`) when omitted, and returned in the snapshot. A newer socket with the same
//! `client_id` on the same key closes the older with 4001 "Replaced by a newer connection"
//! (the seed gateway's rule); sockets without one are never replaced, so two dashboards may
//! share a key. The worlds to follow come from the path (`/ws/events/{clientId}`) or from
//! `"worlds":["fvtt_…",…]` in `subscribe` (empty or absent: every world the key may see).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use serde_json::{json, Value};

use super::events::Subscriber;
use super::hub::{EventSelection, Transport};
use super::io::{Action, Bytes, Endpoint};
use super::rest::{normalize_path, presented_key};
use super::{Relay, Role};
use crate::auth::Principal;
use crate::config::Config;
use crate::enc;
use crate::error::WsClose;
use crate::http::request::Head;
use crate::http::response::Response;
use crate::ids::ConnId;
use crate::ws::handshake::origin_allowed;

/// The scope every event transport needs (relay-protocol.md §3.3).
pub(crate) const EVENTS_SCOPE: &str = "events:subscribe";

const MISSING_TOKEN: &str = "Missing token in header, Authorization header, or query parameter";
const INVALID_TOKEN: &str = "Invalid token";
const RATE_LIMITED: &str = "Rate limit exceeded. Try again later.";

const SUBSCRIBE_TIMEOUT: WsClose = WsClose::new(4000, "Subscription timeout");
const FIRST_NOT_SUBSCRIBE: WsClose = WsClose::new(4000, "First message must be subscribe");
const BAD_SUBSCRIPTION: WsClose = WsClose::new(4000, "Invalid subscription");
const REPLACED: WsClose = WsClose::new(4001, "Replaced by a newer connection");

/// Replacement key: (API key id, `None` for the admin; the subscriber's `client_id`).
type Owner = (Option<String>, String);

/// The longest `client_id` a subscriber may give itself.
const MAX_CLIENT_ID_CHARS: usize = 128;

/// One `/ws/events` socket.
#[derive(Debug)]
struct Socket {
    /// The one world it follows (from the path, the key's single world, or a one-entry
    /// `worlds`); `None` = every world in `worlds`, or every world the key may see.
    world: Option<String>,
    /// The world came from the path: `worlds` in `subscribe` may not change it.
    from_path: bool,
    /// Two or more worlds chosen with `worlds` (the hub follows every world; deliveries and
    /// the snapshot are filtered to these).
    worlds: Vec<String>,
    subscribed: bool,
    /// Follows every world while the key, or `worlds`, allows only some: deliveries need the
    /// filter (`may_see`).
    restricted: bool,
    /// The subscriber's `client_id` (given or generated), once subscribed.
    client_id: Option<String>,
    owner: Option<Owner>,
}

/// Gateway state kept on the relay.
pub(crate) struct Gateway {
    socks: HashMap<ConnId, Socket>,
    owners: HashMap<Owner, ConnId>,
    /// Sockets with `restricted` set (events.rs filters deliveries only while > 0).
    pub(crate) restricted: usize,
}

impl Gateway {
    pub(crate) fn new(_cfg: &Config) -> Gateway {
        Gateway {
            socks: HashMap::new(),
            owners: HashMap::new(),
            restricted: 0,
        }
    }
}

/// `{"success":false,"error":{"message":…}}` with `status`.
pub(crate) fn gateway_error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &json!({"success": false, "error": {"message": message}}),
    )
}

/// The token a gateway client presented: `x-api-key`, `token` header, `Authorization:
/// Bearer`, then `?token=` (browsers cannot set headers on a WebSocket).
pub(crate) fn presented_token(head: &Head) -> Option<String> {
    let header = |name: &str| {
        head.header(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    header("x-api-key")
        .or_else(|| header("token"))
        .or_else(|| presented_key(head).filter(|k| !k.is_empty()))
        .or_else(|| super::events::query_value(&head.query, "token"))
}

impl Relay {
    /// The browser-origin check shared by `/ws/events` and `/ws/api`: `Some(403 with an
    /// empty body)` for a browser origin outside `allowed_ws_origins` (empty list: same
    /// origin only). No `Origin` (bots, scripts) passes: the token protects those.
    pub(crate) fn ws_origin_refusal(&self, head: &Head) -> Option<Response> {
        let origin = head.header("origin");
        let host = head.header("host");
        if origin_allowed(origin, host, &self.cfg.allowed_ws_origins) {
            return None;
        }
        // The relay's public address is its own origin too (a proxy may rewrite Host).
        let public = self.cfg.public_url.as_deref().map(|u| {
            let u = u.trim_end_matches('/');
            let scheme_end = u.find("://").map_or(0, |i| i + 3);
            let end = u[scheme_end..]
                .find('/')
                .map_or(u.len(), |i| scheme_end + i);
            u[..end].to_string()
        });
        if let Some(p) = public {
            if origin_allowed(origin, None, std::slice::from_ref(&p)) {
                return None;
            }
        }
        // The page gets an empty 403 (RFC 6455 §10.2); the owner gets the reason here.
        log::info!(
            "refused a WebSocket upgrade to {} from browser origin {:?} (Host {:?}): not \
             same-origin and not in --allowed-ws-origins",
            head.path,
            origin.unwrap_or(""),
            host.unwrap_or("")
        );
        Some(Response::new(403))
    }

    /// Count one WebSocket upgrade from `peer`: `Some(429 …)` with `Retry-After` when over
    /// `ws_upgrade_rate_limit` per minute. `rest.rs` counts every other endpoint's upgrades.
    pub(crate) fn upgrade_rate_refusal(&mut self, peer: IpAddr, now: Instant) -> Option<Response> {
        // One limiter for every WebSocket endpoint (relay/limits.rs); only the body shape
        // differs here (the gateway's error envelope).
        let v = self.limits.ws_upgrade.check(&peer, now);
        (!v.allowed).then(|| {
            gateway_error(429, RATE_LIMITED).header("Retry-After", v.retry_after_secs.to_string())
        })
    }

    /// `GET /ws/events[/{clientId}]` with a valid upgrade: every check, then 101.
    pub(crate) fn events_upgrade(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let refuse =
            |out: &mut Vec<Action>, resp: Response| out.push(Action::Respond { conn, resp });
        if let Some(resp) = self.upgrade_rate_refusal(peer, now) {
            return refuse(out, resp);
        }
        if let Some(resp) = self.ws_origin_refusal(head) {
            return refuse(out, resp);
        }
        let path_world = normalize_path(&head.path)
            .strip_prefix("/ws/events/")
            .map(|w| enc::percent_decode(w).unwrap_or_else(|| w.to_owned()))
            .filter(|w| !w.is_empty());
        let now_ms = self.clock.ms(now);
        let caller = match presented_token(head) {
            Some(t) => match self.authenticate_presented(Some(&t), now_ms) {
                Ok(c) => c,
                Err(_) => return refuse(out, gateway_error(401, INVALID_TOKEN)),
            },
            None if self.admin_session_valid(head, now_ms) => self.caller_of(Principal::Admin),
            None => return refuse(out, gateway_error(401, MISSING_TOKEN)),
        };
        if !caller.scopes.iter().any(|s| s == EVENTS_SCOPE) {
            let msg = format!("API key lacks required scope: {EVENTS_SCOPE}");
            return refuse(out, gateway_error(403, &msg));
        }
        let (world, from_path) = match path_world {
            Some(w) => {
                if !caller.client_ids.is_empty() && !caller.client_ids.contains(&w) {
                    let msg = "API key is not authorized for this client";
                    return refuse(out, gateway_error(403, msg));
                }
                if !self.world_known(&w) {
                    return refuse(out, gateway_error(404, "Unknown client ID"));
                }
                (Some(w), true)
            }
            None => match caller.client_ids.as_slice() {
                [one] => (Some(one.clone()), false),
                _ => (None, false),
            },
        };
        let key_id = self.key_id_of(&caller.principal);
        self.roles.insert(conn, Role::Events);
        self.subs.insert(
            conn,
            Subscriber::new(Transport::WsEvents, &caller, key_id, world.clone()),
        );
        self.gateway.socks.insert(
            conn,
            Socket {
                world,
                from_path,
                worlds: Vec::new(),
                subscribed: false,
                restricted: false,
                client_id: None,
                owner: None,
            },
        );
        out.push(Action::Accept {
            conn,
            endpoint: Endpoint::Events,
        });
        self.arm_auth_timeout(conn, now, out);
    }

    /// A text message on a gateway socket. Only `subscribe` and `ping` have an effect.
    pub(crate) fn events_message(
        &mut self,
        conn: ConnId,
        text: String,
        _now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(sock) = self.gateway.socks.get(&conn) else {
            return;
        };
        let msg: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let kind = msg.get("type").and_then(Value::as_str);
        if !sock.subscribed && kind != Some("subscribe") {
            return self.events_close(conn, FIRST_NOT_SUBSCRIBE, out);
        }
        match kind {
            Some("subscribe") => self.events_subscribe(conn, &msg, out),
            Some("ping") => out.push(Action::Text {
                conn,
                payload: Bytes::Owned(br#"{"type":"pong"}"#.to_vec()),
            }),
            _ => {}
        }
    }

    /// The subscribe deadline passed (Timer::Auth).
    pub(crate) fn events_subscribe_timeout(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        if self.gateway.socks.get(&conn).is_some_and(|s| !s.subscribed) {
            self.events_close(conn, SUBSCRIBE_TIMEOUT, out);
        }
    }

    /// Close a gateway socket and forget it now, so its counts drop at once.
    fn events_close(&mut self, conn: ConnId, close: WsClose, out: &mut Vec<Action>) {
        out.push(Action::Close { conn, close });
        self.forget_subscriber(conn, out);
    }

    /// An error the client can read, then (on a first subscribe) the 4000 close.
    fn events_refuse(&mut self, conn: ConnId, first: bool, message: &str, out: &mut Vec<Action>) {
        let v = json!({"type": "error", "error": message});
        out.push(Action::Text {
            conn,
            payload: Bytes::Owned(v.to_string().into_bytes()),
        });
        if first {
            self.events_close(conn, BAD_SUBSCRIPTION, out);
        }
    }

    fn events_subscribe(&mut self, conn: ConnId, msg: &Value, out: &mut Vec<Action>) {
        let (Some(sock), Some(sub)) = (self.gateway.socks.get(&conn), self.subs.get(&conn)) else {
            return;
        };
        let first = !sock.subscribed;
        let selection = match EventSelection::parse(msg.get("events")) {
            Ok(s) => s,
            Err(e) => return self.events_refuse(conn, first, e, out),
        };
        // The subscriber's own id (seed gateway clients: "python-example").
        let requested = match msg.get("client_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_CLIENT_ID_CHARS => {
                Some(s.clone())
            }
            Some(_) => {
                let e = "'client_id' must be a string of 1 to 128 characters";
                return self.events_refuse(conn, first, e, out);
            }
        };
        if let (Some(r), Some(had)) = (&requested, &sock.client_id) {
            if r != had {
                let e = "client_id cannot change on an open connection; open a new one";
                return self.events_refuse(conn, first, e, out);
            }
        }
        // The worlds to follow: `worlds` (absent or empty: every world the key may see).
        let chosen: Option<Vec<String>> = match msg.get("worlds") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => {
                let mut v: Vec<String> = Vec::with_capacity(list.len());
                for w in list {
                    match w.as_str() {
                        Some(w) if !w.is_empty() => {
                            if !v.iter().any(|x| x == w) {
                                v.push(w.to_owned());
                            }
                        }
                        _ => {
                            let e = "'worlds' must be an array of clientIds";
                            return self.events_refuse(conn, first, e, out);
                        }
                    }
                }
                Some(v)
            }
            Some(_) => {
                let e = "'worlds' must be an array of clientIds";
                return self.events_refuse(conn, first, e, out);
            }
        };
        let (mut world, mut worlds) = (sock.world.clone(), sock.worlds.clone());
        if let Some(list) = chosen {
            if sock.from_path {
                if list.iter().any(|w| Some(w) != sock.world.as_ref()) {
                    let e = "worlds does not match the world in the URL";
                    return self.events_refuse(conn, first, e, out);
                }
            } else {
                for w in &list {
                    if !sub.may_see(w) {
                        let e = "API key is not authorized for this client";
                        return self.events_refuse(conn, first, e, out);
                    }
                    if !self.world_known(w) {
                        let e = format!("Unknown client ID: {w}");
                        return self.events_refuse(conn, first, &e, out);
                    }
                }
                (world, worlds) = match list.as_slice() {
                    [] => match sub.client_ids.as_slice() {
                        [one] => (Some(one.clone()), Vec::new()),
                        _ => (None, Vec::new()),
                    },
                    [one] => (Some(one.clone()), Vec::new()),
                    _ => (None, list),
                };
            }
        }
        let client_id = sock
            .client_id
            .clone()
            .or(requested.clone())
            .unwrap_or_else(|| format!("events_{}", crate::ids::random_hex(8)));
        let restricted = world.is_none() && (!sub.client_ids.is_empty() || !worlds.is_empty());
        // Only an id the subscriber chose takes part in replacement.
        let owner = (first && requested.is_some()).then(|| (sub.key_id.clone(), client_id.clone()));
        let user = sub.user_id.clone();
        let (_, updates) =
            self.hub
                .subscribe_events(conn, world.as_deref(), selection, user.as_deref());
        if let Some(s) = self.subs.get_mut(&conn) {
            s.world = world.clone();
        }
        let mut replaced = None;
        if let Some(s) = self.gateway.socks.get_mut(&conn) {
            if s.restricted != restricted {
                if restricted {
                    self.gateway.restricted += 1;
                } else {
                    self.gateway.restricted = self.gateway.restricted.saturating_sub(1);
                }
            }
            s.world = world;
            s.worlds = worlds;
            s.subscribed = true;
            s.restricted = restricted;
            s.client_id = Some(client_id);
            if let Some(o) = owner {
                s.owner = Some(o.clone());
                replaced = self.gateway.owners.insert(o, conn).filter(|c| *c != conn);
            }
        }
        // The newcomer counts before the old socket goes, so a channel never drops to 0
        // in between (the module would switch its hooks off and on).
        self.send_counts(updates, out);
        if let Some(old) = replaced {
            self.events_close(old, REPLACED, out);
        }
        let snapshot = self.snapshot(conn);
        out.push(Action::Text {
            conn,
            payload: Bytes::Owned(snapshot.to_string().into_bytes()),
        });
    }

    /// Whether gateway socket `conn` takes `world`'s events: its key may see the world and,
    /// when it chose several worlds, the world is one of them.
    pub(crate) fn events_may_see(&self, conn: ConnId, world: &str) -> bool {
        self.subs.get(&conn).is_none_or(|s| s.may_see(world))
            && self
                .gateway
                .socks
                .get(&conn)
                .is_none_or(|s| s.worlds.is_empty() || s.worlds.iter().any(|w| w == world))
    }

    /// `world` was unpaired: gateway sockets that chose it among several worlds stop
    /// following it; one left with none is closed (revoke.rs closes the single-world ones).
    pub(crate) fn gateway_drop_world(
        &mut self,
        world: &str,
        close: WsClose,
        out: &mut Vec<Action>,
    ) {
        let mut emptied = Vec::new();
        for (conn, s) in self.gateway.socks.iter_mut() {
            if s.worlds.iter().any(|w| w == world) {
                s.worlds.retain(|w| w != world);
                if s.worlds.is_empty() {
                    emptied.push(*conn);
                }
            }
        }
        emptied.sort();
        for conn in emptied {
            self.events_close(conn, close.clone(), out);
        }
    }

    /// `{"type":"snapshot","client_id":…,"state":{"worlds":[…]}}`: the subscriber's id, and
    /// the connected worlds this socket follows and may see, with their metadata and last
    /// sequence number, sorted by clientId.
    fn snapshot(&self, conn: ConnId) -> Value {
        let sub = self.subs.get(&conn);
        let world = sub.and_then(|s| s.world.as_deref());
        let client_id = self
            .gateway
            .socks
            .get(&conn)
            .and_then(|s| s.client_id.clone());
        let mut worlds: Vec<Value> = self
            .worlds
            .iter()
            .filter(|l| {
                let id = l.meta.client_id.as_str();
                world.is_none_or(|w| w == id) && sub.is_some() && self.events_may_see(conn, id)
            })
            .map(|l| {
                let mut v = l.to_json();
                v["seq"] = json!(self.hub.latest_seq(&l.meta.client_id));
                v
            })
            .collect();
        worlds.sort_by(|a, b| a["clientId"].as_str().cmp(&b["clientId"].as_str()));
        json!({"type": "snapshot", "client_id": client_id, "state": {"worlds": worlds}})
    }

    /// Drop the gateway's record of `conn` (idempotent).
    pub(crate) fn gateway_forget(&mut self, conn: ConnId) {
        let Some(s) = self.gateway.socks.remove(&conn) else {
            return;
        };
        if s.restricted {
            self.gateway.restricted = self.gateway.restricted.saturating_sub(1);
        }
        if let Some(o) = s.owner {
            if self.gateway.owners.get(&o) == Some(&conn) {
                self.gateway.owners.remove(&o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::events::harness::*;
    use crate::relay::io::{Input, Timer};

    type Headers<'a> = Vec<(&'a str, &'a str)>;
    type HeaderSlice<'a> = &'a [(&'a str, &'a str)];

    fn sub_msg(events: &str) -> String {
        format!(r#"{{"type":"subscribe","events":{events}}}"#)
    }

    /// Open a gateway socket with the full key; returns its conn.
    fn open(h: &mut H, target: &str) -> ConnId {
        let conn = h.conn();
        let key = h.api_key.clone();
        let out = h.upgrade(conn, target, &[("x-api-key", &key)]);
        assert!(
            matches!(
                out.first(),
                Some(Action::Accept {
                    endpoint: Endpoint::Events,
                    ..
                })
            ),
            "{:?}",
            response_of(&out, conn)
        );
        conn
    }

    #[test]
    fn errors_before_the_upgrade() {
        let mut h = H::new(Config::default());
        let full = h.api_key.clone();
        let no_scope = h.key(&["clients:read"], &[], None);
        let bound = h.key(&["events:subscribe"], &[OTHER], None);
        let bearer = format!("Bearer {full}");
        let world_path = format!("/ws/events/{WORLD}");
        let cases: Vec<(&str, Headers, u16, &str)> = vec![
            ("/ws/events", vec![], 401, MISSING_TOKEN),
            (
                "/ws/events",
                vec![("x-api-key", "nope")],
                401,
                INVALID_TOKEN,
            ),
            ("/ws/events?token=nope", vec![], 401, INVALID_TOKEN),
            ("/ws/events", vec![("token", "nope")], 401, INVALID_TOKEN),
            (
                "/ws/events",
                vec![("authorization", "Bearer nope")],
                401,
                INVALID_TOKEN,
            ),
            (
                "/ws/events",
                vec![("x-api-key", &no_scope)],
                403,
                "events:subscribe",
            ),
            (
                "/ws/events/fvtt_nowhere",
                vec![("x-api-key", &full)],
                404,
                "Unknown client ID",
            ),
            (
                &world_path,
                vec![("x-api-key", &bound)],
                403,
                "not authorized",
            ),
            (
                "/ws/events",
                vec![
                    ("x-api-key", &full),
                    ("origin", "https://evil.example"),
                    ("host", "relay"),
                ],
                403,
                "",
            ),
        ];
        for (target, headers, status, needle) in &cases {
            let conn = h.conn();
            let out = h.upgrade(conn, target, headers);
            let (st, body) = response_of(&out, conn).unwrap_or_default();
            assert_eq!(st, *status, "{target} {headers:?}: {body}");
            if needle.is_empty() {
                assert_eq!(body, "", "origin refusals have an empty body");
            } else {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                assert_eq!(v["success"], false, "{body}");
                let msg = v["error"]["message"].as_str().unwrap_or_default();
                assert!(msg.contains(needle), "{target}: {body}");
            }
        }
        // Every accepted way to present the key.
        let ok: Vec<(String, Vec<(&str, &str)>)> = vec![
            ("/ws/events".into(), vec![("x-api-key", &full)]),
            ("/ws/events".into(), vec![("token", &full)]),
            ("/ws/events".into(), vec![("authorization", &bearer)]),
            (format!("/ws/events?token={full}"), vec![]),
            (
                format!("/ws/events/{WORLD}"),
                vec![
                    ("x-api-key", &full),
                    ("origin", "http://relay"),
                    ("host", "relay"),
                ],
            ),
        ];
        for (target, headers) in &ok {
            let conn = h.conn();
            let out = h.upgrade(conn, target, headers);
            assert!(
                matches!(out.first(), Some(Action::Accept { .. })),
                "{target} {headers:?}"
            );
        }
    }

    #[test]
    fn upgrade_rate_limit_per_ip() {
        let cfg = Config {
            ws_upgrade_rate_limit: 2,
            ..Config::default()
        };
        let mut h = H::new(cfg);
        for _ in 0..2 {
            let conn = h.conn();
            let out = h.upgrade(conn, "/ws/events", &[]);
            assert_eq!(response_of(&out, conn).map(|r| r.0), Some(401));
        }
        let conn = h.conn();
        let out = h.upgrade(conn, "/ws/events", &[]);
        let Some(Action::Respond { resp, .. }) = out.first() else {
            panic!("no response")
        };
        assert_eq!(resp.status, 429);
        assert!(resp
            .headers
            .iter()
            .any(|(n, v)| *n == "Retry-After" && v == "30"));
    }

    #[test]
    fn first_message_rules() {
        let mut h = H::new(Config::default());
        let a = open(&mut h, "/ws/events");
        let out = h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(
            close_of(&out, a),
            Some((4000, "First message must be subscribe".into()))
        );
        let b = open(&mut h, "/ws/events");
        let out = h.text(b, "not json");
        assert_eq!(
            close_of(&out, b),
            Some((4000, "First message must be subscribe".into()))
        );
        let c = open(&mut h, "/ws/events");
        let out = h.input(Input::Timer(Timer::Auth(c)));
        assert_eq!(
            close_of(&out, c),
            Some((4000, "Subscription timeout".into()))
        );
        let d = open(&mut h, "/ws/events");
        h.text(d, &sub_msg(r#"["all"]"#));
        let out = h.input(Input::Timer(Timer::Auth(d)));
        assert!(close_of(&out, d).is_none(), "subscribed in time");
        let e = open(&mut h, "/ws/events");
        let out = h.text(e, &sub_msg(r#"["bogus"]"#));
        assert!(bytes_to(&out, e).contains(r#""type":"error""#));
        assert_eq!(
            close_of(&out, e),
            Some((4000, "Invalid subscription".into()))
        );
        assert!(!h.relay.subs.contains_key(&e) && !h.relay.subs.contains_key(&a));
    }

    #[test]
    fn snapshot_events_resubscribe_and_ping() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        let s = open(&mut h, "/ws/events");
        let out = h.text(s, &sub_msg(r#"["roll-events","world-connected"]"#));
        let snap: Value = serde_json::from_str(bytes_to(&out, s).trim()).unwrap_or_default();
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["state"]["worlds"][0]["clientId"], WORLD);
        assert_eq!(snap["state"]["worlds"][0]["isOnline"], true);
        assert_eq!(counts_to(&out, link), vec![("roll-events".to_owned(), 1)]);
        let roll = json!({"type": "roll-data", "data": {"id": "r", "user": {"id": "u"}}});
        let out = h.text(link, &roll.to_string());
        let ev: Value = serde_json::from_str(bytes_to(&out, s).trim()).unwrap_or_default();
        assert_eq!(ev["type"], "roll");
        assert_eq!(ev["clientId"], WORLD);
        assert_eq!(ev["seq"], 1);
        assert!(ev["timestamp"].as_u64().is_some());
        assert_eq!(ev["data"]["id"], "r");
        // Another world connects: notice with its metadata.
        let (_, out) = h.world_online(OTHER);
        let got = bytes_to(&out, s);
        assert!(got.contains(r#""type":"world-connected""#) && got.contains(OTHER));
        // Re-subscribe to chat only: rolls stop, the module is told both changes.
        let out = h.text(s, &sub_msg(r#"["chat-events"]"#));
        assert!(counts_to(&out, link).contains(&("roll-events".to_owned(), 0)));
        assert!(counts_to(&out, link).contains(&("chat-events".to_owned(), 1)));
        let out = h.text(link, &roll.to_string());
        assert_eq!(bytes_to(&out, s), "");
        let out = h.text(s, r#"{"type":"ping"}"#);
        assert_eq!(bytes_to(&out, s), "{\"type\":\"pong\"}\n");
        let out = h.text(s, r#"{"type":"get","uuid":"x"}"#);
        assert!(out.is_empty(), "nothing else has an effect");
    }

    fn snapshot_of(out: &[Action], conn: ConnId) -> Value {
        let text = bytes_to(out, conn);
        let line = text.lines().find(|l| l.contains(r#""type":"snapshot""#));
        serde_json::from_str(line.unwrap_or("null")).unwrap_or_default()
    }

    #[test]
    fn same_key_and_client_id_replaces_the_older_socket() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        // The seed gateway's shape: client_id is the subscriber's own id, not a world.
        let seed = r#"{"type":"subscribe","client_id":"python-example","events":["hooks"]}"#;
        let first = open(&mut h, "/ws/events");
        let out = h.text(first, seed);
        let snap = snapshot_of(&out, first);
        assert_eq!(snap["client_id"], "python-example");
        assert_eq!(snap["state"]["worlds"][0]["clientId"], WORLD, "every world");
        let second = open(&mut h, "/ws/events");
        let out = h.text(second, seed);
        assert_eq!(
            close_of(&out, first),
            Some((4001, "Replaced by a newer connection".into()))
        );
        // Count went 2 then 1, never 0.
        assert_eq!(
            counts_to(&out, link),
            vec![("hooks".to_owned(), 2), ("hooks".to_owned(), 1)]
        );
        // Without a client_id: one is generated and returned, and nothing is replaced.
        let anon = open(&mut h, "/ws/events");
        let out = h.text(anon, &sub_msg("[]"));
        let id = snapshot_of(&out, anon)["client_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(id.starts_with("events_") && id.len() == 23, "{id}");
        let anon2 = open(&mut h, &format!("/ws/events/{WORLD}"));
        let out = h.text(anon2, &sub_msg("[]"));
        assert!(close_of(&out, anon).is_none());
        assert!(close_of(&out, second).is_none());
        assert_ne!(snapshot_of(&out, anon2)["client_id"], id.as_str());
        // A different key with the same client_id is not replaced either.
        h.api_key = h.key(&["events:subscribe"], &[], None);
        let other_key = open(&mut h, "/ws/events");
        let out = h.text(other_key, seed);
        assert!(close_of(&out, second).is_none());
        // client_id cannot change on an open socket; a re-subscribe may repeat it.
        let out = h.text(
            second,
            r#"{"type":"subscribe","client_id":"other","events":[]}"#,
        );
        assert!(bytes_to(&out, second).contains("cannot change"));
        assert!(close_of(&out, second).is_none());
        let out = h.text(second, seed);
        assert_eq!(snapshot_of(&out, second)["client_id"], "python-example");
    }

    #[test]
    fn client_id_rules() {
        let mut h = H::new(Config::default());
        let long = "x".repeat(129);
        let ok_long = "é".repeat(128);
        for (id, ok) in [
            (json!(""), false),
            (json!(7), false),
            (json!(long), false),
            (json!(ok_long), true),
            (json!(WORLD), true),
        ] {
            let s = open(&mut h, "/ws/events");
            let msg = json!({"type": "subscribe", "client_id": id, "events": []});
            let out = h.text(s, &msg.to_string());
            assert_eq!(close_of(&out, s).is_none(), ok, "{id}");
        }
    }

    #[test]
    fn worlds_field_chooses_the_worlds() {
        let mut h = H::new(Config::default());
        let (wl, _) = h.world_online(WORLD);
        let (ol, _) = h.world_online(OTHER);
        let ev = json!({"type": "hook-event", "data": {"hook": "x", "args": []}}).to_string();
        // One world.
        let one = open(&mut h, "/ws/events");
        let msg = json!({"type": "subscribe", "worlds": [OTHER], "events": ["hooks"]});
        let out = h.text(one, &msg.to_string());
        let snap = snapshot_of(&out, one);
        assert_eq!(snap["state"]["worlds"].as_array().map(Vec::len), Some(1));
        assert_eq!(snap["state"]["worlds"][0]["clientId"], OTHER);
        assert_eq!(bytes_to(&h.text(wl, &ev), one), "");
        assert!(bytes_to(&h.text(ol, &ev), one).contains(r#""type":"x""#));
        // Both, as a list: both deliver.
        let both = open(&mut h, "/ws/events");
        let msg = json!({"type": "subscribe", "worlds": [WORLD, OTHER], "events": ["hooks"]});
        let out = h.text(both, &msg.to_string());
        assert_eq!(
            snapshot_of(&out, both)["state"]["worlds"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(bytes_to(&h.text(wl, &ev), both).contains(r#""type":"x""#));
        assert!(bytes_to(&h.text(ol, &ev), both).contains(r#""type":"x""#));
        // Refusals: unknown world, not a list, a world other than the path's.
        for (target, worlds, want) in [
            ("/ws/events", json!(["fvtt_nope"]), "Unknown client ID"),
            ("/ws/events", json!(WORLD), "must be an array"),
            (
                &format!("/ws/events/{WORLD}")[..],
                json!([OTHER]),
                "does not match",
            ),
        ] {
            let s = open(&mut h, target);
            let msg = json!({"type": "subscribe", "worlds": worlds, "events": []});
            let out = h.text(s, &msg.to_string());
            assert!(bytes_to(&out, s).contains(want), "{target} {worlds}");
            assert_eq!(close_of(&out, s).map(|c| c.0), Some(4000));
        }
        // Unpairing one of two chosen worlds leaves the other; the last one closes it.
        let mut out = Vec::new();
        h.relay.end_streams_of_world(OTHER, &mut out);
        assert!(close_of(&out, both).is_none());
        assert_eq!(close_of(&out, one), Some((1008, "World unpaired".into())));
        h.relay.end_streams_of_world(WORLD, &mut out);
        assert_eq!(close_of(&out, both), Some((1008, "World unpaired".into())));
    }

    #[test]
    fn wildcard_socket_of_a_bound_key_sees_only_its_worlds() {
        let mut h = H::new(Config::default());
        let (wl, _) = h.world_online(WORLD);
        let (ol, _) = h.world_online(OTHER);
        h.api_key = h.key(&["events:subscribe"], &[WORLD, "fvtt_third"], None);
        let s = open(&mut h, "/ws/events");
        let out = h.text(s, &sub_msg(r#"["hooks"]"#));
        let snap = bytes_to(&out, s);
        assert!(snap.contains(WORLD) && !snap.contains(OTHER), "{snap}");
        assert_eq!(h.relay.gateway.restricted, 1);
        let ev = json!({"type": "hook-event", "data": {"hook": "x", "args": []}}).to_string();
        assert_eq!(bytes_to(&h.text(ol, &ev), s), "");
        assert!(bytes_to(&h.text(wl, &ev), s).contains(r#""type":"x""#));
        h.input(Input::Closed { conn: s });
        assert_eq!(h.relay.gateway.restricted, 0);
    }

    #[test]
    fn token_sources_in_order() {
        let cases: &[(HeaderSlice, &str, Option<&str>)] = &[
            (&[("x-api-key", "a"), ("token", "b")], "token=c", Some("a")),
            (
                &[("token", "b"), ("authorization", "Bearer d")],
                "",
                Some("b"),
            ),
            (&[("authorization", "bearer  d ")], "token=c", Some("d")),
            (&[("authorization", "Basic d")], "token=c", Some("c")),
            (&[("x-api-key", " ")], "token=c", Some("c")),
            (&[], "", None),
        ];
        for (headers, query, want) in cases {
            let target = format!("/ws/events?{query}");
            let h = head(crate::http::request::Method::Get, &target, headers);
            assert_eq!(presented_token(&h).as_deref(), *want, "{headers:?} {query}");
        }
    }
}
