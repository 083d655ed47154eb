//! Issue 4 end to end: every public route of routes.tsv through a connected simulated world,
//! the relay-local routes, the binary routes, and one test per error case of the REST API.
//!
//! Requests are derived from routes.tsv itself (parsed here independently of the relay's own
//! parser): each required parameter gets a plausible value of its declared type from its
//! first source, and the "one of a|b required" notes get their first name filled in.

mod support;
use support::*;

use std::collections::HashSet;

const ROUTES_TSV: &str = include_str!("../src/relay/routes.tsv");

/// One routes.tsv row, as far as these tests need it.
#[derive(Clone, Debug)]
struct Row {
    method: String,
    path: String,
    ws_type: String,
    kind: String,
    /// (name, sources, required, type)
    params: Vec<(String, Vec<String>, bool, String)>,
    timeout_ms: u64,
    notes: String,
}

fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    for line in ROUTES_TSV.lines().skip(1).filter(|l| !l.is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        assert_eq!(c.len(), 9, "routes.tsv row {line:?}");
        let params = if c[6].is_empty() {
            vec![]
        } else {
            c[6].split(';')
                .map(|p| {
                    let f: Vec<&str> = p.split(':').collect();
                    assert_eq!(f.len(), 4, "param {p:?}");
                    (
                        f[0].to_string(),
                        f[1].split('|').map(str::to_string).collect(),
                        f[2] == "required",
                        f[3].to_string(),
                    )
                })
                .collect()
        };
        out.push(Row {
            method: c[0].into(),
            path: c[1].into(),
            ws_type: c[2].into(),
            kind: c[5].into(),
            params,
            timeout_ms: c[7].parse().unwrap_or(0),
            notes: c[8].into(),
        });
    }
    out
}

fn rows_of(kind: &str) -> Vec<Row> {
    rows().into_iter().filter(|r| r.kind == kind).collect()
}

/// A plausible value for a parameter, by name first, then by declared type.
fn value_for(name: &str, ty: &str) -> Value {
    match (name, ty) {
        ("uuid" | "actorUuid" | "fromUuid" | "toUuid", _) => json!("Actor.V5OF1QXHjaIy6iO8"),
        ("documentType", _) => json!("tokens"),
        ("entityType", _) => json!("Actor"),
        ("formula", _) => json!("1d20"),
        ("script", _) => json!("return 1;"),
        ("path", _) => json!("rest-api-tests/test-file.txt"),
        ("filename", _) => json!("test-file.txt"),
        ("fileData", _) => json!("data:text/plain;base64,SGVsbG8="),
        ("folderType", _) => json!("Scene"),
        // The simulated world's GM user.
        ("id", _) => json!("cpvaGKk3hgoBCzCS"),
        (_, "number") => json!(3),
        (_, "boolean") => json!(true),
        (_, "array") => json!(["Actor.V5OF1QXHjaIy6iO8"]),
        (_, "object") => json!({"name": "test-data"}),
        (n, _) => json!(format!("test-{n}")),
    }
}

/// The names a "one of a|b|c required" note asks for (the first is filled in).
fn one_of(notes: &str) -> Option<Vec<String>> {
    let rest = &notes[notes.find("one of ")? + "one of ".len()..];
    let list = rest.split_whitespace().next()?;
    Some(list.split('|').map(str::to_string).collect())
}

/// A valid request for `row`: the path with its params filled, the query and the JSON body.
struct Call {
    path: String,
    body: Option<Value>,
    /// Parameters the module must receive with these values.
    expect: Vec<(String, Value)>,
}

fn valid_call(row: &Row, extra_query: &[(&str, &str)]) -> Call {
    let mut path = row.path.clone();
    let mut query: Vec<(String, String)> = vec![];
    let mut body = serde_json::Map::new();
    let mut expect = vec![];
    let mut wanted: Vec<&(String, Vec<String>, bool, String)> =
        row.params.iter().filter(|p| p.2).collect();
    if let Some(names) = one_of(&row.notes) {
        if let Some(p) = row.params.iter().find(|p| p.0 == names[0]) {
            if !p.2 {
                wanted.push(p);
            }
        }
    }
    for (name, sources, _, ty) in wanted {
        let v = value_for(name, ty);
        // GET never reads a body: a body source on GET is read from the query.
        let source = if row.method == "GET" && sources.iter().any(|s| s == "query") {
            "query"
        } else if ty == "object" && sources.iter().any(|s| s == "body") {
            "body"
        } else {
            sources[0].as_str()
        };
        match source {
            "path" => {
                let text = v.as_str().map(str::to_string).unwrap_or(v.to_string());
                path = path.replace(&format!("{{{name}}}"), &percent_encode(&text));
            }
            "query" => {
                let text = match &v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                query.push((name.clone(), text));
            }
            "body" => {
                body.insert(name.clone(), v.clone());
            }
            other => panic!("{} {}: unexpected source {other}", row.method, row.path),
        }
        expect.push((name.clone(), v));
    }
    for (k, v) in extra_query {
        query.push((k.to_string(), v.to_string()));
    }
    if !query.is_empty() {
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        path = format!("{path}?{}", form_query(&pairs));
    }
    let body = (row.method != "GET").then_some(Value::Object(body));
    Call { path, body, expect }
}

