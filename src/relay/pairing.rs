//! Pairing: what the Foundry module calls over HTTP to get and drop its connection token
//! (relay-protocol.md §5.6, module-protocol.md §2.2), and the routing of the owner's pages and
//! admin API (handled in `admin.rs`).
//!
//! - `POST /auth/pair` spends a 6-character code (from `fvtt-relay pair`, the admin page, or
//!   an approved pair request) and returns `{token, clientId, relayUrl}`.
//! - `POST /auth/pair-request` opens a browser-approval request; the module polls
//!   `GET /auth/pair-request/{code}/status` every 3 s: pending → approved (once, with a fresh
//!   pairing code) → exchanged, or denied; 410 once expired, 404 when unknown.
//! - `POST /api/self-unpair {token}` revokes one token and closes the link that used it.
//!
//! Pair requests live in memory only (they last minutes; a restart simply makes the module
//! start over). Pairing codes and tokens are durable `State`. Which token a live world link
//! authenticated with is remembered here, so revoking one GM's token closes only the link
//! that used it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use log::info;
use serde::Deserialize;
use serde_json::{json, Value};

use super::io::Action;
use super::limits::too_many;
use super::rest::rfc3339;
use super::Relay;
use crate::error::WsClose;
use crate::http::request::{Head, Method};
use crate::http::response::Response;
use crate::ids::{self, ConnId};
use crate::store::{KnownWorld, State};

/// Pair requests kept in memory at once; beyond this new ones are refused (memory bound on
/// a small board; the per-IP limit alone does not bound many IPs).
const MAX_PAIR_REQUESTS: usize = 256;
/// Length of a pair-request code (the reference's 8 characters, §5.6).
const REQUEST_CODE_LEN: usize = 8;

/// The owner-side memory of the relay core: pair requests, and which token each live world
/// link used (admin sessions are in the state: `State::admin_sessions`).
#[derive(Default)]
pub(crate) struct Owner {
    pub requests: Vec<PairRequest>,
    pub link_tokens: HashMap<ConnId, String>,
}

/// Where a pair request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReqStatus {
    Pending,
    /// Approved; the module has not yet seen it. `None` for an upgrade-only request.
    Approved(Option<String>),
    Denied,
    /// The approval was delivered to the module once.
    Exchanged,
}

/// A module's browser-approval request (`POST /auth/pair-request`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PairRequest {
    pub code: String,
    pub world_id: String,
    pub world_title: String,
    pub system_id: String,
    pub system_title: String,
    pub system_version: String,
    pub foundry_version: String,
    pub server_fingerprint: String,
    pub client_id: Option<String>,
    pub upgrade_only: bool,
    /// What an upgrade request asks for (`requestedTargetClients`, `requestedRemoteScopes`;
    /// the module's Upgrade button sends neither, so the owner chooses on approval).
    pub requested_targets: Vec<String>,
    pub requested_scopes: Vec<String>,
    pub status: ReqStatus,
    pub created_ms: u64,
    pub expires_ms: u64,
}

impl PairRequest {
    pub fn status_name(&self, now_ms: u64) -> &'static str {
        if now_ms >= self.expires_ms && !matches!(self.status, ReqStatus::Exchanged) {
            return "expired";
        }
        match self.status {
            ReqStatus::Pending => "pending",
            ReqStatus::Approved(_) => "approved",
            ReqStatus::Denied => "denied",
            ReqStatus::Exchanged => "exchanged",
        }
    }

    /// The admin API's view (times in unix ms).
    pub fn to_json(&self, now_ms: u64) -> Value {
        json!({
            "code": self.code,
            "worldId": self.world_id,
            "worldTitle": self.world_title,
            "systemId": self.system_id,
            "systemTitle": self.system_title,
            "systemVersion": self.system_version,
            "foundryVersion": self.foundry_version,
            "clientId": self.client_id,
            "upgradeOnly": self.upgrade_only,
            "requestedTargetClients": self.requested_targets,
            "requestedRemoteScopes": self.requested_scopes,
            "status": self.status_name(now_ms),
            "createdAt": self.created_ms,
            "expiresAt": self.expires_ms,
        })
    }

    /// The module's poll (§5.6): the answer, and the state after it. An approval is shown
    /// once, then the request reads `exchanged`, so a leaked poll URL cannot replay the code.
    pub fn poll(&mut self, now_ms: u64) -> (u16, Value) {
        if now_ms >= self.expires_ms && !matches!(self.status, ReqStatus::Exchanged) {
            return (410, json!({"status": "expired"}));
        }
        match &self.status {
            ReqStatus::Pending => (200, json!({"status": "pending"})),
            ReqStatus::Denied => (200, json!({"status": "denied"})),
            ReqStatus::Exchanged => (
                200,
                json!({"status": "exchanged", "message": "This pair request was already completed"}),
            ),
            ReqStatus::Approved(code) => {
                let v = match code {
                    Some(c) => json!({"status": "approved", "pairingCode": c}),
                    None => json!({"status": "approved", "upgraded": true}),
                };
                self.status = ReqStatus::Exchanged;
                (200, v)
            }
        }
    }
}

