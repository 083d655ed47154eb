//! The owner's command line: `fvtt-relay key create|list|revoke`, `pair`, `worlds`, `unpair`,
//! `admin-key [--rotate]`, `status`.
//!
//! Each command works in two modes, chosen by the data directory's lock:
//! - relay running (the lock is held): the command calls the relay's admin API on loopback,
//!   at the address the relay wrote to `<data-dir>/relay.addr`, with the admin key from
//!   `<data-dir>/admin.key`. The relay owns the state then; editing the file behind its back
//!   would be overwritten by its next save.
//! - relay stopped: the command takes the lock itself and edits `state.json` directly, with
//!   the same functions the relay uses, and saves atomically.
//!
//! Output: a created secret or code alone on stdout (scripts capture it), `--json` for the
//! admin API's JSON shapes; messages go to stderr. Exit status 0 ok, 1 failure, 2 usage.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::NewKey;
use crate::config::Config;
use crate::error::Fatal;
use crate::relay::admin::{key_json, scopes_from_spec, world_json};
use crate::store::{self, Store};

/// The file a running relay writes its listen address to (removed on a clean exit).
pub const ADDR_FILE: &str = "relay.addr";
/// The file holding the admin key (0600), written on first start and by `admin-key --rotate`.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// The admin page's address for the start-up log: under `--public-url` when set, else the
/// listening address (a wildcard one names no host a browser can use, so it says so).
pub fn admin_page_url(public_url: Option<&str>, addr: std::net::SocketAddr) -> String {
    if let Some(u) = public_url {
        return format!("{}/admin", u.trim_end_matches('/'));
    }
    if addr.ip().is_unspecified() {
        return format!("http://<this machine's address>:{}/admin", addr.port());
    }
    format!("http://{addr}/admin")
}
/// How long the CLI waits for the running relay to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

const COMMANDS: [&str; 6] = ["key", "pair", "worlds", "unpair", "admin-key", "status"];

/// Whether `first` (the first argument) names a subcommand rather than a relay option.
pub fn is_command(first: &str) -> bool {
    COMMANDS.contains(&first)
}

const USAGE_KEY: &str = "\
Usage: fvtt-relay key create --name NAME [--scopes a,b|default|all] [--client-id ID]...
                             [--user-id ID] [--expires-in DAYS] [--rate-limit N] [--json]
       fvtt-relay key list [--json]
       fvtt-relay key revoke ID

Manage scoped API keys. `create` prints only the new key on stdout (shown once; --json for
the whole record). New keys get the 17 default read scopes unless --scopes says otherwise.
";
const USAGE_PAIR: &str = "\
Usage: fvtt-relay pair [--client-id ID] [--json]

