//! The owner's subcommands, with the relay stopped (state file under the lock) and running
//! (its admin API on loopback).

mod support;
use support::*;

use std::path::Path;
use std::process::{Command, Output};

fn cli(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(relay_binary())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run fvtt-relay");
    out
}

/// Run, expect success, return stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = cli(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn help_for_every_command() {
    let dir = TempDir::new("cli-help");
    for cmd in [
        &["key"][..],
        &["pair"],
        &["worlds"],
        &["unpair"],
        &["admin-key"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = ok(dir.path(), &args);
        assert!(
            out.contains("Usage: fvtt-relay") && out.contains("--data-dir"),
            "{cmd:?}: {out}"
        );
    }
    let out = cli(dir.path(), &["key", "frob"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli(dir.path(), &["key", "create"]);
    assert_eq!(out.status.code(), Some(2), "--name is required");
}

#[test]
fn stopped_mode_edits_the_state_file() {
    let dir = TempDir::new("cli-stopped");
    let d = dir.path();
    // No relay has run yet: there is no admin key to print, but one can be made.
    assert_eq!(cli(d, &["admin-key"]).status.code(), Some(1));
    let admin = ok(d, &["admin-key", "--rotate"]).trim().to_string();
    assert!(is_key(&admin));
    assert_eq!(ok(d, &["admin-key"]).trim(), admin);

    let key = ok(d, &["key", "create", "--name", "offline bot"])
        .trim()
        .to_string();
    assert!(is_key(&key), "{key:?}");
    let json_out = ok(
        d,
        &[
            "key", "create", "--name", "gone", "--scopes", "all", "--json",
        ],
    );
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["scopes"].as_array().map(Vec::len), Some(32));
    let gone_id = v["id"].as_str().unwrap().to_string();
    let gone_key = v["key"].as_str().unwrap().to_string();
    let list = ok(d, &["key", "list"]);
    assert!(
        list.contains("offline bot") && list.contains(&gone_id),
        "{list}"
    );
    assert!(
        !list.contains(&key) && !list.contains(&gone_key),
        "list leaked a secret"
    );
    ok(d, &["key", "revoke", &gone_id]);
    assert_eq!(cli(d, &["key", "revoke", &gone_id]).status.code(), Some(1));
    let code = ok(d, &["pair"]).trim().to_string();
    assert_eq!(code.len(), 6, "{code:?}");
    assert!(ok(d, &["worlds"]).starts_with("CLIENT ID"));

    // The relay starts on that state: the key works, the revoked one does not, the code pairs.
    let relay = Relay::start_in(d, &[]);
    let addr = relay.addr();
    assert_eq!(get(addr, "/clients", &[("x-api-key", &key)]).status, 200);
    assert_eq!(
        get(addr, "/clients", &[("x-api-key", &gone_key)]).status,
        401
    );
    assert_eq!(
        get(addr, "/admin/api/keys", &[("x-api-key", &admin)]).status,
        200
    );
    let r = post_json(
        addr,
        "/auth/pair",
        &[],
        &json!({"code": code, "worldId": "w"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    drop(relay);
    let client_id = r.json()["clientId"].as_str().unwrap().to_string();
    let worlds = ok(d, &["worlds", "--json"]);
    assert!(worlds.contains(&client_id));
    // Cross-world permission on the stopped relay's state file.
    let g = ok(
        d,
        &[
            "worlds",
            "grant",
            &client_id,
            "--targets",
            "*",
            "--scopes",
            "roll:execute",
        ],
    );
    assert_eq!(
        g.trim(),
        format!("{client_id}: targets *; scopes roll:execute")
    );
    let g = ok(d, &["worlds", "grant", &client_id, "--targets", ""]);
    assert_eq!(
        g.trim(),
        format!("{client_id}: targets none; scopes roll:execute")
    );
    let bad = cli(d, &["worlds", "grant", &client_id, "--targets", &client_id]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("its own"));
    ok(d, &["unpair", &client_id]);
    assert!(!ok(d, &["worlds"]).contains(&client_id));
}

#[test]
fn running_mode_goes_through_the_admin_api() {
    let dir = TempDir::new("cli-running");
    let d = dir.path();
    let relay = Relay::start_in(d, &[]);
    let addr = relay.addr();
    assert!(d.join("relay.addr").exists());

    let admin = ok(d, &["admin-key"]).trim().to_string();
    assert!(is_key(&admin));
    let out = ok(
        d,
        &[
            "key",
            "create",
            "--name",
            "live",
            "--scopes",
            "clients:read,search",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let key = v["key"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["scopes"], json!(["clients:read", "search"]));
    assert_eq!(get(addr, "/clients", &[("x-api-key", &key)]).status, 200);
    assert!(ok(d, &["key", "list"]).contains(&id));
    ok(d, &["key", "revoke", &id]);
    assert_eq!(get(addr, "/clients", &[("x-api-key", &key)]).status, 401);
    let out = cli(d, &["key", "revoke", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    let code = ok(d, &["pair"]).trim().to_string();
    let r = post_json(
        addr,
        "/auth/pair",
        &[],
        &json!({"code": code, "worldId": "w", "serverOrigin": "https://foundry.example"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let client_id = r.json()["clientId"].as_str().unwrap().to_string();
    let token = r.json()["token"].as_str().unwrap().to_string();
    let world = FakeWorld::online(addr, &client_id, &token);
    let worlds = ok(d, &["worlds"]);
    assert!(
        worlds.contains(&client_id)
            && worlds.contains("yes")
            && worlds.contains("https://foundry.example"),
        "{worlds}"
    );
    // Cross-world permission through the running relay's admin API.
    let g = ok(
        d,
        &[
            "worlds",
            "grant",
            &client_id,
            "--targets",
            "*",
            "--scopes",
            "roll:execute",
            "--json",
        ],
    );
    let g: Value = serde_json::from_str(&g).expect("json");
    assert_eq!(g["allowedTargets"], json!(["*"]));
    let admin_worlds = get(addr, "/admin/api/worlds", &[("x-api-key", &admin)]).json();
    assert_eq!(
        admin_worlds["worlds"][0]["remoteScopes"],
        json!(["roll:execute"])
    );
    ok(d, &["unpair", &client_id]);
    assert_eq!(world.wait_close(1, secs(5)).map(|c| c.0), Some(4002));

    let new_admin = ok(d, &["admin-key", "--rotate"]).trim().to_string();
    assert_ne!(new_admin, admin);
    assert_eq!(ok(d, &["admin-key"]).trim(), new_admin);
    assert_eq!(
        get(addr, "/admin/api/keys", &[("x-api-key", &admin)]).status,
        401
    );
    assert_eq!(
        get(addr, "/admin/api/keys", &[("x-api-key", &new_admin)]).status,
        200
    );
}
