//! The owner's admin API (`/admin/api/*`), its sign-in sessions, and the admin and pairing
//! pages (`/admin`, `/admin/app.js`, `/admin/app.css`, `/pair/{code}`).
//!
//! Authentication: the admin key in `x-api-key` or `Authorization: Bearer` (the CLI and
//! scripts), or the page's session cookie `fvtt_admin` from `POST /admin/api/login`. A session
//! must also send `X-CSRF-Token` on every POST/PATCH/DELETE: the cookie is `SameSite=Strict`
//! already, and the token is the second lock for browsers or proxies that ignore it. Sessions
//! are kept in the state file as the SHA-256 of the cookie value, so a restart does not sign
//! the owner out; the CSRF token is derived from the cookie value (a one-way hash), so it
//! need not be stored. An admin key rotation ends every session; the session check
//! (`GET /admin/api/session`) then tells the page why.
//!
//! Every `/admin*` and `/pair/*` response carries `Cache-Control: no-store` and the security
//! headers of relay-protocol.md §6.4, and no CORS header: these routes are same-origin only.
//! The JSON shapes here are the contract with the admin page and the CLI; times are unix ms.

use std::net::IpAddr;
use std::time::Instant;

use log::info;
use serde::Deserialize;
use serde_json::{json, Value};

use super::io::Action;
use super::limits::too_many;
use super::pairing::ReqStatus;
use super::remote;
use super::rest::presented_key;
use super::world::Live;
use super::Relay;
use crate::auth::{self, NewKey, Principal, ALL_SCOPES, DEFAULT_SCOPES};
use crate::enc;
use crate::http::request::{Head, Method};
use crate::http::response::{Body, Response};
use crate::ids::{self, ConnId};
use crate::store::{AdminSession, ApiKey, ConnToken, KnownWorld};

/// The session cookie's name.
pub const COOKIE: &str = "fvtt_admin";
/// Why a browser holding a session cookie is signed out.
const SESSION_GONE: &str =
    "Your session has ended: it expired, or the admin key was changed. Sign in again.";
/// Sessions kept at once; the oldest goes first (one owner rarely has more than a few).
const MAX_SESSIONS: usize = 32;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

const ADMIN_HTML: &str = include_str!("../assets/admin.html");
const PAIR_HTML: &str = include_str!("../assets/pair.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The CSRF token of the session whose cookie value is `sid`: derived, so a session kept
/// across a restart (only its hash is stored) still has it, and one-way, so the token (which
/// page scripts see) does not reveal the HttpOnly cookie.
fn csrf_for(sid: &str) -> String {
    auth::hash_secret(&format!("fvtt-relay csrf {sid}"))
}

/// How an admin request proved itself.
#[derive(Debug, PartialEq, Eq)]
enum Via {
    Key,
    Session(String),
}

/// Whether a request may proceed under the CSRF rule: safe methods always; state-changing
/// ones when authenticated by key (no ambient credential to forge), or by session with the
/// session's token presented (compared in constant time).
pub(crate) fn csrf_ok(
    method: Method,
    by_session: bool,
    expected: &str,
    presented: Option<&str>,
) -> bool {
    let changes = !matches!(method, Method::Get | Method::Head | Method::Options);
    if !changes || !by_session {
        return true;
    }
    match presented {
        Some(p) => !expected.is_empty() && auth::ct_eq(p.trim().as_bytes(), expected.as_bytes()),
        None => false,
    }
}

/// The value of cookie `name` in a `Cookie` header (RFC 6265 §5.4: `a=b; c=d`).
pub(crate) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Scopes from the CLI's `--scopes` or the API's `scopes` string: `default`, `all`, or a
/// comma-separated list (validated later by `create_api_key`).
pub fn scopes_from_spec(spec: &str) -> Vec<String> {
    match spec.trim() {
        "" | "default" => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
        "all" => ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// `scopes` of `POST /admin/api/keys`: absent/null → the 17 defaults; a string as in
/// [`scopes_from_spec`]; an array of strings.
fn scopes_from_json(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(scopes_from_spec("default")),
        Some(Value::String(s)) => Ok(scopes_from_spec(s)),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "scopes must be strings".to_string())
            })
            .collect(),
        Some(_) => Err("scopes must be an array of scope strings".into()),
    }
}