Print a 6-character pairing code to enter in the Foundry module (single use; 10 minutes, or
the relay's --pairing-code-ttl while it runs). --client-id re-pairs that existing world.
";
const USAGE_WORLDS: &str = "\
Usage: fvtt-relay worlds [--json]
       fvtt-relay worlds grant CLIENT_ID [--targets ID,ID|*] [--scopes a,b] [--json]

List the paired worlds and whether each is online. `grant` sets a world's cross-world
permission: the other worlds it may send remote requests to (clientIds, or * for every other
world; never itself) and the scopes those requests may use. An omitted flag keeps its value;
an empty one (--targets '') clears it.
";
const USAGE_STATUS: &str = "\
Usage: fvtt-relay status [--json]

Ask the running relay (through its admin API on loopback): listening address, uptime, worlds
online and offline with when each was last seen and its last close (code, reason, in words),
open connections by kind, and the state file.
";
const USAGE_UNPAIR: &str = "\
Usage: fvtt-relay unpair CLIENT_ID

Forget a world and revoke its connection tokens; a live link is closed (4002).
";
const USAGE_ADMIN_KEY: &str = "\
Usage: fvtt-relay admin-key [--rotate]

Print the admin key (from <data-dir>/admin.key). --rotate replaces it: the old key stops
working at once and the admin page signs out.
";
const USAGE_COMMON: &str = "
Options for every command:
  --data-dir PATH   The relay's data directory (default ./data, or FVTT_RELAY_DATA_DIR)
  -h, --help        Print this help
";

/// A usage error (exit 2) or a failure (exit 1).
#[derive(Debug)]
enum CliError {
    Usage(String),
    Failed(String),
}

fn fail(msg: impl Into<String>) -> CliError {
    CliError::Failed(msg.into())
}

/// Parsed flags of one command.
#[derive(Default, Debug)]
struct Flags {
    data_dir: Option<PathBuf>,
    help: bool,
    json: bool,
    rotate: bool,
    name: Option<String>,
    scopes: Option<String>,
    targets: Option<String>,
    client_ids: Vec<String>,
    user_id: Option<String>,
    expires_in: Option<u32>,
    rate_limit: Option<u32>,
    positional: Vec<String>,
}

fn parse_flags(args: &[String]) -> Result<Flags, CliError> {
    let mut f = Flags::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |flag: &str| -> Result<String, CliError> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(CliError::Usage(format!("{flag} needs a value"))),
            }
        };
        let number = |flag: &str, v: String| -> Result<u32, CliError> {
            v.parse()
                .map_err(|_| CliError::Usage(format!("{flag} expects a whole number, got {v:?}")))
        };
        match name {
            "-h" | "--help" => f.help = true,
            "--json" => f.json = true,
            "--rotate" => f.rotate = true,
            "--data-dir" => f.data_dir = Some(PathBuf::from(value(name)?)),
            "--name" => f.name = Some(value(name)?),
            "--scopes" => f.scopes = Some(value(name)?),
            "--targets" => f.targets = Some(value(name)?),
            "--client-id" => f.client_ids.push(value(name)?),
            "--user-id" => f.user_id = Some(value(name)?),
            "--expires-in" => f.expires_in = Some(number(name, value(name)?)?),
            "--rate-limit" => f.rate_limit = Some(number(name, value(name)?)?),
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(CliError::Usage(format!("unknown option {s}")))
            }
            _ => f.positional.push(a.clone()),
        }
    }
    Ok(f)
}

/// Run a subcommand; `args` starts with the command name. Returns the exit status.
pub fn run(args: &[String]) -> u8 {
    let env_dir = std::env::var("FVTT_RELAY_DATA_DIR")
        .ok()
        .filter(|s| !s.is_empty());
    let mut stdout = std::io::stdout();
    match run_with(args, env_dir, &mut stdout) {
        Ok(()) => 0,
        Err(CliError::Usage(m)) => {
            eprintln!(
                "fvtt-relay: {m}\nRun 'fvtt-relay {} --help' for usage.",
                args.first().map_or("", String::as_str)
            );
            2
        }
        Err(CliError::Failed(m)) => {
            eprintln!("fvtt-relay: {m}");
            1
        }
    }
}

fn usage_of(cmd: &str) -> &'static str {
    match cmd {
        "key" => USAGE_KEY,
        "pair" => USAGE_PAIR,
        "worlds" => USAGE_WORLDS,
        "unpair" => USAGE_UNPAIR,
        "status" => USAGE_STATUS,
        _ => USAGE_ADMIN_KEY,
    }
}

