//! Event fan-out core (sans-IO): who is subscribed to which world's channels over which
//! transport (SSE, `/ws/api`, `/ws/events`), the per-(world, channel) subscriber counts the
//! module is told about, per-world sequence numbers, the resume ring, event naming and
//! filters, and encoding each event once per wire form.
//!
//! Specs: relay-protocol.md §3 (channels, module payloads, SSE, `/ws/api` event messages) and
//! §4.5 (subscriptions); module-protocol.md §4 (event-subscription-update, payloads);
//! api-surface.md discrepancies 5-7. The reference reads event names and filter fields from
//! the top level of the module message and so names every chat event `chat-create`, drops
//! every filtered actor/scene event and never applies chat/roll filters (relay-protocol.md
//! §3.5, "Reference bug"). We do the documented behaviour: names and filter fields come from
//! the nested `data`, and the payload delivered is that inner data.
//!
//! No sockets and no clock here: callers pass `now_ms` and get back bytes plus the
//! connections they go to. Every subscriber of one wire form shares one `Rc<[u8]>`.

use std::cell::OnceCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use serde_json::Value;

use crate::ids::ConnId;
use crate::sse;

/// Events kept per world for `Last-Event-ID` / `since` resume. Default: 1,000.
pub const DEFAULT_RING_EVENTS: usize = 1_000;
/// Payload bytes kept per world for resume. Default: 4 MiB.
pub const DEFAULT_RING_BYTES: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Channels and transports
// ---------------------------------------------------------------------------------------------

/// One of the six event channels (relay-protocol.md §3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Channel {
    Chat,
    Roll,
    Hooks,
    Combat,
    Actor,
    Scene,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Chat,
        Channel::Roll,
        Channel::Hooks,
        Channel::Combat,
        Channel::Actor,
        Channel::Scene,
    ];

    /// The channel name on the wire (`event-subscription-update`, `/ws/api` subscribe).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Chat => "chat-events",
            Channel::Roll => "roll-events",
            Channel::Hooks => "hooks",
            Channel::Combat => "combat-events",
            Channel::Actor => "actor-events",
            Channel::Scene => "scene-events",
        }
    }

    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The `type` of the message the module pushes on this channel (module-protocol.md §4.2).
    pub fn module_type(self) -> &'static str {
        match self {
            Channel::Chat => "chat-event",
            Channel::Roll => "roll-data",
            Channel::Hooks => "hook-event",
            Channel::Combat => "combat-event",
            Channel::Actor => "actor-event",
            Channel::Scene => "scene-event",
        }
    }

    pub fn from_module_type(module_type: &str) -> Option<Channel> {
        Channel::ALL
            .into_iter()
            .find(|c| c.module_type() == module_type)
    }

    /// The `type` of the `/ws/api` event message (relay-protocol.md §3.4).
    fn ws_api_type(self) -> &'static str {
        match self {
            Channel::Chat => "chat-event",
            Channel::Roll => "roll-event",
            Channel::Hooks => "hook-event",
            Channel::Combat => "combat-event",
            Channel::Actor => "actor-event",
            Channel::Scene => "scene-event",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The wire a subscriber reads events on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Transport {
    /// `GET /<x>/subscribe` event streams.
    Sse,
    /// `/ws/api` `subscribe` messages.
    WsApi,
    /// `/ws/events` sockets.
    WsEvents,
}

const TRANSPORTS: [Transport; 3] = [Transport::Sse, Transport::WsApi, Transport::WsEvents];

/// What a `/ws/events` socket asked for: channels, and the world status notices.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EventSelection {
    channels: u8,
    pub world_connected: bool,
    pub world_disconnected: bool,
    /// The module's `module-notify` notices (a setting changed, …).
    pub module_notify: bool,
}

impl EventSelection {
    /// Every channel plus both status notices: what `["all"]` (or no list) means.
    pub fn all() -> Self {
        EventSelection {
            channels: Channel::ALL.iter().fold(0, |m, c| m | c.bit()),
            world_connected: true,
            world_disconnected: true,
            module_notify: true,
        }
    }

    /// Nothing: what `[]` means (the socket still gets replies, no events).
    pub fn none() -> Self {
        EventSelection::default()
    }

    pub fn with(mut self, channel: Channel) -> Self {
        self.channels |= channel.bit();
        self
    }

    pub fn has(&self, channel: Channel) -> bool {
        self.channels & channel.bit() != 0
    }

    /// Parse a subscription list: absent or `null` → all; an array of channel names,
    /// `"world-connected"`, `"world-disconnected"`, `"module-notify"` or `"all"` → their union;
    /// `[]` → nothing.
    pub fn parse(list: Option<&Value>) -> Result<Self, &'static str> {
        let items = match list {
            None | Some(Value::Null) => return Ok(EventSelection::all()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err("'events' must be an array of channel names"),
        };
        let mut sel = EventSelection::none();
        for item in items {
            let name = item
                .as_str()
                .ok_or("'events' must be an array of channel names")?;
            match name {
                "all" => sel = EventSelection::all(),
                "world-connected" => sel.world_connected = true,
                "world-disconnected" => sel.world_disconnected = true,
                "module-notify" => sel.module_notify = true,
                _ => {
                    let ch = Channel::from_name(name).ok_or(
                        "Unknown event name. Supported: all, chat-events, roll-events, hooks, \
                         combat-events, actor-events, scene-events, world-connected, \
                         world-disconnected, module-notify",
                    )?;
                    sel = sel.with(ch);
                }
            }
        }
        Ok(sel)
    }

    fn channels(&self) -> impl Iterator<Item = Channel> + '_ {
        Channel::ALL.into_iter().filter(|c| self.has(*c))
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// The fields filters compare, read once from the nested module payload (relay-protocol.md
/// §3.5; module-protocol.md §4.2). What is absent stays `None`/empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MatchKeys {
    /// A `chat-delete`: its payload is only `{id}`.
    chat_delete: bool,
    speaker_alias: Option<String>,
    speaker_actor: Option<String>,
    /// Chat message `type`, as text (Foundry v12+ sends `"base"`, older ones a number).
    msg_type: Option<String>,
    whisper: Vec<String>,
    /// Chat `author` or roll `user`.
    user_id: Option<String>,
    user_name: Option<String>,
    /// `encounterId` (combat), `actorUuid` (actor) or `sceneId` (scene).
    subject: Option<String>,
}

/// One sequenced event: parsed once, its payload serialized once, each wire form encoded at
/// most once and then shared (ARCHITECTURE.md, "Path 2", step 3).
#[derive(Debug)]
pub struct Event {
    /// The world's clientId.
    pub world: String,
    /// Per-world sequence number, from 1.
    pub seq: u64,
    pub channel: Channel,
    /// `chat-create`, `roll`, the hook name, `combat-turn`, `actor-update`, `scene-token-update`…
    pub name: String,
    pub timestamp_ms: u64,
    /// The delivered payload (the inner data), as compact JSON.
    pub data_json: Box<str>,
    keys: MatchKeys,
    sse: OnceCell<Rc<[u8]>>,
    ws_api: OnceCell<Rc<[u8]>>,
    ws_events: OnceCell<Rc<[u8]>>,
}

impl Event {
    /// The bytes of this event for one transport; built on first use, shared afterwards.
    ///
    /// - SSE: `id: <epoch>-<seq>`, `event: <name>`, `data: <payload>`.
    /// - `/ws/api`: relay-protocol.md §3.4 with the unwrapped payload, plus `seq` so a client
    ///   can resume with `since`: `{"type":"chat-event","event":"chat-create","seq":n,"data":…}`
    ///   (hooks carry `"hook"` instead of `"event"`, rolls neither).
    /// - `/ws/events`: `{"type":<name>,"clientId":…,"seq":n,"timestamp":ms,"data":…}`.
    ///
    /// The payload text is spliced in, never re-serialized; the other pieces are JSON-escaped.
    pub fn encoded(&self, transport: Transport, epoch: &str) -> Rc<[u8]> {
        let cell = match transport {
            Transport::Sse => &self.sse,
            Transport::WsApi => &self.ws_api,
            Transport::WsEvents => &self.ws_events,
        };
        cell.get_or_init(|| self.encode(transport, epoch).into())
            .clone()
    }

