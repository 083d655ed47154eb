//! What `/mcp` offers a model: tools generated from the served route table (routes.tsv),
//! the curated default set with titles, descriptions and annotations written for a model,
//! resource URIs and prompts. Pure: built once at start-up from the `Config` and the routes.
//!
//! A tool is a forwarded route: its input schema is derived from the route's parameters, and
//! a call goes through the same parameter extraction as REST (`forward::extract_params`) on a
//! copy of the route that reads every parameter from the arguments object.

use serde_json::{json, Map, Value};

use crate::http::route::{Kind, PType, Route, RouteTable, Source};

/// One curated tool: a route (by module type) presented for a model.
struct Curated {
    ws_type: &'static str,
    name: &'static str,
    title: &'static str,
    description: &'static str,
    /// `readOnlyHint`, `destructiveHint`, `idempotentHint` (MCP 2025-06-18 ToolAnnotations).
    hints: (bool, bool, bool),
    /// Part of `--mcp-tools default`.
    default: bool,
}

const RO: (bool, bool, bool) = (true, false, true);
const WRITE: (bool, bool, bool) = (false, false, false);
const IDEMPOTENT: (bool, bool, bool) = (false, false, true);
const DESTRUCTIVE: (bool, bool, bool) = (false, true, false);

/// Module types whose tools run code in the world: listed and callable only with
/// `--mcp-allow-code` and the route's scope.
pub const CODE_TYPES: &[&str] = &["execute-js", "macro-execute"];