/// The externally reachable base of this relay: scheme security and `host[:port][/prefix]`
/// without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PublicBase {
    pub secure: bool,
    pub authority: String,
}

impl PublicBase {
    /// `ws(s)://…/relay`, the URL the module stores and connects to (§5.6).
    pub fn relay_url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}/relay", self.authority)
    }

    /// `http(s)://…`, for pages such as `/pair/<code>`.
    pub fn http_url(&self, path: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority)
    }
}

/// Derive the public base: the configured public URL if any (http/ws → insecure, https/wss →
/// secure; a trailing `/` or `/relay` dropped), else the request's `Host` with
/// `X-Forwarded-Proto` when that header is trusted. A Host with characters outside a host name
/// or address falls back to `fallback` (the listen address), so a peer cannot put arbitrary
/// text into the URL the module stores.
pub(crate) fn public_base(
    public_url: Option<&str>,
    host: Option<&str>,
    forwarded_proto: Option<&str>,
    fallback: &str,
) -> PublicBase {
    if let Some(url) = public_url.filter(|u| !u.is_empty()) {
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let secure = matches!(scheme.to_ascii_lowercase().as_str(), "https" | "wss");
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let mut authority = rest.trim_end_matches('/');
        if let Some(p) = authority.strip_suffix("/relay") {
            authority = p.trim_end_matches('/');
        }
        return PublicBase {
            secure,
            authority: authority.to_string(),
        };
    }
    let secure = forwarded_proto
        .and_then(|p| p.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let authority = match host.map(str::trim) {
        Some(h) if valid_host(h) => h.to_string(),
        _ => fallback.to_string(),
    };
    PublicBase { secure, authority }
}

/// A Host value we are willing to echo: a name, IPv4 or bracketed IPv6, optional port.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

/// A Foundry server origin as compared: trimmed, lower-case, without a trailing `/`.
pub(crate) fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// What `/auth/pair` says about the world asking (§5.6).
pub(crate) struct PairIdentity<'a> {
    pub existing: &'a str,
    pub fingerprint: &'a str,
    pub world_id: &'a str,
    /// Normalized `serverOrigin`; "" when the module sent none.
    pub origin: &'a str,
}

