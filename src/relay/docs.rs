//! `/openapi.json` and `/asyncapi.json`: API documents generated from the data the relay
//! routes by, so they list exactly what this relay serves (issue 4, "served with server URLs
//! rewritten to this relay").
//!
//! - OpenAPI 3.0.3 from the route table (`http::route`): the forward, binary, SSE, session and
//!   local routes, plus the relay's own pairing and admin routes, which are routed before the
//!   table (`owner_route`) and so are listed here as a static table, [`OWNER_ROUTES`]. The
//!   WebSocket upgrades (`/relay`, `/ws/api`) are in the AsyncAPI document instead.
//! - AsyncAPI 2.6.0 for `/ws/api` from `ws-api.tsv` (the spec's table, embedded and kept equal
//!   to it by a unit test) and for `/relay` from the module protocol (module-protocol.md).
//!
//! Pure: the caller passes the table and the server URL (see [`server_url`]).

use serde_json::{json, Map, Value};

use crate::http::route::{Kind, PType, Route, RouteTable, Source};

/// The spec's ws-api.tsv (client_type, server_reply_type, scope, params, notes), embedded.
pub const WS_API_TSV: &str = include_str!("ws-api.tsv");

/// Who may call an owner route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OwnerAuth {
    /// No credential (the module's pairing calls; their own rate limits apply).
    None,
    /// The admin page session: cookie from `POST /admin/api/login` plus `X-CSRF-Token`.
    Admin,
}

/// The relay's own routes outside routes.tsv (pairing: relay-protocol.md §5.6; the owner's
/// admin API behind the admin page): method, path, summary, auth.
#[rustfmt::skip]
pub const OWNER_ROUTES: &[(&str, &str, &str, OwnerAuth)] = &[
    ("POST", "/auth/pair", "Exchange a pairing code for a world's connection token", OwnerAuth::None),
    ("POST", "/auth/pair-request", "Open a browser pairing request (module 'Pair via Browser')", OwnerAuth::None),
    ("GET", "/auth/pair-request/{code}/status", "Poll a browser pairing request", OwnerAuth::None),
    ("POST", "/api/self-unpair", "Revoke the caller's own connection token (module 'Unpair')", OwnerAuth::None),
    ("POST", "/admin/api/login", "Start an admin session with the admin key", OwnerAuth::None),
    ("POST", "/admin/api/logout", "End the admin session", OwnerAuth::Admin),
    ("GET", "/admin/api/session", "The current admin session and its CSRF token", OwnerAuth::Admin),
    ("GET", "/admin/api/worlds", "Paired worlds, live and offline", OwnerAuth::Admin),
    ("DELETE", "/admin/api/worlds/{clientId}", "Unpair a world and revoke its tokens", OwnerAuth::Admin),
    ("GET", "/admin/api/pair-requests", "Open browser pairing requests", OwnerAuth::Admin),
    ("GET", "/admin/api/pair-requests/{code}", "One browser pairing request", OwnerAuth::Admin),
    ("POST", "/admin/api/pair-requests/{code}/approve", "Approve a browser pairing request", OwnerAuth::Admin),
    ("POST", "/admin/api/pair-requests/{code}/deny", "Deny a browser pairing request", OwnerAuth::Admin),
    ("POST", "/admin/api/pairing-codes", "Mint a 6-character pairing code", OwnerAuth::Admin),
    ("GET", "/admin/api/keys", "Scoped API keys", OwnerAuth::Admin),
    ("POST", "/admin/api/keys", "Create a scoped API key (shown once)", OwnerAuth::Admin),
    ("DELETE", "/admin/api/keys/{id}", "Revoke a scoped API key", OwnerAuth::Admin),
    ("GET", "/admin/api/tokens", "World connection tokens", OwnerAuth::Admin),
    ("DELETE", "/admin/api/tokens/{id}", "Revoke a connection token (its world is closed 4002)", OwnerAuth::Admin),
    ("GET", "/admin/api/scopes", "The 32 scopes and the default set", OwnerAuth::Admin),
    ("PATCH", "/admin/api/tokens/{id}", "Set a connection token's IP allow-list", OwnerAuth::Admin),
    ("POST", "/admin/api/admin-key/rotate", "Replace the admin key (signs every session out)", OwnerAuth::Admin),
    ("GET", "/metrics", "Prometheus counters (admin key in x-api-key or Authorization: Bearer)", OwnerAuth::Admin),
];

