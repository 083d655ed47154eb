//! Cross-world requests end to end (issue 10; relay-protocol.md §5.8): the module's
//! `api.remoteRequest` through two simulated worlds, the "Upgrade" flow that grants the
//! permission, and the admin API that changes it.

mod support;
use support::*;

fn admin(p: &ProvisionedRelay) -> [(&'static str, &str); 1] {
    [("x-api-key", p.keys.admin_key.as_str())]
}

/// World A asks B (through the relay) for `roll`; returns the remote-response A got.
fn remote_roll(a: &FakeWorld, target: &str, rid: &str) -> Value {
    assert!(
        a.send_json(&json!({"type": "remote-request", "requestId": rid,
        "targetClientId": target, "action": "roll", "payload": {"formula": "2d6"},
        "autoStartIfOffline": true}))
    );
    a.wait_message(secs(10), |v| {
        v["type"] == "remote-response" && v["requestId"] == rid
    })
    .unwrap_or_else(|| panic!("no remote-response to {rid}"))
}

#[test]
fn upgrade_grants_cross_world_permission_and_requests_flow() {
    let (p, (b_id, b_token)) = start_provisioned_edited(&[], |st, _| {
        let id = fvtt_relay::ids::new_client_id();
        st.upsert_world(fvtt_relay::store::KnownWorld {
            client_id: id.clone(),
            world_id: "second".into(),
            ..Default::default()
        });
        let (_, tok) = st.create_connection_token(&id, 1);
        (id, tok)
    });
    let addr = p.relay.addr();
    let a_id = p.keys.client_id.clone();
    let a = p.world();
    let b = FakeWorld::online(addr, &b_id, &b_token);

    // Nothing is allowed before the owner grants it.
    let r = remote_roll(&a, &b_id, "rr_1");
    assert_eq!(r["success"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("may not send"),
        "{r}"
    );
    assert!(
        b.messages_of("roll").is_empty(),
        "forwarded without permission"
    );

    // The module's Upgrade button (module-protocol.md §2.2 #1b).
    let req = post_json(
        addr,
        "/auth/pair-request",
        &[],
        &json!({"clientId": a_id, "worldId": "test-world", "worldTitle": "A",
                "upgradeOnly": true}),
    );
    assert_eq!(req.status, 201, "{req:?}");
    let code = req.json()["code"].as_str().unwrap_or("").to_owned();
    let approve = format!("/admin/api/pair-requests/{code}/approve");
    // An approval that grants nothing says so, and the request stays pending.
    let r = post_json(addr, &approve, &admin(&p), &json!({}));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("grants nothing"));
    let st = get(addr, &format!("/auth/pair-request/{code}/status"), &[]).json();
    assert_eq!(st["status"], "pending");
    let r = post_json(
        addr,
        &approve,
        &admin(&p),
        &json!({"allowedTargets": [b_id], "remoteScopes": ["roll:execute"]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["granted"],
        json!({"allowedTargets": [b_id], "remoteScopes": ["roll:execute"]})
    );
    let st = get(addr, &format!("/auth/pair-request/{code}/status"), &[]).json();
    assert_eq!(st, json!({"status": "approved", "upgraded": true}));

    // Now the request reaches B as an ordinary request, and B's reply comes back.
    let r = remote_roll(&a, &b_id, "rr_2");
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["type"], "roll-result");
    assert!(r["data"].get("requestId").is_none(), "{r}");
    let seen = b.messages_of("roll");
    assert_eq!(seen.len(), 1);
    assert_ne!(
        seen[0]["requestId"], "rr_2",
        "the target gets a requestId of the relay's"
    );
    assert_eq!(seen[0]["formula"], "2d6");

    // The admin page (and CLI) can change the grant: without the scope it is refused again.
    let r = send_json(
        addr,
        "PATCH",
        &format!("/admin/api/worlds/{a_id}"),
        &admin(&p),
        &json!({"remoteScopes": ["chat:read"]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["allowedTargets"], json!([b_id]));
    let r = remote_roll(&a, &b_id, "rr_3");
    assert!(
        r["error"].as_str().unwrap_or("").contains("roll:execute"),
        "{r}"
    );
    // A world can never target itself.
    let r = send_json(
        addr,
        "PATCH",
        &format!("/admin/api/worlds/{a_id}"),
        &admin(&p),
        &json!({"allowedTargets": [a_id]}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    // The grants survive in the admin view.
    let worlds = get(addr, "/admin/api/worlds", &admin(&p)).json();
    let wa = worlds["worlds"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["clientId"] == a_id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(wa["remoteScopes"], json!(["chat:read"]));
    // An offline target is a clear error at once.
    let r = send_json(
        addr,
        "PATCH",
        &format!("/admin/api/worlds/{a_id}"),
        &admin(&p),
        &json!({"remoteScopes": ["roll:execute"]}),
    );
    assert_eq!(r.status, 200);
    drop(b);
    assert!(wait_for(secs(5), || {
        get(addr, &format!("/api/clients/{b_id}/active"), &[]).json()["active"] == false
    }));
    let r = remote_roll(&a, &b_id, "rr_4");
    assert!(
        r["error"].as_str().unwrap_or("").contains("not connected"),
        "{r}"
    );
}
