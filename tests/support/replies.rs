//! What the simulated world answers: reply shapes of module v3.4.1 per request type
//! (module-protocol.md §3.5, shapes taken from the captured traffic in spec/examples/), the
//! error shapes of §3.3, and sample payloads for pushed events (§4.2).
//!
//! Every reply is `{type:"<t>-result", requestId:<echoed unchanged>, ...}` except where the
//! module differs: `last-round` errors are typed `encounter-navigation`, and the
//! interactive-session types answer with `interactive-session-*` / `interactive-frame`.
//! An unknown type, and a dnd5e type on another system, get no reply at all (§3.1).

use super::enc::{base64_encode, data_url};
use serde_json::{json, Map, Value};

/// The module's 96 request/response router types (module-protocol.md §3.5), without the
/// 21 dnd5e types (registered only on dnd5e) and the three interactive-session types.
pub const ROUTER_TYPES: &[&str] = &[
    "chat-messages",
    "chat-send",
    "chat-delete",
    "chat-flush",
    "rolls",
    "last-roll",
    "roll",
    "search",
    "entity",
    "create",
    "update",
    "delete",
    "increase",
    "decrease",
    "kill",
    "give",
    "remove",
    "encounters",
    "start-encounter",
    "next-turn",
    "next-round",
    "last-turn",
    "last-round",
    "end-encounter",
    "add-to-encounter",
    "remove-from-encounter",
    "structure",
    "get-folder",
    "create-folder",
    "delete-folder",
    "contents",
    "macros",
    "macro-execute",
    "execute-js",
    "players",
    "world-info",
    "server-url",
    "select",
    "selected",
    "file-system",
    "upload-file",
    "download-file",
    "get-scene",
    "create-scene",
    "update-scene",
    "delete-scene",
    "switch-scene",
    "get-canvas-documents",
    "create-canvas-document",
    "update-canvas-document",
    "delete-canvas-document",
    "move-token",
    "measure-distance",
    "get-status-effects",
    "get-effects",
    "add-effect",
    "remove-effect",
    "get-playlists",
    "playlist-play",
    "playlist-stop",
    "playlist-next",
    "playlist-volume",
    "play-sound",
    "stop-sound",
    "get-users",
    "get-user",
    "create-user",
    "update-user",
    "delete-user",
    "scene-screenshot",
    "scene-raw-image",
    "sheet-screenshot",
];

/// Registered only when the world's system is dnd5e (module-protocol.md §3.1).
pub const DND5E_TYPES: &[&str] = &[
    "get-actor-details",
    "modify-item-charges",
    "use-ability",
    "use-feature",
    "use-spell",
    "use-item",
    "modify-experience",
    "short-rest",
    "long-rest",
    "skill-check",
    "ability-save",
    "ability-check",
    "death-save",
    "get-concentration",
    "break-concentration",
    "concentration-save",
    "equip-item",
    "attune-item",
    "transfer-currency",
    "modify-currency",
    "prepare-spell",
];

/// Session types keyed by `sessionId` (module-protocol.md §3.5, last rows).
pub const INTERACTIVE_TYPES: &[&str] = &[
    "interactive-session-start",
    "interactive-input",
    "interactive-session-end",
];

/// The six event channels and the message type the module pushes on each (§4.2).
pub const CHANNELS: &[(&str, &str)] = &[
    ("chat-events", "chat-event"),
    ("roll-events", "roll-data"),
    ("hooks", "hook-event"),
    ("combat-events", "combat-event"),
    ("actor-events", "actor-event"),
    ("scene-events", "scene-event"),
];

/// The channel an event type belongs to.
pub fn channel_of(event_type: &str) -> Option<&'static str> {
    CHANNELS
        .iter()
        .find(|(_, t)| *t == event_type)
        .map(|(c, _)| *c)
}

/// What the module would answer for `ty` on a world of `system_id`.
pub fn answers(ty: &str, system_id: &str) -> bool {
    ROUTER_TYPES.contains(&ty)
        || INTERACTIVE_TYPES.contains(&ty)
        || (system_id == "dnd5e" && DND5E_TYPES.contains(&ty))
}

/// The world facts replies are built from.
#[derive(Clone, Debug)]
pub struct ReplyCtx {
    pub world_id: String,
    pub world_title: String,
    pub foundry_version: String,
    pub system_id: String,
    pub system_title: String,
    pub system_version: String,
    /// `player-list` users (`{id,name,role,active}`).
    pub users: Vec<Value>,
    /// Size of the file `download-file` returns; None = a short text file.
    pub download_size: Option<usize>,
}