/// Local rows that are WebSocket upgrades: described by the AsyncAPI document.
const UPGRADE_PATHS: &[&str] = &["/relay", "/relay/", "/ws/api"];

/// This relay's external base URL: `public_url` when configured, else `<scheme>://<Host>`
/// (`https` only when the caller says a trusted proxy reported it). A Host header that is not
/// a plain `host[:port]` falls back to `fallback_host`, so a peer cannot put arbitrary text
/// into the documents.
pub fn server_url(
    public_url: Option<&str>,
    host: Option<&str>,
    https: bool,
    fallback_host: &str,
) -> String {
    if let Some(u) = public_url.filter(|u| !u.is_empty()) {
        return u.trim_end_matches('/').to_string();
    }
    let host = host
        .map(str::trim)
        .filter(|h| host_is_plain(h))
        .unwrap_or(fallback_host);
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// `host[:port]` characters only (RFC 3986 §3.2.2 reg-name, IPv4, bracketed IPv6).
fn host_is_plain(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// The WebSocket form of an http(s) URL: `http` → `ws`, `https` → `wss` (RFC 6455 §3).
fn ws_url(base: &str) -> String {
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    }
}

fn schema_of(t: PType) -> Value {
    match t {
        PType::String => json!({"type": "string"}),
        PType::Number => json!({"type": "number"}),
        PType::Boolean => json!({"type": "boolean"}),
        PType::Array => json!({"type": "array", "items": {}}),
        PType::Object => json!({"type": "object"}),
        PType::Any => json!({}),
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// Whether the relay serves `route` as a plain HTTP route (and so lists it in OpenAPI).
fn documented(route: &Route) -> bool {
    match route.kind {
        Kind::Forward | Kind::Binary | Kind::Sse | Kind::Session => true,
        Kind::Local => !UPGRADE_PATHS.contains(&route.pattern.as_str()),
        Kind::Auth | Kind::Admin => false,
    }
}

/// An operationId: method plus the path's words (`get_canvas_documentType`).
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for word in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !word.is_empty() {
            id.push('_');
            id.push_str(word);
        }
    }
    if path == "/" {
        id.push_str("_root");
    }
    id
}

fn route_operation(route: &Route) -> Value {
    let mut params = Vec::new();
    let mut body_props = Map::new();
    let mut body_required = Vec::new();
    for p in &route.params {
        let schema = schema_of(p.ptype);
        // GET never reads a body (relay-protocol.md §2.2 step 1): its params are query params.
        let in_query = p.sources.contains(&Source::Query)
            || (route.method == "GET" && p.sources.contains(&Source::Body));
        let only_query = p.sources.iter().all(|s| *s == Source::Query) || route.method == "GET";
        if p.sources.contains(&Source::Path) {
            params.push(json!({"name": p.name, "in": "path", "required": true, "schema": schema}));
            continue;
        }
        if p.sources.contains(&Source::Header) {
            params.push(
                json!({"name": p.name, "in": "header", "required": p.required, "schema": schema}),
            );
            continue;
        }
        if in_query {
            params.push(json!({
                "name": p.name, "in": "query", "schema": schema,
                // A param also read from the body is not required in the query.
                "required": p.required && only_query,
            }));
        }
        if route.method != "GET" && p.sources.contains(&Source::Body) {
            body_props.insert(p.name.clone(), schema_of(p.ptype));
            if p.required && !in_query {
                body_required.push(Value::from(p.name.as_str()));
            }
        }
    }
    let mut op = Map::new();
    op.insert(
        "operationId".into(),
        Value::from(operation_id(&route.method, &route.pattern)),
    );
    let summary = match route.kind {
        Kind::Forward | Kind::Binary => format!("Forwarded to the world as `{}`", route.ws_type),
        Kind::Sse => format!("Server-sent `{}` events from the world", route.reply_type),
        Kind::Session => "Headless sessions: not supported (501)".to_string(),
        _ => "Answered by the relay".to_string(),
    };
    op.insert("summary".into(), Value::from(summary));
    op.insert("tags".into(), json!([route.kind.as_str()]));
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if !body_props.is_empty() {
        let mut schema = json!({"type": "object", "properties": body_props});
        if !body_required.is_empty() {
            schema["required"] = Value::Array(body_required);
        }
        op.insert(
            "requestBody".into(),
            json!({"required": false, "content": {"application/json": {"schema": schema}}}),
        );
    }
    let keyed = !route.scope.is_empty();
    if keyed {
        op.insert("security".into(), json!([{"apiKey": []}]));
        op.insert("x-required-scope".into(), Value::from(route.scope.as_str()));
    }
    if !route.ws_type.is_empty() && matches!(route.kind, Kind::Forward | Kind::Binary) {
        op.insert("x-module-type".into(), Value::from(route.ws_type.as_str()));
        op.insert("x-timeout-ms".into(), Value::from(route.timeout_ms));
    }
    let ok = match (route.kind, route.ws_type.as_str()) {
        (Kind::Binary, "download-file") => json!({
            "description": "The file's bytes (or the module's JSON with format=base64)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}}},
        }),
        (Kind::Binary, _) => json!({
            "description": "The image; X-Image-Width and X-Image-Height carry its size",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
        }),
        (Kind::Sse, _) => json!({
            "description": "An event stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }),
        (Kind::Forward, t) => json!({
            "description": format!("The module's `{t}-result` reply, verbatim"),
            "content": {"application/json": {"schema": {"type": "object"}}},
        }),
        _ => json!({
            "description": "OK",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }),
    };
    let mut responses = Map::new();
    if route.kind == Kind::Session {
        responses.insert("501".into(), error_response("Not supported by this relay"));
    } else {
        responses.insert("200".into(), ok);
        if !route.params.is_empty() || route.pattern.starts_with("/contents") {
            responses.insert(
                "400".into(),
                error_response("Bad parameters, or the module's error"),
            );
        }
    }
    if keyed {
        responses.insert(
            "401".into(),
            error_response("Missing, invalid or expired API key"),
        );
        responses.insert(
            "403".into(),
            error_response("The key lacks the scope or the world"),
        );
    }
    if matches!(route.kind, Kind::Forward | Kind::Binary) {
        responses.insert("404".into(), error_response("No such connected world"));
        responses.insert(
            "408".into(),
            error_response("The world did not answer in time"),
        );
        responses.insert("502".into(), error_response("The world disconnected"));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn owner_operation(method: &str, path: &str, summary: &str, auth: OwnerAuth) -> Value {
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let mut op = json!({
        "operationId": operation_id(method, path),
        "summary": summary,
        "tags": [if path.starts_with("/admin/") { "admin" } else { "pairing" }],
        "responses": {"200": {"description": "OK",
            "content": {"application/json": {"schema": {"type": "object"}}}}},
    });
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if method != "GET" {
        op["requestBody"] = json!({"required": false,
            "content": {"application/json": {"schema": {"type": "object"}}}});
    }
    if auth == OwnerAuth::Admin {
        op["security"] = json!([{"adminSession": []}]);
    } else {
        op["security"] = json!([]);
    }
    op
}

fn insert_op(paths: &mut Map<String, Value>, method: &str, path: &str, op: Value) {
    let entry = paths
        .entry(path.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = entry {
        // The table's first row wins on a duplicate, as in the router.
        m.entry(method.to_ascii_lowercase()).or_insert(op);
    }
}

/// The OpenAPI 3.0.3 document for this relay.
pub fn openapi(routes: &RouteTable, server: &str) -> Value {
    let mut paths = Map::new();
    for r in routes.routes().iter().filter(|r| documented(r)) {
        insert_op(&mut paths, &r.method, &r.pattern, route_operation(r));
    }
    for (extra, path) in [("openapi", "/openapi.json"), ("asyncapi", "/asyncapi.json")] {
        let op = json!({
            "operationId": format!("get_{extra}"),
            "summary": format!("This document's {extra} twin, generated from the route table"),
            "tags": ["local"],
            "responses": {"200": {"description": "OK",
                "content": {"application/json": {"schema": {"type": "object"}}}}},
        });
        insert_op(&mut paths, "GET", path, op);
    }
    for (method, path, summary, auth) in OWNER_ROUTES {
        insert_op(
            &mut paths,
            method,
            path,
            owner_operation(method, path, summary, *auth),
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "fvtt-relay",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A self-hosted relay between apps and a Foundry VTT world running the \
                Foundry REST API module. Forwarded routes return the module's reply verbatim.",
        },
        "servers": [{"url": server}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                    "description": "A scoped API key; each operation names its x-required-scope."},
                "adminSession": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                    "description": "The admin page session: its cookie plus the csrfToken \
                        returned by POST /admin/api/login."},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string"}}},
            },
        },
    })
}

/// One parsed ws-api.tsv row.
struct WsRow<'a> {
    client_type: &'a str,
    reply_type: &'a str,
    scope: &'a str,
    params: &'a str,
    notes: &'a str,
}

fn ws_rows() -> impl Iterator<Item = WsRow<'static>> {
    WS_API_TSV.lines().skip(1).filter_map(|line| {
        let mut c = line.split('\t');
        Some(WsRow {
            client_type: c.next()?,
            reply_type: c.next()?,
            scope: c.next()?,
            params: c.next()?,
            notes: c.next().unwrap_or(""),
        })
    })
}

