//! REST call → module message, and module reply → HTTP reply, for the forwarded routes.
//!
//! Pure: values in, values out (no sockets, no clock, no key store). The caller authenticates,
//! checks the route scope, resolves the clientId and owns the pending request; this file owns
//! the per-route rules around that:
//!
//! - parameters: sources in order, coercion, required, route-specific validation
//!   (relay-protocol.md §2.2 steps 1-4, routes.tsv `params` and `notes`);
//! - the flat module message (relay-protocol.md §2.2 step 6, module-protocol.md §3.2);
//! - the reply: JSON passthrough with its status, or decoded bytes for the binary routes
//!   (relay-protocol.md §2.4, §2.6; api-surface.md "Binary routes");
//! - a raw-body `/upload` turned into the data URL the module accepts (api-surface.md
//!   discrepancy 11, module-protocol.md §3.5 `upload-file`).
//!
//! Error bodies and messages are the reference's (v3.4.1 `helpers/params.go`, `entity.go`,
//! `user.go`, `sheet.go`, `filesystem.go`), since clients match on them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{json, Map, Value};

use crate::http::route::{Kind, PType, Param, Route, Source};

use self::b64::{base64_decode, base64_encode};

/// A request refused before it reaches the module: status (always 400 today) and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamError {
    pub status: u16,
    pub body: Value,
}

impl ParamError {
    fn bad_request(message: impl Into<String>) -> ParamError {
        ParamError {
            status: 400,
            body: json!({ "error": message.into() }),
        }
    }
}

/// An HTTP reply built from a module reply. `Content-Length` and CORS are the renderer's job.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    /// Extra headers: `Content-Disposition`, `X-Image-Width`, `X-Image-Height`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

const JSON: &str = "application/json";

/// Canvas `documentType` (the path segment) → Foundry `className` (routes.tsv canvas notes;
/// `regions` is accepted although api-docs omits it, api-surface.md discrepancy 30).
const CANVAS_TYPES: &[(&str, &str)] = &[
    ("tokens", "Token"),
    ("tiles", "Tile"),
    ("drawings", "Drawing"),
    ("lights", "AmbientLight"),
    ("sounds", "AmbientSound"),
    ("notes", "Note"),
    ("templates", "MeasuredTemplate"),
    ("walls", "Wall"),
    ("regions", "Region"),
];

/// The valid canvas `documentType` path segments, in the reference's order (for the API
/// document's `enum`).
pub fn canvas_document_types() -> impl Iterator<Item = &'static str> {
    CANVAS_TYPES.iter().map(|(t, _)| *t)
}

/// The route's "one of these is required" rule, by module type: the names (any one of which
/// satisfies it) and the reference's message. Checked here and described in `/openapi.json`.
pub fn one_of_rule(ws_type: &str) -> Option<(&'static [&'static str], &'static str)> {
    ONE_OF
        .iter()
        .find(|(t, _, _)| *t == ws_type)
        .map(|(_, names, message)| (*names, *message))
}

/// Canvas `documentType` → `className` (tokens → Token, …, regions → Region).
pub fn canvas_class_name(document_type: &str) -> Option<&'static str> {
    CANVAS_TYPES
        .iter()
        .find(|(t, _)| *t == document_type)
        .map(|(_, c)| *c)
}

/// "One of these is required" rules, from the routes.tsv notes ("one of a|b required"), by
/// module type, with the reference's message for each.
const ONE_OF: &[(&str, &[&str], &str)] = &[
    (
        "search",
        &["query", "filter"],
        "'query' or 'filter' is required",
    ),
    (
        "select",
        &["uuids", "name", "data", "all"],
        "At least one of 'uuids', 'name', 'data', or 'all' is required",
    ),
    (
        "get-user",
        &["id", "name"],
        "At least one of 'id' or 'name' is required",
    ),
    (
        "update-user",
        &["id", "name"],
        "At least one of 'id' or 'name' is required",
    ),
    (
        "delete-user",
        &["id", "name"],
        "At least one of 'id' or 'name' is required",
    ),
    (
        "get-scene",
        &["sceneId", "name", "active", "viewed", "all"],
        "At least one of 'sceneId', 'name', 'active', 'viewed', or 'all' is required",
    ),
    (
        "update-scene",
        &["sceneId", "name", "active"],
        "At least one of 'sceneId', 'name', or 'active' is required",
    ),
    (
        "delete-scene",
        &["sceneId", "name"],
        "At least one of 'sceneId' or 'name' is required",
    ),
    (
        "switch-scene",
        &["sceneId", "name"],
        "At least one of 'sceneId' or 'name' is required",
    ),
    (
        "sheet-screenshot",
        &["uuid", "selected"],
        "Either 'uuid' or 'selected' is required",
    ),
];

/// Substrings that make a script unacceptable (relay-protocol.md §2.2 step 4). The reference
/// writes them as regexes, but every one is a plain literal, so a substring test is exact.
const FORBIDDEN_SCRIPT_PATTERNS: &[&str] = &[
    "localStorage",
    "sessionStorage",
    "document.cookie",
    "eval(",
    "new Worker(",
    "new SharedWorker(",
    "__proto__",
    "atob(",
    "btoa(",
    "crypto.",
    "Intl.",
    "postMessage(",
    "XMLHttpRequest",
    "importScripts(",
    "apiKey",
    "privateKey",
    "password",
    "Function(",
    "Function.constructor",
    "globalThis",
    "game.settings.set",
    "Reflect.",
    "Proxy",
    "import(",
];

const FORBIDDEN_SCRIPT: &str = "Script contains forbidden patterns";
const MACRO_WRITE: &str = "macro:write";
const MACRO_WRITE_MISSING: &str = "macro:write scope is required to create macros";
const UPLOAD_PATH_FILENAME: &str = "'path' and 'filename' are required";
const OCTET_STREAM: &str = "application/octet-stream";

/// Keys removed from forwarded replies at any depth, so that a world never hands a secret to
/// an API client through a relay reply.
const SECRET_KEYS: &[&str] = &["privateKey", "apiKey", "password"];

