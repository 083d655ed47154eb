//! Plain counters and gauges, rendered as Prometheus text (`GET /metrics`, admin key).
//!
//! Every metric listed here is kept up to date (the reference declares three it never
//! updates: api-surface.md bug 15). Counters are bumped by whoever owns the event: the loop
//! for connection-level outcomes (accepts, refusals, slow consumers, protocol errors), the
//! relay core for requests, replies and events. Gauges that the relay can compute from its
//! own state (worlds, pending requests, subscribers) are passed in at render time instead of
//! being tracked twice.

use std::fmt::Write;

/// Where a slow consumer was cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowKind {
    Sse,
    WsApi,
    WsEvents,
    Module,
    Other,
}

#[derive(Default, Debug, Clone)]
pub struct Metrics {
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_open: u64,
    pub http_requests: u64,
    pub http_responses_2xx: u64,
    pub http_responses_3xx: u64,
    pub http_responses_4xx: u64,
    pub http_responses_5xx: u64,
    pub http_framing_errors: u64,
    pub ws_protocol_errors: u64,
    pub forwarded_requests: u64,
    pub forwarded_replies: u64,
    pub request_timeouts: u64,
    pub requests_failed_by_disconnect: u64,
    pub rate_limited: u64,
    pub auth_failures: u64,
    pub events_published: u64,
    pub event_deliveries: u64,
    pub slow_sse: u64,
    pub slow_ws_api: u64,
    pub slow_ws_events: u64,
    pub slow_module: u64,
    pub slow_other: u64,
    pub world_connects: u64,
    pub module_notices: u64,
    pub state_saves: u64,
    pub state_save_failures: u64,
}

/// Values the relay reads off its state when rendering.
#[derive(Default, Debug, Clone, Copy)]
pub struct Gauges {
    pub worlds_connected: u64,
    pub worlds_known: u64,
    pub pending_requests: u64,
    pub sse_streams: u64,
    pub ws_api_sockets: u64,
    pub ws_events_sockets: u64,
    pub uptime_seconds: u64,
    /// 1 while saves of state.json fail (owner changes are refused with 503), else 0.
    pub state_save_failing: u64,
}

impl Metrics {
    pub fn slow_consumer(&mut self, kind: SlowKind) {
        match kind {
            SlowKind::Sse => self.slow_sse += 1,
            SlowKind::WsApi => self.slow_ws_api += 1,
            SlowKind::WsEvents => self.slow_ws_events += 1,
            SlowKind::Module => self.slow_module += 1,
            SlowKind::Other => self.slow_other += 1,
        }
    }

