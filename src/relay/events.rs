//! Live events: the glue between the pure hub (hub.rs) and the connections. It owns the
//! per-connection `Subscriber` record shared by the three transports, the six SSE routes
//! (`GET /<x>/subscribe`, relay-protocol.md §3.3), the module hooks that keep the module's
//! channel counts right (§3.1, module-protocol.md §4.1), and turning the hub's deliveries into
//! actions without copying bytes per subscriber (ARCHITECTURE.md, "Path 2").
//!
//! SSE decisions where the reference and the issue differ (relay-protocol.md §3.3):
//! - `clientId` is resolved like other routes (explicit, else the key's single world, else
//!   the only connected world) instead of being required. An explicit (or key-bound) world
//!   that is paired but offline is accepted: the stream opens, says `world-disconnected` at
//!   once and delivers when the world returns, so a client's stream survives world restarts.
//!   Only a world the relay has never seen is 404 `Invalid client ID`.
//! - Every frame of ours has an `id:` (`<epoch>-<seq>`), a `retry:` hint opens the stream, and
//!   `Last-Event-ID` (header, or `?lastEventId=` for hand-made URLs) replays from the ring.
//! - The key may also come as `?apiKey=` on these routes only, because `EventSource` cannot
//!   send headers. A key in a URL can end up in proxy logs and browser history: less safe,
//!   documented as such.

use std::time::Instant;

use serde_json::{json, Value};

use super::hub::{Channel, CountUpdate, Delivery, Filters, Replay, ResumePoint, Transport};
use super::io::{Action, Bytes};
use super::rest::{presented_key, Caller0};
use super::world::Live;
use super::{Relay, Role};
use crate::auth::{AuthError, Principal};
use crate::enc;
use crate::error::WsClose;
use crate::http::request::Head;
use crate::http::response::Response;
use crate::http::route::{Kind, Route};
use crate::ids::ConnId;
use crate::sse;

/// The frame the reference sends to a stream over the per-(world, channel) cap, before it
/// ends the response (relay-protocol.md §3.3 item 3).
pub(crate) const TOO_MANY_FRAME: &[u8] =
    b"event: error\ndata: {\"error\":\"Too many SSE connections\"}\n\n";

/// Browsers' HTTP/1.1 connections per host (Chromium, Firefox, Safari): not a limit of ours,
/// the reason for the many-streams hint.
const BROWSER_CONNECTIONS_PER_HOST: usize = 6;

/// Who a subscriber connection is, for every transport: which key authenticated it (so a
/// revoked key's connections can be found) and what that key may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subscriber {
    pub transport: Transport,
    /// The API key's id (`key_…`); `None` for the admin key or an admin session.
    pub key_id: Option<String>,
    pub scopes: Vec<String>,
    /// `scopedClientIds`: empty = every world.
    pub client_ids: Vec<String>,
    /// The key's bound Foundry user (applied as the user filter).
    pub user_id: Option<String>,
    /// The one world this connection follows; `None` = every world it may see (`/ws/events`)
    /// or none yet (`/ws/api` before a subscribe).
    pub world: Option<String>,
    /// The browser origin of an SSE stream (its `Origin` header), for the many-streams hint.
    pub origin: Option<String>,
}

impl Subscriber {
    pub(crate) fn new(
        transport: Transport,
        caller: &Caller0,
        key_id: Option<String>,
        world: Option<String>,
    ) -> Subscriber {
        Subscriber {
            transport,
            key_id,
            scopes: caller.scopes.clone(),
            client_ids: caller.client_ids.clone(),
            user_id: caller.user_id.clone(),
            world,
            origin: None,
        }
    }

    /// Whether the key behind this connection may see `world`'s events.
    pub(crate) fn may_see(&self, world: &str) -> bool {
        self.client_ids.is_empty() || self.client_ids.iter().any(|c| c == world)
    }
}

impl Relay {
    // ------------------------------------------------------------------ module hooks

    /// A world link authenticated: tell its subscribers, then give the module every channel
    /// count above 0 (module-protocol.md §4.1: only after `auth-success`, on every connect).
    pub(crate) fn after_module_auth(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        let Some(live) = self.worlds.by_conn(conn) else {
            return;
        };
        let world = live.meta.client_id.clone();
        let meta = live.to_json();
        let ds = self
            .hub
            .world_status(&world, true, &meta, self.clock.ms(now));
        self.push_deliveries(&world, ds, out);
        self.mcp_world_changed(&world, out);
        for u in self.hub.counts_for_world(&world) {
            out.push(Action::Text {
                conn,
                payload: Bytes::Owned(u.module_message().into_bytes()),
            });
        }
    }

