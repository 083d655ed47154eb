//! Connected worlds: which `/relay` link serves which clientId, with the metadata the module
//! sent in its query, and the duplicate-id rule.
//!
//! Known (paired) worlds live in the durable `State`; this registry holds only live links.
//! A world is identified by its clientId (`fvtt_<16 hex>` from pairing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::enc;
use crate::ids::ConnId;

/// What the module tells us about its world in the `/relay` query (module-protocol.md §1.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub client_id: String,
    pub world_id: String,
    pub world_title: String,
    pub foundry_version: String,
    pub system_id: String,
    pub system_title: String,
    pub system_version: String,
    pub custom_name: String,
}

/// Why a `/relay` upgrade is refused before the upgrade (relay-protocol.md §1.2: plain text).
#[derive(Debug, PartialEq, Eq)]
pub enum QueryError {
    MissingId,
    TokenInUrl,
}

impl QueryError {
    pub fn message(&self) -> &'static str {
        match self {
            QueryError::MissingId => "Missing client ID",
            QueryError::TokenInUrl => {
                "Token URL parameter is not supported. Send auth as the first WebSocket message."
            }
        }
    }
}

impl Meta {
    /// Parse the module's query, form-decoded (`+` is a space, as URLSearchParams encodes).
    pub fn from_query(query: &str) -> Result<Meta, QueryError> {
        let mut m = Meta::default();
        let mut token = false;
        for (k, v) in enc::parse_query(query) {
            match k.as_str() {
                "id" => m.client_id = v,
                "worldId" => m.world_id = v,
                "worldTitle" => m.world_title = v,
                "foundryVersion" => m.foundry_version = v,
                "systemId" => m.system_id = v,
                "systemTitle" => m.system_title = v,
                "systemVersion" => m.system_version = v,
                "customName" => m.custom_name = v,
                "token" => token = true,
                _ => {}
            }
        }
        if m.client_id.trim().is_empty() {
            return Err(QueryError::MissingId);
        }
        if token {
            return Err(QueryError::TokenInUrl);
        }
        Ok(m)
    }
}

/// A live world link.
#[derive(Clone, Debug)]
pub struct Live {
    pub conn: ConnId,
    pub meta: Meta,
    pub peer: IpAddr,
    pub connected_since_ms: u64,
    pub last_seen_ms: u64,
    /// The module's latest `player-list` users array.
    pub users: Value,
    /// When the link last showed life: any message, or a control frame (the browser answers
    /// our pings even when the module has nothing to say).
    pub last_alive: Instant,
}

impl Live {
    /// The `/clients` entry (reference shape, relay-protocol.md §2.7), online.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.meta.client_id,
            "clientId": self.meta.client_id,
            "worldId": self.meta.world_id,
            "worldTitle": self.meta.world_title,
            "foundryVersion": self.meta.foundry_version,
            "systemId": self.meta.system_id,
            "systemTitle": self.meta.system_title,
            "systemVersion": self.meta.system_version,
            "customName": self.meta.custom_name,
            "connectedSince": self.connected_since_ms,
            "lastSeen": self.last_seen_ms,
            "isOnline": true,
        })
    }
}

/// What to do with a module that authenticated for a clientId that already has a link.
#[derive(Debug, PartialEq, Eq)]
pub enum Duplicate {
    /// No live link: register the newcomer.
    None,
    /// A link holds the slot but has missed our last control ping: it is a dead socket the
    /// kernel has not noticed yet (a GM whose laptop changed networks, a tab that crashed),
    /// so the newcomer takes over instead of waiting out the idle timeout.
    ReplaceStale(ConnId),
    /// A live link holds the slot: refuse the newcomer with 4004 so it polls every 30 s and
    /// takes the slot when it frees (module-protocol.md §6 item 4). This holds for every
    /// address alike: a second GM tab or a second browser behind the same NAT must not
    /// evict the first with 1000, which the module reads as "stay offline for good"
    /// (module-protocol.md §1.6; the reference's "same host → new wins", relay-protocol.md
    /// §1.5, is the discrepancy §8 #10).
    RejectNew,
}

#[derive(Default)]
pub struct Worlds {
    live: HashMap<String, Live>,
    by_conn: HashMap<ConnId, String>,
}

impl Worlds {
    pub fn new() -> Self {
        Self::default()
    }

    /// The duplicate-id rule for a newcomer at `now`: a link silent for longer than
    /// `stale_after` (a ping interval plus a margin) counts as dead. The newcomer's address
    /// plays no part (see `Duplicate::RejectNew`).
    pub fn duplicate(&self, client_id: &str, now: Instant, stale_after: Duration) -> Duplicate {
        match self.live.get(client_id) {
            None => Duplicate::None,
            Some(l) if now.saturating_duration_since(l.last_alive) > stale_after => {
                Duplicate::ReplaceStale(l.conn)
            }
            Some(_) => Duplicate::RejectNew,
        }
    }