#[rustfmt::skip]
const CURATED: &[Curated] = &[
    Curated { ws_type: "world-info", name: "world_info", title: "World info", description: "Describe the connected Foundry world: title, game system and version, and counts of its documents. Call this first to learn what the world is.", hints: RO, default: true },
    Curated { ws_type: "players", name: "players_online", title: "Players online", description: "List the world's users with whether each is online now, their role and character.", hints: RO, default: true },
    Curated { ws_type: "get-users", name: "list_users", title: "List users", description: "List every user account of the world (id, name, role, whether GM, active).", hints: RO, default: true },
    Curated { ws_type: "search", name: "search", title: "Search the world", description: "Full-text search over the world's documents (actors, items, journal entries, scenes, ...). Returns matches with their uuid, which the other tools take. `filter` narrows by document type, e.g. \"documentType:Actor\" or \"documentType:JournalEntry\".", hints: RO, default: true },
    Curated { ws_type: "entity", name: "get_entity", title: "Read a document", description: "Read one document by uuid (e.g. Actor.abc123, Item.xyz, JournalEntry.j1, Scene.s1), with its full data. Journal pages are in the entry's `pages`.", hints: RO, default: true },
    Curated { ws_type: "create", name: "create_document", title: "Create a document", description: "Create a world document of `entityType` (Actor, Item, JournalEntry, Scene, RollTable, Macro, ...) from `data` (Foundry document fields, e.g. {\"name\":\"Goblin\",\"type\":\"npc\"}). Returns the new uuid.", hints: WRITE, default: true },
    Curated { ws_type: "update", name: "update_entity", title: "Update a document", description: "Update the document `uuid` with `data`, a partial object of Foundry fields (dot paths allowed, e.g. {\"system.attributes.hp.value\": 5}).", hints: IDEMPOTENT, default: true },
    Curated { ws_type: "delete", name: "delete_entity", title: "Delete a document", description: "Delete the document `uuid` permanently. Ask the user before calling.", hints: DESTRUCTIVE, default: true },
    Curated { ws_type: "increase", name: "increase_attribute", title: "Increase an attribute", description: "Add `amount` to a numeric attribute of the document `uuid` (e.g. attribute \"system.attributes.hp.value\").", hints: WRITE, default: true },
    Curated { ws_type: "decrease", name: "decrease_attribute", title: "Decrease an attribute", description: "Subtract `amount` from a numeric attribute of the document `uuid` (e.g. damage: attribute \"system.attributes.hp.value\").", hints: WRITE, default: true },
    Curated { ws_type: "give", name: "give_item", title: "Give an item", description: "Move or copy an item (by itemUuid or itemName) from one actor to another (fromUuid, toUuid).", hints: WRITE, default: true },
    Curated { ws_type: "chat-messages", name: "read_chat", title: "Read chat", description: "Read recent chat messages, newest first (`limit`, `offset`).", hints: RO, default: true },
    Curated { ws_type: "chat-send", name: "send_chat", title: "Send a chat message", description: "Post a chat message with `content` (HTML allowed); `whisper` lists user ids to whisper to, `speaker` an actor uuid to speak as.", hints: WRITE, default: true },
    Curated { ws_type: "roll", name: "roll_dice", title: "Roll dice", description: "Roll a dice `formula` (Foundry syntax: 1d20+5, 4d6kh3, 2d20kh). Set createChatMessage to show the roll in chat.", hints: WRITE, default: true },
    Curated { ws_type: "rolls", name: "recent_rolls", title: "Recent rolls", description: "List the most recent dice rolls made in the world.", hints: RO, default: true },
    Curated { ws_type: "encounters", name: "list_encounters", title: "List encounters", description: "List the world's combat encounters with their round, turn and combatants (initiative, defeated).", hints: RO, default: true },
    Curated { ws_type: "start-encounter", name: "start_encounter", title: "Start an encounter", description: "Start a combat encounter with the given token uuids (`tokens`), or the selected tokens / player characters; optionally roll initiative for NPCs or everyone.", hints: WRITE, default: true },
    Curated { ws_type: "add-to-encounter", name: "add_to_encounter", title: "Add to an encounter", description: "Add tokens (`uuids`) to an encounter (the current one unless `encounter` is given).", hints: WRITE, default: true },
    Curated { ws_type: "next-turn", name: "next_turn", title: "Next turn", description: "Advance the encounter (the current one unless `encounter` is given) to the next combatant's turn.", hints: WRITE, default: true },
    Curated { ws_type: "next-round", name: "next_round", title: "Next round", description: "Advance the encounter to the next round.", hints: WRITE, default: true },
    Curated { ws_type: "last-turn", name: "previous_turn", title: "Previous turn", description: "Step the encounter back to the previous turn.", hints: WRITE, default: true },
    Curated { ws_type: "end-encounter", name: "end_encounter", title: "End an encounter", description: "End (delete) the encounter (the current one unless `encounter` is given).", hints: DESTRUCTIVE, default: true },
    Curated { ws_type: "get-scene", name: "get_scenes", title: "Read scenes", description: "Read a scene by sceneId or name, the active one (active=true), or every scene (all=true).", hints: RO, default: true },
    Curated { ws_type: "switch-scene", name: "activate_scene", title: "Activate a scene", description: "Make the scene (sceneId or name) the active scene every player sees.", hints: IDEMPOTENT, default: true },
    Curated { ws_type: "get-canvas-documents", name: "list_canvas", title: "List canvas documents", description: "List placeables of a scene: `documentType` is tokens, tiles, drawings, lights, sounds, notes, templates, walls or regions (active scene unless sceneId).", hints: RO, default: true },
    Curated { ws_type: "move-token", name: "move_token", title: "Move a token", description: "Move a token (by uuid or name) to pixel coordinates x, y on its scene, optionally through waypoints.", hints: IDEMPOTENT, default: true },
    Curated { ws_type: "measure-distance", name: "measure_distance", title: "Measure distance", description: "Measure the grid distance between two tokens (by uuid or name) or two points.", hints: RO, default: true },
    Curated { ws_type: "get-effects", name: "get_effects", title: "Read effects", description: "List the active effects on the actor or token `uuid`.", hints: RO, default: true },
    Curated { ws_type: "add-effect", name: "add_effect", title: "Add an effect", description: "Apply a status effect (statusId, e.g. \"poisoned\", \"prone\") or custom effectData to the actor `uuid`.", hints: WRITE, default: true },
    Curated { ws_type: "remove-effect", name: "remove_effect", title: "Remove an effect", description: "Remove an effect (effectId or statusId) from the actor `uuid`.", hints: DESTRUCTIVE, default: true },
    Curated { ws_type: "structure", name: "folder_structure", title: "Folder structure", description: "List the world's folders and the documents in them (`path`, `recursive`, `types`).", hints: RO, default: true },
    Curated { ws_type: "macros", name: "list_macros", title: "List macros", description: "List the world's macros (id, uuid, name, type).", hints: RO, default: true },
    Curated { ws_type: "macro-execute", name: "run_macro", title: "Run a macro", description: "Execute the macro `uuid` in the world, with optional `args`. Runs code in the world.", hints: WRITE, default: true },
    Curated { ws_type: "execute-js", name: "execute_js", title: "Run JavaScript", description: "Run a JavaScript `script` inside the Foundry world as the GM and return its result. Powerful and risky: prefer the specific tools.", hints: DESTRUCTIVE, default: true },
    Curated { ws_type: "get-playlists", name: "list_playlists", title: "List playlists", description: "List playlists and their sounds, with what is playing.", hints: RO, default: false },
    Curated { ws_type: "playlist-play", name: "play_playlist", title: "Play a playlist", description: "Start a playlist (playlistId or playlistName), or one sound of it.", hints: IDEMPOTENT, default: false },
    Curated { ws_type: "playlist-stop", name: "stop_playlist", title: "Stop a playlist", description: "Stop a playing playlist.", hints: IDEMPOTENT, default: false },
];

