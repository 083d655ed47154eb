//! "Why is my world offline?": the last few link events of each paired world (connected,
//! closed and by whom, refused), in words an owner understands. Shown on the admin page's
//! world row, by `fvtt-relay worlds`, and as the `reason` of an API call that finds no
//! connected world. The latest one is also kept on the world in the state file, so the answer
//! survives a relay restart.
//!
//! The link code (link.rs, pairing.rs) only reports what happened; this module keeps and
//! words it. Who closed a link is known for the relay's own closes (replacement, revocation,
//! unpairing: `note_close` before the link goes); any other close came from the module's
//! side or the network. A link silent for more than a ping interval when it closed most
//! likely belonged to a sleeping tab (browsers throttle timers in background tabs).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::io::Action;
use super::Relay;
use crate::ids::ConnId;
use crate::store::LinkNote;

/// Who ended a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum By {
    /// The relay itself (a newer connection replaced this one).
    Relay,
    /// The owner (token revoked, world unpaired, allowed addresses changed).
    Owner,
    /// The module's browser or the network: the relay did not close it.
    World,
}

impl By {
    fn name(self) -> &'static str {
        match self {
            By::Relay => "relay",
            By::Owner => "owner",
            By::World => "world",
        }
    }
}

/// One link event of a world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    Connected {
        peer: IpAddr,
    },
    Closed {
        code: Option<u16>,
        reason: String,
        by: By,
        /// Seconds since the link was last heard from (a message, ping or pong).
        silent_s: u64,
        /// Silent at least a ping interval plus margin: the tab was likely asleep.
        asleep: bool,
    },
    Refused {
        code: u16,
        reason: String,
        peer: IpAddr,
        /// For 4004: the address of the link that holds the slot.
        holder: Option<IpAddr>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub at_ms: u64,
    pub event: LinkEvent,
}

impl Entry {
    /// The event in words, without its time (the page shows the time in the owner's zone).
    pub(crate) fn text(&self) -> String {
        match &self.event {
            LinkEvent::Connected { peer } => format!("Connected from {peer}"),
            LinkEvent::Closed {
                by: By::World,
                silent_s,
                asleep: true,
                ..
            } => format!("No ping for {silent_s} s: the GM's tab may be asleep"),
            LinkEvent::Closed {
                by: By::World,
                code,
                reason,
                ..
            } => {
                let what = match (code, reason.is_empty()) {
                    (Some(c), false) => format!(" ({c} {reason})"),
                    (Some(c), true) => format!(" ({c})"),
                    _ => String::new(),
                };
                format!(
                    "The GM's browser closed the connection{what}: the Foundry tab was closed or \
                     reloaded, or the network dropped"
                )
            }
            LinkEvent::Closed {
                by: By::Owner,
                reason,
                ..
            } => match reason.as_str() {
                "Connection token revoked" => "Token revoked by you".to_string(),
                "Unpaired by owner" => "Unpaired by you".to_string(),
                "IP address not allowed" => {
                    "Closed: you changed the token's allowed addresses".to_string()
                }
                other => format!("Closed by you: {other}"),
            },
            LinkEvent::Closed {
                by: By::Relay,
                reason,
                ..
            } => format!("Closed by the relay: {reason}"),
            LinkEvent::Refused {
                code: 4004,
                peer,
                holder,
                ..
            } => match holder {
                Some(h) => format!(
                    "Another browser ({h}) holds the connection; this one ({peer}) retries every 30 s"
                ),
                None => format!(
                    "Another browser holds the connection; this one ({peer}) retries every 30 s"
                ),
            },
            LinkEvent::Refused {
                code: 4002,
                reason,
                peer,
                ..
            } if reason == "IP address not allowed" => format!(
                "Refused a connection from {peer}: that address is not among the token's allowed addresses"
            ),
            LinkEvent::Refused {
                code: 4002,
                peer,
                ..
            } => format!(
                "Refused a connection from {peer}: its connection token is not valid (revoked or \
                 from an old pairing); pair the world again"
            ),
            LinkEvent::Refused {
                code, reason, peer, ..
            } => format!("Refused a connection from {peer}: {reason} ({code})"),
        }
    }

