//! Pairing as the real module does it (module-protocol.md §2.2, relay-protocol.md §5.6):
//! by code and by the browser flow, relayUrl shape, CORS preflights, self-unpair, restart
//! and reconnect with the stored token, immediate revocation, and rate limits.

mod support;
use support::*;

use std::net::SocketAddr;
use std::path::Path;

fn admin_key(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.key"))
        .expect("admin.key")
        .trim()
        .to_string()
}

fn admin_post(addr: SocketAddr, key: &str, path: &str, body: &Value) -> RawResponse {
    post_json(addr, path, &[("x-api-key", key)], body)
}

fn new_code(addr: SocketAddr, key: &str) -> String {
    let r = admin_post(addr, key, "/admin/api/pairing-codes", &json!({}));
    assert_eq!(r.status, 201, "{r:?}");
    r.json()["code"].as_str().expect("code").to_string()
}

fn pair_body(code: &str, fingerprint: &str) -> Value {
    json!({
        "code": code,
        "worldId": "test-world",
        "worldTitle": "Test World",
        "serverFingerprint": fingerprint,
        "existingClientId": "",
        "serverOrigin": "http://localhost:30000",
    })
}

/// Pair by code; returns (clientId, token).
fn pair(addr: SocketAddr, key: &str, fingerprint: &str) -> (String, String) {
    let code = new_code(addr, key);
    let r = post_json(addr, "/auth/pair", &[], &pair_body(&code, fingerprint));
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    (
        v["clientId"].as_str().expect("clientId").to_string(),
        v["token"].as_str().expect("token").to_string(),
    )
}

fn create_key(addr: SocketAddr, admin: &str, body: Value) -> String {
    let r = admin_post(addr, admin, "/admin/api/keys", &body);
    assert_eq!(r.status, 201, "{r:?}");
    r.json()["key"].as_str().expect("key").to_string()
}

#[test]
fn code_flow_then_restart_and_reconnect() {
    let dir = TempDir::new("pair");
    let relay = Relay::start_in(dir.path(), &[]);
    let addr = relay.addr();
    let admin = admin_key(dir.path());
    let code = new_code(addr, &admin);
    assert_eq!(code.len(), 6);
    assert!(code
        .bytes()
        .all(|b| b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(&b)));

    // The module upper-cases the code; we accept it in any case.
    let r = post_json(
        addr,
        "/auth/pair",
        &[("Origin", "http://localhost:30000")],
        &pair_body(&code.to_lowercase(), "fp-1"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let v = r.json();
    let client_id = v["clientId"].as_str().unwrap().to_string();
    let token = v["token"].as_str().unwrap().to_string();
    assert!(
        client_id.starts_with("fvtt_") && client_id.len() == 21,
        "{client_id}"
    );
    assert!(client_id[5..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(token.len(), 64);
    assert_eq!(v["relayUrl"], format!("ws://{addr}/relay"));

    // Single use.
    let again = post_json(addr, "/auth/pair", &[], &pair_body(&code, "fp-1"));
    assert_eq!(again.status, 410);
    assert_eq!(again.json()["error"], "Pairing code has already been used");
    // A second pairing of the same server reuses its clientId (same fingerprint).
    let (same, _) = pair(addr, &admin, "fp-1");
    assert_eq!(same, client_id);

    let api_key = create_key(addr, &admin, json!({"name": "bot"}));
    let mut world = FakeWorld::online(addr, &client_id, &token);
    let r = get(addr, "/clients", &[("x-api-key", &api_key)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["clients"][0]["clientId"], client_id.as_str());
    world.stop();

    drop(relay);
    let relay = Relay::start_in(dir.path(), &[]);
    let addr = relay.addr();
    let _world = FakeWorld::online(addr, &client_id, &token);
    let r = get(addr, "/clients", &[("x-api-key", &api_key)]);
    assert_eq!(r.status, 200, "{r:?}");
    let clients = r.json()["clients"].clone();
    assert_eq!(clients[0]["clientId"], client_id.as_str());
    assert_eq!(clients[0]["isOnline"], true);
    let active = get(addr, &format!("/api/clients/{client_id}/active"), &[]);
    assert_eq!(active.json(), json!({"active": true}));
}

#[test]
fn pair_errors() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let admin = admin_key(relay.data_dir());
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"worldId": "w"}), 400, "Code is required"),
        (
            json!({"code": "ZZZZZZ", "worldId": "w"}),
            404,
            "Invalid pairing code",
        ),
    ];
    for (body, status, msg) in cases {
        let r = post_json(addr, "/auth/pair", &[], &body);
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (status, Some(msg)),
            "{body}"
        );
    }
    // worldId is required for an unbound code, and the code survives the refusal.
    let code = new_code(addr, &admin);
    let r = post_json(addr, "/auth/pair", &[], &json!({"code": code}));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("worldId is required"))
    );
    let r = post_json(addr, "/auth/pair", &[], &pair_body(&code, ""));
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(addr, "/auth/pair", &[]);
    assert_eq!(r.status, 405);
}