/// Short hints for common parameters, shown to the model in the input schema.
const PARAM_DOCS: &[(&str, &str)] = &[
    ("clientId", "The world (clientId) to act on. Needed only when your key can see several connected worlds; see the foundry://worlds resource."),
    ("userId", "Act as this Foundry user (id or name) instead of the GM, with that user's permissions."),
    ("uuid", "A Foundry document uuid, e.g. Actor.abc123 or Scene.s1.Token.t1."),
    ("selected", "Use the currently selected token(s) instead of a uuid."),
    ("data", "Foundry document fields as an object."),
    ("formula", "Dice formula, e.g. 1d20+5."),
    ("limit", "At most this many results."),
    ("encounter", "Encounter id; the current encounter when omitted."),
    ("sceneId", "Scene id; the active scene when omitted."),
];

/// One tool `/mcp` can offer.
pub struct Tool {
    pub name: String,
    /// Index of the route in the route table (for reply shaping and timeouts).
    pub route: usize,
    pub ws_type: String,
    pub scope: String,
    pub code: bool,
    /// The route with every parameter read from the arguments object (method POST, sources
    /// `body` first): `forward::extract_params` on it coerces and validates the arguments.
    pub args_route: Route,
    /// The `tools/list` entry, serialized once.
    pub listing: Value,
}

/// Which tools `--mcp-tools` selects: `default`, `all`, or a comma list of tool names.
fn selected(spec: &[String], name: &str, curated_default: bool) -> bool {
    match spec {
        [one] if one == "default" => curated_default,
        [one] if one == "all" => true,
        list => list.iter().any(|n| n == name),
    }
}

