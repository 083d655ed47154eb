//! The admin API: every route, sign-in sessions, the cookie + CSRF rules, 401/403, and the
//! pages' headers (relay-protocol.md §6.4).

mod support;
use support::*;

use std::net::SocketAddr;

fn admin_key(relay: &Relay) -> String {
    std::fs::read_to_string(relay.data_dir().join("admin.key"))
        .expect("admin.key")
        .trim()
        .to_string()
}

/// Sign in; returns (cookie "fvtt_admin=…", csrf token, the raw Set-Cookie).
fn login(addr: SocketAddr, key: &str) -> (String, String, String) {
    let r = post_json(addr, "/admin/api/login", &[], &json!({"key": key}));
    assert_eq!(r.status, 200, "{r:?}");
    let set = r.header("set-cookie").expect("Set-Cookie").to_string();
    let cookie = set.split(';').next().unwrap().trim().to_string();
    let csrf = r.json()["csrfToken"].as_str().unwrap().to_string();
    (cookie, csrf, set)
}

#[test]
fn sign_in_session_and_csrf() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let key = admin_key(&relay);

    let r = post_json(addr, "/admin/api/login", &[], &json!({"key": "wrong"}));
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"error": "Invalid admin key"}))
    );

    let (cookie, csrf, set) = login(addr, &key);
    assert!(
        cookie.starts_with("fvtt_admin=") && cookie.len() > 40,
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(
        !set.contains("Secure"),
        "plain http must not set Secure: {set}"
    );

    let c = [("Cookie", cookie.as_str())];
    let r = get(addr, "/admin/api/session", &c);
    assert_eq!(r.json(), json!({"signedIn": true, "csrfToken": csrf}));
    // Signed out is an answer (200), not an error: the page logs no failed request.
    let out = get(addr, "/admin/api/session", &[]);
    assert_eq!(out.status, 200);
    assert_eq!(out.json(), json!({"signedIn": false}));
    // A stale cookie (expired, or the relay restarted) comes back with the reason.
    let stale = get(addr, "/admin/api/session", &[("Cookie", "fvtt_admin=nope")]);
    assert_eq!(stale.status, 200);
    assert_eq!(stale.json()["signedIn"], json!(false));
    assert!(
        stale.json()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("session has ended")),
        "{stale:?}"
    );
    assert_eq!(get(addr, "/admin/api/keys", &c).status, 200);

    // State changes by cookie need the CSRF token.
    let body = json!({"name": "from-page"});
    let r = post_json(addr, "/admin/api/keys", &c, &body);
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"error": "Invalid CSRF token"}))
    );
    let bad = [("Cookie", cookie.as_str()), ("X-CSRF-Token", "x")];
    assert_eq!(post_json(addr, "/admin/api/keys", &bad, &body).status, 403);
    let good = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let r = post_json(addr, "/admin/api/keys", &good, &body);
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = request(addr, "DELETE", &format!("/admin/api/keys/{id}"), &c, None);
    assert_eq!(r.status, 403);
    let r = request(
        addr,
        "DELETE",
        &format!("/admin/api/keys/{id}"),
        &good,
        None,
    );
    assert_eq!(r.status, 200);

    // The admin key needs no CSRF token, in either header form.
    let r = post_json(addr, "/admin/api/keys", &[("x-api-key", &key)], &body);
    assert_eq!(r.status, 201);
    let bearer = format!("Bearer {key}");
    let r = post_json(
        addr,
        "/admin/api/keys",
        &[("Authorization", &bearer)],
        &body,
    );
    assert_eq!(r.status, 201);

    // Logout (CSRF) ends the session.
    assert_eq!(
        request(addr, "POST", "/admin/api/logout", &c, None).status,
        403
    );
    let r = request(addr, "POST", "/admin/api/logout", &good, None);
    assert_eq!(r.status, 204);
    assert!(r
        .header("set-cookie")
        .is_some_and(|s| s.contains("Max-Age=0")));
    assert_eq!(
        get(addr, "/admin/api/session", &c).json()["signedIn"],
        json!(false)
    );
    assert_eq!(get(addr, "/admin/api/keys", &c).status, 401);
}

#[test]
fn auth_failures() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let key = admin_key(&relay);
    let r = post_json(
        addr,
        "/admin/api/keys",
        &[("x-api-key", &key)],
        &json!({"name": "s"}),
    );
    let scoped = r.json()["key"].as_str().unwrap().to_string();
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![], 401),
        (vec![("x-api-key", "0000")], 401),
        (vec![("x-api-key", &scoped)], 403),
        (vec![("x-api-key", &key)], 200),
    ];
    for path in [
        "/admin/api/worlds",
        "/admin/api/keys",
        "/admin/api/tokens",
        "/admin/api/pair-requests",
        "/admin/api/scopes",
    ] {
        for (headers, status) in &cases {
            let r = get(addr, path, headers);
            assert_eq!(r.status, *status, "{path} {headers:?}: {r:?}");
            assert_eq!(r.header("access-control-allow-origin"), None, "{path}");
        }
    }
    let r = get(addr, "/admin/api/nope", &[("x-api-key", &key)]);
    assert_eq!(r.status, 404);
    // A scoped key never reaches admin routes, even for reading.
    let r = post_json(
        addr,
        "/admin/api/pairing-codes",
        &[("x-api-key", &scoped)],
        &json!({}),
    );
    assert_eq!(r.status, 403);
}