    fn kind(&self) -> &'static str {
        match self.event {
            LinkEvent::Connected { .. } => "connected",
            LinkEvent::Closed { .. } => "closed",
            LinkEvent::Refused { .. } => "refused",
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({"at": self.at_ms, "kind": self.kind(), "text": self.text()});
        match &self.event {
            LinkEvent::Connected { peer } => v["peer"] = json!(peer.to_string()),
            LinkEvent::Closed {
                code, reason, by, ..
            } => {
                v["code"] = json!(code);
                v["reason"] = json!(reason);
                v["by"] = json!(by.name());
            }
            LinkEvent::Refused {
                code, reason, peer, ..
            } => {
                v["code"] = json!(code);
                v["reason"] = json!(reason);
                v["peer"] = json!(peer.to_string());
            }
        }
        v
    }

    /// What the state file keeps: the words and the time.
    pub(crate) fn note(&self) -> LinkNote {
        LinkNote {
            at_ms: self.at_ms,
            kind: self.kind().to_string(),
            text: self.text(),
        }
    }
}

/// `HH:MM UTC` of a unix time in ms (the relay has no time zone; the page shows local time).
pub(crate) fn utc_clock(ms: u64) -> String {
    let day_s = (ms / 1000) % 86_400;
    format!("{:02}:{:02} UTC", day_s / 3600, (day_s % 3600) / 60)
}

/// The last `cap` link events of each paired world, and the relay's own closes on their way.
#[derive(Debug, Default)]
pub(crate) struct History {
    cap: usize,
    worlds: HashMap<String, VecDeque<Entry>>,
    /// A close the relay decided (code, reason, who) for a link about to go.
    closing: HashMap<ConnId, (u16, String, By)>,
    /// The close frame a link's peer sent (code, reason), for a close the relay did not decide.
    peer_closes: HashMap<ConnId, (Option<u16>, String)>,
    /// The module's last `module-notify` per world: when, and in words.
    notices: HashMap<String, (u64, String)>,
}

impl History {
    pub(crate) fn new(cap: usize) -> History {
        History {
            cap,
            ..History::default()
        }
    }

    /// Records an event; returns it so the caller can keep its note in the state file.
    pub(crate) fn push(&mut self, client_id: &str, at_ms: u64, event: LinkEvent) -> Entry {
        let entry = Entry { at_ms, event };
        if self.cap > 0 {
            let list = self.worlds.entry(client_id.to_string()).or_default();
            if list.len() >= self.cap {
                list.pop_front();
            }
            list.push_back(entry.clone());
        }
        entry
    }

    /// The relay is closing `conn` itself: the close that follows is worded with this.
    pub(crate) fn note_close(&mut self, conn: ConnId, code: u16, reason: &str, by: By) {
        self.closing.insert(conn, (code, reason.to_string(), by));
    }

    /// The module's side sent its close frame on `conn` (kept until the link goes).
    pub(crate) fn note_peer_close(&mut self, conn: ConnId, code: Option<u16>, reason: &str) {
        self.peer_closes.insert(conn, (code, reason.to_string()));
    }

    /// The module's last notice for a world (`module-notify`: a setting changed, …).
    pub(crate) fn note_notice(&mut self, client_id: &str, at_ms: u64, text: String) {
        self.notices.insert(client_id.to_string(), (at_ms, text));
    }

    pub(crate) fn notice(&self, client_id: &str) -> Option<&(u64, String)> {
        self.notices.get(client_id)
    }

    /// A world link went: closed by the relay (noted before) or else by the module's side.
    pub(crate) fn closed(
        &mut self,
        conn: ConnId,
        client_id: &str,
        at_ms: u64,
        silent: Duration,
        asleep_after: Duration,
    ) -> Entry {
        let peer = self.peer_closes.remove(&conn);
        let (code, reason, by) = match (self.closing.remove(&conn), peer) {
            (Some((c, r, b)), _) => (Some(c), r, b),
            (None, Some((c, r))) => (c, r, By::World),
            (None, None) => (None, String::new(), By::World),
        };
        let event = LinkEvent::Closed {
            code,
            reason,
            by,
            silent_s: silent.as_secs(),
            asleep: by == By::World && silent >= asleep_after,
        };
        self.push(client_id, at_ms, event)
    }

