//! Keys and a connection token written into a data dir before the relay starts, through
//! the library crate's store (the same code the binary uses to load them).
//!
//! NOTE: written against the store/auth API promised in the support brief
//! (`Store::open`, `state_mut().ensure_admin_key()`, `create_api_key(NewKey, now_ms)`,
//! `create_connection_token(&client_id, now_ms)`, `save()`); adjust here if it differs.

use super::server::{Relay, TempDir};
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
}

/// Creates the admin key, a full-scope API key and a paired world in `dir`, saves, and
/// releases the store's lock (by dropping it) so a relay can open the dir.
pub fn provision(dir: &Path) -> Provisioned {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut store = match fvtt_relay::store::Store::open(dir) {
        Ok(s) => s,
        Err(e) => panic!("cannot open the store in {}: {e:?}", dir.display()),
    };
    let client_id = fvtt_relay::ids::new_client_id();
    let (admin_key, api_key, token) = {
        let state = store.state_mut();
        let admin_key = state.rotate_admin_key();
        let api_key = state.create_api_key(
            fvtt_relay::auth::NewKey {
                name: "integration-test".into(),
                scopes: fvtt_relay::auth::ALL_SCOPES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                client_ids: vec![],
                user_id: None,
                expires_in_days: None,
                rate_limit_per_minute: None,
            },
            now_ms,
        );
        let api_key = match api_key {
            Ok((_, key)) => key,
            Err(e) => panic!("cannot create the test API key: {e}"),
        };
        let (_, token) = state.create_connection_token(&client_id, now_ms);
        (admin_key, api_key, token)
    };
    if let Err(e) = store.save() {
        panic!("cannot save the store in {}: {e:?}", dir.display());
    }
    drop(store);
    // Like a first start: the admin key also sits in <data-dir>/admin.key.
    if let Err(e) = std::fs::write(dir.join("admin.key"), format!("{admin_key}\n")) {
        panic!("cannot write admin.key in {}: {e}", dir.display());
    }
    Provisioned {
        api_key,
        admin_key,
        client_id,
        token,
    }
}

/// A provisioned data dir plus a relay running on it. The dir outlives the relay (field
/// order: the relay is dropped first).
pub struct ProvisionedRelay {
    pub relay: Relay,
    pub keys: Provisioned,
    pub dir: TempDir,
}

/// `provision` a fresh temp dir, then `Relay::start_in` it with `args`.
pub fn start_provisioned(args: &[&str]) -> ProvisionedRelay {
    let dir = TempDir::new("data");
    let keys = provision(dir.path());
    let relay = Relay::start_in(dir.path(), args);
    ProvisionedRelay { relay, keys, dir }
}
