//! The `/relay` world link: the Foundry module's side of the wire (module-protocol.md).
//!
//! ```text
//!  upgrade (query: id + metadata) ─▶ ModuleAuth ──auth ok, no live link──▶ Module ──close──▶ gone
//!                                        │  └─ bad message / token / timeout ─▶ close 4002
//!                                        └─ the clientId has a live link ──▶ close 4004
//!                                           (a link that missed its pings is replaced: 1001)
//! ```
//!
//! Close codes are a contract with the module (module-protocol.md §1.6): 1008/4001/4002 make
//! it forget its token, 1000 stops it for good, 4004 makes it poll every 30 s. So refusals of
//! a token use 4002, transient conditions (shutdown, overload) never use those codes, and no
//! path closes a world link with 1000 (`no_close_of_a_world_link_is_1000` drives them all).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use log::{debug, info};
use serde::Deserialize;
use serde_json::{json, Value};

use super::history::{By, LinkEvent};
use super::io::{Action, Bytes, Endpoint, Timer};
use super::pending::{Caller, Waiter};
use super::world::{Duplicate, Live, Meta};
use super::{Relay, Role};
use crate::auth::TokenError;
use crate::error::WsClose;
use crate::http::request::Head;
use crate::http::response::Response;
use crate::ids::ConnId;
use crate::store::KnownWorld;

/// The fields we read from every module message. serde skips the rest without building
/// values, so a 64 MiB reply is scanned once and never copied into a tree.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "requestId")]
    request_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AuthMsg {
    #[serde(rename = "type")]
    kind: Option<String>,
    token: Option<String>,
}

const EVENT_TYPES: [&str; 6] = [
    "chat-event",
    "roll-data",
    "hook-event",
    "combat-event",
    "actor-event",
    "scene-event",
];

impl Relay {
    /// A `/relay` (or `/relay/`, or `/` with Upgrade) upgrade: check the query before
    /// upgrading (relay-protocol.md §1.2), then wait for the first message.
    pub(crate) fn module_upgrade(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let meta = match Meta::from_query(&head.query) {
            Ok(m) => m,
            Err(e) => {
                out.push(Action::Respond {
                    conn,
                    resp: Response::text(400, "text/plain; charset=utf-8", e.message()),
                });
                return;
            }
        };
        debug!("{conn} {peer}: module upgrade for {}", meta.client_id);
        self.roles.insert(
            conn,
            Role::ModuleAuth {
                meta: Box::new(meta),
                peer,
            },
        );
        out.push(Action::Accept {
            conn,
            endpoint: Endpoint::Module,
        });
        self.arm_auth_timeout(conn, now, out);
    }