    /// A world link closed: streams stay open and get `event: world-disconnected`;
    /// `/ws/events` sockets that asked get the notice (ARCHITECTURE.md, "Path 3", step 6).
    pub(crate) fn after_module_closed(&mut self, live: &Live, now: Instant, out: &mut Vec<Action>) {
        let world = live.meta.client_id.as_str();
        let mut meta = live.to_json();
        meta["isOnline"] = Value::Bool(false);
        let ds = self
            .hub
            .world_status(world, false, &meta, self.clock.ms(now));
        self.push_deliveries(world, ds, out);
        self.mcp_world_changed(world, out);
    }

    /// A module event (`chat-event`, `roll-data`, …; `data` is its `data`): sequenced, ringed
    /// and encoded once per wire form by the hub, then queued as shared bytes.
    pub(crate) fn publish_event(
        &mut self,
        world: &str,
        kind: &str,
        data: Value,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.mcp_event(world, kind, &data, out);
        let ds = self.hub.publish(world, kind, data, self.clock.ms(now));
        self.metrics.events_published += 1;
        self.metrics.event_deliveries += ds.iter().map(|d| d.conns.len() as u64).sum::<u64>();
        self.push_deliveries(world, ds, out);
    }

    /// Deliveries of `world` → actions: one `SseWrite` / `TextFanout` per transport, the bytes
    /// shared by every connection. `/ws/events` sockets following every world with a key
    /// bound to some worlds are dropped from deliveries of the others (the hub's wildcard
    /// knows no keys); that filter runs only while such a socket exists.
    pub(crate) fn push_deliveries(&self, world: &str, ds: Vec<Delivery>, out: &mut Vec<Action>) {
        for mut d in ds {
            self.mcp_strip_virtual(&mut d.conns);
            let conns = if d.transport == Transport::WsEvents && self.gateway.restricted > 0 {
                d.conns
                    .into_iter()
                    .filter(|c| self.events_may_see(*c, world))
                    .collect()
            } else {
                d.conns
            };
            if conns.is_empty() {
                continue;
            }
            out.push(match d.transport {
                Transport::Sse => Action::SseWrite {
                    conns,
                    bytes: d.bytes,
                },
                Transport::WsApi | Transport::WsEvents => Action::TextFanout {
                    conns,
                    payload: d.bytes,
                },
            });
        }
    }

    /// Send count changes to the worlds they concern, if connected (a world that is offline
    /// gets them all from `counts_for_world` when it returns).
    pub(crate) fn send_counts(&self, updates: Vec<CountUpdate>, out: &mut Vec<Action>) {
        for u in updates {
            if let Some(live) = self.worlds.get(&u.world) {
                out.push(Action::Text {
                    conn: live.conn,
                    payload: Bytes::Owned(u.module_message().into_bytes()),
                });
            }
        }
    }

    // ------------------------------------------------------------------ subscribers

    /// A subscriber connection is gone (the role was already removed by `on_closed`).
    pub(crate) fn subscriber_closed(&mut self, conn: ConnId, _now: Instant, out: &mut Vec<Action>) {
        // /ws/api keeps its own per-socket state in api_ws.rs; its cleanup is wired here.
        self.forget_subscriber(conn, out);
    }

    /// Drop everything the events side holds for `conn` and tell the worlds whose counts
    /// changed. Idempotent: a later `Closed` for a connection we already forgot is a no-op.
    pub(crate) fn forget_subscriber(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        self.subs.remove(&conn);
        self.gateway_forget(conn);
        let updates = self.hub.drop_conn(conn);
        self.send_counts(updates, out);
    }

    /// The first-message deadline of a subscriber socket passed.
    pub(crate) fn subscriber_auth_timeout(
        &mut self,
        conn: ConnId,
        _now: Instant,
        out: &mut Vec<Action>,
    ) {
        // /ws/api's authentication deadline is handled in api_ws.rs (wired here).
        if let Some(Role::Events) = self.roles.get(&conn) {
            self.events_subscribe_timeout(conn, out);
        }
    }

    // ------------------------------------------------------------------ auth