#[test]
fn every_route_and_shapes() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    let key = admin_key(&relay);
    let k = [("x-api-key", key.as_str())];

    let s = get(addr, "/admin/api/scopes", &k).json();
    assert_eq!(s["all"].as_array().map(Vec::len), Some(32));
    assert_eq!(s["default"].as_array().map(Vec::len), Some(17));

    // Keys: defaults, explicit fields, secret shown once, never listed.
    let r = post_json(addr, "/admin/api/keys", &k, &json!({"name": "bot"}));
    assert_eq!(r.status, 201);
    let created = r.json();
    let secret = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["scopes"].as_array().map(Vec::len), Some(17));
    assert_eq!(created["prefix"].as_str(), Some(&secret[..6]));
    let r = post_json(
        addr,
        "/admin/api/keys",
        &k,
        &json!({"name": "full", "scopes": ["chat:read", "roll:execute"], "clientIds": ["fvtt_a"],
                "userId": "u1", "expiresInDays": 2, "rateLimitPerMinute": 60}),
    );
    let full = r.json();
    assert_eq!(full["scopes"], json!(["chat:read", "roll:execute"]));
    assert_eq!(full["clientIds"], json!(["fvtt_a"]));
    assert_eq!(full["userId"], "u1");
    assert_eq!(full["rateLimitPerMinute"], 60);
    let exp = full["expiresAt"].as_u64().unwrap() - full["createdAt"].as_u64().unwrap();
    assert_eq!(exp, 2 * 86_400_000);
    let r = post_json(
        addr,
        "/admin/api/keys",
        &k,
        &json!({"name": "x", "scopes": ["root"]}),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("Invalid scope: root"))
    );
    let r = post_json(addr, "/admin/api/keys", &k, &json!({"scopes": ["search"]}));
    assert_eq!(r.status, 400);
    let list = get(addr, "/admin/api/keys", &k);
    assert!(!list.text().contains(&secret), "a listing leaked a key");
    let keys = list.json()["keys"].as_array().cloned().unwrap();
    assert_eq!(keys.len(), 2);
    for field in [
        "id",
        "name",
        "prefix",
        "scopes",
        "clientIds",
        "userId",
        "expiresAt",
        "rateLimitPerMinute",
        "createdAt",
        "lastUsedAt",
    ] {
        assert!(keys[0].get(field).is_some(), "keys lack {field}");
    }
    let r = request(addr, "DELETE", "/admin/api/keys/key_nope", &k, None);
    assert_eq!(r.status, 404);

    // Pairing codes, then worlds and tokens after a pairing.
    let r = post_json(addr, "/admin/api/pairing-codes", &k, &json!({}));
    assert_eq!(r.status, 201);
    let code = r.json();
    assert_eq!(code["expiresIn"], 600);
    assert!(code["expiresAt"].as_u64().is_some());
    let r = post_json(
        addr,
        "/auth/pair",
        &[],
        &json!({"code": code["code"], "worldId": "w", "worldTitle": "W", "serverFingerprint": "f"}),
    );
    let client_id = r.json()["clientId"].as_str().unwrap().to_string();
    let token = r.json()["token"].as_str().unwrap().to_string();
    let _world = FakeWorld::online(addr, &client_id, &token);
    let worlds = get(addr, "/admin/api/worlds", &k).json();
    let w = &worlds["worlds"][0];
    assert_eq!(w["clientId"], client_id.as_str());
    assert_eq!(w["isOnline"], true);
    assert_eq!(w["systemId"], "dnd5e");
    for field in [
        "worldId",
        "worldTitle",
        "systemTitle",
        "systemVersion",
        "foundryVersion",
        "customName",
        "connectedSince",
        "lastSeen",
        "pairedAt",
    ] {
        assert!(w.get(field).is_some(), "worlds lack {field}");
    }
    let r = post_json(
        addr,
        "/admin/api/pairing-codes",
        &k,
        &json!({"clientId": "fvtt_unknown"}),
    );
    assert_eq!(r.status, 404);
    let r = post_json(
        addr,
        "/admin/api/pairing-codes",
        &k,
        &json!({"clientId": client_id}),
    );
    assert_eq!(r.status, 201);

    let tokens = get(addr, "/admin/api/tokens", &k).json();
    let t = &tokens["tokens"][0];
    assert_eq!(t["clientId"], client_id.as_str());
    assert_eq!(t["allowedIps"], json!([]));
    assert!(!tokens.to_string().contains(&token));
    let tid = t["id"].as_str().unwrap().to_string();
    let r = send_json(
        addr,
        "PATCH",
        &format!("/admin/api/tokens/{tid}"),
        &k,
        &json!({"allowedIps": ["bogus"]}),
    );
    assert_eq!(r.status, 400);
    let r = send_json(
        addr,
        "PATCH",
        &format!("/admin/api/tokens/{tid}"),
        &k,
        &json!({"allowedIps": ["127.0.0.0/8"]}),
    );
    assert_eq!(
        (r.status, r.json()["allowedIps"].clone()),
        (200, json!(["127.0.0.0/8"]))
    );
    assert_eq!(
        request(addr, "DELETE", "/admin/api/tokens/tok_nope", &k, None).status,
        404
    );
    assert_eq!(
        request(addr, "DELETE", "/admin/api/worlds/fvtt_nope", &k, None).status,
        404
    );

    // Pair requests: unknown, then one.
    assert_eq!(
        get(addr, "/admin/api/pair-requests/NOPE1234", &k).status,
        404
    );
    assert_eq!(
        get(addr, "/admin/api/pair-requests", &k).json(),
        json!({"requests": []})
    );
    let r = post_json(
        addr,
        "/admin/api/pair-requests/NOPE1234/approve",
        &k,
        &json!({}),
    );
    assert_eq!(r.status, 404);
}

