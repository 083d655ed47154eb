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

use crate::http::route::{Kind, PType, Param, Route, RouteTable, Source};
use crate::relay::forward;

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
    ("GET", "/admin/api/status", "The relay's status: address, uptime, worlds, connections (fvtt-relay status)", OwnerAuth::Admin),
    ("GET", "/admin/api/worlds", "Paired worlds, live and offline", OwnerAuth::Admin),
    ("DELETE", "/admin/api/worlds/{clientId}", "Unpair a world and revoke its tokens", OwnerAuth::Admin),
    ("PATCH", "/admin/api/worlds/{clientId}", "Set a world's cross-world permission (allowedTargets, remoteScopes)", OwnerAuth::Admin),
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

/// The JSON body of every error the relay writes itself (`{"error": "..."}`, sometimes with
/// more fields such as `validTypes`, `clientId`, `message` or `reason`).
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// An error status whose answer carries a header (`Retry-After` on 429, `Allow` on 405).
fn error_with_header(description: &str, header: &str, what: &str) -> Value {
    let mut r = error_response(description);
    r["headers"] = json!({header: {"$ref": format!("#/components/headers/{what}")}});
    r
}

/// The `X-RateLimit-*` headers every answer to a keyed route carries (not marked required:
/// an answer refused before the key is known has none).
fn rate_limit_headers() -> Value {
    json!({
        "X-RateLimit-Limit": {"$ref": "#/components/headers/RateLimitLimit"},
        "X-RateLimit-Remaining": {"$ref": "#/components/headers/RateLimitRemaining"},
        "X-RateLimit-Reset": {"$ref": "#/components/headers/RateLimitReset"},
    })
}

/// A query string value: what the relay reads from `?name=value`. Arrays travel as JSON text
/// (`details=["items"]`), described with `content` (OpenAPI 3.0.3 §4.7.12.1). An empty
/// value counts as absent, so a required string has `minLength: 1`.
fn query_param(p: &Param, required: bool, also_body: bool) -> Value {
    let mut param = json!({"name": p.name, "in": "query", "required": required});
    match p.ptype {
        PType::Array | PType::Object => {
            param["content"] = json!({"application/json": {"schema": schema_of(p.ptype)}});
            param["description"] = Value::from("JSON text, e.g. `[\"items\"]`");
        }
        PType::String if required => param["schema"] = json!({"type": "string", "minLength": 1}),
        t => param["schema"] = schema_of(t),
    }
    if also_body {
        param["description"] = Value::from("Also accepted as a property of a JSON body.");
    }
    param
}