    /// The key id of a principal, while the state is unchanged (see `Principal`).
    pub(crate) fn key_id_of(&self, p: &Principal) -> Option<String> {
        match p {
            Principal::Admin => None,
            Principal::Key(i) => self.state.api_keys.get(*i).map(|k| k.id.clone()),
        }
    }

    /// API-key auth for a route: as `authenticate`, plus `?apiKey=` on SSE routes only
    /// (EventSource cannot send headers). A header always wins over the query.
    pub(crate) fn authenticate_route(
        &mut self,
        head: &Head,
        kind: Kind,
        now_ms: u64,
    ) -> Result<Caller0, AuthError> {
        if kind == Kind::Sse && presented_key(head).is_none() {
            if let Some(k) = query_value(&head.query, "apiKey") {
                return self.authenticate_presented(Some(&k), now_ms);
            }
        }
        self.authenticate(head, now_ms)
    }

    /// The caller behind a presented secret (admin key or scoped key).
    pub(crate) fn authenticate_presented(
        &mut self,
        presented: Option<&str>,
        now_ms: u64,
    ) -> Result<Caller0, AuthError> {
        let principal = self.state.authenticate(presented, now_ms)?;
        Ok(self.caller_of(principal))
    }

    pub(crate) fn caller_of(&self, principal: Principal) -> Caller0 {
        let scopes = self.state.principal_scopes(&principal);
        let (client_ids, user_id) = match principal {
            Principal::Admin => (vec![], None),
            Principal::Key(i) => self
                .state
                .api_keys
                .get(i)
                .map(|k| (k.client_ids.clone(), k.user_id.clone()))
                .unwrap_or_default(),
        };
        Caller0 {
            principal,
            scopes,
            client_ids,
            user_id,
        }
    }

    /// A world the relay knows: connected now, or paired earlier (offline).
    pub(crate) fn world_known(&self, id: &str) -> bool {
        self.worlds.get(id).is_some() || self.state.worlds.iter().any(|w| w.client_id == id)
    }