/// Build the tool table from the route table and `--mcp-tools`.
pub fn build(routes: &RouteTable, spec: &[String]) -> Vec<Tool> {
    let mut tools = Vec::new();
    for (idx, route) in routes.routes().iter().enumerate() {
        // Binary replies (screenshots, downloads) are not text a model can use here.
        if route.kind != Kind::Forward || route.ws_type.is_empty() {
            continue;
        }
        let curated = CURATED.iter().find(|c| c.ws_type == route.ws_type);
        let auto_name = route.ws_type.replace('-', "_");
        let (name, default) = match curated {
            Some(c) => (c.name.to_string(), c.default),
            None => (auto_name, false),
        };
        if !selected(spec, &name, default) {
            continue;
        }
        let (title, description, hints) = match curated {
            Some(c) => (c.title.to_string(), c.description.to_string(), c.hints),
            None => {
                let hints = match route.method.as_str() {
                    "GET" => RO,
                    "DELETE" => DESTRUCTIVE,
                    "PUT" => IDEMPOTENT,
                    _ => WRITE,
                };
                (
                    route.ws_type.replace('-', " "),
                    format!(
                        "Calls {} {} on the Foundry world (fvtt-relay REST route; needs scope {}).",
                        route.method, route.pattern, route.scope
                    ),
                    hints,
                )
            }
        };
        let listing = json!({
            "name": name,
            "title": title,
            "description": description,
            "inputSchema": input_schema(route),
            "annotations": {
                "title": title,
                "readOnlyHint": hints.0,
                "destructiveHint": hints.1,
                "idempotentHint": hints.2,
                "openWorldHint": false,
            },
        });
        let mut listing = listing;
        if let Some(schema) = output_schema(&route.ws_type) {
            listing["outputSchema"] = schema;
        }
        tools.push(Tool {
            name,
            route: idx,
            ws_type: route.ws_type.clone(),
            scope: route.scope.clone(),
            code: CODE_TYPES.contains(&route.ws_type.as_str()),
            args_route: args_route(route),
            listing,
        });
    }
    tools
}

/// Every tool name `--mcp-tools` may list (for validating the option).
pub fn known_name(routes: &RouteTable, name: &str) -> bool {
    routes.routes().iter().any(|r| {
        r.kind == Kind::Forward
            && !r.ws_type.is_empty()
            && CURATED
                .iter()
                .find(|c| c.ws_type == r.ws_type)
                .map_or_else(|| r.ws_type.replace('-', "_") == name, |c| c.name == name)
    })
}

fn args_route(route: &Route) -> Route {
    let mut r = route.clone();
    r.method = "POST".into();
    for p in &mut r.params {
        let keep_path = p.sources.contains(&Source::Path);
        p.sources = vec![Source::Body];
        if keep_path {
            // `validate` recognises canvas routes by a path-sourced documentType.
            p.sources.push(Source::Path);
        }
    }
    r
}

/// The JSON Schema (2020-12 subset) of a route's parameters.
fn input_schema(route: &Route) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for p in &route.params {
        let mut s = match p.ptype {
            PType::String => json!({"type": "string"}),
            PType::Number => json!({"type": "number"}),
            PType::Boolean => json!({"type": "boolean"}),
            PType::Array => json!({"type": "array"}),
            PType::Object => json!({"type": "object"}),
            PType::Any => json!({}),
        };
        if let Some((_, doc)) = PARAM_DOCS.iter().find(|(n, _)| *n == p.name) {
            s["description"] = Value::from(*doc);
        }
        if p.name == "documentType" {
            s["enum"] = json!([
                "tokens",
                "tiles",
                "drawings",
                "lights",
                "sounds",
                "notes",
                "templates",
                "walls",
                "regions"
            ]);
        }
        if p.required {
            required.push(Value::from(p.name.as_str()));
        }
        props.insert(p.name.clone(), s);
    }
    let mut schema = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        schema["required"] = Value::Array(required);
    }
    schema
}

/// Output schemas where the module's reply shape is known (module v3.x). Loose on purpose:
/// nothing is `required` that a module version might omit, so a valid reply always conforms.
fn output_schema(ws_type: &str) -> Option<Value> {
    let obj = |props: Value| json!({"type": "object", "properties": props});
    Some(match ws_type {
        "roll" => obj(json!({
            "success": {"type": "boolean"},
            "data": obj(json!({
                "id": {"type": "string"},
                "chatMessageCreated": {"type": "boolean"},
                "roll": obj(json!({"formula": {"type": "string"}, "total": {"type": "number"},
                    "isCritical": {"type": "boolean"}, "isFumble": {"type": "boolean"}})),
            })),
        })),
        "search" => obj(json!({"results": {"type": "array", "items": obj(json!({
            "uuid": {"type": "string"}, "name": {"type": "string"}, "documentType": {"type": "string"}}))}})),
        "entity" => obj(json!({"uuid": {"type": "string"}, "data": {}})),
        "create" => obj(json!({"uuid": {"type": "string"}, "entity": {}})),
        "chat-messages" => obj(json!({"success": {"type": "boolean"}, "data": obj(json!({
            "messages": {"type": "array"}, "total": {"type": "number"}}))})),
        "encounters" => obj(json!({"encounters": {"type": "array"}})),
        _ => return None,
    })
}