/// Deterministic file content of `n` bytes (every byte value occurs), so a test can compare
/// what it downloaded without keeping a copy.
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 251) % 256) as u8).collect()
}

/// The text served for a download when no size is set.
pub const DEFAULT_FILE_TEXT: &[u8] = b"Hello from REST API test!";

/// The bytes and MIME type `download-file` returns for `path`.
pub fn download_content(path: &str, size: Option<usize>) -> (String, Vec<u8>) {
    match size {
        Some(n) => (mime_for(path).to_string(), pattern_bytes(n)),
        None => (mime_for(path).to_string(), DEFAULT_FILE_TEXT.to_vec()),
    }
}

fn mime_for(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" => "text/plain",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
}

/// A valid 1x1 PNG (signature, IHDR, IDAT, IEND with correct CRCs).
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x60, 0x60, 0x60, 0xF8,
    0x0F, 0x00, 0x01, 0x04, 0x01, 0x00, 0x5F, 0xE5, 0xC3, 0x4B, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// Stand-in JPEG bytes (SOI … EOI); the relay only decodes base64, never the image.
pub const TINY_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0xFF, 0xD9,
];

/// MIME type and bytes of a screenshot in `format` (`png` unless `jpeg`/`jpg`/`webp`).
pub fn screenshot_bytes(format: Option<&str>) -> (&'static str, &'static [u8]) {
    match format {
        Some("jpeg") | Some("jpg") => ("image/jpeg", TINY_JPEG),
        _ => ("image/png", TINY_PNG),
    }
}

const ACTOR_UUID: &str = "Actor.V5OF1QXHjaIy6iO8";
const SCENE_ID: &str = "SM7AhDv5JgZh6IvK";
const TOKEN_UUID: &str = "Scene.SM7AhDv5JgZh6IvK.Token.h982FKt6QfxjSNkM";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `{type, requestId}` plus `fields`.
fn reply(ty: &str, req: &Value, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(ty));
    m.insert(
        "requestId".into(),
        req.get("requestId").cloned().unwrap_or(Value::Null),
    );
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

/// The request's params: everything but `type` and `requestId`.
pub fn params_of(req: &Value) -> Value {
    let mut m = req.as_object().cloned().unwrap_or_default();
    m.remove("type");
    m.remove("requestId");
    Value::Object(m)
}

fn s<'a>(req: &'a Value, key: &str) -> Option<&'a str> {
    req.get(key).and_then(Value::as_str)
}

fn or<'a>(req: &'a Value, key: &str, default: &'a str) -> &'a str {
    s(req, key).unwrap_or(default)
}

fn val(req: &Value, key: &str, default: Value) -> Value {
    match req.get(key) {
        Some(v) if !v.is_null() => v.clone(),
        _ => default,
    }
}

/// A serialized chat message (module-protocol.md §3.5, note under the table).
pub fn chat_message(id: &str, content: &str) -> Value {
    json!({
        "id": id, "uuid": format!("ChatMessage.{id}"), "content": content,
        "speaker": {"scene": null, "actor": null, "token": null},
        "timestamp": now_ms(), "whisper": [], "type": "base",
        "author": {"id": "cpvaGKk3hgoBCzCS", "name": "Gamemaster"},
        "flavor": "", "isRoll": false, "rolls": [], "flags": {}
    })
}

/// A `rollEntry` (module-protocol.md §3.5).
pub fn roll_entry(id: &str, formula: &str, total: i64) -> Value {
    json!({
        "id": id, "messageId": id, "user": {"id": "cpvaGKk3hgoBCzCS", "name": "Gamemaster"},
        "speaker": {}, "flavor": "", "rollTotal": total, "formula": formula,
        "isCritical": false, "isFumble": false,
        "dice": [{"faces": 20, "results": [{"result": total, "active": true}]}],
        "timestamp": now_ms()
    })
}

fn user_full(u: &Value) -> Value {
    let role = u.get("role").and_then(Value::as_i64).unwrap_or(1);
    json!({
        "id": val(u, "id", json!("zi1MHwh4aJs4L2Mn")), "name": val(u, "name", json!("test")),
        "role": role, "isGM": role >= 3, "active": val(u, "active", json!(false)),
        "color": "#161068", "avatar": "icons/svg/mystery-man.svg", "character": null
    })
}

