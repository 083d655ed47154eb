//! The relay core, sans-IO: `Relay::handle(Input, now, &mut actions)`.
//!
//! It owns the durable `State` (saved through the `Saver` the loop attaches: `durable.rs`), the
//! live world links, pending requests, subscriptions and rate limits. It never imports mio,
//! sockets or files, and it never reads the clock: `now` comes in, and wall-clock
//! milliseconds are derived from it through `Clock`, so tests can move time freely.
//!
//! Files: `io` (inputs/actions), `world` (live links), `link` (the `/relay` module protocol),
//! `rest` (HTTP routes: auth, scopes, forwarding, local routes), `pending` (waiters),
//! `forward` (pure parameter and reply shaping), `remote` (cross-world requests).

pub mod admin;
pub mod api_ws;
pub mod docs;
pub mod durable;
pub mod events;
pub mod forward;
pub mod gateway;
pub mod history;
pub mod hub;
pub mod io;
pub mod limits;
pub mod link;
pub mod mcp;
pub mod mcp_tools;
pub mod pairing;
pub mod pending;
pub mod remote;
pub mod rest;
pub mod revoke;
pub mod session_hook;
pub mod world;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::WsClose;
use crate::http::route::RouteTable;
use crate::ids::{ConnId, RequestIds};
use crate::metrics::{Gauges, Metrics};
use crate::store::State;

use hub::Hub;
use io::{Action, Input, Timer};
use pending::Pending;
use world::{Meta, Worlds};

thread_local! {
    /// The embedded route table, parsed once per thread: it never changes, and parsing it
    /// costs more than a whole fuzz iteration of the relay (tests/fuzz `module_dispatch`)
    /// or a typical unit test that builds a `Relay`.
    static BUILTIN_ROUTES: std::rc::Rc<RouteTable> = std::rc::Rc::new(RouteTable::builtin());
}

/// Wall-clock milliseconds derived from the monotonic `now` passed in.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub base: Instant,
    pub base_ms: u64,
}

impl Clock {
    pub fn ms(&self, now: Instant) -> u64 {
        self.base_ms + now.saturating_duration_since(self.base).as_millis() as u64
    }
}

/// What the relay knows about a connection it has seen.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// A `/relay` socket waiting for its first `auth` message.
    ModuleAuth { meta: Box<Meta>, peer: IpAddr },
    /// An authenticated world link (its clientId is in `Worlds`).
    Module,
    /// A `/ws/api` client socket (state in `api_ws.rs`), authenticated or not yet.
    Api,
    /// A `/ws/events` gateway socket (state in `events.rs`).
    Events,
    /// An SSE stream (state in `events.rs`).
    Sse,
}

pub struct Relay {
    pub(crate) cfg: Config,
    pub(crate) state: State,
    /// Shared so a handler can hold a route while it mutates the relay (no per-request clone).
    pub(crate) routes: std::rc::Rc<RouteTable>,
    pub(crate) worlds: Worlds,
    pub(crate) pending: Pending,
    pub(crate) req_ids: RequestIds,
    pub(crate) roles: HashMap<ConnId, Role>,
    /// `/ws/api` socket state (api_ws.rs).
    pub(crate) api: HashMap<ConnId, api_ws::ApiSocket>,
    pub(crate) hub: Hub,
    /// Counters for `/metrics` (metrics.rs).
    pub(crate) metrics: Metrics,
    /// Saving the state: owner changes at once, bookkeeping lazily (durable.rs).
    pub(crate) disk: durable::Disk,
    pub(crate) clock: Clock,
    pub(crate) started: Instant,
    /// Rate limiters (relay/limits.rs).
    pub(crate) limits: limits::Limits,
    /// Admin sessions, pair requests, link tokens (relay/pairing.rs, relay/admin.rs).
    pub(crate) owner: pairing::Owner,
    /// Subscriber connections (SSE, /ws/api, /ws/events) and whose key they hold (events.rs).
    pub(crate) subs: HashMap<ConnId, events::Subscriber>,
    /// `/openapi.json` and `/asyncapi.json`, serialized once (docs.rs).
    pub(crate) docs: docs::Cache,
    /// `/ws/events` socket state and the upgrade rate limit (gateway.rs).
    pub(crate) gateway: gateway::Gateway,
    /// `/mcp` sessions, exchanges and the tool table (mcp.rs).
    pub(crate) mcp: mcp::Mcp,
    /// Each world's last link events, for "why is it offline?" (history.rs).
    pub(crate) history: history::History,
}

impl Relay {
    pub fn new(cfg: Config, state: State, clock: Clock) -> Relay {
        Relay {
            hub: Hub::new(cfg.ring_events, cfg.ring_bytes),
            limits: limits::Limits::new(&cfg),
            owner: pairing::Owner::default(),
            gateway: gateway::Gateway::new(&cfg),
            mcp: mcp::Mcp::new(&RouteTable::builtin(), &cfg.mcp_tools),
            history: history::History::new(cfg.world_history),
            cfg,
            state,
            routes: BUILTIN_ROUTES.with(std::rc::Rc::clone),
            worlds: Worlds::new(),
            pending: Pending::new(),
            req_ids: RequestIds::new(),
            roles: HashMap::new(),
            metrics: Metrics::default(),
            disk: durable::Disk::default(),
            api: HashMap::new(),
            subs: HashMap::new(),
            docs: docs::Cache::default(),
            clock,
            started: clock.base,
        }
    }

