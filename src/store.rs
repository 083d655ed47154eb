//! Durable state: the `State` kept in `<data-dir>/state.json`, its schema migrations, and the
//! directory lock that keeps two relays off the same data.
//!
//! Crash safety (the issue's requirements; relay-protocol.md §5.5 for what is stored):
//! - a save writes `state.json.tmp` in the same directory, fsyncs it, renames it over
//!   `state.json` and fsyncs the directory, so `state.json` is always a complete old or new
//!   file, whatever moment a `kill -9` or power cut hits;
//! - before each replace the current file is hard-linked (copied where links fail) to
//!   `state.json.bak` through its own temp name and rename, so the previous good copy is
//!   always whole too;
//! - a file that cannot be read or parsed stops start-up with an error naming it, and is
//!   never overwritten: the operator decides. The message says whether `.bak` loads and
//!   how to restore it; it is never restored automatically, because it is one save older
//!   than the lost file and restoring it would silently undo the last acknowledged change
//!   (a revoked key would work again). The same holds when `state.json` is missing but a
//!   `.bak` exists: the relay refuses to start rather than start empty (and write a new
//!   admin key over `admin.key`);
//! - a FIFO, socket, device or directory where one of our files should be is refused at
//!   once by a metadata check, before any open that could block;
//! - a `lock` file held with `flock(LOCK_EX|LOCK_NB)` (std's `File::try_lock`) keeps a second
//!   relay out; the kernel drops it when the holder dies, so a crash never leaves it stale.
//!
//! Secrets never reach this file in plaintext: `auth.rs` stores SHA-256 hashes only.
//! The lookup indexes (`hash -> position`) are not serialized; `migrate` and every mutating
//! method in `auth.rs` rebuild them.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Fatal;

/// A save that did not happen: which file failed and why. `state.json` is unchanged.
#[derive(Debug)]
pub struct SaveError {
    pub path: PathBuf,
    pub error: io::Error,
}

impl std::fmt::Display for SaveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

impl SaveError {
    /// The OS's reason without the path (what a caller of the API is told).
    pub fn reason(&self) -> String {
        self.error.to_string()
    }
}

/// Where the running relay's state is saved (`Store` in the binary; a memory double in the
/// relay's unit tests). The relay core calls it and never touches a file itself.
pub trait Saver {
    /// Write `state` durably; on error the previous saved state is intact.
    fn save(&mut self, state: &State) -> Result<(), SaveError>;
}

impl Saver for Store {
    fn save(&mut self, state: &State) -> Result<(), SaveError> {
        self.save_state(state)
    }
}

/// Test-only fault injection: in debug builds, `FVTT_RELAY_TEST_FAIL_SAVES=N` makes the next
/// N saves of a `Store` fail as if the disk were full. Release builds ignore it, and nothing
/// but the process environment can set it (no request can reach it).
const FAIL_SAVES_ENV: &str = "FVTT_RELAY_TEST_FAIL_SAVES";

fn injected_failures() -> u32 {
    if !cfg!(debug_assertions) {
        return 0;
    }
    std::env::var(FAIL_SAVES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Schema version written into every saved file. Bump it together with a new step in
/// [`migrate`] whenever a field changes meaning or shape.
pub const STATE_VERSION: u32 = 2;

/// File names inside the data directory.
pub const STATE_FILE: &str = "state.json";
const TEMP_FILE: &str = "state.json.tmp";
const BACKUP_FILE: &str = "state.json.bak";
const BACKUP_TEMP_FILE: &str = "state.json.bak.tmp";
const LOCK_FILE: &str = "lock";

/// Everything the relay must remember across restarts.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(default)]
pub struct State {
    pub version: u32,
    /// SHA-256 hex of the admin key; "" until one is created.
    pub admin_key_hash: String,
    pub api_keys: Vec<ApiKey>,
    pub tokens: Vec<ConnToken>,
    pub worlds: Vec<KnownWorld>,
    pub pairing_codes: Vec<PairingCode>,
    /// Signed-in admin page sessions (relay/admin.rs), so a restart does not sign the owner
    /// out. Only the SHA-256 of each session cookie is kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_sessions: Vec<AdminSession>,
    /// `hash -> index into api_keys`. Rebuilt by [`State::reindex`].
    #[serde(skip)]
    pub(crate) key_index: HashMap<String, usize>,
    /// `hash -> index into tokens`. Rebuilt by [`State::reindex`].
    #[serde(skip)]
    pub(crate) token_index: HashMap<String, usize>,
}

impl Default for State {
    /// A fresh state at the current schema version (not 0: a fresh state needs no migration).
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            admin_key_hash: String::new(),
            api_keys: Vec::new(),
            tokens: Vec::new(),
            worlds: Vec::new(),
            pairing_codes: Vec::new(),
            admin_sessions: Vec::new(),
            key_index: HashMap::new(),
            token_index: HashMap::new(),
        }
    }
}