    pub(crate) fn of(&self, client_id: &str) -> impl Iterator<Item = &Entry> {
        self.worlds.get(client_id).into_iter().flatten()
    }

    pub(crate) fn last(&self, client_id: &str) -> Option<&Entry> {
        self.worlds.get(client_id).and_then(|l| l.back())
    }

    pub(crate) fn forget_world(&mut self, client_id: &str) {
        self.worlds.remove(client_id);
        self.notices.remove(client_id);
    }
}

impl Relay {
    /// Records a link event of a paired world (unknown clientIds are not kept: anyone can
    /// knock with a made-up one) and keeps its words on the world in the state file, saved
    /// with the next lazy write.
    pub(crate) fn link_event(
        &mut self,
        client_id: &str,
        event: LinkEvent,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let at_ms = self.clock.ms(now);
        if !self.state.worlds.iter().any(|w| w.client_id == client_id) {
            return;
        }
        let entry = self.history.push(client_id, at_ms, event);
        self.keep_note(client_id, &entry, now, out);
    }

    /// A world link went (link.rs `module_closed`): worded from the relay's own noted close,
    /// else as the module's side closing it.
    pub(crate) fn link_closed(
        &mut self,
        conn: ConnId,
        client_id: &str,
        last_alive: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let silent = now.saturating_duration_since(last_alive);
        // A live tab answers control pings within milliseconds; one ping interval and a
        // margin without any frame means a frozen (sleeping, suspended) tab or machine.
        let asleep_after = self.cfg.module_ping_interval + Duration::from_secs(5);
        let at_ms = self.clock.ms(now);
        let entry = self
            .history
            .closed(conn, client_id, at_ms, silent, asleep_after);
        self.keep_note(client_id, &entry, now, out);
    }

    fn keep_note(&mut self, client_id: &str, entry: &Entry, now: Instant, out: &mut Vec<Action>) {
        let Some(w) = self.state.worlds.iter().find(|w| w.client_id == client_id) else {
            return;
        };
        let mut w = w.clone();
        w.last_link = Some(entry.note());
        self.state.upsert_world(w);
        self.persist_later(now, out);
    }

    /// The world's link events, oldest first, for the admin API and the CLI.
    pub(crate) fn history_json(&self, client_id: &str) -> Value {
        Value::Array(self.history.of(client_id).map(Entry::to_json).collect())
    }

    /// The module's last `module-notify` for the world: `{at, text}`, or null.
    pub(crate) fn notice_json(&self, client_id: &str) -> Value {
        match self.history.notice(client_id) {
            Some((at, text)) => json!({"at": at, "text": text}),
            None => Value::Null,
        }
    }

    /// Why `client_id` (paired, offline) is offline, in words.
    pub(crate) fn why_offline(&self, client_id: &str) -> String {
        let stored = self
            .state
            .worlds
            .iter()
            .find(|w| w.client_id == client_id)
            .and_then(|w| w.last_link.as_ref());
        offline_reason(self.history.last(client_id), stored)
    }

