//! `/mcp` driven by the official MCP SDK clients (TypeScript `@modelcontextprotocol/sdk` and
//! Python `mcp`) against the real binary and the simulated world: initialize, list tools,
//! resources and prompts, read and write tools, progress over SSE, a resource subscription
//! updated by a world event, a scope refusal, the world going offline mid-call, session end.
//!
//! The clients are installed by `make mcp-deps` under target/ (target/mcp-node,
//! target/mcp-venv). Without them a test prints SKIPPED, except under CI (`CI` set), where a
//! missing client is a failure.

mod support;
use support::*;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;

fn target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is not installed (run `make mcp-deps`)");
    }
    eprintln!("SKIPPED: {what} is not installed (run `make mcp-deps`)");
}

/// Runs `cmd` (which prints JSON lines) against a relay with one world online and a reader
/// key, reacting to its steps; returns the steps by name.
fn drive(mut cmd: Command) -> (Steps, String) {
    let r = start_provisioned_with(&[], &[(&["entity:read"], &[])]);
    let world = r.world();
    // world_info never answers: the script's last call meets the world going away.
    world.set_silent("world-info", true);
    let url = r.relay.url("/mcp");
    let mut child = cmd
        .args([&url, r.key(), &r.keys.extra_keys[0], &r.keys.client_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the MCP client");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut steps = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + secs(90);
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            eprintln!("client: {line}");
            continue;
        };
        let step = v["step"].as_str().unwrap_or("").to_string();
        match step.as_str() {
            "subscribed" => {
                assert!(
                    world.wait_subscription("chat-events", secs(10), |n| n >= 1),
                    "module asked for chat"
                );
                world.emit_event("chat-event", chat_event_create("m1", "a new message"));
            }
            "offline_call" => {
                assert!(world.wait_request("world-info", secs(10)).is_some());
                world.drop_connection();
            }
            "error" => panic!("client failed: {}", v["message"]),
            _ => {}
        }
        let done = step == "done";
        steps.insert(step, v);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (steps, r.keys.client_id.clone())
}

type Steps = std::collections::HashMap<String, Value>;

fn check((steps, client_id): &(Steps, String)) {
    let client_id_of = || client_id.clone();
    let s = |k: &str| {
        steps
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no step {k}: {steps:?}"))
    };
    assert_eq!(s("init")["version"], "2025-11-25", "{:?}", s("init"));
    assert_eq!(s("init")["server"], "fvtt-relay");
    assert_eq!(s("init")["session"].as_str().map(str::len), Some(32));
    let tools = s("tools")["names"].clone();
    let has = |n: &str| tools.as_array().is_some_and(|a| a.iter().any(|x| x == n));
    for t in [
        "search",
        "get_entity",
        "roll_dice",
        "send_chat",
        "move_token",
        "next_turn",
    ] {
        assert!(has(t), "tool {t} in {tools}");
    }
    assert!(
        !has("execute_js"),
        "code tools are off without --mcp-allow-code"
    );
    let uris = s("resources")["uris"].to_string();
    assert!(uris.contains("foundry://worlds\""), "{uris}");
    assert!(
        uris.contains(&format!("foundry://worlds/{}/chat", client_id_of())),
        "{uris}"
    );
    assert!(s("prompts")["names"]
        .to_string()
        .contains("prepare_encounter"));
    assert!(s("prompts")["text"]
        .as_str()
        .unwrap_or("")
        .contains("read_chat"));
    assert_eq!(s("roll")["isError"], false);
    assert_eq!(s("roll")["total"], 7);
    assert_eq!(s("read")["name"], "Test Actor");
    assert_eq!(s("write")["isError"], false);
    assert!(s("write")["text"]
        .as_str()
        .unwrap_or("")
        .contains("hello from"));
    assert_eq!(s("progress")["isError"], false);
    assert!(
        s("progress")["progress"].as_u64().unwrap_or(0) >= 1,
        "{:?}",
        s("progress")
    );
    assert_eq!(
        s("updated")["uri"],
        format!("foundry://worlds/{}/chat", client_id_of())
    );
    assert_eq!(s("resource")["hasMessages"], true);
    assert_eq!(s("scope")["isError"], true);
    assert!(s("scope")["text"]
        .as_str()
        .unwrap_or("")
        .contains("roll:execute"));
    assert_eq!(s("offline")["isError"], true);
    assert!(
        s("offline")["text"]
            .as_str()
            .unwrap_or("")
            .contains("disconnected"),
        "{:?}",
        s("offline")
    );
    assert_eq!(s("ended")["status"], 404);
    assert!(steps.contains_key("done"));
}

#[test]
fn typescript_sdk_client() {
    let dir = target().join("mcp-node");
    let sdk = dir.join("node_modules/@modelcontextprotocol/sdk/package.json");
    if !sdk.exists() || Command::new("node").arg("--version").output().is_err() {
        return missing("node with @modelcontextprotocol/sdk");
    }
    let mut cmd = Command::new("node");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mcp/sdk_client.mjs"
    ))
    .env("MCP_NODE_DIR", &dir);
    check(&drive(cmd));
}