fn encounter(id: &str, round: i64, turn: i64) -> Value {
    json!({
        "id": id, "name": "New Encounter", "round": round, "turn": turn, "current": true,
        "combatants": [{"id": "xlDsyE2WEgWJpTUB", "name": "Test Actor", "tokenUuid": TOKEN_UUID,
            "actorUuid": format!("{TOKEN_UUID}.Actor.V5OF1QXHjaIy6iO8"),
            "img": "icons/svg/mystery-man.svg", "initiative": 12, "hidden": false, "defeated": false}]
    })
}

fn playlist() -> Value {
    json!({"id": "QeQWR98JSuzsKEMt", "name": "test-rest-api-playlist", "description": "",
        "playing": false, "mode": 0, "folder": null, "sorting": "a",
        "sounds": [{"id": "ZzdU8koYDmwYAqNN", "name": "test-sound", "path": "sounds/dice.wav",
            "playing": false, "volume": 0.5, "repeat": false}]})
}

fn scene(req: &Value) -> Value {
    json!({"_id": or(req, "sceneId", SCENE_ID), "name": or(req, "name", "test-scene"),
        "active": true, "width": 4000, "height": 3000, "background": {"src": "rest-api-tests/test-background.png"},
        "grid": {"size": 100, "type": 1}})
}