    /// The world a stream follows: explicit, else the key's single world, else the only
    /// connected one (`resolve_client`). Unlike forwarding, a known offline world is fine.
    fn resolve_stream_world(
        &self,
        explicit: Option<&str>,
        caller: &Caller0,
    ) -> Result<String, (u16, Value)> {
        let bound_one = match caller.client_ids.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        };
        let Some(id) = explicit.filter(|s| !s.is_empty()).or(bound_one) else {
            return self.resolve_client(None, caller).map(|(id, _)| id);
        };
        if !caller.client_ids.is_empty() && !caller.client_ids.iter().any(|c| c == id) {
            return Err((
                403,
                json!({"error": "API key is not authorized for this client"}),
            ));
        }
        if !self.world_known(id) {
            return Err((
                404,
                json!({
                    "error": "Invalid client ID",
                    "clientId": id,
                    "message": "No Foundry client connected with this ID.",
                }),
            ));
        }
        Ok(id.to_owned())
    }

    // ------------------------------------------------------------------ SSE routes

    /// A browser allows six HTTP/1.1 connections per host; one EventSource per SSE route uses
    /// them all and the page's own `fetch`es then hang. On the seventh stream of one key from
    /// one browser origin, say so (once per stream past six) and point at `/ws/events`.
    fn hint_many_streams(&self, new: &Subscriber) {
        let Some(origin) = new.origin.as_deref() else {
            return;
        };
        let open = self
            .subs
            .values()
            .filter(|s| {
                s.transport == Transport::Sse
                    && s.origin.as_deref() == Some(origin)
                    && s.key_id == new.key_id
            })
            .count();
        if open + 1 > BROWSER_CONNECTIONS_PER_HOST {
            let key = new.key_id.as_deref().unwrap_or("the admin key");
            log::warn!(
                "{} SSE streams for {key} from {origin}: a browser holds at most {BROWSER_CONNECTIONS_PER_HOST} \
                 HTTP/1.1 connections to a host, so that page's other requests will hang; \
                 a browser app should use one /ws/events WebSocket for every channel (README, \"Browser apps\")",
                open + 1
            );
        }
    }

    /// One of the six `GET /<x>/subscribe` routes, after key auth and the scope check.
    pub(crate) fn sse_route(
        &mut self,
        conn: ConnId,
        route: &Route,
        head: &Head,
        caller: &Caller0,
        _now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(channel) = Channel::from_module_type(&route.reply_type) else {
            out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(404, "Not found")),
            });
            return;
        };
        let pairs = enc::parse_query(&head.query);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let explicit = get("clientId").or_else(|| head.header("x-client-id"));
        let world = match self.resolve_stream_world(explicit, caller) {
            Ok(w) => w,
            Err((status, body)) => {
                out.push(Action::Respond {
                    conn,
                    resp: self.cors(Response::json(status, &body)),
                });
                return;
            }
        };
        out.push(Action::StartSse {
            conn,
            headers: sse_headers(),
        });
        if self.hub.sse_count(&world, channel) >= self.cfg.sse_max_per_channel {
            // The reference's answer: 200, one error frame, end (relay-protocol.md §3.3). A
            // long `retry:` first: EventSource reconnects after a stream ends, by default
            // every few seconds, forever (WHATWG HTML §9.2.3); this makes it back off.
            let mut bytes = sse::retry(self.cfg.sse_refused_retry.as_millis() as u64);
            bytes.extend_from_slice(TOO_MANY_FRAME);
            out.push(Action::SseWrite {
                conns: vec![conn],
                bytes: bytes.into(),
            });
            out.push(Action::Close {
                conn,
                close: WsClose::NORMAL,
            });
            return;
        }
        let filters =
            Filters::from_query(channel, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (sub, updates) =
            self.hub
                .subscribe_sse(conn, &world, channel, filters, caller.user_id.as_deref());
        self.roles.insert(conn, Role::Sse);
        let key_id = self.key_id_of(&caller.principal);
        let mut subscriber = Subscriber::new(Transport::Sse, caller, key_id, Some(world.clone()));
        subscriber.origin = head.header("origin").map(str::to_owned);
        self.hint_many_streams(&subscriber);
        self.subs.insert(conn, subscriber);
        let actor = (channel == Channel::Actor).then(|| get("actorUuid").unwrap_or(""));
        let mut first = sse::retry(self.cfg.sse_retry.as_millis() as u64);
        first.extend(connected_frame(&world, actor));
        if self.worlds.get(&world).is_none() {
            first.extend(offline_frame(&world));
        }
        out.push(Action::SseWrite {
            conns: vec![conn],
            bytes: first.into(),
        });
        let resume = head
            .header("last-event-id")
            .or_else(|| get("lastEventId"))
            .filter(|v| !v.trim().is_empty());
        if let Some(id) = resume {
            match self.hub.replay(sub, &ResumePoint::from_last_event_id(id)) {
                Replay::Events(list) => {
                    for bytes in list {
                        out.push(Action::SseWrite {
                            conns: vec![conn],
                            bytes,
                        });
                    }
                }
                Replay::Reset(bytes) => out.push(Action::SseWrite {
                    conns: vec![conn],
                    bytes,
                }),
                Replay::Unavailable => {}
            }
        }
        self.send_counts(updates, out);
    }
}

/// Extra SSE response headers (relay-protocol.md §3.3 item 2; `Content-Type`, `Cache-Control`
/// and `X-Accel-Buffering: no` come from `write_stream_head`). The body is close-delimited
/// whatever `Connection` says; keep-alive is what the reference sends.
pub(crate) fn sse_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Connection", "keep-alive".to_owned()),
        ("Access-Control-Allow-Origin", "*".to_owned()),
    ]
}

/// `event: connected` with `{"clientId":…}`, plus `actorUuid` on `/actor/subscribe`
/// (relay-protocol.md §3.3 item 4).
pub(crate) fn connected_frame(world: &str, actor_uuid: Option<&str>) -> Vec<u8> {
    let data = match actor_uuid {
        Some(a) => json!({"actorUuid": a, "clientId": world}),
        None => json!({"clientId": world}),
    };
    sse::event(None, Some("connected"), &data.to_string())
}

/// What a stream on an offline world hears first: the same frame the hub sends on a
/// disconnect, so clients have one signal for "world offline".
pub(crate) fn offline_frame(world: &str) -> Vec<u8> {
    let data = json!({"clientId": world});
    sse::event(None, Some("world-disconnected"), &data.to_string())
}

/// The first form-decoded value of `name` in a raw query, if not empty.
pub(crate) fn query_value(query: &str, name: &str) -> Option<String> {
    enc::parse_query(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.trim().is_empty())
}

/// A relay core driven by hand with a fake clock, shared by the events and gateway tests.
#[cfg(test)]
pub(crate) mod harness {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    use crate::auth::NewKey;
    use crate::config::Config;
    use crate::http::request::{BodyKind, Head, Header, Method};
    use crate::ids::ConnId;
    use crate::relay::io::{Action, Bytes, Input};
    use crate::relay::{Clock, Relay};
    use crate::store::{KnownWorld, State};

