//! `/mcp`: the Model Context Protocol server, Streamable HTTP transport (MCP 2025-11-25,
//! also 2025-06-18 and 2025-03-26), sans-IO like the rest of the relay core.
//!
//! - `POST /mcp` carries JSON-RPC 2.0 messages (a batch only under 2025-03-26, which alone
//!   allows them). `initialize` opens a session (`Mcp-Session-Id`, a 128-bit random id); every
//!   later request names it and must present the same key. Answers are `application/json`,
//!   or an SSE stream when a `tools/call` asks for progress (`_meta.progressToken`).
//! - A tool call or a resource read that needs the world is a forwarded request under a unique
//!   requestId (`pending.rs`, `Caller::Mcp`); the module's reply, its timeout or its world's
//!   disconnect completes the exchange. World trouble is a tool result with `isError: true`
//!   and a sentence a model can act on, never a protocol error.
//! - `GET /mcp` is the session's server-to-client stream: `notifications/resources/updated`
//!   for subscribed resources, driven by the world's events. A subscription counts in the hub
//!   like an SSE stream (so the module is asked to send that channel) under a virtual
//!   connection id that never reaches the loop (`strip_virtual`).
//! - `DELETE /mcp` ends a session.
//!
//! DNS-rebinding protection (transport "Security Warning"): a browser `Origin` must be on the
//! WebSockets' allow-list (`--allowed-ws-origins`), a loopback origin (a local client such as
//! the MCP Inspector), or `--public-url`'s; else 403. Unlike the WebSockets, "same origin as
//! Host" is not enough here: under DNS rebinding the attacker's page is same-origin.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::forward::{self, ParamError};
use super::hub::{Channel, Filters, SubId};
use super::io::Action;
use super::mcp_tools::{self, Part, Res, Tool};
use super::pending::Caller;
use super::rest::Caller0;
use super::Relay;
use crate::error::WsClose;
use crate::http::request::{Head, Method};
use crate::http::response::Response;
use crate::http::route::{Kind, RouteTable};
use crate::ids::ConnId;
use crate::sse;
use crate::ws::handshake::origin_allowed;

/// Protocol revisions we speak, newest first (MCP "Versioning").
pub const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// The revision assumed when a request names none (transport: "Protocol Version Header").
const ASSUMED: &str = "2025-03-26";

// JSON-RPC 2.0 error codes (§5.1).
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
/// MCP "Resource not found".
const RESOURCE_NOT_FOUND: i64 = -32002;

/// Virtual connection ids for hub subscriptions start here and count down; slab keys never
/// come near.
const VIRTUAL_BASE: usize = usize::MAX / 2;

/// Who waits for a forwarded MCP call.
#[derive(Debug, Clone)]
pub struct McpWait {
    pub conn: ConnId,
    pub session: Rc<str>,
    /// Index of the answer in the exchange (batch position).
    pub slot: usize,
    pub rpc_id: Value,
    pub op: Op,
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Index into the tool table.
    Tool(usize),
    Resource(String),
}

struct Session {
    /// Key id, or "" for the admin key.
    owner: String,
    version: &'static str,
    stream: Option<ConnId>,
    /// The hub subscriber id of this session's resource subscriptions.
    hub_conn: ConnId,
    /// Subscribed URIs and the hub subscriptions behind each.
    subs: Vec<(String, Vec<SubId>)>,
    inflight: usize,
    last_used: Instant,
}

/// A POST whose answers are not all in yet (one per connection: requests are serial).
struct Exchange {
    session: Rc<str>,
    slots: Vec<Option<Value>>,
    remaining: usize,
    batch: bool,
    sse: bool,
    progress: Option<Value>,
}

pub(crate) struct Mcp {
    tools: Vec<Tool>,
    sessions: HashMap<Rc<str>, Session>,
    exchanges: HashMap<ConnId, Exchange>,
    streams: HashMap<ConnId, Rc<str>>,
    next_virtual: usize,
    /// Sessions holding at least one hub subscription (deliveries are filtered only then).
    subscribed: usize,
}

impl Mcp {
    pub fn new(routes: &RouteTable, spec: &[String]) -> Mcp {
        for name in spec {
            if name != "all" && name != "default" && !mcp_tools::known_name(routes, name) {
                log::warn!("--mcp-tools: no tool named '{name}'; ignored");
            }
        }
        Mcp {
            tools: mcp_tools::build(routes, spec),
            sessions: HashMap::new(),
            exchanges: HashMap::new(),
            streams: HashMap::new(),
            next_virtual: 0,
            subscribed: 0,
        }
    }

    /// Live sessions.
    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

/// A JSON-RPC response (`result` or `error`).
fn ok(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A tool result a model reads as a failure it can act on (MCP: tool execution errors).
fn tool_error(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

/// What one request of a POST produced.
enum Answer {
    Now(Value),
    /// Forwarded to a world; the exchange completes later.
    Later,
}

/// The parts of a POST every handler needs.
struct Ctx<'a> {
    conn: ConnId,
    session: Rc<str>,
    caller: &'a Caller0,
}

fn accepts(head: &Head, mime: &str) -> bool {
    match head.header("accept") {
        None => true,
        Some(a) => a.split(',').any(|p| {
            let t = p.split(';').next().unwrap_or("").trim();
            t.eq_ignore_ascii_case(mime) || t == "*/*"
        }),
    }
}

impl Relay {
    fn mcp_respond(&self, conn: ConnId, resp: Response, out: &mut Vec<Action>) {
        out.push(Action::Respond {
            conn,
            resp: resp.header("Access-Control-Allow-Origin", "*").header(
                "Access-Control-Expose-Headers",
                "Mcp-Session-Id, WWW-Authenticate",
            ),
        });
    }

    fn mcp_json(&self, conn: ConnId, status: u16, v: &Value, out: &mut Vec<Action>) {
        self.mcp_respond(conn, Response::json(status, v), out);
    }

    /// Every request to `/mcp`.
    pub(crate) fn mcp_request(
        &mut self,
        conn: ConnId,
        _peer: IpAddr,
        head: &Head,
        body: Vec<u8>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if head.method == Method::Options {
            let resp = Response::new(204)
                .header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
                .header(
                    "Access-Control-Allow-Headers",
                    "authorization, x-api-key, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id",
                )
                .header("Access-Control-Max-Age", "600");
            return self.mcp_respond(conn, resp, out);
        }
        // DNS rebinding (transport §"Security Warning"): a page on another origin must not
        // reach a relay on loopback or the LAN.
        if !self.mcp_origin_ok(head.header("origin")) {
            let e = rpc_error(&Value::Null, INVALID_REQUEST, "Origin not allowed");
            return self.mcp_json(conn, 403, &e, out);
        }
        let caller = match self.authenticate(head, self.clock.ms(now)) {
            Ok(c) => c,
            Err(e) => {
                let resp = Response::error(401, e.message())
                    .header("WWW-Authenticate", "Bearer realm=\"fvtt-relay\"");
                return self.mcp_respond(conn, resp, out);
            }
        };
        if let Err(resp) = self.check_api_rate(conn, &caller.principal, now, out) {
            return self.mcp_respond(conn, resp, out);
        }
        if let Some(v) = head.header("mcp-protocol-version") {
            if !VERSIONS.contains(&v.trim()) {
                let msg = format!(
                    "Unsupported MCP-Protocol-Version: {}; supported: {}",
                    v.trim(),
                    VERSIONS.join(", ")
                );
                let e = rpc_error(&Value::Null, INVALID_REQUEST, &msg);
                return self.mcp_json(conn, 400, &e, out);
            }
        }
        match head.method {
            Method::Post => self.mcp_post(conn, head, body, caller, now, out),
            Method::Get => self.mcp_get(conn, head, &caller, now, out),
            Method::Delete => self.mcp_delete(conn, head, &caller, out),
            _ => {
                let resp = Response::error(405, "Method not allowed")
                    .header("Allow", "GET, POST, DELETE, OPTIONS");
                self.mcp_respond(conn, resp, out)
            }
        }
    }

    /// See the module comment: no Origin (native clients), the allow-list, loopback, or
    /// `--public-url`.
    fn mcp_origin_ok(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let list = &self.cfg.allowed_ws_origins;
        if !list.is_empty() && origin_allowed(Some(origin), None, list) {
            return true;
        }
        let host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .map(|a| match a.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(""),
                None => a.split(':').next().unwrap_or(""),
            })
            .unwrap_or("")
            .to_ascii_lowercase();
        if matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1") {
            return true;
        }
        self.cfg.public_url.as_deref().is_some_and(|u| {
            let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
            let scheme = match scheme {
                "ws" => "http",
                "wss" => "https",
                s => s,
            };
            let authority = rest.split('/').next().unwrap_or("");
            origin_allowed(Some(origin), None, &[format!("{scheme}://{authority}")])
        })
    }