fn run_with(args: &[String], env_dir: Option<String>, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(cmd) = args.first().map(String::as_str) else {
        return Err(CliError::Usage("missing command".into()));
    };
    let mut f = parse_flags(args.get(1..).unwrap_or(&[]))?;
    if f.help {
        let _ = write!(out, "{}{USAGE_COMMON}", usage_of(cmd));
        return Ok(());
    }
    let dir = f
        .data_dir
        .take()
        .or_else(|| env_dir.map(PathBuf::from))
        .unwrap_or_else(|| Config::default().data_dir);
    let sub = if cmd == "key" {
        if f.positional.is_empty() {
            return Err(CliError::Usage("key needs create, list or revoke".into()));
        }
        Some(f.positional.remove(0))
    } else if cmd == "worlds" && f.positional.first().map(String::as_str) == Some("grant") {
        Some(f.positional.remove(0))
    } else {
        None
    };
    let want_args = match (cmd, sub.as_deref()) {
        ("key", Some("revoke")) | ("unpair", _) | ("worlds", Some("grant")) => 1,
        ("key", Some("create" | "list")) | ("pair" | "worlds" | "admin-key" | "status", _) => 0,
        ("key", Some(other)) => {
            return Err(CliError::Usage(format!("unknown key command {other:?}")))
        }
        _ => 0,
    };
    if f.positional.len() != want_args {
        return Err(CliError::Usage(if want_args == 1 {
            "expected exactly one ID".to_string()
        } else {
            format!(
                "unexpected argument {:?}",
                f.positional.first().map_or("", String::as_str)
            )
        }));
    }
    let id = f.positional.first().cloned().unwrap_or_default();
    if sub.as_deref() == Some("create") && f.name.is_none() {
        return Err(CliError::Usage("key create needs --name NAME".into()));
    }
    if cmd == "admin-key" && !f.rotate {
        let key = read_admin_key(&dir)?;
        let _ = writeln!(out, "{key}");
        return Ok(());
    }
    let mut backend = Backend::open(&dir)?;
    match (cmd, sub.as_deref()) {
        ("key", Some("create")) => {
            let spec = NewKey {
                name: f.name.clone().unwrap_or_default(),
                scopes: scopes_from_spec(f.scopes.as_deref().unwrap_or("default")),
                client_ids: f.client_ids.clone(),
                user_id: f.user_id.clone(),
                expires_in_days: f.expires_in,
                rate_limit_per_minute: f.rate_limit,
            };
            let v = backend.create_key(spec)?;
            if f.json {
                let _ = writeln!(out, "{v:#}");
            } else {
                let _ = writeln!(out, "{}", v["key"].as_str().unwrap_or_default());
            }
        }
        ("key", Some("list")) => {
            let keys = backend.list("keys")?;
            if f.json {
                let _ = writeln!(out, "{:#}", Value::Array(keys));
            } else {
                print_keys(&keys, out);
            }
        }
        ("key", _) => {
            backend.delete("keys", &id)?;
            eprintln!("revoked {id}");
        }
        ("pair", _) => {
            let v = backend.pairing_code(f.client_ids.first().cloned())?;
            if f.json {
                let _ = writeln!(out, "{v:#}");
            } else {
                let _ = writeln!(out, "{}", v["code"].as_str().unwrap_or_default());
                let mins = v["expiresIn"].as_u64().unwrap_or(0) / 60;
                eprintln!("Enter this code in the Foundry module's pairing dialog (valid {mins} min, single use).");
            }
        }
        ("worlds", Some(_)) => {
            let list = |v: &Option<String>| {
                v.as_ref().map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
            };
            let v = backend.grant(&id, list(&f.targets), list(&f.scopes))?;
            if f.json {
                let _ = writeln!(out, "{v:#}");
            } else {
                let show = |k: &str| {
                    let items: Vec<&str> = v[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    if items.is_empty() {
                        "none".to_string()
                    } else {
                        items.join(",")
                    }
                };
                let _ = writeln!(
                    out,
                    "{id}: targets {}; scopes {}",
                    show("allowedTargets"),
                    show("remoteScopes")
                );
            }
        }
        ("worlds", _) => {
            let worlds = backend.list("worlds")?;
            if f.json {
                let _ = writeln!(out, "{:#}", Value::Array(worlds));
            } else {
                print_worlds(&worlds, out);
            }
        }
        ("status", _) => {
            let Backend::Running { addr, key } = &backend else {
                let state = dir.join(crate::store::STATE_FILE);
                return Err(fail(format!(
                    "the relay is not running (nothing holds {}); state file: {}",
                    dir.display(),
                    state.display()
                )));
            };
            let mut v = call(*addr, key, "GET", "/admin/api/status", None)?;
            // The address the relay bound (its --listen may say port 0), from relay.addr.
            if let Ok(bound) = std::fs::read_to_string(dir.join(ADDR_FILE)) {
                v["listen"] = json!(bound.trim());
            }
            if f.json {
                let _ = writeln!(out, "{v:#}");
            } else {
                print_status(&v, out);
            }
        }
        ("unpair", _) => {
            backend.delete("worlds", &id)?;
            eprintln!("unpaired {id}");
        }
        _ => {
            // admin-key --rotate
            let key = backend.rotate_admin_key()?;
            write_secret_file(&dir.join(ADMIN_KEY_FILE), &key).map_err(|e| {
                fail(format!(
                    "the new admin key could not be written to {}: {e}; it is: {key}",
                    dir.join(ADMIN_KEY_FILE).display()
                ))
            })?;
            let _ = writeln!(out, "{key}");
        }
    }
    Ok(())
}

fn read_admin_key(dir: &Path) -> Result<String, CliError> {
    let path = dir.join(ADMIN_KEY_FILE);
    // A FIFO here would block the read forever: look before opening.
    store::regular_file(&path).map_err(|p| fail(format!("{}: {p}", path.display())))?;
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(fail(format!("{} is empty", path.display()))),
        Err(e) => Err(fail(format!(
            "cannot read {}: {e} (the relay writes it on first start; `fvtt-relay admin-key --rotate` makes a new one)",
            path.display()
        ))),
    }
}