/// Which clientId a `/auth/pair` gets (relay-protocol.md §5.6 "clientId choice"): the
/// code's bound world → `existingClientId` if it is a world we know and its origin (and
/// fingerprint) do not contradict → the world with the same server fingerprint and origin →
/// the world with the same worldId and origin (fingerprint not contradicting) → a new id.
/// A world copied to a second Foundry server (same worldId, fingerprint and
/// existingClientId, another origin) therefore gets its own clientId instead of fighting the
/// original for one link. An unknown origin on either side (a world paired before origins
/// were stored, or a module that sends none) contradicts nothing.
pub(crate) fn choose_client_id(state: &State, bound: Option<String>, me: &PairIdentity) -> String {
    if let Some(id) = bound {
        return id;
    }
    let fp_ok = |w: &KnownWorld| {
        w.server_fingerprint.is_empty()
            || me.fingerprint.is_empty()
            || w.server_fingerprint == me.fingerprint
    };
    let origin_ok = |w: &KnownWorld| {
        w.server_origin.is_empty() || me.origin.is_empty() || w.server_origin == me.origin
    };
    if !me.existing.is_empty() {
        if let Some(w) = state.worlds.iter().find(|w| w.client_id == me.existing) {
            if fp_ok(w) && origin_ok(w) {
                return w.client_id.clone();
            }
        }
    }
    if !me.fingerprint.is_empty() {
        if let Some(w) = state
            .worlds
            .iter()
            .find(|w| w.server_fingerprint == me.fingerprint && origin_ok(w))
        {
            return w.client_id.clone();
        }
    }
    if !me.world_id.is_empty() {
        if let Some(w) = state
            .worlds
            .iter()
            .find(|w| w.world_id == me.world_id && fp_ok(w) && origin_ok(w))
        {
            return w.client_id.clone();
        }
    }
    ids::new_client_id()
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PairBody {
    code: Option<String>,
    world_id: Option<String>,
    world_title: Option<String>,
    server_fingerprint: Option<String>,
    existing_client_id: Option<String>,
    server_origin: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PairRequestBody {
    world_id: Option<String>,
    world_title: Option<String>,
    system_id: Option<String>,
    system_title: Option<String>,
    system_version: Option<String>,
    foundry_version: Option<String>,
    server_fingerprint: Option<String>,
    client_id: Option<String>,
    upgrade_only: Option<bool>,
    requested_remote_scopes: Option<Value>,
    requested_target_clients: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UnpairBody {
    token: Option<String>,
}

/// A JSON body, or `None` for invalid JSON (an empty body reads as `{}`).
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Option<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(T::default());
    }
    serde_json::from_slice(body).ok()
}

fn s(o: Option<String>) -> String {
    o.map(|v| v.trim().to_string()).unwrap_or_default()
}

impl Relay {
    /// Handle the owner's and the module's pairing routes; false if `path` is not one.
    /// Preflights of the module-facing routes fall through to `rest.rs`'s generic answer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn owner_route(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        path: &str,
        body: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
        if path == "/admin" || path.starts_with("/admin/") || path.starts_with("/pair/") {
            self.admin_route(conn, peer, head, path, body, now, out);
            return true;
        }
        let m = head.method;
        if m == Method::Options {
            return false;
        }
        let resp = match path {
            "/auth/pair" => match m {
                Method::Post => self.pair(peer, head, body, now),
                _ => not_allowed("POST"),
            },
            "/auth/pair-request" => match m {
                Method::Post => self.open_pair_request(peer, head, body, now),
                _ => not_allowed("POST"),
            },
            "/api/self-unpair" => match m {
                Method::Post => self.self_unpair(body, now, out),
                _ => not_allowed("POST"),
            },
            p => {
                let Some(code) = p
                    .strip_prefix("/auth/pair-request/")
                    .and_then(|r| r.strip_suffix("/status"))
                else {
                    return false;
                };
                match m {
                    Method::Get | Method::Head => self.poll_pair_request(code, now),
                    _ => not_allowed("GET"),
                }
            }
        };
        out.push(Action::Respond {
            conn,
            resp: self.cors(resp),
        });
        true
    }

    /// This relay's public base for a request (see [`public_base`]).
    pub(crate) fn base_for(&self, _peer: IpAddr, head: &Head) -> PublicBase {
        // X-Forwarded-Proto only from a proxy on this host: the loop drops X-Forwarded-*
        // from any other peer, so a header that is still here came through that proxy.
        let proto = if self.cfg.trust_forwarded {
            head.header("x-forwarded-proto")
        } else {
            None
        };
        public_base(
            self.cfg.public_url.as_deref(),
            head.header("host"),
            proto,
            &self.cfg.listen.to_string(),
        )
    }

    /// `POST /auth/pair` (§5.6).
    fn pair(&mut self, peer: IpAddr, head: &Head, body: &[u8], now: Instant) -> Response {
        let v = self.limits.pair.check(&peer, now);
        if !v.allowed {
            return too_many(
                &v,
                "Too many pairing attempts from this IP, please try again later",
            );
        }
        let Some(b) = parse_body::<PairBody>(body) else {
            return Response::error(400, "Invalid request body");
        };
        let code = s(b.code).to_ascii_uppercase();
        if code.is_empty() {
            return Response::error(400, "Code is required");
        }
        let world_id = s(b.world_id);
        let now_ms = self.clock.ms(now);
        // Peek before spending: a request without worldId must not burn an unbound code.
        let peek = self
            .state
            .pairing_codes
            .iter()
            .find(|p| p.code == code && !p.used && now_ms < p.expires_ms);
        if world_id.is_empty() && peek.is_some_and(|p| p.client_id.is_none()) {
            return Response::error(400, "worldId is required");
        }
        let undo = self.state.clone();
        let bound = match self.state.take_pairing_code(&code, now_ms) {
            Ok(b) => b,
            Err(e) => {
                info!("{peer}: pairing refused: {}", e.message());
                return Response::error(e.status(), e.message());
            }
        };
        let fingerprint = s(b.server_fingerprint);
        let origin = normalize_origin(&s(b.server_origin));
        let existing = s(b.existing_client_id);
        let client_id = choose_client_id(
            &self.state,
            bound,
            &PairIdentity {
                existing: &existing,
                fingerprint: &fingerprint,
                world_id: &world_id,
                origin: &origin,
            },
        );
        if !existing.is_empty() && existing != client_id {
            info!("{peer}: pairing gives {client_id}, not {existing} (another server or world)");
        }
        let mut w = self
            .state
            .worlds
            .iter()
            .find(|w| w.client_id == client_id)
            .cloned()
            .unwrap_or_else(|| KnownWorld {
                client_id: client_id.clone(),
                paired_ms: now_ms,
                ..KnownWorld::default()
            });
        if !world_id.is_empty() {
            w.world_id = world_id;
        }
        let title = s(b.world_title);
        if !title.is_empty() {
            w.world_title = title;
        }
        if !fingerprint.is_empty() {
            w.server_fingerprint = fingerprint;
        }
        if !origin.is_empty() {
            w.server_origin = origin;
        }
        self.state.upsert_world(w);
        let (_, token) = self.state.create_connection_token(&client_id, now_ms);
        // Undone on failure: the code is unspent again, so the module can simply retry.
        if let Err(refused) = self.commit(undo) {
            return refused;
        }
        info!("{peer}: paired world {client_id}");
        Response::json(
            200,
            &json!({
                "token": token,
                "clientId": client_id,
                "relayUrl": self.base_for(peer, head).relay_url(),
            }),
        )
    }

    /// `POST /auth/pair-request` (§5.6, browser flow).
    fn open_pair_request(
        &mut self,
        peer: IpAddr,
        head: &Head,
        body: &[u8],
        now: Instant,
    ) -> Response {
        let v = self.limits.pair_request.check(&peer, now);
        if !v.allowed {
            return too_many(
                &v,
                "Too many pairing requests from this IP, please try again later",
            );
        }
        let Some(b) = parse_body::<PairRequestBody>(body) else {
            return Response::error(400, "Invalid request body");
        };
        let world_id = s(b.world_id);
        if world_id.is_empty() {
            return Response::error(400, "worldId is required");
        }
        let now_ms = self.clock.ms(now);
        self.purge_pair_requests(now_ms);
        if self.owner.requests.len() >= MAX_PAIR_REQUESTS {
            return Response::error(429, "Too many open pair requests, please try again later")
                .header("Retry-After", "60");
        }
        let code = loop {
            let c = ids::random_code(REQUEST_CODE_LEN);
            if !self.owner.requests.iter().any(|r| r.code == c) {
                break c;
            }
        };
        let ttl = self.cfg.pair_request_ttl;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let upgrade_only = b.upgrade_only.unwrap_or(false);
        let client_id = Some(s(b.client_id)).filter(|c| !c.is_empty());
        self.owner.requests.push(PairRequest {
            code: code.clone(),
            world_id,
            world_title: s(b.world_title),
            system_id: s(b.system_id),
            system_title: s(b.system_title),
            system_version: s(b.system_version),
            foundry_version: s(b.foundry_version),
            server_fingerprint: s(b.server_fingerprint),
            client_id,
            upgrade_only,
            requested_targets: super::remote::string_list(b.requested_target_clients.as_ref())
                .ok()
                .flatten()
                .unwrap_or_default(),
            requested_scopes: super::remote::string_list(b.requested_remote_scopes.as_ref())
                .ok()
                .flatten()
                .unwrap_or_default(),
            status: ReqStatus::Pending,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
        });
        // The request code lets its holder collect the pairing code once approved: log only
        // a prefix, like any secret.
        info!(
            "{peer}: pair request {}… opened",
            code.get(..3).unwrap_or_default()
        );
        let pair_url = self.base_for(peer, head).http_url(&format!("/pair/{code}"));
        Response::json(
            201,
            &json!({
                "code": code,
                "pairUrl": pair_url,
                "upgradeOnly": upgrade_only,
                "expiresIn": ttl.as_secs(),
                "expiresAt": rfc3339(now_ms.saturating_add(ttl_ms)),
            }),
        )
    }

    /// `GET /auth/pair-request/{code}/status`. Not rate limited: the module polls every 3 s
    /// for up to the request's lifetime (200 polls in 10 min), and the 8-character code
    /// (40 bits) is not guessable at any rate a single relay can serve.
    fn poll_pair_request(&mut self, code: &str, now: Instant) -> Response {
        let now_ms = self.clock.ms(now);
        self.purge_pair_requests(now_ms);
        let code = code.trim().to_ascii_uppercase();
        match self.owner.requests.iter_mut().find(|r| r.code == code) {
            Some(r) => {
                let (status, v) = r.poll(now_ms);
                Response::json(status, &v)
            }
            None => Response::error(404, "Pair request not found"),
        }
    }

    /// Drop requests well past their expiry (kept one extra lifetime so a late poll still
    /// reads 410 `expired` rather than 404).
    pub(crate) fn purge_pair_requests(&mut self, now_ms: u64) {
        let ttl_ms = u64::try_from(self.cfg.pair_request_ttl.as_millis()).unwrap_or(u64::MAX);
        self.owner
            .requests
            .retain(|r| now_ms < r.expires_ms.saturating_add(ttl_ms));
    }

    /// `POST /api/self-unpair {token}`: always 200 for a token we do not know (§5.6).
    fn self_unpair(&mut self, body: &[u8], now: Instant, out: &mut Vec<Action>) -> Response {
        let token = parse_body::<UnpairBody>(body)
            .and_then(|b| b.token)
            .unwrap_or_default();
        if token.trim().is_empty() {
            return Response::error(400, "Missing token");
        }
        let Some(idx) = self.state.find_connection_token(token.trim()) else {
            return Response::json(
                200,
                &json!({"success": true, "message": "Token not found; nothing to clean up"}),
            );
        };
        let Some(id) = self.state.tokens.get(idx).map(|t| t.id.clone()) else {
            return Response::error(500, "Token index out of date");
        };
        if let Err(refused) = self.revoke_token_and_close(&id, "Unpaired by owner", now, out) {
            return refused;
        }
        Response::json(
            200,
            &json!({"success": true, "message": "Unpaired successfully"}),
        )
    }

    /// Revoke token `id` and close with 4002 the world link that authenticated with it.
    /// Returns the world it belonged to, or None for an unknown token; the 503 to send when
    /// the revocation could not be saved (then the token and its link stay as they were).
    pub(crate) fn revoke_token_and_close(
        &mut self,
        id: &str,
        reason: &'static str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<Option<String>, Response> {
        let undo = self.state.clone();
        let Some(client_id) = self.state.revoke_token(id) else {
            return Ok(None);
        };
        self.commit(undo)?;
        // `/ws/api` sockets that authenticated with the token end too (revoke.rs).
        self.drop_subscribers_of_key(id, reason, out);
        let link = self.worlds.get(&client_id).map(|l| l.conn);
        if let Some(conn) = link {
            let used = self.owner.link_tokens.get(&conn).map(String::as_str);
            // A link whose token we did not see (none) is closed only if the world has no
            // token left at all.
            let close = match used {
                Some(t) => t == id,
                None => self.state.tokens_for_client(&client_id).is_empty(),
            };
            if close {
                self.close_world_link(conn, reason, now, out);
            }
        }
        info!("token {id} of {client_id} revoked ({reason})");
        Ok(Some(client_id))
    }

    /// Close a live world link with 4002 and take it out of service at once: its waiters fail
    /// now and no new request is routed to it while the close frame is on its way.
    pub(crate) fn close_world_link(
        &mut self,
        conn: ConnId,
        reason: &'static str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // Every caller is an owner's action: revoking, unpairing, narrowing allowed IPs.
        self.history
            .note_close(conn, 4002, reason, super::history::By::Owner);
        self.module_closed(conn, now, out);
        self.roles.remove(&conn);
        self.owner.link_tokens.remove(&conn);
        out.push(Action::Close {
            conn,
            close: WsClose::new(4002, reason),
        });
    }

    /// A world link authenticated with token `idx` (called by `link.rs`): remember which
    /// token it used, and note the token's use.
    pub(crate) fn note_link_token(
        &mut self,
        conn: ConnId,
        idx: usize,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let now_ms = self.clock.ms(now);
        let Some(t) = self.state.tokens.get(idx) else {
            return;
        };
        let id = t.id.clone();
        self.state.touch_token(idx, now_ms);
        self.persist_later(now, out);
        // Links that are gone leave entries behind; drop them while we are here.
        let roles = &self.roles;
        self.owner.link_tokens.retain(|c, _| roles.contains_key(c));
        self.owner.link_tokens.insert(conn, id);
    }
}