/// A message schema `{type: <ty>, ...params}` from `name:source:required:type` params.
fn ws_payload(ty: &str, params: &str, with_request_id: bool) -> Value {
    let mut props = Map::new();
    props.insert("type".into(), json!({"type": "string", "enum": [ty]}));
    let mut required = vec![Value::from("type")];
    if with_request_id {
        props.insert("requestId".into(), json!({"type": ["string", "number"]}));
    }
    for p in params.split(';').filter(|p| !p.is_empty()) {
        let f: Vec<&str> = p.split(':').collect();
        let [name, _source, req, ty] = f.as_slice() else {
            continue;
        };
        let schema = match *ty {
            "string" => json!({"type": "string"}),
            "number" => json!({"type": "number"}),
            "boolean" => json!({"type": "boolean"}),
            "array" => json!({"type": "array"}),
            "object" => json!({"type": "object"}),
            _ => json!({}),
        };
        props.insert((*name).to_string(), schema);
        if *req == "required" {
            required.push(Value::from(*name));
        }
    }
    json!({"type": "object", "properties": props, "required": required})
}

/// The AsyncAPI 2.6.0 document for `/ws/api` and `/relay`.
pub fn asyncapi(routes: &RouteTable, server: &str) -> Value {
    let mut messages = Map::new();
    let mut client_refs = Vec::new();
    let mut server_refs = Vec::new();
    let mut seen_replies = std::collections::HashSet::new();
    for row in ws_rows() {
        if let Some(channel) = row.client_type.strip_prefix("subscribe:") {
            // An event pushed on a subscribed channel; its filters are documented with it.
            let key = format!("event-{channel}");
            messages.insert(
                key.clone(),
                json!({
                    "name": row.reply_type,
                    "summary": format!("Event on channel `{channel}`"),
                    "payload": ws_payload(row.reply_type, "", false),
                    "x-filters": ws_payload(row.reply_type, row.params, false)["properties"],
                    "x-required-scope": row.scope,
                }),
            );
            server_refs.push(json!({"$ref": format!("#/components/messages/{key}")}));
            continue;
        }
        if row.client_type != "-" {
            let key = format!("client-{}", row.client_type);
            let mut m = json!({
                "name": row.client_type,
                "summary": row.notes.split(';').next().unwrap_or("").trim(),
                "payload": ws_payload(row.client_type, row.params, row.client_type != "auth"),
            });
            if !row.scope.is_empty() {
                m["x-required-scope"] = Value::from(row.scope);
            }
            messages.insert(key.clone(), m);
            client_refs.push(json!({"$ref": format!("#/components/messages/{key}")}));
        }
        if !row.reply_type.is_empty() && seen_replies.insert(row.reply_type) {
            let key = format!("server-{}", row.reply_type);
            messages.insert(
                key.clone(),
                json!({"name": row.reply_type, "payload": ws_payload(row.reply_type, "", true)}),
            );
            server_refs.push(json!({"$ref": format!("#/components/messages/{key}")}));
        }
    }
    // /relay: what the relay sends the module (every forwarded type and the link's own
    // messages), and what the module sends back (module-protocol.md §1, §3, §4).
    let mut to_module: Vec<Value> = ["auth-success", "pong", "event-subscription-update"]
        .iter()
        .map(|t| json!({"name": t, "payload": ws_payload(t, "", false)}))
        .collect();
    let mut forwarded: Vec<&str> = routes
        .routes()
        .iter()
        .filter(|r| matches!(r.kind, Kind::Forward | Kind::Binary))
        .map(|r| r.ws_type.as_str())
        .collect();
    forwarded.sort_unstable();
    forwarded.dedup();
    to_module.extend(forwarded.iter().map(|t| {
        json!({"name": t, "summary": "A forwarded request; answered with <type>-result",
            "payload": ws_payload(t, "", true)})
    }));
    let from_module: Vec<Value> = [
        ("auth", "token:msg:required:string"),
        ("ping", ""),
        ("player-list", "users:msg:optional:array"),
        ("module-notify", ""),
        ("get-known-clients", ""),
        ("remote-request", ""),
        ("chat-event", "data:msg:optional:object"),
        ("roll-data", "data:msg:optional:object"),
        ("hook-event", "data:msg:optional:object"),
        ("combat-event", "data:msg:optional:object"),
        ("actor-event", "data:msg:optional:object"),
        ("scene-event", "data:msg:optional:object"),
        ("<type>-result", ""),
    ]
    .iter()
    .map(|(t, p)| json!({"name": t, "payload": ws_payload(t, p, *t != "auth")}))
    .collect();
    json!({
        "asyncapi": "2.6.0",
        "info": {
            "title": "fvtt-relay WebSockets",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The client request/subscribe API (/ws/api) and the Foundry module's \
                world link (/relay). The first message on either must authenticate.",
        },
        "servers": {"relay": {"url": ws_url(server), "protocol": if server.starts_with("https") { "wss" } else { "ws" }}},
        "channels": {
            "/ws/api": {
                "description": "Requests to a world and event subscriptions for API clients; \
                    authenticate with {type:'auth', token:<API key>} within the auth timeout.",
                "bindings": {"ws": {"query": {"type": "object",
                    "properties": {"clientId": {"type": "string"}}}}},
                "publish": {"message": {"oneOf": client_refs}},
                "subscribe": {"message": {"oneOf": server_refs}},
            },
            "/relay": {
                "description": "The Foundry REST API module's link. Query: id (required), \
                    worldId, worldTitle, foundryVersion, systemId, systemTitle, systemVersion, \
                    customName. First message {type:'auth', token:<connection token>}.",
                "bindings": {"ws": {"query": {"type": "object", "required": ["id"],
                    "properties": {"id": {"type": "string"}, "worldId": {"type": "string"},
                        "worldTitle": {"type": "string"}, "foundryVersion": {"type": "string"},
                        "systemId": {"type": "string"}, "systemTitle": {"type": "string"},
                        "systemVersion": {"type": "string"}, "customName": {"type": "string"}}}}},
                "publish": {"message": {"oneOf": from_module}},
                "subscribe": {"message": {"oneOf": to_module}},
            },
        },
        "components": {"messages": messages},
    })
}