/// The module's success reply to `req`, or None when the module would not answer.
pub fn module_reply(req: &Value, ctx: &ReplyCtx) -> Option<Value> {
    let ty = req.get("type")?.as_str()?;
    if !answers(ty, &ctx.system_id) {
        return None;
    }
    let rt = format!("{ty}-result");
    let r = |fields: Value| Some(reply(&rt, req, fields));
    let uuid = or(req, "uuid", ACTOR_UUID);
    let enc_id = or(req, "encounterId", "OsBeVLchZ1cMoIi3");
    match ty {
        "chat-messages" => {
            let offset = val(req, "offset", json!(0));
            let limit = val(req, "limit", json!(50));
            r(
                json!({"success": true, "data": {"messages": [chat_message("6378UGmZxjLze4HK", "Hello")],
                "total": 1, "offset": offset, "limit": limit}}),
            )
        }
        "chat-send" => {
            let mut m = chat_message("iM6Dvf2zMmtKz6GY", or(req, "content", ""));
            m["flavor"] = val(req, "flavor", json!(""));
            m["whisper"] = val(req, "whisper", json!([]));
            m["type"] = val(req, "chatType", json!("base"));
            r(json!({"success": true, "data": m}))
        }
        "chat-delete" => {
            r(json!({"success": true, "data": {"messageId": val(req, "messageId", Value::Null)}}))
        }
        "chat-flush" => {
            r(json!({"success": true, "data": {"message": "All chat messages have been deleted"}}))
        }
        "rolls" => {
            r(json!({"data": [roll_entry("manual_1782956918692_n3iweer4g58", "2d20kh", 7)]}))
        }
        "last-roll" => {
            r(json!({"data": roll_entry("manual_1782956918692_n3iweer4g58", "2d20kh", 7)}))
        }
        "roll" => {
            let ts = now_ms();
            r(json!({"success": true, "data": {
                "id": format!("manual_{ts}_n3iweer4g58"),
                "chatMessageCreated": req.get("createChatMessage").and_then(Value::as_bool).unwrap_or(false),
                "roll": {"formula": or(req, "formula", "1d20"), "total": 7, "isCritical": false,
                    "isFumble": false, "dice": [{"faces": 20, "results": [{"result": 7, "active": true}]}],
                    "timestamp": ts}}}))
        }
        "search" => {
            let mut f = json!({"results": [{"documentType": "Actor", "folder": null, "id": "w8wIGpE73y2AYrCo",
                "name": "test-perrin (halfling monk)", "package": null, "packageName": null,
                "subType": "character", "uuid": "Actor.w8wIGpE73y2AYrCo",
                "icon": "systems/dnd5e/tokens/heroes/MonkStaff.webp",
                "journalLink": "@UUID[Actor.w8wIGpE73y2AYrCo]{test-perrin (halfling monk)}",
                "tagline": "Actors Directory", "formattedMatch": "test-perrin", "resultType": "EntitySearchItem"}]});
            for k in ["clientId", "query", "filter"] {
                if let Some(v) = req.get(k) {
                    f[k] = v.clone();
                }
            }
            r(f)
        }
        "entity" => r(
            json!({"uuid": uuid, "data": {"_id": "V5OF1QXHjaIy6iO8", "name": "Test Actor",
            "type": "character", "img": "icons/svg/mystery-man.svg", "system": {"attributes": {"hp": {"value": 8, "max": 8}}},
            "items": [], "effects": [], "folder": null}}),
        ),
        "create" => {
            let et = or(req, "entityType", "Actor");
            let mut entity = val(req, "data", json!({}));
            entity["_id"] = json!("iBOb2yPrSrIP3brR");
            r(json!({"uuid": format!("{et}.iBOb2yPrSrIP3brR"), "entity": entity}))
        }
        "update" => {
            let mut entity = val(req, "data", json!({}));
            entity["_id"] = json!("V5OF1QXHjaIy6iO8");
            r(json!({"uuid": uuid, "entity": [entity]}))
        }
        "delete" => r(json!({"uuid": uuid, "success": true})),
        "increase" | "decrease" => {
            let amount = req.get("amount").and_then(Value::as_f64).unwrap_or(1.0);
            let new = if ty == "increase" {
                1.0 + amount
            } else {
                1.0 - amount
            };
            r(
                json!({"results": [{"uuid": uuid, "attribute": val(req, "attribute", json!("")),
                "oldValue": 1, "newValue": new}], "success": true}),
            )
        }
        "kill" => r(json!({"results": [{"uuid": uuid, "success": true,
            "message": "Actor marked as defeated, HP set to 0, and dead effect applied to 0 tokens"}]})),
        "give" => r(
            json!({"fromUuid": val(req, "fromUuid", Value::Null), "toUuid": val(req, "toUuid", Value::Null),
            "quantity": val(req, "quantity", json!(1)), "itemUuid": val(req, "itemUuid", Value::Null),
            "newItemId": "MB7yZQHsEAi5CMgF", "success": true}),
        ),
        "remove" => r(
            json!({"actorUuid": val(req, "actorUuid", Value::Null), "itemUuid": val(req, "itemUuid", Value::Null),
            "quantity": val(req, "quantity", json!(0)), "success": true}),
        ),
        "encounters" => r(json!({"encounters": [encounter("OsBeVLchZ1cMoIi3", 1, 0)]})),
        "start-encounter" => r(
            json!({"encounterId": "OsBeVLchZ1cMoIi3", "encounter": encounter("OsBeVLchZ1cMoIi3", 1, 0)}),
        ),
        "next-turn" | "next-round" | "last-turn" | "last-round" => {
            let (action, round) = match ty {
                "next-turn" => ("nextTurn", 2),
                "next-round" => ("nextRound", 3),
                "last-turn" => ("previousTurn", 2),
                _ => ("previousRound", 1),
            };
            r(
                json!({"encounterId": enc_id, "action": action, "currentTurn": 0, "currentRound": round,
                "actorTurn": format!("{TOKEN_UUID}.Actor.V5OF1QXHjaIy6iO8"), "tokenTurn": TOKEN_UUID,
                "encounter": {"id": enc_id, "name": "New Encounter", "round": round, "turn": 0}}),
            )
        }
        "end-encounter" => {
            r(json!({"encounterId": enc_id, "message": "Encounter successfully ended"}))
        }
        "add-to-encounter" => r(
            json!({"encounterId": enc_id, "added": val(req, "uuids", json!([TOKEN_UUID])), "failed": []}),
        ),
        "remove-from-encounter" => r(
            json!({"encounterId": enc_id, "removed": val(req, "uuids", json!([TOKEN_UUID])), "failed": []}),
        ),
        "structure" => r(
            json!({"data": {"folders": {}, "entities": {"actors": [{"uuid": ACTOR_UUID, "name": "Test Actor"}]}}}),
        ),
        "get-folder" => r(
            json!({"data": {"id": "EaD5zungr24HhA1P", "uuid": "Folder.EaD5zungr24HhA1P",
            "name": val(req, "name", json!("test-folder")), "type": "Scene", "parentFolder": null, "contents": []}}),
        ),
        "create-folder" => r(
            json!({"data": {"id": "EaD5zungr24HhA1P", "uuid": "Folder.EaD5zungr24HhA1P",
            "name": val(req, "name", json!("test-folder")), "type": val(req, "folderType", json!("Scene")),
            "parentFolder": val(req, "parentFolderId", Value::Null)}}),
        ),
        "delete-folder" => r(
            json!({"data": {"deleted": true, "folderId": val(req, "folderId", Value::Null),
            "entitiesDeleted": 0, "foldersDeleted": 1}}),
        ),
        "contents" => r(json!({"path": val(req, "path", json!("")), "entities": []})),
        "macros" => r(
            json!({"macros": [{"uuid": "Macro.7zDXWfoXIJPrJ7uh", "id": "7zDXWfoXIJPrJ7uh",
            "name": "test-macro", "type": "script", "author": "Gamemaster", "command": "return args;",
            "img": "icons/svg/dice-target.svg", "scope": "global", "canExecute": true}]}),
        ),
        "macro-execute" => {
            r(json!({"uuid": uuid, "success": true, "result": val(req, "args", Value::Null)}))
        }
        "execute-js" => r(json!({"success": true, "result": "ws://relay:3010"})),
        "players" => {
            let users: Vec<Value> = ctx
                .users
                .iter()
                .map(|u| {
                    let mut f = user_full(u);
                    if let Some(m) = f.as_object_mut() {
                        m.remove("character");
                    }
                    f
                })
                .collect();
            r(json!({"users": users}))
        }
        "world-info" => r(json!({"data": {
            "world": {"id": ctx.world_id, "title": ctx.world_title},
            "system": {"id": ctx.system_id, "title": ctx.system_title, "version": ctx.system_version},
            "foundryVersion": ctx.foundry_version,
            "modules": [{"id": "foundry-rest-api", "title": "Foundry REST API", "version": "3.4.1", "active": true}],
            "users": ctx.users.iter().map(user_full).collect::<Vec<_>>(),
            "activeScene": {"id": SCENE_ID, "name": "test-scene"}}})),
        "server-url" => r(json!({"data": {"publicUrl": "http://localhost:30000"}})),
        "select" => r(
            json!({"success": true, "count": 1, "message": "1 entities selected", "selected": [TOKEN_UUID]}),
        ),
        "selected" => r(
            json!({"success": true, "selected": [{"tokenUuid": TOKEN_UUID,
            "actorUuid": format!("{TOKEN_UUID}.Actor.V5OF1QXHjaIy6iO8")}]}),
        ),
        "file-system" => r(json!({"success": true, "path": val(req, "path", json!("")),
            "source": val(req, "source", json!("data")),
            "results": [{"name": "assets", "path": "assets", "type": "directory"},
                {"name": "test-file.txt", "path": "rest-api-tests/test-file.txt", "type": "file"}],
            "recursive": val(req, "recursive", json!(false))})),
        "upload-file" => {
            let dir = or(req, "path", "");
            let name = or(req, "filename", "upload.bin");
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", dir.trim_end_matches('/'))
            };
            r(json!({"success": true, "path": path}))
        }
        "download-file" => {
            let path = or(req, "path", "rest-api-tests/test-file.txt");
            let (mime, bytes) = download_content(path, ctx.download_size);
            let filename = path.rsplit('/').next().unwrap_or(path);
            r(
                json!({"success": true, "path": path, "fileData": data_url(&mime, &bytes),
                "filename": filename, "mimeType": mime}),
            )
        }
        "get-scene" => {
            if req.get("all").and_then(Value::as_bool).unwrap_or(false) {
                r(json!({"data": [scene(req)]}))
            } else {
                r(json!({"data": scene(req)}))
            }
        }
        "create-scene" | "update-scene" => {
            let mut sc = scene(req);
            if let (Some(m), Some(d)) = (
                sc.as_object_mut(),
                req.get("data").and_then(Value::as_object),
            ) {
                m.extend(d.clone());
            }
            r(json!({"data": sc}))
        }
        "delete-scene" => r(json!({"success": true})),
        "switch-scene" => r(json!({"success": true, "data": scene(req)})),
        "get-canvas-documents" => r(json!({"sceneId": or(req, "sceneId", SCENE_ID),
            "documentType": val(req, "documentType", json!("tokens")), "data": []})),
        "create-canvas-document" | "update-canvas-document" => {
            let mut d = val(req, "data", json!({}));
            d["_id"] = val(req, "documentId", json!("TYZyTN7boWAr11Zw"));
            r(json!({"sceneId": or(req, "sceneId", SCENE_ID),
                "documentType": val(req, "documentType", json!("tokens")), "data": [d]}))
        }
        "delete-canvas-document" => r(json!({"sceneId": or(req, "sceneId", SCENE_ID),
            "documentType": val(req, "documentType", json!("tokens")), "success": true})),
        "move-token" => r(
            json!({"data": {"tokenUuid": TOKEN_UUID, "name": "Test Actor",
            "x": val(req, "x", json!(0)), "y": val(req, "y", json!(0)), "sceneId": or(req, "sceneId", SCENE_ID)}}),
        ),
        "measure-distance" => r(json!({"data": {"distance": 25, "units": "ft",
            "origin": {"x": val(req, "originX", json!(0)), "y": val(req, "originY", json!(0))},
            "target": {"x": val(req, "targetX", json!(500)), "y": val(req, "targetY", json!(500))},
            "sceneId": or(req, "sceneId", SCENE_ID)}})),
        "get-status-effects" => r(json!({"data": {"effects": [
            {"id": "dead", "name": "Dead", "icon": "systems/dnd5e/icons/svg/statuses/dead.svg"},
            {"id": "prone", "name": "Prone", "icon": "systems/dnd5e/icons/svg/statuses/prone.svg"}]}})),
        "get-effects" => r(json!({"data": {"uuid": uuid, "effects": []}})),
        "add-effect" => r(
            json!({"data": {"uuid": uuid, "statusId": val(req, "statusId", Value::Null), "added": true}}),
        ),
        "remove-effect" => r(
            json!({"data": {"uuid": uuid, "effectId": val(req, "effectId", Value::Null), "removed": true}}),
        ),
        "get-playlists" => r(json!({"data": {"playlists": [playlist()]}})),
        "playlist-play" | "playlist-stop" | "playlist-next" | "playlist-volume" => {
            let mut p = playlist();
            p["playing"] = json!(ty != "playlist-stop");
            r(json!({"data": {"playlist": p}}))
        }
        "play-sound" => r(json!({"data": {"src": val(req, "src", Value::Null),
            "volume": val(req, "volume", json!(0.5)), "loop": val(req, "loop", json!(false))}})),
        "stop-sound" => r(json!({"data": {"stopped": 0, "src": val(req, "src", Value::Null)}})),
        "get-users" => r(json!({"data": ctx.users.iter().map(user_full).collect::<Vec<_>>()})),
        "get-user" => {
            let want_id = s(req, "id");
            let want_name = s(req, "name");
            let found = ctx.users.iter().find(|u| {
                want_id.is_some_and(|i| u["id"] == i)
                    || want_name.is_some_and(|n| {
                        u["name"]
                            .as_str()
                            .is_some_and(|x| x.eq_ignore_ascii_case(n))
                    })
            });
            match found {
                Some(u) => r(json!({"data": user_full(u)})),
                None => r(
                    json!({"error": format!("User not found: {}", want_id.or(want_name).unwrap_or("")), "data": null}),
                ),
            }
        }
        "create-user" => r(json!({"data": user_full(&json!({"id": "CVPbiFSd09YMMXrp",
            "name": val(req, "name", json!("test-api-user")), "role": val(req, "role", json!(1)), "active": false}))})),
        "update-user" => r(
            json!({"data": user_full(&json!({"id": val(req, "id", json!("CVPbiFSd09YMMXrp")),
            "name": val(req, "name", json!("test-api-user")), "role": 1, "active": false}))}),
        ),
        "delete-user" => r(json!({"success": true})),
        "scene-screenshot" | "sheet-screenshot" => {
            let (mime, bytes) = screenshot_bytes(s(req, "format"));
            let mut f = json!({"imageData": data_url(mime, bytes), "mimeType": mime,
                "width": val(req, "width", json!(1)), "height": val(req, "height", json!(1))});
            if ty == "sheet-screenshot" {
                f["success"] = json!(true);
            }
            r(f)
        }
        "scene-raw-image" => r(
            json!({"data": {"sceneId": or(req, "sceneId", SCENE_ID), "sceneName": "test-scene",
            "src": "rest-api-tests/test-background.png", "imageData": data_url("image/png", TINY_PNG),
            "mimeType": "image/png"}}),
        ),
        // Session messages are keyed by sessionId, not requestId (module-protocol.md §5).
        "interactive-session-start" => Some(json!({"type": "interactive-session-started",
            "sessionId": val(req, "sessionId", Value::Null),
            "imageData": format!("data:image/jpeg;base64,{}", base64_encode(TINY_JPEG)),
            "mimeType": "image/jpeg", "width": 1, "height": 1})),
        "interactive-input" => {
            const ACTIONS: &[&str] = &[
                "click",
                "dblclick",
                "mousedown",
                "mouseup",
                "contextmenu",
                "scroll",
                "keydown",
                "keyup",
            ];
            // Anything else throws inside the module and is only logged.
            if !s(req, "action").is_some_and(|a| ACTIONS.contains(&a)) {
                return None;
            }
            Some(
                json!({"type": "interactive-frame", "sessionId": val(req, "sessionId", Value::Null),
                "imageData": format!("data:image/jpeg;base64,{}", base64_encode(TINY_JPEG)),
                "mimeType": "image/jpeg", "width": 1, "height": 1, "trigger": "input"}),
            )
        }
        "interactive-session-end" => Some(json!({"type": "interactive-session-ended",
            "sessionId": val(req, "sessionId", Value::Null), "reason": "client-requested"})),
        _ => Some(reply(
            &rt,
            req,
            dnd5e_fields(ty, req).unwrap_or_else(|| json!({"data": params_of(req)})),
        )),
    }
}