// ------------------------------------------------------------------ resources and prompts

/// Per-world resources: (suffix, name, description, module type to read it, params).
pub const WORLD_RESOURCES: &[(&str, &str, &str)] = &[
    (
        "info",
        "World info",
        "Title, system, version and document counts of the world.",
    ),
    (
        "players",
        "Players",
        "The world's users and whether they are online.",
    ),
    (
        "scene",
        "Active scene",
        "The scene the players currently see.",
    ),
    (
        "chat",
        "Recent chat",
        "The 20 most recent chat messages; updated on every new message or roll.",
    ),
    (
        "encounters",
        "Encounters",
        "Combat encounters with round, turn and combatants; updated on every combat change.",
    ),
];

/// A parsed `foundry://` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Res {
    Worlds,
    World { world: String, part: Part },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Info,
    Players,
    Scene,
    Chat,
    Encounters,
    /// `entity/<uuid>`: one document; updated on actor events for that uuid.
    Entity(String),
}

impl Res {
    pub fn parse(uri: &str) -> Option<Res> {
        let rest = uri.strip_prefix("foundry://worlds")?;
        if rest.is_empty() || rest == "/" {
            return Some(Res::Worlds);
        }
        let rest = rest.strip_prefix('/')?;
        let (world, part) = rest.split_once('/')?;
        if world.is_empty() {
            return None;
        }
        let part = match part {
            "info" => Part::Info,
            "players" => Part::Players,
            "scene" => Part::Scene,
            "chat" => Part::Chat,
            "encounters" => Part::Encounters,
            p => Part::Entity(
                p.strip_prefix("entity/")
                    .filter(|u| !u.is_empty())?
                    .to_string(),
            ),
        };
        Some(Res::World {
            world: world.to_string(),
            part,
        })
    }

    /// The module request that reads it: (module type, extra params).
    pub fn module_read(part: &Part) -> (&'static str, Value) {
        match part {
            Part::Info => ("world-info", json!({})),
            Part::Players => ("players", json!({})),
            Part::Scene => ("get-scene", json!({"active": true})),
            Part::Chat => ("chat-messages", json!({"limit": 20})),
            Part::Encounters => ("encounters", json!({})),
            Part::Entity(uuid) => ("entity", json!({"uuid": uuid})),
        }
    }
}

pub fn world_uri(world: &str, suffix: &str) -> String {
    format!("foundry://worlds/{world}/{suffix}")
}

/// `resources/templates/list`.
pub fn templates() -> Value {
    let mut list: Vec<Value> = WORLD_RESOURCES
        .iter()
        .map(|(suffix, name, desc)| {
            json!({"uriTemplate": format!("foundry://worlds/{{clientId}}/{suffix}"), "name": suffix,
                "title": name, "description": desc, "mimeType": "application/json"})
        })
        .collect();
    list.push(json!({"uriTemplate": "foundry://worlds/{clientId}/entity/{uuid}", "name": "entity",
        "title": "A document", "description": "One document by uuid (Actor.x, Item.y, JournalEntry.z); updated on actor changes.",
        "mimeType": "application/json"}));
    json!({"resourceTemplates": list})
}