    /// For an API call that found no connected world: why, for the worlds the caller may
    /// use (one line each), or that none is paired.
    pub(crate) fn no_world_reason(&self, allowed: &[String]) -> String {
        let known: Vec<&crate::store::KnownWorld> = self
            .state
            .worlds
            .iter()
            .filter(|w| allowed.is_empty() || allowed.contains(&w.client_id))
            .collect();
        if known.is_empty() && self.state.tokens.is_empty() {
            return "No world is paired with this relay yet: pair one on the admin page (/admin)."
                .to_string();
        }
        if known.is_empty() {
            return offline_reason(None, None);
        }
        known
            .iter()
            .map(|w| {
                let name = if w.world_title.is_empty() {
                    w.client_id.as_str()
                } else {
                    w.world_title.as_str()
                };
                format!(
                    "{name} ({}): {}",
                    w.client_id,
                    self.why_offline(&w.client_id)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Relay {
    /// `GET /admin/api/status` (`fvtt-relay status`): uptime, the state file, open
    /// connections by kind, and each paired world online or not with its last close.
    pub(crate) fn status_report(&self, now: Instant) -> Value {
        let mut kinds = [0usize; 5];
        for role in self.roles.values() {
            let i = match role {
                super::Role::Module => 0,
                super::Role::ModuleAuth { .. } => 1,
                super::Role::Sse => 2,
                super::Role::Api => 3,
                super::Role::Events => 4,
            };
            kinds[i] += 1;
        }
        let worlds: Vec<Value> = self
            .state
            .worlds
            .iter()
            .map(|w| {
                let live = self.worlds.get(&w.client_id);
                // This run's last close, else the note an earlier run left.
                let last_close = self
                    .history
                    .of(&w.client_id)
                    .filter(|e| e.kind() == "closed")
                    .last()
                    .map(Entry::to_json)
                    .or_else(|| {
                        w.last_link
                            .as_ref()
                            .filter(|n| n.kind == "closed")
                            .map(|n| json!({"at": n.at_ms, "kind": n.kind, "text": n.text}))
                    });
                json!({
                    "clientId": w.client_id,
                    "worldTitle": live.map_or(&w.world_title, |l| &l.meta.world_title),
                    "isOnline": live.is_some(),
                    "connectedSince": live.map(|l| l.connected_since_ms),
                    "lastSeen": live.map_or(w.last_seen_ms, |l| Some(l.last_seen_ms)),
                    "lastClose": last_close,
                    "offlineReason": live.is_none().then(|| self.why_offline(&w.client_id)),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": self.cfg.listen.to_string(),
            "uptimeSeconds": self.uptime(now).as_secs(),
            "stateFile": self.cfg.data_dir.join(crate::store::STATE_FILE).display().to_string(),
            "connections": {
                "worldLinks": kinds[0],
                "worldLinksAuthenticating": kinds[1],
                "sse": kinds[2],
                "wsApi": kinds[3],
                "wsEvents": kinds[4],
            },
            "worlds": worlds,
        })
    }
}

/// Why a paired world is offline, in words: its last link event (this run's, else the one
/// the state file kept from an earlier run).
pub(crate) fn offline_reason(last: Option<&Entry>, stored: Option<&LinkNote>) -> String {
    match (last, stored) {
        (Some(e), _) if e.kind() != "connected" => {
            format!("{} (at {})", e.text(), utc_clock(e.at_ms))
        }
        (_, Some(n)) if n.kind != "connected" => {
            format!("{} (at {})", n.text, utc_clock(n.at_ms))
        }
        _ => "It has not connected since the relay started: is Foundry running with the world \
              open, and the module's relay URL pointing here?"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn words() {
        let mut h = History::new(3);
        let c = ConnId { key: 1, gen: 0 };
        let e = h.closed(c, "w", 0, Duration::from_secs(45), Duration::from_secs(35));
        assert_eq!(e.text(), "No ping for 45 s: the GM's tab may be asleep");
        let e = h.closed(c, "w", 0, Duration::from_secs(2), Duration::from_secs(35));
        assert!(e
            .text()
            .starts_with("The GM's browser closed the connection:"));
        h.note_close(c, 4002, "Connection token revoked", By::Owner);
        let e = h.closed(
            c,
            "w",
            50_520_000,
            Duration::from_secs(60),
            Duration::from_secs(35),
        );
        assert_eq!(e.text(), "Token revoked by you");
        assert_eq!(utc_clock(e.at_ms), "14:02 UTC");
        assert_eq!(
            e.to_json(),
            json!({"at": 50_520_000u64, "kind": "closed", "text": "Token revoked by you",
                   "code": 4002, "reason": "Connection token revoked", "by": "owner"})
        );
        for (code, reason, by, words) in [
            (4002, "Unpaired by owner", By::Owner, "Unpaired by you"),
            (
                4002,
                "IP address not allowed",
                By::Owner,
                "Closed: you changed the token's allowed addresses",
            ),
            (
                1001,
                "replaced by a newer connection from 192.168.1.30",
                By::Relay,
                "Closed by the relay: replaced by a newer connection from 192.168.1.30",
            ),
        ] {
            h.note_close(c, code, reason, by);
            let e = h.closed(c, "w", 0, Duration::from_secs(60), Duration::from_secs(35));
            assert_eq!(e.text(), words);
        }
        for (reason, words) in [
            ("IP address not allowed", "Refused a connection from 192.168.1.30: that address is not among the token's allowed addresses"),
            ("Authentication failed", "Refused a connection from 192.168.1.30: its connection token is not valid (revoked or from an old pairing); pair the world again"),
        ] {
            let e = h.push(
                "w",
                1,
                LinkEvent::Refused {
                    code: 4002,
                    reason: reason.into(),
                    peer: ip("192.168.1.30"),
                    holder: None,
                },
            );
            assert_eq!(e.text(), words);
        }
        let e = h.push(
            "w",
            1,
            LinkEvent::Refused {
                code: 4004,
                reason: "Client ID already connected".into(),
                peer: ip("192.168.1.30"),
                holder: Some(ip("192.168.1.20")),
            },
        );
        assert_eq!(
            e.text(),
            "Another browser (192.168.1.20) holds the connection; this one (192.168.1.30) retries every 30 s"
        );
        // Capped at 3: the oldest went.
        let kinds: Vec<&str> = h.of("w").map(Entry::kind).collect();
        assert_eq!(kinds, ["refused", "refused", "refused"]);
    }

    /// Through the relay (sans-IO harness, injected time): a link silent past a ping
    /// interval that closes reads as a sleeping tab, a 4004 names the holder, and the latest
    /// event lands on the world in the state.
    #[test]
    fn the_relay_records_link_events() {
        use super::super::events::harness::*;
        use crate::config::Config;
        use crate::http::request::Method;
        use crate::relay::io::Input;

        let mut h = H::new(Config::default());
        let (link, _) = h.world_online(WORLD);
        // Another host knocks while the link is alive: 4004, and who holds the slot.
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let conn = h.conn();
        let mut hd = head(Method::Get, &format!("/relay?id={WORLD}"), &[]);
        hd.wants_upgrade = true;
        h.input(Input::Upgrade {
            conn,
            peer: other,
            head: &hd,
        });
        let token = h.token.clone();
        h.text(conn, &format!(r#"{{"type":"auth","token":"{token}"}}"#));
        let last = h.relay.history.last(WORLD).map(Entry::text);
        assert_eq!(
            last.as_deref(),
            Some("Another browser (127.0.0.1) holds the connection; this one (127.0.0.2) retries every 30 s")
        );
        // Then no frame for 45 s, and the link goes.
        h.advance(Duration::from_secs(45));
        h.input(Input::Closed { conn: link });
        let texts: Vec<String> = h.relay.history.of(WORLD).map(Entry::text).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(
            texts[0].starts_with("Connected from 127.0.0.1"),
            "{texts:?}"
        );
        assert_eq!(texts[2], "No ping for 45 s: the GM's tab may be asleep");
        let kept = h
            .relay
            .state
            .worlds
            .iter()
            .find(|w| w.client_id == WORLD)
            .and_then(|w| w.last_link.clone());
        assert_eq!(kept.map(|n| n.text), Some(texts[2].clone()));
        assert!(h.relay.why_offline(WORLD).starts_with("No ping for 45 s"));
        // A clientId nobody paired leaves nothing behind.
        let stranger = h.conn();
        let mut hd = head(Method::Get, "/relay?id=fvtt_00000000000000cc", &[]);
        hd.wants_upgrade = true;
        h.input(Input::Upgrade {
            conn: stranger,
            peer: other,
            head: &hd,
        });
        h.text(stranger, r#"{"type":"auth","token":"nope"}"#);
        assert_eq!(h.relay.history.of("fvtt_00000000000000cc").count(), 0);
    }

    #[test]
    fn offline_reason_prefers_this_run_then_the_stored_note() {
        let closed = Entry {
            at_ms: 3_600_000,
            event: LinkEvent::Closed {
                code: Some(4002),
                reason: "Unpaired by owner".into(),
                by: By::Owner,
                silent_s: 0,
                asleep: false,
            },
        };
        assert_eq!(
            offline_reason(Some(&closed), None),
            "Unpaired by you (at 01:00 UTC)"
        );
        let note = LinkNote {
            at_ms: 0,
            kind: "closed".into(),
            text: "No ping for 45 s: the GM's tab may be asleep".into(),
        };
        assert_eq!(
            offline_reason(None, Some(&note)),
            "No ping for 45 s: the GM's tab may be asleep (at 00:00 UTC)"
        );
        assert!(offline_reason(None, None).starts_with("It has not connected"));
    }
}