    fn encode(&self, transport: Transport, epoch: &str) -> Vec<u8> {
        match transport {
            Transport::Sse => sse::event(
                Some(&format!("{epoch}-{}", self.seq)),
                Some(&self.name),
                &self.data_json,
            ),
            Transport::WsApi => {
                let label = match self.channel {
                    Channel::Roll => String::new(),
                    Channel::Hooks => format!(r#""hook":{},"#, json_str(&self.name)),
                    _ => format!(r#""event":{},"#, json_str(&self.name)),
                };
                format!(
                    r#"{{"type":"{}",{label}"seq":{},"data":{}}}"#,
                    self.channel.ws_api_type(),
                    self.seq,
                    self.data_json
                )
                .into_bytes()
            }
            Transport::WsEvents => format!(
                r#"{{"type":{},"clientId":{},"seq":{},"timestamp":{},"data":{}}}"#,
                json_str(&self.name),
                json_str(&self.world),
                self.seq,
                self.timestamp_ms,
                self.data_json
            )
            .into_bytes(),
        }
    }

    /// What the event costs in the ring's byte budget: its payload and name. The cached
    /// encodings add a bounded multiple of this (three wire forms at most).
    fn ring_cost(&self) -> usize {
        self.data_json.len() + self.name.len()
    }
}

/// A JSON string literal (quotes and escapes) for a known-safe splice.
fn json_str(s: &str) -> String {
    // Display of a Value is its compact JSON and cannot fail.
    Value::String(s.to_owned()).to_string()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
}

fn owned_at(v: &Value, path: &[&str]) -> Option<String> {
    str_at(v, path).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Name an event, extract its filter keys and take out the payload to deliver, from the
/// module message's `data` (module-protocol.md §4.2). `None`: a message without the name the
/// module always sets (`eventType`, or `hook` for hooks), which we cannot name.
///
/// Chat is unwrapped one level further than the others: the module's `{eventType, data}`
/// becomes the event name plus the chat message itself, which is what the documented clients
/// read (`test-examples/sse-chat-subscribe.*` in the reference parses `chat-create` data as a
/// ChatMessage and `chat-delete` data as `{id}`; relay-protocol.md §3.5).
fn describe(channel: Channel, mut data: Value) -> Option<(String, MatchKeys, Value)> {
    let mut keys = MatchKeys::default();
    let event_type = || str_at(&data, &["eventType"]).map(str::to_owned);
    match channel {
        Channel::Chat => {
            let et = event_type()?;
            let payload = match data.get_mut("data") {
                Some(inner) if inner.is_object() => inner.take(),
                _ => data,
            };
            keys.chat_delete = et == "delete";
            keys.speaker_alias = owned_at(&payload, &["speaker", "alias"]);
            keys.speaker_actor = owned_at(&payload, &["speaker", "actor"]);
            keys.msg_type = match payload.get("type") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            keys.whisper = payload
                .get("whisper")
                .and_then(Value::as_array)
                .map(|w| {
                    w.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            keys.user_id = owned_at(&payload, &["author", "id"]);
            keys.user_name = owned_at(&payload, &["author", "name"]);
            Some((format!("chat-{et}"), keys, payload))
        }
        Channel::Roll => {
            // relay-protocol.md §3.5 [inference]: the roll's user is `user:{id,name}`.
            keys.user_id = owned_at(&data, &["user", "id"]);
            keys.user_name = owned_at(&data, &["user", "name"]);
            Some(("roll".to_owned(), keys, data))
        }
        Channel::Hooks => {
            let hook = str_at(&data, &["hook"])?.to_owned();
            Some((hook, keys, data))
        }
        Channel::Combat | Channel::Actor | Channel::Scene => {
            let et = event_type()?;
            let (prefix, field) = match channel {
                Channel::Combat => ("combat", "encounterId"),
                Channel::Actor => ("actor", "actorUuid"),
                _ => ("scene", "sceneId"),
            };
            keys.subject = owned_at(&data, &[field]);
            Some((format!("{prefix}-{et}"), keys, data))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

/// Per-subscription filters (relay-protocol.md §3.3 query parameters; §4.5 / ws-api.tsv
/// `filters`), compared against the nested payload fields. An empty value means "no filter",
/// as in the reference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Chat: the speaker's alias (name) or actor id (reference docs: "speaker name or actor ID").
    speaker: Option<String>,
    /// Chat: the message `type`, compared as text.
    msg_type: Option<String>,
    /// Chat: only whispered messages.
    whisper_only: bool,
    /// Chat: messages this user can see (public, authored by them, or whispered to them).
    /// Roll: rolls made by this user. Matched against the user id or name.
    user: Option<String>,
    /// Hooks: hook names; empty = all.
    hooks: Vec<String>,
    encounter_id: Option<String>,
    actor_uuid: Option<String>,
    scene_id: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn csv(s: &str) -> Vec<String> {
    s.split(',').filter_map(non_empty).collect()
}

impl Filters {
    /// From decoded SSE query pairs (relay-protocol.md §3.3); only the channel's own
    /// parameters are read, others are ignored.
    pub fn from_query<'a>(
        channel: Channel,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Filters {
        let mut f = Filters::default();
        for (k, v) in pairs {
            match (channel, k) {
                (Channel::Chat, "speaker") => f.speaker = non_empty(v),
                (Channel::Chat, "type") => f.msg_type = non_empty(v),
                (Channel::Chat, "whisperOnly") => f.whisper_only = truthy(v),
                (Channel::Chat | Channel::Roll, "userId") => f.user = non_empty(v),
                (Channel::Hooks, "hooks") => f.hooks = csv(v),
                (Channel::Combat, "encounterId") => f.encounter_id = non_empty(v),
                (Channel::Actor, "actorUuid") => f.actor_uuid = non_empty(v),
                (Channel::Scene, "sceneId") => f.scene_id = non_empty(v),
                _ => {}
            }
        }
        f
    }

    /// From a `/ws/api` subscribe `filters` object (asyncapi names: `speaker`, `type`,
    /// `whisperOnly`, `userId`, `hookFilters`, `actorUuid`, `sceneId`; we also read
    /// `encounterId`, and `hooks` as on SSE). Absent or `null` → no filters. Keys that do
    /// not apply to the channel are ignored; a value of the wrong type is an error.
    pub fn from_json(channel: Channel, filters: Option<&Value>) -> Result<Filters, &'static str> {
        let obj = match filters {
            None | Some(Value::Null) => return Ok(Filters::default()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err("'filters' must be an object"),
        };
        let text = |key: &str, err: &'static str| -> Result<Option<String>, &'static str> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(non_empty(s)),
                Some(_) => Err(err),
            }
        };
        let mut f = Filters::default();
        match channel {
            Channel::Chat => {
                f.speaker = text("speaker", "filter 'speaker' must be a string")?;
                f.msg_type = match obj.get("type") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => non_empty(s),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(_) => return Err("filter 'type' must be a string or a number"),
                };
                f.whisper_only = match obj.get("whisperOnly") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(Value::String(s)) => truthy(s),
                    Some(_) => return Err("filter 'whisperOnly' must be a boolean"),
                };
                f.user = text("userId", "filter 'userId' must be a string")?;
            }
            Channel::Roll => f.user = text("userId", "filter 'userId' must be a string")?,
            Channel::Hooks => {
                for key in ["hookFilters", "hooks"] {
                    match obj.get(key) {
                        None | Some(Value::Null) => {}
                        Some(Value::String(s)) => f.hooks.extend(csv(s)),
                        Some(Value::Array(items)) => {
                            for item in items {
                                let name = item
                                    .as_str()
                                    .ok_or("filter 'hookFilters' must be an array of strings")?;
                                f.hooks.extend(non_empty(name));
                            }
                        }
                        Some(_) => return Err("filter 'hookFilters' must be an array of strings"),
                    }
                }
            }
            Channel::Combat => {
                f.encounter_id = text("encounterId", "filter 'encounterId' must be a string")?
            }
            Channel::Actor => {
                f.actor_uuid = text("actorUuid", "filter 'actorUuid' must be a string")?
            }
            Channel::Scene => f.scene_id = text("sceneId", "filter 'sceneId' must be a string")?,
        }
        Ok(f)
    }

    /// Apply a key's bound Foundry user (`scopedUserId`) as the user scope. It replaces any
    /// requested `userId`, as the bound user replaces `userId` on forwarded requests
    /// (api-surface.md discrepancy 7; relay-protocol.md §8 #14, §4.4).
    pub fn bind_user(mut self, bound_user_id: Option<&str>) -> Filters {
        if let Some(u) = bound_user_id.and_then(non_empty) {
            self.user = Some(u);
        }
        self
    }

    /// Whether `ev` passes. Only the filters of the event's channel apply.
    ///
    /// A `chat-delete` carries only `{id}` (module-protocol.md §4.2), so no chat filter can be
    /// evaluated on it; it passes, so a filtered view can still drop a message it showed. It
    /// reveals an id and nothing of the content.
    pub fn matches(&self, ev: &Event) -> bool {
        let k = &ev.keys;
        let is = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref() == Some(w.as_str()),
        };
        let by_user =
            |u: &str| k.user_id.as_deref() == Some(u) || k.user_name.as_deref() == Some(u);
        match ev.channel {
            Channel::Chat => {
                if k.chat_delete {
                    return true;
                }
                if let Some(sp) = &self.speaker {
                    let alias = k.speaker_alias.as_deref() == Some(sp.as_str());
                    let actor = k.speaker_actor.as_deref() == Some(sp.as_str());
                    if !alias && !actor {
                        return false;
                    }
                }
                if !is(&self.msg_type, &k.msg_type) {
                    return false;
                }
                if self.whisper_only && k.whisper.is_empty() {
                    return false;
                }
                match &self.user {
                    None => true,
                    // Foundry shows a message to everyone unless it is whispered; a whisper
                    // is seen by its author and its recipients.
                    Some(u) => k.whisper.is_empty() || by_user(u) || k.whisper.contains(u),
                }
            }
            Channel::Roll => self.user.as_deref().is_none_or(by_user),
            Channel::Hooks => self.hooks.is_empty() || self.hooks.contains(&ev.name),
            Channel::Combat => is(&self.encounter_id, &k.subject),
            Channel::Actor => is(&self.actor_uuid, &k.subject),
            Channel::Scene => is(&self.scene_id, &k.subject),
        }
    }
}

/// `whisperOnly=true` (the reference accepts exactly `true`; we also take `1`, any case).
fn truthy(v: &str) -> bool {
    v.eq_ignore_ascii_case("true") || v == "1"
}

// ---------------------------------------------------------------------------------------------
// Hub outputs
// ---------------------------------------------------------------------------------------------

/// A subscription handle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SubId(u64);

/// A (world, channel) subscriber count that changed, or (from `counts_for_world`) one to
/// resend. The caller sends [`CountUpdate::module_message`] to the world's module if it is
/// connected and authenticated (module-protocol.md §4.1: not before `auth-success`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CountUpdate {
    pub world: String,
    pub channel: Channel,
    pub count: u32,
}

impl CountUpdate {
    /// `{"type":"event-subscription-update","channel":…,"count":n}` (relay-protocol.md §3.1).
    pub fn module_message(&self) -> String {
        format!(
            r#"{{"type":"event-subscription-update","channel":"{}","count":{}}}"#,
            self.channel.as_str(),
            self.count
        )
    }
}

/// The same bytes for several connections of one transport. For the WebSocket transports
/// `bytes` is the JSON text; the caller wraps it in one frame and shares that.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub transport: Transport,
    /// Sorted, without duplicates.
    pub conns: Vec<ConnId>,
    pub bytes: Rc<[u8]>,
}

/// Where a client wants to resume from.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResumePoint {
    /// An SSE `Last-Event-ID` of ours: `<epoch>-<seq>`.
    LastEventId { epoch: String, seq: u64 },
    /// A `/ws/api` `since` sequence number (events with a larger one are wanted).
    Since(u64),
    /// A `Last-Event-ID` we did not mint: nothing can be resumed.
    Invalid,
}