    pub const WORLD: &str = "fvtt_00000000000000aa";
    pub const OTHER: &str = "fvtt_00000000000000bb";
    pub const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    pub struct H {
        pub relay: Relay,
        pub now: Instant,
        /// The full-scope key, then keys made with `key`.
        pub api_key: String,
        /// The relay's admin key (the admin API accepts it as `X-API-Key`).
        pub admin_key: String,
        pub token: String,
        pub other_token: String,
        /// What the relay saved, and a knob to make saves fail (relay/durable.rs).
        pub disk: crate::relay::durable::tests::MemorySaver,
        next: usize,
    }

    pub fn c(key: usize) -> ConnId {
        ConnId { key, gen: 1 }
    }

    pub fn head(method: Method, target: &str, headers: &[(&str, &str)]) -> Head {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Head {
            method,
            method_raw: method.as_str().to_owned(),
            target: target.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_ascii_lowercase(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
            keep_alive: true,
            expect_continue: false,
            body: BodyKind::None,
            wants_upgrade: false,
        }
    }

    impl H {
        pub fn new(cfg: Config) -> H {
            let t0 = Instant::now();
            let base_ms = 1_780_000_000_000;
            let mut state = State::default();
            let admin_key = state.ensure_admin_key().unwrap_or_default();
            let (_, token) = state.create_connection_token(WORLD, base_ms);
            let (_, other_token) = state.create_connection_token(OTHER, base_ms);
            for id in [WORLD, OTHER] {
                state.upsert_world(KnownWorld {
                    client_id: id.to_owned(),
                    ..KnownWorld::default()
                });
            }
            let disk = crate::relay::durable::tests::MemorySaver::default();
            let mut relay = Relay::new(cfg, state, Clock { base: t0, base_ms });
            relay.set_saver(Box::new(disk.clone()));
            let mut h = H {
                relay,
                now: t0,
                api_key: String::new(),
                admin_key,
                token,
                other_token,
                disk,
                next: 100,
            };
            h.api_key = h.key(&crate::auth::ALL_SCOPES, &[], None);
            h
        }

        pub fn key(&mut self, scopes: &[&str], worlds: &[&str], user: Option<&str>) -> String {
            let spec = NewKey {
                name: "test".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                client_ids: worlds.iter().map(|s| s.to_string()).collect(),
                user_id: user.map(str::to_owned),
                ..NewKey::default()
            };
            match self.relay.state.create_api_key(spec, 0) {
                Ok((_, k)) => k,
                Err(e) => panic!("create_api_key: {e}"),
            }
        }

        pub fn key_id(&self, secret: &str) -> String {
            let hash = crate::auth::hash_secret(secret);
            let k = self.relay.state.api_keys.iter().find(|k| k.hash == hash);
            k.map(|k| k.id.clone()).unwrap_or_default()
        }

        pub fn conn(&mut self) -> ConnId {
            self.next += 1;
            c(self.next)
        }

        pub fn advance(&mut self, d: Duration) {
            self.now += d;
        }

        pub fn input(&mut self, input: Input<'_>) -> Vec<Action> {
            let mut out = Vec::new();
            self.relay.handle(input, self.now, &mut out);
            out
        }

        pub fn get(&mut self, conn: ConnId, target: &str, headers: &[(&str, &str)]) -> Vec<Action> {
            let h = head(Method::Get, target, headers);
            self.input(Input::Request {
                conn,
                peer: PEER,
                head: &h,
                body: Vec::new(),
            })
        }

        pub fn upgrade(
            &mut self,
            conn: ConnId,
            target: &str,
            headers: &[(&str, &str)],
        ) -> Vec<Action> {
            let mut h = head(Method::Get, target, headers);
            h.wants_upgrade = true;
            self.input(Input::Upgrade {
                conn,
                peer: PEER,
                head: &h,
            })
        }

        pub fn text(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
            self.input(Input::WsText {
                conn,
                text: text.to_owned(),
            })
        }

        /// Connect and authenticate a world link; returns its conn and what the relay did.
        pub fn world_online(&mut self, id: &str) -> (ConnId, Vec<Action>) {
            let conn = self.conn();
            let token = if id == WORLD {
                self.token.clone()
            } else {
                self.other_token.clone()
            };
            let mut out = self.upgrade(conn, &format!("/relay?id={id}&worldTitle=T"), &[]);
            out.extend(self.text(conn, &format!(r#"{{"type":"auth","token":"{token}"}}"#)));
            (conn, out)
        }

        pub fn sse(&mut self, target: &str) -> (ConnId, Vec<Action>) {
            let conn = self.conn();
            let key = self.api_key.clone();
            let out = self.get(conn, target, &[("x-api-key", &key)]);
            (conn, out)
        }
    }

    /// Every byte `conn` would receive from these actions, as text (SSE writes and WS texts).
    pub fn bytes_to(out: &[Action], conn: ConnId) -> String {
        let mut s = Vec::new();
        for a in out {
            match a {
                Action::SseWrite { conns, bytes } if conns.contains(&conn) => s.extend(&bytes[..]),
                Action::TextFanout { conns, payload } if conns.contains(&conn) => {
                    s.extend(&payload[..]);
                    s.push(b'\n');
                }
                Action::Text { conn: c, payload } if *c == conn => {
                    match payload {
                        Bytes::Owned(v) => s.extend(v),
                        Bytes::Shared(r) => s.extend(&r[..]),
                    }
                    s.push(b'\n');
                }
                _ => {}
            }
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    /// The close sent to `conn`, if any.
    pub fn close_of(out: &[Action], conn: ConnId) -> Option<(u16, String)> {
        out.iter().find_map(|a| match a {
            Action::Close { conn: c, close } if *c == conn => {
                Some((close.code, close.reason.to_string()))
            }
            _ => None,
        })
    }

    /// The HTTP response to `conn`: status, body.
    pub fn response_of(out: &[Action], conn: ConnId) -> Option<(u16, String)> {
        out.iter().find_map(|a| match a {
            Action::Respond { conn: c, resp } if *c == conn => Some((
                resp.status,
                String::from_utf8_lossy(resp.body.as_bytes()).into_owned(),
            )),
            _ => None,
        })
    }

    /// `event-subscription-update` messages sent to the world link `link`, as (channel, n).
    pub fn counts_to(out: &[Action], link: ConnId) -> Vec<(String, u64)> {
        bytes_to(out, link)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "event-subscription-update")
            .map(|v| {
                (
                    v["channel"].as_str().unwrap_or("").to_owned(),
                    v["count"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::harness::*;
    use super::*;
    use crate::config::Config;
    use crate::relay::io::Input;
    use std::time::Duration;

    fn chat(id: &str, alias: &str) -> String {
        json!({"type": "chat-event", "data": {"eventType": "create", "data": {
            "id": id, "content": "hi", "speaker": {"alias": alias}, "whisper": [], "type": "base",
            "author": {"id": "u1", "name": "GM"}}}})
        .to_string()
    }

    #[test]
    fn stream_open_past_15_minutes_of_simulated_time_still_delivers() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        let (sse, out) = h.sse(&format!("/chat/subscribe?clientId={WORLD}"));
        assert!(out.iter().any(|a| matches!(a, Action::StartSse { .. })));
        // 16 minutes on, past the reference's 600 s write timeout; the relay never ends it.
        h.advance(Duration::from_secs(16 * 60));
        let out = h.text(link, &chat("m1", "Bob"));
        let got = bytes_to(&out, sse);
        assert!(got.contains("event: chat-create\n"), "{got:?}");
        assert!(got.contains(r#""id":"m1""#), "{got:?}");
        assert!(close_of(&out, sse).is_none());
    }

    #[test]
    fn stream_opens_with_headers_retry_connected_and_counts() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        let (sse, out) = h.sse(&format!(
            "/actor/subscribe?clientId={WORLD}&actorUuid=Actor.x"
        ));
        let Some(Action::StartSse { headers, .. }) =
            out.iter().find(|a| matches!(a, Action::StartSse { .. }))
        else {
            panic!("no StartSse");
        };
        assert!(headers.contains(&("Access-Control-Allow-Origin", "*".to_owned())));
        let got = bytes_to(&out, sse);
        let want = format!(
            "retry: 3000\n\nevent: connected\ndata: {{\"actorUuid\":\"Actor.x\",\"clientId\":\"{WORLD}\"}}\n\n"
        );
        assert_eq!(got, want);
        assert_eq!(counts_to(&out, link), vec![("actor-events".to_owned(), 1)]);
        // The stream goes: the module hears 0.
        let out = h.input(Input::Closed { conn: sse });
        assert_eq!(counts_to(&out, link), vec![("actor-events".to_owned(), 0)]);
        assert!(h.relay.subs.is_empty());
    }

    #[test]
    fn sse_errors_before_streaming() {
        let mut h = H::new(Config::default());
        let bound = h.key(&["events:subscribe"], &[OTHER], None);
        let no_scope = h.key(&["clients:read"], &[], None);
        let cases: &[(&str, &str, u16, &str)] = &[
            (
                "/chat/subscribe?clientId=fvtt_unknown",
                "full",
                404,
                "Invalid client ID",
            ),
            (
                "/chat/subscribe",
                "full",
                404,
                "No connected Foundry clients found",
            ),
            (
                &format!("/chat/subscribe?clientId={WORLD}"),
                "bound",
                403,
                "not authorized",
            ),
            ("/chat/subscribe", "none", 401, "API key is required"),
            ("/chat/subscribe", "scope", 403, "events:subscribe"),
        ];
        for (target, who, status, needle) in cases {
            let key = match *who {
                "full" => h.api_key.clone(),
                "bound" => bound.clone(),
                "scope" => no_scope.clone(),
                _ => String::new(),
            };
            let conn = h.conn();
            let headers: Vec<(&str, &str)> = if key.is_empty() {
                vec![]
            } else {
                vec![("x-api-key", key.as_str())]
            };
            let out = h.get(conn, target, &headers);
            let (st, body) = response_of(&out, conn).unwrap_or_default();
            assert_eq!(st, *status, "{target} {who}: {body}");
            assert!(body.contains(needle), "{target} {who}: {body}");
        }
    }

    #[test]
    fn api_key_in_query_only_for_sse_routes() {
        let mut h = H::new(Config::default());
        h.world_online(WORLD);
        let key = h.api_key.clone();
        let conn = h.conn();
        let out = h.get(
            conn,
            &format!("/rolls/subscribe?clientId={WORLD}&apiKey={key}"),
            &[],
        );
        assert!(out.iter().any(|a| matches!(a, Action::StartSse { .. })));
        let conn = h.conn();
        let out = h.get(conn, &format!("/clients?apiKey={key}"), &[]);
        assert_eq!(response_of(&out, conn).map(|r| r.0), Some(401));
    }

    #[test]
    fn offline_known_world_is_subscribable_and_resumes_on_reconnect() {
        let mut h = H::new(Config::default());
        let (sse, out) = h.sse(&format!(
            "/hooks/subscribe?clientId={WORLD}&hooks=updateActor"
        ));
        let got = bytes_to(&out, sse);
        assert!(got.ends_with(&format!(
            "event: world-disconnected\ndata: {{\"clientId\":\"{WORLD}\"}}\n\n"
        )));
        // The world comes: its count arrives right after auth-success, then events flow.
        let (link, out) = h.world_online(WORLD);
        assert_eq!(counts_to(&out, link), vec![("hooks".to_owned(), 1)]);
        let ev = |hook: &str| json!({"type": "hook-event", "data": {"hook": hook, "args": []}});
        let out = h.text(link, &ev("deleteActor").to_string());
        assert_eq!(bytes_to(&out, sse), "", "filtered out");
        let out = h.text(link, &ev("updateActor").to_string());
        assert!(bytes_to(&out, sse).contains("event: updateActor\n"));
        // It goes away: the stream stays and is told.
        let out = h.input(Input::Closed { conn: link });
        assert!(bytes_to(&out, sse).contains("event: world-disconnected"));
        assert!(close_of(&out, sse).is_none());
    }

    #[test]
    fn cap_per_world_and_channel() {
        let cfg = Config {
            sse_max_per_channel: 3,
            ..Config::default()
        };
        let mut h = H::new(cfg);
        let target = format!("/rolls/subscribe?clientId={WORLD}");
        for _ in 0..3 {
            let (c, out) = h.sse(&target);
            assert!(close_of(&out, c).is_none());
        }
        let (c, out) = h.sse(&target);
        // A long retry first, so a browser's EventSource backs off (60 s by default).
        assert_eq!(
            bytes_to(&out, c),
            format!(
                "retry: 60000\n\n{}",
                String::from_utf8_lossy(TOO_MANY_FRAME)
            )
        );
        assert!(close_of(&out, c).is_some());
        // Another channel of the same world is not affected.
        let (c, out) = h.sse(&format!("/chat/subscribe?clientId={WORLD}"));
        assert!(close_of(&out, c).is_none());
    }

    #[test]
    fn last_event_id_replays_then_resets_when_unknown() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        let (s1, _) = h.sse(&format!("/chat/subscribe?clientId={WORLD}"));
        let mut ids = Vec::new();
        for i in 0..3 {
            let out = h.text(link, &chat(&format!("m{i}"), "Bob"));
            let got = bytes_to(&out, s1);
            let id = got.lines().next().and_then(|l| l.strip_prefix("id: "));
            ids.push(id.unwrap_or_default().to_owned());
        }
        let key = h.api_key.clone();
        let conn = h.conn();
        let target = format!("/chat/subscribe?clientId={WORLD}");
        let out = h.get(
            conn,
            &target,
            &[("x-api-key", &key), ("last-event-id", &ids[0])],
        );
        let got = bytes_to(&out, conn);
        assert!(!got.contains("\"m0\"") && got.contains("\"m1\"") && got.contains("\"m2\""));
        assert!(got.find("\"m1\"") < got.find("\"m2\""));
        let conn = h.conn();
        let q = format!("{target}&lastEventId=otherepoch-1");
        let out = h.get(conn, &q, &[("x-api-key", &key)]);
        assert!(bytes_to(&out, conn).contains("event: reset\n"));
    }

    #[test]
    fn bound_user_filters_chat_whispers() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        h.api_key = h.key(&["events:subscribe"], &[], Some("u9"));
        let (sse, _) = h.sse(&format!("/chat/subscribe?clientId={WORLD}&userId=u1"));
        let whisper = json!({"type": "chat-event", "data": {"eventType": "create", "data": {
            "id": "w", "whisper": ["u1"], "author": {"id": "u2"}}}});
        let out = h.text(link, &whisper.to_string());
        assert_eq!(
            bytes_to(&out, sse),
            "",
            "the key's user replaces the requested one"
        );
    }

    #[test]
    fn one_encoding_shared_by_all_subscribers() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        let mut conns = Vec::new();
        for _ in 0..5 {
            conns.push(h.sse(&format!("/chat/subscribe?clientId={WORLD}")).0);
        }
        let out = h.text(link, &chat("m", "A"));
        let writes: Vec<&Action> = out
            .iter()
            .filter(|a| matches!(a, Action::SseWrite { .. }))
            .collect();
        assert_eq!(writes.len(), 1);
        let Some(Action::SseWrite { conns: got, .. }) = writes.first() else {
            panic!()
        };
        let mut want = conns.clone();
        want.sort();
        assert_eq!(*got, want);
    }

    #[test]
    fn unpaired_world_ends_its_streams() {
        let mut h = H::new(Config::default());
        let (sse, _) = h.sse(&format!("/scene/subscribe?clientId={WORLD}"));
        let (other, _) = h.sse(&format!("/scene/subscribe?clientId={OTHER}"));
        let mut out = Vec::new();
        h.relay.end_streams_of_world(WORLD, &mut out);
        assert_eq!(close_of(&out, sse), Some((1008, "World unpaired".into())));
        assert!(
            bytes_to(&out, sse).ends_with("event: error\ndata: {\"error\":\"World unpaired\"}\n\n")
        );
        assert!(close_of(&out, other).is_none());
    }

    #[test]
    fn pure_helpers() {
        assert_eq!(
            String::from_utf8_lossy(&connected_frame("w", None)),
            "event: connected\ndata: {\"clientId\":\"w\"}\n\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&connected_frame("w", Some(""))),
            "event: connected\ndata: {\"actorUuid\":\"\",\"clientId\":\"w\"}\n\n"
        );
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("apiKey=abc&x=1", "apiKey", Some("abc")),
            ("x=1&apiKey=a%2Bb", "apiKey", Some("a+b")),
            ("apiKey=", "apiKey", None),
            ("apikey=abc", "apiKey", None),
            ("", "apiKey", None),
            ("apiKey=1&apiKey=2", "apiKey", Some("1")),
        ];
        for (q, name, want) in cases {
            assert_eq!(query_value(q, name).as_deref(), *want, "{q}");
        }
        let s = Subscriber {
            transport: Transport::Sse,
            key_id: None,
            scopes: vec![],
            client_ids: vec!["a".into()],
            user_id: None,
            world: None,
            origin: None,
        };
        assert!(s.may_see("a") && !s.may_see("b"));
    }
}
