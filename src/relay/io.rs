//! The relay core's boundary: typed inputs from the loop, actions back to it.
//!
//! `server.rs` turns socket activity into `Input`s and applies the `Action`s the relay returns;
//! the relay never sees a socket, a file or the clock (it receives `now`). That keeps every
//! protocol rule testable with plain values and a fake clock.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::error::WsClose;
use crate::http::request::Head;
use crate::http::response::Response;
use crate::ids::ConnId;

/// Which WebSocket endpoint a connection was upgraded to; the loop picks its limits and
/// heartbeat from this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/relay`: the Foundry module's link (64 MiB messages, 20 s pings).
    Module,
    /// `/ws/api`: the client request/subscribe API.
    Api,
    /// `/ws/events`: the read-only event gateway.
    Events,
    /// `/test/echo`: Autobahn conformance only, off by default.
    Echo,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Module => "module",
            Endpoint::Api => "ws-api",
            Endpoint::Events => "ws-events",
            Endpoint::Echo => "echo",
        }
    }
}

/// Something that happened, for the relay to decide on.
pub enum Input<'a> {
    /// A complete HTTP request that is not a WebSocket upgrade.
    Request {
        conn: ConnId,
        peer: IpAddr,
        head: &'a Head,
        body: Vec<u8>,
    },
    /// A syntactically valid WebSocket upgrade (RFC 6455 §4.2.1 already checked): the relay
    /// answers `Accept` or a refusal `Respond`.
    Upgrade {
        conn: ConnId,
        peer: IpAddr,
        head: &'a Head,
    },
    /// A complete text message on an accepted WebSocket.
    WsText { conn: ConnId, text: String },
    /// A control frame (ping or pong) arrived on a world link: it is alive even when the
    /// module has nothing to say (the duplicate-id rule uses this).
    Alive { conn: ConnId },
    /// A world link's peer sent its close frame (RFC 6455 §5.5.1): its code and reason, for
    /// the world's link history. `Closed` follows when the connection is gone.
    PeerClose {
        conn: ConnId,
        code: Option<u16>,
        reason: String,
    },
    /// A connection the relay has seen is gone (client left, closed, or dropped by a limit).
    Closed { conn: ConnId },
    /// A relay timer armed with `Action::Arm` is due.
    Timer(Timer),
}

/// Relay-owned timers. Each carries enough to recognise itself as stale when it fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// First-message authentication deadline on a WebSocket.
    Auth(ConnId),
    /// A pending forwarded request's deadline.
    Request(u64),
    /// Periodic housekeeping (rate-limit sweeps, expired codes), armed only while needed.
    Sweep,
    /// Save bookkeeping that changed (last-used times) a while after the first change, or
    /// retry a failed save of it (relay/durable.rs; never more than one armed).
    LazyPersist,
}

/// A chunk of bytes for a connection: owned (moved, never copied) or shared across many.
pub enum Bytes {
    Owned(Vec<u8>),
    Shared(Rc<[u8]>),
}

/// What the loop must do.
pub enum Action {
    /// Send a complete HTTP response on `conn`; the connection then reads its next request
    /// (or closes, per keep-alive).
    Respond { conn: ConnId, resp: Response },
    /// Accept the upgrade: write the 101 and switch `conn` to WebSocket framing.
    Accept { conn: ConnId, endpoint: Endpoint },
    /// Turn `conn` into a `text/event-stream` response with these extra headers.
    StartSse {
        conn: ConnId,
        headers: Vec<(&'static str, String)>,
    },
    /// One WebSocket text message (the loop frames it; the payload is moved, not copied).
    Text { conn: ConnId, payload: Bytes },
    /// The same WebSocket text message to many connections: framed once, shared.
    TextFanout {
        conns: Vec<ConnId>,
        payload: Rc<[u8]>,
    },
    /// Raw bytes on an SSE stream, possibly shared by many connections.
    SseWrite { conns: Vec<ConnId>, bytes: Rc<[u8]> },
    /// Close a WebSocket with this code and reason, or end an SSE stream / HTTP connection.
    Close { conn: ConnId, close: WsClose },
    /// Arm a relay timer.
    Arm { at: Instant, timer: Timer },
}
