//! Requests forwarded to a world and not yet answered: `requestId -> Waiter`.
//!
//! Replies are matched by `requestId` alone (never by type: the module answers a failed
//! `last-round` with type `encounter-navigation`, module-protocol.md §3.3). Each waiter has its
//! own deadline (the route's timeout, not a global sweeper: api-surface.md bug 2), and every
//! waiter of a world fails at once when that world's link closes (bug 3). A waiter remembers
//! its caller by `ConnId`, so a reply that arrives after the caller left misses.

use std::collections::HashMap;
use std::time::Instant;

use crate::ids::ConnId;

/// Who is waiting, and how the answer must be shaped.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An HTTP request on `conn`, answered through the route at `route` (index into the
    /// route table) with the request's decoded query (needed for binary replies).
    Http {
        conn: ConnId,
        route: usize,
        query: Vec<(String, String)>,
    },
    /// A `/ws/api` request: the reply goes back on `conn` with the caller's own requestId.
    WsApi {
        conn: ConnId,
        client_request_id: serde_json::Value,
        ws_type: String,
    },
    /// A `/mcp` tool call or resource read (relay/mcp.rs).
    Mcp(Box<super::mcp::McpWait>),
    /// A cross-world `remote-request` from the world link `conn`: answered there as
    /// `remote-response` with the asking module's own requestId (relay-protocol.md §5.8).
    Remote {
        conn: ConnId,
        source_request_id: String,
    },
}

impl Caller {
    pub fn conn(&self) -> ConnId {
        match self {
            Caller::Http { conn, .. }
            | Caller::WsApi { conn, .. }
            | Caller::Remote { conn, .. } => *conn,
            Caller::Mcp(m) => m.conn,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Waiter {
    pub caller: Caller,
    /// The world (clientId) the request went to.
    pub world: String,
    /// The world link's connection at send time: a reply from another link never matches.
    pub link: ConnId,
    pub deadline: Instant,
    /// Timer token: `Timer::Request(serial)`.
    pub serial: u64,
}

#[derive(Default)]
pub struct Pending {
    by_id: HashMap<String, Waiter>,
    by_serial: HashMap<u64, String>,
    next_serial: u64,
}

impl Pending {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a waiter; returns the serial for its timer.
    pub fn insert(
        &mut self,
        request_id: String,
        caller: Caller,
        world: &str,
        link: ConnId,
        deadline: Instant,
    ) -> u64 {
        self.next_serial += 1;
        let serial = self.next_serial;
        self.by_serial.insert(serial, request_id.clone());
        self.by_id.insert(
            request_id,
            Waiter {
                caller,
                world: world.to_string(),
                link,
                deadline,
                serial,
            },
        );
        serial
    }

    /// The module answered: take its waiter if it came from the link the request went to.
    pub fn take_reply(&mut self, request_id: &str, from: ConnId) -> Option<Waiter> {
        match self.by_id.get(request_id) {
            Some(w) if w.link == from => {}
            _ => return None,
        }
        let w = self.by_id.remove(request_id)?;
        self.by_serial.remove(&w.serial);
        Some(w)
    }

    /// A request timer fired: take the waiter if it is still pending and due.
    pub fn take_expired(&mut self, serial: u64, now: Instant) -> Option<(String, Waiter)> {
        let id = self.by_serial.get(&serial)?;
        let due = self.by_id.get(id).is_some_and(|w| w.deadline <= now);
        if !due {
            return None;
        }
        let id = self.by_serial.remove(&serial)?;
        let w = self.by_id.remove(&id)?;
        Some((id, w))
    }

    /// Every waiter on `link` (a world link that closed), for failing at once.
    pub fn take_link(&mut self, link: ConnId) -> Vec<(String, Waiter)> {
        let ids: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, w)| w.link == link)
            .map(|(k, _)| k.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let w = self.by_id.remove(&id)?;
                self.by_serial.remove(&w.serial);
                Some((id, w))
            })
            .collect()
    }

    /// Drop the waiters of a caller that left (their replies will find nobody).
    pub fn drop_caller(&mut self, conn: ConnId) -> usize {
        let ids: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, w)| w.caller.conn() == conn)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &ids {
            if let Some(w) = self.by_id.remove(id) {
                self.by_serial.remove(&w.serial);
            }
        }
        ids.len()
    }

    /// In-flight requests of one caller (the `/ws/api` per-socket cap).
    pub fn count_for_caller(&self, conn: ConnId) -> usize {
        self.by_id
            .values()
            .filter(|w| w.caller.conn() == conn)
            .count()
    }

    /// Whether an HTTP caller still waits for a reply from `link`. At shutdown the loop
    /// keeps such a world link open until none does (a `/ws/api` caller's socket is
    /// already closing then, so its reply could not be delivered anyway).
    pub fn http_waiting_on(&self, link: ConnId) -> bool {
        self.by_id
            .values()
            .any(|w| w.link == link && matches!(w.caller, Caller::Http { .. } | Caller::Mcp(_)))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cid(key: usize, gen: u32) -> ConnId {
        ConnId { key, gen }
    }

    fn http(conn: ConnId) -> Caller {
        Caller::Http {
            conn,
            route: 0,
            query: vec![],
        }
    }

    #[test]
    fn reply_matches_only_its_link() {
        let t0 = Instant::now();
        let mut p = Pending::new();
        p.insert("a".into(), http(cid(1, 1)), "w", cid(9, 1), t0);
        assert!(
            p.take_reply("a", cid(9, 2)).is_none(),
            "other link generation"
        );
        assert!(p.take_reply("b", cid(9, 1)).is_none(), "unknown id");
        assert!(p.take_reply("a", cid(9, 1)).is_some());
        assert!(p.take_reply("a", cid(9, 1)).is_none(), "answered once");
        assert!(p.is_empty());
    }

    #[test]
    fn timer_only_fires_when_due_and_pending() {
        let t0 = Instant::now();
        let mut p = Pending::new();
        let s = p.insert(
            "a".into(),
            http(cid(1, 1)),
            "w",
            cid(9, 1),
            t0 + Duration::from_secs(10),
        );
        assert!(p.take_expired(s, t0).is_none());
        assert!(p.take_expired(s, t0 + Duration::from_secs(10)).is_some());
        assert!(p.take_expired(s, t0 + Duration::from_secs(11)).is_none());
        let s2 = p.insert("b".into(), http(cid(1, 1)), "w", cid(9, 1), t0);
        assert!(p.take_reply("b", cid(9, 1)).is_some());
        assert!(
            p.take_expired(s2, t0).is_none(),
            "answered before the timer"
        );
    }

    #[test]
    fn link_close_fails_all_its_waiters() {
        let t0 = Instant::now();
        let mut p = Pending::new();
        p.insert("a".into(), http(cid(1, 1)), "w1", cid(9, 1), t0);
        p.insert("b".into(), http(cid(2, 1)), "w1", cid(9, 1), t0);
        p.insert("c".into(), http(cid(3, 1)), "w2", cid(8, 1), t0);
        let mut failed: Vec<String> = p.take_link(cid(9, 1)).into_iter().map(|x| x.0).collect();
        failed.sort();
        assert_eq!(failed, vec!["a", "b"]);
        assert_eq!(p.len(), 1);
        assert_eq!(p.drop_caller(cid(3, 1)), 1);
        assert!(p.is_empty());
    }
}