fn ms_label(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => crate::relay::rest::rfc3339(ms),
        None => "-".into(),
    }
}

fn print_keys(keys: &[Value], out: &mut dyn Write) {
    let _ = writeln!(out, "ID\tNAME\tPREFIX\tSCOPES\tEXPIRES\tLAST USED");
    for k in keys {
        let _ = writeln!(
            out,
            "{}\t{}\t{}…\t{}\t{}\t{}",
            k["id"].as_str().unwrap_or(""),
            k["name"].as_str().unwrap_or(""),
            k["prefix"].as_str().unwrap_or(""),
            k["scopes"].as_array().map_or(0, Vec::len),
            ms_label(&k["expiresAt"]),
            ms_label(&k["lastUsedAt"]),
        );
    }
}

fn print_status(v: &Value, out: &mut dyn Write) {
    let listen = v["listen"].as_str().unwrap_or("?");
    let up = v["uptimeSeconds"].as_u64().unwrap_or(0);
    let c = &v["connections"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let worlds = v["worlds"].as_array().cloned().unwrap_or_default();
    let online = worlds.iter().filter(|w| w["isOnline"] == true).count();
    let _ = writeln!(
        out,
        "fvtt-relay {} listening on {listen}",
        v["version"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "uptime       {}h {:02}m {:02}s",
        up / 3600,
        up % 3600 / 60,
        up % 60
    );
    let _ = writeln!(
        out,
        "state file   {}",
        v["stateFile"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "connections  {} world links ({} authenticating), {} SSE, {} /ws/api, {} /ws/events",
        n("worldLinks"),
        n("worldLinksAuthenticating"),
        n("sse"),
        n("wsApi"),
        n("wsEvents")
    );
    let _ = writeln!(
        out,
        "worlds       {online} online, {} offline",
        worlds.len() - online
    );
    for w in &worlds {
        let on = w["isOnline"] == true;
        let _ = writeln!(
            out,
            "  {}  {}  {}  {} {}",
            w["clientId"].as_str().unwrap_or(""),
            if on { "online " } else { "offline" },
            w["worldTitle"].as_str().unwrap_or(""),
            if on { "connected" } else { "last seen" },
            ms_label(if on {
                &w["connectedSince"]
            } else {
                &w["lastSeen"]
            }),
        );
        let close = &w["lastClose"];
        if close.is_object() {
            let code = close["code"]
                .as_u64()
                .map_or(String::new(), |c| format!("{c} "));
            let reason = close["reason"].as_str().unwrap_or("");
            let by = close["by"]
                .as_str()
                .map_or(String::new(), |b| format!(" by {b}"));
            let _ = writeln!(
                out,
                "      last close {}: {code}{reason}{by}: {}",
                ms_label(&close["at"]),
                close["text"].as_str().unwrap_or("")
            );
        }
        if let Some(why) = w["offlineReason"].as_str() {
            let _ = writeln!(out, "      why offline: {why}");
        }
    }
}

fn print_worlds(worlds: &[Value], out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "CLIENT ID\tONLINE\tWORLD\tSYSTEM\tLAST SEEN\tSERVER ORIGIN"
    );
    for w in worlds {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            w["clientId"].as_str().unwrap_or(""),
            if w["isOnline"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            w["worldTitle"].as_str().unwrap_or(""),
            w["systemId"].as_str().unwrap_or(""),
            ms_label(&w["lastSeen"]),
            w["serverOrigin"]
                .as_str()
                .filter(|o| !o.is_empty())
                .unwrap_or("-"),
        );
        // Why it is offline (the running relay's words), else the last link event kept in
        // the state file.
        let why = w["offlineReason"].as_str().or_else(|| {
            (w["isOnline"] != true)
                .then(|| w["lastLink"]["text"].as_str())
                .flatten()
        });
        if let Some(why) = why {
            let _ = writeln!(out, "\t{why}");
        }
        // The module's last notice (module-notify), from the running relay.
        if let Some(text) = w["lastNotice"]["text"].as_str() {
            let _ = writeln!(
                out,
                "\tmodule notice {}: {text}",
                ms_label(&w["lastNotice"]["at"])
            );
        }
    }
}

/// Where the commands act: the running relay's admin API, or the state file under the lock.
enum Backend {
    Running { addr: SocketAddr, key: String },
    Stopped(Box<Store>),
}

impl Backend {
    fn open(dir: &Path) -> Result<Backend, CliError> {
        match Store::open(dir) {
            Ok(s) => Ok(Backend::Stopped(Box::new(s))),
            Err(Fatal::State(m)) if m.contains("in use") => {
                let path = dir.join(ADDR_FILE);
                store::regular_file(&path).map_err(|p| fail(format!("{}: {p}", path.display())))?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    fail(format!(
                        "the relay is running but {} is unreadable: {e}",
                        path.display()
                    ))
                })?;
                let addr: SocketAddr = text.trim().parse().map_err(|_| {
                    fail(format!(
                        "{} does not hold an address: {:?}",
                        path.display(),
                        text.trim()
                    ))
                })?;
                Ok(Backend::Running {
                    addr: loopback_for(addr),
                    key: read_admin_key(dir)?,
                })
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Save the edited state; on failure nothing was changed (the process exits without
    /// the edit, and `state.json` is intact), and the message says so.
    fn save(store: &mut Store) -> Result<(), CliError> {
        store.save().map_err(|e| {
            fail(format!(
                "the change could not be saved ({e}); it was not made"
            ))
        })
    }

    fn create_key(&mut self, spec: NewKey) -> Result<Value, CliError> {
        match self {
            Backend::Running { addr, key } => {
                let body = json!({
                    "name": spec.name,
                    "scopes": spec.scopes,
                    "clientIds": spec.client_ids,
                    "userId": spec.user_id,
                    "expiresInDays": spec.expires_in_days,
                    "rateLimitPerMinute": spec.rate_limit_per_minute,
                });
                call(*addr, key, "POST", "/admin/api/keys", Some(&body))
            }
            Backend::Stopped(store) => {
                let st = store.state_mut();
                let (idx, secret) = st.create_api_key(spec, store::unix_ms()).map_err(fail)?;
                let mut v = st.api_keys.get(idx).map(key_json).unwrap_or(Value::Null);
                v["key"] = Value::from(secret);
                Backend::save(store)?;
                Ok(v)
            }
        }
    }

    /// `keys` or `worlds`, as the admin API lists them.
    fn list(&mut self, what: &str) -> Result<Vec<Value>, CliError> {
        let v = match self {
            Backend::Running { addr, key } => {
                call(*addr, key, "GET", &format!("/admin/api/{what}"), None)?
            }
            Backend::Stopped(store) => {
                let st = store.state();
                match what {
                    "keys" => json!({"keys": st.api_keys.iter().map(key_json).collect::<Vec<_>>()}),
                    _ => {
                        json!({"worlds": st.worlds.iter().map(|w| world_json(w, None)).collect::<Vec<_>>()})
                    }
                }
            }
        };
        Ok(v[what].as_array().cloned().unwrap_or_default())
    }

    /// Revoke a key (`keys`) or unpair a world (`worlds`).
    fn delete(&mut self, what: &str, id: &str) -> Result<(), CliError> {
        match self {
            Backend::Running { addr, key } => {
                let path = format!(
                    "/admin/api/{what}/{}",
                    crate::enc::percent_encode_component(id)
                );
                call(*addr, key, "DELETE", &path, None).map(|_| ())
            }
            Backend::Stopped(store) => {
                let st = store.state_mut();
                let found = match what {
                    "keys" => st.revoke_api_key(id),
                    _ => st.remove_world(id),
                };
                if !found {
                    return Err(fail(match what {
                        "keys" => format!("no API key with id {id}"),
                        _ => format!("no world with clientId {id}"),
                    }));
                }
                Backend::save(store)
            }
        }
    }

    /// Set a world's cross-world grants (`None` keeps a list); returns its admin view.
    fn grant(
        &mut self,
        id: &str,
        targets: Option<Vec<String>>,
        scopes: Option<Vec<String>>,
    ) -> Result<Value, CliError> {
        match self {
            Backend::Running { addr, key } => {
                let mut body = json!({});
                if let Some(t) = targets {
                    body["allowedTargets"] = json!(t);
                }
                if let Some(s) = scopes {
                    body["remoteScopes"] = json!(s);
                }
                let path = format!(
                    "/admin/api/worlds/{}",
                    crate::enc::percent_encode_component(id)
                );
                call(*addr, key, "PATCH", &path, Some(&body))
            }
            Backend::Stopped(store) => {
                let st = store.state_mut();
                let Some(mut w) = st.worlds.iter().find(|w| w.client_id == id).cloned() else {
                    return Err(fail(format!("no world with clientId {id}")));
                };
                let t = targets.unwrap_or_else(|| w.allowed_targets.clone());
                let s = scopes.unwrap_or_else(|| w.remote_scopes.clone());
                let (t, s) = crate::relay::remote::validate_grants(st, id, &t, &s).map_err(fail)?;
                w.allowed_targets = t;
                w.remote_scopes = s;
                let v = world_json(&w, None);
                st.upsert_world(w);
                Backend::save(store)?;
                Ok(v)
            }
        }
    }

    fn pairing_code(&mut self, client_id: Option<String>) -> Result<Value, CliError> {
        match self {
            Backend::Running { addr, key } => {
                let body = json!({ "clientId": client_id });
                call(*addr, key, "POST", "/admin/api/pairing-codes", Some(&body))
            }
            Backend::Stopped(store) => {
                let ttl = Config::default().pairing_code_ttl;
                let st = store.state_mut();
                if let Some(c) = &client_id {
                    if !st.worlds.iter().any(|w| &w.client_id == c) {
                        return Err(fail(format!("no world with clientId {c}")));
                    }
                }
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                let (code, exp) =
                    st.create_pairing_code_for(client_id.as_deref(), ttl_ms, store::unix_ms());
                Backend::save(store)?;
                Ok(json!({"code": code, "expiresAt": exp, "expiresIn": ttl.as_secs()}))
            }
        }
    }

    fn rotate_admin_key(&mut self) -> Result<String, CliError> {
        match self {
            Backend::Running { addr, key } => {
                let v = call(*addr, key, "POST", "/admin/api/admin-key/rotate", None)?;
                v["key"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| fail("the relay returned no key"))
            }
            Backend::Stopped(store) => {
                let k = store.state_mut().rotate_admin_key();
                Backend::save(store)?;
                Ok(k)
            }
        }
    }
}

/// A relay listening on the unspecified address is reached on loopback.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// One admin API call with a tiny blocking HTTP/1.1 client (`Connection: close`, so the
/// body ends at EOF). Non-2xx statuses become the response's `error` message.
fn call(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, CliError> {
    let unreachable = |e: std::io::Error| fail(format!("cannot reach the relay at {addr}: {e}"));
    let mut sock = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(unreachable)?;
    sock.set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(unreachable)?;
    sock.set_write_timeout(Some(HTTP_TIMEOUT))
        .map_err(unreachable)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {key}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    sock.write_all(req.as_bytes()).map_err(unreachable)?;
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).map_err(unreachable)?;
    let (status, body) =
        parse_response(&raw).ok_or_else(|| fail("the relay sent a malformed response"))?;
    let v: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    if (200..300).contains(&status) {
        Ok(v)
    } else {
        let msg = v["error"].as_str().unwrap_or("request failed");
        Err(fail(format!("{msg} (HTTP {status})")))
    }
}

/// Status and body of a complete `Connection: close` response.
fn parse_response(raw: &[u8]) -> Option<(u16, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(raw.get(..end)?).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, raw.get(end + 4..)?))
}

/// Write a secret to a new 0600 file (replacing any old one) and sync it.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // `mode` applies only to a file we create, so an old file (maybe with looser bits) goes.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn admin_page_url_names_a_host_a_browser_can_use() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            admin_page_url(None, a("127.0.0.1:3010")),
            "http://127.0.0.1:3010/admin"
        );
        assert_eq!(
            admin_page_url(None, a("0.0.0.0:3010")),
            "http://<this machine's address>:3010/admin"
        );
        assert_eq!(
            admin_page_url(Some("https://relay.example.com/"), a("0.0.0.0:3010")),
            "https://relay.example.com/admin"
        );
    }

    #[test]
    fn flags() {
        let f = parse_flags(&args(
            "create --name bot --scopes=all --client-id a --client-id b --expires-in 3 --json",
        ))
        .unwrap();
        assert_eq!(f.positional, ["create"]);
        assert_eq!(f.name.as_deref(), Some("bot"));
        assert_eq!(f.scopes.as_deref(), Some("all"));
        assert_eq!(f.client_ids, ["a", "b"]);
        assert_eq!(f.expires_in, Some(3));
        assert!(f.json);
        for bad in ["--name", "--expires-in x", "--bogus", "--rate-limit=-1"] {
            assert!(
                matches!(parse_flags(&args(bad)), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn usage_errors() {
        let mut out = Vec::new();
        for bad in [
            "key",
            "key frob",
            "key revoke",
            "unpair",
            "worlds extra",
            "key create",
        ] {
            let r = run_with(
                &args(&format!("{bad} --data-dir /nonexistent/x")),
                None,
                &mut out,
            );
            assert!(matches!(r, Err(CliError::Usage(_))), "{bad}: {r:?}");
        }
        assert!(run_with(&args("pair --help"), None, &mut out).is_ok());
        assert!(String::from_utf8_lossy(&out).contains("--data-dir"));
    }

    #[test]
    fn responses_and_addresses() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw), Some((201, &b"{}"[..])));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(parse_response(b"garbage\r\n\r\n"), None);
        let a: SocketAddr = "0.0.0.0:3010".parse().unwrap();
        assert_eq!(loopback_for(a).to_string(), "127.0.0.1:3010");
        let a: SocketAddr = "[::]:3010".parse().unwrap();
        assert_eq!(loopback_for(a).to_string(), "[::1]:3010");
        let a: SocketAddr = "192.168.1.2:80".parse().unwrap();
        assert_eq!(loopback_for(a), a);
        assert!(is_command("key") && is_command("admin-key") && !is_command("--listen"));
    }
}
