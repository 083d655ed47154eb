//! `/ws/events`: the read-only event gateway: auth before the upgrade, origin allow-list,
//! first-message subscribe, a snapshot, then events.

use std::net::IpAddr;
use std::time::Instant;

use super::io::Action;
use super::Relay;
use crate::http::request::Head;
use crate::http::response::Response;
use crate::ids::ConnId;

impl Relay {
    pub(crate) fn events_upgrade(
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

    pub(crate) fn events_message(
        &mut self,
        _conn: ConnId,
        _text: String,
        _now: Instant,
        _out: &mut Vec<Action>,
    ) {
    }
}