/// A scoped API key (relay-protocol.md §5.2); only its hash is kept (§5.5, §8 #13).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_` + hex; what the admin API and CLI use to name it.
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// SHA-256 hex of the key.
    pub hash: String,
    /// First 6 characters of the key, for display only.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `scopedClientIds`: empty = any world.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// `scopedUserId`: the Foundry user applied to every request.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// Per-key override of the API rate limit (§6.1).
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    #[serde(default)]
    pub created_ms: u64,
    #[serde(default)]
    pub last_used_ms: Option<u64>,
}

/// A world's connection token (relay-protocol.md §5.6); only its hash is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConnToken {
    /// `tok_` + hex.
    pub id: String,
    pub hash: String,
    #[serde(default)]
    pub prefix: String,
    pub client_id: String,
    /// IPs or CIDRs (v4 or v6); empty = any peer.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    #[serde(default)]
    pub created_ms: u64,
    #[serde(default)]
    pub last_used_ms: Option<u64>,
}

/// A paired world and the metadata it last reported (module-protocol.md §1, `/relay` query).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct KnownWorld {
    pub client_id: String,
    pub world_id: String,
    pub world_title: String,
    pub system_id: String,
    pub system_title: String,
    pub system_version: String,
    pub foundry_version: String,
    pub custom_name: String,
    pub server_fingerprint: String,
    /// The Foundry server's origin (`serverOrigin` in `/auth/pair`, normalized; "" unknown):
    /// a copy of the world on another server gets its own clientId (relay-protocol.md §5.6).
    pub server_origin: String,
    /// Cross-world permission (relay-protocol.md §5.8): the clientIds this world may send
    /// `remote-request`s to, or `*` for every other world; never itself.
    pub allowed_targets: Vec<String>,
    /// The scopes those remote requests may use (the action's scope must be among them).
    pub remote_scopes: Vec<String>,
    pub paired_ms: u64,
    pub last_seen_ms: Option<u64>,
    /// The world's latest link event in words (relay/history.rs), so "why is it offline?"
    /// still has an answer after a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_link: Option<LinkNote>,
}

/// One link event of a world, as words and a time (relay/history.rs words it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct LinkNote {
    pub at_ms: u64,
    /// `connected`, `closed` or `refused`.
    pub kind: String,
    pub text: String,
}

/// An admin page session: the SHA-256 hex of its cookie value, and its lifetime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct AdminSession {
    pub hash: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// A 6-character pairing code (relay-protocol.md §5.6: single use, 10 min).
///
/// Kept in plaintext on purpose: it lives minutes, and a hash of 30 bits of entropy would
/// not resist an offline search anyway. A used code stays (marked) until it expires so
/// `/auth/pair` can answer `410 Pairing code has already been used` rather than 404.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PairingCode {
    pub code: String,
    pub expires_ms: u64,
    #[serde(default)]
    pub used: bool,
    /// A code minted for an existing world re-pairs that clientId (§5.6 "code-bound id").
    #[serde(default)]
    pub client_id: Option<String>,
}

impl State {
    /// Rebuild the `hash -> index` maps. Every mutating method in `auth.rs` calls it; code that
    /// edits `api_keys` or `tokens` directly through `state_mut()` must call it too. A stale
    /// index fails closed: lookups re-check the stored hash, so they can only miss.
    pub fn reindex(&mut self) {
        self.key_index = self
            .api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.hash.clone(), i))
            .collect();
        self.token_index = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.hash.clone(), i))
            .collect();
    }
}