    fn owner_of(&self, caller: &Caller0) -> String {
        self.key_id_of(&caller.principal).unwrap_or_default()
    }

    /// The session a request names, checked against its key: Err is the response to send.
    fn mcp_session(&self, head: &Head, caller: &Caller0) -> Result<Rc<str>, (u16, Value)> {
        let Some(id) = head.header("mcp-session-id").map(str::trim) else {
            let e = rpc_error(
                &Value::Null,
                INVALID_REQUEST,
                "Mcp-Session-Id header is required (send initialize first)",
            );
            return Err((400, e));
        };
        let owner = self.owner_of(caller);
        match self.mcp.sessions.get_key_value(id) {
            // Another key's session is "not found" too: its existence is not ours to learn.
            Some((k, s)) if s.owner == owner => Ok(k.clone()),
            _ => Err((
                404,
                rpc_error(&Value::Null, INVALID_REQUEST, "Session not found"),
            )),
        }
    }

    fn mcp_post(
        &mut self,
        conn: ConnId,
        head: &Head,
        body: Vec<u8>,
        caller: Caller0,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if body.len() > self.cfg.mcp_max_message {
            let e = rpc_error(&Value::Null, INVALID_REQUEST, "Message too large");
            return self.mcp_json(conn, 413, &e, out);
        }
        if !accepts(head, "application/json") && !accepts(head, "text/event-stream") {
            let e = rpc_error(
                &Value::Null,
                INVALID_REQUEST,
                "Accept must list application/json and text/event-stream",
            );
            return self.mcp_json(conn, 406, &e, out);
        }
        let msg: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                let e = rpc_error(&Value::Null, PARSE_ERROR, "Parse error");
                return self.mcp_json(conn, 400, &e, out);
            }
        };
        drop(body);
        let is_init = msg.get("method").and_then(Value::as_str) == Some("initialize");
        if is_init {
            return self.mcp_initialize(conn, &msg, &caller, now, out);
        }
        let session = match self.mcp_session(head, &caller) {
            Ok(s) => s,
            Err((status, e)) => return self.mcp_json(conn, status, &e, out),
        };
        let version = match self.mcp.sessions.get_mut(&session) {
            Some(s) => {
                s.last_used = now;
                s.version
            }
            None => ASSUMED,
        };
        let (batch, messages) = match msg {
            Value::Array(items) => {
                // Batching was removed in 2025-06-18; only a 2025-03-26 session may batch.
                if version != "2025-03-26" || items.is_empty() {
                    let e = rpc_error(
                        &Value::Null,
                        INVALID_REQUEST,
                        "JSON-RPC batches are not supported by this protocol version",
                    );
                    return self.mcp_json(conn, 400, &e, out);
                }
                (true, items)
            }
            v => (false, vec![v]),
        };
        let ctx = Ctx {
            conn,
            session: session.clone(),
            caller: &caller,
        };
        let mut slots: Vec<Option<Value>> = Vec::new();
        let mut remaining = 0;
        let mut progress = None;
        for m in messages {
            let id = m.get("id").cloned();
            let method = m.get("method").and_then(Value::as_str).map(str::to_string);
            let valid = m.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
            match (method, id) {
                (Some(method), Some(id)) if valid && !id.is_null() => {
                    let params = m.get("params").cloned().unwrap_or(Value::Null);
                    if method == "tools/call" {
                        progress = params
                            .get("_meta")
                            .and_then(|x| x.get("progressToken"))
                            .cloned();
                    }
                    let slot = slots.len();
                    match self.mcp_call(&ctx, slot, &id, &method, params, now, out) {
                        Answer::Now(v) => slots.push(Some(v)),
                        Answer::Later => {
                            slots.push(None);
                            remaining += 1;
                        }
                    }
                }
                // Notifications and responses to our (no) requests: accepted, no answer.
                (Some(_), None) if valid => {}
                (None, _) if valid && (m.get("result").is_some() || m.get("error").is_some()) => {}
                (_, id) => slots.push(Some(rpc_error(
                    &id.unwrap_or(Value::Null),
                    INVALID_REQUEST,
                    "Invalid Request",
                ))),
            }
        }
        if slots.is_empty() {
            return self.mcp_respond(conn, Response::new(202), out);
        }
        if remaining == 0 {
            let v = if batch {
                Value::Array(slots.into_iter().flatten().collect())
            } else {
                slots.into_iter().flatten().next().unwrap_or(Value::Null)
            };
            return self.mcp_json(conn, 200, &v, out);
        }
        // Progress for a long call: answer on an SSE stream that carries a progress
        // notification now and the result when the world answers (transport: "Sending
        // Messages to the Server", item 5).
        let sse = !batch && progress.is_some() && accepts(head, "text/event-stream");
        if sse {
            out.push(Action::StartSse {
                conn,
                headers: vec![
                    ("Access-Control-Allow-Origin", "*".into()),
                    ("Mcp-Session-Id", session.to_string()),
                ],
            });
            let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": progress, "progress": 0, "total": 1,
                    "message": "Sent to the Foundry world"}});
            out.push(Action::SseWrite {
                conns: vec![conn],
                bytes: Rc::from(sse::event(None, None, &note.to_string())),
            });
        }
        self.mcp.exchanges.insert(
            conn,
            Exchange {
                session,
                slots,
                remaining,
                batch,
                sse,
                progress: if sse { progress } else { None },
            },
        );
    }

    fn mcp_initialize(
        &mut self,
        conn: ConnId,
        msg: &Value,
        caller: &Caller0,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let asked = msg
            .pointer("/params/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Version negotiation (lifecycle §"Version Negotiation"): the client's if we speak
        // it, else our latest, and the client decides whether to go on.
        let version = VERSIONS
            .iter()
            .copied()
            .find(|v| *v == asked)
            .unwrap_or(VERSIONS[0]);
        let owner = self.owner_of(caller);
        if let Err(msg) = self.mcp_make_room(&owner, now, out) {
            let e = rpc_error(&id, INVALID_REQUEST, &msg);
            return self.mcp_json(conn, 429, &e, out);
        }
        let sid: Rc<str> = Rc::from(crate::ids::random_hex(16));
        self.mcp.next_virtual += 1;
        let hub_conn = ConnId {
            key: VIRTUAL_BASE - self.mcp.next_virtual,
            gen: 0,
        };
        self.mcp.sessions.insert(
            sid.clone(),
            Session {
                owner,
                version,
                stream: None,
                hub_conn,
                subs: Vec::new(),
                inflight: 0,
                last_used: now,
            },
        );
        let result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": false},
                "resources": {"subscribe": true, "listChanged": true},
                "prompts": {"listChanged": false},
            },
            "serverInfo": {"name": "fvtt-relay", "title": "Foundry VTT relay",
                "version": env!("CARGO_PKG_VERSION")},
            "instructions": "Tools act on a live Foundry VTT world through fvtt-relay. Start with \
                world_info or the foundry://worlds resource; use search to find documents and \
                their uuids. Ask the user before deleting anything.",
        });
        let resp = Response::json(200, &ok(&id, result)).header("Mcp-Session-Id", sid.to_string());
        self.mcp_respond(conn, resp, out);
    }

    /// Keep a key under `--mcp-sessions-per-key`: sessions idle past `--mcp-session-idle`
    /// go first, then the least recently used one without a stream or a call in flight.
    fn mcp_make_room(
        &mut self,
        owner: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let idle = self.cfg.mcp_session_idle;
        let expired: Vec<Rc<str>> = self
            .mcp
            .sessions
            .iter()
            .filter(|(_, s)| s.stream.is_none() && s.inflight == 0)
            .filter(|(_, s)| now.saturating_duration_since(s.last_used) >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.mcp_end_session(&k, out);
        }
        let mine = self
            .mcp
            .sessions
            .values()
            .filter(|s| s.owner == owner)
            .count();
        if mine < self.cfg.mcp_sessions_per_key {
            return Ok(());
        }
        let lru = self
            .mcp
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == owner && s.stream.is_none() && s.inflight == 0)
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k.clone());
        match lru {
            Some(k) => {
                self.mcp_end_session(&k, out);
                Ok(())
            }
            None => Err(format!(
                "Too many MCP sessions for this key (max {}), all busy",
                self.cfg.mcp_sessions_per_key
            )),
        }
    }

    /// Forget a session: its stream ends, its hub subscriptions go.
    fn mcp_end_session(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(s) = self.mcp.sessions.remove(id) else {
            return;
        };
        if let Some(stream) = s.stream {
            self.mcp.streams.remove(&stream);
            out.push(Action::Close {
                conn: stream,
                close: WsClose::NORMAL,
            });
        }
        if !s.subs.is_empty() {
            self.mcp.subscribed = self.mcp.subscribed.saturating_sub(1);
            let updates = self.hub.drop_conn(s.hub_conn);
            self.send_counts(updates, out);
        }
    }

    /// A revoked key's sessions, or the admin key's ("") when it is rotated (relay/revoke.rs).
    pub(crate) fn mcp_end_sessions_of(&mut self, key_id: &str, out: &mut Vec<Action>) {
        let ids: Vec<Rc<str>> = self
            .mcp
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == key_id)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.mcp_end_session(&id, out);
        }
    }

    fn mcp_get(
        &mut self,
        conn: ConnId,
        head: &Head,
        caller: &Caller0,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let session = match self.mcp_session(head, caller) {
            Ok(s) => s,
            Err((status, e)) => return self.mcp_json(conn, status, &e, out),
        };
        if !accepts(head, "text/event-stream") {
            let e = rpc_error(
                &Value::Null,
                INVALID_REQUEST,
                "Accept must list text/event-stream",
            );
            return self.mcp_json(conn, 406, &e, out);
        }
        let Some(s) = self.mcp.sessions.get_mut(&session) else {
            return;
        };
        s.last_used = now;
        // One stream per session: a reconnecting client replaces a stream that may be dead.
        if let Some(old) = s.stream.replace(conn) {
            self.mcp.streams.remove(&old);
            out.push(Action::Close {
                conn: old,
                close: WsClose::NORMAL,
            });
        }
        self.mcp.streams.insert(conn, session);
        out.push(Action::StartSse {
            conn,
            headers: vec![
                ("Connection", "keep-alive".into()),
                ("Access-Control-Allow-Origin", "*".into()),
            ],
        });
        out.push(Action::SseWrite {
            conns: vec![conn],
            bytes: Rc::from(sse::comment("stream open")),
        });
    }

    fn mcp_delete(&mut self, conn: ConnId, head: &Head, caller: &Caller0, out: &mut Vec<Action>) {
        match self.mcp_session(head, caller) {
            Ok(s) => {
                self.mcp_end_session(&s, out);
                self.mcp_respond(conn, Response::new(204), out);
            }
            Err((status, e)) => self.mcp_json(conn, status, &e, out),
        }
    }

    /// A connection is gone: an exchange on it frees its session's in-flight slots (its
    /// waiters were dropped by `pending.drop_caller`); a stream leaves its session.
    pub(crate) fn mcp_closed(&mut self, conn: ConnId) {
        if let Some(ex) = self.mcp.exchanges.remove(&conn) {
            if let Some(s) = self.mcp.sessions.get_mut(&ex.session) {
                s.inflight = s.inflight.saturating_sub(ex.remaining);
            }
        }
        if let Some(sid) = self.mcp.streams.remove(&conn) {
            if let Some(s) = self.mcp.sessions.get_mut(&sid) {
                if s.stream == Some(conn) {
                    s.stream = None;
                }
            }
        }
    }

    // ------------------------------------------------------------------ methods

    #[allow(clippy::too_many_arguments)]
    fn mcp_call(
        &mut self,
        ctx: &Ctx<'_>,
        slot: usize,
        id: &Value,
        method: &str,
        params: Value,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Answer {
        let empty = Map::new();
        let p = params.as_object().unwrap_or(&empty);
        let r = match method {
            "ping" => ok(id, json!({})),
            "tools/list" => {
                let list: Vec<Value> = self
                    .mcp
                    .tools
                    .iter()
                    .filter(|t| self.tool_visible(t, ctx.caller))
                    .map(|t| t.listing.clone())
                    .collect();
                ok(id, json!({"tools": list}))
            }
            "tools/call" => return self.mcp_tool_call(ctx, slot, id, p, now, out),
            "resources/list" => ok(id, self.mcp_resource_list(ctx.caller, now)),
            "resources/templates/list" => ok(id, mcp_tools::templates()),
            "resources/read" => return self.mcp_resource_read(ctx, slot, id, p, now, out),
            "resources/subscribe" | "resources/unsubscribe" => {
                let sub = method == "resources/subscribe";
                match self.mcp_subscribe(ctx, p, sub, out) {
                    Ok(()) => ok(id, json!({})),
                    Err((code, msg)) => rpc_error(id, code, &msg),
                }
            }
            "prompts/list" => ok(id, mcp_tools::prompts()),
            "prompts/get" => {
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                let args = p
                    .get("arguments")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                match mcp_tools::prompt(name, args) {
                    Some(Ok(v)) => ok(id, v),
                    Some(Err(msg)) => rpc_error(id, INVALID_PARAMS, &msg),
                    None => rpc_error(id, INVALID_PARAMS, &format!("Unknown prompt: {name}")),
                }
            }
            "initialize" => rpc_error(id, INVALID_REQUEST, "Already initialized"),
            _ => rpc_error(id, METHOD_NOT_FOUND, &format!("Method not found: {method}")),
        };
        Answer::Now(r)
    }

    fn tool_visible(&self, t: &Tool, caller: &Caller0) -> bool {
        (!t.code || self.cfg.mcp_allow_code)
            && (t.scope.is_empty() || caller.scopes.contains(&t.scope))
    }

    #[allow(clippy::too_many_arguments)]
    fn mcp_tool_call(
        &mut self,
        ctx: &Ctx<'_>,
        slot: usize,
        id: &Value,
        p: &Map<String, Value>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Answer {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(idx) = self.mcp.tools.iter().position(|t| t.name == name) else {
            return Answer::Now(rpc_error(
                id,
                INVALID_PARAMS,
                &format!("Unknown tool: {name}"),
            ));
        };
        let args = match p.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Answer::Now(rpc_error(id, INVALID_PARAMS, "arguments must be an object"))
            }
        };
        let tool = &self.mcp.tools[idx];
        if tool.code && !self.cfg.mcp_allow_code {
            let msg = format!(
                "The tool {name} runs code in the world and is disabled on this relay; the \
                 owner can enable it with --mcp-allow-code."
            );
            return Answer::Now(ok(id, tool_error(&msg)));
        }
        if !tool.scope.is_empty() && !ctx.caller.scopes.contains(&tool.scope) {
            let msg = format!(
                "This API key lacks the scope '{}' that {name} needs. Ask the relay owner to add \
                 it to the key on the admin page, or use another tool.",
                tool.scope
            );
            return Answer::Now(ok(id, tool_error(&msg)));
        }
        let inflight = self
            .mcp
            .sessions
            .get(&ctx.session)
            .map_or(0, |s| s.inflight);
        if inflight >= self.cfg.mcp_max_inflight {
            let msg = format!(
                "Too many tool calls in flight on this session (at most {}); wait for one to \
                 finish and try again.",
                self.cfg.mcp_max_inflight
            );
            return Answer::Now(ok(id, tool_error(&msg)));
        }
        let mut params = match forward::extract_params(&tool.args_route, &[], Some(&args), &[]) {
            Ok(p) => p,
            Err(ParamError { body, .. }) => {
                let why = body
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("invalid");
                let msg = format!("Invalid arguments for {name}: {why}");
                return Answer::Now(ok(id, tool_error(&msg)));
            }
        };
        let routes = Rc::clone(&self.routes);
        let Some(route) = routes.routes().get(tool.route) else {
            return Answer::Now(rpc_error(id, INTERNAL_ERROR, "route missing"));
        };
        if let Err(ParamError { body, .. }) =
            forward::check_extra_scope(route, &params, &ctx.caller.scopes)
        {
            let why = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            return Answer::Now(ok(id, tool_error(why)));
        }
        let explicit = params
            .get("clientId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let (world, link) = match self.resolve_client(explicit.as_deref(), ctx.caller) {
            Ok(x) => x,
            Err((status, body)) => {
                return Answer::Now(ok(id, tool_error(&world_trouble(status, &body))))
            }
        };
        params.remove("clientId");
        let request_id = self.req_ids.next(&route.ws_type);
        let msg = forward::build_message(
            route,
            params,
            &request_id,
            &ctx.caller.scopes,
            ctx.caller.user_id.as_deref(),
        );
        let timeout = if route.timeout_ms > 0 {
            Duration::from_millis(route.timeout_ms)
        } else {
            self.cfg.request_timeout_default
        }
        .min(self.cfg.max_request_timeout);
        self.mcp_dispatch(
            ctx,
            slot,
            id,
            Op::Tool(idx),
            (&world, link),
            request_id,
            msg,
            now + timeout,
            out,
        );
        Answer::Later
    }

    #[allow(clippy::too_many_arguments)]
    fn mcp_dispatch(
        &mut self,
        ctx: &Ctx<'_>,
        slot: usize,
        id: &Value,
        op: Op,
        (world, link): (&str, ConnId),
        request_id: String,
        msg: Vec<u8>,
        deadline: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(s) = self.mcp.sessions.get_mut(&ctx.session) {
            s.inflight += 1;
        }
        let caller = Caller::Mcp(Box::new(McpWait {
            conn: ctx.conn,
            session: ctx.session.clone(),
            slot,
            rpc_id: id.clone(),
            op,
        }));
        self.dispatch_to_world((world, link), request_id, caller, msg, deadline, out);
    }

    /// The worlds this caller may see: all, or its key's.
    fn mcp_visible_worlds(&self, caller: &Caller0, now: Instant) -> Vec<Value> {
        let only = (caller.client_ids.len() == 1).then(|| caller.client_ids[0].as_str());
        let mut list = self.clients_json(only, now);
        if caller.client_ids.len() > 1 {
            list.retain(|c| {
                c.get("clientId")
                    .and_then(Value::as_str)
                    .is_some_and(|id| caller.client_ids.iter().any(|x| x == id))
            });
        }
        list
    }

    fn mcp_resource_list(&self, caller: &Caller0, now: Instant) -> Value {
        let mut list = vec![json!({"uri": "foundry://worlds", "name": "worlds",
            "title": "Foundry worlds",
            "description": "The worlds this key may use, online or not.",
            "mimeType": "application/json"})];
        for w in self.mcp_visible_worlds(caller, now) {
            let Some(cid) = w.get("clientId").and_then(Value::as_str) else {
                continue;
            };
            if w.get("isOnline") == Some(&Value::Bool(false)) {
                continue;
            }
            let title = w.get("worldTitle").and_then(Value::as_str).unwrap_or(cid);
            for (suffix, name, desc) in mcp_tools::WORLD_RESOURCES {
                list.push(json!({"uri": mcp_tools::world_uri(cid, suffix),
                    "name": format!("{cid}/{suffix}"), "title": format!("{title}: {name}"),
                    "description": desc, "mimeType": "application/json"}));
            }
        }
        json!({"resources": list})
    }

    /// Checks a URI names a world this caller may use.
    fn mcp_resource_world(&self, uri: &str, caller: &Caller0) -> Result<Res, (i64, String)> {
        let res = Res::parse(uri)
            .ok_or_else(|| (RESOURCE_NOT_FOUND, format!("Resource not found: {uri}")))?;
        if let Res::World { world, .. } = &res {
            let allowed = caller.client_ids.is_empty() || caller.client_ids.contains(world);
            if !allowed || !self.world_known(world) {
                return Err((RESOURCE_NOT_FOUND, format!("Resource not found: {uri}")));
            }
        }
        Ok(res)
    }

    #[allow(clippy::too_many_arguments)]
    fn mcp_resource_read(
        &mut self,
        ctx: &Ctx<'_>,
        slot: usize,
        id: &Value,
        p: &Map<String, Value>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Answer {
        let uri = p
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = match self.mcp_resource_world(&uri, ctx.caller) {
            Ok(r) => r,
            Err((code, msg)) => return Answer::Now(rpc_error(id, code, &msg)),
        };
        let (world, part) = match res {
            Res::Worlds => {
                let text = Value::Array(self.mcp_visible_worlds(ctx.caller, now)).to_string();
                let c = json!({"contents": [{"uri": uri, "mimeType": "application/json", "text": text}]});
                return Answer::Now(ok(id, c));
            }
            Res::World { world, part } => (world, part),
        };
        let busy = self
            .mcp
            .sessions
            .get(&ctx.session)
            .is_some_and(|s| s.inflight >= self.cfg.mcp_max_inflight);
        if busy {
            let msg = "Too many calls in flight on this session; wait for one to finish";
            return Answer::Now(rpc_error(id, INTERNAL_ERROR, msg));
        }
        let Some(link) = self.worlds.get(&world).map(|l| l.conn) else {
            let msg = format!("World {world} is offline: the GM's Foundry tab is not connected");
            return Answer::Now(rpc_error(id, INTERNAL_ERROR, &msg));
        };
        let (ws_type, extra) = Res::module_read(&part);
        let Some(route) = self
            .routes
            .routes()
            .iter()
            .find(|r| r.ws_type == ws_type)
            .cloned()
        else {
            return Answer::Now(rpc_error(id, INTERNAL_ERROR, "route missing"));
        };
        if !route.scope.is_empty() && !ctx.caller.scopes.contains(&route.scope) {
            let msg = format!(
                "This API key lacks the scope '{}' to read {uri}",
                route.scope
            );
            return Answer::Now(rpc_error(id, INVALID_PARAMS, &msg));
        }
        let params = extra.as_object().cloned().unwrap_or_default();
        let request_id = self.req_ids.next(ws_type);
        let msg = forward::build_message(
            &route,
            params,
            &request_id,
            &ctx.caller.scopes,
            ctx.caller.user_id.as_deref(),
        );
        let timeout =
            Duration::from_millis(route.timeout_ms.max(1)).min(self.cfg.max_request_timeout);
        self.mcp_dispatch(
            ctx,
            slot,
            id,
            Op::Resource(uri),
            (&world, link),
            request_id,
            msg,
            now + timeout,
            out,
        );
        Answer::Later
    }

    fn mcp_subscribe(
        &mut self,
        ctx: &Ctx<'_>,
        p: &Map<String, Value>,
        subscribe: bool,
        out: &mut Vec<Action>,
    ) -> Result<(), (i64, String)> {
        let uri = p
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = self.mcp_resource_world(&uri, ctx.caller)?;
        let user = ctx.caller.user_id.clone();
        let Some(s) = self.mcp.sessions.get_mut(&ctx.session) else {
            return Ok(());
        };
        let had_any = !s.subs.is_empty();
        if subscribe {
            if s.subs.iter().any(|(u, _)| *u == uri) {
                return Ok(());
            }
            let channels: &[Channel] = match &res {
                Res::World { part, .. } => match part {
                    Part::Chat => &[Channel::Chat, Channel::Roll],
                    Part::Encounters => &[Channel::Combat],
                    Part::Scene => &[Channel::Scene],
                    Part::Entity(_) => &[Channel::Actor],
                    Part::Info | Part::Players => &[],
                },
                Res::Worlds => &[],
            };
            let hub_conn = s.hub_conn;
            let mut ids = Vec::new();
            let mut updates = Vec::new();
            if let Res::World { world, .. } = &res {
                for ch in channels {
                    let (sid, u) = self.hub.subscribe_sse(
                        hub_conn,
                        world,
                        *ch,
                        Filters::default(),
                        user.as_deref(),
                    );
                    ids.push(sid);
                    updates.extend(u);
                }
            }
            if let Some(s) = self.mcp.sessions.get_mut(&ctx.session) {
                s.subs.push((uri, ids));
            }
            if !had_any {
                self.mcp.subscribed += 1;
            }
            self.send_counts(updates, out);
        } else {
            let Some(pos) = s.subs.iter().position(|(u, _)| *u == uri) else {
                return Ok(());
            };
            let (_, ids) = s.subs.remove(pos);
            let now_empty = s.subs.is_empty();
            let mut updates = Vec::new();
            for sid in ids {
                updates.extend(self.hub.unsubscribe(sid));
            }
            if now_empty {
                self.mcp.subscribed = self.mcp.subscribed.saturating_sub(1);
            }
            self.send_counts(updates, out);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ replies and events

    /// The world answered a forwarded MCP call.
    pub(crate) fn mcp_reply(&mut self, w: McpWait, text: &str, out: &mut Vec<Action>) {
        let answer = match &w.op {
            Op::Tool(idx) => {
                let route = self
                    .mcp
                    .tools
                    .get(*idx)
                    .and_then(|t| self.routes.routes().get(t.route));
                let Some(route) = route else { return };
                let reply = forward::reply_to_http(route, &[], text.as_bytes());
                ok(&w.rpc_id, tool_result(reply.status, &reply.body))
            }
            Op::Resource(uri) => {
                // Every JSON route shapes replies alike (secrets scrubbed, 400 on `error`).
                let route = self
                    .routes
                    .routes()
                    .iter()
                    .find(|r| r.kind == Kind::Forward);
                let Some(route) = route else { return };
                let reply = forward::reply_to_http(route, &[], text.as_bytes());
                let mut v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
                if let Some(m) = v.as_object_mut() {
                    m.remove("type");
                    m.remove("requestId");
                }
                if reply.status >= 400 {
                    let why = v.get("error").map(err_text).unwrap_or_default();
                    rpc_error(
                        &w.rpc_id,
                        INTERNAL_ERROR,
                        &format!("The world refused to read {uri}: {why}"),
                    )
                } else {
                    ok(
                        &w.rpc_id,
                        json!({"contents": [{"uri": uri,
                        "mimeType": "application/json", "text": v.to_string()}]}),
                    )
                }
            }
        };
        self.mcp_complete(w, answer, out);
    }

    /// A forwarded MCP call failed: timed out (408), world gone (502) or relay stopping.
    pub(crate) fn mcp_fail(&mut self, w: McpWait, status: u16, out: &mut Vec<Action>) {
        let text = match status {
            408 => {
                "The Foundry world did not answer in time; it may be busy. A change may \
                    still have been made: check before retrying."
            }
            502 => {
                "The Foundry world disconnected before answering; the change may or may not \
                    have been made. Check once it is back (foundry://worlds shows it)."
            }
            _ => "The relay is shutting down; try again in a moment.",
        };
        let answer = match w.op {
            Op::Tool(_) => ok(&w.rpc_id, tool_error(text)),
            Op::Resource(_) => rpc_error(&w.rpc_id, INTERNAL_ERROR, text),
        };
        self.mcp_complete(w, answer, out);
    }

    fn mcp_complete(&mut self, w: McpWait, answer: Value, out: &mut Vec<Action>) {
        if let Some(s) = self.mcp.sessions.get_mut(&w.session) {
            s.inflight = s.inflight.saturating_sub(1);
        }
        let Some(ex) = self.mcp.exchanges.get_mut(&w.conn) else {
            return;
        };
        if let Some(slot) = ex.slots.get_mut(w.slot) {
            *slot = Some(answer);
        }
        ex.remaining = ex.remaining.saturating_sub(1);
        if ex.remaining > 0 {
            return;
        }
        let Some(ex) = self.mcp.exchanges.remove(&w.conn) else {
            return;
        };
        let v = if ex.batch {
            Value::Array(ex.slots.into_iter().flatten().collect())
        } else {
            ex.slots.into_iter().flatten().next().unwrap_or(Value::Null)
        };
        if ex.sse {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": ex.progress, "progress": 1, "total": 1,
                    "message": "The world answered"}});
            let mut bytes = sse::event(None, None, &note.to_string());
            bytes.extend(sse::event(None, None, &v.to_string()));
            out.push(Action::SseWrite {
                conns: vec![w.conn],
                bytes: Rc::from(bytes),
            });
            out.push(Action::Close {
                conn: w.conn,
                close: WsClose::NORMAL,
            });
        } else {
            self.mcp_json(w.conn, 200, &v, out);
        }
    }

    /// A world event: `notifications/resources/updated` to the sessions subscribed to the
    /// resources it changes (on their GET stream; a session without one misses it, as the
    /// transport allows).
    pub(crate) fn mcp_event(&self, world: &str, kind: &str, data: &Value, out: &mut Vec<Action>) {
        if self.mcp.subscribed == 0 {
            return;
        }
        let uri = match kind {
            "chat-event" | "roll-data" => mcp_tools::world_uri(world, "chat"),
            "combat-event" => mcp_tools::world_uri(world, "encounters"),
            "scene-event" => mcp_tools::world_uri(world, "scene"),
            "actor-event" => match data.get("actorUuid").and_then(Value::as_str) {
                Some(a) => mcp_tools::world_uri(world, &format!("entity/{a}")),
                None => return,
            },
            _ => return,
        };
        let conns: Vec<ConnId> = self
            .mcp
            .sessions
            .values()
            .filter(|s| s.subs.iter().any(|(u, _)| *u == uri))
            .filter_map(|s| s.stream)
            .collect();
        if conns.is_empty() {
            return;
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
            "params": {"uri": uri}});
        out.push(Action::SseWrite {
            conns,
            bytes: Rc::from(sse::event(None, None, &note.to_string())),
        });
    }

    /// A world came online or went offline: its resources appeared or went away, so the
    /// streams of sessions whose key may see it get `notifications/resources/list_changed`.
    pub(crate) fn mcp_world_changed(&self, world: &str, out: &mut Vec<Action>) {
        let conns: Vec<ConnId> = self
            .mcp
            .sessions
            .values()
            .filter(|s| s.stream.is_some())
            .filter(|s| {
                s.owner.is_empty()
                    || self.state.api_keys.iter().any(|k| {
                        k.id == s.owner
                            && (k.client_ids.is_empty() || k.client_ids.iter().any(|c| c == world))
                    })
            })
            .filter_map(|s| s.stream)
            .collect();
        if conns.is_empty() {
            return;
        }
        let note = r#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#;
        out.push(Action::SseWrite {
            conns,
            bytes: Rc::from(sse::event(None, None, note)),
        });
    }

    /// Hub deliveries never go to the virtual subscribers of MCP sessions.
    pub(crate) fn mcp_strip_virtual(&self, conns: &mut Vec<ConnId>) {
        if self.mcp.subscribed > 0 {
            conns.retain(|c| c.key < VIRTUAL_BASE / 2);
        }
    }
}