/// The admin API's view of a key (never its secret or hash).
pub fn key_json(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": k.scopes,
        "clientIds": k.client_ids,
        "userId": k.user_id,
        "expiresAt": k.expires_at_ms,
        "rateLimitPerMinute": k.rate_limit_per_minute,
        "createdAt": k.created_ms,
        "lastUsedAt": k.last_used_ms,
    })
}

/// The admin API's view of a connection token (never its secret or hash).
pub fn token_json(t: &ConnToken) -> Value {
    json!({
        "id": t.id,
        "clientId": t.client_id,
        "prefix": t.prefix,
        "allowedIps": t.allowed_ips,
        "createdAt": t.created_ms,
        "lastUsedAt": t.last_used_ms,
    })
}

/// The admin API's view of a paired world, online if `live` is its link.
pub fn world_json(w: &KnownWorld, live: Option<&Live>) -> Value {
    let (online, since, seen) = match live {
        Some(l) => (true, Some(l.connected_since_ms), Some(l.last_seen_ms)),
        None => (false, None, w.last_seen_ms),
    };
    let m = live.map(|l| &l.meta);
    let pick = |live: Option<&String>, stored: &String| live.unwrap_or(stored).clone();
    json!({
        "clientId": w.client_id,
        "worldId": pick(m.map(|m| &m.world_id), &w.world_id),
        "worldTitle": pick(m.map(|m| &m.world_title), &w.world_title),
        "systemId": pick(m.map(|m| &m.system_id), &w.system_id),
        "systemTitle": pick(m.map(|m| &m.system_title), &w.system_title),
        "systemVersion": pick(m.map(|m| &m.system_version), &w.system_version),
        "foundryVersion": pick(m.map(|m| &m.foundry_version), &w.foundry_version),
        "customName": pick(m.map(|m| &m.custom_name), &w.custom_name),
        "serverOrigin": w.server_origin,
        "users": live.map(|l| l.users.clone()).filter(Value::is_array),
        "allowedTargets": w.allowed_targets,
        "remoteScopes": w.remote_scopes,
        "isOnline": online,
        "connectedSince": since,
        "lastSeen": seen,
        "pairedAt": w.paired_ms,
        "lastLink": w.last_link.as_ref().map(|n| json!({"at": n.at_ms, "kind": n.kind, "text": n.text})),
    })
}

/// Headers on every `/admin*` and `/pair/*` response (relay-protocol.md §6.4) plus no-store:
/// keys and codes must not sit in a shared cache.
fn secured(resp: Response) -> Response {
    resp.header("Cache-Control", "no-store")
        .header("Content-Security-Policy", CSP)
        .header("X-Frame-Options", "DENY")
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "strict-origin-when-cross-origin")
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = Response::new(200).header("Content-Type", content_type);
    r.body = Body::Bytes(body.as_bytes().to_vec());
    r
}

/// `GET /` for a browser (its `Accept` names text/html): a small page naming the relay and its
/// version, with the way to the admin page. API clients keep `{"status":"ok"}`.
pub(crate) fn landing_page() -> Response {
    let html = INDEX_HTML.replace("{{VERSION}}", env!("CARGO_PKG_VERSION"));
    let mut r = Response::new(200).header("Content-Type", "text/html; charset=utf-8");
    r.body = Body::Bytes(html.into_bytes());
    secured(r)
}

