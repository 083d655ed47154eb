//! `/ws/api`: the client WebSocket API (relay-protocol.md §4, ws-api.tsv). This file owns the
//! per-socket state (`ApiSocket`), authentication, forwarded requests correlated by the
//! caller's `requestId`, `subscribe`/`unsubscribe`, and the shaping of module replies.
//!
//! ```text
//!  upgrade ─▶ waiting for auth ──auth ok──▶ authenticated ──close──▶ gone
//!   │ (key in x-api-key / Bearer /           │ ping, subscribe, unsubscribe, forwardable types
//!   │  ?token= → checked at once)            └─ key revoked/expired ─▶ close 4002
//!   └─ bad first message / key / world, or no auth within --auth-timeout ─▶ close 4002
//! ```
//!
//! Where we differ from the reference (api-surface.md discrepancies 4, 5, 10, 27-29), each
//! a decision recorded here:
//! - After auth we send `{"type":"auth-success","clientId"}` (what the docs promise) and then
//!   the reference's `connected` welcome (what existing clients wait for) (discrepancy 27).
//! - Every forwarded message is checked against the REST-equivalent scope (the ws-api.tsv
//!   `scope` column), gets `_scopes`, and the key's bound user replaces `userId` (4). The
//!   three types with no scope in the table get the closest HTTP scope: `contents` needs
//!   `structure:read` (the module answers it from its structure router), `add-item` and
//!   `remove-item` need `entity:write` (they would change an actor). `add-item`/`remove-item`
//!   stay forwardable although the module does not answer them today (29): a newer module may.
//! - Subscribe `filters` work (5), a `since` sequence number resumes from the ring, and a
//!   second subscription to the same channel on one socket is refused.
//! - Module replies pass through unchanged except `requestId` (the caller's) and `clientId`,
//!   binary types included (10). The `type` is the module's own (`<t>-result`).
//! - `format` is stripped as in the reference, except for `sheet-screenshot` and
//!   `scene-screenshot`, whose handlers read it (module-protocol.md §3.5: png/jpeg).
//! - Credentials: a connection token is tried first, as in the reference (§4.1). It is the
//!   world's own credential, so it is bound to that world (and its IP allow-list applies) and
//!   holds every scope there; then the admin key; then a scoped API key. A `clientId` the key
//!   is not bound to is refused ("API key does not match the specified clientId") rather
//!   than silently replaced by the bound one; without a `clientId` the bound one is used.
//! - The credential is re-checked on every message, so a revoked or expired key stops at
//!   once (close 4002 "Invalid API key") instead of living as long as its socket.
//! - Interactive sessions (live sheet streaming, §4.6) are not supported: the three types
//!   answer `interactive-session-error` at once.

use std::net::IpAddr;
use std::time::Instant;

use log::{debug, info};
use serde_json::{json, Map, Value};

use super::events::Subscriber;
use super::hub::{Channel, CountUpdate, Filters, Replay, ResumePoint, Transport};
use super::io::{Action, Bytes, Endpoint};
use super::pending::Caller;
use super::rest::presented_key;
use super::{Relay, Role};
use crate::auth::{ip_allowed, Principal, ALL_SCOPES};
use crate::enc;
use crate::error::WsClose;
use crate::http::request::Head;
use crate::ids::ConnId;

/// The forwardable types (ws-api.tsv rows answered by `<type>-result`; the reference's
/// `PendingRequestTypes`) with the table's `scope` column, in table order. They are also the
/// welcome's `supportedTypes`.
const FORWARDABLE: &[(&str, &str)] = &[
    ("ability-check", "dnd5e"),
    ("ability-save", "dnd5e"),
    ("add-effect", "effects:write"),
    ("add-item", ""),
    ("add-to-encounter", "encounter:manage"),
    ("attune-item", "dnd5e"),
    ("break-concentration", "dnd5e"),
    ("chat-delete", "chat:write"),
    ("chat-flush", "chat:write"),
    ("chat-messages", "chat:read"),
    ("chat-send", "chat:write"),
    ("concentration-save", "dnd5e"),
    ("contents", ""),
    ("create", "entity:write"),
    ("create-canvas-document", "canvas:write"),
    ("create-folder", "structure:write"),
    ("create-scene", "scene:write"),
    ("create-user", "user:write"),
    ("death-save", "dnd5e"),
    ("decrease", "entity:write"),
    ("delete", "entity:write"),
    ("delete-canvas-document", "canvas:write"),
    ("delete-folder", "structure:write"),
    ("delete-scene", "scene:write"),
    ("delete-user", "user:write"),
    ("download-file", "file:read"),
    ("encounters", "encounter:read"),
    ("end-encounter", "encounter:manage"),
    ("entity", "entity:read"),
    ("equip-item", "dnd5e"),
    ("execute-js", "execute-js"),
    ("file-system", "file:read"),
    ("get-actor-details", "dnd5e"),
    ("get-canvas-documents", "canvas:read"),
    ("get-concentration", "dnd5e"),
    ("get-effects", "effects:read"),
    ("get-folder", "structure:read"),
    ("get-playlists", "playlist:control"),
    ("get-scene", "scene:read"),
    ("get-status-effects", "effects:read"),
    ("get-user", "user:read"),
    ("get-users", "user:read"),
    ("give", "entity:write"),
    ("increase", "entity:write"),
    ("kill", "entity:write"),
    ("last-roll", "roll:read"),
    ("last-round", "encounter:manage"),
    ("last-turn", "encounter:manage"),
    ("long-rest", "dnd5e"),
    ("macro-execute", "macro:execute"),
    ("macros", "macro:list"),
    ("measure-distance", "canvas:read"),
    ("modify-currency", "dnd5e"),
    ("modify-experience", "dnd5e"),
    ("modify-item-charges", "dnd5e"),
    ("move-token", "canvas:write"),
    ("next-round", "encounter:manage"),
    ("next-turn", "encounter:manage"),
    ("play-sound", "playlist:control"),
    ("players", "entity:read"),
    ("playlist-next", "playlist:control"),
    ("playlist-play", "playlist:control"),
    ("playlist-stop", "playlist:control"),
    ("playlist-volume", "playlist:control"),
    ("prepare-spell", "dnd5e"),
    ("remove", "entity:write"),
    ("remove-effect", "effects:write"),
    ("remove-from-encounter", "encounter:manage"),
    ("remove-item", ""),
    ("roll", "roll:execute"),
    ("rolls", "roll:read"),
    ("scene-raw-image", "scene:read"),
    ("scene-screenshot", "scene:read"),
    ("search", "search"),
    ("select", "entity:read"),
    ("selected", "entity:read"),
    ("sheet-screenshot", "sheet:read"),
    ("short-rest", "dnd5e"),
    ("skill-check", "dnd5e"),
    ("start-encounter", "encounter:manage"),
    ("stop-sound", "playlist:control"),
    ("structure", "structure:read"),
    ("switch-scene", "scene:write"),
    ("transfer-currency", "dnd5e"),
    ("update", "entity:write"),
    ("update-canvas-document", "canvas:write"),
    ("update-scene", "scene:write"),
    ("update-user", "user:write"),
    ("upload-file", "file:write"),
    ("use-ability", "dnd5e"),
    ("use-feature", "dnd5e"),
    ("use-item", "dnd5e"),
    ("use-spell", "dnd5e"),
    ("world-info", "world:info"),
];

/// Types whose module handler reads `format` (module-protocol.md §3.5), so it is kept.
const KEEPS_FORMAT: [&str; 2] = ["sheet-screenshot", "scene-screenshot"];

/// The interactive-session types (relay-protocol.md §4.6), answered with an error.
const INTERACTIVE: [&str; 3] = [
    "interactive-session-start",
    "interactive-input",
    "interactive-session-end",
];

const INTERACTIVE_UNSUPPORTED: &str =
    "Interactive sessions are not supported by fvtt-relay (no headless or live sheet streaming)";
const WORLD_GONE: &str = "Foundry client is no longer connected";
const TOO_MANY: &str = "Too many concurrent requests; try again shortly";
const MISSING_REQUEST_ID: &str = "Missing \"requestId\" field for request messages";
const MAX_SUBS: &str = "Maximum event subscriptions reached for this client";