fn call(p: &ProvisionedRelay, method: &str, c: &Call, key: &str) -> RawResponse {
    let h = [("x-api-key", key)];
    match &c.body {
        Some(b) => send_json(p.relay.addr(), method, &c.path, &h, b),
        None => request(p.relay.addr(), method, &c.path, &h, None),
    }
}

fn assert_cors(r: &RawResponse, what: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "{what}: CORS origin\n{r:?}"
    );
    assert!(
        r.header("access-control-expose-headers")
            .is_some_and(|h| h.contains("Content-Disposition")),
        "{what}: exposed headers\n{r:?}"
    );
}

/// The reply the world sent for `request_id`, serialized as it went on the wire. The world
/// records a message just after writing it, so the relay's answer can overtake the record:
/// wait a little for it.
fn sent_reply(world: &FakeWorld, request_id: &str) -> Option<Value> {
    let mut found = None;
    wait_for(secs(2), || {
        found = world
            .sent()
            .into_iter()
            .find(|v| v["requestId"] == request_id);
        found.is_some()
    });
    found
}

// ------------------------------------------------------------------------- every route

#[test]
fn routes_tsv_has_the_documented_counts() {
    let all = rows();
    let count = |k: &str| all.iter().filter(|r| r.kind == k).count();
    assert_eq!(count("forward"), 88);
    assert_eq!(count("binary"), 3);
    assert_eq!(count("sse"), 6);
    assert_eq!(count("session"), 4);
}

#[test]
fn every_forward_route_reaches_the_world_and_comes_back_verbatim() {
    let p = start_provisioned(&[]);
    let world = p.world();
    let mut ids = HashSet::new();
    let mut covered = 0;
    for row in rows_of("forward") {
        let what = format!("{} {}", row.method, row.path);
        let c = valid_call(&row, &[]);
        let from = world.received_len();
        let r = call(&p, &row.method, &c, &p.keys.api_key);
        assert_eq!(r.status, 200, "{what} {}: {r:?}", c.path);
        assert_cors(&r, &what);
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: content-type\n{r:?}"
        );
        let v = r.json();
        assert_eq!(v["type"], format!("{}-result", row.ws_type), "{what}: {v}");
        let rid = v["requestId"].as_str().unwrap_or_default().to_string();
        // The module saw exactly this request, with the relay's own id.
        let req = world
            .wait_message_from(from, secs(5), |m| m["type"] == row.ws_type.as_str())
            .unwrap_or_else(|| panic!("{what}: the world got no {}", row.ws_type));
        assert_eq!(req["requestId"], rid.as_str(), "{what}: {req}");
        assert!(ids.insert(rid.clone()), "{what}: requestId {rid} reused");
        // Not the reference's colliding `<type>_<ms>`.
        let tail = rid.rsplit('_').next().unwrap_or("");
        assert!(
            !(tail.len() == 13 && tail.bytes().all(|b| b.is_ascii_digit())),
            "{what}: requestId {rid} looks like <type>_<ms>"
        );
        for (name, want) in &c.expect {
            assert_eq!(&req[name.as_str()], want, "{what}: param {name} in {req}");
        }
        assert!(req.get("clientId").is_none(), "{what}: clientId forwarded");
        assert!(req["_scopes"].is_array(), "{what}: _scopes in {req}");
        assert!(req.get("data").is_some(), "{what}: data default in {req}");
        if row.path.starts_with("/canvas/") {
            assert_eq!(req["className"], "Token", "{what}");
        }
        // Verbatim: the bytes of the world's reply, not a re-serialization.
        let sent = sent_reply(&world, &rid).unwrap_or_else(|| panic!("{what}: no reply sent"));
        assert_eq!(r.text(), sent.to_string(), "{what}: body not verbatim");
        covered += 1;
    }
    assert_eq!(covered, 88);
    eprintln!("forward routes covered: {covered}");
}