/// Whether a request comes from a browser navigating to a page: its `Accept` lists text/html
/// (RFC 9110 §12.5.1; an API client sends `*/*`, `application/json`, or nothing).
pub(crate) fn wants_html(head: &Head) -> bool {
    head.header("accept").is_some_and(|a| {
        a.split(',').any(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/html")
        })
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginBody {
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct KeyBody {
    name: String,
    scopes: Option<Value>,
    client_ids: Vec<String>,
    user_id: Option<String>,
    expires_in_days: Option<u32>,
    rate_limit_per_minute: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct CodeBody {
    client_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct TokenPatch {
    allowed_ips: Option<Vec<String>>,
}

fn body_json<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let msg = format!("Invalid request body: {e}");
        Response::error(400, &msg)
    })
}

impl Relay {
    /// Everything under `/admin` and `/pair/`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admin_route(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        path: &str,
        body: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let get = matches!(head.method, Method::Get | Method::Head);
        let resp = match path {
            "/admin" if get => page("text/html; charset=utf-8", ADMIN_HTML),
            "/admin/app.js" if get => page("text/javascript; charset=utf-8", APP_JS),
            "/admin/app.css" if get => page("text/css; charset=utf-8", APP_CSS),
            p if p.starts_with("/pair/") && get => page("text/html; charset=utf-8", PAIR_HTML),
            p => match p.strip_prefix("/admin/api/") {
                Some(rest) => self.admin_api(peer, head, rest, body, now, out),
                None if head.method == Method::Options => {
                    Response::new(204).header("Allow", "GET, HEAD")
                }
                None if get => Response::error(404, "Not found"),
                None => Response::error(405, "Method not allowed").header("Allow", "GET, HEAD"),
            },
        };
        out.push(Action::Respond {
            conn,
            resp: secured(resp),
        });
    }

    /// Who is calling: the admin key, or a live session (whose CSRF token is checked for
    /// state-changing methods).
    fn admin_auth(&mut self, head: &Head, now_ms: u64) -> Result<Via, Response> {
        if let Some(k) = presented_key(head) {
            return match self.state.authenticate(Some(&k), now_ms) {
                Ok(Principal::Admin) => Ok(Via::Key),
                Ok(Principal::Key(_)) => Err(Response::error(
                    403,
                    "This route needs the admin key, not a scoped API key",
                )),
                Err(_) => Err(Response::error(401, "Invalid admin key")),
            };
        }
        let Some((hash, csrf)) = self.live_session(head, now_ms) else {
            return Err(Response::error(401, "Not signed in"));
        };
        if !csrf_ok(head.method, true, &csrf, head.header("x-csrf-token")) {
            return Err(Response::error(403, "Invalid CSRF token"));
        }
        Ok(Via::Session(hash))
    }

    /// The session the request's cookie names, if live: (its stored hash, its CSRF token).
    fn live_session(&mut self, head: &Head, now_ms: u64) -> Option<(String, String)> {
        // Expired ones go from memory now and from the file with the next save.
        self.state.admin_sessions.retain(|s| now_ms < s.expires_ms);
        let sid = cookie_value(head.header("cookie")?, COOKIE)?;
        let hash = auth::hash_secret(sid);
        self.state
            .admin_sessions
            .iter()
            .any(|s| s.hash == hash)
            .then(|| (hash, csrf_for(sid)))
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = self
            .cfg
            .public_url
            .as_deref()
            .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
        let mut c =
            format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
        if secure {
            c.push_str("; Secure");
        }
        c
    }

    fn admin_api(
        &mut self,
        peer: IpAddr,
        head: &Head,
        rest: &str,
        body: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Response {
        let now_ms = self.clock.ms(now);
        let m = head.method;
        let segs: Vec<String> = rest
            .split('/')
            .map(|s| enc::percent_decode(s).unwrap_or_default())
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        // RFC 9110 §15.5.6: a known path with a method it does not take is 405 with Allow,
        // before any credential is looked at (TRACE /admin/api/login is not a sign-in).
        if let Some(allow) = admin_methods(&segs) {
            if !allow.split(", ").any(|a| a == head.method_raw) {
                return Response::error(405, "Method not allowed").header("Allow", allow);
            }
        }
        match (m, segs.as_slice()) {
            (Method::Post, ["login"]) => return self.login(peer, body, now, now_ms, out),
            // The page asks on every load: "signed out" is an answer, not an error, so a
            // signed-out load logs no failed request. A cookie naming no live session means
            // it expired or the admin key changed; the sign-in page says so.
            (Method::Get, ["session"]) => {
                return match self.live_session(head, now_ms) {
                    Some((_, csrf)) => {
                        Response::json(200, &json!({"signedIn": true, "csrfToken": csrf}))
                    }
                    None if head
                        .header("cookie")
                        .and_then(|c| cookie_value(c, COOKIE))
                        .is_some_and(|v| !v.is_empty()) =>
                    {
                        Response::json(200, &json!({"signedIn": false, "reason": SESSION_GONE}))
                    }
                    None => Response::json(200, &json!({"signedIn": false})),
                };
            }
            _ => {}
        }
        let via = match self.admin_auth(head, now_ms) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let get = matches!(m, Method::Get | Method::Head);
        match (m, segs.as_slice()) {
            (Method::Post, ["logout"]) => {
                if let Via::Session(hash) = &via {
                    // A sign-out must not come back after a crash: saved before it is answered.
                    let undo = self.state.clone();
                    self.state.admin_sessions.retain(|s| &s.hash != hash);
                    if let Err(refused) = self.commit(undo) {
                        return refused;
                    }
                }
                Response::new(204).header("Set-Cookie", self.cookie("", 0))
            }
            (_, ["status"]) if get => Response::json(200, &self.status_report(now)),
            (_, ["scopes"]) if get => {
                Response::json(200, &json!({"all": ALL_SCOPES, "default": DEFAULT_SCOPES}))
            }
            (_, ["worlds"]) if get => {
                let worlds: Vec<Value> = self
                    .state
                    .worlds
                    .iter()
                    .map(|w| {
                        let live = self.worlds.get(&w.client_id);
                        let mut v = world_json(w, live);
                        // "Why is it offline?" (relay/history.rs).
                        v["history"] = self.history_json(&w.client_id);
                        v["lastNotice"] = self.notice_json(&w.client_id);
                        if live.is_none() {
                            v["offlineReason"] = json!(self.why_offline(&w.client_id));
                        }
                        v
                    })
                    .collect();
                Response::json(200, &json!({"worlds": worlds}))
            }
            (Method::Delete, ["worlds", id]) => self.unpair_world(id, now, out),
            (Method::Patch, ["worlds", id]) => self.set_grants(id, body),
            (_, ["keys"]) if get => {
                let keys: Vec<Value> = self.state.api_keys.iter().map(key_json).collect();
                Response::json(200, &json!({"keys": keys}))
            }
            (Method::Post, ["keys"]) => self.create_key(body, now_ms),
            (Method::Delete, ["keys", id]) => {
                let undo = self.state.clone();
                if self.state.revoke_api_key(id) {
                    if let Err(refused) = self.commit(undo) {
                        return refused;
                    }
                    self.key_revoked(id, out);
                    info!("API key {id} revoked by the owner");
                    Response::json(200, &json!({"success": true}))
                } else {
                    Response::error(404, "API key not found")
                }
            }
            (Method::Post, ["pairing-codes"]) => {
                let b: CodeBody = match body_json(body) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let bound = b.client_id.filter(|c| !c.trim().is_empty());
                if let Some(c) = &bound {
                    if !self.state.worlds.iter().any(|w| &w.client_id == c) {
                        return Response::error(404, "Unknown clientId");
                    }
                }
                let ttl = self.cfg.pairing_code_ttl;
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                let undo = self.state.clone();
                let (code, exp) =
                    self.state
                        .create_pairing_code_for(bound.as_deref(), ttl_ms, now_ms);
                if let Err(refused) = self.commit(undo) {
                    return refused;
                }
                Response::json(
                    201,
                    &json!({"code": code, "expiresAt": exp, "expiresIn": ttl.as_secs()}),
                )
            }
            (_, ["pair-requests"]) if get => {
                self.purge_pair_requests(now_ms);
                let list: Vec<Value> = self
                    .owner
                    .requests
                    .iter()
                    .map(|r| r.to_json(now_ms))
                    .collect();
                Response::json(200, &json!({"requests": list}))
            }
            (_, ["pair-requests", code]) if get => {
                let code = code.to_ascii_uppercase();
                match self.owner.requests.iter().find(|r| r.code == code) {
                    Some(r) => Response::json(200, &r.to_json(now_ms)),
                    None => Response::error(404, "Pair request not found"),
                }
            }
            (Method::Post, ["pair-requests", code, verb @ ("approve" | "deny")]) => {
                self.decide_pair_request(code, *verb == "approve", body, now_ms)
            }
            (_, ["tokens"]) if get => {
                let list: Vec<Value> = self.state.tokens.iter().map(token_json).collect();
                Response::json(200, &json!({"tokens": list}))
            }
            (Method::Delete, ["tokens", id]) => {
                match self.revoke_token_and_close(id, "Connection token revoked", now, out) {
                    Ok(Some(_)) => Response::json(200, &json!({"success": true})),
                    Ok(None) => Response::error(404, "Connection token not found"),
                    Err(refused) => refused,
                }
            }
            (Method::Patch, ["tokens", id]) => self.patch_token(id, body, now, out),
            (Method::Post, ["admin-key", "rotate"]) => {
                let undo = self.state.clone();
                let key = self.state.rotate_admin_key();
                // Every session was opened with the old key: they end with it, and so do
                // the event streams opened with either (revoke.rs).
                self.state.admin_sessions.clear();
                if let Err(refused) = self.commit(undo) {
                    return refused;
                }
                self.drop_admin_subscribers(out);
                info!("admin key rotated");
                Response::json(200, &json!({"key": key}))
            }
            _ => Response::error(404, "Not found"),
        }
    }

    fn login(
        &mut self,
        peer: IpAddr,
        body: &[u8],
        now: Instant,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) -> Response {
        // Every attempt counts (not only failures): a refusal must come before the key is
        // checked, or its timing and status would still answer the guess.
        let v = self.limits.login.check(&peer, now);
        if !v.allowed {
            return too_many(
                &v,
                "Too many sign-in attempts from this IP, please try again later",
            );
        }
        let b: LoginBody = match body_json(body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        if self.state.authenticate(Some(b.key.trim()), now_ms) != Ok(Principal::Admin) {
            info!("{peer}: admin sign-in refused");
            return Response::error(401, "Invalid admin key");
        }
        let sessions = &mut self.state.admin_sessions;
        sessions.retain(|s| now_ms < s.expires_ms);
        // The oldest go first (kept in sign-in order).
        if sessions.len() >= MAX_SESSIONS {
            let excess = sessions.len() + 1 - MAX_SESSIONS;
            sessions.drain(..excess);
        }
        let ttl = self.cfg.admin_session_ttl;
        let sid = ids::random_hex(32);
        let csrf = csrf_for(&sid);
        sessions.push(AdminSession {
            hash: auth::hash_secret(&sid),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        });
        // Saved at once so a restart right after signing in keeps the session; a failed save
        // does not refuse the sign-in (the owner may need the page to see why the disk is
        // failing): the retry timer saves it later.
        self.persist_soon(now, out);
        info!("{peer}: admin signed in");
        Response::json(200, &json!({"csrfToken": csrf}))
            .header("Set-Cookie", self.cookie(&sid, ttl.as_secs()))
    }

    fn create_key(&mut self, body: &[u8], now_ms: u64) -> Response {
        let b: KeyBody = match body_json(body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let scopes = match scopes_from_json(b.scopes.as_ref()) {
            Ok(s) => s,
            Err(e) => return Response::error(400, &e),
        };
        let spec = NewKey {
            name: b.name,
            scopes,
            client_ids: b.client_ids,
            user_id: b.user_id,
            expires_in_days: b.expires_in_days,
            rate_limit_per_minute: b.rate_limit_per_minute,
        };
        let undo = self.state.clone();
        match self.state.create_api_key(spec, now_ms) {
            Ok((idx, secret)) => {
                if let Err(refused) = self.commit(undo) {
                    return refused;
                }
                let mut v = self
                    .state
                    .api_keys
                    .get(idx)
                    .map(key_json)
                    .unwrap_or(Value::Null);
                v["key"] = Value::from(secret);
                info!("API key {} created", v["id"].as_str().unwrap_or("?"));
                Response::json(201, &v)
            }
            Err(e) => Response::error(400, &e),
        }
    }

    fn unpair_world(&mut self, id: &str, now: Instant, out: &mut Vec<Action>) -> Response {
        let undo = self.state.clone();
        let removed = self.state.remove_world(id);
        let link = self.worlds.get(id).map(|l| l.conn);
        if !removed && link.is_none() {
            return Response::error(404, "Unknown clientId");
        }
        if removed {
            if let Err(refused) = self.commit(undo) {
                return refused;
            }
        }
        if let Some(conn) = link {
            self.close_world_link(conn, "Unpaired by owner", now, out);
        }
        self.history.forget_world(id);
        // Every stream and socket following the world ends now (revoke.rs).
        self.end_streams_of_world(id, out);
        info!("world {id} unpaired by the owner");
        Response::json(200, &json!({"success": true}))
    }

    /// `PATCH /admin/api/worlds/{clientId}` `{allowedTargets?, remoteScopes?}` (arrays or
    /// comma-separated): replace the world's cross-world grants (relay/remote.rs).
    fn set_grants(&mut self, id: &str, body: &[u8]) -> Response {
        let v: Value = match body_json(body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(w) = self
            .state
            .worlds
            .iter()
            .find(|w| w.client_id == id)
            .cloned()
        else {
            return Response::error(404, "Unknown clientId");
        };
        let lists = (
            remote::string_list(v.get("allowedTargets")),
            remote::string_list(v.get("remoteScopes")),
        );
        let (targets, scopes) = match lists {
            (Ok(t), Ok(s)) => (
                t.unwrap_or(w.allowed_targets.clone()),
                s.unwrap_or(w.remote_scopes.clone()),
            ),
            (Err(e), _) | (_, Err(e)) => return Response::error(400, &e),
        };
        match self.grant(w, &targets, &scopes, false) {
            Ok(v) => Response::json(200, &v),
            Err(refused) => refused,
        }
    }

    /// Store a world's grants (validated: 400; saved before it is answered: 503 and undone
    /// when the save fails); with `add`, merged into what it has. Returns the world's admin
    /// view.
    fn grant(
        &mut self,
        mut w: KnownWorld,
        targets: &[String],
        scopes: &[String],
        add: bool,
    ) -> Result<Value, Response> {
        let (mut t, mut s) = if add {
            (w.allowed_targets.clone(), w.remote_scopes.clone())
        } else {
            (Vec::new(), Vec::new())
        };
        t.extend(targets.iter().cloned());
        s.extend(scopes.iter().cloned());
        let (t, s) = remote::validate_grants(&self.state, &w.client_id, &t, &s)
            .map_err(|e| Response::error(400, &e))?;
        w.allowed_targets = t;
        w.remote_scopes = s;
        info!(
            "world {}: cross-world targets {:?}, scopes {:?}",
            w.client_id, w.allowed_targets, w.remote_scopes
        );
        let view = world_json(&w, self.worlds.get(&w.client_id));
        let undo = self.state.clone();
        self.state.upsert_world(w);
        self.commit(undo)?;
        Ok(view)
    }

    fn decide_pair_request(
        &mut self,
        code: &str,
        approve: bool,
        body: &[u8],
        now_ms: u64,
    ) -> Response {
        self.purge_pair_requests(now_ms);
        let code = code.to_ascii_uppercase();
        let Some(i) = self.owner.requests.iter().position(|r| r.code == code) else {
            return Response::error(404, "Pair request not found");
        };
        let (status, upgrade, bound) = match self.owner.requests.get(i) {
            Some(r) => (
                r.status_name(now_ms),
                r.upgrade_only,
                r.client_id
                    .clone()
                    .filter(|c| self.state.worlds.iter().any(|w| &w.client_id == c)),
            ),
            None => return Response::error(404, "Pair request not found"),
        };
        match status {
            "pending" => {}
            "expired" => return Response::error(410, "Pair request has expired"),
            _ => return Response::error(409, "Pair request was already decided"),
        }
        let mut granted = Value::Null;
        let new_status = if !approve {
            ReqStatus::Denied
        } else if upgrade {
            // An upgrade asks for cross-world permission. What is granted is what the owner
            // chose on approval (`allowedTargets`, `remoteScopes`), else what the request
            // named, added to what the world has. An approval that would leave the world
            // with no target or no scope grants nothing: refused, so the module is never
            // told `upgraded: true` for nothing.
            let Some(w) = bound.as_ref().and_then(|c| {
                self.state
                    .worlds
                    .iter()
                    .find(|w| &w.client_id == c)
                    .cloned()
            }) else {
                return Response::error(
                    409,
                    "The world asking for an upgrade is not paired with this relay; deny it",
                );
            };
            let v: Value = match body_json(body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let (req_t, req_s) = match self.owner.requests.get(i) {
                Some(r) => (r.requested_targets.clone(), r.requested_scopes.clone()),
                None => return Response::error(404, "Pair request not found"),
            };
            let (t, s) = match (
                remote::string_list(v.get("allowedTargets")),
                remote::string_list(v.get("remoteScopes")),
            ) {
                (Ok(t), Ok(s)) => (t.unwrap_or(req_t), s.unwrap_or(req_s)),
                (Err(e), _) | (_, Err(e)) => return Response::error(400, &e),
            };
            let (all_t, all_s) = match remote::validate_grants(
                &self.state,
                &w.client_id,
                &[w.allowed_targets.clone(), t.clone()].concat(),
                &[w.remote_scopes.clone(), s.clone()].concat(),
            ) {
                Ok(x) => x,
                Err(e) => return Response::error(400, &e),
            };
            if all_t.is_empty() || all_s.is_empty() {
                return Response::error(
                    400,
                    "This approval grants nothing: choose at least one target world and one \
                     scope for cross-world requests, or deny the request",
                );
            }
            granted = match self.grant(w, &t, &s, true) {
                Ok(v) => {
                    json!({"allowedTargets": v["allowedTargets"], "remoteScopes": v["remoteScopes"]})
                }
                Err(refused) => return refused,
            };
            ReqStatus::Approved(None)
        } else {
            let ttl_ms = u64::try_from(self.cfg.pairing_code_ttl.as_millis()).unwrap_or(u64::MAX);
            let undo = self.state.clone();
            let (c, _) = self
                .state
                .create_pairing_code_for(bound.as_deref(), ttl_ms, now_ms);
            // The request stays pending when the code could not be saved: approve again.
            if let Err(refused) = self.commit(undo) {
                return refused;
            }
            ReqStatus::Approved(Some(c))
        };
        let Some(r) = self.owner.requests.get_mut(i) else {
            return Response::error(404, "Pair request not found");
        };
        r.status = new_status;
        info!(
            "pair request {code} {}",
            if approve { "approved" } else { "denied" }
        );
        let mut v = r.to_json(now_ms);
        if !granted.is_null() {
            v["granted"] = granted;
        }
        Response::json(200, &v)
    }

    fn patch_token(
        &mut self,
        id: &str,
        body: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Response {
        let b: TokenPatch = match body_json(body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(ips) = b.allowed_ips else {
            return Response::error(400, "allowedIps is required");
        };
        let undo = self.state.clone();
        match self.state.set_token_allowed_ips(id, ips) {
            Ok(true) => {}
            Ok(false) => return Response::error(404, "Connection token not found"),
            Err(e) => return Response::error(400, &e),
        }
        if let Err(refused) = self.commit(undo) {
            return refused;
        }
        let Some(t) = self.state.tokens.iter().find(|t| t.id == id).cloned() else {
            return Response::error(404, "Connection token not found");
        };
        // The live link that used this token from an address now outside the list goes.
        let link = self
            .worlds
            .get(&t.client_id)
            .filter(|l| self.owner.link_tokens.get(&l.conn) == Some(&t.id))
            .filter(|l| !auth::ip_allowed(&t.allowed_ips, l.peer))
            .map(|l| l.conn);
        if let Some(conn) = link {
            self.close_world_link(conn, "IP address not allowed", now, out);
        }
        Response::json(200, &token_json(&t))
    }

    /// A key was revoked: its open `/ws/api` and event streams end now.
    pub(crate) fn key_revoked(&mut self, key_id: &str, out: &mut Vec<Action>) {
        self.drop_subscribers_of_key(key_id, super::revoke::KEY_REVOKED, out);
    }

    /// Note an API key's use; saved at most once a minute per key (the value only feeds
    /// listings, and a save per call would wear an SD card).
    pub(crate) fn touch_key(&mut self, idx: usize, now: Instant, out: &mut Vec<Action>) {
        let now_ms = self.clock.ms(now);
        self.state.touch_api_key(idx, now_ms);
        self.persist_later(now, out);
    }
}

/// The methods each admin API path takes (the `Allow` of a 405); `None` for an unknown path.
fn admin_methods(segs: &[&str]) -> Option<&'static str> {
    Some(match segs {
        ["login" | "logout" | "pairing-codes"] => "POST",
        ["admin-key", "rotate"] => "POST",
        ["pair-requests", _, "approve" | "deny"] => "POST",
        ["session" | "status" | "scopes" | "worlds" | "pair-requests" | "tokens"] => "GET, HEAD",
        ["pair-requests", _] => "GET, HEAD",
        ["keys"] => "GET, HEAD, POST",
        ["worlds", _] => "PATCH, DELETE",
        ["keys", _] => "DELETE",
        ["tokens", _] => "PATCH, DELETE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every admin API route the documents list takes its method in `admin_methods` (the
    /// 405 table), so a route added to one and not the other fails here.
    #[test]
    fn admin_methods_cover_every_documented_route() {
        for (method, path, _, _) in super::super::docs::OWNER_ROUTES {
            let Some(rest) = path.strip_prefix("/admin/api/") else {
                continue;
            };
            let segs: Vec<&str> = rest.split('/').collect();
            let allow = admin_methods(&segs).unwrap_or_else(|| panic!("{path} has no methods"));
            assert!(
                allow.split(", ").any(|a| a == *method),
                "{method} {path}: Allow is {allow}"
            );
        }
    }

    #[test]
    fn csrf_rule() {
        let cases: &[(Method, bool, &str, Option<&str>, bool)] = &[
            (Method::Get, true, "tok", None, true),
            (Method::Head, true, "tok", Some("x"), true),
            (Method::Post, false, "", None, true), // admin key: no ambient credential
            (Method::Delete, false, "", None, true),
            (Method::Post, true, "tok", Some("tok"), true),
            (Method::Post, true, "tok", Some(" tok "), true),
            (Method::Post, true, "tok", Some("tox"), false),
            (Method::Post, true, "tok", None, false),
            (Method::Delete, true, "tok", Some(""), false),
            (Method::Patch, true, "tok", Some("TOK"), false),
            (Method::Post, true, "", Some(""), false), // an empty token never matches
        ];
        for (m, by_session, expected, presented, want) in cases {
            assert_eq!(
                csrf_ok(*m, *by_session, expected, *presented),
                *want,
                "{m:?} {by_session} {expected:?} {presented:?}"
            );
        }
    }

    #[test]
    fn cookies() {
        let cases: &[(&str, Option<&str>)] = &[
            ("fvtt_admin=abc", Some("abc")),
            ("a=1; fvtt_admin=abc; b=2", Some("abc")),
            ("a=1;fvtt_admin=\"q\"", Some("q")),
            ("fvtt_admin_x=abc", None),
            ("xfvtt_admin=abc", None),
            ("", None),
            ("fvtt_admin", None),
        ];
        for (h, want) in cases {
            assert_eq!(cookie_value(h, COOKIE), *want, "{h}");
        }
    }

    #[test]
    fn scope_specs() {
        assert_eq!(scopes_from_spec("default").len(), 17);
        assert_eq!(scopes_from_spec("").len(), 17);
        assert_eq!(scopes_from_spec("all").len(), 32);
        assert_eq!(
            scopes_from_spec(" chat:read, ,roll:read"),
            ["chat:read", "roll:read"]
        );
        assert_eq!(scopes_from_json(None).map(|s| s.len()), Ok(17));
        assert_eq!(
            scopes_from_json(Some(&json!(["search"]))),
            Ok(vec!["search".to_string()])
        );
        assert_eq!(
            scopes_from_json(Some(&json!("all"))).map(|s| s.len()),
            Ok(32)
        );
        assert!(scopes_from_json(Some(&json!([1]))).is_err());
        assert!(scopes_from_json(Some(&json!({}))).is_err());
    }
}

#[cfg(test)]
mod lazy_persist_tests {
    use std::time::Duration;

    use crate::config::Config;
    use crate::relay::events::harness::*;
    use crate::relay::io::{Action, Input, Timer};

    fn arms(out: &[Action]) -> usize {
        out.iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Arm {
                        timer: Timer::LazyPersist,
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn key_use_is_saved_by_a_timer_never_by_the_request() {
        let mut h = H::new(Config::default());
        let key = h.api_key.clone();
        let c = h.conn();
        let out = h.get(c, "/clients", &[("x-api-key", &key)]);
        assert_eq!(
            h.disk.0.borrow().attempts,
            0,
            "the request itself never waits for the disk"
        );
        assert_eq!(arms(&out), 1);
        let c = h.conn();
        let out = h.get(c, "/clients", &[("x-api-key", &key)]);
        assert_eq!(
            arms(&out),
            0,
            "one timer covers every change until it fires"
        );
        assert!(h.relay.has_unsaved_bookkeeping());
        h.advance(Duration::from_secs(60));
        h.input(Input::Timer(Timer::LazyPersist));
        assert_eq!(h.disk.0.borrow().saves, 1);
        assert!(!h.relay.has_unsaved_bookkeeping());
        // Nothing changed since: a stale timer saves nothing.
        h.input(Input::Timer(Timer::LazyPersist));
        assert_eq!(h.disk.0.borrow().saves, 1);
    }
}
