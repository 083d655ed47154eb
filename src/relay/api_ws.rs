//! `/ws/api`: the client WebSocket API (ws-api.tsv): first-message auth, forwarded requests
//! correlated by the caller's requestId, subscribe/unsubscribe with filters and resume.

use std::net::IpAddr;
use std::time::Instant;

use super::io::Action;
use super::Relay;
use crate::http::request::Head;
use crate::http::response::Response;
use crate::ids::ConnId;

impl Relay {
    pub(crate) fn api_upgrade(
        &mut self,
        conn: ConnId,
        _peer: IpAddr,
        _head: &Head,
        _now: Instant,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Respond {
            conn,
            resp: Response::error(501, "Not available yet"),
        });
    }

    pub(crate) fn api_message(
        &mut self,
        _conn: ConnId,
        _text: String,
        _now: Instant,
        _out: &mut Vec<Action>,
    ) {
    }
}
