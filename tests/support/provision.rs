//! Keys and a connection token written into a data dir before the relay starts, through
//! the library crate's store (the same code the binary uses to load them), and a relay
//! started on such a dir.

use super::server::{Relay, TempDir};
use super::world::FakeWorld;
use std::path::Path;

/// What a test needs to talk to a provisioned relay.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// A scoped API key with every scope, bound to no client.
    pub api_key: String,
    pub admin_key: String,
    /// The world's clientId, paired with `token`.
    pub client_id: String,
    /// The world's connection token (the module's `connectionToken`).
    pub token: String,
    /// One key per entry of `provision_with`'s `extra`, in order (empty for `provision`).
    pub extra_keys: Vec<String>,
}

/// Extra API keys for `provision_with`: (scopes, scopedClientIds) each; a `$W` in a
/// clientId stands for the provisioned world's.
pub type ExtraKeys<'a> = [(&'a [&'a str], &'a [&'a str])];

/// Creates the admin key, a full-scope API key and a paired world in `dir`, saves, and
/// releases the store's lock (by dropping it) so a relay can open the dir.
pub fn provision(dir: &Path) -> Provisioned {
    provision_with(dir, &[])
}

/// `provision`, plus one API key per entry of `extra` (in `Provisioned::extra_keys`).
pub fn provision_with(dir: &Path, extra: &ExtraKeys) -> Provisioned {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut store = match fvtt_relay::store::Store::open(dir) {
        Ok(s) => s,
        Err(e) => panic!("cannot open the store in {}: {e:?}", dir.display()),
    };
    let client_id = fvtt_relay::ids::new_client_id();
    let owned = |list: &[&str]| -> Vec<String> {
        list.iter().map(|s| s.replace("$W", &client_id)).collect()
    };
    let (admin_key, mut keys, token) = {
        let state = store.state_mut();
        let admin_key = state.rotate_admin_key();
        let all = fvtt_relay::auth::ALL_SCOPES;
        let specs = std::iter::once((&all[..], &[][..])).chain(extra.iter().copied());
        let keys: Vec<String> = specs
            .map(|(scopes, client_ids)| {
                let spec = fvtt_relay::auth::NewKey {
                    name: "integration-test".into(),
                    scopes: owned(scopes),
                    client_ids: owned(client_ids),
                    ..fvtt_relay::auth::NewKey::default()
                };
                match state.create_api_key(spec, now_ms) {
                    Ok((_, key)) => key,
                    Err(e) => panic!("cannot create a test API key: {e}"),
                }
            })
            .collect();
        let (_, token) = state.create_connection_token(&client_id, now_ms);
        (admin_key, keys, token)
    };
    if let Err(e) = store.save() {
        panic!("cannot save the store in {}: {e:?}", dir.display());
    }
    drop(store);
    // Like a first start: the admin key also sits in <data-dir>/admin.key.
    if let Err(e) = std::fs::write(dir.join("admin.key"), format!("{admin_key}\n")) {
        panic!("cannot write admin.key in {}: {e}", dir.display());
    }
    let api_key = keys.remove(0);
    Provisioned {
        api_key,
        admin_key,
        client_id,
        token,
        extra_keys: keys,
    }
}

/// A provisioned data dir plus a relay running on it. The dir outlives the relay (field
/// order: the relay is dropped first).
pub struct ProvisionedRelay {
    pub relay: Relay,
    pub keys: Provisioned,
    pub dir: TempDir,
}

impl ProvisionedRelay {
    /// The full-scope API key.
    pub fn key(&self) -> &str {
        &self.keys.api_key
    }

    /// The provisioned world, online (authenticated, player list sent).
    pub fn world(&self) -> FakeWorld {
        FakeWorld::online(self.relay.addr(), &self.keys.client_id, &self.keys.token)
    }
}

/// `provision` a fresh temp dir, then start a relay on it with `args`.
pub fn start_provisioned(args: &[&str]) -> ProvisionedRelay {
    start_provisioned_with(args, &[])
}

/// `start_provisioned`, with `edit` run on the provisioned state (saved) before the relay
/// starts: for records `provision_with` does not make. Returns what `edit` returns.
pub fn start_provisioned_edited<T>(
    args: &[&str],
    edit: impl FnOnce(&mut fvtt_relay::store::State, &Provisioned) -> T,
) -> (ProvisionedRelay, T) {
    let dir = TempDir::new("data");
    let keys = provision(dir.path());
    let made = {
        let mut store = open_store_when_free(dir.path());
        let made = edit(store.state_mut(), &keys);
        if let Err(e) = store.save() {
            panic!("cannot save the store in {}: {e:?}", dir.path().display());
        }
        made
    };
    let relay = Relay::start_in_when_free(dir.path(), args);
    (ProvisionedRelay { relay, keys, dir }, made)
}

/// `Store::open`, retried for up to 5 s while the lock is held (a relay spawned by a
/// parallel test can hold it between its fork and exec; see `Relay::start_in_when_free`).
pub fn open_store_when_free(dir: &Path) -> fvtt_relay::store::Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match fvtt_relay::store::Store::open(dir) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() >= deadline => panic!("store: {e:?}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// `start_provisioned` with extra API keys (see `provision_with`).
pub fn start_provisioned_with(args: &[&str], extra: &ExtraKeys) -> ProvisionedRelay {
    let dir = TempDir::new("data");
    let keys = provision_with(dir.path(), extra);
    let relay = Relay::start_in_when_free(dir.path(), args);
    ProvisionedRelay { relay, keys, dir }
}
