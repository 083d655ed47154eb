//! Live events: the fan-out of module events to SSE streams and WebSocket subscribers.
//! (Filled in by the events work; the world link calls these hooks.)

use std::time::Instant;

use serde_json::Value;

use super::io::Action;
use super::rest::Caller0;
use super::world::Live;
use super::Relay;
use crate::http::request::Head;
use crate::http::response::Response;
use crate::http::route::Route;
use crate::ids::ConnId;

impl Relay {
    pub(crate) fn after_module_auth(
        &mut self,
        _conn: ConnId,
        _now: Instant,
        _out: &mut Vec<Action>,
    ) {
    }

    pub(crate) fn after_module_closed(
        &mut self,
        _live: &Live,
        _now: Instant,
        _out: &mut Vec<Action>,
    ) {
    }

    pub(crate) fn publish_event(
        &mut self,
        _world: &str,
        _kind: &str,
        _data: Value,
        _now: Instant,
        _out: &mut Vec<Action>,
    ) {
    }

    pub(crate) fn sse_route(
        &mut self,
        conn: ConnId,
        _route: &Route,
        _head: &Head,
        _caller: &Caller0,
        _now: Instant,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Respond {
            conn,
            resp: self.cors(Response::error(501, "Event streams are not available yet")),
        });
    }

    pub(crate) fn subscriber_closed(
        &mut self,
        _conn: ConnId,
        _now: Instant,
        _out: &mut Vec<Action>,
    ) {
    }

    pub(crate) fn subscriber_auth_timeout(
        &mut self,
        _conn: ConnId,
        _now: Instant,
        _out: &mut Vec<Action>,
    ) {
    }
}