    /// The first message on a module link must be `{"type":"auth","token":…}`.
    pub(crate) fn module_auth(
        &mut self,
        conn: ConnId,
        text: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(Role::ModuleAuth { meta, peer }) = self.roles.get(&conn).cloned() else {
            return;
        };
        let meta = *meta;
        let refuse = |out: &mut Vec<Action>, reason: &'static str| {
            out.push(Action::Close {
                conn,
                close: WsClose::new(4002, reason),
            });
        };
        let msg: Option<AuthMsg> = serde_json::from_str(text).ok();
        let token = match msg {
            Some(AuthMsg {
                kind: Some(k),
                token: Some(t),
            }) if k == "auth" && !t.is_empty() => t,
            _ => {
                self.roles.remove(&conn);
                return refuse(out, "Invalid auth message");
            }
        };
        let token_idx = match self
            .state
            .check_connection_token(&token, &meta.client_id, peer)
        {
            Ok(i) => i,
            Err(e) => {
                self.roles.remove(&conn);
                let reason = match e {
                    TokenError::IpNotAllowed => "IP address not allowed",
                    TokenError::Invalid | TokenError::WrongClient => "Authentication failed",
                };
                info!(
                    "{conn} {peer}: module auth refused for {}: {reason}",
                    meta.client_id
                );
                let refused = LinkEvent::Refused {
                    code: 4002,
                    reason: reason.into(),
                    peer,
                    holder: None,
                };
                self.link_event(&meta.client_id, refused, now, out);
                return refuse(out, reason);
            }
        };
        // Duplicate check before auth-success (api-surface.md bug 12).
        // A link silent for a ping interval plus a margin has missed a ping it would have
        // answered within milliseconds: a newcomer for its clientId may take over.
        let stale_after = self.cfg.module_ping_interval + self.cfg.module_stale_margin;
        match self.worlds.duplicate(&meta.client_id, now, stale_after) {
            Duplicate::None => {}
            Duplicate::ReplaceStale(old) => {
                info!(
                    "{conn} {peer}: {} connected again; its old link {old} missed its pings \
                     and is replaced",
                    meta.client_id
                );
                // Transient code: should the old socket be alive after all, its module
                // reconnects, meets the new link, and waits with 4004 (no flapping).
                let why = format!("replaced by a newer connection from {peer}");
                self.history.note_close(old, 1001, &why, By::Relay);
                self.module_closed(old, now, out);
                self.roles.remove(&old);
                out.push(Action::Close {
                    conn: old,
                    close: WsClose::new(1001, "Replaced by a newer connection"),
                });
            }
            Duplicate::RejectNew => {
                self.roles.remove(&conn);
                info!(
                    "{conn} {peer}: {} already has a live link; the newcomer waits (4004)",
                    meta.client_id
                );
                let refused = LinkEvent::Refused {
                    code: 4004,
                    reason: "Client ID already connected".into(),
                    peer,
                    holder: self.worlds.get(&meta.client_id).map(|l| l.peer),
                };
                self.link_event(&meta.client_id, refused, now, out);
                out.push(Action::Close {
                    conn,
                    close: WsClose::new(4004, "Client ID already connected"),
                });
                return;
            }
        }
        let now_ms = self.clock.ms(now);
        self.metrics.world_connects += 1;
        self.roles.insert(conn, Role::Module);
        // Which token this link used, so revoking it closes this link (relay/pairing.rs).
        self.note_link_token(conn, token_idx, now, out);
        info!(
            "{conn} {peer}: world {} connected ({} / {} {} / Foundry {})",
            meta.client_id,
            meta.world_title,
            meta.system_id,
            meta.system_version,
            meta.foundry_version
        );
        self.remember_world(&meta, now, out);
        self.link_event(&meta.client_id, LinkEvent::Connected { peer }, now, out);
        self.worlds.insert(Live {
            conn,
            meta,
            peer,
            connected_since_ms: now_ms,
            last_seen_ms: now_ms,
            users: Value::Null,
            last_alive: now,
        });
        out.push(Action::Authenticated { conn });
        out.push(Action::Text {
            conn,
            payload: Bytes::Owned(br#"{"type":"auth-success"}"#.to_vec()),
        });
        // Subscriber counts go only after auth-success (the module drops them before).
        self.after_module_auth(conn, now, out);
    }

    /// Record (or refresh) the paired world's metadata in the durable state.
    fn remember_world(&mut self, meta: &Meta, now: Instant, out: &mut Vec<Action>) {
        let now_ms = self.clock.ms(now);
        let existing = self
            .state
            .worlds
            .iter()
            .find(|w| w.client_id == meta.client_id)
            .cloned();
        let mut w = existing.unwrap_or_else(|| KnownWorld {
            client_id: meta.client_id.clone(),
            paired_ms: now_ms,
            ..KnownWorld::default()
        });
        let changed = w.world_id != meta.world_id
            || w.world_title != meta.world_title
            || w.system_id != meta.system_id
            || w.system_title != meta.system_title
            || w.system_version != meta.system_version
            || w.foundry_version != meta.foundry_version
            || w.custom_name != meta.custom_name;
        w.world_id = meta.world_id.clone();
        w.world_title = meta.world_title.clone();
        w.system_id = meta.system_id.clone();
        w.system_title = meta.system_title.clone();
        w.system_version = meta.system_version.clone();
        w.foundry_version = meta.foundry_version.clone();
        w.custom_name = meta.custom_name.clone();
        w.last_seen_ms = Some(now_ms);
        self.state.upsert_world(w);
        // lastSeen alone is not worth a disk write on every reconnect; metadata is. Nobody
        // waits on it (the module reports it again on every connect), so a failed save is
        // left to the bookkeeping retry rather than refusing the link.
        if changed {
            self.persist_soon(now, out);
        }
    }

