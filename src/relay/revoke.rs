//! Ending the live subscriber connections of a revoked API key (`/ws/api`, `/ws/events`, SSE).
//! The owner's routes call [`Relay::drop_subscribers_of_key`] through `admin.rs`'s
//! `key_revoked`; the events work fills it in, since it owns those connections' state.

use super::io::Action;
use super::Relay;

impl Relay {
    /// Close every open subscriber connection authenticated with API key `key_id`.
    pub(crate) fn drop_subscribers_of_key(&mut self, _key_id: &str, _out: &mut Vec<Action>) {}
}