#[test]
fn binary_routes_decode_the_module_payload() {
    let p = start_provisioned(&[]);
    let world = p.world();
    let key = p.keys.api_key.as_str();
    let mut covered = 0;
    for row in rows_of("binary") {
        let what = format!("{} {}", row.method, row.path);
        let extra: &[(&str, &str)] = match row.ws_type.as_str() {
            "download-file" => &[("path", "rest-api-tests/test-file.txt")],
            "sheet-screenshot" => {
                world.set_reply(
                    "sheet-screenshot",
                    Some(
                        json!({"success": true, "imageData": data_url("image/png", TINY_PNG),
                        "mimeType": "image/png", "width": 640, "height": "480"}),
                    ),
                );
                &[("uuid", "Actor.V5OF1QXHjaIy6iO8")]
            }
            _ => &[("width", "800"), ("height", "600")],
        };
        let c = valid_call(&row, extra);
        let r = call(&p, &row.method, &c, key);
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert_cors(&r, &what);
        let req = world
            .wait_request(&row.ws_type, secs(5))
            .unwrap_or_else(|| panic!("{what}: not forwarded"));
        let sent = sent_reply(&world, req["requestId"].as_str().unwrap_or(""))
            .unwrap_or_else(|| panic!("{what}: no reply"));
        match row.ws_type.as_str() {
            "download-file" => {
                assert_eq!(r.body, DEFAULT_FILE_TEXT, "{what}");
                assert_eq!(r.header("content-type"), Some("text/plain"), "{what}");
                assert_eq!(
                    r.header("content-disposition"),
                    Some("attachment; filename=\"test-file.txt\""),
                    "{what}"
                );
            }
            "sheet-screenshot" => {
                assert_eq!(r.body, TINY_PNG, "{what}");
                assert_eq!(r.header("content-type"), Some("image/png"));
                assert_eq!(req["format"], "png", "{what}: default format");
                assert_eq!(req["scale"], 1, "{what}: default scale");
                assert_eq!(r.header("x-image-width"), Some("640"), "{what}");
                assert_eq!(r.header("x-image-height"), Some("480"), "{what}");
            }
            _ => {
                assert_eq!(r.body, TINY_PNG, "{what}");
                assert_eq!(r.header("content-type"), Some("image/png"));
                assert_eq!(r.header("x-image-width"), Some("800"), "{what}");
                assert_eq!(r.header("x-image-height"), Some("600"), "{what}");
            }
        }
        assert!(sent["requestId"].is_string());
        covered += 1;
    }
    assert_eq!(covered, 3);

    // format=base64: the module's JSON passes through untouched.
    let r = get(
        p.relay.addr(),
        "/download?path=rest-api-tests%2Ftest-file.txt&format=base64",
        &[("x-api-key", key)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["type"], "download-file-result");
    let (_, bytes) = decode_data_url(v["fileData"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(bytes, DEFAULT_FILE_TEXT);
    let sent = sent_reply(&world, v["requestId"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(r.text(), sent.to_string());

    // A jpeg screenshot is named from the requested format.
    let r = get(
        p.relay.addr(),
        "/scene/image?format=jpeg",
        &[("x-api-key", key)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.body, TINY_JPEG);

    // A binary route's module error: 400 {requestId, error}.
    world.set_error("download-file", Some("File not found"));
    let r = get(
        p.relay.addr(),
        "/download?path=x.txt",
        &[("x-api-key", key)],
    );
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"], "File not found");
    assert!(v["requestId"].is_string(), "{v}");
}

#[test]
fn multi_mib_download_arrives_intact() {
    let p = start_provisioned(&[]);
    let world = p.world();
    world.set_download_mib(8);
    let conn_timeout = secs(60);
    let raw = build_request(
        "GET",
        "/download?path=big%2Ffile.bin",
        &p.relay.addr().to_string(),
        &[
            ("x-api-key", p.keys.api_key.as_str()),
            ("Connection", "close"),
        ],
        None,
    );
    let r = try_http_request(p.relay.addr(), &raw, conn_timeout).expect("download");
    assert_eq!(r.status, 200, "{:?}", r.raw_head);
    assert_eq!(r.body.len(), 8 << 20);
    assert!(r.body == pattern_bytes(8 << 20), "download corrupted");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"file.bin\"")
    );
}

#[test]
fn upload_with_json_and_with_a_raw_body() {
    let p = start_provisioned(&[]);
    let world = p.world();
    let key = p.keys.api_key.as_str();
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();

    // JSON body with bare base64: the module gets a data URL.
    let body = json!({"path": "up", "filename": "a.bin", "fileData": base64_encode(&payload),
        "mimeType": "application/octet-stream"});
    let r = post_json(p.relay.addr(), "/upload", &[("x-api-key", key)], &body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "up/a.bin");
    let req = world.wait_request("upload-file", secs(5)).expect("upload");
    assert!(req["fileData"]
        .as_str()
        .is_some_and(|s| s.starts_with("data:application/octet-stream;base64,")));
    assert_eq!(upload_bytes(&req).as_deref(), Some(&payload[..]));
    assert_eq!(req["source"], "data");
    assert_eq!(req["overwrite"], false);

    // Raw body: metadata from the query, bytes as a data URL of the request's type.
    let from = world.received_len();
    let r = request(
        p.relay.addr(),
        "POST",
        "/upload?path=raw&filename=b.png&overwrite=true",
        &[("x-api-key", key), ("Content-Type", "image/png")],
        Some(TINY_PNG),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "raw/b.png");
    let req = world
        .wait_message_from(from, secs(5), |m| m["type"] == "upload-file")
        .expect("raw upload");
    let url = req["fileData"].as_str().unwrap_or("");
    assert!(url.starts_with("data:image/png;base64,"), "{url}");
    assert_eq!(upload_bytes(&req).as_deref(), Some(TINY_PNG));
    assert_eq!(req["overwrite"], true);
    assert_eq!(req["filename"], "b.png");

    // Raw body without path/filename: the reference's own message.
    let r = request(
        p.relay.addr(),
        "POST",
        "/upload",
        &[("x-api-key", key), ("Content-Type", "image/png")],
        Some(TINY_PNG),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "'path' and 'filename' are required");
}

// ------------------------------------------------------------------- relay-local routes

#[test]
fn sse_routes_answer_and_session_routes_are_501() {
    let p = start_provisioned(&[]);
    let _world = p.world();
    let key = p.keys.api_key.as_str();
    for row in rows_of("sse") {
        let path = format!("{}?clientId={}", row.path, p.keys.client_id);
        let raw = build_request(
            "GET",
            &path,
            &p.relay.addr().to_string(),
            &[("x-api-key", key)],
            None,
        );
        let mut c = HttpConn::connect(p.relay.addr()).expect("connect");
        c.send(&raw).expect("send");
        let r = c.read_head(secs(5)).expect("a head");
        assert_ne!(r.status, 404, "{}: {r:?}", row.path);
        assert_ne!(r.status, 405, "{}: {r:?}", row.path);
    }
    for row in rows_of("session") {
        let r = request(
            p.relay.addr(),
            &row.method,
            &row.path,
            &[("x-api-key", key)],
            None,
        );
        assert_eq!(r.status, 501, "{} {}: {r:?}", row.method, row.path);
        assert_eq!(
            r.json(),
            json!({"error": "Headless sessions are not supported by fvtt-relay"})
        );
        assert_cors(&r, &row.path);
    }
}

#[test]
fn clients_lists_live_and_known_offline_worlds() {
    // A second paired world that never connects.
    let (p, (other_id, _other_token)) = start_provisioned_edited(&[], |st, _| {
        let id = fvtt_relay::ids::new_client_id();
        let (_, tok) = st.create_connection_token(&id, 1);
        st.upsert_world(fvtt_relay::store::KnownWorld {
            client_id: id.clone(),
            world_id: "offline-world".into(),
            world_title: "Offline".into(),
            last_seen_ms: Some(1234),
            ..Default::default()
        });
        (id, tok)
    });
    let (relay, keys) = (&p.relay, &p.keys);
    let mut cfg = WorldConfig::new(&keys.client_id, &keys.token);
    cfg.custom_name = Some("GM Laptop".into());
    let world = FakeWorld::start(relay.addr(), cfg);
    assert!(world.wait_connected(secs(10)));
    let r = get(
        relay.addr(),
        "/clients",
        &[("x-api-key", keys.api_key.as_str())],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_cors(&r, "/clients");
    let v = r.json();
    assert_eq!(v["total"], 2, "{v}");
    let clients = v["clients"].as_array().cloned().unwrap_or_default();
    let live = clients
        .iter()
        .find(|c| c["clientId"] == keys.client_id.as_str())
        .expect("live world listed");
    assert_eq!(live["isOnline"], true);
    assert_eq!(live["id"], keys.client_id.as_str());
    assert_eq!(live["worldTitle"], "Test World & Co");
    assert_eq!(live["systemTitle"], "Dungeons & Dragons Fifth Edition");
    assert_eq!(live["customName"], "GM Laptop");
    assert!(live["connectedSince"].as_u64().is_some_and(|t| t > 0));
    assert!(live["lastSeen"].as_u64().is_some_and(|t| t > 0));
    let off = clients
        .iter()
        .find(|c| c["clientId"] == other_id.as_str())
        .expect("offline world listed");
    assert_eq!(off["isOnline"], false);
    assert_eq!(off["worldId"], "offline-world");
    assert_eq!(off["lastSeen"], 1234);
}

#[test]
fn contents_status_health_and_preflight() {
    let p = start_provisioned(&[]);
    let _world = p.world();
    let key = p.keys.api_key.as_str();
    let r = get(p.relay.addr(), "/contents/x/y", &[("x-api-key", key)]);
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"], "This endpoint has been deprecated.");
    assert_eq!(v["example"], "/structure?path=...&recursive=true");
    assert!(v["message"].is_string());
    // Still an API route: no key, no answer.
    assert_eq!(get(p.relay.addr(), "/contents/x/y", &[]).status, 401);

    let r = get(p.relay.addr(), "/api/status", &[]);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["websocket"], "/relay");
    assert_eq!(v["connectedWorlds"], 1);
    assert!(v["uptimeSeconds"].is_u64());

    let r = get(p.relay.addr(), "/api/health", &[]);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(v["connectedWorlds"], 1);

    let r = request(
        p.relay.addr(),
        "OPTIONS",
        "/get?uuid=x",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-api-key"),
        ],
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let methods = r.header("access-control-allow-methods").unwrap_or("");
    for m in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in ["x-api-key", "content-type", "authorization", "x-client-id"] {
        assert!(headers.contains(h), "{headers}");
    }
    assert!(r.body.is_empty());
}

// ------------------------------------------------------------------------- error cases

fn new_key(
    st: &mut fvtt_relay::store::State,
    scopes: &[&str],
    client_ids: &[&str],
    user_id: Option<&str>,
) -> String {
    st.create_api_key(
        fvtt_relay::auth::NewKey {
            name: "t".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            client_ids: client_ids.iter().map(|s| s.to_string()).collect(),
            user_id: user_id.map(str::to_string),
            expires_in_days: None,
            rate_limit_per_minute: None,
        },
        1,
    )
    .expect("key")
    .1
}

#[test]
fn missing_invalid_and_expired_keys_are_401() {
    let (p, extra) = start_provisioned_edited(&[], |st, _| {
        let k = new_key(st, &["search"], &[], None);
        // expires_in_days is at least 1, so expire it by hand (then rebuild the index).
        if let Some(last) = st.api_keys.last_mut() {
            last.expires_at_ms = Some(1_000);
        }
        st.reindex();
        vec![k]
    });
    let _world = p.world();
    let addr = p.relay.addr();
    let r = get(addr, "/search?query=a", &[]);
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"error": "API key is required"}))
    );
    assert_cors(&r, "401");
    let r = get(addr, "/search?query=a", &[("x-api-key", "nope")]);
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"error": "Invalid API key"}))
    );
    let r = get(addr, "/search?query=a", &[("x-api-key", extra[0].as_str())]);
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"error": "API key has expired"}))
    );
}

