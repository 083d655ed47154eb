//! "Why is my world offline?": each paired world's last link events, in words, on the admin
//! API (`history`, `offlineReason`), in `fvtt-relay worlds`, as the `reason` of an API call
//! that finds no connected world, and (the latest) in the state file across a restart.

mod support;
use support::*;

fn worlds(addr: std::net::SocketAddr, admin: &str) -> Value {
    let r = get(addr, "/admin/api/worlds", &[("x-api-key", admin)]);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["worlds"][0].clone()
}

#[test]
fn an_offline_world_says_why_everywhere() {
    let p = start_provisioned(&[]);
    let addr = p.relay.addr();
    let admin = p.keys.admin_key.clone();
    let key = [("x-api-key", p.keys.api_key.as_str())];

    // 1. Connected, then the GM's browser goes away (the module's disconnect: close 1000).
    let mut w = p.world();
    let v = worlds(addr, &admin);
    assert_eq!(v["history"][0]["kind"], "connected", "{v}");
    assert!(
        v["offlineReason"].is_null(),
        "an online world has no reason: {v}"
    );
    w.stop();
    let mut v = Value::Null;
    assert!(wait_for(secs(5), || {
        v = worlds(addr, &admin);
        v["isOnline"] == false && v["history"].as_array().is_some_and(|h| h.len() == 2)
    }));
    assert_eq!(v["history"][1]["kind"], "closed", "{v}");
    assert_eq!(v["history"][1]["by"], "world", "{v}");
    let why = v["offlineReason"].as_str().unwrap_or_default().to_string();
    assert!(
        why.starts_with("The GM's browser closed the connection"),
        "{why}"
    );
    // An API call that finds no world: the reference's message first, then the same words.
    let r = get(addr, "/search?query=a", &key);
    assert_eq!(r.status, 404);
    let body = r.json();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("No connected Foundry clients found. ")),
        "{body}"
    );
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("The GM's browser closed the connection")),
        "{body}"
    );
    // Named explicitly, the same.
    let r = get(
        addr,
        &format!("/search?query=a&clientId={}", p.keys.client_id),
        &key,
    );
    assert_eq!(r.json()["error"], "Invalid client ID");
    assert_eq!(r.json()["reason"], json!(why));

    // 2. Back online, then the owner revokes its token.
    let w = p.world();
    let tokens = get(addr, "/admin/api/tokens", &[("x-api-key", &admin)]).json();
    let tok = tokens["tokens"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = request(
        addr,
        "DELETE",
        &format!("/admin/api/tokens/{tok}"),
        &[("x-api-key", &admin)],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(w.wait_close(1, secs(5)).is_some());
    let v = worlds(addr, &admin);
    let why = v["offlineReason"].as_str().unwrap_or_default().to_string();
    assert!(why.starts_with("Token revoked by you (at "), "{v}");
    let last = &v["history"][v["history"].as_array().map_or(0, |h| h.len() - 1)];
    assert_eq!(last["by"], "owner", "{v}");
    assert_eq!(last["code"], 4002, "{v}");

    // 3. The module tries again with the revoked token: refused, and said so.
    drop(w);
    let mut cfg = WorldConfig::new(&p.keys.client_id, &p.keys.token);
    cfg.reconnect_max_attempts = 0;
    let again = FakeWorld::start(addr, cfg);
    assert!(again.wait_close(1, secs(5)).is_some());
    let mut v = Value::Null;
    assert!(wait_for(secs(5), || {
        v = worlds(addr, &admin);
        v["history"]
            .as_array()
            .and_then(|h| h.last())
            .is_some_and(|e| e["kind"] == "refused")
    }));
    let refused = v["history"].as_array().and_then(|h| h.last()).cloned();
    let text = refused
        .as_ref()
        .and_then(|e| e["text"].as_str())
        .unwrap_or_default();
    assert!(
        text.starts_with("Refused a connection from 127.0.0.1: its connection token is not valid"),
        "{v}"
    );
    drop(again);

    // 4. `fvtt-relay worlds` (through the running relay) shows the words.
    let out = std::process::Command::new(relay_binary())
        .args(["worlds", "--data-dir"])
        .arg(p.dir.path())
        .output()
        .expect("fvtt-relay worlds");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Refused a connection from 127.0.0.1"),
        "{stdout}"
    );

    // 5. Across a restart the latest event is still the answer (state file), and the CLI
    // reads it from the state file while the relay is stopped.
    let mut relay = p.relay;
    relay.sigterm();
    assert!(relay.wait_exit(secs(10)).is_some());
    let out = std::process::Command::new(relay_binary())
        .args(["worlds", "--data-dir"])
        .arg(p.dir.path())
        .output()
        .expect("fvtt-relay worlds");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Refused a connection from 127.0.0.1"),
        "{stdout}"
    );
    let relay = Relay::start_in_when_free(p.dir.path(), &[]);
    let v = worlds(relay.addr(), &admin);
    let why = v["offlineReason"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("Refused a connection from 127.0.0.1"),
        "{v}"
    );
    assert_eq!(v["lastLink"]["kind"], "refused", "{v}");
}