/// Turn any stored JSON (any schema version up to [`STATE_VERSION`]) into a current `State`.
///
/// Each step rewrites the JSON of version N into version N+1, so an old file walks the chain
/// one step at a time. Version 0 is the pre-release layout: no `version` field, any list may
/// be absent, and `scopes` / `client_ids` may be comma-separated strings (the reference's CSV
/// columns, relay-protocol.md §5.2).
pub fn migrate(mut value: Value) -> Result<State, String> {
    let obj = value
        .as_object_mut()
        .ok_or("the top level is not a JSON object")?;
    let mut version = match obj.get("version") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("\"version\" is not a non-negative integer")?,
    };
    if version > STATE_VERSION {
        return Err(format!(
            "written by a newer fvtt-relay (schema version {version}; this build reads up to {STATE_VERSION})"
        ));
    }
    while version < STATE_VERSION {
        match version {
            0 => migrate_v0_to_v1(obj)?,
            1 => migrate_v1_to_v2(obj)?,
            // Unreachable while every version below STATE_VERSION has an arm above.
            v => return Err(format!("no migration from schema version {v}")),
        }
        version += 1;
        obj.insert("version".into(), Value::from(version));
    }
    let mut state: State =
        serde_json::from_value(value).map_err(|e| format!("invalid state: {e}"))?;
    state.reindex();
    Ok(state)
}

/// v0 -> v1: CSV strings become arrays.
fn migrate_v0_to_v1(obj: &mut serde_json::Map<String, Value>) -> Result<(), String> {
    if let Some(keys) = obj.get_mut("api_keys") {
        let keys = keys.as_array_mut().ok_or("\"api_keys\" is not an array")?;
        for key in keys {
            let Some(key) = key.as_object_mut() else {
                return Err("an entry of \"api_keys\" is not an object".into());
            };
            for field in ["scopes", "client_ids"] {
                if let Some(Value::String(csv)) = key.get(field) {
                    let list: Vec<Value> = csv
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(Value::from)
                        .collect();
                    key.insert(field.into(), Value::Array(list));
                }
            }
        }
    }
    Ok(())
}

