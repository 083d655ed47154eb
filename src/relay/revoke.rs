//! Revocation reaches every stream: revoking an API key or a connection token, or unpairing
//! a world, ends at once every SSE stream, `/ws/api` socket and `/ws/events` socket that the
//! credential or world no longer entitles (issue 10). HTTP requests in flight finish normally
//! (they were authorized when they started).
//!
//! | what | ends | reason |
//! |---|---|---|
//! | API key revoked | every subscriber connection it authenticated | `API key revoked` |
//! | connection token revoked (admin, `self-unpair`) | `/ws/api` sockets it authenticated | `Connection token revoked` / `Unpaired by owner` |
//! | world unpaired | every stream and socket following that world | `World unpaired` |
//! | admin key rotated | every connection opened with the admin key or an admin session | `Admin key rotated` |
//!
//! SSE streams get `event: error` with `{"error":reason}`, then end; WebSockets get 1008
//! (policy violation) with the reason: not 4002, which `/ws/api` clients read as
//! "authentication failed at connect". A `/ws/events` socket following every world is not
//! entitled by any one world and stays (it gets `world-disconnected`).

use std::rc::Rc;

use serde_json::json;

use super::events::Subscriber;
use super::hub::Transport;
use super::io::Action;
use super::Relay;
use crate::error::WsClose;
use crate::ids::ConnId;

/// Why a subscriber connection was ended by a revocation.
pub(crate) const KEY_REVOKED: &str = "API key revoked";
pub(crate) const WORLD_UNPAIRED: &str = "World unpaired";
pub(crate) const ADMIN_KEY_ROTATED: &str = "Admin key rotated";

impl Relay {
    /// End every subscriber connection authenticated by API key or connection token `id`.
    pub(crate) fn drop_subscribers_of_key(
        &mut self,
        id: &str,
        reason: &'static str,
        out: &mut Vec<Action>,
    ) {
        self.end_subscribers(|s| s.key_id.as_deref() == Some(id), reason, out);
        // Its MCP sessions end too: their streams close and their subscriptions go.
        self.mcp_end_sessions_of(id, out);
    }

    /// End every subscriber connection opened with the admin key or an admin session (both
    /// stop working when the key is rotated).
    pub(crate) fn drop_admin_subscribers(&mut self, out: &mut Vec<Action>) {
        self.end_subscribers(|s| s.key_id.is_none(), ADMIN_KEY_ROTATED, out);
        self.mcp_end_sessions_of("", out);
    }

    /// End every subscriber connection that follows `world` (it was unpaired), and drop the
    /// world's kept events.
    pub(crate) fn end_streams_of_world(&mut self, world: &str, out: &mut Vec<Action>) {
        self.end_subscribers(|s| s.world.as_deref() == Some(world), WORLD_UNPAIRED, out);
        self.gateway_drop_world(world, WsClose::new(1008, WORLD_UNPAIRED), out);
        self.hub.clear_ring(world);
    }

    /// End the subscriber connections `pred` picks. Their subscriptions are dropped now, so no
    /// event reaches them after this call and the worlds' channel counts drop at once; the
    /// loop reports `Closed` later as usual (a no-op then).
    fn end_subscribers(
        &mut self,
        pred: impl Fn(&Subscriber) -> bool,
        reason: &'static str,
        out: &mut Vec<Action>,
    ) {
        let mut conns: Vec<(ConnId, Transport)> = self
            .subs
            .iter()
            .filter(|(_, s)| pred(s))
            .map(|(c, s)| (*c, s.transport))
            .collect();
        if conns.is_empty() {
            return;
        }
        conns.sort_by_key(|(c, _)| *c);
        let frame: Rc<[u8]> = Rc::from(
            format!("event: error\ndata: {}\n\n", json!({ "error": reason })).into_bytes(),
        );
        log::info!("{reason}: ending {} event connection(s)", conns.len());
        for (conn, transport) in conns {
            if transport == Transport::Sse {
                out.push(Action::SseWrite {
                    conns: vec![conn],
                    bytes: frame.clone(),
                });
            }
            out.push(Action::Close {
                conn,
                close: WsClose::new(1008, reason),
            });
            if transport == Transport::WsApi {
                self.api_revoked(conn, out);
            } else {
                self.forget_subscriber(conn, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::relay::events::harness::*;

    #[test]
    fn revoking_a_key_closes_its_streams_and_sockets_only() {
        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        let keep = h.api_key.clone();
        let doomed = h.key(&["events:subscribe"], &[], None);
        h.api_key = doomed.clone();
        let (sse, _) = h.sse(&format!("/chat/subscribe?clientId={WORLD}"));
        let ws = h.conn();
        h.upgrade(ws, "/ws/events", &[("x-api-key", &doomed)]);
        h.text(ws, r#"{"type":"subscribe","events":["chat-events"]}"#);
        h.api_key = keep;
        let (survivor, _) = h.sse(&format!("/chat/subscribe?clientId={WORLD}"));
        let mut out = Vec::new();
        let id = h.key_id(&doomed);
        h.relay
            .drop_subscribers_of_key(&id, super::KEY_REVOKED, &mut out);
        assert!(bytes_to(&out, sse).contains("API key revoked"));
        assert_eq!(close_of(&out, sse), Some((1008, "API key revoked".into())));
        assert_eq!(close_of(&out, ws), Some((1008, "API key revoked".into())));
        assert!(close_of(&out, survivor).is_none());
        assert_eq!(
            counts_to(&out, link).last(),
            Some(&("chat-events".to_owned(), 1))
        );
        // Nothing more reaches them; the later Closed is a no-op.
        let chat = r#"{"type":"chat-event","data":{"eventType":"delete","data":{"id":"x"}}}"#;
        let out = h.text(link, chat);
        assert_eq!(bytes_to(&out, sse), "");
        assert_eq!(bytes_to(&out, ws), "");
        assert!(bytes_to(&out, survivor).contains("chat-delete"));
        let out = h.input(crate::relay::io::Input::Closed { conn: ws });
        assert!(counts_to(&out, link).is_empty());
    }
}