/// The scope a forwardable type needs, or `None` for a type that is not forwardable.
pub(crate) fn required_scope(ws_type: &str) -> Option<&'static str> {
    let (_, scope) = FORWARDABLE.iter().find(|(t, _)| *t == ws_type)?;
    Some(match (*scope, ws_type) {
        // Decisions for the rows without a scope (see the module comment).
        ("", "contents") => "structure:read",
        ("", _) => "entity:write",
        (s, _) => s,
    })
}

/// Why an authentication failed: every case closes 4002 with the reason the reference uses
/// (relay-protocol.md §4.1), since clients may match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFail {
    Timeout,
    InvalidMessage,
    InvalidKey,
    NoClient,
    MultipleClients,
    InvalidClientId,
    ClientMismatch,
    IpNotAllowed,
}

impl AuthFail {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            AuthFail::Timeout => "Authentication timeout",
            AuthFail::InvalidMessage => "Invalid auth message",
            AuthFail::InvalidKey => "Invalid API key",
            AuthFail::NoClient => "No connected Foundry client found",
            AuthFail::MultipleClients => "Multiple clients connected. Please specify clientId.",
            AuthFail::InvalidClientId => "Invalid clientId",
            AuthFail::ClientMismatch => "API key does not match the specified clientId",
            AuthFail::IpNotAllowed => "IP address not allowed",
        }
    }
}

/// What authenticated a socket; kept so the credential can be re-checked on every message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Credential {
    /// The admin key whose hash was current at auth time (a rotation revokes it).
    Admin { hash: String },
    /// A scoped API key, by id.
    Key { id: String },
    /// A world's connection token, by id.
    Token { id: String },
}

/// An authenticated socket's identity.
#[derive(Debug)]
struct ApiAuth {
    /// The world (clientId) every request of this socket goes to.
    world: String,
    cred: Credential,
    scopes: Vec<String>,
    /// The key's bound Foundry user (`scopedUserId`), replacing `userId` everywhere.
    user_id: Option<String>,
}

/// Per-socket state of a `/ws/api` connection, in `Relay::api`. Its subscriptions live in
/// the hub and its in-flight requests in `Relay::pending` (both keyed by its `ConnId`).
#[derive(Debug)]
pub(crate) struct ApiSocket {
    peer: IpAddr,
    /// `?clientId=` of the upgrade; an auth message's `clientId` overrides it.
    query_client: Option<String>,
    /// `None` until the first-message (or upgrade) authentication succeeds.
    auth: Option<ApiAuth>,
}

/// Parse the first message: `{"type":"auth","token":…,"clientId"?}`. Returns the token and
/// the optional clientId (empty counts as absent).
fn parse_auth(text: &str) -> Result<(String, Option<String>), AuthFail> {
    let v: Value = serde_json::from_str(text).map_err(|_| AuthFail::InvalidMessage)?;
    if v.get("type").and_then(Value::as_str) != Some("auth") {
        return Err(AuthFail::InvalidMessage);
    }
    let token = match v.get("token").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => return Err(AuthFail::InvalidMessage),
    };
    let client = match v.get("clientId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(_) => return Err(AuthFail::InvalidMessage),
    };
    Ok((token, client))
}

/// Which world a socket binds to (relay-protocol.md §4.1, the HTTP rule of §2.3): the
/// explicit id if the key may use it, else the key's single bound world, else the only
/// connected world the key may use. The world must be connected.
fn resolve_world(
    explicit: Option<&str>,
    bound: &[String],
    connected: &[String],
) -> Result<String, AuthFail> {
    let id = match explicit.filter(|s| !s.is_empty()) {
        Some(e) if !bound.is_empty() && !bound.iter().any(|b| b == e) => {
            return Err(AuthFail::ClientMismatch)
        }
        Some(e) => e.to_string(),
        None => match bound {
            [only] => only.clone(),
            _ => {
                let mut candidates = connected
                    .iter()
                    .filter(|c| bound.is_empty() || bound.contains(c));
                match (candidates.next(), candidates.next()) {
                    (None, _) => return Err(AuthFail::NoClient),
                    (Some(one), None) => one.clone(),
                    (Some(_), Some(_)) => return Err(AuthFail::MultipleClients),
                }
            }
        },
    };
    if connected.contains(&id) {
        Ok(id)
    } else {
        Err(AuthFail::InvalidClientId)
    }
}

/// The flat module message for a forwarded `/ws/api` request (relay-protocol.md §4.4; the
/// HTTP shape of §2.2 step 6): the caller's fields minus `type`, `requestId`, `clientId`,
/// `_scopes` and (except for the screenshot types) `format`; the bound user as `userId`;
/// then `type`, our `requestId`, `_scopes`, and `data: {}` when absent.
pub(crate) fn module_request(
    ws_type: &str,
    mut fields: Map<String, Value>,
    relay_request_id: &str,
    scopes: &[String],
    bound_user_id: Option<&str>,
) -> Vec<u8> {
    for k in ["type", "requestId", "clientId", "_scopes"] {
        fields.remove(k);
    }
    if !KEEPS_FORMAT.contains(&ws_type) {
        fields.remove("format");
    }
    if let Some(u) = bound_user_id {
        fields.insert("userId".into(), Value::String(u.to_string()));
    }
    fields.insert("type".into(), Value::String(ws_type.to_string()));
    fields.insert(
        "requestId".into(),
        Value::String(relay_request_id.to_string()),
    );
    fields.insert(
        "_scopes".into(),
        Value::Array(scopes.iter().map(|s| Value::String(s.clone())).collect()),
    );
    fields
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    Value::Object(fields).to_string().into_bytes()
}

