//! The admin page's session cookie, as seen by the event transports.
//!
//! `/ws/events` accepts the admin session cookie in place of a key, so the signed-in owner's
//! admin page can watch events over a same-origin WebSocket (the origin check still applies).

use super::admin::{cookie_value, COOKIE};
use super::Relay;
use crate::http::request::Head;

impl Relay {
    /// Whether `head` carries a live (unexpired) admin session cookie.
    pub(crate) fn admin_session_valid(&self, head: &Head, now_ms: u64) -> bool {
        let Some(cookies) = head.header("cookie") else {
            return false;
        };
        let Some(sid) = cookie_value(cookies, COOKIE) else {
            return false;
        };
        let hash = crate::auth::hash_secret(sid);
        self.state
            .admin_sessions
            .iter()
            .any(|s| s.hash == hash && now_ms < s.expires_ms)
    }
}