/// dnd5e reply bodies from the captured traffic (spec/examples/dnd5e-examples.json).
fn dnd5e_fields(ty: &str, req: &Value) -> Option<Value> {
    let actor = val(req, "actorUuid", json!(ACTOR_UUID));
    let d = match ty {
        "get-actor-details" => {
            json!({"uuid": actor, "resources": {}, "details": val(req, "details", json!([]))})
        }
        "modify-experience" => {
            json!({"actorUuid": actor, "oldXp": 0, "newXp": val(req, "amount", json!(0))})
        }
        "modify-item-charges" => {
            json!({"itemUuid": val(req, "itemUuid", Value::Null), "oldCharges": 4, "newCharges": 3})
        }
        "use-ability" | "use-feature" | "use-spell" | "use-item" => {
            json!({"uuid": actor, "ability": val(req, "abilityName", Value::Null)})
        }
        "skill-check" => {
            json!({"actorUuid": actor, "skill": val(req, "skill", Value::Null), "total": 14,
            "formula": "1d20 + 0", "result": "14 + 0"})
        }
        "ability-save" | "ability-check" => {
            json!({"actorUuid": actor, "ability": val(req, "ability", Value::Null),
            "total": 15, "formula": "1d20 + 0", "result": "15 + 0"})
        }
        "death-save" => json!({"actorUuid": actor, "total": 16, "formula": "1d20", "result": "16",
            "deathSaves": {"success": 1, "failure": 0}}),
        "short-rest" | "long-rest" => json!({"actorUuid": actor, "result": {
            "type": if ty == "short-rest" { "short" } else { "long" }, "deltas": {"hitPoints": 0, "hitDice": 0}}}),
        "get-concentration" => {
            json!({"actorUuid": actor, "isConcentrating": false, "effect": null, "spell": null})
        }
        "concentration-save" => {
            json!({"actorUuid": actor, "dc": 10, "total": 13, "formula": "1d20 + 0",
            "result": "13 + 0", "maintained": true})
        }
        "break-concentration" => {
            json!({"actorUuid": actor, "broken": true, "removedEffectId": "5JqtFclmzmwMNV3c"})
        }
        "equip-item" => {
            json!({"actorUuid": actor, "itemUuid": "Actor.V5OF1QXHjaIy6iO8.Item.WeKJI3gPUAU52WAX",
            "itemName": val(req, "itemName", Value::Null), "equipped": val(req, "equipped", json!(true))})
        }
        "attune-item" => {
            json!({"actorUuid": actor, "itemUuid": "Actor.V5OF1QXHjaIy6iO8.Item.WeKJI3gPUAU52WAX",
            "itemName": val(req, "itemName", Value::Null), "attuned": val(req, "attuned", json!(true))})
        }
        "transfer-currency" => json!({"sourceActorUuid": val(req, "sourceActorUuid", Value::Null),
            "targetActorUuid": val(req, "targetActorUuid", Value::Null), "transferred": val(req, "currency", json!({}))}),
        "modify-currency" => {
            json!({"actorUuid": actor, "currency": val(req, "currency", json!({}))})
        }
        "prepare-spell" => {
            json!({"actorUuid": actor, "spellName": val(req, "spellName", Value::Null), "prepared": true})
        }
        _ => return None,
    };
    Some(json!({"data": d}))
}