#[test]
fn pages_carry_security_headers() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    for (path, ctype) in [
        ("/admin", "text/html"),
        ("/admin/", "text/html"),
        ("/pair/ABCDEFGH", "text/html"),
        ("/admin/app.js", "text/javascript"),
        ("/admin/app.css", "text/css"),
        ("/admin/api/session", "application/json"),
    ] {
        let r = get(addr, path, &[]);
        assert!(r.status == 200 || r.status == 401, "{path}: {r:?}");
        assert!(
            r.header("content-type").unwrap_or("").starts_with(ctype),
            "{path}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(r.header("referrer-policy").is_some(), "{path}");
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(
            csp.starts_with("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
}

#[test]
fn secure_cookie_and_public_urls_with_https() {
    let relay = Relay::start(&["--public-url", "https://relay.example.com"]);
    let addr = relay.addr();
    let key = admin_key(&relay);
    let (_, _, set) = login(addr, &key);
    assert!(set.contains("; Secure"), "{set}");
    let r = post_json(addr, "/auth/pair-request", &[], &json!({"worldId": "w"}));
    let code = r.json()["code"].as_str().unwrap().to_string();
    assert_eq!(
        r.json()["pairUrl"],
        format!("https://relay.example.com/pair/{code}")
    );
    let r = post_json(
        addr,
        "/admin/api/pairing-codes",
        &[("x-api-key", &key)],
        &json!({}),
    );
    let r = post_json(
        addr,
        "/auth/pair",
        &[],
        &json!({"code": r.json()["code"], "worldId": "w"}),
    );
    assert_eq!(r.json()["relayUrl"], "wss://relay.example.com/relay");
}

#[test]
fn sign_in_is_rate_limited() {
    let relay = Relay::start(&[]);
    let addr = relay.addr();
    for _ in 0..10 {
        let r = post_json(addr, "/admin/api/login", &[], &json!({"key": "guess"}));
        assert_eq!(r.status, 401);
    }
    let r = post_json(
        addr,
        "/admin/api/login",
        &[],
        &json!({"key": admin_key(&relay)}),
    );
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").is_some());
}

/// A relay restart keeps the owner signed in: sessions are in the state file, hashed, with
/// the same expiry; the CSRF token still works; the cookie value is nowhere in the file.
#[test]
fn sessions_survive_a_restart_and_are_stored_hashed() {
    let dir = TempDir::new("data");
    let relay = Relay::start_in(dir.path(), &[]);
    let key = admin_key(&relay);
    let (cookie, csrf, _) = login(relay.addr(), &key);
    let mut relay = relay;
    relay.sigterm();
    assert!(relay.wait_exit(secs(10)).is_some());
    let sid = cookie.trim_start_matches("fvtt_admin=").to_string();
    let state = std::fs::read_to_string(dir.path().join("state.json")).expect("state.json");
    assert!(state.contains("admin_sessions"), "{state}");
    assert!(
        !state.contains(&sid),
        "the session cookie is in the state file"
    );
    assert!(
        !state.contains(&csrf),
        "the CSRF token is in the state file"
    );

    let relay = Relay::start_in_when_free(dir.path(), &[]);
    let addr = relay.addr();
    let c = [("Cookie", cookie.as_str())];
    let r = get(addr, "/admin/api/session", &c);
    assert_eq!(r.json(), json!({"signedIn": true, "csrfToken": csrf}));
    let good = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let r = post_json(
        addr,
        "/admin/api/keys",
        &good,
        &json!({"name": "after-restart"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    // Signing out ends it for good, across a restart too.
    assert_eq!(
        request(addr, "POST", "/admin/api/logout", &good, None).status,
        204
    );
    let mut relay = relay;
    relay.sigterm();
    assert!(relay.wait_exit(secs(10)).is_some());
    let relay = Relay::start_in_when_free(dir.path(), &[]);
    let r = get(relay.addr(), "/admin/api/session", &c);
    assert_eq!(r.json()["signedIn"], json!(false), "{r:?}");
}