/// A body property. JSON `null` counts as absent, so an optional property is nullable; a
/// required one is not.
fn body_property(p: &Param, also_query: bool) -> Value {
    let mut schema = schema_of(p.ptype);
    if !p.required && p.ptype != PType::Any {
        schema["nullable"] = Value::Bool(true);
    }
    if also_query {
        schema["description"] = Value::from(match p.ptype {
            PType::Array | PType::Object => "Also accepted in the query string, as JSON text.",
            _ => "Also accepted in the query string.",
        });
    }
    schema
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
    let is_get = route.method == "GET";
    let one_of = forward::one_of_rule(&route.ws_type);
    let in_group = |name: &str| one_of.is_some_and(|(names, _)| names.contains(&name));
    let mut params = Vec::new();
    let mut body_props = Map::new();
    let mut body_required = Vec::new();
    // A GET "one of" group: one form-exploded object parameter whose properties are the
    // group's query names (OpenAPI 3.0.3 §4.7.12.4, style form + explode: each property is
    // its own `name=value` pair on the wire), with `anyOf` saying which must be present.
    let mut group_props = Map::new();
    let mut clientid_note = false;
    for p in &route.params {
        if p.sources.contains(&Source::Path) {
            let mut schema = json!({"type": "string", "minLength": 1});
            if p.name == "documentType" {
                schema["enum"] = forward::canvas_document_types().collect();
                schema.as_object_mut().map(|m| m.remove("minLength"));
            }
            params.push(json!({"name": p.name, "in": "path", "required": true, "schema": schema}));
            continue;
        }
        if p.sources.contains(&Source::Header) {
            params.push(
                json!({"name": p.name, "in": "header", "required": p.required, "schema": schema_of(p.ptype)}),
            );
            continue;
        }
        let from_query = p.sources.contains(&Source::Query);
        let from_body = p.sources.contains(&Source::Body);
        // `clientId` may be left out when the key is bound to one world or one is connected
        // (relay-protocol.md §2.3): never required on the wire.
        let required = p.required && p.name != "clientId";
        if p.name == "clientId" && p.required {
            clientid_note = true;
        }
        if is_get || (from_query && !from_body) {
            // GET never reads a body (relay-protocol.md §2.2 step 1).
            if in_group(&p.name) {
                let mut schema = schema_of(p.ptype);
                if p.ptype == PType::String {
                    schema["minLength"] = Value::from(1);
                }
                group_props.insert(p.name.clone(), schema);
                continue;
            }
            if route.kind == Kind::Sse && p.ptype != PType::String {
                // Stream filters are compared as text (`type=5` matches `"5"` and `5`).
                let mut as_text = p.clone();
                as_text.ptype = PType::String;
                params.push(query_param(&as_text, required, false));
                continue;
            }
            params.push(query_param(p, required, false));
        } else {
            body_props.insert(p.name.clone(), body_property(p, from_query));
            if required {
                body_required.push(Value::from(p.name.as_str()));
            }
        }
    }
    // Path segments the table gives no param row (`/contents/{path}`) are still parameters.
    for name in route
        .pattern
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
    {
        if !route.params.iter().any(|p| p.name == name) {
            params.push(json!({"name": name, "in": "path", "required": true,
                "schema": {"type": "string", "minLength": 1}}));
        }
    }
    let deprecated = route.pattern.starts_with("/contents");
    let mut description = String::new();
    if deprecated {
        description.push_str("Deprecated: always answers 400 with a pointer to `/structure`. ");
    }
    if let Some((names, message)) = one_of {
        description.push_str(&format!("{message}. "));
        if !group_props.is_empty() {
            let any: Vec<Value> = names
                .iter()
                .filter(|n| group_props.contains_key(**n))
                .map(|n| json!({"required": [n]}))
                .collect();
            params.push(json!({
                "name": names.join("_or_"),
                "in": "query",
                "required": true,
                "style": "form",
                "explode": true,
                "description": format!("{message}: each property is its own query parameter."),
                "schema": {"type": "object", "properties": group_props, "anyOf": any},
            }));
        }
    }
    if clientid_note {
        description.push_str(
            "`clientId` may be omitted when the key is bound to one world or exactly one world \
             is connected. ",
        );
    }
    if !is_get && !body_props.is_empty() {
        description.push_str(
            "Properties of the JSON body: a JSON `null` counts as absent, a body value wins over \
             the same name in the query, and a body that is not a JSON object is refused (400). ",
        );
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
    if route.kind == Kind::Sse {
        params.push(json!({"name": "apiKey", "in": "query", "required": false,
            "schema": {"type": "string"},
            "description": "The API key, for clients that cannot set headers (EventSource)."}));
        params.push(
            json!({"name": "lastEventId", "in": "query", "required": false,
            "schema": {"type": "string"},
            "description": "Resume after this event id (as the Last-Event-ID header)."}),
        );
        params.push(
            json!({"name": "Last-Event-ID", "in": "header", "required": false,
            "schema": {"type": "string"},
            "description": "Resume after this event id: missed events are replayed, or an \
                `event: reset` says they are gone."}),
        );
        description.push_str(
            "The stream opens with `event: connected`; then one event per world event, named \
             after its type, with `id: <epoch>-<seq>` for resuming; `event: world-disconnected` \
             when the world goes away. Filters are matched as text. ",
        );
    }
    if !description.is_empty() {
        op.insert("description".into(), Value::from(description.trim_end()));
    }
    if deprecated {
        op.insert("deprecated".into(), Value::Bool(true));
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if !body_props.is_empty() {
        let mut schema = json!({"type": "object", "properties": body_props});
        if !body_required.is_empty() {
            schema["required"] = Value::Array(body_required.clone());
        }
        let body_group: Vec<&str> = one_of
            .map(|(names, _)| {
                names
                    .iter()
                    .copied()
                    .filter(|n| schema["properties"].get(*n).is_some())
                    .collect()
            })
            .unwrap_or_default();
        let grouped = !body_group.is_empty() && group_props.is_empty();
        if grouped {
            // Present means present and not null (a null counts as absent).
            let any: Vec<Value> = body_group
                .iter()
                .map(|n| {
                    let ptype = route
                        .params
                        .iter()
                        .find(|p| p.name == *n)
                        .map_or(PType::Any, |p| p.ptype);
                    let present = match ptype {
                        PType::Any => json!({"not": {"type": "null"}}),
                        t => schema_of(t),
                    };
                    json!({"required": [n], "properties": {*n: present}})
                })
                .collect();
            schema["anyOf"] = Value::Array(any);
        }
        let required = !body_required.is_empty() || grouped;
        if !required {
            schema["nullable"] = Value::Bool(true);
        }
        op.insert(
            "requestBody".into(),
            json!({"required": required, "content": {"application/json": {"schema": schema}}}),
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
    op.insert("responses".into(), route_responses(route, keyed));
    Value::Object(op)
}

/// Every status a table route can answer, with its body and headers.
fn route_responses(route: &Route, keyed: bool) -> Value {
    let binary = |media: &str| json!({media: {"schema": {"type": "string", "format": "binary"}}});
    let mut ok = match (route.kind, route.ws_type.as_str()) {
        (Kind::Binary, "download-file") => json!({
            "description": "The file's bytes with the module's media type (or the module's \
                JSON with format=base64); Content-Disposition names the file",
            "headers": {"Content-Disposition": {"$ref": "#/components/headers/ContentDisposition"}},
            "content": {"application/json": {"schema": {"type": "object"}}, "*/*": binary("*/*")["*/*"]},
        }),
        (Kind::Binary, _) => json!({
            "description": "The image; X-Image-Width and X-Image-Height carry its size (or the \
                module's JSON when it sent no image)",
            "headers": {
                "X-Image-Width": {"$ref": "#/components/headers/ImageWidth"},
                "X-Image-Height": {"$ref": "#/components/headers/ImageHeight"},
            },
            "content": {"image/png": binary("image/png")["image/png"],
                "image/jpeg": binary("image/jpeg")["image/jpeg"],
                "image/webp": binary("image/webp")["image/webp"],
                "application/json": {"schema": {"type": "object"}}},
        }),
        (Kind::Sse, _) => json!({
            "description": "An event stream (WHATWG HTML §9.2); each event's data is JSON text",
            "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/SseEvent"}}},
        }),
        (Kind::Local, _) if route.pattern == "/" => json!({
            "description": "`{\"status\":\"ok\"}`; a browser (Accept: text/html) gets the \
                landing page",
            "content": {"application/json": {"schema": {"type": "object"}},
                "text/html": {"schema": {"type": "string"}}},
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
    } else if route.pattern.starts_with("/contents") {
        // Deprecated: no success answer (routes.tsv: always 400).
    } else {
        if keyed {
            let mut h = rate_limit_headers();
            if let (Some(m), Some(extra)) = (h.as_object_mut(), ok.get("headers").cloned()) {
                if let Some(e) = extra.as_object() {
                    m.extend(e.clone());
                }
            }
            ok["headers"] = h;
        }
        responses.insert("200".into(), ok);
    }
    responses.insert(
        "400".into(),
        error_response("Bad parameters or body, a malformed request, or the module's error"),
    );
    if keyed {
        responses.insert(
            "401".into(),
            error_response("Missing, invalid or expired API key"),
        );
        responses.insert(
            "403".into(),
            error_response("The key lacks the scope or the world"),
        );
        responses.insert(
            "429".into(),
            error_with_header(
                "Too many requests for this key",
                "Retry-After",
                "RetryAfter",
            ),
        );
    }
    if matches!(route.kind, Kind::Forward | Kind::Binary | Kind::Sse) || route.pattern.contains('{')
    {
        responses.insert(
            "404".into(),
            error_response("No such world, or no world connected"),
        );
    }
    if matches!(route.kind, Kind::Forward | Kind::Binary) {
        responses.insert(
            "408".into(),
            error_response("The world did not answer in time"),
        );
        responses.insert("502".into(), error_response("The world disconnected"));
    }
    insert_transport_errors(&mut responses);
    Value::Object(responses)
}

/// Statuses any HTTP request can get from the transport layer (src/http).
fn insert_transport_errors(responses: &mut Map<String, Value>) {
    responses
        .entry("400")
        .or_insert_with(|| error_response("A malformed request"));
    responses.insert(
        "413".into(),
        error_response("The body is over the size limit"),
    );
    responses.insert(
        "431".into(),
        error_response("The request head is over the size limit"),
    );
    responses.insert(
        "503".into(),
        error_response("The relay is shutting down or over its limits"),
    );
}

/// An owner route's request body and its answers, by (method, path).
fn owner_shape(method: &str, path: &str) -> (Option<Value>, Vec<(&'static str, &'static str)>) {
    let s = json!({"type": "string"});
    let ns = json!({"type": "string", "nullable": true});
    let pair_fields = json!({
        "worldId": ns, "worldTitle": ns, "systemId": ns, "systemTitle": ns,
        "systemVersion": ns, "foundryVersion": ns, "serverFingerprint": ns,
        "clientId": ns, "existingClientId": ns,
    });
    let obj = |props: Value, required: &[&str]| {
        let mut v = json!({"type": "object", "properties": props});
        if !required.is_empty() {
            v["required"] = json!(required);
        }
        v
    };
    match (method, path) {
        ("POST", "/auth/pair") => {
            let mut props = json!({"worldId": ns, "worldTitle": ns, "serverFingerprint": ns,
                "existingClientId": ns});
            props["code"] = json!({"type": "string", "minLength": 1});
            (
                Some(obj(props, &["code"])),
                vec![
                    ("200", "The connection token"),
                    ("400", "Missing or bad fields"),
                    ("404", "Unknown code"),
                    ("410", "Expired code"),
                    ("429", "Too many attempts"),
                ],
            )
        }
        ("POST", "/auth/pair-request") => {
            let mut props = pair_fields.clone();
            if let Some(m) = props.as_object_mut() {
                m.remove("existingClientId");
            }
            props["worldId"] = json!({"type": "string", "minLength": 1});
            props["upgradeOnly"] = json!({"type": "boolean", "nullable": true});
            (
                Some(obj(props, &["worldId"])),
                vec![
                    ("201", "The request's code and pair page URL"),
                    ("400", "Missing or bad fields"),
                    ("429", "Too many open requests"),
                ],
            )
        }
        ("GET", "/auth/pair-request/{code}/status") => (
            None,
            vec![
                ("200", "Pending, approved (with the token once) or denied"),
                ("404", "Unknown request"),
                ("410", "Expired request"),
            ],
        ),
        ("POST", "/api/self-unpair") => (
            Some(obj(
                json!({"token": {"type": "string", "minLength": 1}}),
                &["token"],
            )),
            vec![
                ("200", "Unpaired"),
                ("400", "Missing token"),
                ("404", "Unknown token"),
            ],
        ),
        ("POST", "/admin/api/login") => (
            Some(obj(json!({"key": s}), &["key"])),
            vec![
                (
                    "200",
                    "Signed in: the CSRF token; the session cookie is set",
                ),
                ("400", "Bad body"),
                ("401", "Invalid admin key"),
                ("429", "Too many attempts"),
            ],
        ),
        ("POST", "/admin/api/keys") => (
            Some(obj(
                json!({"name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "scopes": {"nullable": true,
                        "description": "Scope names, or \"default\" / \"all\" (a comma-separated \
                            list is accepted too); absent: the default set",
                        "anyOf": [
                            {"type": "array", "minItems": 1,
                                "items": {"type": "string", "enum": crate::auth::ALL_SCOPES}},
                            {"type": "string", "enum": ["default", "all"]}]},
                    "clientIds": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "userId": ns,
                    "expiresInDays": {"type": "integer", "minimum": 1, "maximum": 4_294_967_295u64,
                        "nullable": true},
                    "rateLimitPerMinute": {"type": "integer", "minimum": 1,
                        "maximum": 4_294_967_295u64, "nullable": true}}),
                &["name"],
            )),
            vec![("201", "The new key, shown once"), ("400", "Bad fields")],
        ),
        ("PATCH", "/admin/api/tokens/{id}") => (
            Some(obj(
                json!({"allowedIps": {"type": "array",
                    "description": "Addresses or CIDR blocks (e.g. 192.168.1.0/24); empty: any",
                    "items": {"anyOf": [{"type": "string", "format": "ipv4"},
                        {"type": "string", "format": "ipv6"}]}}}),
                &["allowedIps"],
            )),
            vec![
                ("200", "The token"),
                ("400", "Bad address or CIDR"),
                ("404", "Unknown token"),
            ],
        ),
        ("POST", "/admin/api/pairing-codes") => (
            Some(obj(json!({"clientId": ns}), &[])),
            vec![("201", "A 6-character code"), ("404", "Unknown clientId")],
        ),
        ("POST", "/admin/api/pair-requests/{code}/approve")
        | ("POST", "/admin/api/pair-requests/{code}/deny") => (
            None,
            vec![
                ("200", "The request"),
                ("404", "Unknown request"),
                ("409", "Already decided"),
                ("410", "Expired"),
            ],
        ),
        ("GET", "/admin/api/pair-requests/{code}")
        | ("DELETE", "/admin/api/keys/{id}")
        | ("DELETE", "/admin/api/tokens/{id}")
        | ("DELETE", "/admin/api/worlds/{clientId}") => {
            (None, vec![("200", "OK"), ("404", "Not found")])
        }
        ("PATCH", "/admin/api/worlds/{clientId}") => (
            Some(obj(
                json!({"allowedTargets": {"type": "array", "items": {"type": "string", "minLength": 1},
                        "description": "clientIds of other worlds, or \"*\" (a comma-separated \
                            string is accepted too); absent: unchanged"},
                    "remoteScopes": {"type": "array",
                        "items": {"type": "string", "enum": crate::auth::ALL_SCOPES},
                        "description": "Scopes cross-world requests may use; absent: unchanged"}}),
                &[],
            )),
            vec![
                ("200", "The world with its grants"),
                ("400", "A bad target or scope"),
                ("404", "Unknown clientId"),
            ],
        ),
        ("GET", "/metrics") => (
            None,
            vec![("200", "Prometheus text exposition format 0.0.4")],
        ),
        ("POST", "/admin/api/logout") => (None, vec![("204", "Signed out; the cookie is cleared")]),
        _ => (None, vec![("200", "OK")]),
    }
}

fn owner_operation(method: &str, path: &str, summary: &str, auth: OwnerAuth) -> Value {
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}))
        .collect();
    let (body, statuses) = owner_shape(method, path);
    let mut responses = Map::new();
    for (status, description) in statuses {
        let r = if status == "204" {
            json!({"description": description})
        } else if status.starts_with('2') {
            if path == "/metrics" {
                json!({"description": description,
                    "content": {"text/plain": {"schema": {"type": "string"}}}})
            } else {
                json!({"description": description,
                    "content": {"application/json": {"schema": {"type": "object"}}}})
            }
        } else if status == "429" {
            error_with_header(description, "Retry-After", "RetryAfter")
        } else {
            error_response(description)
        };
        responses.insert(status.into(), r);
    }
    if auth == OwnerAuth::Admin {
        responses.insert(
            "401".into(),
            error_response("Not signed in, or not the admin key"),
        );
        responses.insert(
            "403".into(),
            error_response("A missing or wrong CSRF token, or a scoped key"),
        );
    }
    insert_transport_errors(&mut responses);
    let mut op = json!({
        "operationId": operation_id(method, path),
        "summary": summary,
        "tags": [if path.starts_with("/admin/") || path == "/metrics" { "admin" } else { "pairing" }],
        "responses": responses,
    });
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(schema) = body {
        let required = schema.get("required").is_some();
        op["requestBody"] =
            json!({"required": required, "content": {"application/json": {"schema": schema}}});
    }
    if auth == OwnerAuth::Admin {
        op["security"] = if path == "/metrics" {
            json!([{"adminKey": []}, {"adminBearer": []}])
        } else {
            json!([{"adminSession": [], "adminCookie": []}, {"adminKey": []}])
        };
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
        let mut op = op;
        if let Some(r) = op["responses"].as_object_mut() {
            insert_transport_errors(r);
        }
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
                    "description": "A scoped API key (or `Authorization: Bearer <key>`); each \
                        operation names its x-required-scope."},
                "adminSession": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                    "description": "The admin page session: the csrfToken returned by \
                        POST /admin/api/login, with its session cookie."},
                "adminCookie": {"type": "apiKey", "in": "cookie", "name": "fvtt_relay_admin",
                    "description": "The admin session cookie set by POST /admin/api/login."},
                "adminKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                    "description": "The admin key itself."},
                "adminBearer": {"type": "http", "scheme": "bearer",
                    "description": "The admin key as a bearer token (Prometheus' \
                        `authorization` setting)."},
            },
            "headers": {
                "RetryAfter": {"description": "Seconds until a retry may succeed (RFC 9110 §10.2.3)",
                    "required": true, "schema": {"type": "integer", "minimum": 0}},
                "Allow": {"description": "The methods the path serves (RFC 9110 §10.2.1)",
                    "required": true, "schema": {"type": "string"}},
                "RateLimitLimit": {"description": "Requests allowed per window for this key",
                    "schema": {"type": "integer", "minimum": 0}},
                "RateLimitRemaining": {"description": "Requests left in this window",
                    "schema": {"type": "integer", "minimum": 0}},
                "RateLimitReset": {"description": "Unix time (s) when the window resets",
                    "schema": {"type": "integer", "minimum": 0}},
                "ContentDisposition": {"description": "attachment; filename=... (RFC 6266)",
                    "schema": {"type": "string"}},
                "ImageWidth": {"description": "The image's width in pixels, as the module reported it",
                    "schema": {"type": "number"}},
                "ImageHeight": {"description": "The image's height in pixels, as the module reported it",
                    "schema": {"type": "number"}},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string"}}},
                "SseEvent": {"type": "object", "required": ["data"],
                    "description": "One server-sent event: `event` is `connected`, \
                        `world-disconnected`, `reset`, `error` or the world event's type; \
                        `data` is JSON text.",
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"},
                        "id": {"type": "string"}, "retry": {"type": "integer"}}},
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