fn err_text(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The module's reply (already scrubbed of secrets by `reply_to_http`) as a tool result.
fn tool_result(status: u16, body: &[u8]) -> Value {
    let mut v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    };
    if let Some(m) = v.as_object_mut() {
        m.remove("type");
        m.remove("requestId");
    }
    if status >= 400 {
        let why = v
            .get("error")
            .map(err_text)
            .unwrap_or_else(|| v.to_string());
        return tool_error(&format!("The Foundry world refused the request: {why}"));
    }
    let text = v.to_string();
    let structured = match v {
        Value::Object(m) => Value::Object(m),
        other => json!({"result": other}),
    };
    json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": false})
}

/// `resolve_client`'s refusals as sentences for a model (with the relay's reason why a world
/// is offline, when it gives one).
fn world_trouble(status: u16, body: &Value) -> String {
    let err = body.get("error").and_then(Value::as_str).unwrap_or("");
    const NONE: &str = "No connected Foundry clients found";
    match status {
        404 if err.starts_with(NONE) => {
            let why = err.trim_start_matches(NONE).trim_start_matches('.').trim();
            let mut s = "No Foundry world is connected to the relay right now: the GM's browser \
                with the REST API module must be open. Try again later."
                .to_string();
            if !why.is_empty() {
                s = format!("{s} ({why})");
            }
            s
        }
        400 => format!(
            "Several worlds are connected; pass clientId, one of {}.",
            body.get("connectedClients").unwrap_or(&Value::Null)
        ),
        403 => "This API key may not use that world; omit clientId or pick one of the \
            key's worlds (see foundry://worlds)."
            .into(),
        _ => {
            let world = body.get("clientId").and_then(Value::as_str).unwrap_or("?");
            let mut s = format!(
                "World {world} is not connected right now (its GM tab is closed); try again later."
            );
            if let Some(why) = body.get("reason").and_then(Value::as_str) {
                s = format!("{s} ({why})");
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::harness::*;
    use super::*;
    use crate::config::Config;
    use crate::relay::io::{Input, Timer};

    const V: &str = "2025-11-25";

    fn post(h: &mut H, conn: ConnId, key: &str, sid: Option<&str>, body: &str) -> Vec<Action> {
        let mut hs = vec![
            ("x-api-key", key),
            ("accept", "application/json, text/event-stream"),
            ("content-type", "application/json"),
        ];
        if let Some(s) = sid {
            hs.push(("mcp-session-id", s));
        }
        let hd = head(Method::Post, "/mcp", &hs);
        h.input(Input::Request {
            conn,
            peer: PEER,
            head: &hd,
            body: body.as_bytes().to_vec(),
        })
    }

    fn resp(out: &[Action], conn: ConnId) -> (u16, Value, Vec<(&'static str, String)>) {
        out.iter()
            .find_map(|a| match a {
                Action::Respond { conn: c, resp } if *c == conn => Some((
                    resp.status,
                    serde_json::from_slice(resp.body.as_bytes()).unwrap_or(Value::Null),
                    resp.headers.clone(),
                )),
                _ => None,
            })
            .unwrap_or((0, Value::Null, vec![]))
    }

    fn init(h: &mut H, key: &str, version: &str) -> String {
        let c = h.conn();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}});
        let out = post(h, c, key, None, &body.to_string());
        let (status, v, headers) = resp(&out, c);
        assert_eq!(status, 200, "{v}");
        assert!(VERSIONS.contains(&v["result"]["protocolVersion"].as_str().unwrap_or("")));
        headers
            .iter()
            .find(|(n, _)| *n == "Mcp-Session-Id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn call(h: &mut H, key: &str, sid: &str, method: &str, params: Value) -> (ConnId, Vec<Action>) {
        let c = h.conn();
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        let out = post(h, c, key, Some(sid), &body.to_string());
        (c, out)
    }

    /// The module message sent to `link`, parsed.
    fn sent_to(out: &[Action], link: ConnId) -> Value {
        bytes_to(out, link)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v.get("requestId").is_some())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn initialize_negotiates_and_sessions_are_checked() {
        let mut h = H::new(Config::default());
        let key = h.api_key.clone();
        let sid = init(&mut h, &key, "2025-06-18");
        assert_eq!(sid.len(), 32);
        // An unknown revision gets our latest.
        let c = h.conn();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "1999-01-01", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let (_, v, _) = resp(&post(&mut h, c, &key, None, &body.to_string()), c);
        assert_eq!(v["result"]["protocolVersion"], V);
        // No session id: 400; unknown: 404; another key's session: 404.
        let c = h.conn();
        let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
        assert_eq!(resp(&post(&mut h, c, &key, None, ping), c).0, 400);
        assert_eq!(resp(&post(&mut h, c, &key, Some("nope"), ping), c).0, 404);
        let other = h.key(&["entity:read"], &[], None);
        assert_eq!(resp(&post(&mut h, c, &other, Some(&sid), ping), c).0, 404);
        let (s, v, _) = resp(&post(&mut h, c, &key, Some(&sid), ping), c);
        assert_eq!((s, v["result"].clone()), (200, json!({})));
        // Notifications are accepted with 202 and no body.
        let n = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(resp(&post(&mut h, c, &key, Some(&sid), n), c).0, 202);
        // Bad key: 401; bad JSON: parse error.
        assert_eq!(resp(&post(&mut h, c, "wrong", Some(&sid), ping), c).0, 401);
        let (s, v, _) = resp(&post(&mut h, c, &key, Some(&sid), "{"), c);
        assert_eq!((s, v["error"]["code"].clone()), (400, json!(PARSE_ERROR)));
        // Unknown method.
        let (_, out) = call(&mut h, &key, &sid, "nope/nope", json!({}));
        let (_, v, _) = resp(&out, c_of(&out));
        assert_eq!(v["error"]["code"], METHOD_NOT_FOUND);
    }

    fn c_of(out: &[Action]) -> ConnId {
        out.iter()
            .find_map(|a| match a {
                Action::Respond { conn, .. } => Some(*conn),
                _ => None,
            })
            .unwrap_or(c(0))
    }

    #[test]
    fn origin_and_version_header_and_batches() {
        let mut h = H::new(Config::default());
        let key = h.api_key.clone();
        let c0 = h.conn();
        let hd = head(
            Method::Post,
            "/mcp",
            &[
                ("x-api-key", &key),
                ("origin", "https://evil.example"),
                ("host", "relay"),
            ],
        );
        let out = h.input(Input::Request {
            conn: c0,
            peer: PEER,
            head: &hd,
            body: b"{}".to_vec(),
        });
        assert_eq!(resp(&out, c0).0, 403);
        let sid = init(&mut h, &key, V);
        let hd = head(
            Method::Post,
            "/mcp",
            &[
                ("x-api-key", &key),
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2024-01-01"),
            ],
        );
        let ping = br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#.to_vec();
        let out = h.input(Input::Request {
            conn: c0,
            peer: PEER,
            head: &hd,
            body: ping,
        });
        assert_eq!(resp(&out, c0).0, 400);
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
        assert_eq!(resp(&post(&mut h, c0, &key, Some(&sid), batch), c0).0, 400);
        let old = init(&mut h, &key, "2025-03-26");
        let (s, v, _) = resp(&post(&mut h, c0, &key, Some(&old), batch), c0);
        assert_eq!(s, 200);
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn tool_call_is_forwarded_and_the_reply_is_the_result() {
        let mut h = H::new(Config::default());
        let key = h.api_key.clone();
        let (link, _) = h.world_online(WORLD);
        let sid = init(&mut h, &key, V);
        let (_, out) = call(&mut h, &key, &sid, "tools/list", json!({}));
        let (_, v, _) = resp(&out, c_of(&out));
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(&"roll_dice"));
        assert!(
            !names.contains(&"execute_js"),
            "code tools are off by default"
        );
        let (conn, out) = call(
            &mut h,
            &key,
            &sid,
            "tools/call",
            json!({"name": "roll_dice", "arguments": {"formula": "1d20"}}),
        );
        assert!(resp(&out, conn).0 == 0, "no answer before the world's");
        let msg = sent_to(&out, link);
        assert_eq!(msg["type"], "roll");
        assert_eq!(msg["formula"], "1d20");
        let rid = msg["requestId"].as_str().unwrap_or("").to_string();
        let reply = json!({"type": "roll-result", "requestId": rid,
            "data": {"roll": {"formula": "1d20", "total": 7}}, "apiKey": "secret"});
        let out = h.text(link, &reply.to_string());
        let (s, v, _) = resp(&out, conn);
        assert_eq!(s, 200);
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"]["isError"], false);
        assert_eq!(v["result"]["structuredContent"]["data"]["roll"]["total"], 7);
        assert!(
            v["result"]["structuredContent"].get("apiKey").is_none(),
            "secrets scrubbed"
        );
        // The module's error is a tool error.
        let (conn, out) = call(
            &mut h,
            &key,
            &sid,
            "tools/call",
            json!({"name": "get_entity", "arguments": {"uuid": "Actor.x"}}),
        );
        let rid = sent_to(&out, link)["requestId"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let out = h.text(
            link,
            &json!({"type": "entity-result", "requestId": rid, "error": "Entity not found"})
                .to_string(),
        );
        let (_, v, _) = resp(&out, conn);
        assert_eq!(v["result"]["isError"], true);
        assert!(v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("Entity not found"));
        // Bad arguments are a tool error too; an unknown tool a protocol error.
        let (conn, out) = call(
            &mut h,
            &key,
            &sid,
            "tools/call",
            json!({"name": "roll_dice", "arguments": {}}),
        );
        assert_eq!(resp(&out, conn).1["result"]["isError"], true);
        let (conn, out) = call(&mut h, &key, &sid, "tools/call", json!({"name": "nope"}));
        assert_eq!(resp(&out, conn).1["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn scope_code_offline_timeout_and_disconnect_are_tool_errors() {
        let mut h = H::new(Config::default());
        let reader = h.key(&["entity:read"], &[], None);
        let sid = init(&mut h, &reader, V);
        let text = |out: &[Action], conn| {
            resp(out, conn).1["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let (conn, out) = call(
            &mut h,
            &reader,
            &sid,
            "tools/call",
            json!({"name": "roll_dice", "arguments": {"formula": "1d4"}}),
        );
        assert!(text(&out, conn).contains("lacks the scope 'roll:execute'"));
        let (conn, out) = call(
            &mut h,
            &reader,
            &sid,
            "tools/call",
            json!({"name": "execute_js", "arguments": {"script": "1"}}),
        );
        assert!(text(&out, conn).contains("--mcp-allow-code"));
        // No world online.
        let (conn, out) = call(
            &mut h,
            &reader,
            &sid,
            "tools/call",
            json!({"name": "get_entity", "arguments": {"uuid": "Actor.x"}}),
        );
        assert!(
            text(&out, conn).contains("No Foundry world is connected"),
            "{}",
            text(&out, conn)
        );
        // Timeout.
        let (link, _) = h.world_online(WORLD);
        let (conn, out) = call(
            &mut h,
            &reader,
            &sid,
            "tools/call",
            json!({"name": "get_entity", "arguments": {"uuid": "Actor.x"}}),
        );
        let (at, timer) = out
            .iter()
            .find_map(|a| match a {
                Action::Arm {
                    at,
                    timer: t @ Timer::Request(_),
                } => Some((*at, t.clone())),
                _ => None,
            })
            .expect("timer armed");
        h.now = at;
        let out = h.input(Input::Timer(timer));
        assert!(text(&out, conn).contains("did not answer in time"));
        // World gone mid-call.
        let (conn, _) = call(
            &mut h,
            &reader,
            &sid,
            "tools/call",
            json!({"name": "get_entity", "arguments": {"uuid": "Actor.x"}}),
        );
        let out = h.input(Input::Closed { conn: link });
        assert!(text(&out, conn).contains("disconnected before answering"));
        // In-flight slots were all given back.
        assert_eq!(
            h.relay
                .mcp
                .sessions
                .values()
                .map(|s| s.inflight)
                .sum::<usize>(),
            0
        );
    }

    #[test]
    fn subscriptions_drive_counts_and_updates() {
        let mut h = H::new(Config::default());
        let key = h.api_key.clone();
        let (link, _) = h.world_online(WORLD);
        let sid = init(&mut h, &key, V);
        let stream = h.conn();
        let hd = head(
            Method::Get,
            "/mcp",
            &[
                ("x-api-key", &key),
                ("mcp-session-id", &sid),
                ("accept", "text/event-stream"),
            ],
        );
        let out = h.input(Input::Request {
            conn: stream,
            peer: PEER,
            head: &hd,
            body: vec![],
        });
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::StartSse { conn, .. } if *conn == stream)));
        let uri = format!("foundry://worlds/{WORLD}/chat");
        let (_, out) = call(
            &mut h,
            &key,
            &sid,
            "resources/subscribe",
            json!({"uri": uri}),
        );
        assert!(counts_to(&out, link).contains(&("chat-events".to_string(), 1)));
        // A plain SSE stream on chat too: it must get the event, the virtual subscriber not.
        let (plain, _) = h.sse(&format!("/chat/subscribe?clientId={WORLD}"));
        let ev = json!({"type": "chat-event", "data": {"eventType": "create",
            "data": {"id": "m1", "content": "hi"}}});
        let out = h.text(link, &ev.to_string());
        let got = bytes_to(&out, stream);
        assert!(
            got.contains("notifications/resources/updated") && got.contains(&uri),
            "{got}"
        );
        assert!(bytes_to(&out, plain).contains("chat-create"));
        for a in &out {
            if let Action::SseWrite { conns, .. } = a {
                assert!(
                    conns.iter().all(|c| c.key < VIRTUAL_BASE / 2),
                    "virtual conn leaked"
                );
            }
        }
        // Reading a world resource is a forwarded request.
        let (conn, out) = call(&mut h, &key, &sid, "resources/read", json!({"uri": uri}));
        let msg = sent_to(&out, link);
        assert_eq!(msg["type"], "chat-messages");
        let rid = msg["requestId"].as_str().unwrap_or("").to_string();
        let out = h.text(
            link,
            &json!({"type": "chat-messages-result", "requestId": rid, "data": {"messages": []}})
                .to_string(),
        );
        let (_, v, _) = resp(&out, conn);
        assert_eq!(v["result"]["contents"][0]["uri"], uri);
        // Ending the session drops the subscription and the stream.
        let c2 = h.conn();
        let hd = head(
            Method::Delete,
            "/mcp",
            &[("x-api-key", &key), ("mcp-session-id", &sid)],
        );
        let out = h.input(Input::Request {
            conn: c2,
            peer: PEER,
            head: &hd,
            body: vec![],
        });
        assert_eq!(resp(&out, c2).0, 204);
        assert!(close_of(&out, stream).is_some());
        assert!(
            counts_to(&out, link).contains(&("chat-events".to_string(), 1)),
            "the plain stream remains"
        );
        assert_eq!(h.relay.mcp.session_count(), 0);
    }

    #[test]
    fn worlds_coming_and_going_change_the_resource_list() {
        let mut h = H::new(Config::default());
        let full = h.api_key.clone();
        let bound = h.key(&["entity:read"], &[OTHER], None);
        let mut streams = Vec::new();
        for key in [&full, &bound] {
            let sid = init(&mut h, key, V);
            let stream = h.conn();
            let hd = head(
                Method::Get,
                "/mcp",
                &[
                    ("x-api-key", key),
                    ("mcp-session-id", &sid),
                    ("accept", "text/event-stream"),
                ],
            );
            h.input(Input::Request {
                conn: stream,
                peer: PEER,
                head: &hd,
                body: vec![],
            });
            streams.push(stream);
        }
        let (link, out) = h.world_online(WORLD);
        assert!(bytes_to(&out, streams[0]).contains("notifications/resources/list_changed"));
        assert!(
            !bytes_to(&out, streams[1]).contains("list_changed"),
            "not that key's world"
        );
        let out = h.input(Input::Closed { conn: link });
        assert!(bytes_to(&out, streams[0]).contains("notifications/resources/list_changed"));
    }

    #[test]
    fn a_key_bound_to_a_world_is_held_to_it() {
        let mut h = H::new(Config::default());
        let (_link, _) = h.world_online(WORLD);
        let (other_link, _) = h.world_online(OTHER);
        let bound = h.key(&["entity:read"], &[OTHER], None);
        let sid = init(&mut h, &bound, V);
        let (conn, out) = call(
            &mut h,
            &bound,
            &sid,
            "tools/call",
            json!({"name": "get_entity", "arguments": {"uuid": "Actor.x", "clientId": WORLD}}),
        );
        let v = resp(&out, conn).1;
        assert_eq!(v["result"]["isError"], true);
        assert!(v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("may not use"));
        // Without clientId the key's own world is used, though two are online.
        let (_, out) = call(
            &mut h,
            &bound,
            &sid,
            "tools/call",
            json!({"name": "get_entity", "arguments": {"uuid": "Actor.x"}}),
        );
        assert_eq!(sent_to(&out, other_link)["type"], "entity");
        // Resources of another world do not exist for it.
        let (conn, out) = call(
            &mut h,
            &bound,
            &sid,
            "resources/read",
            json!({"uri": format!("foundry://worlds/{WORLD}/chat")}),
        );
        assert_eq!(resp(&out, conn).1["error"]["code"], RESOURCE_NOT_FOUND);
        let (conn, out) = call(&mut h, &bound, &sid, "resources/list", json!({}));
        let list = resp(&out, conn).1["result"].to_string();
        assert!(list.contains(OTHER) && !list.contains(WORLD), "{list}");
    }

    #[test]
    fn a_batch_waits_for_its_forwarded_calls_and_keeps_their_order() {
        let mut h = H::new(Config::default());
        let key = h.api_key.clone();
        let (link, _) = h.world_online(WORLD);
        let sid = init(&mut h, &key, "2025-03-26");
        let conn = h.conn();
        let batch = json!([
            {"jsonrpc": "2.0", "id": "a", "method": "tools/call",
             "params": {"name": "roll_dice", "arguments": {"formula": "1d6"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "b", "method": "ping"},
        ]);
        let out = post(&mut h, conn, &key, Some(&sid), &batch.to_string());
        assert_eq!(resp(&out, conn).0, 0, "held until the world answers");
        let rid = sent_to(&out, link)["requestId"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let out = h.text(
            link,
            &json!({"type": "roll-result", "requestId": rid, "data": {}}).to_string(),
        );
        let (s, v, _) = resp(&out, conn);
        assert_eq!(s, 200);
        let ids: Vec<Value> = v
            .as_array()
            .map(|a| a.iter().map(|x| x["id"].clone()).collect())
            .unwrap_or_default();
        assert_eq!(ids, vec![json!("a"), json!("b")]);
        assert_eq!(v[0]["result"]["isError"], false);
    }

    #[test]
    fn revoking_a_key_ends_its_sessions() {
        let mut h = H::new(Config::default());
        let other = h.key(&["entity:read"], &[], None);
        let gone = init(&mut h, &other, V);
        let full = h.api_key.clone();
        let keep = init(&mut h, &full, V);
        let id = h.key_id(&other);
        let mut out = Vec::new();
        h.relay
            .drop_subscribers_of_key(&id, super::super::revoke::KEY_REVOKED, &mut out);
        assert!(!h.relay.mcp.sessions.contains_key(gone.as_str()));
        assert!(h.relay.mcp.sessions.contains_key(keep.as_str()));
    }

    #[test]
    fn sessions_per_key_evict_the_least_recently_used() {
        let cfg = Config {
            mcp_sessions_per_key: 2,
            ..Config::default()
        };
        let mut h = H::new(cfg);
        let key = h.api_key.clone();
        let first = init(&mut h, &key, V);
        h.advance(Duration::from_secs(1));
        let _second = init(&mut h, &key, V);
        h.advance(Duration::from_secs(1));
        let _third = init(&mut h, &key, V);
        assert_eq!(h.relay.mcp.session_count(), 2);
        let (conn, out) = call(&mut h, &key, &first, "ping", json!({}));
        assert_eq!(resp(&out, conn).0, 404, "the oldest went");
    }
}