impl ResumePoint {
    /// Parse an SSE `Last-Event-ID` header value.
    pub fn from_last_event_id(value: &str) -> ResumePoint {
        let Some((epoch, seq)) = value.trim().split_once('-') else {
            return ResumePoint::Invalid;
        };
        // `parse` alone would accept a leading `+`; ids we mint are plain digits.
        if epoch.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return ResumePoint::Invalid;
        }
        match seq.parse() {
            Ok(seq) => ResumePoint::LastEventId {
                epoch: epoch.to_owned(),
                seq,
            },
            Err(_) => ResumePoint::Invalid,
        }
    }
}

/// The answer to a resume request, for the one connection that asked.
#[derive(Clone, Debug)]
pub enum Replay {
    /// The missed events that match the subscription, oldest first (possibly none).
    Events(Vec<Rc<[u8]>>),
    /// The gap cannot be filled (evicted from the ring, another process epoch, or a point
    /// we never reached): send these bytes, then continue live. SSE: `event: reset` with
    /// `id: <epoch>-<latest>` so the next reconnect resumes from here; `/ws/api`:
    /// `{"type":"reset","channel":…,"seq":latest}`; `/ws/events`: `{"type":"reset",
    /// "clientId":…,"seq":latest}`.
    Reset(Rc<[u8]>),
    /// No such subscription, or it covers every world (a `/ws/events` wildcard).
    Unavailable,
}

/// Why a subscription was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SubscribeError {
    /// This `/ws/api` socket already has a subscription to that channel (the reference
    /// created a second one and delivered every event twice: relay-protocol.md §4.5).
    Duplicate,
}