/// The module's error reply for `req` with message `msg` (module-protocol.md §3.3 and the
/// ERR column of §3.5), or None where the module only logs.
pub fn error_reply(req: &Value, msg: &str) -> Option<Value> {
    let ty = req.get("type")?.as_str()?;
    let rt = format!("{ty}-result");
    let mut f = json!({"error": msg});
    const WITH_SUCCESS_FALSE: &[&str] = &[
        "chat-messages",
        "chat-send",
        "chat-delete",
        "chat-flush",
        "roll",
        "increase",
        "decrease",
        "kill",
        "give",
        "remove",
        "macro-execute",
        "execute-js",
        "select",
        "selected",
        "file-system",
        "upload-file",
        "download-file",
        "delete-scene",
        "switch-scene",
        "delete-canvas-document",
        "delete-user",
        "sheet-screenshot",
    ];
    if WITH_SUCCESS_FALSE.contains(&ty) {
        f["success"] = json!(false);
    }
    match ty {
        "entity" => {
            f["uuid"] = val(req, "uuid", Value::Null);
            f["data"] = Value::Null;
        }
        "macro-execute" => f["uuid"] = val(req, "uuid", Value::Null),
        "get-scene" | "get-folder" | "get-users" | "get-user" => f["data"] = Value::Null,
        "structure" => f["data"] = json!({}),
        "search" => {
            f["query"] = val(req, "query", Value::Null);
            f["results"] = json!([]);
        }
        "contents" => {
            f["path"] = val(req, "path", Value::Null);
            f["entities"] = json!([]);
        }
        "encounters" => f["encounters"] = json!([]),
        "macros" => f["macros"] = json!([]),
        "players" => f["users"] = json!([]),
        // module-protocol.md §3.3: the one error reply whose type is not `<type>-result`.
        "last-round" => return Some(reply("encounter-navigation", req, f)),
        "interactive-session-start" => {
            f["sessionId"] = val(req, "sessionId", Value::Null);
            f["fatal"] = json!(true);
            return Some(reply("interactive-session-error", req, f));
        }
        "interactive-input" | "interactive-session-end" => return None,
        _ => {}
    }
    Some(reply(&rt, req, f))
}