#[test]
fn browser_flow_and_status_sequence() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let admin = admin_key(relay.data_dir());
    let open = |fp: &str| {
        let r = post_json(
            addr,
            "/auth/pair-request",
            &[],
            &json!({"worldId": "w1", "worldTitle": "World One", "systemId": "dnd5e",
                    "systemTitle": "D&D", "systemVersion": "5.1", "foundryVersion": "13.345",
                    "serverFingerprint": fp}),
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        r.json()
    };
    let v = open("fp-b");
    let code = v["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8);
    assert_eq!(v["pairUrl"], format!("http://{addr}/pair/{code}"));
    assert_eq!(v["upgradeOnly"], false);
    assert_eq!(v["expiresIn"], 600);
    assert!(v["expiresAt"].as_str().is_some_and(|s| s.ends_with('Z')));

    let status = |c: &str| get(addr, &format!("/auth/pair-request/{c}/status"), &[]);
    assert_eq!(status(&code).json(), json!({"status": "pending"}));
    assert_eq!(status("NOSUCHCD").status, 404);

    // The owner sees it and approves through the admin API.
    let list = get(addr, "/admin/api/pair-requests", &[("x-api-key", &admin)]).json();
    let req = &list["requests"][0];
    assert_eq!(req["code"], code.as_str());
    assert_eq!(req["worldTitle"], "World One");
    assert_eq!(req["status"], "pending");
    let one = get(
        addr,
        &format!("/admin/api/pair-requests/{code}"),
        &[("x-api-key", &admin)],
    );
    assert_eq!(one.json()["systemId"], "dnd5e");
    let r = admin_post(
        addr,
        &admin,
        &format!("/admin/api/pair-requests/{code}/approve"),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = admin_post(
        addr,
        &admin,
        &format!("/admin/api/pair-requests/{code}/deny"),
        &json!({}),
    );
    assert_eq!(r.status, 409, "a decided request stays decided");

    let approved = status(&code).json();
    assert_eq!(approved["status"], "approved");
    let pairing_code = approved["pairingCode"].as_str().unwrap().to_string();
    assert_eq!(pairing_code.len(), 6);
    assert_eq!(status(&code).json()["status"], "exchanged");

    let r = post_json(addr, "/auth/pair", &[], &pair_body(&pairing_code, "fp-b"));
    assert_eq!(r.status, 200, "{r:?}");
    let client_id = r.json()["clientId"].as_str().unwrap().to_string();
    let token = r.json()["token"].as_str().unwrap().to_string();
    let _world = FakeWorld::online(addr, &client_id, &token);

    // Denied.
    let code2 = open("fp-c")["code"].as_str().unwrap().to_string();
    let r = admin_post(
        addr,
        &admin,
        &format!("/admin/api/pair-requests/{code2}/deny"),
        &json!({}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(status(&code2).json(), json!({"status": "denied"}));
    // worldId is required.
    let r = post_json(addr, "/auth/pair-request", &[], &json!({}));
    assert_eq!(r.status, 400);
}

#[test]
fn expiry_of_requests_and_codes() {
    let relay = Relay::start(&["--pair-request-ttl", "1s", "--pairing-code-ttl", "1s"]);
    let addr = relay.addr();
    let admin = admin_key(relay.data_dir());
    let r = post_json(addr, "/auth/pair-request", &[], &json!({"worldId": "w"}));
    let code = r.json()["code"].as_str().unwrap().to_string();
    let pcode = new_code(addr, &admin);
    std::thread::sleep(millis(1_200));
    let r = get(addr, &format!("/auth/pair-request/{code}/status"), &[]);
    assert_eq!((r.status, r.json()), (410, json!({"status": "expired"})));
    let r = admin_post(
        addr,
        &admin,
        &format!("/admin/api/pair-requests/{code}/approve"),
        &json!({}),
    );
    assert_eq!(r.status, 410);
    let r = post_json(addr, "/auth/pair", &[], &pair_body(&pcode, ""));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (410, Some("Pairing code has expired"))
    );
}

#[test]
fn preflights_are_answered() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    for path in [
        "/auth/pair",
        "/auth/pair-request",
        "/auth/pair-request/ABCDEFGH/status",
        "/api/self-unpair",
        "/api/clients/fvtt_0000000000000000/active",
    ] {
        let r = request(
            addr,
            "OPTIONS",
            path,
            &[
                ("Origin", "http://localhost:30000"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            None,
        );
        assert!(r.status == 204 || r.status == 200, "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        let allowed = r.header("access-control-allow-headers").unwrap_or("");
        assert!(
            allowed.to_lowercase().contains("content-type"),
            "{path}: {allowed}"
        );
    }
    let r = get(addr, "/api/clients/fvtt_0000000000000000/active", &[]);
    assert_eq!(r.status, 404);
}

#[test]
fn self_unpair_closes_the_module() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let admin = admin_key(relay.data_dir());
    let (client_id, token) = pair(addr, &admin, "fp-u");
    let world = FakeWorld::online(addr, &client_id, &token);
    let r = post_json(addr, "/api/self-unpair", &[], &json!({"token": token}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"success": true, "message": "Unpaired successfully"})
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        world.wait_close(1, secs(5)),
        Some((4002, "Unpaired by owner".to_string()))
    );
    assert!(world.wait_finished(secs(5)) && world.token_cleared());
    let r = post_json(addr, "/api/self-unpair", &[], &json!({"token": token}));
    assert_eq!(r.json()["message"], "Token not found; nothing to clean up");
    let r = post_json(addr, "/api/self-unpair", &[], &json!({}));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("Missing token"))
    );
}

#[test]
fn revocation_is_immediate() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let admin = admin_key(relay.data_dir());
    // API key.
    let r = admin_post(addr, &admin, "/admin/api/keys", &json!({"name": "k"}));
    let key = r.json()["key"].as_str().unwrap().to_string();
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(get(addr, "/clients", &[("x-api-key", &key)]).status, 200);
    let r = request(
        addr,
        "DELETE",
        &format!("/admin/api/keys/{id}"),
        &[("x-api-key", &admin)],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(addr, "/clients", &[("x-api-key", &key)]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("Invalid API key"))
    );

    // Connection token: the live link closes with 4002, and the token is refused after.
    let (client_id, token) = pair(addr, &admin, "fp-r");
    let world = FakeWorld::online(addr, &client_id, &token);
    let tokens = get(addr, "/admin/api/tokens", &[("x-api-key", &admin)]).json();
    let tok = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["clientId"] == client_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(tok["prefix"].as_str(), Some(&token[..6]));
    assert!(tok["lastUsedAt"].is_u64(), "{tok}");
    let tid = tok["id"].as_str().unwrap();
    let r = request(
        addr,
        "DELETE",
        &format!("/admin/api/tokens/{tid}"),
        &[("x-api-key", &admin)],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        world.wait_close(1, secs(5)),
        Some((4002, "Connection token revoked".to_string()))
    );
    let again = FakeWorld::start(addr, WorldConfig::new(&client_id, &token));
    assert_eq!(again.wait_close(1, secs(5)).map(|c| c.0), Some(4002));

    // Unpairing a world closes its link and makes the world unknown to the module's probe.
    let (client_id, token) = pair(addr, &admin, "fp-s");
    let world = FakeWorld::online(addr, &client_id, &token);
    let r = request(
        addr,
        "DELETE",
        &format!("/admin/api/worlds/{client_id}"),
        &[("x-api-key", &admin)],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        world.wait_close(1, secs(5)),
        Some((4002, "Unpaired by owner".to_string()))
    );
    let r = get(addr, &format!("/api/clients/{client_id}/active"), &[]);
    assert_eq!(r.status, 404);
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let admin = admin_key(relay.data_dir());
    let key = create_key(
        addr,
        &admin,
        json!({"name": "slow", "rateLimitPerMinute": 3}),
    );
    for remaining in ["2", "1", "0"] {
        let r = get(addr, "/clients", &[("x-api-key", &key)]);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        assert!(r.header("x-ratelimit-reset").is_some());
    }
    let r = get(addr, "/clients", &[("x-api-key", &key)]);
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r
        .header("retry-after")
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));
    assert_eq!(r.json()["error"], "Too many API requests, please slow down");
    // Other keys are not affected; the admin key gets the default 300.
    let r = get(addr, "/clients", &[("x-api-key", &admin)]);
    assert_eq!(r.header("x-ratelimit-limit"), Some("300"));

    // Pairing: 10 attempts per 15 minutes per IP.
    for _ in 0..10 {
        let r = post_json(addr, "/auth/pair", &[], &pair_body("ZZZZZZ", ""));
        assert_eq!(r.status, 404);
    }
    let r = post_json(addr, "/auth/pair", &[], &pair_body("ZZZZZZ", ""));
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

