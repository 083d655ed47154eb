//! Pairing (`/auth/pair`, `/auth/pair-request*`, `/api/self-unpair`) and the owner's routes.
//! (Filled in by the owner/pairing work; `rest.rs` asks here first.)

use std::net::IpAddr;
use std::time::Instant;

use super::io::Action;
use super::Relay;
use crate::http::request::Head;
use crate::ids::ConnId;

impl Relay {
    /// Handle the owner's and the module's pairing routes; false if `path` is not one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn owner_route(
        &mut self,
        _conn: ConnId,
        _peer: IpAddr,
        _head: &Head,
        _path: &str,
        _body: &[u8],
        _now: Instant,
        _out: &mut Vec<Action>,
    ) -> bool {
        false
    }
}