/// A value as found in one source, before coercion.
enum Raw<'a> {
    Text(&'a str),
    Json(&'a Value),
}

/// Extract every declared param from its sources in order, coerce it, check required, then run
/// the route's own validations (relay-protocol.md §2.2 steps 1-4).
///
/// `query` holds form-decoded pairs; the first pair of a name is the one read and an empty value
/// counts as absent. `body` is the parsed JSON body (anything but an object counts as no body)
/// and is never read on GET. Path params come from [`crate::http::route::RouteTable::find`].
/// Canvas routes gain `className`; `/sheet`, `/scene/image` and `/upload` gain the defaults the
/// reference's handlers add. The scope that `/create` of a Macro needs is not checked here:
/// see [`extra_scope`].
pub fn extract_params(
    route: &Route,
    query: &[(String, String)],
    body: Option<&Value>,
    path_params: &[(String, String)],
) -> Result<Map<String, Value>, ParamError> {
    // relay-protocol.md §2.2 step 1: the reference decodes a body for every method but GET.
    let body = if route.method == "GET" {
        None
    } else {
        body.and_then(Value::as_object)
    };
    let mut out = Map::new();
    for param in &route.params {
        if let Some(raw) = lookup(param, query, body, path_params) {
            out.insert(param.name.clone(), coerce(&param.name, raw, param.ptype)?);
        }
    }
    // The reference's manual upload handler checks these two together, with its own message.
    if route.ws_type == "upload-file" && !(out.contains_key("path") && out.contains_key("filename"))
    {
        return Err(ParamError::bad_request(UPLOAD_PATH_FILENAME));
    }
    if let Some(missing) = route
        .params
        .iter()
        .find(|p| p.required && !out.contains_key(&p.name))
    {
        return Err(ParamError::bad_request(format!(
            "'{}' is required",
            missing.name
        )));
    }
    validate(route, &mut out)?;
    Ok(out)
}

fn lookup<'a>(
    param: &Param,
    query: &'a [(String, String)],
    body: Option<&'a Map<String, Value>>,
    path_params: &'a [(String, String)],
) -> Option<Raw<'a>> {
    param.sources.iter().find_map(|source| match source {
        Source::Query => query_get(query, &param.name).map(Raw::Text),
        // A JSON null counts as absent, an empty string as present (the reference's rule).
        Source::Body => body
            .and_then(|b| b.get(&param.name))
            .filter(|v| !v.is_null())
            .map(Raw::Json),
        Source::Path => path_params
            .iter()
            .find(|(k, _)| *k == param.name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .map(Raw::Text),
        Source::Header => None,
    })
}

/// The first query value of `name`, if it is non-empty.
fn query_get<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Coerce to the declared type with the reference's messages (relay-protocol.md §2.2 step 2).
fn coerce(name: &str, raw: Raw<'_>, ptype: PType) -> Result<Value, ParamError> {
    let text = match &raw {
        Raw::Text(s) => Some(*s),
        Raw::Json(Value::String(s)) => Some(s.as_str()),
        Raw::Json(_) => None,
    };
    let fail = |what: &str| -> Result<Value, ParamError> {
        Err(ParamError::bad_request(format!("'{name}' must be {what}")))
    };
    match ptype {
        PType::Any => Ok(match raw {
            Raw::Text(s) => Value::String(s.to_string()),
            Raw::Json(v) => v.clone(),
        }),
        PType::String => match text {
            Some(s) => Ok(Value::String(s.to_string())),
            None => fail("a string"),
        },
        PType::Number => match (raw, text) {
            (Raw::Json(v @ Value::Number(_)), _) => Ok(v.clone()),
            (_, Some(s)) => parse_number(s).map_or_else(|| fail("a valid number"), Ok),
            _ => fail("a valid number"),
        },
        PType::Boolean => match (raw, text) {
            (Raw::Json(v @ Value::Bool(_)), _) => Ok(v.clone()),
            (_, Some(s)) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            (_, Some(s)) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => fail("a valid boolean"),
        },
        PType::Array => match (raw, text) {
            (Raw::Json(v @ Value::Array(_)), _) => Ok(v.clone()),
            // A query string may carry a JSON array (`details=["items"]`).
            (_, Some(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Array(_)) => Ok(v),
                _ => fail("a valid array"),
            },
            _ => fail("an array"),
        },
        PType::Object => match raw {
            Raw::Json(v @ Value::Object(_)) => Ok(v.clone()),
            _ => fail("an object"),
        },
    }
}

/// A decimal number as JSON: integers stay integers (`5`, not `5.0`); non-finite values are
/// refused because JSON cannot carry them.
fn parse_number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f: f64 = s.parse().ok()?;
    serde_json::Number::from_f64(f).map(Value::Number)
}

/// The route-specific checks and additions of relay-protocol.md §2.2 step 4 and routes.tsv notes.
fn validate(route: &Route, params: &mut Map<String, Value>) -> Result<(), ParamError> {
    let ws_type = route.ws_type.as_str();
    if let Some((names, message)) = one_of_rule(ws_type) {
        if !names.iter().any(|n| params.contains_key(*n)) {
            return Err(ParamError::bad_request(message));
        }
    }
    let is_canvas = route
        .params
        .iter()
        .any(|p| p.name == "documentType" && p.sources.contains(&Source::Path));
    if is_canvas {
        let class = params
            .get("documentType")
            .and_then(Value::as_str)
            .and_then(canvas_class_name);
        let Some(class) = class else {
            let valid: Vec<&str> = canvas_document_types().collect();
            return Err(ParamError {
                status: 400,
                body: json!({
                    "error": format!("Invalid documentType. Must be one of: {}", valid.join(", ")),
                    "validTypes": valid,
                }),
            });
        };
        params.insert("className".into(), Value::from(class));
    }
    if let Some(msg) = script_refusal(ws_type, params) {
        return Err(ParamError::bad_request(msg));
    }
    match ws_type {
        // The reference's manual handlers always send these (relay-protocol.md §2.6).
        "sheet-screenshot" => {
            default(params, "format", Value::from("png"));
            default(params, "quality", json!(0.9));
            default(params, "scale", Value::from(1));
        }
        "scene-screenshot" => {
            default(params, "format", Value::from("png"));
            default(params, "quality", json!(0.9));
        }
        "upload-file" => {
            default(params, "source", Value::from("data"));
            default(params, "overwrite", Value::Bool(false));
            // The module accepts only a data URL (module-protocol.md §3.5 upload-file), while
            // the docs let a client send bare base64: wrap it rather than let the module refuse.
            let mime = params
                .get("mimeType")
                .and_then(Value::as_str)
                .and_then(media_type)
                .unwrap_or(OCTET_STREAM)
                .to_string();
            if let Some(Value::String(data)) = params.get_mut("fileData") {
                if !data.starts_with("data:") {
                    *data = format!("data:{mime};base64,{data}");
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn default(params: &mut Map<String, Value>, name: &str, value: Value) {
    params.entry(name).or_insert(value);
}

fn is_macro_create(params: &Map<String, Value>) -> bool {
    params.get("entityType").and_then(Value::as_str) == Some("Macro")
}

/// The reference's script screen (api-surface.md, "Extra validation"): an `execute-js`
/// script or a Macro's `data.command` matching a forbidden pattern is refused with 400.
/// Shared by HTTP (`validate`) and `/ws/api`, which the reference leaves unscreened.
pub fn script_refusal(ws_type: &str, params: &Map<String, Value>) -> Option<&'static str> {
    let script = match ws_type {
        "create" if is_macro_create(params) => params
            .get("data")
            .and_then(|d| d.get("command"))
            .and_then(Value::as_str),
        "execute-js" => params.get("script").and_then(Value::as_str),
        _ => None,
    };
    script
        .is_some_and(script_is_forbidden)
        .then_some(FORBIDDEN_SCRIPT)
}

fn script_is_forbidden(script: &str) -> bool {
    FORBIDDEN_SCRIPT_PATTERNS.iter().any(|p| script.contains(p))
}

/// A scope the call needs beyond the route's own: `/create` with `entityType` `Macro` needs
/// `macro:write` (api-surface.md, "Extra validation inside forward routes").
pub fn extra_scope(route: &Route, params: &Map<String, Value>) -> Option<&'static str> {
    (route.ws_type == "create" && is_macro_create(params)).then_some(MACRO_WRITE)
}

/// [`extra_scope`] checked against the caller's scopes; the reference answers 400, not 403,
/// because the check runs among its parameter validations.
pub fn check_extra_scope(
    route: &Route,
    params: &Map<String, Value>,
    scopes: &[String],
) -> Result<(), ParamError> {
    match extra_scope(route, params) {
        Some(needed) if !scopes.iter().any(|s| s == needed) => {
            Err(ParamError::bad_request(MACRO_WRITE_MISSING))
        }
        _ => Ok(()),
    }
}

/// The flat module message (relay-protocol.md §2.2 step 6): every param except `clientId` and
/// `type` at the top level, then `userId` when the key binds one (it overrides the caller's),
/// `type`, `requestId`, `_scopes` (the caller's scope list), and `data: {}` when no `data` param
/// was given. Path params are already in `params` under their own names. Serialized once.
pub fn build_message(
    route: &Route,
    params: Map<String, Value>,
    request_id: &str,
    scopes: &[String],
    bound_user_id: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    let has_data = params.contains_key("data");
    for (key, value) in &params {
        // NOTE: `requestId`, `_scopes` and `type` are the relay's own; no route declares them,
        // but skipping them keeps the message free of duplicate keys whatever a table says.
        let reserved = matches!(key.as_str(), "clientId" | "type" | "requestId" | "_scopes");
        if reserved || (key == "userId" && bound_user_id.is_some()) {
            continue;
        }
        push_field(&mut out, &mut first, key, value);
    }
    if let Some(user) = bound_user_id {
        push_field(&mut out, &mut first, "userId", &user);
    }
    push_field(&mut out, &mut first, "type", &route.ws_type.as_str());
    push_field(&mut out, &mut first, "requestId", &request_id);
    push_field(&mut out, &mut first, "_scopes", &scopes);
    if !has_data {
        push_field(&mut out, &mut first, "data", &Value::Object(Map::new()));
    }
    out.push(b'}');
    out
}

fn push_field<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    first: &mut bool,
    key: &str,
    value: &T,
) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    // Serializing a str or a serde_json::Value into memory cannot fail (Value holds only finite
    // numbers and string keys); `null` keeps the JSON well-formed should that ever change.
    out.extend(serde_json::to_vec(key).unwrap_or_else(|_| b"\"\"".to_vec()));
    out.push(b':');
    out.extend(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()));
}