#[test]
fn a_key_without_the_route_scope_is_403() {
    let (p, extra) = start_provisioned_edited(&[], |st, _| {
        let defaults: Vec<&str> = fvtt_relay::auth::DEFAULT_SCOPES.to_vec();
        vec![new_key(st, &defaults, &[], None)]
    });
    let world = p.world();
    let key = extra[0].as_str();
    let r = post_json(
        p.relay.addr(),
        "/execute-js",
        &[("x-api-key", key)],
        &json!({"script": "return 1;"}),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"error": "API key lacks required scope: execute-js"})
    );
    assert!(world.messages_of("execute-js").is_empty());
    // The same key may read.
    assert_eq!(
        get(p.relay.addr(), "/search?query=x", &[("x-api-key", key)]).status,
        200
    );
}

#[test]
fn parameter_errors_are_400_with_the_reference_messages() {
    let p = start_provisioned(&[]);
    let world = p.world();
    let h = [("x-api-key", p.keys.api_key.as_str())];
    let addr = p.relay.addr();
    let cases: Vec<(RawResponse, &str)> = vec![
        (get(addr, "/get-folder", &h), "'name' is required"),
        (get(addr, "/get-folder?name=", &h), "'name' is required"),
        (
            post_json(addr, "/roll", &h, &json!({"flavor": "x"})),
            "'formula' is required",
        ),
        (
            get(addr, "/search?query=a&limit=ten", &h),
            "'limit' must be a valid number",
        ),
        (
            post_json(
                addr,
                "/increase",
                &h,
                &json!({"attribute": "hp", "amount": "lots"}),
            ),
            "'amount' must be a valid number",
        ),
        (get(addr, "/search", &h), "'query' or 'filter' is required"),
        (
            get(addr, "/search?query=a&minified=maybe", &h),
            "'minified' must be a valid boolean",
        ),
    ];
    for (r, msg) in cases {
        assert_eq!(r.status, 400, "{msg}: {r:?}");
        assert_eq!(r.json(), json!({"error": msg}));
        assert_cors(&r, msg);
    }
    let r = get(addr, "/canvas/dragons", &h);
    assert_eq!(r.status, 400);
    assert!(r.json()["validTypes"].is_array());
    // None of them reached the world.
    assert!(world.messages_of("search").is_empty());
    assert!(world.messages_of("get-folder").is_empty());
}