    /// Count one HTTP response by its status class.
    pub fn response(&mut self, status: u16) {
        match status {
            200..=299 => self.http_responses_2xx += 1,
            300..=399 => self.http_responses_3xx += 1,
            400..=499 => self.http_responses_4xx += 1,
            _ => self.http_responses_5xx += 1,
        }
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP fvtt_relay_{name} {help}");
            let _ = writeln!(out, "# TYPE fvtt_relay_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "fvtt_relay_{name}{labels} {v}");
            }
        };
        one(
            "connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &[("", self.connections_accepted)],
        );
        one(
            "connections_refused_total",
            "counter",
            "Connections answered 503 at accept (connection caps).",
            &[("", self.connections_refused)],
        );
        one(
            "connections_open",
            "gauge",
            "Open TCP connections of every kind.",
            &[("", self.connections_open)],
        );
        one(
            "http_requests_total",
            "counter",
            "Complete HTTP requests received (upgrades included).",
            &[("", self.http_requests)],
        );
        one(
            "http_responses_total",
            "counter",
            "HTTP responses sent, by status class.",
            &[
                ("{class=\"2xx\"}", self.http_responses_2xx),
                ("{class=\"3xx\"}", self.http_responses_3xx),
                ("{class=\"4xx\"}", self.http_responses_4xx),
                ("{class=\"5xx\"}", self.http_responses_5xx),
            ],
        );
        one(
            "http_framing_errors_total",
            "counter",
            "Requests refused by the HTTP layer (malformed, too large, timed out).",
            &[("", self.http_framing_errors)],
        );
        one(
            "ws_protocol_errors_total",
            "counter",
            "WebSocket connections closed for a protocol error (1002/1007/1009).",
            &[("", self.ws_protocol_errors)],
        );
        one(
            "forwarded_requests_total",
            "counter",
            "Requests sent to a world (HTTP and /ws/api).",
            &[("", self.forwarded_requests)],
        );
        one(
            "forwarded_replies_total",
            "counter",
            "World replies matched to a waiting caller.",
            &[("", self.forwarded_replies)],
        );
        one(
            "request_timeouts_total",
            "counter",
            "Forwarded requests that hit their route timeout.",
            &[("", self.request_timeouts)],
        );
        one(
            "requests_failed_by_disconnect_total",
            "counter",
            "Forwarded requests failed because their world disconnected.",
            &[("", self.requests_failed_by_disconnect)],
        );
        one(
            "rate_limited_total",
            "counter",
            "Requests answered 429.",
            &[("", self.rate_limited)],
        );
        one(
            "auth_failures_total",
            "counter",
            "Requests refused with 401 (missing, invalid or expired key).",
            &[("", self.auth_failures)],
        );
        one(
            "events_published_total",
            "counter",
            "World events received and sequenced.",
            &[("", self.events_published)],
        );
        one(
            "event_deliveries_total",
            "counter",
            "Event copies queued to subscribers (one per subscriber per event).",
            &[("", self.event_deliveries)],
        );
        one(
            "slow_consumers_total",
            "counter",
            "Connections cut off because their send queue passed its limit.",
            &[
                ("{transport=\"sse\"}", self.slow_sse),
                ("{transport=\"ws-api\"}", self.slow_ws_api),
                ("{transport=\"ws-events\"}", self.slow_ws_events),
                ("{transport=\"module\"}", self.slow_module),
                ("{transport=\"other\"}", self.slow_other),
            ],
        );
        one(
            "world_connects_total",
            "counter",
            "World links authenticated.",
            &[("", self.world_connects)],
        );
        one(
            "module_notices_total",
            "counter",
            "module-notify notices received from worlds (a setting changed, ...).",
            &[("", self.module_notices)],
        );
        one(
            "state_saves_total",
            "counter",
            "state.json writes, by outcome.",
            &[
                ("{outcome=\"ok\"}", self.state_saves),
                ("{outcome=\"failed\"}", self.state_save_failures),
            ],
        );
        one(
            "state_save_failing",
            "gauge",
            "1 while state.json cannot be saved (owner changes are refused), else 0.",
            &[("", g.state_save_failing)],
        );
        one(
            "worlds_connected",
            "gauge",
            "Worlds with a live link.",
            &[("", g.worlds_connected)],
        );
        one(
            "worlds_known",
            "gauge",
            "Paired worlds.",
            &[("", g.worlds_known)],
        );
        one(
            "pending_requests",
            "gauge",
            "Forwarded requests waiting for their world.",
            &[("", g.pending_requests)],
        );
        one(
            "subscribers",
            "gauge",
            "Open event subscribers, by transport.",
            &[
                ("{transport=\"sse\"}", g.sse_streams),
                ("{transport=\"ws-api\"}", g.ws_api_sockets),
                ("{transport=\"ws-events\"}", g.ws_events_sockets),
            ],
        );
        one(
            "uptime_seconds",
            "gauge",
            "Seconds since the relay started.",
            &[("", g.uptime_seconds)],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut m = Metrics::default();
        m.response(200);
        m.response(404);
        m.response(502);
        m.slow_consumer(SlowKind::Sse);
        m.slow_consumer(SlowKind::Sse);
        let text = m.render(&Gauges {
            worlds_connected: 1,
            ..Gauges::default()
        });
        assert!(text.contains("fvtt_relay_http_responses_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("fvtt_relay_http_responses_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("fvtt_relay_http_responses_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("fvtt_relay_slow_consumers_total{transport=\"sse\"} 2\n"));
        assert!(text.contains("fvtt_relay_worlds_connected 1\n"));
        // Every sample line belongs to a metric with HELP and TYPE lines.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
    }
}