/// v1 -> v2: each known world gains `server_origin` ("" = not known yet; the next pairing
/// from the world records it) and empty cross-world grants (`allowed_targets`,
/// `remote_scopes`: nothing is allowed until the owner grants it).
fn migrate_v1_to_v2(obj: &mut serde_json::Map<String, Value>) -> Result<(), String> {
    if let Some(worlds) = obj.get_mut("worlds") {
        let worlds = worlds.as_array_mut().ok_or("\"worlds\" is not an array")?;
        for w in worlds {
            let Some(w) = w.as_object_mut() else {
                return Err("an entry of \"worlds\" is not an object".into());
            };
            w.entry("server_origin").or_insert_with(|| Value::from(""));
            w.entry("allowed_targets")
                .or_insert_with(|| Value::Array(Vec::new()));
            w.entry("remote_scopes")
                .or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    Ok(())
}

/// The open, locked data directory and the state loaded from it.
pub struct Store {
    dir: PathBuf,
    path: PathBuf,
    state: State,
    /// Holds the `flock`; closing it (on drop) releases the directory.
    _lock: File,
    /// Saves still to fail on purpose (see [`FAIL_SAVES_ENV`]); always 0 in release builds.
    fail_saves: u32,
}

impl Store {
    /// Create the directory (0700) if missing, take the lock, and load (migrating if needed)
    /// or start fresh when there is no state file yet.
    pub fn open(data_dir: &Path) -> Result<Store, Fatal> {
        if !data_dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|e| {
                    Fatal::State(format!(
                        "cannot create data directory {}: {e}",
                        data_dir.display()
                    ))
                })?;
        }
        let lock = take_lock(data_dir)?;
        // Leftovers of a save that a crash interrupted: never the live file, safe to drop.
        for stale in [TEMP_FILE, BACKUP_TEMP_FILE] {
            let _ = fs::remove_file(data_dir.join(stale));
        }
        let state = read_state(data_dir)?;
        Ok(Store {
            dir: data_dir.to_path_buf(),
            path: data_dir.join(STATE_FILE),
            state,
            _lock: lock,
            fail_saves: injected_failures(),
        })
    }

    /// Write the state to disk atomically (see the module comment for the sequence).
    /// Errors name the file involved; the previous `state.json` is intact after any error.
    pub fn save(&mut self) -> Result<(), SaveError> {
        self.state.version = STATE_VERSION;
        let mut bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| self.failed(e))?;
        bytes.push(b'\n');
        self.commit(&bytes)
    }

    /// Save a state held elsewhere (the running relay owns its `State`; the store owns the
    /// file and the lock). The store's own copy is not updated.
    pub fn save_state(&mut self, state: &State) -> Result<(), SaveError> {
        let mut v = serde_json::to_value(state).map_err(|e| self.failed(e))?;
        v["version"] = serde_json::json!(STATE_VERSION);
        let mut bytes = serde_json::to_vec_pretty(&v).map_err(|e| self.failed(e))?;
        bytes.push(b'\n');
        self.commit(&bytes)
    }

    fn failed(&self, e: serde_json::Error) -> SaveError {
        SaveError {
            path: self.path.clone(),
            error: io::Error::other(e),
        }
    }

    fn commit(&mut self, bytes: &[u8]) -> Result<(), SaveError> {
        let tmp = self.dir.join(TEMP_FILE);
        let err = |path: &Path, error: io::Error| SaveError {
            path: path.to_path_buf(),
            error,
        };
        if self.fail_saves > 0 {
            self.fail_saves -= 1;
            return Err(err(
                &tmp,
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("injected save failure ({FAIL_SAVES_ENV})"),
                ),
            ));
        }
        if let Err(e) = write_synced(&tmp, bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(err(&tmp, e));
        }
        if let Err((path, e)) = self.backup_current() {
            let _ = fs::remove_file(&tmp);
            return Err(err(&path, e));
        }
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(err(&self.path, e));
        }
        // The rename is durable only once the directory entry is on disk. If this fsync
        // fails the new file is in place but may not survive a power cut: report failure,
        // so the change is not acknowledged (undoing it in memory is the safe side).
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(&self.dir, e))
    }

    /// Point `state.json.bak` at the current `state.json` (which we loaded or wrote, so it is
    /// good), atomically: link or copy to a temp name, then rename over the old backup.
    fn backup_current(&self) -> Result<(), (PathBuf, io::Error)> {
        let bak_tmp = self.dir.join(BACKUP_TEMP_FILE);
        let _ = fs::remove_file(&bak_tmp);
        // state.json is only ever replaced by rename, never written in place, so a hard link
        // keeps the old bytes as they are: a copy without copying.
        match fs::hard_link(&self.path, &bak_tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // first save
            Err(_) => {
                // Filesystems without hard links: a real copy, synced before it is named .bak.
                let bytes = match fs::read(&self.path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err((self.path.clone(), e)),
                };
                if let Err(e) = write_synced(&bak_tmp, &bytes) {
                    let _ = fs::remove_file(&bak_tmp);
                    return Err((bak_tmp, e));
                }
            }
        }
        let bak = self.dir.join(BACKUP_FILE);
        fs::rename(&bak_tmp, &bak).map_err(|e| (bak.clone(), e))?;
        // POSIX rename does nothing when both names are links to one file (a save that failed
        // after this step leaves .bak linked to the live file); drop the extra name then.
        let _ = fs::remove_file(&bak_tmp);
        Ok(())
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// `<data-dir>/state.json`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

/// Load `<data-dir>/state.json` without taking the lock (read-only views, e.g. a CLI listing
/// while the relay runs). A missing file is a fresh state unless a `.bak` exists; anything
/// unusable is an error that names the file and says what the `.bak` could do.
pub fn read_state(data_dir: &Path) -> Result<State, Fatal> {
    let path = data_dir.join(STATE_FILE);
    let bak = data_dir.join(BACKUP_FILE);
    let problem = match load_file(&path) {
        Ok(Some(state)) => return Ok(state),
        Ok(None) => None,
        Err(p) => Some(p),
    };
    let (p, b) = (path.display(), bak.display());
    let bak_state = load_file(&bak);
    let msg = match (problem, bak_state) {
        (None, Ok(None)) => return Ok(State::default()),
        (None, Ok(Some(_))) => format!(
            "{p} is missing but {b} exists and loads; not starting empty. The backup is one \
             save older than the lost file, so its last change (a new or revoked key, say) may \
             be missing from it. To restore it: cp -p {b} {p}  To start empty on purpose: \
             move {b} away first"
        ),
        (None, Err(bp)) => format!(
            "{p} is missing and {b} is unusable ({bp}); not starting empty. Restore {p} from \
             your own backup, or move {b} away to start empty on purpose"
        ),
        (Some(sp), Ok(Some(_))) => format!(
            "{p}: {sp}; the file was left untouched. {b} loads; it is one save older, so the \
             last change may be missing from it. To restore it: mv {p} {p}.broken && cp -p {b} {p}"
        ),
        (Some(sp), Ok(None)) => {
            format!("{p}: {sp}; the file was left untouched (there is no {b})")
        }
        (Some(sp), Err(bp)) => format!(
            "{p}: {sp}; {b} is unusable too ({bp}); both files were left untouched. Restore \
             {p} from your own backup, or move both away to start empty"
        ),
    };
    Err(Fatal::State(msg))
}

/// One state file: `Ok(None)` when it does not exist, the migrated state when it loads,
/// else what is wrong with it. Never blocks: the type is checked before the file is opened.
fn load_file(path: &Path) -> Result<Option<State>, String> {
    match regular_file(path) {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(p) => return Err(p),
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "{} is readable by other users; the next save rewrites it with mode 0600",
                path.display()
            );
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".into());
    }
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    migrate(value).map(Some)
}