/// The two documents, serialized once per server URL and shared (`Rc<[u8]>`) by every
/// response. Building one walks the whole route table (about 3 ms in a debug build): rebuilt
/// per request, 2,000 pipelined `GET /openapi.json` held the loop for seconds (issue 15).
/// The server URL comes from `--public-url` or the Host header, so the cache keeps the
/// last few URLs; a peer cycling Host values only costs rebuilds, never memory.
#[derive(Default)]
pub struct Cache {
    entries: Vec<(bool, String, std::rc::Rc<[u8]>)>,
}

/// URLs kept per document kind (a relay is usually reached by one or two names).
const CACHE_URLS: usize = 4;

impl Cache {
    /// `/openapi.json` (`asyncapi` false) or `/asyncapi.json` for `server`, serialized.
    pub fn get(
        &mut self,
        routes: &RouteTable,
        asyncapi_doc: bool,
        server: &str,
    ) -> std::rc::Rc<[u8]> {
        if let Some((_, _, bytes)) = self
            .entries
            .iter()
            .find(|(a, url, _)| *a == asyncapi_doc && url == server)
        {
            return bytes.clone();
        }
        let doc = if asyncapi_doc {
            asyncapi(routes, server)
        } else {
            openapi(routes, server)
        };
        // Serializing a `Value` into memory cannot fail (its keys are always strings).
        let bytes: std::rc::Rc<[u8]> = serde_json::to_vec(&doc).unwrap_or_default().into();
        if self
            .entries
            .iter()
            .filter(|(a, _, _)| *a == asyncapi_doc)
            .count()
            >= CACHE_URLS
        {
            if let Some(i) = self.entries.iter().position(|(a, _, _)| *a == asyncapi_doc) {
                self.entries.remove(i);
            }
        }
        self.entries
            .push((asyncapi_doc, server.to_string(), bytes.clone()));
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_api_tsv_equals_the_spec() {
        let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/ws-api.tsv");
        match std::fs::read_to_string(spec) {
            Ok(text) => assert_eq!(text, WS_API_TSV, "src/relay/ws-api.tsv differs from {spec}"),
            Err(_) => eprintln!("{spec} not present; skipped"),
        }
    }

    #[test]
    fn server_url_rules() {
        #[rustfmt::skip]
        let cases: &[(Option<&str>, Option<&str>, bool, &str)] = &[
            (Some("https://r.example.com/"), Some("evil"), false, "https://r.example.com"),
            (None, Some("relay.lan:3010"), false, "http://relay.lan:3010"),
            (None, Some("relay.lan"), true, "https://relay.lan"),
            (None, Some("[::1]:80"), false, "http://[::1]:80"),
            (None, Some("a\"b"), false, "http://127.0.0.1:3010"),
            (None, Some("a/b"), false, "http://127.0.0.1:3010"),
            (None, None, false, "http://127.0.0.1:3010"),
            (Some(""), Some("h"), false, "http://h"),
        ];
        for (public, host, https, want) in cases {
            assert_eq!(server_url(*public, *host, *https, "127.0.0.1:3010"), *want);
        }
        assert_eq!(ws_url("https://a"), "wss://a");
        assert_eq!(ws_url("http://a:1"), "ws://a:1");
    }

    #[test]
    fn openapi_lists_the_table_and_no_admin_rows() {
        let table = RouteTable::builtin();
        let doc = openapi(&table, "http://x");
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        let ops: usize = paths
            .values()
            .map(|p| p.as_object().map_or(0, |m| m.len()))
            .sum();
        let served = table.routes().iter().filter(|r| documented(r)).count();
        // `/relay` rows and duplicates aside, every documented row is one operation, plus
        // the two documents and the owner routes.
        assert_eq!(ops, served + 2 + OWNER_ROUTES.len());
        assert_eq!(doc["paths"]["/search"]["get"]["x-required-scope"], "search");
        assert_eq!(doc["paths"]["/search"]["get"]["x-module-type"], "search");
        assert!(paths.contains_key("/macro/{uuid}/execute"));
        assert!(paths.contains_key("/clients"));
        assert!(!paths.contains_key("/relay"));
        assert!(!paths.contains_key("/admin/api/users"));
        let exec = &doc["paths"]["/macro/{uuid}/execute"]["post"];
        assert_eq!(exec["parameters"][0]["in"], "path");
        let roll = &doc["paths"]["/roll"]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(roll["schema"]["required"], json!(["formula"]));
    }

    #[test]
    fn asyncapi_lists_every_ws_api_type() {
        let doc = asyncapi(&RouteTable::builtin(), "https://r.example");
        assert_eq!(doc["servers"]["relay"]["url"], "wss://r.example");
        let msgs = doc["components"]["messages"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for row in ws_rows() {
            if row.client_type != "-" && !row.client_type.starts_with("subscribe:") {
                assert!(msgs.contains_key(&format!("client-{}", row.client_type)));
            }
        }
        assert!(msgs.contains_key("event-chat-events"));
        assert!(msgs.contains_key("server-error"));
    }

    #[test]
    fn operation_ids() {
        assert_eq!(
            operation_id("GET", "/canvas/{documentType}"),
            "get_canvas_documentType"
        );
        assert_eq!(operation_id("GET", "/"), "get_root");
    }

    #[test]
    fn cache_builds_once_per_url_and_shares_the_bytes() {
        let routes = RouteTable::builtin();
        let mut cache = Cache::default();
        let a = cache.get(&routes, false, "http://a");
        let b = cache.get(&routes, false, "http://a");
        assert!(
            std::rc::Rc::ptr_eq(&a, &b),
            "second request reuses the bytes"
        );
        let parsed: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(parsed, openapi(&routes, "http://a"));
        let other = cache.get(&routes, false, "http://b");
        assert!(!std::rc::Rc::ptr_eq(&a, &other));
        let asy: Value = serde_json::from_slice(&cache.get(&routes, true, "http://a")).unwrap();
        assert_eq!(asy, asyncapi(&routes, "http://a"));
        for i in 0..10 {
            cache.get(&routes, false, &format!("http://h{i}"));
        }
        assert!(cache.entries.len() <= 2 * CACHE_URLS, "bounded");
    }
}