#[test]
fn client_resolution_rules() {
    let (p, extra) = start_provisioned_edited(&[], |st, keys| {
        let id2 = "fvtt_00000000000000b2".to_string();
        let (_, tok2) = st.create_connection_token(&id2, 1);
        let bound = new_key(st, &["search"], &[&keys.client_id], Some("boundUser"));
        vec![id2, tok2, bound]
    });
    let addr = p.relay.addr();
    let h = [("x-api-key", p.keys.api_key.as_str())];

    // Nobody connected.
    let r = get(addr, "/search?query=a", &h);
    assert_eq!(r.status, 404, "{r:?}");
    // The reference's message first (clients match on it), then why, also as `reason`.
    let v = r.json();
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "{v}");
    assert_eq!(
        v["error"],
        json!(format!("No connected Foundry clients found. {reason}"))
    );

    let w1 = p.world();
    let w2 = FakeWorld::online(addr, &extra[0], &extra[1]);

    // Two connected, none named.
    let r = get(addr, "/search?query=a", &h);
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    let mut listed: Vec<String> = v["connectedClients"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    listed.sort();
    let mut both = vec![p.keys.client_id.clone(), extra[0].clone()];
    both.sort();
    assert_eq!(listed, both, "{v}");
    assert!(v["error"].is_string());

    // Unknown id.
    let r = get(addr, "/search?query=a&clientId=fvtt_ffffffffffffffff", &h);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "Invalid client ID");

    // Query and header pick the world.
    let path = format!("/search?query=q1&clientId={}", extra[0]);
    assert_eq!(get(addr, &path, &h).status, 200);
    assert!(w2.wait_request("search", secs(5)).is_some());
    let r = get(
        addr,
        "/search?query=q2",
        &[
            ("x-api-key", p.keys.api_key.as_str()),
            ("x-client-id", p.keys.client_id.as_str()),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["query"], "q2");
    assert!(w1.wait_request("search", secs(5)).is_some());

    // A key bound to one world goes there without naming it, gets its userId, and is
    // refused for the other.
    let bh = [("x-api-key", extra[2].as_str())];
    let from = w1.received_len();
    let r = get(addr, "/search?query=bound&userId=caller", &bh);
    assert_eq!(r.status, 200, "{r:?}");
    let req = w1
        .wait_message_from(from, secs(5), |m| m["query"] == "bound")
        .expect("bound request");
    assert_eq!(req["userId"], "boundUser");
    let r = get(addr, &format!("/search?query=a&clientId={}", extra[0]), &bh);
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn a_silent_world_times_out_with_408() {
    // The route with the shortest timeout, its timeout capped to 1 s so CI need not wait.
    let row = rows_of("forward")
        .into_iter()
        .filter(|r| r.method == "GET")
        .min_by_key(|r| r.timeout_ms)
        .expect("a GET route");
    assert!(row.timeout_ms >= 10_000, "{row:?}");
    let p = start_provisioned(&["--max-request-timeout", "1s"]);
    let world = p.world();
    world.set_silent(&row.ws_type, true);
    let c = valid_call(&row, &[]);
    let t0 = std::time::Instant::now();
    let r = call(&p, "GET", &c, &p.keys.api_key);
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.json(), json!({"error": "Request timed out"}));
    assert_cors(&r, "408");
    assert!(took >= millis(900) && took < secs(5), "took {took:?}");
}