/// Whether `path` is a regular file (following symlinks): `Ok(false)` when nothing is
/// there, an error naming the kind when something else is (a FIFO would block an open
/// for reading until a writer came, and a lock or state file can never be one).
pub fn regular_file(path: &Path) -> Result<bool, String> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            let t = m.file_type();
            let kind = if t.is_dir() {
                "a directory"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_socket() {
                "a socket"
            } else if t.is_block_device() || t.is_char_device() {
                "a device"
            } else {
                "not a regular file"
            };
            Err(format!("it is {kind}, not a regular file"))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if fs::symlink_metadata(path).is_ok() {
                Err("it is a symbolic link to a missing file".into())
            } else {
                Ok(false)
            }
        }
        Err(e) => Err(format!("cannot inspect it: {e}")),
    }
}

/// Open `<dir>/lock` and take an exclusive, non-blocking `flock` on it; write our pid into it
/// so the refusal a second relay prints can say who holds it.
/// How long a busy lock is retried before the data directory counts as in use.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

fn take_lock(dir: &Path) -> Result<File, Fatal> {
    let path = dir.join(LOCK_FILE);
    if let Err(p) = regular_file(&path) {
        return Err(Fatal::State(format!(
            "lock file {}: {p}; remove it (the relay creates it)",
            path.display()
        )));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false) // the holder's pid must survive a refused open
        .mode(0o600)
        .open(&path)
        .map_err(|e| Fatal::State(format!("cannot open lock file {}: {e}", path.display())))?;
    // `File::try_lock` (flock LOCK_EX|LOCK_NB on Unix) is std since 1.89 (our rust-version).
    // A lock can be held for an instant by a process that does not own it: a child forked
    // by another thread between fork and exec carries a copy of every descriptor (even
    // close-on-exec ones). So a busy lock is retried briefly before we call it "in use";
    // a running relay holds it for good and still gets refused within LOCK_PATIENCE.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let locked = loop {
        match file.try_lock() {
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => break other,
        }
    };
    match locked {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let pid = if pid.is_empty() { "unknown" } else { pid };
            return Err(Fatal::State(format!(
                "data directory {} is in use by another fvtt-relay (pid {pid})",
                dir.display()
            )));
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(Fatal::State(format!("cannot lock {}: {e}", path.display())))
        }
    }
    // Informational only: the flock, not this text, is what excludes.
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// Create `path` afresh with mode 0600, write `bytes`, and fsync before returning.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let _ = fs::remove_file(path); // `mode` applies only to a file we create
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Wall-clock unix milliseconds, for callers that then pass `now_ms` into pure code.
/// A clock before 1970 reads as 0 rather than failing.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh, empty directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "fvtt-relay-{tag}-{}-{}",
                std::process::id(),
                crate::ids::random_hex(6)
            ));
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fatal_msg(r: Result<Store, Fatal>) -> String {
        match r {
            Err(Fatal::State(m)) => m,
            Err(other) => panic!("expected Fatal::State, got {other:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    fn sample_key(i: u32) -> ApiKey {
        ApiKey {
            id: format!("key_{i:04x}"),
            name: format!("key {i}"),
            hash: crate::auth::hash_secret(&format!("secret{i}")),
            prefix: "secret".into(),
            scopes: vec!["entity:read".into()],
            client_ids: vec![],
            user_id: Some("gm".into()),
            expires_at_ms: Some(1_000 + u64::from(i)),
            rate_limit_per_minute: None,
            created_ms: 5,
            last_used_ms: None,
        }
    }

    #[test]
    fn fresh_dir_is_created_0700_with_fresh_state() {
        let t = TempDir::new("fresh");
        let dir = t.0.join("nested/data");
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.state().version, STATE_VERSION);
        assert!(s.state().api_keys.is_empty());
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(s.path(), dir.join("state.json"));
        assert_eq!(s.data_dir(), dir);
        // Opening writes nothing but the lock.
        assert!(!s.path().exists());
    }

    #[test]
    fn save_load_round_trip_mode_and_no_temp_left() {
        let t = TempDir::new("roundtrip");
        {
            let mut s = Store::open(&t.0).unwrap();
            let st = s.state_mut();
            st.admin_key_hash = crate::auth::hash_secret("admin");
            st.api_keys = (0..3).map(sample_key).collect();
            st.worlds.push(KnownWorld {
                client_id: "fvtt_0123456789abcdef".into(),
                world_title: "Wörld ✓".into(),
                paired_ms: 9,
                ..KnownWorld::default()
            });
            st.pairing_codes.push(PairingCode {
                code: "ABCDEF".into(),
                expires_ms: 77,
                used: false,
                client_id: None,
            });
            st.reindex();
            s.save().unwrap();
            s.save().unwrap();
        }
        let names: Vec<String> = fs::read_dir(&t.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
        let mode = fs::metadata(t.0.join("state.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let s = Store::open(&t.0).unwrap();
        let st = s.state();
        assert_eq!(st.api_keys, (0..3).map(sample_key).collect::<Vec<_>>());
        assert_eq!(st.worlds[0].world_title, "Wörld ✓");
        assert_eq!(st.pairing_codes[0].code, "ABCDEF");
        assert_eq!(st.admin_key_hash, crate::auth::hash_secret("admin"));
        // The index is rebuilt on load.
        assert_eq!(st.key_index.get(&sample_key(2).hash), Some(&2));
    }

    #[test]
    fn backup_holds_the_previous_save() {
        let t = TempDir::new("bak");
        let mut s = Store::open(&t.0).unwrap();
        s.save().unwrap(); // no previous file: no .bak yet
        assert!(!t.0.join("state.json.bak").exists());
        s.state_mut().api_keys.push(sample_key(1));
        s.save().unwrap();
        let bak: Value =
            serde_json::from_slice(&fs::read(t.0.join("state.json.bak")).unwrap()).unwrap();
        assert_eq!(bak["api_keys"].as_array().unwrap().len(), 0);
        s.state_mut().api_keys.push(sample_key(2));
        s.save().unwrap();
        let bak: Value =
            serde_json::from_slice(&fs::read(t.0.join("state.json.bak")).unwrap()).unwrap();
        assert_eq!(bak["api_keys"].as_array().unwrap().len(), 1);
        let mode = fs::metadata(t.0.join("state.json.bak"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn backup_already_linked_to_the_live_file_leaves_no_temp() {
        let t = TempDir::new("baklink");
        let mut s = Store::open(&t.0).unwrap();
        s.save().unwrap();
        // What a save interrupted between backup and final rename leaves behind.
        fs::hard_link(t.0.join("state.json"), t.0.join("state.json.bak")).unwrap();
        s.state_mut().api_keys.push(sample_key(1));
        s.save().unwrap();
        assert!(!t.0.join("state.json.bak.tmp").exists());
        let bak: Value =
            serde_json::from_slice(&fs::read(t.0.join("state.json.bak")).unwrap()).unwrap();
        assert_eq!(bak["api_keys"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn corrupt_or_unusable_files_are_named_and_left_untouched() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty"),
            (b"  \n", "empty"),
            (b"{\"version\":1,\"api_keys\":[", "not valid JSON"),
            (b"[1,2]", "not a JSON object"),
            (b"{\"version\":99}", "newer fvtt-relay"),
            (
                b"{\"version\":1,\"api_keys\":[{\"id\":3}]}",
                "invalid state",
            ),
        ];
        for (bytes, want) in cases {
            let t = TempDir::new("corrupt");
            fs::create_dir_all(&t.0).unwrap();
            let path = t.0.join("state.json");
            fs::write(&path, bytes).unwrap();
            fs::write(t.0.join("state.json.bak"), b"{}").unwrap();
            let msg = fatal_msg(Store::open(&t.0));
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(want), "{msg} should mention {want}");
            assert!(msg.contains("state.json.bak"), "{msg}");
            assert_eq!(fs::read(&path).unwrap(), bytes, "file was modified");
        }
    }

    #[test]
    fn unreadable_file_is_an_error_not_a_fresh_state() {
        let t = TempDir::new("unreadable");
        // A directory where the file should be: reading fails with an I/O error.
        fs::create_dir_all(t.0.join("state.json")).unwrap();
        let msg = fatal_msg(Store::open(&t.0));
        assert!(
            msg.contains("it is a directory, not a regular file"),
            "{msg}"
        );
        assert!(t.0.join("state.json").is_dir());
    }

    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mkfifo {}", path.display());
    }

    /// Open on a thread, so a regression that blocks fails the test instead of hanging it.
    fn open_within(dir: &Path, limit: std::time::Duration) -> Result<Store, Fatal> {
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(Store::open(&d));
        });
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => panic!("Store::open blocked on {}", dir.display()),
        }
    }

    #[test]
    fn fifos_are_refused_at_once_not_opened() {
        for name in ["state.json", "state.json.bak", "lock"] {
            let t = TempDir::new("fifo");
            fs::create_dir_all(&t.0).unwrap();
            if name == "state.json.bak" {
                // A .bak only matters when state.json is missing or broken.
                fs::write(t.0.join("state.json"), b"{").unwrap();
            }
            mkfifo(&t.0.join(name));
            let msg = fatal_msg(open_within(&t.0, std::time::Duration::from_secs(5)));
            assert!(msg.contains(name), "{name}: {msg}");
            assert!(
                msg.contains("it is a FIFO, not a regular file"),
                "{name}: {msg}"
            );
        }
    }

    #[test]
    fn missing_state_with_a_backup_refuses_to_start_empty() {
        let t = TempDir::new("nostate");
        {
            let mut s = Store::open(&t.0).unwrap();
            s.state_mut().api_keys.push(sample_key(1));
            s.save().unwrap();
            s.state_mut().api_keys.push(sample_key(2));
            s.save().unwrap();
        }
        fs::remove_file(t.0.join("state.json")).unwrap();
        let bak = fs::read(t.0.join("state.json.bak")).unwrap();
        let msg = fatal_msg(Store::open(&t.0));
        assert!(msg.contains("is missing but"), "{msg}");
        assert!(msg.contains("loads"), "{msg}");
        assert!(msg.contains("cp -p"), "{msg}");
        assert!(!t.0.join("state.json").exists(), "nothing may be written");
        assert_eq!(fs::read(t.0.join("state.json.bak")).unwrap(), bak);
        // Restoring as the message says works.
        fs::copy(t.0.join("state.json.bak"), t.0.join("state.json")).unwrap();
        assert_eq!(Store::open(&t.0).unwrap().state().api_keys.len(), 1);
        // A broken .bak alone is refused too, and not called good.
        fs::remove_file(t.0.join("state.json")).unwrap();
        fs::write(t.0.join("state.json.bak"), b"{oops").unwrap();
        let msg = fatal_msg(Store::open(&t.0));
        assert!(msg.contains("is missing and"), "{msg}");
        assert!(msg.contains("unusable"), "{msg}");
        assert!(!msg.contains("loads"), "{msg}");
    }

    #[test]
    fn both_files_broken_names_both_and_calls_neither_good() {
        let t = TempDir::new("bothbad");
        fs::create_dir_all(&t.0).unwrap();
        fs::write(t.0.join("state.json"), b"{\"version\":").unwrap();
        fs::write(t.0.join("state.json.bak"), b"").unwrap();
        let msg = fatal_msg(Store::open(&t.0));
        assert!(msg.contains("state.json: not valid JSON"), "{msg}");
        assert!(
            msg.contains("state.json.bak is unusable too (the file is empty)"),
            "{msg}"
        );
        assert!(!msg.contains("good"), "{msg}");
        assert!(!msg.contains("loads"), "{msg}");
    }

    #[test]
    fn injected_and_real_save_failures_leave_the_file_alone() {
        let t = TempDir::new("failsave");
        let mut s = Store::open(&t.0).unwrap();
        s.state_mut().api_keys.push(sample_key(1));
        s.save().unwrap();
        let before = fs::read(t.0.join("state.json")).unwrap();
        s.fail_saves = 1;
        s.state_mut().api_keys.push(sample_key(2));
        let e = s.save().unwrap_err();
        assert!(e.to_string().contains("state.json.tmp"), "{e}");
        assert!(e.reason().contains("injected"), "{e}");
        assert!(!e.reason().contains(&t.0.display().to_string()), "{e}");
        assert_eq!(fs::read(t.0.join("state.json")).unwrap(), before);
        // A real failure: the temp name is taken by a directory.
        fs::create_dir(t.0.join("state.json.tmp")).unwrap();
        fs::write(t.0.join("state.json.tmp/x"), b"").unwrap();
        assert!(s.save().is_err());
        assert_eq!(fs::read(t.0.join("state.json")).unwrap(), before);
        fs::remove_dir_all(t.0.join("state.json.tmp")).unwrap();
        s.save().unwrap();
        assert_ne!(fs::read(t.0.join("state.json")).unwrap(), before);
    }

    #[test]
    fn lock_excludes_a_second_open_until_drop() {
        let t = TempDir::new("lock");
        let first = Store::open(&t.0).unwrap();
        let msg = fatal_msg(Store::open(&t.0));
        assert!(
            msg.contains(&format!(
                "data directory {} is in use by another fvtt-relay (pid {})",
                t.0.display(),
                std::process::id()
            )),
            "{msg}"
        );
        // The refused open must not have wiped the holder's pid.
        let pid = fs::read_to_string(t.0.join("lock")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(first);
        let _again = Store::open(&t.0).unwrap();
    }

    #[test]
    fn stale_temp_files_from_a_crash_are_removed() {
        let t = TempDir::new("stale");
        fs::create_dir_all(&t.0).unwrap();
        fs::write(t.0.join("state.json.tmp"), b"{\"vers").unwrap();
        fs::write(t.0.join("state.json.bak.tmp"), b"").unwrap();
        let _s = Store::open(&t.0).unwrap();
        assert!(!t.0.join("state.json.tmp").exists());
        assert!(!t.0.join("state.json.bak.tmp").exists());
    }

    #[test]
    fn migrates_a_minimal_v0_file() {
        let t = TempDir::new("migrate");
        fs::create_dir_all(&t.0).unwrap();
        let h = crate::auth::hash_secret("k");
        let v0 = format!(
            r#"{{"api_keys":[{{"id":"key_1","name":"old","hash":"{h}",
                 "scopes":"entity:read, chat:write,,","client_ids":"fvtt_a"}}],
                 "tokens":[{{"id":"tok_1","hash":"ab","client_id":"fvtt_a"}}]}}"#
        );
        fs::write(t.0.join("state.json"), v0).unwrap();
        let mut s = Store::open(&t.0).unwrap();
        let st = s.state();
        assert_eq!(st.version, STATE_VERSION);
        assert_eq!(st.admin_key_hash, "");
        assert_eq!(st.api_keys[0].scopes, ["entity:read", "chat:write"]);
        assert_eq!(st.api_keys[0].client_ids, ["fvtt_a"]);
        assert_eq!(st.api_keys[0].user_id, None);
        assert_eq!(st.tokens[0].allowed_ips, Vec::<String>::new());
        assert!(st.worlds.is_empty());
        assert_eq!(st.key_index.get(&h), Some(&0));
        s.save().unwrap();
        let saved: Value =
            serde_json::from_slice(&fs::read(t.0.join("state.json")).unwrap()).unwrap();
        assert_eq!(saved["version"], STATE_VERSION);
        assert_eq!(saved["api_keys"][0]["scopes"][1], "chat:write");
    }

    #[test]
    fn migrate_rejects_bad_versions() {
        for (json, want) in [
            (r#"{"version":-1}"#, "non-negative"),
            (r#"{"version":"1"}"#, "non-negative"),
            (r#"{"version":4294967296}"#, "non-negative"),
            (r#"{"version":3}"#, "newer"),
            (r#"{"version":1,"worlds":{}}"#, "not an array"),
            (r#"{"version":1,"worlds":[1]}"#, "not an object"),
            (r#"{"api_keys":{}}"#, "not an array"),
        ] {
            let v: Value = serde_json::from_str(json).unwrap();
            let e = migrate(v).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
        let ok: Value = serde_json::from_str(r#"{"version":1}"#).unwrap();
        assert_eq!(migrate(ok).unwrap().version, STATE_VERSION);
    }

    #[test]
    fn v1_worlds_gain_server_origin() {
        let t = TempDir::new("migrate-v1");
        fs::create_dir_all(&t.0).unwrap();
        let v1 = r#"{"version":1,"worlds":[{"client_id":"fvtt_a","world_id":"w",
            "server_fingerprint":"fp","paired_ms":5}]}"#;
        fs::write(t.0.join("state.json"), v1).unwrap();
        let mut s = Store::open(&t.0).unwrap();
        assert_eq!(s.state().version, 2);
        assert_eq!(s.state().worlds[0].server_origin, "");
        assert_eq!(s.state().worlds[0].server_fingerprint, "fp");
        s.save().unwrap();
        let saved: Value =
            serde_json::from_slice(&fs::read(t.0.join("state.json")).unwrap()).unwrap();
        assert_eq!(saved["version"], 2);
        assert_eq!(saved["worlds"][0]["server_origin"], "");
        assert_eq!(saved["worlds"][0]["paired_ms"], 5);
        assert_eq!(saved["worlds"][0]["allowed_targets"], serde_json::json!([]));
        assert_eq!(saved["worlds"][0]["remote_scopes"], serde_json::json!([]));
    }

    #[test]
    fn unix_ms_is_after_2020() {
        assert!(unix_ms() > 1_577_836_800_000);
    }
}