/// `fvtt-relay status` through the running relay's admin API: address, uptime, state file,
/// connections by kind, worlds online and offline with the last close; refused when stopped.
#[test]
fn status_command() {
    let p = start_provisioned(&[]);
    let addr = p.relay.addr();
    let status = |json: bool| {
        let mut args = vec!["status"];
        if json {
            args.push("--json");
        }
        let out = std::process::Command::new(relay_binary())
            .args(&args)
            .arg("--data-dir")
            .arg(p.dir.path())
            .output()
            .expect("fvtt-relay status");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut w = p.world();
    let _sse = SseClient::connect(
        addr,
        &format!("/chat/subscribe?clientId={}", p.keys.client_id),
        &[("x-api-key", p.keys.api_key.as_str())],
    )
    .expect("sse");
    let mut v = Value::Null;
    assert!(wait_for(secs(5), || {
        let (code, out, err) = status(true);
        assert_eq!(code, Some(0), "{out}{err}");
        v = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["connections"]["sse"] == 1
    }));
    assert_eq!(v["listen"], json!(addr.to_string()), "{v}");
    assert_eq!(v["connections"]["worldLinks"], 1, "{v}");
    assert!(v["uptimeSeconds"].is_u64(), "{v}");
    let state = p.dir.path().join("state.json");
    assert_eq!(v["stateFile"], json!(state.display().to_string()), "{v}");
    assert_eq!(v["worlds"][0]["isOnline"], true, "{v}");

    w.stop();
    let mut text = String::new();
    assert!(
        wait_for(secs(5), || {
            text = status(false).1;
            text.contains("0 online, 1 offline")
        }),
        "{text}"
    );
    assert!(text.contains(&format!("listening on {addr}")), "{text}");
    assert!(
        text.contains(&format!("state file   {}", state.display())),
        "{text}"
    );
    assert!(text.contains("1 SSE"), "{text}");
    assert!(text.contains("last close"), "{text}");
    assert!(
        text.contains("by world: The GM's browser closed the connection"),
        "{text}"
    );
    assert!(
        text.contains("why offline: The GM's browser closed"),
        "{text}"
    );

    let mut relay = p.relay;
    relay.sigterm();
    assert!(relay.wait_exit(secs(10)).is_some());
    let (code, _, err) = status(false);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the relay is not running"), "{err}");
}

/// The module's own close (its code and reason) and its last `module-notify` are part of the
/// world's story: on the admin API and in `fvtt-relay worlds`.
#[test]
fn the_worlds_close_code_and_last_notice_are_kept() {
    let p = start_provisioned(&[]);
    let addr = p.relay.addr();
    let admin = p.keys.admin_key.clone();
    let w = p.world();
    assert!(
        w.send_json(&json!({"type": "module-notify", "event": "settings-change",
        "details": "Setting `wsRelayUrl` was changed", "actor": "Gamemaster", "world": "W"}))
    );
    let mut v = Value::Null;
    assert!(wait_for(secs(5), || {
        v = worlds(addr, &admin);
        v["lastNotice"]["text"].is_string()
    }));
    assert_eq!(
        v["lastNotice"]["text"], "Setting `wsRelayUrl` was changed (by Gamemaster)",
        "{v}"
    );
    let out = std::process::Command::new(relay_binary())
        .args(["worlds", "--data-dir"])
        .arg(p.dir.path())
        .output()
        .expect("fvtt-relay worlds");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("module notice") && stdout.contains("wsRelayUrl"),
        "{stdout}"
    );
    w.close_with(4321, "Module shutting down");
    assert!(wait_for(secs(5), || {
        v = worlds(addr, &admin);
        v["isOnline"] == false && v["history"].as_array().is_some_and(|h| h.len() == 2)
    }));
    let closed = &v["history"][1];
    assert_eq!(closed["by"], "world", "{v}");
    assert_eq!(closed["code"], 4321, "{v}");
    assert_eq!(closed["reason"], "Module shutting down", "{v}");
    assert!(
        closed["text"]
            .as_str()
            .is_some_and(|t| t.contains("(4321 Module shutting down)")),
        "{v}"
    );
}