// ------------------------------------------------------------------ reply rewriting

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `s[i]` opens a string: the index just past its closing quote.
fn skip_string(s: &[u8], mut i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        match s.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// `s[i]` starts a value: the index just past it. Containers are skipped by bracket depth
/// (strings skipped whole); the text was already parsed as JSON by the world link.
fn skip_value(s: &[u8], mut i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => skip_string(s, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match s.get(i)? {
                    b'"' => {
                        i = skip_string(s, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let start = i;
            while s
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// The module's reply with its top-level `requestId` and `clientId` set to ours (and, with
/// `reply_type`, its `type`), every other byte untouched: the reply is spliced, never
/// re-serialized, so a multi-megabyte `download-file` payload is copied once and not parsed
/// into a tree. Missing keys are added before the closing brace. `None` if `text` is not a
/// JSON object.
fn rewrite_reply(
    text: &str,
    request_id: &Value,
    client_id: &str,
    reply_type: Option<&str>,
) -> Option<Vec<u8>> {
    let s = text.as_bytes();
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(s, i + 1);
    // Value spans of the keys we set (every occurrence, should the module repeat one):
    // 0 = requestId, 1 = clientId, 2 = type.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut members = 0usize;
    let close = if s.get(i) == Some(&b'}') {
        i
    } else {
        loop {
            let key_start = i;
            let key_end = skip_string(s, i)?;
            let raw = s.get(key_start + 1..key_end - 1)?;
            let key: std::borrow::Cow<'_, [u8]> = if raw.contains(&b'\\') {
                let decoded: String = serde_json::from_slice(s.get(key_start..key_end)?).ok()?;
                decoded.into_bytes().into()
            } else {
                raw.into()
            };
            i = skip_ws(s, key_end);
            if s.get(i) != Some(&b':') {
                return None;
            }
            let v_start = skip_ws(s, i + 1);
            let v_end = skip_value(s, v_start)?;
            match &*key {
                b"requestId" => spans.push((v_start, v_end, 0)),
                b"clientId" => spans.push((v_start, v_end, 1)),
                b"type" if reply_type.is_some() => spans.push((v_start, v_end, 2)),
                _ => {}
            }
            members += 1;
            i = skip_ws(s, v_end);
            match s.get(i)? {
                b',' => i = skip_ws(s, i + 1),
                b'}' => break i,
                _ => return None,
            }
        }
    };
    if skip_ws(s, close + 1) != s.len() {
        return None;
    }
    let values = [
        request_id.to_string(),
        Value::String(client_id.to_string()).to_string(),
        reply_type
            .map(|t| Value::String(t.to_string()).to_string())
            .unwrap_or_default(),
    ];
    let mut out = Vec::with_capacity(s.len() + values.iter().map(String::len).sum::<usize>() + 48);
    let mut at = 0;
    for &(start, end, which) in &spans {
        out.extend_from_slice(s.get(at..start)?);
        out.extend_from_slice(values.get(which)?.as_bytes());
        at = end;
    }
    out.extend_from_slice(s.get(at..close)?);
    let mut sep = members > 0;
    for (which, key) in ["requestId", "clientId", "type"].iter().enumerate() {
        if which == 2 && reply_type.is_none() {
            continue;
        }
        let present = spans.iter().any(|x| x.2 == which);
        let val = &values[which];
        if !present {
            if sep {
                out.push(b',');
            }
            sep = true;
            out.extend_from_slice(format!("\"{key}\":{val}").as_bytes());
        }
    }
    out.extend_from_slice(s.get(close..)?);
    Some(out)
}

/// `{type:"error", error, requestId?}` (relay-protocol.md §4.3).
fn error_msg(error: &str, request_id: Option<&Value>) -> Value {
    let mut v = json!({"type": "error", "error": error});
    if let Some(r) = request_id {
        v["requestId"] = r.clone();
    }
    v
}

/// `{type:"<t>-result", requestId, clientId, error}`: a forwarded request that failed here.
fn result_error(ws_type: &str, request_id: &Value, world: &str, error: &str) -> Value {
    json!({
        "type": format!("{ws_type}-result"),
        "requestId": request_id,
        "clientId": world,
        "error": error,
    })
}

/// The `connected` welcome (relay-protocol.md §4.2).
fn welcome(world: &str) -> Value {
    let types: Vec<&str> = FORWARDABLE.iter().map(|(t, _)| *t).collect();
    let channels: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "connected",
        "clientId": world,
        "supportedTypes": types,
        "eventChannels": channels,
    })
}

fn invalid_channel(name: &str) -> String {
    let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
    format!(
        "Invalid channel: {}. Supported: {}",
        Value::String(name.to_string()),
        names.join(", ")
    )
}

/// A `since` value: a non-negative integer sequence number (absent or `null`: no resume).
fn parse_since(v: Option<&Value>) -> Result<Option<u64>, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or("'since' must be a non-negative integer sequence number"),
    }
}

impl Relay {
    /// A `/ws/api` upgrade: always accepted (the reference has no pre-upgrade errors,
    /// §4.1). A key in `x-api-key`, `Authorization: Bearer` or `?token=` is checked at once;
    /// otherwise the first message must authenticate within `--auth-timeout`.
    pub(crate) fn api_upgrade(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // Browser origins outside the allow-list are refused before the upgrade, as on
        // /ws/events (issue 6: the origin rule applies to /ws/api too; the upgrade rate is
        // counted centrally in rest.rs).
        if let Some(resp) = self.ws_origin_refusal(head) {
            out.push(Action::Respond { conn, resp });
            return;
        }
        let query = enc::parse_query(&head.query);
        let q = |name: &str| {
            query
                .iter()
                .find(|(k, v)| k == name && !v.trim().is_empty())
                .map(|(_, v)| v.trim().to_string())
        };
        let query_client = q("clientId");
        let token = presented_key(head)
            .filter(|k| !k.is_empty())
            .or_else(|| q("token"));
        debug!("{conn} {peer}: /ws/api upgrade");
        // The role routes this socket's messages and auth timer here from the start.
        self.roles.insert(conn, Role::Api);
        self.api.insert(
            conn,
            ApiSocket {
                peer,
                query_client,
                auth: None,
            },
        );
        out.push(Action::Accept {
            conn,
            endpoint: Endpoint::Api,
        });
        match token {
            Some(t) => self.api_authenticate(conn, &t, None, now, out),
            None => self.arm_auth_timeout(conn, now, out),
        }
    }

    /// The first-message deadline passed (`Timer::Auth` of a `Role::Api` socket).
    pub(crate) fn api_auth_timeout(&mut self, conn: ConnId, _now: Instant, out: &mut Vec<Action>) {
        if self.api.get(&conn).is_some_and(|s| s.auth.is_none()) {
            self.api_refuse(conn, AuthFail::Timeout, out);
        }
    }

    /// The socket closed: drop its state and subscriptions (the core already dropped its
    /// waiters), and tell the module the new counts.
    pub(crate) fn api_closed(&mut self, conn: ConnId, _now: Instant, out: &mut Vec<Action>) {
        self.api_forget(conn, out);
    }

    /// A text message on a `/ws/api` socket.
    pub(crate) fn api_message(
        &mut self,
        conn: ConnId,
        text: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(sock) = self.api.get(&conn) else {
            return;
        };
        if sock.auth.is_none() {
            match parse_auth(&text) {
                Ok((token, client)) => self.api_authenticate(conn, &token, client, now, out),
                Err(fail) => self.api_refuse(conn, fail, out),
            }
            return;
        }
        if !self.api_credential_current(conn, now) {
            info!("{conn}: /ws/api credential revoked or expired; closing");
            return self.api_refuse(conn, AuthFail::InvalidKey, out);
        }
        let mut msg = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            _ => return self.api_send(conn, &error_msg("Invalid JSON", None), out),
        };
        let request_id = msg.get("requestId").cloned();
        let kind = match msg.remove("type") {
            Some(Value::String(t)) if !t.is_empty() => t,
            _ => {
                let e = error_msg("Missing \"type\" field", request_id.as_ref());
                return self.api_send(conn, &e, out);
            }
        };
        match kind.as_str() {
            "ping" => {
                let rid = request_id.unwrap_or_else(|| Value::String(String::new()));
                self.api_send(conn, &json!({"type": "pong", "requestId": rid}), out)
            }
            "auth" => {
                let e = error_msg("Already authenticated", request_id.as_ref());
                self.api_send(conn, &e, out)
            }
            "subscribe" => self.api_subscribe(conn, &msg, request_id, out),
            "unsubscribe" => self.api_unsubscribe(conn, &msg, request_id, out),
            t if INTERACTIVE.contains(&t) => {
                let mut e = json!({
                    "type": "interactive-session-error",
                    "error": INTERACTIVE_UNSUPPORTED,
                });
                if let Some(sid) = msg.get("sessionId") {
                    e["sessionId"] = sid.clone();
                }
                if let Some(r) = request_id {
                    e["requestId"] = r;
                }
                self.api_send(conn, &e, out)
            }
            t => match required_scope(t) {
                Some(scope) => self.api_request(conn, &kind, scope, msg, request_id, now, out),
                None => {
                    let e = error_msg(
                        &format!("Unknown message type: {}", Value::String(t.to_string())),
                        request_id.as_ref(),
                    );
                    self.api_send(conn, &e, out)
                }
            },
        }
    }

    /// The module answered a `/ws/api` request: its JSON with the caller's `requestId` and
    /// the world's `clientId` (relay-protocol.md §4.4), binary types included (discrepancy 10).
    pub(crate) fn deliver_ws_api_reply(
        &mut self,
        conn: ConnId,
        client_request_id: Value,
        ws_type: &str,
        world: &str,
        text: String,
        out: &mut Vec<Action>,
    ) {
        // The reply keeps the module's fields but is typed `<t>-result` like the reference's
        // (the module's failed `last-round` answers as `encounter-navigation`).
        let reply_type = format!("{ws_type}-result");
        let payload = match rewrite_reply(&text, &client_request_id, world, Some(&reply_type)) {
            Some(p) => p,
            None => {
                // Not an object (the world link accepted any JSON with a requestId): wrap it.
                let data = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
                json!({"requestId": client_request_id, "clientId": world, "data": data})
                    .to_string()
                    .into_bytes()
            }
        };
        out.push(Action::Text {
            conn,
            payload: Bytes::Owned(payload),
        });
    }

    // ------------------------------------------------------------------ internals

    fn api_send(&self, conn: ConnId, v: &Value, out: &mut Vec<Action>) {
        out.push(Action::Text {
            conn,
            payload: Bytes::Owned(v.to_string().into_bytes()),
        });
    }

    /// Close with 4002 and the reason; the socket's state goes at once so nothing it still
    /// sends is acted on.
    fn api_refuse(&mut self, conn: ConnId, fail: AuthFail, out: &mut Vec<Action>) {
        if let Some(sock) = self.api.get(&conn) {
            info!(
                "{conn} {}: /ws/api auth refused: {}",
                sock.peer,
                fail.reason()
            );
        }
        self.api_forget(conn, out);
        self.roles.remove(&conn);
        self.pending.drop_caller(conn);
        out.push(Action::Close {
            conn,
            close: WsClose::new(4002, fail.reason()),
        });
    }

    /// Its credential or world was revoked (revoke.rs sends the close): the socket's state
    /// goes at once, so nothing it still sends is acted on and no reply reaches it.
    pub(crate) fn api_revoked(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        self.api_forget(conn, out);
        self.roles.remove(&conn);
        self.pending.drop_caller(conn);
    }

    /// Drop a socket's state and subscriptions, sending the module the count changes.
    fn api_forget(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        self.api.remove(&conn);
        self.subs.remove(&conn);
        let updates = self.hub.drop_conn(conn);
        self.api_send_counts(&updates, out);
    }

    /// Tell each connected world its new subscriber counts (module-protocol.md §4.1; a world
    /// that is offline gets them all on its next `auth-success`).
    fn api_send_counts(&self, updates: &[CountUpdate], out: &mut Vec<Action>) {
        for u in updates {
            if let Some(link) = self.worlds.get(&u.world) {
                out.push(Action::Text {
                    conn: link.conn,
                    payload: Bytes::Owned(u.module_message().into_bytes()),
                });
            }
        }
    }

    /// Check a credential (relay-protocol.md §4.1 order: connection token, admin key, scoped
    /// key), bind the socket to a world, and welcome it.
    fn api_authenticate(
        &mut self,
        conn: ConnId,
        token: &str,
        explicit_client: Option<String>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(sock) = self.api.get(&conn) else {
            return;
        };
        let peer = sock.peer;
        let explicit = explicit_client.or_else(|| sock.query_client.clone());
        let now_ms = self.clock.ms(now);
        let (cred, scopes, bound, user_id) =
            if let Some(idx) = self.state.find_connection_token(token) {
                let Some(tok) = self.state.tokens.get(idx) else {
                    return self.api_refuse(conn, AuthFail::InvalidKey, out);
                };
                if !ip_allowed(&tok.allowed_ips, peer) {
                    return self.api_refuse(conn, AuthFail::IpNotAllowed, out);
                }
                let cred = Credential::Token { id: tok.id.clone() };
                let bound = vec![tok.client_id.clone()];
                self.state.touch_token(idx, now_ms);
                let all = ALL_SCOPES.iter().map(|s| s.to_string()).collect();
                (cred, all, bound, None)
            } else {
                match self.state.authenticate(Some(token), now_ms) {
                    Ok(Principal::Admin) => {
                        let cred = Credential::Admin {
                            hash: self.state.admin_key_hash.clone(),
                        };
                        let scopes = self.state.principal_scopes(&Principal::Admin);
                        (cred, scopes, Vec::new(), None)
                    }
                    Ok(Principal::Key(i)) => {
                        let Some(k) = self.state.api_keys.get(i) else {
                            return self.api_refuse(conn, AuthFail::InvalidKey, out);
                        };
                        let v = (
                            Credential::Key { id: k.id.clone() },
                            k.scopes.clone(),
                            k.client_ids.clone(),
                            k.user_id.clone().filter(|u| !u.trim().is_empty()),
                        );
                        self.state.touch_api_key(i, now_ms);
                        v
                    }
                    Err(_) => return self.api_refuse(conn, AuthFail::InvalidKey, out),
                }
            };
        let world = match resolve_world(explicit.as_deref(), &bound, &self.worlds.ids()) {
            Ok(w) => w,
            Err(fail) => return self.api_refuse(conn, fail, out),
        };
        info!("{conn} {peer}: /ws/api authenticated for world {world}");
        let key_id = match &cred {
            Credential::Key { id } | Credential::Token { id } => Some(id.clone()),
            Credential::Admin { .. } => None,
        };
        self.subs.insert(
            conn,
            Subscriber {
                transport: Transport::WsApi,
                key_id,
                scopes: scopes.clone(),
                client_ids: bound,
                user_id: user_id.clone(),
                world: Some(world.clone()),
                origin: None,
            },
        );
        if let Some(sock) = self.api.get_mut(&conn) {
            sock.auth = Some(ApiAuth {
                world: world.clone(),
                cred,
                scopes,
                user_id,
            });
        }
        self.api_send(
            conn,
            &json!({"type": "auth-success", "clientId": world}),
            out,
        );
        self.api_send(conn, &welcome(&world), out);
    }

    /// Whether the socket's credential still stands; refreshes its scopes (a key's scopes
    /// may have been edited since).
    fn api_credential_current(&mut self, conn: ConnId, now: Instant) -> bool {
        let now_ms = self.clock.ms(now);
        let Some(auth) = self.api.get(&conn).and_then(|s| s.auth.as_ref()) else {
            return false;
        };
        let scopes = match &auth.cred {
            Credential::Admin { hash } => {
                if *hash != self.state.admin_key_hash {
                    return false;
                }
                return true;
            }
            Credential::Token { id } => {
                return self.state.tokens.iter().any(|t| t.id == *id);
            }
            Credential::Key { id } => match self.state.api_keys.iter().find(|k| k.id == *id) {
                Some(k) if k.expires_at_ms.is_none_or(|exp| now_ms < exp) => k.scopes.clone(),
                _ => return false,
            },
        };
        if let Some(a) = self.api.get_mut(&conn).and_then(|s| s.auth.as_mut()) {
            if a.scopes != scopes {
                a.scopes = scopes;
            }
        }
        true
    }

    /// A forwardable type: scope, requestId, world, in-flight cap, then off to the module.
    #[allow(clippy::too_many_arguments)]
    fn api_request(
        &mut self,
        conn: ConnId,
        ws_type: &str,
        scope: &str,
        msg: Map<String, Value>,
        request_id: Option<Value>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let request_id = match request_id {
            Some(Value::Null) | None => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(r) => Some(r),
        };
        let Some(request_id) = request_id else {
            return self.api_send(conn, &error_msg(MISSING_REQUEST_ID, None), out);
        };
        let Some(auth) = self.api.get(&conn).and_then(|s| s.auth.as_ref()) else {
            return;
        };
        let (world, scopes, user_id) = (
            auth.world.clone(),
            auth.scopes.clone(),
            auth.user_id.clone(),
        );
        let has = |s: &str| scopes.iter().any(|x| x == s);
        // The same extra scope as HTTP: a Macro `create` needs macro:write (forward.rs).
        let macro_create =
            ws_type == "create" && msg.get("entityType").and_then(Value::as_str) == Some("Macro");
        let missing = if !has(scope) {
            Some(scope)
        } else if macro_create && !has("macro:write") {
            Some("macro:write")
        } else {
            None
        };
        if let Some(m) = missing {
            let e = error_msg(
                &format!("API key lacks required scope: {m}"),
                Some(&request_id),
            );
            return self.api_send(conn, &e, out);
        }
        // The HTTP script screen applies here too (the reference forgets it on /ws/api).
        if let Some(refusal) = super::forward::script_refusal(ws_type, &msg) {
            let e = result_error(ws_type, &request_id, &world, refusal);
            return self.api_send(conn, &e, out);
        }
        let Some(link) = self.worlds.get(&world).map(|l| l.conn) else {
            let e = result_error(ws_type, &request_id, &world, WORLD_GONE);
            return self.api_send(conn, &e, out);
        };
        if self.pending.count_for_caller(conn) >= self.cfg.ws_api_max_inflight {
            let e = result_error(ws_type, &request_id, &world, TOO_MANY);
            return self.api_send(conn, &e, out);
        }
        let relay_id = self.req_ids.next(ws_type);
        let body = module_request(ws_type, msg, &relay_id, &scopes, user_id.as_deref());
        let deadline = now + self.cfg.ws_api_request_timeout;
        debug!("{conn}: ws {ws_type} -> {world} as {relay_id}");
        let caller = Caller::WsApi {
            conn,
            client_request_id: request_id,
            ws_type: ws_type.to_string(),
        };
        self.dispatch_to_world((&world, link), relay_id, caller, body, deadline, out);
    }

    /// `{"type":"subscribe","channel","filters"?,"since"?}` (relay-protocol.md §4.5).
    fn api_subscribe(
        &mut self,
        conn: ConnId,
        msg: &Map<String, Value>,
        request_id: Option<Value>,
        out: &mut Vec<Action>,
    ) {
        let Some(auth) = self.api.get(&conn).and_then(|s| s.auth.as_ref()) else {
            return;
        };
        let rid = request_id.as_ref();
        if !auth.scopes.iter().any(|s| s == "events:subscribe") {
            let e = error_msg("API key lacks required scope: events:subscribe", rid);
            return self.api_send(conn, &e, out);
        }
        let name = msg.get("channel").and_then(Value::as_str).unwrap_or("");
        let Some(channel) = Channel::from_name(name) else {
            return self.api_send(conn, &error_msg(&invalid_channel(name), rid), out);
        };
        let filters = match Filters::from_json(channel, msg.get("filters")) {
            Ok(f) => f,
            Err(e) => return self.api_send(conn, &error_msg(e, rid), out),
        };
        let since = match parse_since(msg.get("since")) {
            Ok(s) => s,
            Err(e) => return self.api_send(conn, &error_msg(e, rid), out),
        };
        let world = auth.world.clone();
        let user = auth.user_id.clone();
        if self.hub.ws_api_count(&world) >= self.cfg.ws_api_max_subscriptions {
            return self.api_send(conn, &error_msg(MAX_SUBS, rid), out);
        }
        let (sub, updates) =
            match self
                .hub
                .subscribe_ws_api(conn, &world, channel, filters, user.as_deref())
            {
                Ok(x) => x,
                Err(e) => return self.api_send(conn, &error_msg(e.message(), rid), out),
            };
        self.api_send_counts(&updates, out);
        let mut ok = json!({"type": "subscribed", "channel": channel.as_str()});
        if let Some(r) = request_id {
            ok["requestId"] = r;
        }
        self.api_send(conn, &ok, out);
        // Missed events right after the reply, before any live one (same turn).
        if let Some(n) = since {
            let replay = match self.hub.replay(sub, &ResumePoint::Since(n)) {
                Replay::Events(list) => list,
                Replay::Reset(bytes) => vec![bytes],
                Replay::Unavailable => Vec::new(),
            };
            for payload in replay {
                out.push(Action::Text {
                    conn,
                    payload: Bytes::Shared(payload),
                });
            }
        }
    }

    /// `{"type":"unsubscribe","channel"?}`: one channel, or all when omitted.
    fn api_unsubscribe(
        &mut self,
        conn: ConnId,
        msg: &Map<String, Value>,
        request_id: Option<Value>,
        out: &mut Vec<Action>,
    ) {
        let channel = match msg.get("channel") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let name = v.as_str().unwrap_or("");
                match Channel::from_name(name) {
                    Some(c) => Some(c),
                    None => {
                        let e = error_msg(&invalid_channel(name), request_id.as_ref());
                        return self.api_send(conn, &e, out);
                    }
                }
            }
        };
        let (removed, updates) = self.hub.unsubscribe_ws_api(conn, channel);
        self.api_send_counts(&updates, out);
        let mut ok = json!({
            "type": "unsubscribed",
            "channel": channel.map_or("all", Channel::as_str),
            "removed": removed,
        });
        if let Some(r) = request_id {
            ok["requestId"] = r;
        }
        self.api_send(conn, &ok, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::NewKey;
    use crate::config::Config;
    use crate::http::request::{BodyKind, Header, Method};
    use crate::relay::io::{Input, Timer};
    use crate::relay::Clock;
    use crate::store::State;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    type AuthCase = Result<(&'static str, Option<&'static str>), AuthFail>;
    type WorldCase<'a> = (
        Option<&'a str>,
        &'a [&'a str],
        &'a Vec<String>,
        Result<&'a str, AuthFail>,
    );
    type SinceCase = Result<Option<u64>, ()>;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn forwardable_table_matches_the_spec() {
        assert_eq!(
            FORWARDABLE.len(),
            94,
            "relay-protocol.md §4.3 lists 94 types"
        );
        let candidates = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/ws-api.tsv"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/spec/ws-api.tsv"),
        ];
        let Some(tsv) = candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
        else {
            return; // spec checkout not present (e.g. a packaged build)
        };
        let from_spec: Vec<(String, String)> = tsv
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                let (t, reply, scope) = (cols.first()?, cols.get(1)?, cols.get(2)?);
                (*reply == format!("{t}-result")).then(|| (t.to_string(), scope.to_string()))
            })
            .collect();
        let ours: Vec<(String, String)> = FORWARDABLE
            .iter()
            .map(|(t, sc)| (t.to_string(), sc.to_string()))
            .collect();
        assert_eq!(ours, from_spec);
    }

    #[test]
    fn scopes_per_type() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            ("entity",        Some("entity:read")),
            ("execute-js",    Some("execute-js")),
            ("chat-send",     Some("chat:write")),
            ("ability-check", Some("dnd5e")),
            ("download-file", Some("file:read")),
            ("contents",      Some("structure:read")),
            ("add-item",      Some("entity:write")),
            ("remove-item",   Some("entity:write")),
            ("subscribe",     None),
            ("nope",          None),
            ("",              None),
        ];
        for (t, want) in cases {
            assert_eq!(required_scope(t), *want, "{t}");
        }
    }

    #[test]
    fn auth_messages() {
        use AuthFail::InvalidMessage as Bad;
        #[rustfmt::skip]
        let cases: &[(&str, AuthCase)] = &[
            (r#"{"type":"auth","token":"k"}"#,                    Ok(("k", None))),
            (r#"{"type":"auth","token":" k ","clientId":"w"}"#,   Ok(("k", Some("w")))),
            (r#"{"type":"auth","token":"k","clientId":""}"#,      Ok(("k", None))),
            (r#"{"type":"auth","token":"k","clientId":null}"#,    Ok(("k", None))),
            (r#"{"type":"auth","token":"k","clientId":5}"#,       Err(Bad)),
            (r#"{"type":"auth","token":""}"#,                     Err(Bad)),
            (r#"{"type":"auth","token":7}"#,                      Err(Bad)),
            (r#"{"type":"auth"}"#,                                Err(Bad)),
            (r#"{"type":"ping","token":"k"}"#,                    Err(Bad)),
            (r#"{"token":"k"}"#,                                  Err(Bad)),
            (r#"["auth","k"]"#,                                   Err(Bad)),
            ("not json",                                          Err(Bad)),
            ("",                                                  Err(Bad)),
        ];
        for (text, want) in cases {
            let got = parse_auth(text);
            let want = want.map(|(t, c)| (t.to_string(), c.map(str::to_string)));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn world_resolution() {
        use AuthFail::*;
        let two = s(&["a", "b"]);
        let one = s(&["a"]);
        #[rustfmt::skip]
        let cases: &[WorldCase] = &[
            // explicit
            (Some("a"), &[],         &two, Ok("a")),
            (Some("c"), &[],         &two, Err(InvalidClientId)),
            (Some("b"), &["a"],      &two, Err(ClientMismatch)),
            (Some("b"), &["a", "b"], &two, Ok("b")),
            (Some(""),  &["a"],      &two, Ok("a")),
            // key-bound
            (None,      &["b"],      &two, Ok("b")),
            (None,      &["c"],      &two, Err(InvalidClientId)),
            // the only connected one the key may use
            (None,      &[],         &one, Ok("a")),
            (None,      &[],         &two, Err(MultipleClients)),
            (None,      &["a", "c"], &two, Ok("a")),
            (None,      &["c", "d"], &two, Err(NoClient)),
            (None,      &[],         &Vec::new(), Err(NoClient)),
        ];
        for (explicit, bound, connected, want) in cases {
            let got = resolve_world(*explicit, &s(bound), connected);
            assert_eq!(got, want.map(str::to_string), "{explicit:?} {bound:?}");
        }
    }

    #[test]
    fn auth_fail_reasons_are_the_references() {
        let all = [
            (AuthFail::Timeout, "Authentication timeout"),
            (AuthFail::InvalidMessage, "Invalid auth message"),
            (AuthFail::InvalidKey, "Invalid API key"),
            (AuthFail::NoClient, "No connected Foundry client found"),
            (
                AuthFail::MultipleClients,
                "Multiple clients connected. Please specify clientId.",
            ),
            (AuthFail::InvalidClientId, "Invalid clientId"),
            (
                AuthFail::ClientMismatch,
                "API key does not match the specified clientId",
            ),
            (AuthFail::IpNotAllowed, "IP address not allowed"),
        ];
        for (f, reason) in all {
            assert_eq!(f.reason(), reason);
            // A close reason must fit a control frame (RFC 6455 §5.5: 125 bytes, 2 for the code).
            assert!(reason.len() <= 123);
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn module_request_shape() {
        let scopes = s(&["entity:read"]);
        #[rustfmt::skip]
        let cases: &[(&str, Value, Option<&str>, Value)] = &[
            // fields kept, ours added, data:{} when absent, clientId/format/_scopes dropped
            ("entity", json!({"type":"entity","requestId":"c1","uuid":"Actor.x","clientId":"w","format":"x","_scopes":["all"]}), None,
             json!({"uuid":"Actor.x","type":"entity","requestId":"r1","_scopes":["entity:read"],"data":{}})),
            // data kept as given
            ("create", json!({"data":{"name":"n"},"entityType":"Actor"}), None,
             json!({"data":{"name":"n"},"entityType":"Actor","type":"create","requestId":"r1","_scopes":["entity:read"]})),
            // bound user replaces the caller's userId
            ("roll", json!({"formula":"1d20","userId":"someone"}), Some("bound"),
             json!({"formula":"1d20","userId":"bound","type":"roll","requestId":"r1","_scopes":["entity:read"],"data":{}})),
            // the caller's userId stays when no user is bound
            ("roll", json!({"userId":"someone"}), None,
             json!({"userId":"someone","type":"roll","requestId":"r1","_scopes":["entity:read"],"data":{}})),
            // screenshots keep format (module-protocol.md §3.5)
            ("sheet-screenshot", json!({"uuid":"u","format":"jpeg"}), None,
             json!({"uuid":"u","format":"jpeg","type":"sheet-screenshot","requestId":"r1","_scopes":["entity:read"],"data":{}})),
        ];
        for (t, fields, user, want) in cases {
            let bytes = module_request(t, obj(fields.clone()), "r1", &scopes, *user);
            let got: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_eq!(&got, want, "{t}");
        }
    }

    #[test]
    fn reply_rewrite_splices_two_keys() {
        let rid = json!("client-7");
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"type":"entity-result","requestId":"entity_ab1","data":{"requestId":"inner"}}"#,
             Some(r#"{"type":"entity-result","requestId":"client-7","data":{"requestId":"inner"},"clientId":"fvtt_w"}"#)),
            (r#" { "requestId" : "x" , "clientId":"old", "n": 1.5e3 } "#,
             Some(r#" { "requestId" : "client-7" , "clientId":"fvtt_w", "n": 1.5e3 } "#)),
            (r#"{}"#, Some(r#"{"requestId":"client-7","clientId":"fvtt_w"}"#)),
            (r#"{"a":[1,{"b":"}]\"{"}],"z":null}"#,
             Some(r#"{"a":[1,{"b":"}]\"{"}],"z":null,"requestId":"client-7","clientId":"fvtt_w"}"#)),
            // an escaped key is still the key
            (r#"{"request\u0049d":"x","ok":true}"#,
             Some(r#"{"request\u0049d":"client-7","ok":true,"clientId":"fvtt_w"}"#)),
            (r#"{"s":"\\","requestId":"x"}"#,
             Some(r#"{"s":"\\","requestId":"client-7","clientId":"fvtt_w"}"#)),
            (r#"[1,2]"#, None),
            (r#""text""#, None),
            (r#"{"a":1} trailing"#, None),
            (r#"{"a":1"#, None),
            (r#"{"a" 1}"#, None),
            (r#"{"a":}"#, None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = rewrite_reply(input, &rid, "fvtt_w", None)
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            assert_eq!(got.as_deref(), *want, "{input}");
            if let Some(out) = &got {
                let v: Value = serde_json::from_str(out).unwrap_or(Value::Null);
                assert_eq!(v["requestId"], rid, "{out}");
                assert_eq!(v["clientId"], "fvtt_w", "{out}");
            }
        }
        // With a reply type, `type` is set (replaced, or added when missing).
        let got = rewrite_reply(
            r#"{"type":"encounter-navigation","requestId":"x","error":"e"}"#,
            &rid,
            "w",
            Some("last-round-result"),
        );
        assert_eq!(
            got.as_deref(),
            Some(&br#"{"type":"last-round-result","requestId":"client-7","error":"e","clientId":"w"}"#[..])
        );
        let got = rewrite_reply(r#"{"requestId":"x"}"#, &rid, "w", Some("roll-result"));
        assert_eq!(
            got.as_deref(),
            Some(&br#"{"requestId":"client-7","clientId":"w","type":"roll-result"}"#[..])
        );
        // A numeric or object requestId of the caller is echoed as it was sent.
        let got = rewrite_reply(r#"{"requestId":"x"}"#, &json!({"n":1}), "w", None);
        assert_eq!(
            got.as_deref(),
            Some(&br#"{"requestId":{"n":1},"clientId":"w"}"#[..])
        );
    }

    #[test]
    fn since_values() {
        #[rustfmt::skip]
        let cases: &[(Option<Value>, SinceCase)] = &[
            (None,              Ok(None)),
            (Some(json!(null)), Ok(None)),
            (Some(json!(0)),    Ok(Some(0))),
            (Some(json!(42)),   Ok(Some(42))),
            (Some(json!(-1)),   Err(())),
            (Some(json!(1.5)),  Err(())),
            (Some(json!("3")),  Err(())),
        ];
        for (v, want) in cases {
            assert_eq!(parse_since(v.as_ref()).map_err(|_| ()), *want, "{v:?}");
        }
    }

    #[test]
    fn invalid_channel_text() {
        assert_eq!(
            invalid_channel("x"),
            "Invalid channel: \"x\". Supported: chat-events, roll-events, hooks, combat-events, actor-events, scene-events"
        );
    }

    // ---------------------------------------------------------- the core, sans IO

    const WORLD: &str = "fvtt_00000000000000aa";

    struct Keys {
        full: String,
        read_only: String,
        bound_user: String,
        token: String,
    }

    struct H {
        relay: Relay,
        now: Instant,
        next: usize,
        keys: Keys,
    }

    fn key(state: &mut State, scopes: &[&str], user: Option<&str>) -> String {
        let spec = NewKey {
            name: "t".into(),
            scopes: s(scopes),
            client_ids: vec![],
            user_id: user.map(str::to_string),
            expires_in_days: None,
            rate_limit_per_minute: None,
        };
        match state.create_api_key(spec, 0) {
            Ok((_, k)) => k,
            Err(e) => panic!("{e}"),
        }
    }

    fn head(path: &str, query: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: Method::Get,
            method_raw: "GET".into(),
            target: format!("{path}?{query}"),
            path: path.into(),
            query: query.into(),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
            keep_alive: true,
            expect_continue: false,
            body: BodyKind::None,
            wants_upgrade: true,
        }
    }

    impl H {
        fn new(cfg: Config) -> H {
            let mut state = State::default();
            let all: Vec<&str> = ALL_SCOPES.to_vec();
            let keys = Keys {
                full: key(&mut state, &all, None),
                read_only: key(&mut state, &["entity:read"], None),
                bound_user: key(&mut state, &all, Some("u-bound")),
                token: state.create_connection_token(WORLD, 0).1,
            };
            let now = Instant::now();
            let clock = Clock {
                base: now,
                base_ms: 1_700_000_000_000,
            };
            H {
                relay: Relay::new(cfg, state, clock),
                now,
                next: 1,
                keys,
            }
        }

        fn conn(&mut self) -> ConnId {
            self.next += 1;
            ConnId {
                key: self.next,
                gen: 1,
            }
        }

        fn run(&mut self, input: Input<'_>) -> Vec<Action> {
            let mut out = Vec::new();
            self.relay.handle(input, self.now, &mut out);
            out
        }

        fn peer() -> IpAddr {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }

        /// A world link, authenticated.
        fn world(&mut self) -> ConnId {
            let c = self.conn();
            let h = head("/relay", &format!("id={WORLD}"), &[]);
            self.run(Input::Upgrade {
                conn: c,
                peer: H::peer(),
                head: &h,
            });
            let text = json!({"type":"auth","token": self.keys.token}).to_string();
            let out = self.run(Input::WsText { conn: c, text });
            assert!(texts(&out, c).iter().any(|v| v["type"] == "auth-success"));
            c
        }

        fn upgrade(&mut self, query: &str, headers: &[(&str, &str)]) -> (ConnId, Vec<Action>) {
            let c = self.conn();
            let h = head("/ws/api", query, headers);
            let out = self.run(Input::Upgrade {
                conn: c,
                peer: H::peer(),
                head: &h,
            });
            (c, out)
        }

        /// An authenticated `/ws/api` socket with `key`.
        fn client(&mut self, key: &str) -> ConnId {
            let (c, _) = self.upgrade("", &[]);
            let out = self.send(c, json!({"type":"auth","token":key}));
            let got = texts(&out, c);
            assert_eq!(
                got.first().map(|v| v["type"].clone()),
                Some(json!("auth-success"))
            );
            assert_eq!(
                got.get(1).map(|v| v["type"].clone()),
                Some(json!("connected"))
            );
            c
        }

        fn send(&mut self, conn: ConnId, v: Value) -> Vec<Action> {
            self.run(Input::WsText {
                conn,
                text: v.to_string(),
            })
        }
    }

    /// The JSON texts sent to `conn`, in order.
    fn texts(out: &[Action], conn: ConnId) -> Vec<Value> {
        out.iter()
            .filter_map(|a| match a {
                Action::Text { conn: c, payload } if *c == conn => {
                    let bytes: &[u8] = match payload {
                        Bytes::Owned(v) => v,
                        Bytes::Shared(r) => r,
                    };
                    serde_json::from_slice(bytes).ok()
                }
                _ => None,
            })
            .collect()
    }

    fn closes(out: &[Action], conn: ConnId) -> Vec<(u16, String)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Close { conn: c, close } if *c == conn => {
                    Some((close.code, close.reason.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn welcome_after_message_auth_then_requests_round_trip() {
        let mut h = H::new(Config::default());
        let w = h.world();
        let full = h.keys.full.clone();
        let (c, out) = h.upgrade("", &[]);
        assert!(matches!(
            out.first(),
            Some(Action::Accept {
                endpoint: Endpoint::Api,
                ..
            })
        ));
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Arm { timer: Timer::Auth(x), .. } if *x == c)));
        let out = h.send(c, json!({"type":"auth","token": full}));
        let got = texts(&out, c);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], json!({"type":"auth-success","clientId": WORLD}));
        assert_eq!(got[1]["type"], "connected");
        assert_eq!(got[1]["supportedTypes"].as_array().map(Vec::len), Some(94));
        assert_eq!(got[1]["eventChannels"][2], "hooks");
        // A request goes to the world with our id, and its reply comes back with the caller's.
        let out = h.send(
            c,
            json!({"type":"entity","requestId":"mine-1","uuid":"Actor.a","format":"x"}),
        );
        let sent = texts(&out, w);
        assert_eq!(sent.len(), 1);
        let relay_id = sent[0]["requestId"].as_str().unwrap_or("").to_string();
        assert!(relay_id.starts_with("entity_") && relay_id != "mine-1");
        assert_eq!(sent[0]["uuid"], "Actor.a");
        assert!(sent[0].get("format").is_none());
        assert_eq!(
            sent[0]["_scopes"].as_array().map(Vec::len),
            Some(ALL_SCOPES.len())
        );
        let reply = json!({"type":"entity-result","requestId": relay_id,"data":{"name":"A"}});
        let out = h.send(w, reply);
        let got = texts(&out, c);
        assert_eq!(
            got,
            vec![
                json!({"type":"entity-result","requestId":"mine-1","clientId":WORLD,"data":{"name":"A"}})
            ]
        );
        assert!(h.relay.pending.is_empty());
    }

    #[test]
    fn upgrade_credentials_and_refusals() {
        let mut h = H::new(Config::default());
        let full = h.keys.full.clone();
        // No world yet: a good key is refused because there is nothing to bind to.
        let (c, out) = h.upgrade("", &[("x-api-key", &full)]);
        assert_eq!(
            closes(&out, c),
            vec![(4002, "No connected Foundry client found".into())]
        );
        assert!(h.relay.api.is_empty() && !h.relay.roles.contains_key(&c));
        h.world();
        for (q, hdr) in [
            (format!("token={full}"), vec![]),
            (String::new(), vec![("x-api-key", full.as_str())]),
            (
                String::new(),
                vec![("authorization", &*format!("Bearer {full}"))],
            ),
        ] {
            let (c, out) = h.upgrade(&q, &hdr);
            let got = texts(&out, c);
            assert_eq!(
                got.first().map(|v| &v["type"]),
                Some(&json!("auth-success")),
                "{q} {hdr:?}"
            );
            assert!(!out.iter().any(|a| matches!(a, Action::Arm { .. })));
        }
        #[rustfmt::skip]
        let cases: Vec<(String, &str)> = vec![
            ("token=nope".into(),                                     "Invalid API key"),
            (format!("token={full}&clientId=fvtt_other"),            "Invalid clientId"),
        ];
        for (q, reason) in cases {
            let (c, out) = h.upgrade(&q, &[]);
            assert_eq!(closes(&out, c), vec![(4002, reason.to_string())], "{q}");
        }
        // First-message failures.
        for (text, reason) in [
            ("hello", "Invalid auth message"),
            (r#"{"type":"ping"}"#, "Invalid auth message"),
            (r#"{"type":"auth","token":"wrong"}"#, "Invalid API key"),
        ] {
            let (c, _) = h.upgrade("", &[]);
            let out = h.run(Input::WsText {
                conn: c,
                text: text.into(),
            });
            assert_eq!(closes(&out, c), vec![(4002, reason.to_string())], "{text}");
            // Anything after the refusal is ignored.
            let out = h.send(c, json!({"type":"auth","token": full}));
            assert!(out.is_empty());
        }
        // The timer closes an unauthenticated socket, and only that.
        let (c, _) = h.upgrade("", &[]);
        let out = h.run(Input::Timer(Timer::Auth(c)));
        assert_eq!(
            closes(&out, c),
            vec![(4002, "Authentication timeout".into())]
        );
        let ok = h.client(&full);
        let out = h.run(Input::Timer(Timer::Auth(ok)));
        assert!(out.is_empty());
    }

    #[test]
    fn connection_token_binds_its_world() {
        let mut h = H::new(Config::default());
        h.world();
        let token = h.keys.token.clone();
        let (c, out) = h.upgrade(&format!("clientId=fvtt_other&token={token}"), &[]);
        assert_eq!(
            closes(&out, c),
            vec![(4002, "API key does not match the specified clientId".into())]
        );
        let c = h.client(&token);
        assert_eq!(
            h.relay
                .subs
                .get(&c)
                .and_then(|s| s.world.clone())
                .as_deref(),
            Some(WORLD)
        );
    }

    #[test]
    fn scope_refusal_and_errors() {
        let mut h = H::new(Config::default());
        let w = h.world();
        let ro = h.keys.read_only.clone();
        let c = h.client(&ro);
        #[rustfmt::skip]
        let cases: Vec<(Value, Value)> = vec![
            (json!({"type":"execute-js","requestId":"1","script":"x"}),
             json!({"type":"error","error":"API key lacks required scope: execute-js","requestId":"1"})),
            (json!({"type":"subscribe","channel":"hooks","requestId":"2"}),
             json!({"type":"error","error":"API key lacks required scope: events:subscribe","requestId":"2"})),
            (json!({"type":"entity"}),
             json!({"type":"error","error":"Missing \"requestId\" field for request messages"})),
            (json!({"type":"entity","requestId":""}),
             json!({"type":"error","error":"Missing \"requestId\" field for request messages"})),
            (json!({"type":"frobnicate","requestId":"3"}),
             json!({"type":"error","error":"Unknown message type: \"frobnicate\"","requestId":"3"})),
            (json!({"requestId":"4"}),
             json!({"type":"error","error":"Missing \"type\" field","requestId":"4"})),
            (json!([1]), json!({"type":"error","error":"Invalid JSON"})),
            (json!({"type":"ping","requestId":"p"}), json!({"type":"pong","requestId":"p"})),
            (json!({"type":"ping"}), json!({"type":"pong","requestId":""})),
            (json!({"type":"interactive-session-start","uuid":"u","requestId":"5"}),
             json!({"type":"interactive-session-error","error":INTERACTIVE_UNSUPPORTED,"requestId":"5"})),
        ];
        for (msg, want) in cases {
            let out = h.send(c, msg.clone());
            assert_eq!(texts(&out, c), vec![want], "{msg}");
            assert!(
                texts(&out, w).is_empty(),
                "nothing reaches the world for {msg}"
            );
        }
        let out = h.run(Input::WsText {
            conn: c,
            text: "{".into(),
        });
        assert_eq!(
            texts(&out, c),
            vec![json!({"type":"error","error":"Invalid JSON"})]
        );
        // The scope it has works.
        let out = h.send(c, json!({"type":"entity","requestId":7,"uuid":"u"}));
        assert_eq!(texts(&out, w).len(), 1);
    }

    #[test]
    fn macro_create_needs_macro_write() {
        let mut h = H::new(Config::default());
        h.world();
        let k = key(&mut h.relay.state, &["entity:write"], None);
        let c = h.client(&k);
        let out = h.send(
            c,
            json!({"type":"create","requestId":"1","entityType":"Macro","data":{}}),
        );
        assert_eq!(
            texts(&out, c)[0]["error"],
            "API key lacks required scope: macro:write"
        );
    }

    #[test]
    fn revoked_key_closes_the_socket() {
        let mut h = H::new(Config::default());
        h.world();
        let k = key(&mut h.relay.state, &["entity:read"], None);
        let c = h.client(&k);
        let id = h
            .relay
            .state
            .api_keys
            .last()
            .map(|k| k.id.clone())
            .unwrap_or_default();
        assert!(h.relay.state.revoke_api_key(&id));
        let out = h.send(c, json!({"type":"ping"}));
        assert_eq!(closes(&out, c), vec![(4002, "Invalid API key".into())]);
        assert!(texts(&out, c).is_empty());
    }

    #[test]
    fn inflight_cap_offline_world_and_disconnect() {
        let cfg = Config {
            ws_api_max_inflight: 2,
            ..Config::default()
        };
        let mut h = H::new(cfg);
        let w = h.world();
        let full = h.keys.full.clone();
        let c = h.client(&full);
        for i in 0..2 {
            let out = h.send(c, json!({"type":"world-info","requestId": i}));
            assert_eq!(texts(&out, w).len(), 1);
        }
        let out = h.send(c, json!({"type":"world-info","requestId": "third"}));
        assert_eq!(
            texts(&out, c),
            vec![
                json!({"type":"world-info-result","requestId":"third","clientId":WORLD,"error":TOO_MANY})
            ]
        );
        assert!(texts(&out, w).is_empty());
        // The world leaves: both waiters fail at once.
        let out = h.run(Input::Closed { conn: w });
        let failed = texts(&out, c);
        assert_eq!(failed.len(), 2);
        assert!(failed
            .iter()
            .all(|v| v["type"] == "world-info-result" && v["error"].is_string()));
        // While it is gone, requests are answered at once.
        let out = h.send(c, json!({"type":"world-info","requestId":"x"}));
        assert_eq!(texts(&out, c)[0]["error"], WORLD_GONE);
    }

    #[test]
    fn request_timeout_answers_the_caller() {
        let mut h = H::new(Config::default());
        let w = h.world();
        let full = h.keys.full.clone();
        let c = h.client(&full);
        let out = h.send(c, json!({"type":"roll","requestId":"r","formula":"1d20"}));
        assert_eq!(texts(&out, w).len(), 1);
        let (at, timer) = out
            .iter()
            .find_map(|a| match a {
                Action::Arm {
                    at,
                    timer: t @ Timer::Request(_),
                } => Some((*at, t.clone())),
                _ => None,
            })
            .unwrap_or((h.now, Timer::Sweep));
        assert_eq!(at, h.now + Duration::from_secs(30));
        h.now = at;
        let out = h.run(Input::Timer(timer));
        assert_eq!(texts(&out, c)[0]["error"], "Request timed out");
        assert_eq!(texts(&out, c)[0]["requestId"], "r");
    }

    #[test]
    fn bound_user_is_injected() {
        let mut h = H::new(Config::default());
        let w = h.world();
        let k = h.keys.bound_user.clone();
        let c = h.client(&k);
        let out = h.send(
            c,
            json!({"type":"chat-send","requestId":"1","content":"hi","userId":"other"}),
        );
        assert_eq!(texts(&out, w)[0]["userId"], "u-bound");
    }

    fn chat(id: &str, alias: &str) -> Value {
        json!({"eventType":"create","data":{"_id":id,"speaker":{"alias":alias},"content":"x"}})
    }

    #[test]
    fn subscribe_counts_filters_since_and_duplicates() {
        let mut h = H::new(Config::default());
        let w = h.world();
        let full = h.keys.full.clone();
        let c = h.client(&full);
        // Three events before anyone listens (the events transports publish through the hub).
        for (id, alias) in [("m1", "Alice"), ("m2", "Bob"), ("m3", "Alice")] {
            h.relay.hub.publish(WORLD, "chat-event", chat(id, alias), 0);
        }
        let out = h.send(
            c,
            json!({"type":"subscribe","channel":"chat-events","requestId":"s","filters":{"speaker":"Alice"},"since":0}),
        );
        assert_eq!(
            texts(&out, w),
            vec![json!({"type":"event-subscription-update","channel":"chat-events","count":1})]
        );
        let got = texts(&out, c);
        assert_eq!(
            got[0],
            json!({"type":"subscribed","channel":"chat-events","requestId":"s"})
        );
        let ids: Vec<&str> = got[1..]
            .iter()
            .filter_map(|v| v["data"]["_id"].as_str())
            .collect();
        assert_eq!(ids, vec!["m1", "m3"], "replay honours the filter");
        assert_eq!(got[2]["seq"], 3);
        // The same channel again is refused; the count does not move.
        let out = h.send(
            c,
            json!({"type":"subscribe","channel":"chat-events","requestId":"d"}),
        );
        assert_eq!(
            texts(&out, c),
            vec![
                json!({"type":"error","error":"Already subscribed to this channel","requestId":"d"})
            ]
        );
        assert!(texts(&out, w).is_empty());
        // `since` past the ring start → reset marker.
        let out = h.send(
            c,
            json!({"type":"subscribe","channel":"roll-events","since":99}),
        );
        let got = texts(&out, c);
        assert_eq!(got[1]["type"], "reset");
        // Bad inputs.
        for (msg, err) in [
            (
                json!({"type":"subscribe","channel":"nope"}),
                invalid_channel("nope"),
            ),
            (
                json!({"type":"subscribe","channel":"hooks","filters":7}),
                "'filters' must be an object".to_string(),
            ),
            (
                json!({"type":"subscribe","channel":"hooks","since":"x"}),
                "'since' must be a non-negative integer sequence number".to_string(),
            ),
            (
                json!({"type":"unsubscribe","channel":"nope"}),
                invalid_channel("nope"),
            ),
        ] {
            let out = h.send(c, msg.clone());
            assert_eq!(texts(&out, c)[0]["error"], json!(err), "{msg}");
        }
        // Unsubscribe one, then all.
        let out = h.send(
            c,
            json!({"type":"unsubscribe","channel":"chat-events","requestId":"u"}),
        );
        assert_eq!(
            texts(&out, c),
            vec![
                json!({"type":"unsubscribed","channel":"chat-events","removed":1,"requestId":"u"})
            ]
        );
        assert_eq!(texts(&out, w)[0]["count"], 0);
        let out = h.send(c, json!({"type":"unsubscribe"}));
        assert_eq!(
            texts(&out, c),
            vec![json!({"type":"unsubscribed","channel":"all","removed":1})]
        );
        assert_eq!(h.relay.hub.ws_api_count(WORLD), 0);
    }

    #[test]
    fn subscription_cap_and_close_cleanup() {
        let mut h = H::new(Config::default());
        let w = h.world();
        let full = h.keys.full.clone();
        let mut socks = Vec::new();
        for _ in 0..2 {
            socks.push(h.client(&full));
        }
        let mut n = 0;
        'outer: for c in &socks {
            for ch in Channel::ALL {
                if n == Config::default().ws_api_max_subscriptions {
                    break 'outer;
                }
                let out = h.send(*c, json!({"type":"subscribe","channel":ch.as_str()}));
                assert_eq!(texts(&out, *c)[0]["type"], "subscribed");
                n += 1;
            }
        }
        let last = socks[1];
        let out = h.send(
            last,
            json!({"type":"subscribe","channel":"scene-events","requestId":"z"}),
        );
        assert_eq!(texts(&out, last)[0]["error"], MAX_SUBS);
        // Closing the first socket frees its six and tells the module.
        let out = h.run(Input::Closed { conn: socks[0] });
        assert_eq!(texts(&out, w).len(), 6);
        assert!(!h.relay.api.contains_key(&socks[0]) && !h.relay.subs.contains_key(&socks[0]));
        assert_eq!(h.relay.hub.ws_api_count(WORLD), 4);
    }
}