/// The host part of a server URL (`https://relay.example.com:8443` → `relay.example.com`).
fn contact_host(server: &str) -> &str {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

/// The `/ws/events` messages (relay/gateway.rs), keyed by component name.
fn events_messages() -> Vec<(&'static str, Value)> {
    let ty = |t: &str| json!({"type": "string", "enum": [t]});
    vec![
        (
            "events-subscribe",
            json!({"name": "subscribe",
            "summary": "Choose what to receive; may be sent again to change the selection",
            "payload": {"type": "object", "required": ["type"], "properties": {
                "type": ty("subscribe"),
                "events": {"type": "array", "items": {"type": "string", "enum": ["all",
                    "chat-events", "roll-events", "hooks", "combat-events", "actor-events",
                    "scene-events", "world-connected", "world-disconnected"]},
                    "description": "Channels to receive; absent: all"},
                "client_id": {"type": "string", "maxLength": 128,
                    "description": "The subscriber's own id (a newer socket with the same id on \
                        the same key replaces the older, 4001)"},
                "worlds": {"type": "array", "items": {"type": "string"},
                    "description": "The worlds (clientIds) to follow; absent: every world the \
                        key may see"}}}}),
        ),
        (
            "events-ping",
            json!({"name": "ping",
            "payload": {"type": "object", "required": ["type"], "properties": {"type": ty("ping")}}}),
        ),
        (
            "events-snapshot",
            json!({"name": "snapshot",
            "summary": "The answer to subscribe: the connected worlds this socket follows",
            "payload": {"type": "object", "required": ["type", "state"], "properties": {
                "type": ty("snapshot"),
                "state": {"type": "object", "properties": {
                    "worlds": {"type": "array", "items": {"type": "object"}}}}}}}),
        ),
        (
            "events-event",
            json!({"name": "event",
            "summary": "A world event (chat, roll, hook, combat, actor, scene) or \
                world-connected / world-disconnected",
            "payload": {"type": "object", "required": ["type"], "properties": {
                "type": {"type": "string"}, "clientId": {"type": "string"},
                "data": {}}}}),
        ),
        (
            "events-error",
            json!({"name": "error",
            "payload": {"type": "object", "required": ["type", "error"], "properties": {
                "type": ty("error"), "error": {"type": "string"}}}}),
        ),
        (
            "events-pong",
            json!({"name": "pong",
            "payload": {"type": "object", "required": ["type"], "properties": {"type": ty("pong")}}}),
        ),
    ]
}

/// The AsyncAPI 2.6.0 document for `/ws/events`, `/ws/api` and `/relay`.
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
        .map(|t| {
            json!({"name": t, "messageId": format!("relay-to-module-{t}"),
            "payload": ws_payload(t, "", false)})
        })
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
        json!({"name": t, "messageId": format!("relay-forward-{t}"),
            "summary": "A forwarded request; answered with <type>-result",
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
    .map(|(t, p)| {
        let id: String = t
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        json!({"name": t, "messageId": format!("relay-from-module-{}", id.trim_matches('-')),
            "payload": ws_payload(t, p, *t != "auth")})
    })
    .collect();
    for (key, m) in events_messages() {
        messages.insert(key.into(), m);
    }
    for (key, m) in messages.iter_mut() {
        m["messageId"] = Value::from(key.as_str());
    }
    let events_ref = |k: &str| json!({"$ref": format!("#/components/messages/{k}")});
    json!({
        "asyncapi": "2.6.0",
        "id": "urn:fvtt-relay:websockets",
        "defaultContentType": "application/json",
        "tags": [{"name": "foundry-vtt"}, {"name": "relay"}],
        "info": {
            "title": "fvtt-relay WebSockets",
            "version": env!("CARGO_PKG_VERSION"),
            "license": {"name": "MIT"},
            // Whoever runs this relay: its admin page, and the RFC 2142 §3 role mailbox of
            // the host it is served from.
            "contact": {"name": "The relay's owner", "url": format!("{server}/admin"),
                "email": format!("postmaster@{}", contact_host(server))},
            "description": "The client request/subscribe API (/ws/api) and the Foundry module's \
                world link (/relay). The first message on either must authenticate.",
        },
        "servers": {"relay": {"url": ws_url(server), "protocol": if server.starts_with("https") { "wss" } else { "ws" }}},
        "channels": {
            "/ws/events": {
                "description": "Read-only events of the worlds a key may see (one socket, every \
                    channel). Authenticate on the upgrade (x-api-key, Authorization: Bearer, \
                    ?token= or the admin session cookie); the first message must be `subscribe` \
                    within the auth timeout, answered by a `snapshot`. `/ws/events/{clientId}` \
                    follows one world.",
                "bindings": {"ws": {"query": {"type": "object",
                    "properties": {"token": {"type": "string"}}}}},
                "publish": {"operationId": "eventsSend", "message": {"oneOf": [events_ref("events-subscribe"),
                    events_ref("events-ping")]}},
                "subscribe": {"operationId": "eventsReceive", "message": {"oneOf": [events_ref("events-snapshot"),
                    events_ref("events-event"), events_ref("events-error"),
                    events_ref("events-pong")]}},
            },
            "/ws/api": {
                "description": "Requests to a world and event subscriptions for API clients; \
                    authenticate with {type:'auth', token:<API key>} within the auth timeout.",
                "bindings": {"ws": {"query": {"type": "object",
                    "properties": {"clientId": {"type": "string"}}}}},
                "publish": {"operationId": "apiSend", "message": {"oneOf": client_refs}},
                "subscribe": {"operationId": "apiReceive", "message": {"oneOf": server_refs}},
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
                "publish": {"operationId": "moduleSend", "message": {"oneOf": from_module}},
                "subscribe": {"operationId": "moduleReceive", "message": {"oneOf": to_module}},
            },
        },
        "components": {"messages": messages},
    })
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
        assert_eq!(
            contact_host("https://relay.example.com:8443/x"),
            "relay.example.com"
        );
        assert_eq!(contact_host("http://[::1]:3010"), "::1");
        assert_eq!(contact_host("http://pi.lan"), "pi.lan");
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
}