/// 405 with the one method the path takes.
fn not_allowed(allow: &'static str) -> Response {
    Response::error(405, "Method not allowed").header("Allow", allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_url_derivation() {
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            &'a str,
        );
        let cases: &[Case] = &[
            // (public_url, host, x-forwarded-proto, relayUrl, pair page)
            (
                Some("https://relay.example.com"),
                Some("ignored:1"),
                None,
                "wss://relay.example.com/relay",
                "https://relay.example.com/pair/X",
            ),
            (
                Some("http://pi.local:3010/"),
                None,
                Some("https"),
                "ws://pi.local:3010/relay",
                "http://pi.local:3010/pair/X",
            ),
            (
                Some("wss://h.example/foundry/relay/"),
                None,
                None,
                "wss://h.example/foundry/relay",
                "https://h.example/foundry/pair/X",
            ),
            (
                None,
                Some("pi.local:3010"),
                None,
                "ws://pi.local:3010/relay",
                "http://pi.local:3010/pair/X",
            ),
            (
                None,
                Some("relay.example.com"),
                Some("https, http"),
                "wss://relay.example.com/relay",
                "https://relay.example.com/pair/X",
            ),
            (
                None,
                Some("[::1]:8080"),
                Some("http"),
                "ws://[::1]:8080/relay",
                "http://[::1]:8080/pair/X",
            ),
            // A Host we will not echo falls back to the listen address.
            (
                None,
                Some("evil/path?x"),
                None,
                "ws://127.0.0.1:3010/relay",
                "http://127.0.0.1:3010/pair/X",
            ),
            (
                None,
                None,
                None,
                "ws://127.0.0.1:3010/relay",
                "http://127.0.0.1:3010/pair/X",
            ),
        ];
        for (public, host, proto, relay, page) in cases {
            let b = public_base(*public, *host, *proto, "127.0.0.1:3010");
            assert_eq!(b.relay_url(), *relay, "{public:?} {host:?} {proto:?}");
            assert_eq!(b.http_url("/pair/X"), *page, "{public:?} {host:?}");
            assert!(!b.relay_url().ends_with('/'));
        }
    }

    fn req(expires_ms: u64) -> PairRequest {
        PairRequest {
            code: "ABCDEFGH".into(),
            world_id: "w".into(),
            world_title: String::new(),
            system_id: String::new(),
            system_title: String::new(),
            system_version: String::new(),
            foundry_version: String::new(),
            server_fingerprint: String::new(),
            client_id: None,
            upgrade_only: false,
            requested_targets: vec![],
            requested_scopes: vec![],
            status: ReqStatus::Pending,
            created_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn pair_request_poll_sequence_and_expiry() {
        let mut r = req(1_000);
        assert_eq!(r.poll(10), (200, json!({"status": "pending"})));
        r.status = ReqStatus::Approved(Some("ABC234".into()));
        assert_eq!(r.status_name(10), "approved");
        assert_eq!(
            r.poll(20),
            (200, json!({"status": "approved", "pairingCode": "ABC234"}))
        );
        let (st, v) = r.poll(30);
        assert_eq!((st, v["status"].as_str()), (200, Some("exchanged")));
        // Exchanged stays exchanged after the expiry.
        assert_eq!(r.poll(5_000).1["status"], "exchanged");

        let mut up = req(1_000);
        up.status = ReqStatus::Approved(None);
        assert_eq!(
            up.poll(0),
            (200, json!({"status": "approved", "upgraded": true}))
        );

        for status in [
            ReqStatus::Pending,
            ReqStatus::Denied,
            ReqStatus::Approved(None),
        ] {
            let mut r = req(1_000);
            r.status = status.clone();
            assert_eq!(r.status_name(999), r.status_name(999));
            assert_eq!(
                r.poll(1_000),
                (410, json!({"status": "expired"})),
                "{status:?}"
            );
            assert_eq!(r.status_name(1_000), "expired");
        }
        let mut d = req(1_000);
        d.status = ReqStatus::Denied;
        assert_eq!(d.poll(999), (200, json!({"status": "denied"})));
        assert_eq!(d.to_json(0)["status"], "denied");
    }

    #[test]
    fn client_id_choice() {
        let mut st = State::default();
        let w = |id: &str, world: &str, fp: &str, origin: &str| KnownWorld {
            client_id: id.into(),
            world_id: world.into(),
            server_fingerprint: fp.into(),
            server_origin: origin.into(),
            ..KnownWorld::default()
        };
        st.upsert_world(w("fvtt_a", "world1", "fpA", "https://a.example"));
        st.upsert_world(w("fvtt_b", "world2", "", ""));
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
        );
        const A: &str = "https://a.example";
        const C: &str = "https://copy.example";
        let cases: &[Case] = &[
            // (bound, existing, fingerprint, worldId, origin, expected; None = a new id)
            (Some("fvtt_z"), "fvtt_a", "fpA", "world1", C, Some("fvtt_z")),
            (None, "fvtt_a", "fpA", "other", A, Some("fvtt_a")),
            (None, "fvtt_a", "", "other", "", Some("fvtt_a")),
            (None, "fvtt_a", "fpX", "world1", A, None), // fingerprint contradicts
            (None, "fvtt_gone", "fpA", "x", A, Some("fvtt_a")),
            (None, "", "", "world2", "", Some("fvtt_b")),
            (None, "", "fpQ", "world2", C, Some("fvtt_b")), // b knows no fingerprint/origin
            (None, "", "fpQ", "world1", A, None),
            (None, "", "", "world9", A, None),
            // The copied world: same worldId, fingerprint and existingClientId, another
            // origin → its own clientId at every step.
            (None, "fvtt_a", "fpA", "world1", C, None),
            (None, "", "fpA", "world1", C, None),
            (None, "", "", "world1", C, None),
            // No origin sent (an older module): nothing contradicts.
            (None, "fvtt_a", "fpA", "world1", "", Some("fvtt_a")),
        ];
        for (bound, existing, fp, world, origin, want) in cases {
            let me = PairIdentity {
                existing,
                fingerprint: fp,
                world_id: world,
                origin,
            };
            let got = choose_client_id(&st, bound.map(str::to_string), &me);
            let what = format!("{bound:?} {existing} {fp} {world} {origin}");
            match want {
                Some(w) => assert_eq!(got, *w, "{what}"),
                None => {
                    assert!(got.starts_with("fvtt_") && got.len() == 21, "{got}");
                    assert!(!["fvtt_a", "fvtt_b"].contains(&got.as_str()), "{what}");
                }
            }
        }
        assert_eq!(
            normalize_origin(" HTTPS://A.example:30000/ "),
            "https://a.example:30000"
        );
    }
}
