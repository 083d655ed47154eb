//! HTTP routes: API-key auth, scopes, clientId resolution, forwarding to a world, and the
//! relay-local routes (`/clients`, `/api/status`, `/api/health`, session stubs, CORS).
//!
//! Order for an API route (relay-protocol.md §2.1): CORS preflight → route match (404/405)
//! → key (401) → scope (403) → parameters (400) → clientId (404/400/403) → forward, with the
//! waiter answered by the module's reply, its timeout (408) or its world's disconnect (502).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::debug;
use serde_json::{json, Map, Value};

use super::forward::{self, ParamError};
use super::io::Action;
use super::pending::{Caller, Waiter};
use super::Relay;
use crate::auth::{AuthError, Principal};
use crate::enc;
use crate::http::request::{Head, Method};
use crate::http::response::Response;
use crate::http::route::{Kind, Match, Route};
use crate::ids::ConnId;

/// Headers a browser may read from our API responses (relay-protocol.md §6.3, plus ours).
const EXPOSE_HEADERS: &str = "Content-Disposition, Content-Type, X-Image-Width, X-Image-Height, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After";
const ALLOW_HEADERS: &str =
    "x-api-key, content-type, authorization, x-client-id, accept, last-event-id";
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

/// The caller of an API route, once its key checked out.
pub(crate) struct Caller0 {
    pub principal: Principal,
    pub scopes: Vec<String>,
    pub client_ids: Vec<String>,
    pub user_id: Option<String>,
}

impl Relay {
    /// Add the CORS headers every API response carries.
    pub(crate) fn cors(&self, resp: Response) -> Response {
        resp.header("Access-Control-Allow-Origin", "*")
            .header("Access-Control-Expose-Headers", EXPOSE_HEADERS)
    }

    pub(crate) fn on_upgrade(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let path = normalize_path(&head.path);
        // Upgrades per IP per minute, for every WebSocket endpoint (relay/limits.rs); the
        // gateway counts its own so that its refusal keeps the gateway's error envelope.
        let gateway = path == "/ws/events" || path.starts_with("/ws/events/");
        if !gateway {
            if let Some(resp) = self.check_upgrade_rate(peer, now) {
                out.push(Action::Respond { conn, resp });
                return;
            }
        }
        match path {
            "/relay" | "/" => self.module_upgrade(conn, peer, head, now, out),
            "/ws/api" => self.api_upgrade(conn, peer, head, now, out),
            p if p == "/ws/events" || p.starts_with("/ws/events/") => {
                self.events_upgrade(conn, peer, head, now, out)
            }
            _ => out.push(Action::Respond {
                conn,
                resp: Response::error(404, "Not found"),
            }),
        }
    }