    /// Any message after auth.
    pub(crate) fn module_message(
        &mut self,
        conn: ConnId,
        text: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let now_ms = self.clock.ms(now);
        if let Some(l) = self.worlds.by_conn_mut(conn) {
            l.last_seen_ms = now_ms;
            l.last_alive = now;
        }
        let (kind, request_id) = match serde_json::from_str::<Peek>(&text) {
            Ok(p) => (
                p.kind.map(|c| c.into_owned()),
                p.request_id.map(|c| c.into_owned()),
            ),
            Err(_) => {
                debug!("{conn}: module sent a message that is not a JSON object; ignored");
                return;
            }
        };
        // Replies first, matched by requestId alone (module-protocol.md §6 item 6).
        if let Some(rid) = &request_id {
            if let Some(w) = self.pending.take_reply(rid, conn) {
                self.metrics.forwarded_replies += 1;
                self.deliver_reply(w, text, now, out);
                return;
            }
        }
        let kind = kind.unwrap_or_default();
        match kind.as_str() {
            "ping" => out.push(Action::Text {
                conn,
                payload: Bytes::Owned(br#"{"type":"pong"}"#.to_vec()),
            }),
            "pong" => {}
            t if EVENT_TYPES.contains(&t) => self.module_event(conn, &kind, &text, now, out),
            "player-list" => {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if let Some(l) = self.worlds.by_conn_mut(conn) {
                        l.users = v.get("users").cloned().unwrap_or(Value::Null);
                    }
                }
            }
            "module-notify" => self.module_notify(conn, &text, now, out),
            "get-known-clients" => {
                let clients = self.clients_json(None, now);
                // What this world may do across worlds (relay/remote.rs).
                let (targets, scopes) = self
                    .worlds
                    .client_of(conn)
                    .and_then(|id| self.state.worlds.iter().find(|w| w.client_id == id))
                    .map(|w| (w.allowed_targets.clone(), w.remote_scopes.clone()))
                    .unwrap_or_default();
                let reply = json!({
                    "type": "known-clients-result",
                    "requestId": request_id,
                    "clients": clients,
                    "tokenScopes": scopes,
                    "tokenAllowedTargets": targets,
                });
                out.push(Action::Text {
                    conn,
                    payload: Bytes::Owned(reply.to_string().into_bytes()),
                });
            }
            "remote-request" => self.remote_request(conn, &text, now, out),
            other => {
                // Includes late replies whose caller left or timed out. Never echoed to
                // other worlds (the reference re-broadcasts; we do not).
                debug!("{conn}: module message of type {other:?} ignored");
            }
        }
    }

    /// `module-notify` (module-protocol.md §5; e.g. "Setting `wsRelayUrl` was changed" by a
    /// user): logged, counted, and sent to `/ws/events` sockets that asked for
    /// `module-notify` (the admin page's live view asks for `all`).
    fn module_notify(&mut self, conn: ConnId, text: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(world) = self.worlds.client_of(conn).map(str::to_string) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        info!(
            "{conn}: world {world} notice: {} {} (by {})",
            field("event"),
            field("details"),
            field("actor")
        );
        self.metrics.module_notices += 1;
        if self.state.worlds.iter().any(|w| w.client_id == world) {
            let mut words = field("details");
            if words.is_empty() {
                words = field("event");
            }
            if !field("actor").is_empty() {
                words = format!("{words} (by {})", field("actor"));
            }
            let at = self.clock.ms(now);
            self.history.note_notice(&world, at, words);
        }
        // The module's own fields, nothing else (its `type` is the envelope's).
        let data = json!({
            "event": field("event"),
            "details": field("details"),
            "actor": field("actor"),
            "world": field("world"),
        });
        let ds = self.hub.module_notice(&world, &data, self.clock.ms(now));
        self.push_deliveries(&world, ds, out);
    }

    /// The world link closed: the world goes offline and its waiters fail at once.
    pub(crate) fn module_closed(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        let Some(live) = self.worlds.remove_conn(conn) else {
            return;
        };
        info!("{conn}: world {} disconnected", live.meta.client_id);
        self.link_closed(conn, &live.meta.client_id, live.last_alive, now, out);
        let now_ms = self.clock.ms(now);
        if let Some(w) = self
            .state
            .worlds
            .iter()
            .find(|w| w.client_id == live.meta.client_id)
            .cloned()
        {
            let mut w = w;
            w.last_seen_ms = Some(now_ms);
            self.state.upsert_world(w);
        }
        for (_, waiter) in self.pending.take_link(conn) {
            self.metrics.requests_failed_by_disconnect += 1;
            self.fail_waiter(waiter, 502, "Foundry client disconnected", out);
        }
        self.after_module_closed(&live, now, out);
    }