/// The module's reply → the HTTP reply.
///
/// JSON passthrough (relay-protocol.md §2.4): the module's bytes verbatim with 200, or 400 when
/// the top-level object has a non-null `error`. The only change is that keys named
/// `privateKey`, `apiKey` or `password` are removed at any depth; a byte scan decides whether
/// the reply needs parsing, and it is re-serialized only when a key was removed.
///
/// Binary kind (api-surface.md "Binary routes"): a module error → 400 `{requestId, error}`;
/// `/download` with `format=base64` (read from `query`), a missing payload, or a payload that
/// does not decode → JSON passthrough; otherwise the decoded bytes with their headers.
pub fn reply_to_http(route: &Route, query: &[(String, String)], reply_text: &[u8]) -> Reply {
    if route.kind == Kind::Binary {
        if let Some(reply) = binary_reply(route, query, reply_text) {
            return reply;
        }
    }
    json_reply(reply_text)
}

fn json_reply(text: &[u8]) -> Reply {
    let reply = |status, body| Reply {
        status,
        content_type: JSON.to_string(),
        headers: Vec::new(),
        body,
    };
    if may_hold_secret(text) {
        if let Ok(mut value) = serde_json::from_slice::<Value>(text) {
            let status = status_of(&value);
            if scrub(&mut value) {
                if let Ok(body) = serde_json::to_vec(&value) {
                    return reply(status, body);
                }
            }
            return reply(status, text.to_vec());
        }
    }
    let status =
        serde_json::from_slice::<TopLevelError>(text).map_or(200, |e| if e.0 { 400 } else { 200 });
    reply(status, text.to_vec())
}

/// relay-protocol.md §2.4: 400 only when the top-level `error` is a JSON string (even
/// empty); `false`, `0`, an object or null leave it 200.
fn status_of(value: &Value) -> u16 {
    match value.get("error") {
        Some(Value::String(_)) => 400,
        _ => 200,
    }
}

/// Whether `text` could hold a secret key: one of them as a quoted string, or any `\u` escape
/// (an escaped key could spell one). One pass over the bytes, no allocation.
fn may_hold_secret(text: &[u8]) -> bool {
    text.iter().enumerate().any(|(i, &b)| match b {
        b'"' => {
            let rest = text.get(i + 1..).unwrap_or(&[]);
            SECRET_KEYS
                .iter()
                .any(|k| rest.starts_with(k.as_bytes()) && rest.get(k.len()) == Some(&b'"'))
        }
        b'\\' => text.get(i + 1) == Some(&b'u'),
        _ => false,
    })
}

/// Remove the secret keys at any depth; true if anything was removed. Recursion is bounded by
/// serde_json's parse depth limit (128).
fn scrub(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let before = map.len();
            map.retain(|k, _| !SECRET_KEYS.contains(&k.as_str()));
            let mut removed = map.len() != before;
            for v in map.values_mut() {
                removed |= scrub(v);
            }
            removed
        }
        Value::Array(items) => items.iter_mut().fold(false, |acc, v| scrub(v) | acc),
        _ => false,
    }
}

/// Whether the top level of a JSON text is an object whose `error` is a string (§2.4), found
/// without building the document: other values are skipped with `IgnoredAny`, and only the
/// `error` value itself is parsed.
struct TopLevelError(bool);

