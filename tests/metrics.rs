//! `/metrics`: who may read it, and that its counters move with what happened.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

fn metrics(addr: std::net::SocketAddr, key: &str) -> RawResponse {
    get(addr, "/metrics", &[("x-api-key", key)])
}

/// The value of one sample line (`name{labels} value`).
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn admin_only_and_counts_requests() {
    let p = start_provisioned(&[]);
    let addr = p.relay.addr();
    assert_eq!(get(addr, "/metrics", &[]).status, 401);
    let r = metrics(addr, &p.keys.api_key);
    assert_eq!(r.status, 403, "a scoped key may not read /metrics");
    let world = p.world();
    for q in ["a", "b", "c"] {
        let r = get(
            addr,
            &format!("/search?query={q}"),
            &[("x-api-key", p.keys.api_key.as_str())],
        );
        assert_eq!(r.status, 200);
    }
    let r = metrics(addr, &p.keys.admin_key);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = r.text();
    assert_eq!(
        sample(&text, "fvtt_relay_forwarded_requests_total"),
        Some(3)
    );
    assert_eq!(sample(&text, "fvtt_relay_forwarded_replies_total"), Some(3));
    assert_eq!(sample(&text, "fvtt_relay_worlds_connected"), Some(1));
    assert_eq!(sample(&text, "fvtt_relay_world_connects_total"), Some(1));
    assert!(sample(&text, "fvtt_relay_http_responses_total{class=\"4xx\"}").unwrap_or(0) >= 2);
    drop(world);
}

#[test]
fn slow_sse_consumer_is_counted() {
    let p = start_provisioned(&[
        "--outq-soft-bytes",
        "16K",
        "--outq-hard-bytes",
        "64K",
        "--log-level",
        "warn",
    ]);
    let addr = p.relay.addr();
    let world = p.world();
    // A stream whose reader never reads: open it by hand and keep the socket.
    let mut stuck = match HttpConn::connect(addr) {
        Ok(c) => c,
        Err(e) => panic!("connect: {e}"),
    };
    let sent = stuck.send(
        format!(
            "GET /chat/subscribe HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\n\r\n",
            p.keys.api_key
        )
        .as_bytes(),
    );
    assert!(sent.is_ok(), "{sent:?}");
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 1));
    let big = "x".repeat(32 * 1024);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut cut = false;
    while std::time::Instant::now() < deadline {
        world.send_json(
            &json!({"type": "chat-event", "data": {"eventType": "create",
            "data": {"id": "m", "content": big}}}),
        );
        let text = metrics(addr, &p.keys.admin_key).text();
        if sample(&text, "fvtt_relay_slow_consumers_total{transport=\"sse\"}") == Some(1) {
            cut = true;
            break;
        }
    }
    assert!(cut, "the stream that never reads was never cut off");
    // Its subscription is gone: the module is told the channel has no listener left.
    assert!(world.wait_subscription("chat-events", secs(5), |n| n == 0));
}