/// A `chat-event` payload (`data` of the pushed message) for a created message.
pub fn chat_event_create(id: &str, content: &str) -> Value {
    json!({"eventType": "create", "data": chat_message(id, content)})
}

/// A `roll-data` payload.
pub fn roll_data(id: &str, formula: &str, total: i64) -> Value {
    roll_entry(id, formula, total)
}

/// A `hook-event` payload.
pub fn hook_event(hook: &str, args: Value) -> Value {
    json!({"hook": hook, "args": args})
}

/// A `combat-event` turn payload.
pub fn combat_turn(encounter_id: &str, round: i64, turn: i64) -> Value {
    json!({"eventType": "turn", "encounterId": encounter_id, "round": round, "turn": turn, "started": true,
        "combatants": [{"id": "xlDsyE2WEgWJpTUB", "name": "Test Actor", "initiative": 12, "defeated": false,
            "uuid": format!("{TOKEN_UUID}.Actor.V5OF1QXHjaIy6iO8")}]})
}

/// An `actor-event` update payload.
pub fn actor_update(actor_uuid: &str, changes: Value) -> Value {
    json!({"actorUuid": actor_uuid, "eventType": "update", "changes": changes})
}

/// A `scene-event` token-update payload.
pub fn scene_token_update(scene_id: &str, token_id: &str, changes: Value) -> Value {
    json!({"sceneId": scene_id, "eventType": "token-update", "tokenId": token_id, "changes": changes})
}

/// The bytes of an `upload-file` request: a `fileData` data URL or a `binaryData` byte array
/// (module-protocol.md §3.5).
pub fn upload_bytes(req: &Value) -> Option<Vec<u8>> {
    if let Some(url) = req.get("fileData").and_then(Value::as_str) {
        return super::enc::decode_data_url(url).map(|(_, b)| b);
    }
    let arr = req.get("binaryData")?.as_array()?;
    arr.iter()
        .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
        .collect()
}