    /// Register a link (after auth and the duplicate decision).
    pub fn insert(&mut self, live: Live) {
        if let Some(old) = self.live.get(&live.meta.client_id) {
            self.by_conn.remove(&old.conn);
        }
        self.by_conn.insert(live.conn, live.meta.client_id.clone());
        self.live.insert(live.meta.client_id.clone(), live);
    }

    /// The link on `conn` closed: remove it if it is still the registered one.
    pub fn remove_conn(&mut self, conn: ConnId) -> Option<Live> {
        let id = self.by_conn.remove(&conn)?;
        match self.live.get(&id) {
            Some(l) if l.conn == conn => self.live.remove(&id),
            _ => None,
        }
    }

    pub fn get(&self, client_id: &str) -> Option<&Live> {
        self.live.get(client_id)
    }

    pub fn get_mut(&mut self, client_id: &str) -> Option<&mut Live> {
        self.live.get_mut(client_id)
    }

    pub fn by_conn(&self, conn: ConnId) -> Option<&Live> {
        self.by_conn.get(&conn).and_then(|id| self.live.get(id))
    }

    pub fn by_conn_mut(&mut self, conn: ConnId) -> Option<&mut Live> {
        let id = self.by_conn.get(&conn)?;
        self.live.get_mut(id)
    }

    pub fn client_of(&self, conn: ConnId) -> Option<&str> {
        self.by_conn.get(&conn).map(|s| s.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Live> {
        self.live.values()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Connected clientIds, sorted (stable output for errors listing them).
    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.live.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn query_is_form_decoded() {
        let m = Meta::from_query(
            "id=fvtt_abc123&worldId=my-world&worldTitle=My+World+%26+Co&foundryVersion=13.345&systemId=dnd5e&systemTitle=Dungeons+%26+Dragons+Fifth+Edition&systemVersion=5.1.2&customName=GM+Laptop",
        )
        .unwrap();
        assert_eq!(m.client_id, "fvtt_abc123");
        assert_eq!(m.world_title, "My World & Co");
        assert_eq!(m.system_title, "Dungeons & Dragons Fifth Edition");
        assert_eq!(m.custom_name, "GM Laptop");
    }

    #[test]
    fn query_errors() {
        assert_eq!(Meta::from_query("worldId=x"), Err(QueryError::MissingId));
        assert_eq!(Meta::from_query("id="), Err(QueryError::MissingId));
        assert_eq!(
            Meta::from_query("id=a&token=b"),
            Err(QueryError::TokenInUrl)
        );
    }

    fn live(id: &str, key: usize, ip: [u8; 4], t: Instant) -> Live {
        Live {
            conn: ConnId { key, gen: 1 },
            meta: Meta {
                client_id: id.into(),
                ..Meta::default()
            },
            peer: IpAddr::V4(Ipv4Addr::from(ip)),
            connected_since_ms: 0,
            last_seen_ms: 0,
            users: Value::Null,
            last_alive: t,
        }
    }

    #[test]
    fn duplicate_rule() {
        let t0 = Instant::now();
        let stale = Duration::from_secs(25);
        let mut w = Worlds::new();
        assert_eq!(w.duplicate("x", t0, stale), Duplicate::None);
        w.insert(live("x", 1, [10, 0, 0, 1], t0));
        let old = ConnId { key: 1, gen: 1 };
        assert_eq!(w.duplicate("x", t0, stale), Duplicate::RejectNew);
        let later = t0 + Duration::from_secs(25);
        assert_eq!(
            w.duplicate("x", later, stale),
            Duplicate::RejectNew,
            "at the limit"
        );
        let later = t0 + Duration::from_secs(26);
        assert_eq!(w.duplicate("x", later, stale), Duplicate::ReplaceStale(old));
    }

    #[test]
    fn stale_close_does_not_remove_replacement() {
        let mut w = Worlds::new();
        let t = Instant::now();
        w.insert(live("x", 1, [10, 0, 0, 1], t));
        w.insert(live("x", 2, [10, 0, 0, 1], t));
        assert!(w.remove_conn(ConnId { key: 1, gen: 1 }).is_none());
        assert_eq!(w.get("x").map(|l| l.conn.key), Some(2));
        assert!(w.remove_conn(ConnId { key: 2, gen: 1 }).is_some());
        assert!(w.is_empty());
    }
}