/// The prompts: (name, title, description, arguments).
pub fn prompts() -> Value {
    json!({"prompts": [
        {"name": "session_summary", "title": "Summarise the session",
         "description": "Read the recent chat and rolls and write a session recap.",
         "arguments": [{"name": "clientId", "description": "World to summarise (optional with one world)", "required": false}]},
        {"name": "prepare_encounter", "title": "Prepare an encounter",
         "description": "Find suitable actors, place them and start a combat encounter.",
         "arguments": [
            {"name": "description", "description": "What the encounter should be, e.g. \"four goblins ambush the party at the bridge\"", "required": true},
            {"name": "clientId", "description": "World to prepare it in (optional with one world)", "required": false}]},
    ]})
}

/// `prompts/get`: the messages, or None for an unknown prompt; Err for a missing argument.
pub fn prompt(name: &str, args: &Map<String, Value>) -> Option<Result<Value, String>> {
    let world = args
        .get("clientId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|w| format!(" (clientId {w})"))
        .unwrap_or_default();
    let text = match name {
        "session_summary" => format!(
            "Summarise this Foundry VTT session{world} for the players. Use the read_chat tool \
             (limit 100) and the recent_rolls tool, then write a short recap: what happened, \
             notable rolls, open threads. Do not change anything in the world."
        ),
        "prepare_encounter" => {
            let Some(desc) = args.get("description").and_then(Value::as_str) else {
                return Some(Err("argument 'description' is required".into()));
            };
            format!(
                "Prepare this combat encounter in Foundry VTT{world}: {desc}\n\
                 Steps: use search (filter documentType:Actor) to find fitting actors, \
                 get_scenes (active=true) to see the battlefield, list_canvas (tokens) to see \
                 who is placed, move_token to position tokens, then start_encounter with the \
                 token uuids and rollNPC=true. Ask before deleting or replacing anything."
            )
        }
        _ => return None,
    };
    Some(Ok(json!({
        "description": name,
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_curated_and_sized() {
        let routes = RouteTable::builtin();
        let tools = build(&routes, &["default".to_string()]);
        assert_eq!(tools.len(), 34, "README lists 34 default tools");
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        for n in [
            "search",
            "get_entity",
            "roll_dice",
            "send_chat",
            "move_token",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let all = build(&routes, &["all".to_string()]);
        assert_eq!(all.len(), 88, "README: every forwarded route (88)");
        let mut uniq: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), all.len(), "tool names are unique");
        let one = build(&routes, &["roll_dice".into(), "search".into()]);
        assert_eq!(one.len(), 2);
        assert!(known_name(&routes, "dnd5e_skill_check") || known_name(&routes, "skill_check"));
    }

    #[test]
    fn schema_from_params() {
        let routes = RouteTable::builtin();
        let tools = build(&routes, &["all".to_string()]);
        let roll = tools
            .iter()
            .find(|t| t.name == "roll_dice")
            .map(|t| &t.listing);
        let roll = roll.expect("roll_dice");
        assert_eq!(roll["inputSchema"]["required"], json!(["formula"]));
        assert_eq!(
            roll["inputSchema"]["properties"]["formula"]["type"],
            "string"
        );
        assert_eq!(roll["annotations"]["readOnlyHint"], false);
        assert!(roll["outputSchema"].is_object());
        let canvas = tools.iter().find(|t| t.name == "list_canvas");
        let canvas = canvas.expect("list_canvas");
        assert!(canvas.listing["inputSchema"]["properties"]["documentType"]["enum"].is_array());
    }

    #[test]
    fn uris() {
        assert_eq!(Res::parse("foundry://worlds"), Some(Res::Worlds));
        assert_eq!(
            Res::parse("foundry://worlds/w1/chat"),
            Some(Res::World {
                world: "w1".into(),
                part: Part::Chat
            })
        );
        assert_eq!(
            Res::parse("foundry://worlds/w1/entity/Actor.x"),
            Some(Res::World {
                world: "w1".into(),
                part: Part::Entity("Actor.x".into())
            })
        );
        assert_eq!(Res::parse("foundry://worlds/w1/nope"), None);
        assert_eq!(Res::parse("file:///etc/passwd"), None);
    }
}