    /// Answer a waiter with an error (timeout, disconnect).
    pub(crate) fn fail_waiter(
        &mut self,
        waiter: Waiter,
        status: u16,
        message: &str,
        out: &mut Vec<Action>,
    ) {
        match waiter.caller {
            Caller::Mcp(m) => self.mcp_fail(*m, status, out),
            Caller::Http { conn, .. } => out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(status, message)),
            }),
            Caller::WsApi {
                conn,
                client_request_id,
                ws_type,
            } => {
                // /ws/api clients know the reference's wording for a world that went away
                // (relay-protocol.md §1.9); HTTP callers get the 502 text.
                let message = if status == 502 {
                    "Foundry client is no longer connected"
                } else {
                    message
                };
                let reply = json!({
                    "type": format!("{ws_type}-result"),
                    "requestId": client_request_id,
                    "clientId": waiter.world,
                    "error": message,
                });
                out.push(Action::Text {
                    conn,
                    payload: Bytes::Owned(reply.to_string().into_bytes()),
                });
            }
            Caller::Remote {
                conn,
                source_request_id,
            } => {
                let message = match status {
                    408 => "Remote request timed out",
                    502 => "The target world disconnected",
                    _ => message,
                };
                self.remote_error(conn, &source_request_id, message, out);
            }
        }
    }

    /// A module event (`chat-event`, `roll-data`, …): parsed once, fanned out by the hub.
    fn module_event(
        &mut self,
        conn: ConnId,
        kind: &str,
        text: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(world) = self.worlds.client_of(conn).map(str::to_string) else {
            return;
        };
        let data = match serde_json::from_str::<Value>(text) {
            Ok(mut v) => v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
            Err(_) => return,
        };
        self.publish_event(&world, kind, data, now, out);
    }

    /// Forward a request (pre-serialized, carrying `request_id`) to `world`'s `link`: the
    /// waiter goes into `pending` before the request leaves, and gets its own deadline timer
    /// (not a global sweeper: api-surface.md bug 2).
    pub(crate) fn dispatch_to_world(
        &mut self,
        (world, link): (&str, ConnId),
        request_id: String,
        caller: Caller,
        msg: Vec<u8>,
        deadline: Instant,
        out: &mut Vec<Action>,
    ) {
        let serial = self
            .pending
            .insert(request_id, caller, world, link, deadline);
        self.metrics.forwarded_requests += 1;
        out.push(Action::Text {
            conn: link,
            payload: Bytes::Owned(msg),
        });
        out.push(Action::Arm {
            at: deadline,
            timer: Timer::Request(serial),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::super::events::harness::*;
    use crate::config::Config;
    use crate::http::request::Method;
    use crate::relay::io::{Action, Input};

    const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    /// A second link for `WORLD` from another host: upgrade, then auth.
    fn from_other_host(h: &mut H) -> (crate::ids::ConnId, Vec<Action>) {
        let conn = h.conn();
        let mut hd = head(Method::Get, &format!("/relay?id={WORLD}"), &[]);
        hd.wants_upgrade = true;
        let mut out = h.input(Input::Upgrade {
            conn,
            peer: OTHER_HOST,
            head: &hd,
        });
        let token = h.token.clone();
        out.extend(h.text(conn, &format!(r#"{{"type":"auth","token":"{token}"}}"#)));
        (conn, out)
    }

    #[test]
    fn a_live_link_keeps_its_slot_a_silent_one_is_replaced() {
        let mut h = H::new(Config::default());
        let (old, _) = h.world_online(WORLD);
        // The old link answers our control pings: a newcomer from elsewhere waits (4004).
        h.advance(Duration::from_secs(20));
        h.input(Input::Alive { conn: old });
        h.advance(Duration::from_secs(20));
        let (new, out) = from_other_host(&mut h);
        assert_eq!(
            close_of(&out, new),
            Some((4004, "Client ID already connected".into()))
        );
        assert_eq!(close_of(&out, old), None);
        // It then stops answering: past a ping interval (20 s) plus 5 s it counts as dead,
        // and the next newcomer takes the slot; the old one gets a transient code.
        h.advance(Duration::from_secs(26));
        let (newer, out) = from_other_host(&mut h);
        assert_eq!(close_of(&out, newer), None, "the newcomer is accepted");
        assert!(bytes_to(&out, newer).contains(r#"{"type":"auth-success"}"#));
        assert_eq!(
            close_of(&out, old),
            Some((1001, "Replaced by a newer connection".into()))
        );
        assert_eq!(
            h.relay.worlds.get(WORLD).map(|l| l.conn),
            Some(newer),
            "the world is served by the newcomer"
        );
    }

    #[test]
    fn a_second_link_from_the_same_address_waits_and_the_first_keeps_its_slot() {
        let mut h = H::new(Config::default());
        let (first, _) = h.world_online(WORLD);
        // A second GM tab: same address, same token.
        let (second, out) = h.world_online(WORLD);
        assert_eq!(
            close_of(&out, second),
            Some((4004, "Client ID already connected".into()))
        );
        assert_eq!(close_of(&out, first), None, "the live link keeps its slot");
        assert_eq!(h.relay.worlds.get(WORLD).map(|l| l.conn), Some(first));
        // The first tab closes: the next poll of the second takes the slot at once.
        h.input(Input::Closed { conn: first });
        let (third, out) = h.world_online(WORLD);
        assert!(bytes_to(&out, third).contains(r#"{"type":"auth-success"}"#));
        assert_eq!(close_of(&out, third), None);
    }

    /// Every close the relay core can send a world link, driven one by one: none is 1000,
    /// which the module reads as "stay offline for good" (module-protocol.md §1.6). The
    /// loop's own closes (shutdown 1001, ping timeout 1001, overload 1013, framing errors
    /// 1002/1007/1009) are constants pinned by `loop_closes_of_a_world_link_are_not_1000`.
    #[test]
    fn no_close_of_a_world_link_is_1000() {
        let mut seen: Vec<(&str, u16)> = Vec::new();
        let mut closes = |name: &'static str, out: &[Action], conn| {
            let c = close_of(out, conn).unwrap_or_else(|| panic!("{name}: no close"));
            seen.push((name, c.0));
        };
        let cfg = Config {
            auth_timeout: Duration::from_secs(10),
            ..Config::default()
        };
        let mut h = H::new(cfg);
        let upgrade = |h: &mut H| {
            let conn = h.conn();
            h.upgrade(conn, &format!("/relay?id={WORLD}"), &[]);
            conn
        };
        // Refusals during auth.
        let conn = upgrade(&mut h);
        let out = h.text(conn, "not json");
        closes("invalid auth message", &out, conn);
        let conn = upgrade(&mut h);
        let out = h.text(conn, r#"{"type":"auth","token":"nope"}"#);
        closes("unknown token", &out, conn);
        let conn = upgrade(&mut h);
        let other = h.other_token.clone();
        let out = h.text(conn, &format!(r#"{{"type":"auth","token":"{other}"}}"#));
        closes("token of another world", &out, conn);
        let conn = upgrade(&mut h);
        h.advance(Duration::from_secs(11));
        let out = h.input(Input::Timer(crate::relay::io::Timer::Auth(conn)));
        closes("auth timeout", &out, conn);
        // Duplicates: a live link makes the newcomer wait; a silent one is replaced.
        let (old, _) = h.world_online(WORLD);
        let (dup, out) = h.world_online(WORLD);
        closes("duplicate of a live link", &out, dup);
        h.advance(Duration::from_secs(60));
        let (_, out) = h.world_online(WORLD);
        closes("stale link replaced", &out, old);
        // Revocations.
        let link = h.relay.worlds.get(WORLD).map(|l| l.conn).expect("online");
        let token = h.token.clone();
        let body = format!(r#"{{"token":"{token}"}}"#).into_bytes();
        let hd = head(Method::Post, "/api/self-unpair", &[]);
        let c = h.conn();
        let out = h.input(Input::Request {
            conn: c,
            peer: PEER,
            head: &hd,
            body,
        });
        closes("self-unpair", &out, link);
        let (_, t) = h.relay.state.create_connection_token(WORLD, 0);
        h.token = t;
        let (link, _) = h.world_online(WORLD);
        let idx = h.relay.state.tokens_for_client(WORLD)[0];
        let tid = h.relay.state.tokens[idx].id.clone();
        let admin = h.admin_key.clone();
        let hd = head(
            Method::Delete,
            &format!("/admin/api/tokens/{tid}"),
            &[("x-api-key", &admin)],
        );
        let c = h.conn();
        let out = h.input(Input::Request {
            conn: c,
            peer: PEER,
            head: &hd,
            body: Vec::new(),
        });
        closes("token revoked", &out, link);
        let (_, t) = h.relay.state.create_connection_token(WORLD, 0);
        h.token = t;
        let (link, _) = h.world_online(WORLD);
        let hd = head(
            Method::Delete,
            &format!("/admin/api/worlds/{WORLD}"),
            &[("x-api-key", &admin)],
        );
        let c = h.conn();
        let out = h.input(Input::Request {
            conn: c,
            peer: PEER,
            head: &hd,
            body: Vec::new(),
        });
        closes("unpaired", &out, link);
        assert_eq!(seen.len(), 9, "{seen:?}");
        for (name, code) in &seen {
            assert_ne!(*code, 1000, "{name} closes a world link with 1000");
        }
    }

    #[test]
    fn loop_closes_of_a_world_link_are_not_1000() {
        use crate::error::WsClose;
        for c in [
            WsClose::GOING_AWAY,
            WsClose::PING_TIMEOUT,
            WsClose::OVERLOADED,
            WsClose::PROTOCOL,
            WsClose::INVALID_DATA,
            WsClose::TOO_BIG,
            WsClose::INTERNAL,
        ] {
            assert_ne!(c.code, 1000, "{c}");
        }
    }
}