/// A world copied to a second Foundry server: same worldId, fingerprint and
/// existingClientId, another `serverOrigin`. It gets its own clientId, so both servers stay
/// online side by side; re-pairing from the original origin keeps the original id
/// (relay-protocol.md §5.6). The origin shows in `/clients` and the admin API.
#[test]
fn a_copied_world_on_another_server_gets_its_own_client_id() {
    let dir = TempDir::new("copy");
    let relay = Relay::start_in(dir.path(), &[]);
    let addr = relay.addr();
    let admin = admin_key(dir.path());
    let body = |code: &str, existing: &str, origin: &str| {
        json!({"code": code, "worldId": "campaign", "worldTitle": "Campaign",
               "serverFingerprint": "fp-1", "existingClientId": existing, "serverOrigin": origin})
    };
    let pair_as = |existing: &str, origin: &str| {
        let code = new_code(addr, &admin);
        let r = post_json(addr, "/auth/pair", &[], &body(&code, existing, origin));
        assert_eq!(r.status, 200, "{r:?}");
        let v = r.json();
        (
            v["clientId"].as_str().unwrap_or("").to_owned(),
            v["token"].as_str().unwrap_or("").to_owned(),
        )
    };
    let (original, token) = pair_as("", "https://foundry.example");
    let (copy, copy_token) = pair_as(&original, "http://192.168.1.20:30000/");
    assert_ne!(copy, original, "the copy took the original's clientId");
    let (again, _) = pair_as(&original, "HTTPS://foundry.example/");
    assert_eq!(again, original, "the original server keeps its clientId");

    // Both servers online at once: neither is told 4004.
    let mut cfg = WorldConfig::new(&original, &token);
    cfg.world_id = "campaign".into();
    let a = FakeWorld::start(addr, cfg);
    let mut cfg = WorldConfig::new(&copy, &copy_token);
    cfg.world_id = "campaign".into();
    let b = FakeWorld::start(addr, cfg);
    assert!(a.wait_connected(secs(5)) && b.wait_connected(secs(5)));
    assert!(a.closes().is_empty() && b.closes().is_empty());

    let key = create_key(
        addr,
        &admin,
        json!({"name": "c", "scopes": ["clients:read"]}),
    );
    let clients = get(addr, "/clients", &[("x-api-key", &key)]).json();
    let origin_of = |list: &Value, id: &str| {
        list.as_array()
            .into_iter()
            .flatten()
            .find(|c| c["clientId"] == id)
            .map(|c| c["serverOrigin"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        origin_of(&clients["clients"], &original),
        "https://foundry.example"
    );
    assert_eq!(
        origin_of(&clients["clients"], &copy),
        "http://192.168.1.20:30000"
    );
    let worlds = get(addr, "/admin/api/worlds", &[("x-api-key", &admin)]).json();
    assert_eq!(
        origin_of(&worlds["worlds"], &copy),
        "http://192.168.1.20:30000"
    );
}