impl<'de> Deserialize<'de> for TopLevelError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = TopLevelError;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevelError, A::Error> {
                let mut found = false;
                while let Some(key) = map.next_key::<IsErrorKey>()? {
                    if key.0 {
                        found = map.next_value::<Value>()?.is_string();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TopLevelError(found))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A map key, reduced to "is it `error`".
struct IsErrorKey(bool);

impl<'de> Deserialize<'de> for IsErrorKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = IsErrorKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsErrorKey, E> {
                Ok(IsErrorKey(v == "error"))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

fn binary_reply(route: &Route, query: &[(String, String)], text: &[u8]) -> Option<Reply> {
    let value: Value = serde_json::from_slice(text).ok()?;
    let obj = value.as_object()?;
    // The reference's binary handlers treat only a non-empty error string as an error, and
    // answer it with a body of their own (relay-protocol.md §2.6).
    if let Some(error) = obj.get("error").and_then(Value::as_str) {
        if !error.is_empty() {
            let mut body = Map::new();
            if let Some(id) = obj.get("requestId") {
                body.insert("requestId".into(), id.clone());
            }
            body.insert("error".into(), Value::from(error));
            return Some(Reply {
                status: 400,
                content_type: JSON.to_string(),
                headers: Vec::new(),
                body: serde_json::to_vec(&body).ok()?,
            });
        }
    }
    match route.ws_type.as_str() {
        "download-file" => {
            if query_get(query, "format") == Some("base64") {
                return None;
            }
            let bytes = decode_data_url(obj.get("fileData")?.as_str()?)?;
            let mime = obj
                .get("mimeType")
                .and_then(Value::as_str)
                .filter(|m| header_safe(m))
                .unwrap_or(OCTET_STREAM);
            let name = ["fileName", "filename"]
                .iter()
                .filter_map(|k| obj.get(*k).and_then(Value::as_str))
                .find(|n| !n.is_empty())
                .unwrap_or("");
            Some(Reply {
                status: 200,
                content_type: mime.to_string(),
                headers: vec![("Content-Disposition", content_disposition(name))],
                body: bytes,
            })
        }
        "sheet-screenshot" | "scene-screenshot" => {
            let image = obj
                .get("imageData")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .or_else(|| obj.get("data")?.get("imageData")?.as_str())?;
            let bytes = decode_data_url(image)?;
            // The reference names the type from the requested format, not the module's mimeType.
            let content_type = if query_get(query, "format") == Some("jpeg") {
                "image/jpeg"
            } else {
                "image/png"
            };
            let mut headers = Vec::new();
            if let Some(w) = dimension(obj.get("width")) {
                headers.push(("X-Image-Width", w));
            }
            if let Some(h) = dimension(obj.get("height")) {
                headers.push(("X-Image-Height", h));
            }
            Some(Reply {
                status: 200,
                content_type: content_type.to_string(),
                headers,
                body: bytes,
            })
        }
        _ => None,
    }
}

/// Base64 after the first comma (a `data:…;base64,` prefix is dropped); `None` when empty or
/// not base64, which sends the caller back to JSON passthrough.
fn decode_data_url(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() {
        return None;
    }
    let b64 = s.split_once(',').map_or(s, |(_, tail)| tail);
    base64_decode(b64)
}

/// An image dimension as a header value: a JSON number, or a string of digits.
fn dimension(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => return None,
        }),
        Value::String(s)
            if !s.is_empty()
                && s.len() <= 20
                && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

/// A header value the module supplied: visible ASCII and spaces only, bounded, so a reply can
/// never split or inject a header (RFC 9110 §5.5).
fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// `attachment; filename="<name>"` as the reference sends it, made safe: `"` and `\` escaped
/// and control characters replaced (RFC 6266 §4.1 quoted-string); a non-ASCII name also gets
/// `filename*` (RFC 6266 §4.3, RFC 8187) with `_` for those characters in the plain form.
fn content_disposition(name: &str) -> String {
    let mut plain = String::with_capacity(name.len());
    let mut non_ascii = false;
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                plain.push('\\');
                plain.push(c);
            }
            c if c.is_ascii_control() => plain.push('_'),
            c if !c.is_ascii() => {
                non_ascii = true;
                plain.push('_');
            }
            c => plain.push(c),
        }
    }
    let mut out = format!("attachment; filename=\"{plain}\"");
    if non_ascii {
        out.push_str("; filename*=UTF-8''");
        for b in name.bytes() {
            // RFC 8187 §3.2.1 attr-char
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// `type/subtype` made of RFC 9110 §5.6.2 token characters, without parameters: the only
/// shape that is safe inside `data:<mime>;base64,` (a `,` or `;` would move the payload the
/// module splits off at the first comma).
fn media_type(s: &str) -> Option<&str> {
    let s = s.split(';').next().unwrap_or("").trim();
    let (t, sub) = s.split_once('/')?;
    let token = |x: &str| {
        !x.is_empty()
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    (token(t) && token(sub) && s.len() <= 127).then_some(s)
}

/// A forwarded route's request body (relay-protocol.md §2.2 step 1), for every method but
/// GET. A JSON `null` is no body. When the body is declared JSON (or has no Content-Type) it
/// must be a JSON object: malformed JSON or another JSON value is a 400, never silently
/// forwarded without its fields. A body of another media type is ignored unless it happens to
/// be a JSON object, as the reference's JSON body parser does.
pub fn parse_json_body(body: &[u8], declared_json: bool) -> Result<Option<Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Null) => Ok(None),
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) if declared_json => Err("The request body must be a JSON object".to_string()),
        Err(e) if declared_json => Err(format!("Invalid JSON body: {e}")),
        _ => Ok(None),
    }
}

/// Whether an `/upload` body is JSON: the reference reads JSON when `Content-Type` starts with
/// `application/json` or is absent, and raw bytes otherwise (relay-protocol.md §2.6).
pub fn upload_body_is_json(content_type: Option<&str>) -> bool {
    match content_type.map(str::trim) {
        None | Some("") => true,
        Some(ct) => ct
            .get(..16)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/json")),
    }
}

