//! Revoking an API key ends everything it opened: `/ws/api` and `/ws/events` sockets and SSE
//! streams authenticated by it stop receiving at once and are closed. The key's HTTP
//! requests in flight finish normally (they were authorized when they started).

use std::rc::Rc;

use super::hub::Transport;
use super::io::Action;
use super::Relay;
use crate::error::WsClose;
use crate::ids::ConnId;

/// The close a WebSocket subscriber gets when its key is revoked (1008 policy violation; not
/// 4002, which `/ws/api` clients read as "authentication failed at connect").
#[allow(dead_code)] // see drop_subscribers_of_key
pub(crate) const KEY_REVOKED: WsClose = WsClose::new(1008, "API key revoked");

/// The last frame of an SSE stream whose key was revoked.
#[allow(dead_code)] // see drop_subscribers_of_key
const KEY_REVOKED_FRAME: &[u8] = b"event: error\ndata: {\"error\":\"API key revoked\"}\n\n";

impl Relay {
    /// Close every subscriber connection authenticated by API key `key_id` (`key_…`). Their
    /// subscriptions are dropped now, so no event reaches them after this call and the
    /// worlds' channel counts drop at once; the loop reports `Closed` later as usual.
    #[allow(dead_code)] // called by the admin API's key revocation (owner work)
    pub(crate) fn drop_subscribers_of_key(&mut self, key_id: &str, out: &mut Vec<Action>) {
        let mut conns: Vec<(ConnId, Transport)> = self
            .subs
            .iter()
            .filter(|(_, s)| s.key_id.as_deref() == Some(key_id))
            .map(|(c, s)| (*c, s.transport))
            .collect();
        conns.sort_by_key(|(c, _)| *c);
        for (conn, transport) in conns {
            if transport == Transport::Sse {
                out.push(Action::SseWrite {
                    conns: vec![conn],
                    bytes: Rc::from(KEY_REVOKED_FRAME),
                });
            }
            out.push(Action::Close {
                conn,
                close: KEY_REVOKED,
            });
            self.forget_subscriber(conn, out);
        }
        // Its MCP sessions end too: their streams close and their subscriptions go.
        self.mcp_end_sessions_of(key_id, out);
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
        h.relay.drop_subscribers_of_key(&id, &mut out);
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