    /// The durable state.
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    pub fn handle(&mut self, input: Input<'_>, now: Instant, out: &mut Vec<Action>) {
        let first = out.len();
        if matches!(input, Input::Request { .. } | Input::Upgrade { .. }) {
            self.metrics.http_requests += 1;
        }
        self.dispatch(input, now, out);
        // X-RateLimit-* on the API responses of this turn (relay/limits.rs).
        if let Some(new) = out.get_mut(first..) {
            self.stamp_rate_headers(new);
            for a in new.iter() {
                if let Action::Respond { resp, .. } = a {
                    self.metrics.response(resp.status);
                    match resp.status {
                        401 => self.metrics.auth_failures += 1,
                        429 => self.metrics.rate_limited += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    /// Whether an HTTP request forwarded over world link `link` is still unanswered (the
    /// loop holds the link open at shutdown while one is).
    pub fn link_owes_http_reply(&self, link: ConnId) -> bool {
        self.pending.http_waiting_on(link)
    }

    /// Worlds with a live link (the systemd status line).
    pub fn worlds_online(&self) -> usize {
        self.worlds.len()
    }

    /// Counters the loop bumps for connection-level outcomes (slow consumers, refusals).
    pub fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// The `/metrics` page: counters plus gauges read off the current state.
    pub(crate) fn metrics_text(&self, now: Instant) -> String {
        let count =
            |t: hub::Transport| self.subs.values().filter(|s| s.transport == t).count() as u64;
        self.metrics.render(&Gauges {
            worlds_connected: self.worlds.len() as u64,
            worlds_known: self.state.worlds.len() as u64,
            pending_requests: self.pending.len() as u64,
            sse_streams: count(hub::Transport::Sse),
            ws_api_sockets: self.api.len() as u64,
            ws_events_sockets: count(hub::Transport::WsEvents),
            uptime_seconds: self.uptime(now).as_secs(),
            state_save_failing: u64::from(self.saves_failing()),
        })
    }

    fn dispatch(&mut self, input: Input<'_>, now: Instant, out: &mut Vec<Action>) {
        match input {
            Input::Request {
                conn,
                peer,
                head,
                body,
            } => self.on_request(conn, peer, head, body, now, out),
            Input::Upgrade { conn, peer, head } => self.on_upgrade(conn, peer, head, now, out),
            Input::Head { conn, head } => self.admit_body(conn, head, now, out),
            Input::WsText { conn, text } => match self.roles.get(&conn) {
                Some(Role::ModuleAuth { .. }) => self.module_auth(conn, &text, now, out),
                Some(Role::Module) => self.module_message(conn, text, now, out),
                Some(Role::Api) => self.api_message(conn, text, now, out),
                Some(Role::Events) => self.events_message(conn, text, now, out),
                Some(Role::Sse) | None => {}
            },
            Input::PeerClose { conn, code, reason } => {
                if self.worlds.by_conn_mut(conn).is_some() {
                    self.history.note_peer_close(conn, code, &reason);
                }
            }
            Input::Closed { conn } => self.on_closed(conn, now, out),
            Input::Alive { conn } => {
                if let Some(l) = self.worlds.by_conn_mut(conn) {
                    l.last_alive = now;
                }
            }
            Input::Timer(t) => self.on_timer(t, now, out),
        }
    }

    fn on_closed(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        // Waiters of a caller that left: their late replies will find nobody.
        self.pending.drop_caller(conn);
        self.forget_conn_limits(conn);
        self.mcp_closed(conn);
        match self.roles.remove(&conn) {
            Some(Role::Module) => self.module_closed(conn, now, out),
            Some(Role::Api) => self.api_closed(conn, now, out),
            Some(Role::Events) | Some(Role::Sse) => self.subscriber_closed(conn, now, out),
            Some(Role::ModuleAuth { .. }) | None => {}
        }
    }

    /// Give a just-accepted socket `--auth-timeout` to authenticate; `on_timer` closes it
    /// (with its endpoint's code) if it has not by then.
    pub(crate) fn arm_auth_timeout(&self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Arm {
            at: now + self.cfg.auth_timeout,
            timer: Timer::Auth(conn),
        });
    }

    fn on_timer(&mut self, t: Timer, now: Instant, out: &mut Vec<Action>) {
        match t {
            Timer::Auth(conn) => match self.roles.get(&conn) {
                Some(Role::ModuleAuth { .. }) => out.push(Action::Close {
                    conn,
                    close: WsClose::new(4002, "Authentication timeout"),
                }),
                Some(Role::Api) => self.api_auth_timeout(conn, now, out),
                Some(Role::Events) => self.subscriber_auth_timeout(conn, now, out),
                _ => {}
            },
            Timer::Request(serial) => self.request_timeout(serial, now, out),
            Timer::Sweep => self.limits.sweep(now),
            Timer::LazyPersist => self.lazy_timer(now, out),
        }
    }
}
