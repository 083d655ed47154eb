//! The relay's request rate limits (relay-protocol.md §6.1) and the `X-RateLimit-*` headers.
//!
//! One [`RateLimiter`] per concern, with the reference's defaults from the config: per API key
//! per minute on the API (300, overridable per key), per IP on `POST /auth/pair` (10 / 15 min)
//! and `POST /auth/pair-request` (20 / 15 min), per IP on WebSocket upgrades (100 / min), and
//! per IP on admin sign-in (like pairing: it guards a secret against guessing).
//!
//! Unlike the reference (which sends none), every 429 carries `Retry-After` (RFC 9110
//! §10.2.3) and every API response carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
//! The API verdict of a request is parked per connection by `rest.rs` and stamped onto that
//! connection's response by [`Relay::stamp_rate_headers`], which `Relay::handle` runs over the
//! actions of each turn: forwarded replies leave in a later turn, so the verdict has to wait
//! for them, and one response per connection is in flight at a time (HTTP/1.1 ordering).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::io::Action;
use super::Relay;
use crate::auth::Principal;
use crate::config::Config;
use crate::http::response::Response;
use crate::ids::ConnId;
use crate::ratelimit::{RateLimiter, Verdict};

const MINUTE: Duration = Duration::from_secs(60);
const QUARTER_HOUR: Duration = Duration::from_secs(15 * 60);

/// Who an API request is counted against: the key's id (not its secret, which we never
/// keep), or the admin key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ApiCaller {
    Admin,
    Key(String),
}

pub(crate) struct Limits {
    pub api: RateLimiter<ApiCaller>,
    pub pair: RateLimiter<IpAddr>,
    pub pair_request: RateLimiter<IpAddr>,
    pub ws_upgrade: RateLimiter<IpAddr>,
    pub login: RateLimiter<IpAddr>,
    /// The API verdict of the request a connection is waiting on (see the module comment).
    pub parked: HashMap<ConnId, Verdict>,
}

impl Limits {
    pub fn new(cfg: &Config) -> Limits {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Limits {
            api: RateLimiter::new(n(cfg.rate_limit_per_minute), MINUTE),
            pair: RateLimiter::new(n(cfg.pair_rate_limit), QUARTER_HOUR),
            pair_request: RateLimiter::new(n(cfg.pair_request_rate_limit), QUARTER_HOUR),
            ws_upgrade: RateLimiter::new(n(cfg.ws_upgrade_rate_limit), MINUTE),
            login: RateLimiter::new(n(cfg.pair_rate_limit), QUARTER_HOUR),
            parked: HashMap::new(),
        }
    }

    /// Forget what is kept for keys and IPs whose buckets have refilled.
    pub fn sweep(&mut self, now: Instant) {
        self.api.sweep(now);
        self.pair.sweep(now);
        self.pair_request.sweep(now);
        self.ws_upgrade.sweep(now);
        self.login.sweep(now);
    }
}

/// A 429 with `{"error": message}` and `Retry-After` (seconds, RFC 9110 §10.2.3).
pub(crate) fn too_many(v: &Verdict, message: &str) -> Response {
    rate_headers(Response::error(429, message), v)
        .header("Retry-After", v.retry_after_secs.max(1).to_string())
}

/// Add `X-RateLimit-Limit/Remaining/Reset` (Reset: seconds until the bucket is full again).
/// A disabled limiter (limit 0) adds nothing: there is no limit to describe.
pub(crate) fn rate_headers(resp: Response, v: &Verdict) -> Response {
    if v.limit == 0 {
        return resp;
    }
    resp.header("X-RateLimit-Limit", v.limit.to_string())
        .header("X-RateLimit-Remaining", v.remaining.to_string())
        .header("X-RateLimit-Reset", v.reset_after_secs.to_string())
}

impl Relay {
    /// Count one API request of `principal` (right after authentication). Allowed: the
    /// verdict is parked for `conn` and stamped onto its response. Refused: the 429 to send
    /// (with CORS, like every API response).
    pub(crate) fn check_api_rate(
        &mut self,
        conn: ConnId,
        principal: &Principal,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), Response> {
        let (who, limit) = match principal {
            Principal::Admin => (ApiCaller::Admin, self.limits.api.limit()),
            Principal::Key(i) => match self.state.api_keys.get(*i) {
                Some(k) => (
                    ApiCaller::Key(k.id.clone()),
                    k.rate_limit_per_minute.unwrap_or(self.limits.api.limit()),
                ),
                None => return Ok(()),
            },
        };
        let v = self.limits.api.check_with_limit(&who, limit, now);
        if !v.allowed {
            return Err(self.cors(too_many(&v, "Too many API requests, please slow down")));
        }
        self.limits.parked.insert(conn, v);
        if let Principal::Key(i) = principal {
            self.touch_key(*i, now, out);
        }
        Ok(())
    }

    /// Count one WebSocket upgrade from `peer`; `Some(429)` when over the limit. For the
    /// `/relay`, `/ws/api` and `/ws/events` upgrade paths.
    pub(crate) fn check_upgrade_rate(&mut self, peer: IpAddr, now: Instant) -> Option<Response> {
        let v = self.limits.ws_upgrade.check(&peer, now);
        (!v.allowed).then(|| too_many(&v, "Too many WebSocket connections, please slow down"))
    }

    /// Stamp the parked API verdicts onto the responses among `actions` (see the module
    /// comment). Run by `Relay::handle` over the actions of one input.
    pub(crate) fn stamp_rate_headers(&mut self, actions: &mut [Action]) {
        if self.limits.parked.is_empty() {
            return;
        }
        for a in actions {
            match a {
                Action::Respond { conn, resp } => {
                    if let Some(v) = self.limits.parked.remove(conn) {
                        let r = std::mem::replace(resp, Response::new(500));
                        *resp = rate_headers(r, &v);
                    }
                }
                Action::StartSse { conn, headers } => {
                    if let Some(v) = self.limits.parked.remove(conn) {
                        if v.limit > 0 {
                            headers.push(("X-RateLimit-Limit", v.limit.to_string()));
                            headers.push(("X-RateLimit-Remaining", v.remaining.to_string()));
                            headers.push(("X-RateLimit-Reset", v.reset_after_secs.to_string()));
                        }
                    }
                }
                Action::Close { conn, .. } => {
                    self.limits.parked.remove(conn);
                }
                _ => {}
            }
        }
    }

    /// A connection is gone: drop its parked verdict.
    pub(crate) fn forget_conn_limits(&mut self, conn: ConnId) {
        self.limits.parked.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_retry_after() {
        let v = Verdict {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset_after_secs: 90,
            retry_after_secs: 0,
        };
        let r = too_many(&v, "slow");
        assert_eq!(r.status, 429);
        let get = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        // A zero wait is still at least one second: "Retry-After: 0" invites a hot loop.
        assert_eq!(get("Retry-After"), Some("1"));
        assert_eq!(get("X-RateLimit-Limit"), Some("10"));
        assert_eq!(get("X-RateLimit-Remaining"), Some("0"));
        assert_eq!(get("X-RateLimit-Reset"), Some("90"));
        let off = Verdict { limit: 0, ..v };
        assert!(rate_headers(Response::new(200), &off).headers.is_empty());
    }
}