#[test]
fn python_sdk_client() {
    let py = target().join("mcp-venv/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import mcp"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        return missing("the Python mcp package (target/mcp-venv)");
    }
    let mut cmd = Command::new(py);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mcp/sdk_client.py"
    ));
    check(&drive(cmd));
}

/// The transport rules with a plain HTTP client (no SDK needed): key, Origin, session id,
/// protocol version header, preflight, the GET stream and DELETE.
#[test]
fn transport_rules_over_raw_http() {
    let r = start_provisioned(&[]);
    let addr = r.relay.addr();
    let key = r.key().to_string();
    let accept = ("Accept", "application/json, text/event-stream");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}});

    let no_key = post_json(addr, "/mcp", &[accept], &init);
    assert_eq!(no_key.status, 401);
    assert!(no_key.header("www-authenticate").is_some());
    let rebinding = post_json(
        addr,
        "/mcp",
        &[
            accept,
            ("x-api-key", &key),
            ("Origin", &format!("http://{addr}")),
        ],
        &init,
    );
    assert_eq!(rebinding.status, 200, "a loopback origin is a local client");
    let evil = post_json(
        addr,
        "/mcp",
        &[
            accept,
            ("x-api-key", &key),
            ("Origin", "http://evil.example"),
        ],
        &init,
    );
    assert_eq!(evil.status, 403);

    let bearer = format!("Bearer {key}");
    let ok = post_json(addr, "/mcp", &[accept, ("Authorization", &bearer)], &init);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["result"]["protocolVersion"], "2025-06-18");
    let sid = ok.header("mcp-session-id").unwrap_or_default().to_string();
    assert_eq!(sid.len(), 32);

    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let bad_version = post_json(
        addr,
        "/mcp",
        &[
            accept,
            ("x-api-key", &key),
            ("Mcp-Session-Id", &sid),
            ("MCP-Protocol-Version", "1999-01-01"),
        ],
        &ping,
    );
    assert_eq!(bad_version.status, 400);
    let pong = post_json(
        addr,
        "/mcp",
        &[
            accept,
            ("x-api-key", &key),
            ("Mcp-Session-Id", &sid),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        &ping,
    );
    assert_eq!(
        (pong.status, pong.json()["result"].clone()),
        (200, json!({}))
    );

    let pre = request(
        addr,
        "OPTIONS",
        "/mcp",
        &[("Origin", "http://localhost:6274")],
        None,
    );
    assert_eq!(pre.status, 204);
    let allowed = pre
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(allowed.contains("mcp-session-id") && allowed.contains("mcp-protocol-version"));

    // The server-to-client stream opens, and ends when the session does.
    let mut stream = SseClient::connect(
        addr,
        "/mcp",
        &[
            ("x-api-key", &key),
            ("Mcp-Session-Id", &sid),
            ("Accept", "text/event-stream"),
        ],
    )
    .expect("GET /mcp stream");
    let del = request(
        addr,
        "DELETE",
        "/mcp",
        &[("x-api-key", &key), ("Mcp-Session-Id", &sid)],
        None,
    );
    assert_eq!(del.status, 204);
    assert!(
        stream.wait_ended(secs(5)),
        "the stream ends with its session"
    );
    let gone = post_json(
        addr,
        "/mcp",
        &[accept, ("x-api-key", &key), ("Mcp-Session-Id", &sid)],
        &ping,
    );
    assert_eq!(gone.status, 404);
}