#[test]
fn a_world_that_drops_mid_request_fails_it_at_once_with_502() {
    let p = start_provisioned(&[]);
    let world = p.world();
    world.disconnect_on("entity");
    let t0 = std::time::Instant::now();
    let r = get(
        p.relay.addr(),
        "/get?uuid=Actor.x",
        &[("x-api-key", p.keys.api_key.as_str())],
    );
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json(), json!({"error": "Foundry client disconnected"}));
    assert!(t0.elapsed() < secs(3), "not at once: {:?}", t0.elapsed());
}

#[test]
fn module_errors_are_400_and_secrets_are_stripped() {
    let p = start_provisioned(&[]);
    let world = p.world();
    let h = [("x-api-key", p.keys.api_key.as_str())];
    world.set_error("entity", Some("Entity not found"));
    let r = get(p.relay.addr(), "/get?uuid=Actor.missing", &h);
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"], "Entity not found");
    assert_eq!(v["type"], "entity-result");
    let sent = sent_reply(&world, v["requestId"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(r.text(), sent.to_string(), "error replies are verbatim too");

    world.set_reply(
        "world-info",
        Some(
            json!({"data": {"apiKey": "k", "nested": [{"password": "p", "keep": 1}],
            "privateKey": {"x": 1}, "title": "W"}}),
        ),
    );
    let r = get(p.relay.addr(), "/world-info", &h);
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    for s in ["apiKey", "password", "privateKey"] {
        assert!(!text.contains(s), "{s} leaked: {text}");
    }
    let v = r.json();
    assert_eq!(v["data"]["nested"][0]["keep"], 1);
    assert_eq!(v["data"]["title"], "W");
}

#[test]
fn replies_are_matched_by_request_id_only() {
    let p = start_provisioned(&[]);
    let world = p.world();
    world.set_error("last-round", Some("No active encounter"));
    let r = post_json(
        p.relay.addr(),
        "/last-round",
        &[("x-api-key", p.keys.api_key.as_str())],
        &json!({}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    assert_eq!(v["type"], "encounter-navigation");
    assert_eq!(v["error"], "No active encounter");
}

#[test]
fn a_late_reply_after_the_caller_left_is_dropped() {
    let p = start_provisioned(&[]);
    let world = p.world();
    world.set_delay("entity", millis(800));
    let key = p.keys.api_key.as_str();
    let raw = build_request(
        "GET",
        "/get?uuid=Actor.late",
        &p.relay.addr().to_string(),
        &[("x-api-key", key)],
        None,
    );
    {
        let mut c = HttpConn::connect(p.relay.addr()).expect("connect");
        c.send(&raw).expect("send");
        assert!(world.wait_request("entity", secs(5)).is_some());
    } // the caller hangs up before the reply
      // A new caller on a fresh connection (likely the same slab key), waiting while the late
      // reply arrives, must get only its own.
    let mut c = HttpConn::connect(p.relay.addr()).expect("connect");
    let raw2 = build_request(
        "GET",
        "/get?uuid=Actor.second",
        &p.relay.addr().to_string(),
        &[("x-api-key", key)],
        None,
    );
    let r = c.roundtrip(&raw2, secs(5)).expect("second reply");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["uuid"], "Actor.second");
    // The relay still serves.
    let r = get(p.relay.addr(), "/api/health", &[]);
    assert_eq!(r.json()["pendingRequests"], 0);
    assert!(world.is_connected());
}

#[test]
fn macro_create_needs_macro_write() {
    let (p, extra) =
        start_provisioned_edited(&[], |st, _| vec![new_key(st, &["entity:write"], &[], None)]);
    let world = p.world();
    let body = json!({"entityType": "Macro", "data": {"name": "m", "command": "return 1;"}});
    let r = post_json(
        p.relay.addr(),
        "/create",
        &[("x-api-key", extra[0].as_str())],
        &body,
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(world.messages_of("create").is_empty());
    let r = post_json(
        p.relay.addr(),
        "/create",
        &[("x-api-key", p.keys.api_key.as_str())],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn unknown_paths_and_methods() {
    let p = start_provisioned(&[]);
    let key = p.keys.api_key.as_str();
    let r = get(p.relay.addr(), "/no-such-route", &[("x-api-key", key)]);
    assert_eq!(r.status, 404);
    let r = request(
        p.relay.addr(),
        "PATCH",
        "/search",
        &[("x-api-key", key)],
        None,
    );
    assert_eq!(r.status, 405, "{r:?}");
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
}

// ------------------------------------------------------------------------- API documents

fn served_public_paths() -> Vec<(String, String)> {
    rows()
        .into_iter()
        .filter(|r| matches!(r.kind.as_str(), "forward" | "binary" | "sse" | "session"))
        .map(|r| (r.method, r.path))
        .chain([
            ("GET".to_string(), "/clients".to_string()),
            ("GET".to_string(), "/contents/{path}".to_string()),
        ])
        .collect()
}

#[test]
fn openapi_lists_exactly_the_served_routes() {
    let p = start_provisioned(&[]);
    let _world = p.world();
    let addr = p.relay.addr();
    let r = get(addr, "/openapi.json", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").is_some_and(|t| t.contains("json")));
    let doc = r.json();
    assert_eq!(doc["servers"][0]["url"], format!("http://{addr}"));
    assert!(doc["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key");
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let mut listed = HashSet::new();
    for (path, ops) in &paths {
        for (method, op) in ops.as_object().into_iter().flatten() {
            listed.insert((method.to_ascii_uppercase(), path.clone()));
            if let Some(scope) = op.get("x-required-scope").and_then(Value::as_str) {
                assert!(
                    fvtt_relay::auth::ALL_SCOPES.contains(&scope),
                    "{path}: {scope}"
                );
            }
        }
    }
    for (m, path) in served_public_paths() {
        assert!(
            listed.contains(&(m.clone(), path.clone())),
            "{m} {path} missing"
        );
    }
    // Everything listed (but the owner's pairing/admin routes, checked where they live) is
    // served: not 404 for a real request.
    let key = p.keys.api_key.as_str();
    for (m, path) in &listed {
        if path.starts_with("/admin/") || path.starts_with("/auth/") || path == "/api/self-unpair" {
            continue;
        }
        let concrete = path
            .replace("{path}", "x")
            .replace("{uuid}", "Macro.x")
            .replace("{documentType}", "tokens")
            .replace("{messageId}", "m1")
            .replace("{clientId}", &p.keys.client_id);
        let sep = if concrete.contains('?') { '&' } else { '?' };
        let concrete = format!("{concrete}{sep}clientId={}", p.keys.client_id);
        let raw = build_request(
            m,
            &concrete,
            &addr.to_string(),
            &[("x-api-key", key), ("Content-Type", "application/json")],
            (m != "GET").then_some(b"{}".as_slice()),
        );
        let mut c = HttpConn::connect(addr).expect("connect");
        c.send(&raw).expect("send");
        let r = c.read_head(secs(30)).expect("head");
        assert_ne!(r.status, 404, "{m} {path} listed but 404");
        assert_ne!(r.status, 405, "{m} {path} listed but 405");
    }
    // Admin and hosted-only rows stay out.
    assert!(!paths.contains_key("/admin/api/users"));
    assert!(!paths.contains_key("/proxy-asset/*"));
}

#[test]
fn asyncapi_describes_the_websockets() {
    let p = start_provisioned(&["--public-url", "https://relay.example.com"]);
    let r = get(p.relay.addr(), "/asyncapi.json", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let doc = r.json();
    let text = doc.to_string();
    assert!(text.contains("wss://relay.example.com"), "{text:.400}");
    assert!(doc["channels"]["/ws/api"].is_object(), "{text:.400}");
    assert!(doc["channels"]["/relay"].is_object(), "{text:.400}");
    for ty in ["search", "subscribe", "download-file"] {
        assert!(text.contains(ty), "{ty} not described");
    }
    let r = get(p.relay.addr(), "/openapi.json", &[]);
    assert_eq!(r.json()["servers"][0]["url"], "https://relay.example.com");
}

/// The pairing and admin routes that openapi.json lists from docs.rs's static table are
/// routed by `owner_route` (pairing/admin branches). Enable once those are merged.
#[test]
fn owner_routes_in_openapi_are_served() {
    let p = start_provisioned(&[]);
    let doc = get(p.relay.addr(), "/openapi.json", &[]).json();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let mut checked = 0;
    for (path, ops) in &paths {
        if !(path.starts_with("/admin/")
            || path.starts_with("/auth/")
            || path == "/api/self-unpair")
        {
            continue;
        }
        for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
            let concrete = path
                .replace("{code}", "ABCDEF")
                .replace("{clientId}", &p.keys.client_id)
                .replace("{id}", "key_0");
            let m = method.to_ascii_uppercase();
            let body = (m != "GET").then_some(b"{}".as_slice());
            let r = request(
                p.relay.addr(),
                &m,
                &concrete,
                &[("Content-Type", "application/json")],
                body,
            );
            assert!(
                r.status != 404 || r.json().get("error").is_some_and(|e| e != "Not found"),
                "{m} {path}: {r:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}

/// Issue 10, found by a contract fuzzer: a non-string `error` is 200 (relay-protocol.md
/// §2.4), wrong methods are 405 with `Allow`, an unknown clientId is 404 before parameter
/// checks, malformed percent-encoding is 400, and `/clients` omits empty strings.
#[test]
fn contract_fuzzer_edge_cases() {
    let p = start_provisioned(&[]);
    let world = p.world();
    let addr = p.relay.addr();
    let h = [("x-api-key", p.keys.api_key.as_str())];
    for (error, status) in [
        (json!(false), 200),
        (json!(0), 200),
        (json!({"code": 1}), 200),
        (json!(null), 200),
        (json!(""), 400),
        (json!("Entity not found"), 400),
    ] {
        world.set_reply("entity", Some(json!({"success": false, "error": error})));
        let r = get(addr, "/get?uuid=Actor.x", &h);
        assert_eq!(r.status, status, "error {error}: {r:?}");
    }
    for (method, path, allow) in [
        ("POST", "/openapi.json", "GET, HEAD"),
        ("DELETE", "/api/status", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("TRACE", "/admin/api/login", "POST"),
        ("GET", "/admin/api/login", "POST"),
        ("TRACE", "/admin/api/worlds", "GET, HEAD"),
        ("POST", "/admin/api/tokens/tok_x", "PATCH, DELETE"),
    ] {
        let r = request(addr, method, path, &[], None);
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    let r = get(addr, "/search?clientId=bogus", &h);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"], "Invalid client ID");
    let r = get(addr, "/search?clientId=bogus&query=x", &h);
    assert_eq!(r.status, 404, "{r:?}");
    let r = get(addr, &format!("/search?clientId={}", p.keys.client_id), &h);
    assert_eq!(r.status, 400, "a known world still needs `query`: {r:?}");
    for (method, path) in [
        ("DELETE", "/chat/%ZZ"),
        ("GET", "/get?uuid=%FF%FE"),
        ("GET", "/get?uuid=Actor.%G1"),
    ] {
        let r = request(addr, method, path, &h, None);
        assert_eq!(r.status, 400, "{method} {path}: {r:?}");
        let e = r.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(e.contains("percent-encoding"), "{method} {path}: {e}");
    }
    assert!(
        world.messages_of("chat-delete").is_empty(),
        "a malformed target was forwarded"
    );
    let c = get(addr, "/clients", &h).json();
    let entry = &c["clients"][0];
    assert_eq!(entry["clientId"], p.keys.client_id.as_str());
    assert!(entry.get("customName").is_none(), "{entry}");
    for (k, v) in entry.as_object().into_iter().flatten() {
        assert_ne!(v, &json!(""), "{k} is an empty string");
    }
}