    pub(crate) fn on_request(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        body: Vec<u8>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let path = normalize_path(&head.path).to_string();
        // Pairing, the owner's admin API and pages (relay/pairing.rs, relay/admin.rs).
        if self.owner_route(conn, peer, head, &path, &body, now, out) {
            return;
        }
        // The MCP endpoint (relay/mcp.rs) answers its own preflight.
        if path == "/mcp" {
            return self.mcp_request(conn, peer, head, body, now, out);
        }
        if head.method == Method::Options {
            out.push(Action::Respond {
                conn,
                resp: preflight(head),
            });
            return;
        }
        // RFC 3986 §2.1: a `%` not followed by two hex digits, or escapes that decode to
        // something other than UTF-8, would reach the module as a different value than the
        // client meant: refuse rather than forward a guess.
        if let Some(e) = malformed_target(&head.path, &head.query) {
            out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(400, e)),
            });
            return;
        }
        // Relay-local routes that need no key; another method on their path is 405.
        if let Some(allow) = local_methods(&path) {
            if !matches!(head.method, Method::Get | Method::Head) {
                out.push(Action::Respond {
                    conn,
                    resp: self
                        .cors(Response::error(405, "Method not allowed"))
                        .header("Allow", allow),
                });
                return;
            }
        }
        match (head.method, path.as_str()) {
            (Method::Get | Method::Head, "/api/status") => {
                return self.respond(conn, 200, self.status_json(now), out)
            }
            (Method::Get | Method::Head, "/api/health") => {
                return self.respond(conn, 200, self.health_json(now), out)
            }
            (Method::Get | Method::Head, "/metrics") => {
                return self.metrics_route(conn, head, now, out);
            }
            (Method::Get | Method::Head, "/openapi.json") => {
                return self.docs_route(conn, peer, head, false, out);
            }
            (Method::Get | Method::Head, "/asyncapi.json") => {
                return self.docs_route(conn, peer, head, true, out);
            }
            (Method::Get | Method::Head, "/") if super::admin::wants_html(head) => {
                let resp = super::admin::landing_page();
                out.push(Action::Respond { conn, resp });
                return;
            }
            (Method::Get | Method::Head, "/") => {
                return self.respond(conn, 200, json!({"status": "ok"}), out)
            }
            _ => {}
        }
        if let Some(rest) = path.strip_prefix("/api/clients/") {
            if let Some(id) = rest.strip_suffix("/active") {
                if matches!(head.method, Method::Get | Method::Head) {
                    let id = enc::percent_decode(id).unwrap_or_default();
                    return self.client_active(conn, &id, out);
                }
            }
        }
        let (route_idx, path_params) = match self.routes.find(head.method_raw.as_str(), &path) {
            Match::Found(route, params) => {
                let idx = self
                    .routes
                    .routes()
                    .iter()
                    .position(|r| std::ptr::eq(r, route))
                    .unwrap_or(0);
                (idx, params)
            }
            Match::MethodNotAllowed(allow) => {
                let allow = allow.join(", ");
                out.push(Action::Respond {
                    conn,
                    resp: self
                        .cors(Response::error(405, "Method not allowed"))
                        .header("Allow", allow),
                });
                return;
            }
            Match::NotFound => {
                out.push(Action::Respond {
                    conn,
                    resp: self.cors(Response::error(404, "Not found")),
                });
                return;
            }
        };
        let routes = std::rc::Rc::clone(&self.routes);
        let Some(route) = routes.routes().get(route_idx) else {
            return;
        };
        let now_ms = self.clock.ms(now);
        let caller = match self.authenticate_route(head, route.kind, now_ms) {
            Ok(c) => {
                // A keyed caller's connection is never shed by the memory budget.
                out.push(Action::Authenticated { conn });
                c
            }
            Err(e) => {
                out.push(Action::Respond {
                    conn,
                    resp: self.cors(Response::error(401, e.message())),
                });
                return;
            }
        };
        // Per-key rate limit; X-RateLimit-* go on the response (relay/limits.rs).
        if let Err(resp) = self.check_api_rate(conn, &caller.principal, now, out) {
            out.push(Action::Respond { conn, resp });
            return;
        }
        if !route.scope.is_empty() && !caller.scopes.iter().any(|s| s == &route.scope) {
            let msg = format!("API key lacks required scope: {}", route.scope);
            out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(403, &msg)),
            });
            return;
        }
        match route.kind {
            Kind::Forward | Kind::Binary => self.forward_http(
                conn,
                route_idx,
                route,
                head,
                body,
                path_params,
                caller,
                now,
                out,
            ),
            Kind::Session => out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(
                    501,
                    "Headless sessions are not supported by fvtt-relay",
                )),
            }),
            Kind::Local => self.local_route(conn, route, head, &caller, now, out),
            Kind::Sse => self.sse_route(conn, route, head, &caller, now, out),
            Kind::Auth | Kind::Admin => out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(404, "Not found")),
            }),
        }
    }

    /// Decide on a request's body from its head alone (issue 15: bodies were read whole,
    /// up to 64 MiB, before routing and auth). A route-table route is matched (404/405),
    /// its key checked (401) and its scope (403) now; only `/upload` with a valid key may
    /// send up to `--max-body-bytes`, everything else gets `--max-json-body-bytes`; a
    /// declared length over the limit is 413. The owner's, pairing and relay-local routes
    /// keep their own checks after the body, under the small limit. No rate limit is
    /// charged here: the complete request goes through `on_request` and is charged there.
    pub(crate) fn admit_body(
        &mut self,
        conn: ConnId,
        head: &Head,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let path = normalize_path(&head.path);
        let mut limit = self.cfg.max_json_body_bytes;
        // `/mcp` answers its own refusals (JSON-RPC errors, within --mcp-max-message; the
        // body limit here is the JSON one).
        let table_route = !(head.method == Method::Options
            || is_owner_path(path)
            || is_local_path(path)
            || path == "/mcp");
        if table_route {
            let refusal = match self.routes.clone().find(head.method_raw.as_str(), path) {
                Match::NotFound => Some(self.cors(Response::error(404, "Not found"))),
                Match::MethodNotAllowed(allow) => Some(
                    self.cors(Response::error(405, "Method not allowed"))
                        .header("Allow", allow.join(", ")),
                ),
                Match::Found(route, _) => {
                    match self.authenticate_route(head, route.kind, self.clock.ms(now)) {
                        Err(e) => Some(self.cors(Response::error(401, e.message()))),
                        Ok(c)
                            if !route.scope.is_empty()
                                && !c.scopes.iter().any(|s| s == &route.scope) =>
                        {
                            let msg = format!("API key lacks required scope: {}", route.scope);
                            Some(self.cors(Response::error(403, &msg)))
                        }
                        Ok(_) => {
                            out.push(Action::Authenticated { conn });
                            if route.ws_type == "upload-file" {
                                limit = self.cfg.max_body_bytes;
                            }
                            None
                        }
                    }
                }
            };
            if let Some(resp) = refusal {
                self.metrics.http_requests += 1;
                out.push(Action::Respond { conn, resp });
                return;
            }
        }
        if let crate::http::request::BodyKind::Length(n) = head.body {
            if n > limit as u64 {
                self.metrics.http_requests += 1;
                out.push(Action::Respond {
                    conn,
                    resp: self.cors(Response::error(413, "Request body too large")),
                });
                return;
            }
        }
        out.push(Action::ReadBody { conn, limit });
    }

    fn respond(&self, conn: ConnId, status: u16, v: Value, out: &mut Vec<Action>) {
        out.push(Action::Respond {
            conn,
            resp: self.cors(Response::json(status, &v)),
        });
    }

    /// `/openapi.json` or `/asyncapi.json`, built once per server URL (docs::Cache).
    fn docs_route(
        &mut self,
        conn: ConnId,
        peer: IpAddr,
        head: &Head,
        asyncapi: bool,
        out: &mut Vec<Action>,
    ) {
        let url = self.docs_server_url(peer, head);
        let bytes = self.docs.get(&self.routes, asyncapi, &url);
        let mut resp = Response::text(200, "application/json", Vec::new());
        resp.body = crate::http::response::Body::Shared(bytes);
        out.push(Action::Respond {
            conn,
            resp: self.cors(resp),
        });
    }

    /// This relay's external URL for the API documents: `--public-url`, else the request's
    /// Host, as https only when a trusted proxy on loopback says so.
    fn docs_server_url(&self, peer: IpAddr, head: &Head) -> String {
        let https = self.cfg.trust_forwarded
            && peer.is_loopback()
            && head
                .header("x-forwarded-proto")
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        super::docs::server_url(
            self.cfg.public_url.as_deref(),
            head.header("host"),
            https,
            &self.cfg.listen.to_string(),
        )
    }

    /// `x-api-key` (or `Authorization: Bearer`) → the caller's scopes and bindings.
    pub(crate) fn authenticate(&mut self, head: &Head, now_ms: u64) -> Result<Caller0, AuthError> {
        let presented = presented_key(head);
        let principal = self.state.authenticate(presented.as_deref(), now_ms)?;
        let scopes = self.state.principal_scopes(&principal);
        let (client_ids, user_id) = match &principal {
            Principal::Admin => (vec![], None),
            Principal::Key(i) => {
                let k = &self.state.api_keys[*i];
                (k.client_ids.clone(), k.user_id.clone())
            }
        };
        Ok(Caller0 {
            principal,
            scopes,
            client_ids,
            user_id,
        })
    }

    /// Which world a call goes to (relay-protocol.md §2.3). Explicit (query or
    /// `x-client-id`), else the key's single bound world, else the only connected one.
    pub(crate) fn resolve_client(
        &self,
        explicit: Option<&str>,
        caller: &Caller0,
    ) -> Result<(String, ConnId), (u16, Value)> {
        let explicit = explicit.filter(|s| !s.is_empty());
        let id = match explicit {
            Some(id) => {
                if !caller.client_ids.is_empty() && !caller.client_ids.iter().any(|c| c == id) {
                    return Err((
                        403,
                        json!({"error": "API key is not authorized for this client"}),
                    ));
                }
                id.to_string()
            }
            None if caller.client_ids.len() == 1 => caller.client_ids[0].clone(),
            None => {
                let candidates: Vec<String> = self
                    .worlds
                    .ids()
                    .into_iter()
                    .filter(|id| caller.client_ids.is_empty() || caller.client_ids.contains(id))
                    .collect();
                match candidates.len() {
                    // The reference's message first (clients match on it), then why.
                    0 => {
                        let reason = self.no_world_reason(&caller.client_ids);
                        return Err((
                            404,
                            json!({
                                "error": format!("No connected Foundry clients found. {reason}"),
                                "reason": reason,
                            }),
                        ));
                    }
                    1 => candidates[0].clone(),
                    _ => {
                        return Err((
                            400,
                            json!({
                                "error": "Multiple clients connected. Please specify clientId.",
                                "connectedClients": candidates,
                            }),
                        ))
                    }
                }
            }
        };
        match self.worlds.get(&id) {
            Some(l) => Ok((id, l.conn)),
            None => {
                let mut body = json!({
                    "error": "Invalid client ID",
                    "clientId": id,
                    "message": "No Foundry client connected with this ID.",
                });
                // A paired world that is offline: say why (relay/history.rs).
                if self.state.worlds.iter().any(|w| w.client_id == id) {
                    body["reason"] = json!(self.why_offline(&id));
                }
                Err((404, body))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_http(
        &mut self,
        conn: ConnId,
        route_idx: usize,
        route: &Route,
        head: &Head,
        body: Vec<u8>,
        path_params: Vec<(String, String)>,
        caller: Caller0,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let query = enc::parse_query(&head.query);
        let is_json = forward::upload_body_is_json(head.header("content-type"));
        let mut body_json: Option<Value> = None;
        let mut raw_upload: Option<Map<String, Value>> = None;
        if head.method != Method::Get && !body.is_empty() {
            if route.ws_type == "upload-file" && !is_json {
                raw_upload = Some(forward::upload_params_from_raw(
                    &query,
                    head.header("content-type"),
                    &body,
                ));
            } else {
                match forward::parse_json_body(&body, is_json) {
                    Ok(v) => body_json = v,
                    Err(e) => {
                        out.push(Action::Respond {
                            conn,
                            resp: self.cors(Response::error(400, &e)),
                        });
                        return;
                    }
                }
            }
        }
        drop(body);
        if let Some(fields) = raw_upload {
            let mut m = match body_json.take() {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            m.extend(fields);
            body_json = Some(Value::Object(m));
        }
        // An explicit clientId that names no connected world is 404 `Invalid client ID`
        // before any parameter check, as in the reference (GET /search?clientId=bogus is
        // about the world, not the missing `query`).
        let early = query
            .iter()
            .find(|(k, v)| k == "clientId" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .or_else(|| {
                body_json
                    .as_ref()
                    .and_then(|b| b.get("clientId"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| head.header("x-client-id").map(str::to_string));
        if let Some(id) = early.filter(|id| !id.is_empty()) {
            if let Err((status, body)) = self.resolve_client(Some(&id), &caller) {
                out.push(Action::Respond {
                    conn,
                    resp: self.cors(Response::json(status, &body)),
                });
                return;
            }
        }
        let mut params =
            match forward::extract_params(route, &query, body_json.as_ref(), &path_params) {
                Ok(p) => p,
                Err(ParamError { status, body }) => {
                    out.push(Action::Respond {
                        conn,
                        resp: self.cors(Response::json(status, &body)),
                    });
                    return;
                }
            };
        drop(body_json);
        // `/create` of a Macro needs macro:write too (api-surface.md, extra validation).
        if let Err(ParamError { status, body }) =
            forward::check_extra_scope(route, &params, &caller.scopes)
        {
            out.push(Action::Respond {
                conn,
                resp: self.cors(Response::json(status, &body)),
            });
            return;
        }
        let explicit = params
            .get("clientId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| head.header("x-client-id").map(str::to_string));
        let (world, link) = match self.resolve_client(explicit.as_deref(), &caller) {
            Ok(x) => x,
            Err((status, body)) => {
                out.push(Action::Respond {
                    conn,
                    resp: self.cors(Response::json(status, &body)),
                });
                return;
            }
        };
        params.remove("clientId");
        let request_id = self.req_ids.next(&route.ws_type);
        let msg = forward::build_message(
            route,
            params,
            &request_id,
            &caller.scopes,
            caller.user_id.as_deref(),
        );
        let timeout = if route.timeout_ms > 0 {
            Duration::from_millis(route.timeout_ms)
        } else {
            self.cfg.request_timeout_default
        }
        .min(self.cfg.max_request_timeout);
        let deadline = now + timeout;
        debug!("{conn}: {} -> {world} as {request_id}", route.pattern);
        let caller = Caller::Http {
            conn,
            route: route_idx,
            query,
        };
        self.dispatch_to_world((&world, link), request_id, caller, msg, deadline, out);
    }

    /// The module answered a waiter.
    pub(crate) fn deliver_reply(
        &mut self,
        w: Waiter,
        text: String,
        _now: Instant,
        out: &mut Vec<Action>,
    ) {
        match w.caller {
            Caller::Http { conn, route, query } => {
                let Some(route) = self.routes.routes().get(route) else {
                    return;
                };
                let reply = forward::reply_to_http(route, &query, text.as_bytes());
                let mut resp =
                    Response::new(reply.status).header("Content-Type", reply.content_type);
                for (k, v) in reply.headers {
                    resp = resp.header(k, v);
                }
                resp.body = crate::http::response::Body::Bytes(reply.body);
                out.push(Action::Respond {
                    conn,
                    resp: self.cors(resp),
                });
            }
            Caller::WsApi {
                conn,
                client_request_id,
                ws_type,
            } => self.deliver_ws_api_reply(conn, client_request_id, &ws_type, &w.world, text, out),
            Caller::Mcp(m) => self.mcp_reply(*m, &text, out),
            Caller::Remote {
                conn,
                source_request_id,
            } => self.deliver_remote_reply(conn, &source_request_id, &text, out),
        }
    }

    pub(crate) fn request_timeout(&mut self, serial: u64, now: Instant, out: &mut Vec<Action>) {
        let Some((id, w)) = self.pending.take_expired(serial, now) else {
            return;
        };
        self.metrics.request_timeouts += 1;
        debug!("{id}: timed out");
        let msg = match &w.caller {
            Caller::Http { route, .. }
                if self
                    .routes
                    .routes()
                    .get(*route)
                    .is_some_and(|r| r.ws_type == "upload-file") =>
            {
                "Upload timed out"
            }
            _ => "Request timed out",
        };
        self.fail_waiter(w, 408, msg, out);
    }

    // ------------------------------------------------------------ local routes

    fn local_route(
        &mut self,
        conn: ConnId,
        route: &Route,
        head: &Head,
        caller: &Caller0,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        match route.pattern.as_str() {
            "/clients" => {
                let only = if caller.client_ids.len() == 1 {
                    Some(caller.client_ids[0].as_str())
                } else {
                    None
                };
                let mut clients = self.clients_json(only, now);
                if caller.client_ids.len() > 1 {
                    clients.retain(|c| {
                        c.get("clientId")
                            .and_then(Value::as_str)
                            .is_some_and(|id| caller.client_ids.iter().any(|x| x == id))
                    });
                }
                let v = json!({"total": clients.len(), "clients": clients});
                self.respond(conn, 200, v, out);
            }
            p if p.starts_with("/contents") => {
                let _ = head;
                self.respond(
                    conn,
                    400,
                    json!({
                        "error": "This endpoint has been deprecated.",
                        "message": "Use /structure to list folders and their contents.",
                        "example": "/structure?path=...&recursive=true",
                    }),
                    out,
                );
            }
            _ => out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(404, "Not found")),
            }),
        }
    }

    /// Live worlds, then known worlds that are offline (`isOnline:false`).
    pub(crate) fn clients_json(&self, only: Option<&str>, _now: Instant) -> Vec<Value> {
        let mut live: Vec<Value> = self
            .worlds
            .iter()
            .filter(|l| only.is_none_or(|o| o == l.meta.client_id))
            .map(|l| {
                let mut v = l.to_json();
                // Who is logged in, from the module's latest `player-list`.
                if l.users.is_array() {
                    v["users"] = l.users.clone();
                }
                v
            })
            .collect();
        live.sort_by(|a, b| a["clientId"].as_str().cmp(&b["clientId"].as_str()));
        for w in &self.state.worlds {
            if self.worlds.get(&w.client_id).is_some() {
                continue;
            }
            if only.is_some_and(|o| o != w.client_id) {
                continue;
            }
            live.push(json!({
                "id": w.client_id,
                "clientId": w.client_id,
                "worldId": w.world_id,
                "worldTitle": w.world_title,
                "foundryVersion": w.foundry_version,
                "systemId": w.system_id,
                "systemTitle": w.system_title,
                "systemVersion": w.system_version,
                "customName": w.custom_name,
                "connectedSince": 0,
                "lastSeen": w.last_seen_ms.unwrap_or(0),
                "isOnline": false,
            }));
        }
        // The Foundry server each world was paired from (a copy elsewhere has its own id).
        for v in &mut live {
            let id = v["clientId"].as_str().unwrap_or("");
            if let Some(w) = self.state.worlds.iter().find(|w| w.client_id == id) {
                v["serverOrigin"] = Value::from(w.server_origin.clone());
            }
        }
        // relay-protocol.md §2.7: string fields are omitted when empty.
        for v in &mut live {
            if let Value::Object(m) = v {
                m.retain(|_, f| f.as_str() != Some(""));
            }
        }
        live
    }

    fn client_active(&mut self, conn: ConnId, id: &str, out: &mut Vec<Action>) {
        let known = self.state.worlds.iter().any(|w| w.client_id == id);
        let live = self.worlds.get(id).is_some();
        if !known && !live {
            out.push(Action::Respond {
                conn,
                resp: self.cors(Response::error(404, "Unknown client ID")),
            });
            return;
        }
        self.respond(conn, 200, json!({"active": live}), out);
    }

    /// `GET /metrics`: Prometheus text for the owner (admin key in `x-api-key` or
    /// `Authorization: Bearer`, which Prometheus' `authorization` setting sends). Scoped keys
    /// get 403: the figures describe every world and every key's traffic.
    fn metrics_route(&mut self, conn: ConnId, head: &Head, now: Instant, out: &mut Vec<Action>) {
        let resp = match self
            .state
            .authenticate(presented_key(head).as_deref(), self.clock.ms(now))
        {
            Err(e) => Response::error(401, e.message()),
            Ok(Principal::Admin) => Response::text(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics_text(now),
            )
            .header("Cache-Control", "no-store"),
            Ok(Principal::Key(_)) => Response::error(403, "The admin key is required for /metrics"),
        };
        out.push(Action::Respond { conn, resp });
    }

    fn status_json(&self, now: Instant) -> Value {
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "websocket": "/relay",
            "billingEnabled": false,
            "headlessEnabled": false,
            "relay": "fvtt-relay",
            "uptimeSeconds": self.uptime(now).as_secs(),
            "connectedWorlds": self.worlds.len(),
        })
    }

    fn health_json(&self, now: Instant) -> Value {
        json!({
            "status": "ok",
            "timestamp": rfc3339(self.clock.ms(now)),
            "instanceId": "local",
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": self.uptime(now).as_secs(),
            "connectedWorlds": self.worlds.len(),
            "pendingRequests": self.pending.len(),
        })
    }
}

/// The presented API key: `x-api-key`, else `Authorization: Bearer <key>`.
pub(crate) fn presented_key(head: &Head) -> Option<String> {
    if let Some(k) = head.header("x-api-key") {
        return Some(k.trim().to_string());
    }
    head.header("authorization").and_then(|a| {
        let a = a.trim();
        let (scheme, rest) = a.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    })
}

/// A CORS preflight: 204 with what the browser may send.
fn preflight(head: &Head) -> Response {
    let mut r = Response::new(204)
        .header("Access-Control-Allow-Origin", "*")
        .header("Access-Control-Allow-Methods", ALLOW_METHODS)
        .header("Access-Control-Allow-Headers", ALLOW_HEADERS)
        .header("Access-Control-Max-Age", "600");
    if head.header("origin").is_some() {
        r = r.header("Vary", "Origin");
    }
    r
}

/// Tolerate the module's `//relay` and `//api/...` (module-protocol.md §1.2) and a trailing
/// slash: collapse leading slashes to one and drop a trailing one.
/// Paths `owner_route` (pairing, admin API and pages) answers before the route table.
fn is_owner_path(path: &str) -> bool {
    path == "/admin"
        || path.starts_with("/admin/")
        || path.starts_with("/pair/")
        || path == "/auth/pair"
        || path == "/auth/pair-request"
        || path.starts_with("/auth/pair-request/")
        || path == "/api/self-unpair"
}

/// Relay-local paths `on_request` answers before the route table.
fn is_local_path(path: &str) -> bool {
    matches!(
        path,
        "/api/status" | "/api/health" | "/metrics" | "/openapi.json" | "/asyncapi.json" | "/"
    ) || path.starts_with("/api/clients/")
}

pub(crate) fn normalize_path(p: &str) -> &str {
    let trimmed = p.trim_start_matches('/');
    let start = p.len() - trimmed.len();
    let p = if start > 1 { &p[start - 1..] } else { p };
    if p.len() > 1 {
        p.strip_suffix('/').unwrap_or(p)
    } else {
        p
    }
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-25T17:40:17Z`).
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for the whole u64 range we can see.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The relay-local routes that take only GET and HEAD (the `Allow` of their 405).
fn local_methods(path: &str) -> Option<&'static str> {
    match path {
        "/" | "/api/status" | "/api/health" | "/metrics" | "/openapi.json" | "/asyncapi.json" => {
            Some("GET, HEAD")
        }
        p if p.starts_with("/api/clients/") && p.ends_with("/active") => Some("GET, HEAD"),
        _ => None,
    }
}

/// Why a request target's percent-encoding is unusable, if it is: in the path every escape
/// must be `%XX` and the decoded segments UTF-8 (RFC 3986 §2.1); in the query the same holds
/// for each name and value after form decoding (`+` is a space).
pub(crate) fn malformed_target(path: &str, query: &str) -> Option<&'static str> {
    if path
        .split('/')
        .any(|seg| enc::percent_decode(seg).is_none())
    {
        return Some("Malformed percent-encoding in the request path");
    }
    let bad = query
        .split('&')
        .flat_map(|pair| pair.split('='))
        .any(|part| enc::percent_decode(&part.replace('+', " ")).is_none());
    bad.then_some("Malformed percent-encoding in the query string")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_targets_and_local_methods() {
        let cases: &[(&str, &str, bool)] = &[
            ("/chat/%ZZ", "", true),
            ("/chat/abc%2", "", true),
            ("/chat/%FF%FE", "", true),
            ("/chat/%C3%A9", "", false),
            ("/get", "uuid=%FF%FE", true),
            ("/get", "uuid=%zz", true),
            ("/get", "uuid=Actor.a%2Bb&x=1+2&flag", false),
            ("/get", "uuid=%C3%A9", false),
            ("/get", "", false),
        ];
        for (path, query, bad) in cases {
            assert_eq!(
                malformed_target(path, query).is_some(),
                *bad,
                "{path}?{query}"
            );
        }
        assert_eq!(local_methods("/openapi.json"), Some("GET, HEAD"));
        assert_eq!(local_methods("/api/clients/x/active"), Some("GET, HEAD"));
        assert_eq!(local_methods("/search"), None);
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path("//relay"), "/relay");
        assert_eq!(normalize_path("/relay/"), "/relay");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(
            normalize_path("//api/clients/x/active"),
            "/api/clients/x/active"
        );
        assert_eq!(normalize_path("/get"), "/get");
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(784_111_777_000), "1994-11-06T08:49:37Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