/// A raw (non-JSON) `/upload` body → the params the module expects, to be passed as the body
/// to [`extract_params`] (which then applies the required checks and defaults).
///
/// The metadata comes from the query (`path`, `filename`, `source`, `overwrite`, `mimeType`);
/// the bytes travel as `fileData: "data:<mime>;base64,…"`, the form the module accepts, where
/// the reference sent them as a plain string the module rejects (relay-protocol.md §2.6,
/// api-surface.md discrepancy 11). `<mime>` is the query `mimeType`, else the request's
/// `Content-Type`, else `application/octet-stream`.
pub fn upload_params_from_raw(
    query: &[(String, String)],
    content_type: Option<&str>,
    body: &[u8],
) -> Map<String, Value> {
    let mut out = Map::new();
    for name in ["path", "filename", "source"] {
        if let Some(v) = query_get(query, name) {
            out.insert(name.into(), Value::from(v));
        }
    }
    let overwrite = match query_get(query, "overwrite") {
        None => Value::Bool(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Value::Bool(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Value::Bool(false),
        // Left as text so that extract_params reports it like any bad boolean.
        Some(v) => Value::from(v),
    };
    out.insert("overwrite".into(), overwrite);
    let mime = query_get(query, "mimeType")
        .and_then(media_type)
        .or_else(|| content_type.and_then(media_type))
        .unwrap_or(OCTET_STREAM);
    out.insert("mimeType".into(), Value::from(mime));
    let data = format!("data:{mime};base64,{}", base64_encode(body));
    out.insert("fileData".into(), Value::from(data));
    out
}

/// Standard base64 (RFC 4648 §4). Kept private with the same names and signatures as
/// `crate::enc` so the shared helper can replace it.
mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const INVALID: u8 = 0xFF;
    const DECODE: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut i = 0;
        while i < 64 {
            table[ALPHABET[i] as usize] = i as u8;
            i += 1;
        }
        table
    };

    pub fn base64_encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk.first().copied().unwrap_or(0),
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            let sextet = |shift: u32| char::from(ALPHABET[(n >> shift & 63) as usize]);
            out.push(sextet(18));
            out.push(sextet(12));
            out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
            out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
        }
        out
    }

    /// Decode standard base64. Line breaks are skipped (as Go's decoder does); padding may be
    /// omitted but, when present, must be exact; any other byte fails the whole decode.
    pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
        let (mut acc, mut n, mut pad) = (0u32, 0u8, 0u8);
        for &c in s.as_bytes() {
            match c {
                b'\r' | b'\n' => continue,
                b'=' => {
                    pad += 1;
                    continue;
                }
                _ if pad > 0 => return None,
                _ => {}
            }
            let v = DECODE[usize::from(c)];
            if v == INVALID {
                return None;
            }
            acc = acc << 6 | u32::from(v);
            n += 1;
            if n == 4 {
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                acc = 0;
                n = 0;
            }
        }
        match (n, pad) {
            (0, 0) => {}
            (2, 0 | 2) => out.push((acc >> 4) as u8),
            (3, 0 | 1) => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            _ => return None,
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::route::RouteTable;

    fn route(method: &str, pattern: &str) -> Route {
        RouteTable::builtin()
            .routes()
            .iter()
            .find(|r| r.method == method && r.pattern == pattern)
            .cloned()
            .unwrap_or_else(|| panic!("no route {method} {pattern}"))
    }

    /// `a=1&b=2` → pairs (test inputs are already decoded).
    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn err(message: &str) -> Value {
        json!({ "error": message })
    }

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// (method, pattern, query, body, path params, Ok(params) or Err(error body))
    type ExtractCase = (
        &'static str,
        &'static str,
        &'static str,
        Value,
        &'static [(&'static str, &'static str)],
        Result<Value, Value>,
    );

    #[rustfmt::skip]
    fn extract_cases() -> Vec<ExtractCase> {
        vec![
            // /get: query only, booleans case-insensitive, GET bodies ignored
            ("GET", "/get", "uuid=Actor.1&selected=TRUE", Value::Null, &[], Ok(json!({"uuid": "Actor.1", "selected": true}))),
            ("GET", "/get", "", json!({"uuid": "x"}), &[], Ok(json!({}))),
            ("GET", "/get", "uuid=a&uuid=b", Value::Null, &[], Ok(json!({"uuid": "a"}))),
            ("GET", "/get", "uuid=&uuid=b", Value::Null, &[], Ok(json!({}))),
            ("GET", "/get", "selected=yes", Value::Null, &[], Err(err("'selected' must be a valid boolean"))),
            ("GET", "/get", "clientId=c1&userId=u", Value::Null, &[], Ok(json!({"clientId": "c1", "userId": "u"}))),
            // /create: body sources, body|query order, required, object type
            ("POST", "/create", "userId=qu&keepId=false", json!({"entityType": "Actor", "data": {"name": "A"}, "keepId": "true", "userId": "bu", "extra": 1}), &[],
                Ok(json!({"entityType": "Actor", "data": {"name": "A"}, "keepId": true, "userId": "qu"}))),
            ("POST", "/create", "keepId=false", json!({"entityType": "Actor", "data": {}}), &[], Ok(json!({"entityType": "Actor", "data": {}, "keepId": false}))),
            ("POST", "/create", "", json!({"entityType": "Actor"}), &[], Err(err("'data' is required"))),
            ("POST", "/create", "", json!({"entityType": null, "data": {}}), &[], Err(err("'entityType' is required"))),
            ("POST", "/create", "", json!({"entityType": "Actor", "data": "x"}), &[], Err(err("'data' must be an object"))),
            ("POST", "/create", "", json!({"entityType": 5, "data": {}}), &[], Err(err("'entityType' must be a string"))),
            ("POST", "/create", "", json!({"entityType": "", "data": {}}), &[], Ok(json!({"entityType": "", "data": {}}))),
            ("POST", "/create", "", json!(["not", "an", "object"]), &[], Err(err("'entityType' is required"))),
            ("POST", "/create", "", json!({"entityType": "Macro", "data": {"command": "eval(1)"}}), &[], Err(err("Script contains forbidden patterns"))),
            ("POST", "/create", "", json!({"entityType": "Macro", "data": {"command": "ui.notifications.info('hi')"}}), &[],
                Ok(json!({"entityType": "Macro", "data": {"command": "ui.notifications.info('hi')"}}))),
            ("POST", "/create", "", json!({"entityType": "Actor", "data": {"command": "eval(1)"}}), &[], Ok(json!({"entityType": "Actor", "data": {"command": "eval(1)"}}))),
            // /roll: arrays from JSON or from a JSON string, booleans from strings
            ("POST", "/roll", "", json!({"formula": "1d20", "whisper": "[\"a\"]", "createChatMessage": "false"}), &[],
                Ok(json!({"formula": "1d20", "whisper": ["a"], "createChatMessage": false}))),
            ("POST", "/roll", "", json!({"formula": "1d20", "whisper": ["a", "b"]}), &[], Ok(json!({"formula": "1d20", "whisper": ["a", "b"]}))),
            ("POST", "/roll", "", json!({"formula": "1d20", "whisper": "nope"}), &[], Err(err("'whisper' must be a valid array"))),
            ("POST", "/roll", "", json!({"formula": "1d20", "whisper": 5}), &[], Err(err("'whisper' must be an array"))),
            ("POST", "/roll", "", json!({"flavor": "x"}), &[], Err(err("'formula' is required"))),
            ("POST", "/roll", "formula=1d6", json!({}), &[], Err(err("'formula' is required"))),
            // numbers: integers stay integers, floats parse, junk and non-finite fail
            ("POST", "/increase", "", json!({"attribute": "hp", "amount": "5"}), &[], Ok(json!({"attribute": "hp", "amount": 5}))),
            ("POST", "/increase", "", json!({"attribute": "hp", "amount": "2.5"}), &[], Ok(json!({"attribute": "hp", "amount": 2.5}))),
            ("POST", "/increase", "", json!({"attribute": "hp", "amount": 7}), &[], Ok(json!({"attribute": "hp", "amount": 7}))),
            ("POST", "/increase", "", json!({"attribute": "hp", "amount": "abc"}), &[], Err(err("'amount' must be a valid number"))),
            ("POST", "/increase", "", json!({"attribute": "hp", "amount": "inf"}), &[], Err(err("'amount' must be a valid number"))),
            ("POST", "/increase", "", json!({"attribute": "hp", "amount": true}), &[], Err(err("'amount' must be a valid number"))),
            ("POST", "/move-token", "x=10&y=-2.5", json!({}), &[], Ok(json!({"x": 10, "y": -2.5}))),
            // canvas: documentType from the path, className added, unknown types refused
            ("GET", "/canvas/{documentType}", "sceneId=s1", Value::Null, &[("documentType", "tokens")],
                Ok(json!({"documentType": "tokens", "className": "Token", "sceneId": "s1"}))),
            ("DELETE", "/canvas/{documentType}", "documentId=d1", Value::Null, &[("documentType", "regions")],
                Ok(json!({"documentType": "regions", "className": "Region", "documentId": "d1"}))),
            ("PUT", "/canvas/{documentType}", "", json!({"data": {}}), &[("documentType", "walls")], Err(err("'documentId' is required"))),
            ("GET", "/canvas/{documentType}", "", Value::Null, &[("documentType", "bogus")], Err(json!({
                "error": "Invalid documentType. Must be one of: tokens, tiles, drawings, lights, sounds, notes, templates, walls, regions",
                "validTypes": ["tokens", "tiles", "drawings", "lights", "sounds", "notes", "templates", "walls", "regions"]}))),
            ("GET", "/canvas/{documentType}", "", Value::Null, &[], Err(err("'documentType' is required"))),
            // macro execute: path param by name, object args
            ("POST", "/macro/{uuid}/execute", "", json!({"args": {"a": 1}}), &[("uuid", "Macro.abc")], Ok(json!({"uuid": "Macro.abc", "args": {"a": 1}}))),
            ("POST", "/macro/{uuid}/execute", "", json!({"args": "x"}), &[("uuid", "Macro.abc")], Err(err("'args' must be an object"))),
            ("POST", "/macro/{uuid}/execute", "uuid=Macro.q", json!({"uuid": "Macro.b"}), &[("uuid", "Macro.p")], Ok(json!({"uuid": "Macro.p"}))),
            // upload: its own required message, defaults, bare base64 wrapped into a data URL
            ("POST", "/upload", "", json!({"path": "p", "filename": "f.txt", "fileData": "aGk="}), &[],
                Ok(json!({"path": "p", "filename": "f.txt", "source": "data", "overwrite": false, "fileData": "data:application/octet-stream;base64,aGk="}))),
            ("POST", "/upload", "filename=f.txt&overwrite=true", json!({"path": "p", "mimeType": "text/plain", "fileData": "aGk="}), &[],
                Ok(json!({"path": "p", "filename": "f.txt", "source": "data", "overwrite": true, "mimeType": "text/plain", "fileData": "data:text/plain;base64,aGk="}))),
            ("POST", "/upload", "", json!({"path": "p", "filename": "f", "source": "public", "fileData": "data:image/png;base64,AAAA"}), &[],
                Ok(json!({"path": "p", "filename": "f", "source": "public", "overwrite": false, "fileData": "data:image/png;base64,AAAA"}))),
            ("POST", "/upload", "", json!({"path": "p", "fileData": "aGk="}), &[], Err(err("'path' and 'filename' are required"))),
            // download: format is a plain param (reply_to_http reads it from the query)
            ("GET", "/download", "path=a.txt&format=base64", Value::Null, &[], Ok(json!({"path": "a.txt", "format": "base64"}))),
            // one-of rules
            ("GET", "/search", "limit=5", Value::Null, &[], Err(err("'query' or 'filter' is required"))),
            ("GET", "/search", "filter=Actor", Value::Null, &[], Ok(json!({"filter": "Actor"}))),
            ("POST", "/select", "", json!({"overwrite": true}), &[], Err(err("At least one of 'uuids', 'name', 'data', or 'all' is required"))),
            ("GET", "/scene", "active=false", Value::Null, &[], Ok(json!({"active": false}))),
            ("GET", "/scene", "", Value::Null, &[], Err(err("At least one of 'sceneId', 'name', 'active', 'viewed', or 'all' is required"))),
            ("DELETE", "/user", "", json!({"id": "u"}), &[], Err(err("At least one of 'id' or 'name' is required"))),
            // sheet and scene image: the reference handlers' defaults
            ("GET", "/sheet", "", Value::Null, &[], Err(err("Either 'uuid' or 'selected' is required"))),
            ("GET", "/sheet", "uuid=Actor.1", Value::Null, &[], Ok(json!({"uuid": "Actor.1", "format": "png", "quality": 0.9, "scale": 1}))),
            ("GET", "/sheet", "selected=true&format=jpeg&quality=0.5", Value::Null, &[], Ok(json!({"selected": true, "format": "jpeg", "quality": 0.5, "scale": 1}))),
            ("GET", "/scene/image", "width=800", Value::Null, &[], Ok(json!({"width": 800, "format": "png", "quality": 0.9}))),
            // execute-js script check
            ("POST", "/execute-js", "", json!({"script": "return globalThis"}), &[], Err(err("Script contains forbidden patterns"))),
            ("POST", "/execute-js", "", json!({"script": "return game.world.id"}), &[], Ok(json!({"script": "return game.world.id"}))),
            ("POST", "/execute-js", "", json!({"script": 5}), &[], Err(err("'script' must be a string"))),
            // arrays from the query
            ("GET", "/dnd5e/get-actor-details", "actorUuid=A&details=[\"items\",\"spells\"]", Value::Null, &[], Ok(json!({"actorUuid": "A", "details": ["items", "spells"]}))),
            ("GET", "/dnd5e/get-actor-details", "actorUuid=A&details=items", Value::Null, &[], Err(err("'details' must be a valid array"))),
            ("POST", "/dnd5e/transfer-currency", "currency={}", json!({}), &[], Err(err("'currency' must be an object"))),
        ]
    }

    #[test]
    fn extract_params_cases() {
        for (method, pattern, query, body, path, want) in extract_cases() {
            let r = route(method, pattern);
            let path: Vec<(String, String)> = path
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let body = (!body.is_null()).then_some(&body);
            let got = extract_params(&r, &q(query), body, &path)
                .map(Value::Object)
                .map_err(|e| {
                    assert_eq!(e.status, 400);
                    e.body
                });
            assert_eq!(got, want, "{method} {pattern} ?{query}");
        }
    }

    #[test]
    fn one_of_rules_cover_every_note() {
        // Every "one of a|b required" note of routes.tsv has exactly that rule here.
        let table = RouteTable::builtin();
        let mut seen = 0;
        for r in table.routes() {
            let Some(rest) = r.notes.split("one of ").nth(1) else {
                continue;
            };
            let names: Vec<&str> = rest.split(' ').next().unwrap_or("").split('|').collect();
            let rule = ONE_OF.iter().find(|(t, _, _)| *t == r.ws_type);
            assert_eq!(
                rule.map(|(_, n, _)| n.to_vec()),
                Some(names),
                "{} {}",
                r.method,
                r.pattern
            );
            seen += 1;
        }
        assert_eq!(seen, ONE_OF.len());
    }

    #[test]
    #[rustfmt::skip]
    fn extra_scope_for_macro_create() {
        let create = route("POST", "/create");
        let update = route("PUT", "/update");
        let macro_params = json!({"entityType": "Macro", "data": {}});
        let actor_params = json!({"entityType": "Actor", "data": {}});
        let scopes = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (route, params, caller scopes, extra scope, allowed)
        let cases = [
            (&create, &macro_params, scopes(&["entity:write"]), Some("macro:write"), false),
            (&create, &macro_params, scopes(&["entity:write", "macro:write"]), Some("macro:write"), true),
            (&create, &actor_params, scopes(&["entity:write"]), None, true),
            (&update, &macro_params, scopes(&["entity:write"]), None, true),
        ];
        for (r, params, have, want, ok) in cases {
            let params = params.as_object().cloned().unwrap_or_default();
            assert_eq!(extra_scope(r, &params), want);
            let got = check_extra_scope(r, &params, &have);
            assert_eq!(got.is_ok(), ok, "{} {:?}", r.pattern, have);
            if let Err(e) = got {
                assert_eq!((e.status, e.body), (400, err("macro:write scope is required to create macros")));
            }
        }
    }

    #[test]
    #[rustfmt::skip]
    fn build_message_shape() {
        let scopes = vec!["entity:read".to_string(), "roll:execute".to_string()];
        // (route, params, bound user, expected message)
        let cases = [
            (route("POST", "/roll"), json!({"formula": "2d20kh", "flavor": "Test Roll", "createChatMessage": true, "clientId": "c1"}), None,
                json!({"formula": "2d20kh", "flavor": "Test Roll", "createChatMessage": true, "type": "roll", "requestId": "r-1",
                       "_scopes": ["entity:read", "roll:execute"], "data": {}})),
            (route("POST", "/create"), json!({"entityType": "Actor", "data": {"name": "A"}, "userId": "caller"}), Some("bound"),
                json!({"entityType": "Actor", "data": {"name": "A"}, "userId": "bound", "type": "create", "requestId": "r-1",
                       "_scopes": ["entity:read", "roll:execute"]})),
            (route("GET", "/chat"), json!({"chatType": 1, "userId": "caller"}), None,
                json!({"chatType": 1, "userId": "caller", "type": "chat-messages", "requestId": "r-1",
                       "_scopes": ["entity:read", "roll:execute"], "data": {}})),
            (route("POST", "/macro/{uuid}/execute"), json!({"uuid": "Macro.x", "type": "evil", "requestId": "evil", "_scopes": ["all"]}), Some("u9"),
                json!({"uuid": "Macro.x", "userId": "u9", "type": "macro-execute", "requestId": "r-1",
                       "_scopes": ["entity:read", "roll:execute"], "data": {}})),
        ];
        for (r, params, bound, want) in cases {
            let params = params.as_object().cloned().unwrap_or_default();
            let bytes = build_message(&r, params, "r-1", &scopes, bound);
            let text = String::from_utf8(bytes.clone()).unwrap_or_default();
            let got: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_eq!(got, want, "{}", r.pattern);
            // one occurrence of each relay key: no duplicates in the flat message
            for key in ["\"type\"", "\"requestId\"", "\"_scopes\"", "\"data\""] {
                assert!(text.matches(key).count() <= 1, "{text}");
            }
            assert!(!text.contains("clientId"), "{text}");
        }
        // the relay's own fields come after the params, `data` last when added
        let bytes = build_message(&route("GET", "/world-info"), Map::new(), "id", &[], None);
        assert_eq!(bytes, br#"{"type":"world-info","requestId":"id","_scopes":[],"data":{}}"#.to_vec());
    }

    #[test]
    #[rustfmt::skip]
    fn reply_forward_status_and_passthrough() {
        let r = route("POST", "/roll");
        // (module reply, status); the body is always the module's bytes here
        let cases: &[(&str, u16)] = &[
            (r#"{"type":"roll-result","requestId":"x","success":true,"data":{"error":"inner"}}"#, 200),
            (r#"{"type":"roll-result","requestId":"x","success":false,"error":"Failed to roll formula: x"}"#, 400),
            (r#"{"type":"roll-result","requestId":"x","error":""}"#, 400),
            (r#"{"type":"roll-result","requestId":"x","error":null}"#, 200),
            // §2.4: only a string `error` makes it 400 (a contract fuzzer found these).
            (r#"{"type":"roll-result","requestId":"x","error":{"code":1}}"#, 200),
            (r#"{"type":"roll-result","requestId":"x","error":false}"#, 200),
            (r#"{"type":"roll-result","requestId":"x","error":0}"#, 200),
            (r#"{"type":"roll-result","requestId":"x","error":["a"]}"#, 200),
            (r#"{"type":"roll-result", "success" : false}"#, 200),
            (r#"[1,2]"#, 200),
            (r#"not json"#, 200),
            (r#"{"a":"\u0041","error":"x"}"#, 400),
            (r#"{"a":"\u0041","error":false}"#, 200),
        ];
        for (text, status) in cases {
            let reply = reply_to_http(&r, &[], text.as_bytes());
            assert_eq!(reply.status, *status, "{text}");
            assert_eq!(reply.content_type, "application/json");
            assert!(reply.headers.is_empty());
            assert_eq!(reply.body, text.as_bytes(), "{text}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn reply_secrets_are_removed_at_any_depth() {
        let r = route("GET", "/world-info");
        // (module reply, expected body, status)
        let cases: &[(&str, Value, u16)] = &[
            (r#"{"type":"t","data":{"users":[{"name":"a","password":"p"}],"apiKey":"k"}}"#,
                json!({"type": "t", "data": {"users": [{"name": "a"}]}}), 200),
            (r#"{"privateKey":"x","error":"boom"}"#, json!({"error": "boom"}), 400),
            (r#"{"type":"t","data":{"pass\u0077ord":"p"}}"#, json!({"type": "t", "data": {}}), 200),
            // the names as values, or inside longer keys, stay
            (r#"{"type":"t","data":{"note":"password","myapiKey":1,"passwords":2}}"#,
                json!({"type": "t", "data": {"note": "password", "myapiKey": 1, "passwords": 2}}), 200),
        ];
        for (text, want, status) in cases {
            let reply = reply_to_http(&r, &[], text.as_bytes());
            let got: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            assert_eq!((got, reply.status), (want.clone(), *status), "{text}");
        }
        // nothing removed → the original bytes, not a re-serialization
        let text = br#"{"z":1,"a":"password"}"#;
        assert_eq!(reply_to_http(&r, &[], text).body, text.to_vec());
    }

    #[test]
    #[rustfmt::skip]
    fn reply_binary_download() {
        let r = route("GET", "/download");
        let ok = r#"{"type":"download-file-result","requestId":"d1","success":true,"path":"a/b.txt","fileData":"data:text/plain;base64,aGVsbG8=","filename":"b.txt","mimeType":"text/plain"}"#;
        let reply = reply_to_http(&r, &q("path=a/b.txt"), ok.as_bytes());
        assert_eq!((reply.status, reply.content_type.as_str(), reply.body.as_slice()), (200, "text/plain", &b"hello"[..]));
        assert_eq!(header(&reply, "Content-Disposition"), Some("attachment; filename=\"b.txt\""));

        // format=base64 → JSON as is
        let reply = reply_to_http(&r, &q("format=base64"), ok.as_bytes());
        assert_eq!((reply.status, reply.content_type.as_str(), reply.body.as_slice()), (200, "application/json", ok.as_bytes()));

        // (module reply, status, content type, body)
        let cases: &[(&str, u16, &str, &[u8])] = &[
            (r#"{"requestId":"d1","fileData":"AAEC","fileName":"x.bin"}"#, 200, "application/octet-stream", &[0, 1, 2]),
            (r#"{"requestId":"d1","fileData":"AAEC","mimeType":"bad\r\nX-Evil: 1"}"#, 200, "application/octet-stream", &[0, 1, 2]),
            (r#"{"requestId":"d1","success":false,"error":"File not found"}"#, 400, "application/json", br#"{"error":"File not found","requestId":"d1"}"#),
            (r#"{"requestId":"d1","fileData":"data:x;base64,@@@"}"#, 200, "application/json", br#"{"requestId":"d1","fileData":"data:x;base64,@@@"}"#),
            (r#"{"requestId":"d1","fileData":""}"#, 200, "application/json", br#"{"requestId":"d1","fileData":""}"#),
            (r#"{"requestId":"d1"}"#, 200, "application/json", br#"{"requestId":"d1"}"#),
        ];
        for (text, status, ct, body) in cases {
            let reply = reply_to_http(&r, &[], text.as_bytes());
            assert_eq!((reply.status, reply.content_type.as_str(), reply.body.as_slice()), (*status, *ct, *body), "{text}");
        }
    }

    /// (query, module reply, status, content type, body, X-Image-Width, X-Image-Height)
    type ScreenshotCase = (
        &'static str,
        &'static str,
        u16,
        &'static str,
        &'static [u8],
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    #[rustfmt::skip]
    fn reply_binary_screenshots() {
        let cases: &[ScreenshotCase] = &[
            ("format=png", r#"{"imageData":"data:image/png;base64,iVBO","mimeType":"image/png","width":800,"height":600.0}"#,
                200, "image/png", &[0x89, 0x50, 0x4e], Some("800"), Some("600")),
            ("format=jpeg", r#"{"imageData":"/9j/","width":"12"}"#, 200, "image/jpeg", &[0xff, 0xd8, 0xff], Some("12"), None),
            ("", r#"{"data":{"imageData":"AAEC"},"width":null,"height":"1\r\n"}"#, 200, "image/png", &[0, 1, 2], None, None),
            ("", r#"{"requestId":"s","success":false,"error":"no sheet"}"#, 400, "application/json", br#"{"error":"no sheet","requestId":"s"}"#, None, None),
            ("", r#"{"requestId":"s","imageData":"***"}"#, 200, "application/json", br#"{"requestId":"s","imageData":"***"}"#, None, None),
        ];
        for pattern in ["/sheet", "/scene/image"] {
            let r = route("GET", pattern);
            for (query, text, status, ct, body, w, h) in cases {
                let reply = reply_to_http(&r, &q(query), text.as_bytes());
                assert_eq!((reply.status, reply.content_type.as_str(), reply.body.as_slice()), (*status, *ct, *body), "{pattern} {text}");
                assert_eq!((header(&reply, "X-Image-Width"), header(&reply, "X-Image-Height")), (*w, *h), "{pattern} {text}");
            }
        }
        // scene-raw-image is not binary despite its name: JSON passthrough
        let raw = route("GET", "/scene/image/raw");
        let text = br#"{"data":{"imageData":"data:image/png;base64,AAEC"}}"#;
        assert_eq!(reply_to_http(&raw, &[], text).body, text.to_vec());
    }

    #[test]
    fn content_disposition_cases() {
        let cases = [
            ("b.txt", "attachment; filename=\"b.txt\""),
            ("", "attachment; filename=\"\""),
            ("a\"b\\c", "attachment; filename=\"a\\\"b\\\\c\""),
            (
                "x\r\nSet-Cookie: y",
                "attachment; filename=\"x__Set-Cookie: y\"",
            ),
            (
                "é.txt",
                "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt",
            ),
        ];
        for (name, want) in cases {
            assert_eq!(content_disposition(name), want, "{name:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn upload_raw_body() {
        // (query, content type, body, expected params)
        let cases: &[(&str, Option<&str>, &[u8], Value)] = &[
            ("path=up&filename=a.png&overwrite=TRUE", Some("image/png"), &[0x89, 0x50, 0x4e],
                json!({"path": "up", "filename": "a.png", "overwrite": true, "mimeType": "image/png", "fileData": "data:image/png;base64,iVBO"})),
            ("path=up&filename=a&mimeType=text/plain&source=public", Some("application/octet-stream; x=y"), b"hi",
                json!({"path": "up", "filename": "a", "source": "public", "overwrite": false, "mimeType": "text/plain", "fileData": "data:text/plain;base64,aGk="})),
            ("filename=a&mimeType=a,b", Some("text/x;charset=utf-8"), b"",
                json!({"filename": "a", "overwrite": false, "mimeType": "text/x", "fileData": "data:text/x;base64,"})),
            ("overwrite=maybe", None, b"x",
                json!({"overwrite": "maybe", "mimeType": "application/octet-stream", "fileData": "data:application/octet-stream;base64,eA=="})),
        ];
        for (query, ct, body, want) in cases {
            let got = upload_params_from_raw(&q(query), *ct, body);
            assert_eq!(Value::Object(got), *want, "{query}");
        }
        // fed back through extract_params as the body: required checks and defaults apply
        let r = route("POST", "/upload");
        let raw = upload_params_from_raw(&q("path=up&filename=a.bin"), Some("application/zip"), b"PK");
        let params = extract_params(&r, &q("path=up&filename=a.bin"), Some(&Value::Object(raw)), &[]);
        assert_eq!(params.map(Value::Object), Ok(json!({"path": "up", "filename": "a.bin", "source": "data", "overwrite": false,
            "mimeType": "application/zip", "fileData": "data:application/zip;base64,UEs="})));
        let raw = upload_params_from_raw(&q("path=up&overwrite=maybe"), None, b"PK");
        let params = extract_params(&r, &q("path=up&overwrite=maybe"), Some(&Value::Object(raw)), &[]);
        assert_eq!(params.map_err(|e| e.body), Err(err("'overwrite' must be a valid boolean")));
    }

    #[test]
    fn upload_body_kind() {
        let cases = [
            (None, true),
            (Some(""), true),
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some("application/octet-stream"), false),
            (Some("image/png"), false),
            (Some("text/plain"), false),
        ];
        for (ct, want) in cases {
            assert_eq!(upload_body_is_json(ct), want, "{ct:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn canvas_class_names() {
        let cases = [
            ("tokens", Some("Token")), ("tiles", Some("Tile")), ("drawings", Some("Drawing")),
            ("lights", Some("AmbientLight")), ("sounds", Some("AmbientSound")), ("notes", Some("Note")),
            ("templates", Some("MeasuredTemplate")), ("walls", Some("Wall")), ("regions", Some("Region")),
            ("Tokens", None), ("token", None), ("", None),
        ];
        for (t, want) in cases {
            assert_eq!(canvas_class_name(t), want, "{t}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn base64_rfc4648_vectors() {
        // RFC 4648 §10
        let vectors: &[(&[u8], &str)] = &[
            (b"", ""), (b"f", "Zg=="), (b"fo", "Zm8="), (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="), (b"fooba", "Zm9vYmE="), (b"foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64_encode(plain), *encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(*plain), "{encoded}");
        }
        let lenient: &[(&str, &[u8])] = &[("Zg", b"f"), ("Zm8", b"fo"), ("Zm9v\r\nYmFy", b"foobar"), ("+/+/", &[0xfb, 0xff, 0xbf])];
        for (encoded, plain) in lenient {
            assert_eq!(base64_decode(encoded).as_deref(), Some(*plain), "{encoded}");
        }
        for bad in ["Z", "Zg=", "Zm8==", "Zg==Zg==", "Zm9v=", "Zm 9v", "Zm9v-_", "====", "Zg===", "é"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn secret_scan_cases() {
        let cases: &[(&[u8], bool)] = &[
            (br#"{"password":1}"#, true),
            (br#"{"a":{"apiKey":1}}"#, true),
            (br#"{"privateKey":1}"#, true),
            (br#"{"a":"\u0041"}"#, true),
            (br#"{"passwords":1}"#, false),
            (br#"{"a":"password"}"#, true),
            (br#"{"a":"my password"}"#, false),
            (br#"{"a":"\\n"}"#, false),
            (b"", false),
        ];
        for (text, want) in cases {
            assert_eq!(may_hold_secret(text), *want, "{}", String::from_utf8_lossy(text));
        }
    }
}