impl SubscribeError {
    pub fn message(&self) -> &'static str {
        match self {
            SubscribeError::Duplicate => "Already subscribed to this channel",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hub
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Sub {
    conn: ConnId,
    transport: Transport,
    /// `None`: every world (`/ws/events` only).
    world: Option<String>,
    channels: EventSelection,
    filters: Filters,
}

impl Sub {
    /// One world's one channel: what an SSE stream or a `/ws/api` subscription holds.
    fn one_channel(
        conn: ConnId,
        transport: Transport,
        world: &str,
        channel: Channel,
        filters: Filters,
    ) -> Sub {
        Sub {
            conn,
            transport,
            world: Some(world.to_owned()),
            channels: EventSelection::none().with(channel),
            filters,
        }
    }
}

#[derive(Debug, Default)]
struct WorldState {
    /// Last sequence number given out; 0 before the first event.
    seq: u64,
    ring: VecDeque<Rc<Event>>,
    ring_bytes: usize,
    connected: bool,
    /// Subscriptions naming this world, per channel, all transports.
    counts: [u32; 6],
    sse: [u32; 6],
    ws_api: u32,
    subs: Vec<SubId>,
}

impl WorldState {
    /// Nothing worth keeping: forgetting it loses no sequence numbers (seq 0) and no state.
    fn is_idle(&self) -> bool {
        self.seq == 0 && !self.connected && self.subs.is_empty()
    }
}

/// All subscriptions and per-world event state.
pub struct Hub {
    epoch: String,
    ring_events: usize,
    ring_bytes: usize,
    next_sub: u64,
    subs: HashMap<SubId, Sub>,
    by_conn: HashMap<ConnId, Vec<SubId>>,
    worlds: HashMap<String, WorldState>,
    /// Subscriptions to every world, and their per-channel counts (added to each world's).
    wildcard: Vec<SubId>,
    wildcard_counts: [u32; 6],
}

impl Hub {
    /// A hub with a random epoch, so ids minted by an earlier process never resume here.
    pub fn new(ring_events: usize, ring_bytes: usize) -> Self {
        Hub::with_epoch(ring_events, ring_bytes, crate::ids::random_hex(4))
    }

    /// A hub with a given epoch (tests; a restart must pick a new one).
    pub fn with_epoch(ring_events: usize, ring_bytes: usize, epoch: String) -> Self {
        Hub {
            epoch,
            ring_events,
            ring_bytes,
            next_sub: 1,
            subs: HashMap::new(),
            by_conn: HashMap::new(),
            worlds: HashMap::new(),
            wildcard: Vec::new(),
            wildcard_counts: [0; 6],
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Subscribe an SSE stream to one world's channel. `bound_user_id` is the key's bound
    /// Foundry user, applied as the user scope (api-surface.md discrepancy 7). The 10-per-
    /// channel cap is the caller's, with [`Hub::sse_count`].
    pub fn subscribe_sse(
        &mut self,
        conn: ConnId,
        world: &str,
        channel: Channel,
        filters: Filters,
        bound_user_id: Option<&str>,
    ) -> (SubId, Vec<CountUpdate>) {
        self.add(Sub::one_channel(
            conn,
            Transport::Sse,
            world,
            channel,
            filters.bind_user(bound_user_id),
        ))
    }

    /// Subscribe a `/ws/api` socket to one world's channel, at most once per channel. The
    /// per-world cap of 10 is the caller's, with [`Hub::ws_api_count`].
    pub fn subscribe_ws_api(
        &mut self,
        conn: ConnId,
        world: &str,
        channel: Channel,
        filters: Filters,
        bound_user_id: Option<&str>,
    ) -> Result<(SubId, Vec<CountUpdate>), SubscribeError> {
        let dup = self.subs_of(conn).any(|(_, s)| {
            s.transport == Transport::WsApi
                && s.world.as_deref() == Some(world)
                && s.channels.has(channel)
        });
        if dup {
            return Err(SubscribeError::Duplicate);
        }
        Ok(self.add(Sub::one_channel(
            conn,
            Transport::WsApi,
            world,
            channel,
            filters.bind_user(bound_user_id),
        )))
    }

    /// Set a `/ws/events` socket's subscription (`world` `None` = every world), replacing the
    /// one it had. Only the net count changes are reported, so a replacement that keeps a
    /// channel does not make the module switch it off and on.
    pub fn subscribe_events(
        &mut self,
        conn: ConnId,
        world: Option<&str>,
        selection: EventSelection,
        bound_user_id: Option<&str>,
    ) -> (SubId, Vec<CountUpdate>) {
        let old: Vec<SubId> = self
            .subs_of(conn)
            .filter(|(_, s)| s.transport == Transport::WsEvents)
            .map(|(id, _)| id)
            .collect();
        let new = Sub {
            conn,
            transport: Transport::WsEvents,
            world: world.map(str::to_owned),
            channels: selection,
            filters: Filters::default().bind_user(bound_user_id),
        };
        let mut keys = self.affected(&new);
        for id in &old {
            if let Some(s) = self.subs.get(id) {
                keys.extend(self.affected(s));
            }
        }
        let mut sub_id = SubId(0);
        let updates = self.with_counts(keys, |hub| {
            for id in &old {
                hub.remove_raw(*id);
            }
            sub_id = hub.insert_raw(new);
        });
        (sub_id, updates)
    }

    /// Remove one subscription.
    pub fn unsubscribe(&mut self, sub: SubId) -> Vec<CountUpdate> {
        self.remove_many(vec![sub])
    }

    /// `/ws/api` `unsubscribe`: one channel, or all (`None`). Returns how many were removed
    /// (the reply's `removed`) and the count changes.
    pub fn unsubscribe_ws_api(
        &mut self,
        conn: ConnId,
        channel: Option<Channel>,
    ) -> (usize, Vec<CountUpdate>) {
        let ids: Vec<SubId> = self
            .subs_of(conn)
            .filter(|(_, s)| {
                s.transport == Transport::WsApi && channel.is_none_or(|c| s.channels.has(c))
            })
            .map(|(id, _)| id)
            .collect();
        let n = ids.len();
        (n, self.remove_many(ids))
    }

    /// Remove every subscription of a closed connection.
    pub fn drop_conn(&mut self, conn: ConnId) -> Vec<CountUpdate> {
        let ids = self.by_conn.get(&conn).cloned().unwrap_or_default();
        self.remove_many(ids)
    }

    /// The world's channels with subscribers, to resend after every `auth-success`
    /// (module-protocol.md §4.1: channel state survives a reconnect but not a reload).
    pub fn counts_for_world(&self, world: &str) -> Vec<CountUpdate> {
        Channel::ALL
            .into_iter()
            .map(|ch| CountUpdate {
                world: world.to_owned(),
                channel: ch,
                count: self.count(world, ch),
            })
            .filter(|u| u.count > 0)
            .collect()
    }

    /// SSE streams on (world, channel): the reference caps them at 10 (relay-protocol.md §3.3).
    pub fn sse_count(&self, world: &str, channel: Channel) -> usize {
        self.worlds
            .get(world)
            .map_or(0, |w| w.sse[channel.index()] as usize)
    }

    /// `/ws/api` subscriptions on a world, all sockets and channels (cap 10, §4.5).
    pub fn ws_api_count(&self, world: &str) -> usize {
        self.worlds.get(world).map_or(0, |w| w.ws_api as usize)
    }

    /// The world's last sequence number (0 before its first event).
    pub fn latest_seq(&self, world: &str) -> u64 {
        self.worlds.get(world).map_or(0, |w| w.seq)
    }

    /// Drop a world's kept events (for example when it is unpaired), keeping its numbering so
    /// an old `Last-Event-ID` of this epoch gets a reset rather than a wrong resume.
    pub fn clear_ring(&mut self, world: &str) {
        if let Some(state) = self.worlds.get_mut(world) {
            state.ring.clear();
            state.ring_bytes = 0;
        }
    }

    /// A module event arrived: `module_type` is the message `type`, `data` its `data` field.
    /// Name it, sequence it, keep it in the ring, and encode it once per wire form that has a
    /// matching subscriber. Messages that are not events, or lack their name, yield nothing.
    pub fn publish(
        &mut self,
        world: &str,
        module_type: &str,
        data: Value,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let Some(channel) = Channel::from_module_type(module_type) else {
            return Vec::new();
        };
        let Some((name, keys, payload)) = describe(channel, data) else {
            log::debug!("{world}: {module_type} without an event name, dropped");
            return Vec::new();
        };
        let state = self.worlds.entry(world.to_owned()).or_default();
        state.seq += 1;
        let ev = Rc::new(Event {
            world: world.to_owned(),
            seq: state.seq,
            channel,
            name,
            timestamp_ms: now_ms,
            data_json: payload.to_string().into_boxed_str(),
            keys,
            sse: OnceCell::new(),
            ws_api: OnceCell::new(),
            ws_events: OnceCell::new(),
        });
        // Every sequenced event enters the ring and leaves only from the front, so the ring
        // always holds a contiguous run ending at `seq`; one too big for the byte budget
        // pushes everything out, and a resume across it becomes a reset.
        state.ring_bytes += ev.ring_cost();
        state.ring.push_back(ev.clone());
        while state.ring.len() > self.ring_events || state.ring_bytes > self.ring_bytes {
            match state.ring.pop_front() {
                Some(old) => state.ring_bytes -= old.ring_cost(),
                None => break,
            }
        }
        let mut conns: [Vec<ConnId>; 3] = Default::default();
        for (_, sub) in self.subs_for_world(world) {
            if sub.channels.has(channel) && sub.filters.matches(&ev) {
                conns[transport_index(sub.transport)].push(sub.conn);
            }
        }
        self.deliveries(conns, |t| ev.encoded(t, &self.epoch))
    }

    /// A world connected (after `auth-success`) or disconnected. `/ws/events` subscribers who
    /// asked for it get `{"type":"world-connected"|"world-disconnected","clientId":…,
    /// "timestamp":ms,"data":meta}` (no `seq`: notices are not ringed events); on a disconnect
    /// the world's SSE streams get `event: world-disconnected` with `{"clientId":…}` and stay
    /// open for its return (ARCHITECTURE.md, "Path 3", step 6). A repeated status is a no-op.
    pub fn world_status(
        &mut self,
        world: &str,
        connected: bool,
        meta: &Value,
        now_ms: u64,
    ) -> Vec<Delivery> {
        let state = self.worlds.entry(world.to_owned()).or_default();
        if state.connected == connected {
            self.gc_world(world);
            return Vec::new();
        }
        state.connected = connected;
        let mut conns: [Vec<ConnId>; 3] = Default::default();
        for (_, sub) in self.subs_for_world(world) {
            let wanted = match sub.transport {
                Transport::Sse => !connected,
                Transport::WsApi => false,
                Transport::WsEvents if connected => sub.channels.world_connected,
                Transport::WsEvents => sub.channels.world_disconnected,
            };
            if wanted {
                conns[transport_index(sub.transport)].push(sub.conn);
            }
        }
        let kind = if connected {
            "world-connected"
        } else {
            "world-disconnected"
        };
        let out = self.deliveries(conns, |t| match t {
            Transport::Sse => {
                let data = format!(r#"{{"clientId":{}}}"#, json_str(world));
                sse::event(None, Some(kind), &data).into()
            }
            _ => format!(
                r#"{{"type":"{kind}","clientId":{},"timestamp":{now_ms},"data":{meta}}}"#,
                json_str(world)
            )
            .into_bytes()
            .into(),
        });
        self.gc_world(world);
        out
    }

    /// A `module-notify` from `world` (module-protocol.md §5: `{event, details, actor,
    /// world}`) for the `/ws/events` sockets that asked for it: `{"type":"module-notify",
    /// "clientId","timestamp","data"}`. Not sequenced or ringed: a notice, not a world event.
    pub fn module_notice(&self, world: &str, data: &Value, now_ms: u64) -> Vec<Delivery> {
        let mut conns: [Vec<ConnId>; 3] = Default::default();
        for (_, sub) in self.subs_for_world(world) {
            if sub.transport == Transport::WsEvents && sub.channels.module_notify {
                conns[transport_index(sub.transport)].push(sub.conn);
            }
        }
        self.deliveries(conns, |_| {
            format!(
                r#"{{"type":"module-notify","clientId":{},"timestamp":{now_ms},"data":{data}}}"#,
                json_str(world)
            )
            .into_bytes()
            .into()
        })
    }

    /// The events after `after` that `sub` would have received, encoded for its transport,
    /// or a reset marker when they are no longer all known (see [`Replay`]). Call it right
    /// after subscribing, before the next `publish`, so nothing falls between.
    pub fn replay(&self, sub: SubId, after: &ResumePoint) -> Replay {
        let Some(s) = self.subs.get(&sub) else {
            return Replay::Unavailable;
        };
        let Some(world) = s.world.as_deref() else {
            return Replay::Unavailable;
        };
        let (latest, ring) = match self.worlds.get(world) {
            Some(w) => (w.seq, Some(&w.ring)),
            None => (0, None),
        };
        let last = match after {
            ResumePoint::LastEventId { epoch, seq } if *epoch == self.epoch => *seq,
            ResumePoint::Since(seq) => *seq,
            _ => return self.reset(s, world, latest),
        };
        if last > latest {
            // A point we never reached: another process's numbering, or a bogus value.
            return self.reset(s, world, latest);
        }
        if last == latest {
            return Replay::Events(Vec::new());
        }
        let ring = match ring {
            Some(r) if r.front().is_some_and(|e| e.seq <= last + 1) => r,
            _ => return self.reset(s, world, latest),
        };
        Replay::Events(
            ring.iter()
                .filter(|e| e.seq > last && s.channels.has(e.channel) && s.filters.matches(e))
                .map(|e| e.encoded(s.transport, &self.epoch))
                .collect(),
        )
    }

    // -- internals ------------------------------------------------------------------------

    fn reset(&self, s: &Sub, world: &str, latest: u64) -> Replay {
        let bytes: Vec<u8> = match s.transport {
            Transport::Sse => {
                let data = format!(r#"{{"clientId":{},"seq":{latest}}}"#, json_str(world));
                sse::event(
                    Some(&format!("{}-{latest}", self.epoch)),
                    Some("reset"),
                    &data,
                )
            }
            Transport::WsApi => {
                let ch = s.channels.channels().next().map_or("", Channel::as_str);
                format!(r#"{{"type":"reset","channel":"{ch}","seq":{latest}}}"#).into_bytes()
            }
            Transport::WsEvents => format!(
                r#"{{"type":"reset","clientId":{},"seq":{latest}}}"#,
                json_str(world)
            )
            .into_bytes(),
        };
        Replay::Reset(bytes.into())
    }

    fn count(&self, world: &str, ch: Channel) -> u32 {
        let own = self.worlds.get(world).map_or(0, |w| w.counts[ch.index()]);
        own + self.wildcard_counts[ch.index()]
    }

    fn subs_of(&self, conn: ConnId) -> impl Iterator<Item = (SubId, &Sub)> {
        self.by_conn
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|id| self.subs.get(id).map(|s| (*id, s)))
    }

    fn subs_for_world(&self, world: &str) -> impl Iterator<Item = (SubId, &Sub)> {
        let own = self.worlds.get(world).map(|w| w.subs.as_slice());
        own.unwrap_or_default()
            .iter()
            .chain(self.wildcard.iter())
            .filter_map(|id| self.subs.get(id).map(|s| (*id, s)))
    }

    /// The (world, channel) counts a subscription contributes to. A wildcard counts for every
    /// world, but only connected worlds need telling now; the others get theirs from
    /// `counts_for_world` when they connect.
    fn affected(&self, sub: &Sub) -> Vec<(String, Channel)> {
        let worlds: Vec<String> = match &sub.world {
            Some(w) => vec![w.clone()],
            None => self
                .worlds
                .iter()
                .filter(|(_, w)| w.connected)
                .map(|(k, _)| k.clone())
                .collect(),
        };
        let mut keys = Vec::new();
        for w in worlds {
            keys.extend(sub.channels.channels().map(|c| (w.clone(), c)));
        }
        keys
    }

    /// Run `change`, then report the keys whose count differs from before, in a stable order.
    fn with_counts(
        &mut self,
        mut keys: Vec<(String, Channel)>,
        change: impl FnOnce(&mut Hub),
    ) -> Vec<CountUpdate> {
        keys.sort();
        keys.dedup();
        let before: Vec<u32> = keys.iter().map(|(w, c)| self.count(w, *c)).collect();
        change(self);
        keys.into_iter()
            .zip(before)
            .filter_map(|((world, channel), was)| {
                let count = self.count(&world, channel);
                (count != was).then_some(CountUpdate {
                    world,
                    channel,
                    count,
                })
            })
            .collect()
    }

    fn add(&mut self, sub: Sub) -> (SubId, Vec<CountUpdate>) {
        let keys = self.affected(&sub);
        let mut id = SubId(0);
        let updates = self.with_counts(keys, |hub| id = hub.insert_raw(sub));
        (id, updates)
    }

    fn remove_many(&mut self, ids: Vec<SubId>) -> Vec<CountUpdate> {
        let mut keys = Vec::new();
        for id in &ids {
            if let Some(s) = self.subs.get(id) {
                keys.extend(self.affected(s));
            }
        }
        self.with_counts(keys, |hub| {
            for id in ids {
                hub.remove_raw(id);
            }
        })
    }

    fn insert_raw(&mut self, sub: Sub) -> SubId {
        let id = SubId(self.next_sub);
        self.next_sub += 1;
        match &sub.world {
            Some(w) => {
                let state = self.worlds.entry(w.clone()).or_default();
                for ch in sub.channels.channels() {
                    state.counts[ch.index()] += 1;
                    if sub.transport == Transport::Sse {
                        state.sse[ch.index()] += 1;
                    }
                }
                if sub.transport == Transport::WsApi {
                    state.ws_api += 1;
                }
                state.subs.push(id);
            }
            None => {
                for ch in sub.channels.channels() {
                    self.wildcard_counts[ch.index()] += 1;
                }
                self.wildcard.push(id);
            }
        }
        self.by_conn.entry(sub.conn).or_default().push(id);
        self.subs.insert(id, sub);
        id
    }

    fn remove_raw(&mut self, id: SubId) {
        let Some(sub) = self.subs.remove(&id) else {
            return;
        };
        if let Some(list) = self.by_conn.get_mut(&sub.conn) {
            list.retain(|x| *x != id);
            if list.is_empty() {
                self.by_conn.remove(&sub.conn);
            }
        }
        match &sub.world {
            Some(w) => {
                if let Some(state) = self.worlds.get_mut(w) {
                    for ch in sub.channels.channels() {
                        let i = ch.index();
                        state.counts[i] = state.counts[i].saturating_sub(1);
                        if sub.transport == Transport::Sse {
                            state.sse[i] = state.sse[i].saturating_sub(1);
                        }
                    }
                    if sub.transport == Transport::WsApi {
                        state.ws_api = state.ws_api.saturating_sub(1);
                    }
                    state.subs.retain(|x| *x != id);
                }
                self.gc_world(w);
            }
            None => {
                for ch in sub.channels.channels() {
                    let i = ch.index();
                    self.wildcard_counts[i] = self.wildcard_counts[i].saturating_sub(1);
                }
                self.wildcard.retain(|x| *x != id);
            }
        }
    }

    /// Forget a world that never had an event and has no subscribers and no link, so names
    /// a client merely asked about do not accumulate. A world with events is kept: dropping
    /// its numbering would let an old `Last-Event-ID` of this epoch resume wrongly.
    fn gc_world(&mut self, world: &str) {
        if self.worlds.get(world).is_some_and(WorldState::is_idle) {
            self.worlds.remove(world);
        }
    }

    fn deliveries(
        &self,
        conns: [Vec<ConnId>; 3],
        mut encode: impl FnMut(Transport) -> Rc<[u8]>,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        for (t, mut list) in TRANSPORTS.into_iter().zip(conns) {
            if list.is_empty() {
                continue;
            }
            list.sort();
            list.dedup();
            out.push(Delivery {
                transport: t,
                conns: list,
                bytes: encode(t),
            });
        }
        out
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Sse => 0,
        Transport::WsApi => 1,
        Transport::WsEvents => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const W: &str = "fvtt_0123456789abcdef";

    fn c(key: usize) -> ConnId {
        ConnId { key, gen: 1 }
    }

    fn hub() -> Hub {
        Hub::with_epoch(DEFAULT_RING_EVENTS, DEFAULT_RING_BYTES, "ep".to_owned())
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn json_of(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    /// A serialized chat message as the module sends it (module-protocol.md §4.2, §3.5).
    fn chat_msg(
        id: &str,
        alias: &str,
        actor: Option<&str>,
        author: &str,
        whisper: &[&str],
    ) -> Value {
        json!({
            "id": id, "uuid": format!("ChatMessage.{id}"), "content": "Hello",
            "speaker": {"scene": null, "actor": actor, "token": null, "alias": alias},
            "timestamp": 1782956929673u64, "whisper": whisper, "type": "base",
            "author": {"id": author, "name": format!("name-{author}")},
            "flavor": "", "isRoll": false, "rolls": [], "flags": {}
        })
    }

    fn roll_data(user: &str) -> Value {
        json!({
            "id": "m1", "messageId": "m1", "user": {"id": user, "name": "Gamemaster"},
            "speaker": {"alias": "Gamemaster"}, "flavor": "", "rollTotal": 7, "formula": "1d20",
            "isCritical": false, "isFumble": false,
            "dice": [{"faces": 20, "results": [{"result": 7, "active": true}]}],
            "timestamp": 1782956918692u64
        })
    }

    /// An event built as `publish` builds it, for filter tests.
    fn ev(module_type: &str, data: Value) -> Event {
        let channel = Channel::from_module_type(module_type).unwrap();
        let (name, keys, payload) = describe(channel, data).unwrap();
        Event {
            world: W.to_owned(),
            seq: 1,
            channel,
            name,
            timestamp_ms: 5,
            data_json: payload.to_string().into_boxed_str(),
            keys,
            sse: OnceCell::new(),
            ws_api: OnceCell::new(),
            ws_events: OnceCell::new(),
        }
    }

    fn upd(world: &str, channel: Channel, count: u32) -> CountUpdate {
        CountUpdate {
            world: world.to_owned(),
            channel,
            count,
        }
    }

    #[test]
    fn channel_names_round_trip() {
        for ch in Channel::ALL {
            assert_eq!(Channel::from_name(ch.as_str()), Some(ch));
            assert_eq!(Channel::from_module_type(ch.module_type()), Some(ch));
        }
        assert_eq!(Channel::from_name("chat"), None);
        assert_eq!(Channel::from_module_type("chat-events"), None);
        assert_eq!(Channel::from_module_type("entity-result"), None);
    }

    #[test]
    #[rustfmt::skip]
    fn naming_and_payload_for_every_channel() {
        let msg = chat_msg("c1", "Bob", Some("a1"), "u1", &[]);
        let combatant = json!({"id": "k1", "name": "Goblin", "initiative": 12, "defeated": false, "uuid": "Scene.s.Token.t"});
        let start = json!({"eventType": "start", "encounterId": "e1", "round": 1, "turn": 0, "started": true, "combatants": [combatant]});
        let turn = json!({"eventType": "turn", "encounterId": "e1", "round": 1, "turn": 1, "started": true, "combatants": []});
        let add = json!({"eventType": "combatant-add", "encounterId": "e1", "combatant": combatant});
        let end = json!({"eventType": "end", "encounterId": "e1", "round": 3});
        let hook = json!({"hook": "createActor", "args": [{"_id": "a1", "name": "x"}, {}, "uid"]});
        let pause = json!({"hook": "pauseGame", "args": [true]});
        let a_upd = json!({"actorUuid": "Actor.a1", "eventType": "update", "changes": {"system": {"hp": 3}}});
        let a_rem = json!({"actorUuid": "Actor.a1", "eventType": "item-remove", "itemId": "i1", "itemName": "Sword"});
        let s_tok = json!({"sceneId": "s1", "eventType": "token-update", "tokenId": "t1", "changes": {"x": 100}});
        let s_act = json!({"sceneId": "s1", "eventType": "scene-activate", "name": "Cave"});
        // (module type, module `data`, event name, delivered payload)
        let cases: Vec<(&str, Value, &str, Value)> = vec![
            ("chat-event",   json!({"eventType": "create", "data": msg}),         "chat-create",          msg.clone()),
            ("chat-event",   json!({"eventType": "update", "data": msg}),         "chat-update",          msg.clone()),
            ("chat-event",   json!({"eventType": "delete", "data": {"id": "c1"}}), "chat-delete",         json!({"id": "c1"})),
            ("roll-data",    roll_data("u1"),                                     "roll",                 roll_data("u1")),
            ("hook-event",   hook.clone(),                                        "createActor",          hook.clone()),
            ("hook-event",   pause.clone(),                                       "pauseGame",            pause.clone()),
            ("combat-event", start.clone(),                                       "combat-start",         start.clone()),
            ("combat-event", turn.clone(),                                        "combat-turn",          turn.clone()),
            ("combat-event", add.clone(),                                         "combat-combatant-add", add.clone()),
            ("combat-event", end.clone(),                                         "combat-end",           end.clone()),
            ("actor-event",  a_upd.clone(),                                       "actor-update",         a_upd.clone()),
            ("actor-event",  a_rem.clone(),                                       "actor-item-remove",    a_rem.clone()),
            ("scene-event",  s_tok.clone(),                                       "scene-token-update",   s_tok.clone()),
            ("scene-event",  s_act.clone(),                                       "scene-scene-activate", s_act.clone()),
        ];
        for (i, (mtype, data, name, payload)) in cases.into_iter().enumerate() {
            let mut h = hub();
            h.subscribe_events(c(1), None, EventSelection::all(), None);
            let out = h.publish(W, mtype, data, 1000 + i as u64);
            assert_eq!(out.len(), 1, "{name}");
            let got = json_of(&out[0].bytes);
            assert_eq!(got["type"], name, "{mtype}");
            assert_eq!(got["data"], payload, "{name}");
            assert_eq!(got["clientId"], W);
            assert_eq!(got["seq"], 1);
            assert_eq!(got["timestamp"], 1000 + i as u64);
        }
    }

    #[test]
    fn unnameable_and_foreign_messages_are_dropped_unsequenced() {
        let mut h = hub();
        h.subscribe_events(c(1), None, EventSelection::all(), None);
        let cases = [
            ("chat-event", json!({"data": {"id": "c1"}})),
            ("combat-event", json!({"encounterId": "e1"})),
            ("actor-event", json!({"actorUuid": "A", "eventType": 3})),
            ("scene-event", json!("not an object")),
            ("hook-event", json!({"args": []})),
            ("entity-result", json!({"eventType": "create"})),
            ("player-list", json!({})),
        ];
        for (mtype, data) in cases {
            assert!(h.publish(W, mtype, data, 1).is_empty(), "{mtype}");
        }
        assert_eq!(h.latest_seq(W), 0);
    }

    #[test]
    fn wire_forms() {
        let mut h = hub();
        h.subscribe_sse(c(1), W, Channel::Combat, Filters::default(), None);
        h.subscribe_ws_api(c(2), W, Channel::Combat, Filters::default(), None)
            .unwrap();
        h.subscribe_events(
            c(3),
            Some(W),
            EventSelection::none().with(Channel::Combat),
            None,
        );
        let out = h.publish(
            W,
            "combat-event",
            json!({"eventType": "end", "encounterId": "e\"1", "round": 2}),
            77,
        );
        let forms: Vec<(Transport, String)> =
            out.iter().map(|d| (d.transport, text(&d.bytes))).collect();
        let data = r#"{"encounterId":"e\"1","eventType":"end","round":2}"#;
        assert_eq!(
            forms,
            vec![
                (
                    Transport::Sse,
                    format!("id: ep-1\nevent: combat-end\ndata: {data}\n\n")
                ),
                (
                    Transport::WsApi,
                    format!(
                        r#"{{"type":"combat-event","event":"combat-end","seq":1,"data":{data}}}"#
                    )
                ),
                (
                    Transport::WsEvents,
                    format!(
                        r#"{{"type":"combat-end","clientId":"{W}","seq":1,"timestamp":77,"data":{data}}}"#
                    )
                ),
            ]
        );
        assert_eq!(out[0].conns, vec![c(1)]);
        assert_eq!(out[1].conns, vec![c(2)]);
        assert_eq!(out[2].conns, vec![c(3)]);
    }

    #[test]
    #[rustfmt::skip]
    fn ws_api_labels_per_channel() {
        let cases = [
            ("chat-event",  json!({"eventType": "delete", "data": {"id": "x"}}),               r#"{"type":"chat-event","event":"chat-delete","seq":1,"data":{"id":"x"}}"#),
            ("roll-data",   json!({"user": {"id": "u"}}),                                      r#"{"type":"roll-event","seq":1,"data":{"user":{"id":"u"}}}"#),
            ("hook-event",  json!({"hook": "canvasReady", "args": []}),                        r#"{"type":"hook-event","hook":"canvasReady","seq":1,"data":{"args":[],"hook":"canvasReady"}}"#),
            ("actor-event", json!({"eventType": "update", "actorUuid": "A"}),                  r#"{"type":"actor-event","event":"actor-update","seq":1,"data":{"actorUuid":"A","eventType":"update"}}"#),
            ("scene-event", json!({"eventType": "wall-delete", "sceneId": "S", "wallId": "w"}), r#"{"type":"scene-event","event":"scene-wall-delete","seq":1,"data":{"eventType":"wall-delete","sceneId":"S","wallId":"w"}}"#),
        ];
        for (mtype, data, want) in cases {
            let e = ev(mtype, data);
            assert_eq!(text(&e.encoded(Transport::WsApi, "ep")), want);
        }
    }

    #[test]
    #[rustfmt::skip]
    fn query_filters() {
        let bob = json!({"eventType": "create", "data": chat_msg("c1", "Bob", Some("actorB"), "u1", &[])});
        let to_u2 = json!({"eventType": "create", "data": chat_msg("c2", "Ann", None, "u1", &["u2"])});
        let delete = json!({"eventType": "delete", "data": {"id": "c9"}});
        let upd_actor = json!({"hook": "updateActor", "args": []});
        let turn = json!({"eventType": "turn", "encounterId": "e1"});
        let a1 = json!({"eventType": "update", "actorUuid": "Actor.a1"});
        let s1 = json!({"eventType": "token-create", "sceneId": "s1"});
        let no_scene = json!({"eventType": "token-create"});
        let roll = roll_data("u1");
        use Channel::*;
        type Case<'a> = (Channel, &'a [(&'a str, &'a str)], &'a str, &'a Value, bool);
        let cases: Vec<Case> = vec![
            (Chat,   &[],                                   "chat-event",   &bob,    true),
            (Chat,   &[("speaker", "Bob")],                 "chat-event",   &bob,    true),
            (Chat,   &[("speaker", "actorB")],              "chat-event",   &bob,    true),
            (Chat,   &[("speaker", "Ann")],                 "chat-event",   &bob,    false),
            (Chat,   &[("speaker", "")],                    "chat-event",   &bob,    true),
            (Chat,   &[("type", "base")],                   "chat-event",   &bob,    true),
            (Chat,   &[("type", "0")],                      "chat-event",   &bob,    false),
            (Chat,   &[("whisperOnly", "true")],            "chat-event",   &bob,    false),
            (Chat,   &[("whisperOnly", "false")],           "chat-event",   &bob,    true),
            (Chat,   &[("whisperOnly", "true")],            "chat-event",   &to_u2,  true),
            (Chat,   &[("userId", "u3")],                   "chat-event",   &bob,    true),
            (Chat,   &[("userId", "u3")],                   "chat-event",   &to_u2,  false),
            (Chat,   &[("userId", "u2")],                   "chat-event",   &to_u2,  true),
            (Chat,   &[("userId", "u1")],                   "chat-event",   &to_u2,  true),
            (Chat,   &[("userId", "name-u1")],              "chat-event",   &to_u2,  true),
            (Chat,   &[("speaker", "Zed"), ("userId", "u3")], "chat-event", &delete, true),
            (Chat,   &[("sceneId", "S")],                   "chat-event",   &bob,    true),
            (Roll,   &[("userId", "u1")],                   "roll-data",    &roll,            true),
            (Roll,   &[("userId", "Gamemaster")],           "roll-data",    &roll,            true),
            (Roll,   &[("userId", "u2")],                   "roll-data",    &roll,            false),
            (Hooks,  &[("hooks", "createActor, updateActor")], "hook-event", &upd_actor, true),
            (Hooks,  &[("hooks", "createActor")],           "hook-event",   &upd_actor, false),
            (Hooks,  &[("hooks", " , ")],                   "hook-event",   &upd_actor, true),
            (Combat, &[("encounterId", "e1")],              "combat-event", &turn,   true),
            (Combat, &[("encounterId", "e2")],              "combat-event", &turn,   false),
            (Actor,  &[("actorUuid", "Actor.a1")],          "actor-event",  &a1,     true),
            (Actor,  &[("actorUuid", "Actor.a2")],          "actor-event",  &a1,     false),
            (Scene,  &[("sceneId", "s1")],                  "scene-event",  &s1,     true),
            (Scene,  &[("sceneId", "s2")],                  "scene-event",  &s1,     false),
            (Scene,  &[("sceneId", "s2")],                  "scene-event",  &no_scene, false),
        ];
        for (ch, pairs, mtype, data, want) in cases {
            let f = Filters::from_query(ch, pairs.iter().copied());
            assert_eq!(f.matches(&ev(mtype, data.clone())), want, "{ch:?} {pairs:?} {data}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn json_filters() {
        let w = json!({"eventType": "update", "data": chat_msg("c2", "Ann", None, "u1", &["u2"])});
        let del_tok = json!({"hook": "deleteToken"});
        use Channel::*;
        let cases: Vec<(Channel, Value, &str, Value, bool)> = vec![
            (Chat,   json!({"speaker": "Ann", "whisperOnly": true}),      "chat-event",   w.clone(), true),
            (Chat,   json!({"userId": "u3"}),                             "chat-event",   w.clone(), false),
            (Chat,   json!({"type": "base", "whisperOnly": "true"}),      "chat-event",   w.clone(), true),
            (Chat,   json!({"type": 1}),                                  "chat-event",   w.clone(), false),
            (Hooks,  json!({"hookFilters": ["deleteToken"]}),             "hook-event",   del_tok.clone(), true),
            (Hooks,  json!({"hookFilters": ["createToken"]}),             "hook-event",   del_tok.clone(), false),
            (Hooks,  json!({"hooks": "createToken,deleteToken"}),         "hook-event",   del_tok.clone(), true),
            (Combat, json!({"encounterId": "e2"}),                        "combat-event", json!({"eventType": "end", "encounterId": "e1"}), false),
            (Actor,  json!({"actorUuid": "A"}),                           "actor-event",  json!({"eventType": "effect-add", "actorUuid": "A"}), true),
            (Scene,  json!({"sceneId": null}),                            "scene-event",  json!({"eventType": "light-delete", "sceneId": "S"}), true),
            (Roll,   json!({"userId": "u9", "speaker": 5}),               "roll-data",    roll_data("u1"), false),
        ];
        for (ch, filters, mtype, data, want) in cases {
            let f = Filters::from_json(ch, Some(&filters)).unwrap();
            assert_eq!(f.matches(&ev(mtype, data)), want, "{ch:?} {filters}");
        }
        let errors: Vec<(Channel, Value)> = vec![
            (Chat,  json!("speaker=Bob")),
            (Chat,  json!({"speaker": 3})),
            (Chat,  json!({"type": [1]})),
            (Chat,  json!({"whisperOnly": 1})),
            (Roll,  json!({"userId": {"id": "u"}})),
            (Hooks, json!({"hookFilters": [1]})),
            (Hooks, json!({"hookFilters": {}})),
            (Actor, json!({"actorUuid": false})),
        ];
        for (ch, filters) in errors {
            assert!(Filters::from_json(ch, Some(&filters)).is_err(), "{filters}");
        }
        assert_eq!(Filters::from_json(Chat, None), Ok(Filters::default()));
    }

    #[test]
    fn bound_user_scopes_and_overrides() {
        let whisper =
            json!({"eventType": "create", "data": chat_msg("c2", "Ann", None, "u1", &["u2"])});
        let asked = Filters::from_query(Channel::Chat, [("userId", "u2")]);
        assert!(asked.matches(&ev("chat-event", whisper.clone())));
        // The key's bound user replaces what the caller asked for.
        let bound = asked.clone().bind_user(Some("u3"));
        assert!(!bound.matches(&ev("chat-event", whisper.clone())));
        assert_eq!(asked.clone().bind_user(None), asked);
        assert_eq!(asked.clone().bind_user(Some("")), asked);
        // Also through the hub, on every transport.
        let mut h = hub();
        h.subscribe_sse(c(1), W, Channel::Roll, Filters::default(), Some("u2"));
        h.subscribe_events(c(2), Some(W), EventSelection::all(), Some("u2"));
        h.subscribe_sse(c(3), W, Channel::Roll, Filters::default(), None);
        let out = h.publish(W, "roll-data", roll_data("u1"), 1);
        let conns: Vec<ConnId> = out.iter().flat_map(|d| d.conns.clone()).collect();
        assert_eq!(conns, vec![c(3)]);
    }

    #[test]
    fn counts_across_transports_report_only_changes() {
        let mut h = hub();
        let (sse, u) = h.subscribe_sse(c(1), W, Channel::Chat, Filters::default(), None);
        assert_eq!(u, vec![upd(W, Channel::Chat, 1)]);
        let (api, u) = h
            .subscribe_ws_api(c(2), W, Channel::Chat, Filters::default(), None)
            .unwrap();
        assert_eq!(u, vec![upd(W, Channel::Chat, 2)]);
        let (_, u) = h.subscribe_events(
            c(3),
            Some(W),
            EventSelection::none()
                .with(Channel::Chat)
                .with(Channel::Roll),
            None,
        );
        assert_eq!(u, vec![upd(W, Channel::Chat, 3), upd(W, Channel::Roll, 1)]);
        // Replacing the /ws/events selection reports only the net change.
        let (ev_sub, u) = h.subscribe_events(
            c(3),
            Some(W),
            EventSelection::none()
                .with(Channel::Chat)
                .with(Channel::Scene),
            None,
        );
        assert_eq!(u, vec![upd(W, Channel::Roll, 0), upd(W, Channel::Scene, 1)]);
        // Status-only selection counts for no channel.
        let (_, u) = h.subscribe_events(
            c(4),
            Some(W),
            EventSelection::parse(Some(&json!(["world-connected"]))).unwrap(),
            None,
        );
        assert!(u.is_empty());
        assert_eq!(
            h.counts_for_world(W),
            vec![upd(W, Channel::Chat, 3), upd(W, Channel::Scene, 1)]
        );
        assert_eq!(h.sse_count(W, Channel::Chat), 1);
        assert_eq!(h.ws_api_count(W), 1);
        assert_eq!(h.unsubscribe(sse), vec![upd(W, Channel::Chat, 2)]);
        assert_eq!(h.sse_count(W, Channel::Chat), 0);
        assert!(
            h.unsubscribe(sse).is_empty(),
            "a second unsubscribe changes nothing"
        );
        assert_eq!(h.unsubscribe(api), vec![upd(W, Channel::Chat, 1)]);
        assert_eq!(h.ws_api_count(W), 0);
        assert_eq!(
            h.unsubscribe(ev_sub),
            vec![upd(W, Channel::Chat, 0), upd(W, Channel::Scene, 0)]
        );
        assert!(h.counts_for_world(W).is_empty());
        assert!(h.counts_for_world("other").is_empty());
    }

    #[test]
    fn ws_api_duplicates_and_unsubscribe() {
        let mut h = hub();
        h.subscribe_ws_api(c(1), W, Channel::Hooks, Filters::default(), None)
            .unwrap();
        let dup = h.subscribe_ws_api(c(1), W, Channel::Hooks, Filters::default(), None);
        assert_eq!(dup.map(|_| ()), Err(SubscribeError::Duplicate));
        // Another channel, or the same channel on another socket, is fine.
        h.subscribe_ws_api(c(1), W, Channel::Actor, Filters::default(), None)
            .unwrap();
        h.subscribe_ws_api(c(2), W, Channel::Hooks, Filters::default(), None)
            .unwrap();
        assert_eq!(h.ws_api_count(W), 3);
        let (n, u) = h.unsubscribe_ws_api(c(1), Some(Channel::Scene));
        assert_eq!((n, u), (0, vec![]));
        let (n, u) = h.unsubscribe_ws_api(c(1), Some(Channel::Hooks));
        assert_eq!((n, u), (1, vec![upd(W, Channel::Hooks, 1)]));
        h.subscribe_ws_api(c(1), W, Channel::Hooks, Filters::default(), None)
            .unwrap();
        let (n, u) = h.unsubscribe_ws_api(c(1), None);
        assert_eq!(n, 2);
        assert_eq!(
            u,
            vec![upd(W, Channel::Hooks, 1), upd(W, Channel::Actor, 0)]
        );
    }

    #[test]
    fn drop_conn_removes_everything_of_that_conn() {
        let mut h = hub();
        h.subscribe_ws_api(c(1), W, Channel::Chat, Filters::default(), None)
            .unwrap();
        h.subscribe_ws_api(c(1), W, Channel::Roll, Filters::default(), None)
            .unwrap();
        h.subscribe_sse(c(2), W, Channel::Chat, Filters::default(), None);
        assert_eq!(
            h.drop_conn(c(1)),
            vec![upd(W, Channel::Chat, 1), upd(W, Channel::Roll, 0)]
        );
        assert!(h.drop_conn(c(1)).is_empty());
        let out = h.publish(W, "roll-data", roll_data("u"), 1);
        assert!(out.is_empty());
        let out = h.publish(
            W,
            "chat-event",
            json!({"eventType": "delete", "data": {"id": "x"}}),
            1,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].conns, vec![c(2)]);
        // A stale generation of the same slab key is another connection.
        let stale = ConnId { key: 2, gen: 0 };
        assert!(h.drop_conn(stale).is_empty());
        assert_eq!(h.drop_conn(c(2)), vec![upd(W, Channel::Chat, 0)]);
    }

    #[test]
    fn wildcard_counts_for_connected_worlds() {
        let mut h = hub();
        h.world_status("A", true, &json!({}), 1);
        let (sub, u) = h.subscribe_events(
            c(1),
            None,
            EventSelection::none().with(Channel::Hooks),
            None,
        );
        assert_eq!(u, vec![upd("A", Channel::Hooks, 1)]);
        // B was not connected: it learns the count when it connects.
        assert_eq!(h.counts_for_world("B"), vec![upd("B", Channel::Hooks, 1)]);
        h.world_status("B", true, &json!({}), 2);
        let (_, u) = h.subscribe_sse(c(2), "B", Channel::Hooks, Filters::default(), None);
        assert_eq!(u, vec![upd("B", Channel::Hooks, 2)]);
        assert_eq!(
            h.unsubscribe(sub),
            vec![upd("A", Channel::Hooks, 0), upd("B", Channel::Hooks, 1)]
        );
        // The wildcard sees every world's events.
        h.subscribe_events(c(3), None, EventSelection::all(), None);
        for w in ["A", "B", "C"] {
            let out = h.publish(w, "hook-event", json!({"hook": "pauseGame"}), 1);
            assert!(out.iter().any(|d| d.conns == vec![c(3)]), "{w}");
        }
    }

    #[test]
    fn subscribers_share_one_encoding() {
        let mut h = hub();
        h.subscribe_sse(c(1), W, Channel::Scene, Filters::default(), None);
        let (s2, _) = h.subscribe_sse(c(2), W, Channel::Scene, Filters::default(), None);
        h.subscribe_sse(
            c(3),
            W,
            Channel::Scene,
            Filters::from_query(Channel::Scene, [("sceneId", "other")]),
            None,
        );
        let out = h.publish(
            W,
            "scene-event",
            json!({"eventType": "token-delete", "sceneId": "s1", "tokenId": "t"}),
            1,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].conns, vec![c(1), c(2)]);
        // A resume gets the very same bytes the live subscribers got.
        match h.replay(s2, &ResumePoint::Since(0)) {
            Replay::Events(evs) => {
                assert_eq!(evs.len(), 1);
                assert!(Rc::ptr_eq(&evs[0], &out[0].bytes));
            }
            other => panic!("{other:?}"),
        }
        // And two events never share bytes.
        let out2 = h.publish(
            W,
            "scene-event",
            json!({"eventType": "token-delete", "sceneId": "s1", "tokenId": "t"}),
            1,
        );
        assert!(!Rc::ptr_eq(&out[0].bytes, &out2[0].bytes));
    }

    fn replay_seqs(h: &Hub, sub: SubId, at: ResumePoint) -> Result<Vec<u64>, String> {
        match h.replay(sub, &at) {
            Replay::Events(evs) => Ok(evs
                .iter()
                .map(|b| json_of(b)["seq"].as_u64().unwrap())
                .collect()),
            Replay::Reset(b) => Err(text(&b)),
            Replay::Unavailable => Err("unavailable".to_owned()),
        }
    }

    #[test]
    fn ring_resume_and_resets() {
        let mut h = Hub::with_epoch(3, DEFAULT_RING_BYTES, "ep".to_owned());
        let (api, _) = h
            .subscribe_ws_api(
                c(1),
                W,
                Channel::Hooks,
                Filters::from_query(Channel::Hooks, [("hooks", "a,b")]),
                None,
            )
            .unwrap();
        for hook in ["a", "b", "x", "a", "b"] {
            h.publish(W, "hook-event", json!({"hook": hook}), 1);
        }
        assert_eq!(h.latest_seq(W), 5);
        let reset = r#"{"type":"reset","channel":"hooks","seq":5}"#.to_owned();
        let cases: Vec<(ResumePoint, Result<Vec<u64>, String>)> = vec![
            (ResumePoint::Since(5), Ok(vec![])),
            (ResumePoint::Since(4), Ok(vec![5])),
            (ResumePoint::Since(3), Ok(vec![4, 5])),
            (ResumePoint::Since(2), Ok(vec![4, 5])), // seq 3 is hook "x": filtered out
            (ResumePoint::Since(1), Err(reset.clone())), // seq 2 was evicted
            (ResumePoint::Since(0), Err(reset.clone())),
            (ResumePoint::Since(6), Err(reset.clone())),
            (ResumePoint::Invalid, Err(reset.clone())),
        ];
        for (at, want) in cases {
            assert_eq!(replay_seqs(&h, api, at.clone()), want, "{at:?}");
        }
    }

    #[test]
    fn sse_resume_by_last_event_id() {
        let mut h = hub();
        let (s, _) = h.subscribe_sse(c(1), W, Channel::Actor, Filters::default(), None);
        h.publish(
            W,
            "actor-event",
            json!({"eventType": "update", "actorUuid": "A"}),
            1,
        );
        h.publish(
            W,
            "actor-event",
            json!({"eventType": "update", "actorUuid": "B"}),
            2,
        );
        match h.replay(s, &ResumePoint::from_last_event_id("ep-1")) {
            Replay::Events(evs) => {
                assert_eq!(evs.len(), 1);
                assert!(text(&evs[0]).starts_with("id: ep-2\nevent: actor-update\ndata: "));
            }
            other => panic!("{other:?}"),
        }
        let reset =
            "id: ep-2\nevent: reset\ndata: {\"clientId\":\"fvtt_0123456789abcdef\",\"seq\":2}\n\n";
        for id in ["old-1", "ep-9", "garbage", "ep-", "ep-+1", ""] {
            match h.replay(s, &ResumePoint::from_last_event_id(id)) {
                Replay::Reset(b) => assert_eq!(text(&b), reset, "{id}"),
                other => panic!("{id}: {other:?}"),
            }
        }
        // A fresh world (no events yet) resumes from its start without a reset.
        let (s2, _) = h.subscribe_sse(c(2), "new", Channel::Actor, Filters::default(), None);
        assert!(
            matches!(h.replay(s2, &ResumePoint::from_last_event_id("ep-0")), Replay::Events(v) if v.is_empty())
        );
        assert!(matches!(
            h.replay(SubId(999), &ResumePoint::Since(0)),
            Replay::Unavailable
        ));
        let (wild, _) = h.subscribe_events(c(3), None, EventSelection::all(), None);
        assert!(matches!(
            h.replay(wild, &ResumePoint::Since(0)),
            Replay::Unavailable
        ));
    }

    #[test]
    fn ring_byte_budget_evicts() {
        let mut h = Hub::with_epoch(100, 200, "ep".to_owned());
        let (s, _) = h
            .subscribe_ws_api(c(1), W, Channel::Hooks, Filters::default(), None)
            .unwrap();
        let small = |n: u64| json!({"hook": "h", "args": [n]});
        for n in 0..3 {
            h.publish(W, "hook-event", small(n), 1);
        }
        assert_eq!(replay_seqs(&h, s, ResumePoint::Since(0)), Ok(vec![1, 2, 3]));
        // One event bigger than the whole budget empties the ring: no resume across it.
        h.publish(
            W,
            "hook-event",
            json!({"hook": "h", "args": ["x".repeat(300)]}),
            1,
        );
        assert!(replay_seqs(&h, s, ResumePoint::Since(3)).is_err());
        h.publish(W, "hook-event", small(9), 1);
        assert_eq!(replay_seqs(&h, s, ResumePoint::Since(4)), Ok(vec![5]));
        assert!(replay_seqs(&h, s, ResumePoint::Since(3)).is_err());
        // Many small ones keep the newest within the budget.
        for n in 0..50 {
            h.publish(W, "hook-event", small(n), 1);
        }
        let kept = replay_seqs(&h, s, ResumePoint::Since(54)).unwrap();
        assert_eq!(kept, vec![55]);
        let state = h.worlds.get(W).unwrap();
        assert!(state.ring_bytes <= 200 && state.ring.len() > 1);
        assert_eq!(state.ring.back().map(|e| e.seq), Some(55));
    }

    #[test]
    fn world_status_notices() {
        let mut h = hub();
        h.subscribe_sse(c(1), W, Channel::Chat, Filters::default(), None);
        h.subscribe_sse(c(2), "other", Channel::Chat, Filters::default(), None);
        h.subscribe_ws_api(c(3), W, Channel::Chat, Filters::default(), None)
            .unwrap();
        h.subscribe_events(c(4), None, EventSelection::all(), None);
        h.subscribe_events(
            c(5),
            Some(W),
            EventSelection::parse(Some(&json!(["world-disconnected"]))).unwrap(),
            None,
        );
        h.subscribe_events(c(6), Some("other"), EventSelection::all(), None);
        let meta = json!({"worldTitle": "Test"});

        let out = h.world_status(W, true, &meta, 10);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].transport, Transport::WsEvents);
        assert_eq!(out[0].conns, vec![c(4)]);
        assert_eq!(
            text(&out[0].bytes),
            format!(
                r#"{{"type":"world-connected","clientId":"{W}","timestamp":10,"data":{{"worldTitle":"Test"}}}}"#
            )
        );
        assert!(
            h.world_status(W, true, &meta, 11).is_empty(),
            "repeat is a no-op"
        );

        let out = h.world_status(W, false, &json!(null), 12);
        let got: Vec<(Transport, Vec<ConnId>, String)> = out
            .iter()
            .map(|d| (d.transport, d.conns.clone(), text(&d.bytes)))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Transport::Sse,
                    vec![c(1)],
                    format!("event: world-disconnected\ndata: {{\"clientId\":\"{W}\"}}\n\n")
                ),
                (
                    Transport::WsEvents,
                    vec![c(4), c(5)],
                    format!(
                        r#"{{"type":"world-disconnected","clientId":"{W}","timestamp":12,"data":null}}"#
                    )
                ),
            ]
        );
        assert!(h.world_status(W, false, &json!(null), 13).is_empty());
        assert!(h.world_status("never", false, &json!(null), 13).is_empty());
    }

    #[test]
    fn idle_worlds_are_forgotten_but_numbered_ones_kept() {
        let mut h = hub();
        let (s, _) = h.subscribe_sse(c(1), "ghost", Channel::Chat, Filters::default(), None);
        h.unsubscribe(s);
        assert!(h.worlds.is_empty());
        h.world_status("ghost", true, &json!({}), 1);
        h.world_status("ghost", false, &json!({}), 2);
        assert!(h.worlds.is_empty());
        h.publish(W, "hook-event", json!({"hook": "h"}), 1);
        let (s, _) = h
            .subscribe_ws_api(c(1), W, Channel::Hooks, Filters::default(), None)
            .unwrap();
        assert_eq!(replay_seqs(&h, s, ResumePoint::Since(0)), Ok(vec![1]));
        h.clear_ring(W);
        assert!(replay_seqs(&h, s, ResumePoint::Since(0)).is_err());
        h.unsubscribe(s);
        assert_eq!(h.latest_seq(W), 1);
    }

    #[test]
    fn event_selection_parse() {
        let all = EventSelection::all();
        let cases: Vec<(Option<Value>, Result<EventSelection, ()>)> = vec![
            (None, Ok(all)),
            (Some(json!(null)), Ok(all)),
            (Some(json!(["all"])), Ok(all)),
            (Some(json!([])), Ok(EventSelection::none())),
            (
                Some(json!(["hooks", "scene-events"])),
                Ok(EventSelection::none()
                    .with(Channel::Hooks)
                    .with(Channel::Scene)),
            ),
            (
                Some(json!(["module-notify"])),
                Ok(EventSelection {
                    module_notify: true,
                    ..EventSelection::none()
                }),
            ),
            (
                Some(json!(["world-connected", "chat-events"])),
                Ok(EventSelection {
                    world_connected: true,
                    ..EventSelection::none().with(Channel::Chat)
                }),
            ),
            (Some(json!(["chat"])), Err(())),
            (Some(json!([1])), Err(())),
            (Some(json!("all")), Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(
                EventSelection::parse(input.as_ref()).map_err(|_| ()),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    #[rustfmt::skip]
    fn resume_point_parse() {
        let at = |epoch: &str, seq| ResumePoint::LastEventId { epoch: epoch.into(), seq };
        let cases = [
            ("ab12cd34-17",               at("ab12cd34", 17)),
            (" ep-0 ",                    at("ep", 0)),
            ("ep-99999999999999999999999", ResumePoint::Invalid),
            ("-5",                        ResumePoint::Invalid),
            ("ep-5-6",                    ResumePoint::Invalid),
            ("5",                         ResumePoint::Invalid),
        ];
        for (s, want) in cases {
            assert_eq!(ResumePoint::from_last_event_id(s), want, "{s}");
        }
    }

    #[test]
    fn count_update_message() {
        assert_eq!(
            upd(W, Channel::Combat, 2).module_message(),
            r#"{"type":"event-subscription-update","channel":"combat-events","count":2}"#
        );
        let v = json_of(upd(W, Channel::Hooks, 0).module_message().as_bytes());
        assert_eq!(
            v,
            json!({"type": "event-subscription-update", "channel": "hooks", "count": 0})
        );
    }

    #[test]
    fn epoch_is_random_per_hub() {
        let a = Hub::new(1, 1);
        let b = Hub::new(1, 1);
        assert_eq!(a.epoch().len(), 8);
        assert_ne!(a.epoch(), b.epoch());
    }
}
