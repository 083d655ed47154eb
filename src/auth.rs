//! Credentials: the admin key, scoped API keys and their scopes, connection tokens with their
//! IP allow-lists, and pairing codes (relay-protocol.md §5; api-surface.md "Scope strings",
//! "Auth model").
//!
//! Secrets are shown once and kept only as SHA-256 hex (§5.5, §8 #13). A presented secret is
//! hashed and looked up in a `hash -> index` map (O(1)); the map is keyed by the hash, so its
//! timing reveals nothing usable about the secret, and the final comparison with the stored
//! hash is constant-time. Pure: every time is passed in as `now_ms`.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::ids;
use crate::store::{ApiKey, ConnToken, KnownWorld, PairingCode, State};

/// The 32 scopes, in the reference's `model.AllScopes` order (api-surface.md "Scope strings").
pub const ALL_SCOPES: [&str; 32] = [
    "entity:read",
    "entity:write",
    "roll:read",
    "roll:execute",
    "chat:read",
    "chat:write",
    "encounter:read",
    "encounter:manage",
    "macro:list",
    "macro:execute",
    "macro:write",
    "scene:read",
    "scene:write",
    "canvas:read",
    "canvas:write",
    "effects:read",
    "effects:write",
    "user:read",
    "user:write",
    "file:read",
    "file:write",
    "playlist:control",
    "world:info",
    "clients:read",
    "sheet:read",
    "events:subscribe",
    "session:manage",
    "execute-js",
    "search",
    "structure:read",
    "structure:write",
    "dnd5e",
];

/// The 17 read-only scopes a new key gets when none are chosen (api-surface.md).
pub const DEFAULT_SCOPES: [&str; 17] = [
    "entity:read",
    "roll:read",
    "chat:read",
    "encounter:read",
    "macro:list",
    "scene:read",
    "canvas:read",
    "effects:read",
    "user:read",
    "file:read",
    "world:info",
    "clients:read",
    "sheet:read",
    "events:subscribe",
    "search",
    "structure:read",
    "dnd5e",
];

/// Bytes of randomness in every secret: 32, printed as 64 hex like the reference's keys and
/// tokens (§5.1), so apps and the module see the same shape.
const SECRET_BYTES: usize = 32;
/// Longest key name accepted; names are shown in listings and logs.
const MAX_NAME_CHARS: usize = 100;
const MS_PER_DAY: u64 = 86_400_000;

/// SHA-256 of the secret's UTF-8 bytes, as 64 lowercase hex digits.
pub fn hash_secret(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Equality whose running time does not depend on where `a` and `b` differ. Lengths are not
/// secret here (both sides are 64-hex hashes), so unequal lengths return at once.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// `prefix` followed by 32 random bytes as hex. Keys and tokens use an empty prefix so they
/// are 64 hex like the reference's (§5.1).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", ids::random_hex(SECRET_BYTES))
}

/// The first 6 characters of a secret: enough to tell keys apart in a listing or a log line,
/// far too little to guess the rest (58 hex digits stay secret).
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(6).collect()
}

/// What `create_api_key` needs (the `POST /auth/api-keys` body, §5.2, minus hosted fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    /// At least one, each from [`ALL_SCOPES`]; duplicates are dropped.
    pub scopes: Vec<String>,
    /// `scopedClientIds`: empty = any world.
    pub client_ids: Vec<String>,
    pub user_id: Option<String>,
    pub expires_in_days: Option<u32>,
    pub rate_limit_per_minute: Option<u32>,
}

/// Who a presented key belongs to. `Key` is an index into `state.api_keys`, valid until the
/// next mutation of the state: resolve it per request, do not keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Key(usize),
}

/// Why a presented API key was refused (401 bodies, relay-protocol.md §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid,
    Expired,
}

impl AuthError {
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing => "API key is required",
            AuthError::Invalid => "Invalid API key",
            AuthError::Expired => "API key has expired",
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Why a connection token was refused. Every case closes the module with 4002
/// (module-protocol.md §6 item 3); the variants exist for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    Invalid,
    IpNotAllowed,
    WrongClient,
}

impl TokenError {
    pub fn message(&self) -> &'static str {
        match self {
            TokenError::Invalid => "Invalid connection token",
            TokenError::IpNotAllowed => "Connection not allowed from this IP",
            TokenError::WrongClient => "Token does not belong to this client",
        }
    }
}

/// Why `/auth/pair` refused a code (relay-protocol.md §5.6: 404 / 410 / 410).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingError {
    Invalid,
    Used,
    Expired,
}

impl PairingError {
    pub fn status(&self) -> u16 {
        match self {
            PairingError::Invalid => 404,
            PairingError::Used | PairingError::Expired => 410,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            PairingError::Invalid => "Invalid pairing code",
            PairingError::Used => "Pairing code has already been used",
            PairingError::Expired => "Pairing code has expired",
        }
    }
}

/// One allow-list entry: an address, or a network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpRule {
    V4 { net: u32, prefix: u8 },
    V6 { net: u128, prefix: u8 },
}

impl IpRule {
    /// `1.2.3.4`, `10.0.0.0/8`, `::1`, `fe80::/10`, `::ffff:1.2.3.4` (read as IPv4). Host bits
    /// set below the prefix are ignored, as most firewalls do.
    pub fn parse(s: &str) -> Result<IpRule, String> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                let len: u8 = l
                    .parse()
                    .map_err(|_| format!("invalid prefix length in {s:?}"))?;
                (a, Some(len))
            }
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                // A mapped rule compares like the IPv4 it names; its prefix counts from bit 96.
                let v4 = v6.to_ipv4_mapped().map(u32::from).unwrap_or(0);
                let len = match len {
                    None => 32,
                    Some(l) if (96..=128).contains(&l) => l - 96,
                    Some(_) => return Err(format!("prefix length out of range in {s:?}")),
                };
                Ok(IpRule::V4 {
                    net: v4 & mask_v4(len),
                    prefix: len,
                })
            }
            IpAddr::V4(v4) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(format!("prefix length out of range in {s:?}"));
                }
                Ok(IpRule::V4 {
                    net: u32::from(v4) & mask_v4(len),
                    prefix: len,
                })
            }
            IpAddr::V6(v6) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(format!("prefix length out of range in {s:?}"));
                }
                Ok(IpRule::V6 {
                    net: u128::from(v6) & mask_v6(len),
                    prefix: len,
                })
            }
        }
    }

    /// Whether `ip` is inside this rule. An IPv4-mapped IPv6 peer (a dual-stack listener's
    /// view of an IPv4 client) is compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (IpRule::V4 { net, prefix }, IpAddr::V4(a)) => u32::from(a) & mask_v4(*prefix) == *net,
            (IpRule::V6 { net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask_v6(*prefix) == *net,
            _ => false,
        }
    }
}

fn mask_v4(len: u8) -> u32 {
    match len {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l.min(32))),
    }
}

fn mask_v6(len: u8) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l.min(128))),
    }
}

/// Whether `peer` passes an allow-list: empty = any; an entry that does not parse (a hand
/// edit of state.json) matches nothing, so a typo fails closed.
pub fn ip_allowed(allowed: &[String], peer: IpAddr) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|r| IpRule::parse(r).is_ok_and(|rule| rule.contains(peer)))
}

impl State {
    /// Create the admin key if there is none; returns its plaintext that one time.
    pub fn ensure_admin_key(&mut self) -> Option<String> {
        if self.admin_key_hash.is_empty() {
            Some(self.rotate_admin_key())
        } else {
            None
        }
    }

    /// Replace the admin key; the old one stops working at once. Returns the new plaintext.
    pub fn rotate_admin_key(&mut self) -> String {
        let secret = new_secret("");
        self.admin_key_hash = hash_secret(&secret);
        secret
    }

    /// Validate `spec` and add a key. Returns its index and the plaintext, which is never
    /// stored and cannot be shown again.
    pub fn create_api_key(&mut self, spec: NewKey, now_ms: u64) -> Result<(usize, String), String> {
        let name = spec.name.trim();
        if name.is_empty() {
            return Err("name is required".into());
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(format!("name must be at most {MAX_NAME_CHARS} characters"));
        }
        // §5.2: at least one scope, each valid. An empty list would deny everything.
        if spec.scopes.is_empty() {
            return Err("at least one scope is required".into());
        }
        let mut scopes: Vec<String> = Vec::with_capacity(spec.scopes.len());
        for s in &spec.scopes {
            if !ALL_SCOPES.contains(&s.as_str()) {
                return Err(format!("Invalid scope: {s}"));
            }
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let mut client_ids: Vec<String> = Vec::new();
        for c in &spec.client_ids {
            let c = c.trim();
            if c.is_empty() {
                return Err("client ids must not be empty".into());
            }
            if !client_ids.iter().any(|x| x == c) {
                client_ids.push(c.to_string());
            }
        }
        let user_id = match spec.user_id.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(u) => Some(u.to_string()),
        };
        let expires_at_ms = match spec.expires_in_days {
            Some(0) => return Err("expiry must be at least 1 day".into()),
            Some(d) => Some(now_ms.saturating_add(u64::from(d).saturating_mul(MS_PER_DAY))),
            None => None,
        };
        if spec.rate_limit_per_minute == Some(0) {
            return Err("rate limit must be at least 1 request per minute".into());
        }
        let secret = new_secret("");
        let key = ApiKey {
            id: format!("key_{}", ids::random_hex(8)),
            name: name.to_string(),
            hash: hash_secret(&secret),
            prefix: display_prefix(&secret),
            scopes,
            client_ids,
            user_id,
            expires_at_ms,
            rate_limit_per_minute: spec.rate_limit_per_minute,
            created_ms: now_ms,
            last_used_ms: None,
        };
        let idx = self.api_keys.len();
        self.key_index.insert(key.hash.clone(), idx);
        self.api_keys.push(key);
        Ok((idx, secret))
    }

    /// Remove a key by id. Indices of later keys shift (see [`Principal`]).
    pub fn revoke_api_key(&mut self, id: &str) -> bool {
        let before = self.api_keys.len();
        self.api_keys.retain(|k| k.id != id);
        let removed = self.api_keys.len() != before;
        if removed {
            self.reindex();
        }
        removed
    }

    /// Resolve an `x-api-key` value: the admin key or a scoped key (§5.4). Whether the admin
    /// key is welcome on a given route is the caller's decision.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        now_ms: u64,
    ) -> Result<Principal, AuthError> {
        let presented = match presented {
            None | Some("") => return Err(AuthError::Missing),
            Some(p) => p,
        };
        let hash = hash_secret(presented);
        if !self.admin_key_hash.is_empty() && ct_eq(hash.as_bytes(), self.admin_key_hash.as_bytes())
        {
            return Ok(Principal::Admin);
        }
        let idx = self.find_api_key(&hash).ok_or(AuthError::Invalid)?;
        let key = self.api_keys.get(idx).ok_or(AuthError::Invalid)?;
        match key.expires_at_ms {
            Some(exp) if now_ms >= exp => Err(AuthError::Expired),
            _ => Ok(Principal::Key(idx)),
        }
    }

    fn find_api_key(&self, hash: &str) -> Option<usize> {
        let idx = *self.key_index.get(hash)?;
        let key = self.api_keys.get(idx)?;
        ct_eq(key.hash.as_bytes(), hash.as_bytes()).then_some(idx)
    }

    /// Record use of a key (for listings). Not worth a save on its own.
    pub fn touch_api_key(&mut self, idx: usize, now_ms: u64) {
        if let Some(k) = self.api_keys.get_mut(idx) {
            k.last_used_ms = Some(now_ms);
        }
    }

    /// The scopes a principal holds: the admin holds all 32.
    pub fn principal_scopes(&self, p: &Principal) -> Vec<String> {
        match p {
            Principal::Admin => ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            Principal::Key(i) => self
                .api_keys
                .get(*i)
                .map(|k| k.scopes.clone())
                .unwrap_or_default(),
        }
    }

    pub fn principal_has_scope(&self, p: &Principal, scope: &str) -> bool {
        match p {
            Principal::Admin => ALL_SCOPES.contains(&scope),
            Principal::Key(i) => self
                .api_keys
                .get(*i)
                .is_some_and(|k| k.scopes.iter().any(|s| s == scope)),
        }
    }

    /// Mint a token for a world (`POST /auth/pair`, §5.6). Returns its index and plaintext.
    pub fn create_connection_token(&mut self, client_id: &str, now_ms: u64) -> (usize, String) {
        let secret = new_secret("");
        let tok = ConnToken {
            id: format!("tok_{}", ids::random_hex(8)),
            hash: hash_secret(&secret),
            prefix: display_prefix(&secret),
            client_id: client_id.to_string(),
            allowed_ips: Vec::new(),
            created_ms: now_ms,
            last_used_ms: None,
        };
        let idx = self.tokens.len();
        self.token_index.insert(tok.hash.clone(), idx);
        self.tokens.push(tok);
        (idx, secret)
    }

    /// Check the `/relay` first-message token for world `client_id` from `peer`.
    pub fn check_connection_token(
        &self,
        token: &str,
        client_id: &str,
        peer: IpAddr,
    ) -> Result<usize, TokenError> {
        let idx = self
            .find_connection_token(token)
            .ok_or(TokenError::Invalid)?;
        let tok = self.tokens.get(idx).ok_or(TokenError::Invalid)?;
        if tok.client_id != client_id {
            return Err(TokenError::WrongClient);
        }
        if !ip_allowed(&tok.allowed_ips, peer) {
            return Err(TokenError::IpNotAllowed);
        }
        Ok(idx)
    }

    /// The token a plaintext names, whatever its world (`POST /api/self-unpair {token}`).
    pub fn find_connection_token(&self, token: &str) -> Option<usize> {
        if token.is_empty() {
            return None;
        }
        let hash = hash_secret(token);
        let idx = *self.token_index.get(&hash)?;
        let tok = self.tokens.get(idx)?;
        ct_eq(tok.hash.as_bytes(), hash.as_bytes()).then_some(idx)
    }

    pub fn touch_token(&mut self, idx: usize, now_ms: u64) {
        if let Some(t) = self.tokens.get_mut(idx) {
            t.last_used_ms = Some(now_ms);
        }
    }

    /// Replace a token's allow-list after validating every entry. Returns false for an
    /// unknown token id.
    pub fn set_token_allowed_ips(
        &mut self,
        id: &str,
        allowed: Vec<String>,
    ) -> Result<bool, String> {
        let mut clean = Vec::with_capacity(allowed.len());
        for a in allowed {
            IpRule::parse(&a)?;
            clean.push(a.trim().to_string());
        }
        match self.tokens.iter_mut().find(|t| t.id == id) {
            Some(t) => {
                t.allowed_ips = clean;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Remove a token by id; returns its world so the caller can close that link with 4002.
    pub fn revoke_token(&mut self, id: &str) -> Option<String> {
        let pos = self.tokens.iter().position(|t| t.id == id)?;
        let tok = self.tokens.remove(pos);
        self.reindex();
        Some(tok.client_id)
    }

    /// Indices of a world's tokens.
    pub fn tokens_for_client(&self, client_id: &str) -> Vec<usize> {
        self.tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.client_id == client_id)
            .map(|(i, _)| i)
            .collect()
    }

    /// A fresh 6-character code, unique among unexpired codes, valid for `ttl_ms`.
    pub fn create_pairing_code(&mut self, ttl_ms: u64, now_ms: u64) -> (String, u64) {
        self.create_pairing_code_for(None, ttl_ms, now_ms)
    }

    /// As [`State::create_pairing_code`], bound to an existing world: redeeming it re-pairs
    /// that clientId (§5.6 clientId choice, first rule).
    pub fn create_pairing_code_for(
        &mut self,
        client_id: Option<&str>,
        ttl_ms: u64,
        now_ms: u64,
    ) -> (String, u64) {
        self.purge_expired_codes(now_ms);
        // 32^6 ≈ 1e9 codes: a collision among a handful of live ones is rare, but retry anyway.
        let code = loop {
            let c = ids::random_code(6);
            if !self.pairing_codes.iter().any(|p| p.code == c) {
                break c;
            }
        };
        let expires_ms = now_ms.saturating_add(ttl_ms);
        self.pairing_codes.push(PairingCode {
            code: code.clone(),
            expires_ms,
            used: false,
            client_id: client_id.map(str::to_string),
        });
        (code, expires_ms)
    }

    /// Spend a code (single use). False when unknown, used or expired.
    pub fn redeem_pairing_code(&mut self, code: &str, now_ms: u64) -> bool {
        self.take_pairing_code(code, now_ms).is_ok()
    }

    /// Spend a code and say why not when it fails; on success returns the clientId the code
    /// was bound to, if any. The module upper-cases codes; we accept either case.
    pub fn take_pairing_code(
        &mut self,
        code: &str,
        now_ms: u64,
    ) -> Result<Option<String>, PairingError> {
        let wanted = code.trim().to_ascii_uppercase();
        let found = self
            .pairing_codes
            .iter()
            .position(|p| ct_eq(p.code.as_bytes(), wanted.as_bytes()));
        let result = match found.and_then(|i| self.pairing_codes.get_mut(i)) {
            None => Err(PairingError::Invalid),
            Some(p) if now_ms >= p.expires_ms => Err(PairingError::Expired),
            Some(p) if p.used => Err(PairingError::Used),
            Some(p) => {
                p.used = true;
                Ok(p.client_id.clone())
            }
        };
        // After the lookup, so an expired code still answers "expired" once, not "invalid".
        self.purge_expired_codes(now_ms);
        result
    }

    fn purge_expired_codes(&mut self, now_ms: u64) {
        self.pairing_codes.retain(|p| now_ms < p.expires_ms);
    }

    /// Add a world or refresh its record (matched by clientId).
    pub fn upsert_world(&mut self, w: KnownWorld) {
        match self.worlds.iter_mut().find(|x| x.client_id == w.client_id) {
            Some(existing) => *existing = w,
            None => self.worlds.push(w),
        }
    }

    /// Forget a world and revoke all its tokens (the caller closes its link with 4002).
    /// True if there was anything to remove.
    pub fn remove_world(&mut self, client_id: &str) -> bool {
        let worlds = self.worlds.len();
        let tokens = self.tokens.len();
        self.worlds.retain(|w| w.client_id != client_id);
        self.tokens.retain(|t| t.client_id != client_id);
        self.pairing_codes
            .retain(|p| p.client_id.as_deref() != Some(client_id));
        let removed = worlds != self.worlds.len() || tokens != self.tokens.len();
        if removed {
            self.reindex();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(scopes: &[&str]) -> NewKey {
        NewKey {
            name: "app".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..NewKey::default()
        }
    }

    #[test]
    fn scope_lists_match_the_spec() {
        let spec = "entity:read entity:write roll:read roll:execute chat:read chat:write encounter:read encounter:manage macro:list macro:execute macro:write scene:read scene:write canvas:read canvas:write effects:read effects:write user:read user:write file:read file:write playlist:control world:info clients:read sheet:read events:subscribe session:manage execute-js search structure:read structure:write dnd5e";
        assert_eq!(ALL_SCOPES.join(" "), spec);
        for s in DEFAULT_SCOPES {
            assert!(ALL_SCOPES.contains(&s), "{s}");
            assert!(!s.ends_with(":write") && !s.ends_with(":execute"), "{s}");
        }
        let mut d = DEFAULT_SCOPES.to_vec();
        d.dedup();
        assert_eq!(d.len(), 17);
    }

    #[test]
    fn hash_and_ct_eq() {
        // FIPS 180-2 test vector "abc".
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for (a, b, eq) in [
            (&b"abc"[..], &b"abc"[..], true),
            (b"abc", b"abd", false),
            (b"abc", b"xbc", false),
            (b"abc", b"ab", false),
            (b"", b"", true),
        ] {
            assert_eq!(ct_eq(a, b), eq, "{a:?} {b:?}");
        }
    }

    #[test]
    fn secrets_and_prefixes() {
        let s = new_secret("");
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(s, new_secret(""));
        assert!(new_secret("x_").starts_with("x_"));
        assert_eq!(display_prefix("abcdef0123"), "abcdef");
        assert_eq!(display_prefix("äöü"), "äöü");
    }

    #[test]
    fn key_validation() {
        let mut st = State::default();
        let cases: Vec<(NewKey, Option<&str>)> = vec![
            (key(&["entity:read"]), None),
            (key(&[]), Some("at least one scope")),
            (key(&["entity:read", "root"]), Some("Invalid scope: root")),
            (key(&["Entity:Read"]), Some("Invalid scope")),
            (
                NewKey {
                    name: "  ".into(),
                    ..key(&["search"])
                },
                Some("name is required"),
            ),
            (
                NewKey {
                    name: "x".repeat(101),
                    ..key(&["search"])
                },
                Some("at most"),
            ),
            (
                NewKey {
                    expires_in_days: Some(0),
                    ..key(&["search"])
                },
                Some("at least 1 day"),
            ),
            (
                NewKey {
                    rate_limit_per_minute: Some(0),
                    ..key(&["search"])
                },
                Some("rate limit"),
            ),
            (
                NewKey {
                    client_ids: vec![" ".into()],
                    ..key(&["search"])
                },
                Some("client ids"),
            ),
        ];
        for (spec, want) in cases {
            let r = st.create_api_key(spec.clone(), 0);
            match want {
                None => assert!(r.is_ok(), "{spec:?}: {r:?}"),
                Some(w) => assert!(r.as_ref().unwrap_err().contains(w), "{spec:?}: {r:?}"),
            }
        }
        assert_eq!(st.api_keys.len(), 1);
    }

    #[test]
    fn created_key_is_stored_hashed_and_normalised() {
        let mut st = State::default();
        let spec = NewKey {
            name: " bot ".into(),
            scopes: vec![
                "chat:read".into(),
                "chat:read".into(),
                "roll:execute".into(),
            ],
            client_ids: vec!["fvtt_a".into(), "fvtt_a".into()],
            user_id: Some("".into()),
            expires_in_days: Some(2),
            rate_limit_per_minute: Some(60),
        };
        let (i, secret) = st.create_api_key(spec, 1_000).unwrap();
        let k = &st.api_keys[i];
        assert_eq!(k.name, "bot");
        assert_eq!(k.scopes, ["chat:read", "roll:execute"]);
        assert_eq!(k.client_ids, ["fvtt_a"]);
        assert_eq!(k.user_id, None);
        assert_eq!(k.expires_at_ms, Some(1_000 + 2 * 86_400_000));
        assert_eq!(k.hash, hash_secret(&secret));
        assert_eq!(k.prefix, secret[..6]);
        assert!(k.id.starts_with("key_"));
        let json = serde_json::to_string(&st).unwrap();
        assert!(!json.contains(&secret), "plaintext leaked into the state");
    }

    #[test]
    fn authenticate_cases() {
        let mut st = State::default();
        assert_eq!(
            st.authenticate(Some("anything"), 0),
            Err(AuthError::Invalid)
        );
        let admin = st.ensure_admin_key().unwrap();
        assert_eq!(st.ensure_admin_key(), None);
        let (ki, k) = st.create_api_key(key(&["chat:read"]), 0).unwrap();
        let (_, exp) = st
            .create_api_key(
                NewKey {
                    expires_in_days: Some(1),
                    ..key(&["chat:read"])
                },
                0,
            )
            .unwrap();
        let day = 86_400_000;
        let upper = k.to_uppercase();
        let cases: Vec<(Option<&str>, u64, Result<Principal, AuthError>)> = vec![
            (None, 0, Err(AuthError::Missing)),
            (Some(""), 0, Err(AuthError::Missing)),
            (Some(&admin), 0, Ok(Principal::Admin)),
            (Some(&k), 0, Ok(Principal::Key(ki))),
            (Some(&exp), day - 1, Ok(Principal::Key(1))),
            (Some(&exp), day, Err(AuthError::Expired)),
            (Some("0000"), 0, Err(AuthError::Invalid)),
            (Some(&k[..63]), 0, Err(AuthError::Invalid)),
            (Some(&upper), 0, Err(AuthError::Invalid)),
        ];
        for (presented, now, want) in cases {
            assert_eq!(
                st.authenticate(presented, now),
                want,
                "{presented:?} at {now}"
            );
        }
        assert_eq!(AuthError::Expired.message(), "API key has expired");

        let old = admin;
        let new = st.rotate_admin_key();
        assert_eq!(st.authenticate(Some(&old), 0), Err(AuthError::Invalid));
        assert_eq!(st.authenticate(Some(&new), 0), Ok(Principal::Admin));

        assert!(st.principal_has_scope(&Principal::Key(ki), "chat:read"));
        assert!(!st.principal_has_scope(&Principal::Key(ki), "chat:write"));
        assert!(!st.principal_has_scope(&Principal::Key(99), "chat:read"));
        assert!(st.principal_has_scope(&Principal::Admin, "execute-js"));
        assert!(!st.principal_has_scope(&Principal::Admin, "nope"));
        assert_eq!(st.principal_scopes(&Principal::Admin).len(), 32);
        assert_eq!(st.principal_scopes(&Principal::Key(ki)), ["chat:read"]);

        // Revocation shifts indices; the index follows.
        let id0 = st.api_keys[0].id.clone();
        assert!(st.revoke_api_key(&id0));
        assert!(!st.revoke_api_key(&id0));
        assert_eq!(st.authenticate(Some(&k), 0), Err(AuthError::Invalid));
        assert_eq!(st.authenticate(Some(&exp), 0), Ok(Principal::Key(0)));
    }

    #[test]
    fn stale_index_fails_closed() {
        let mut st = State::default();
        let (_, a) = st.create_api_key(key(&["search"]), 0).unwrap();
        let (_, b) = st.create_api_key(key(&["search"]), 0).unwrap();
        // Bypass the methods: swap entries without reindexing.
        st.api_keys.swap(0, 1);
        assert_eq!(st.authenticate(Some(&a), 0), Err(AuthError::Invalid));
        assert_eq!(st.authenticate(Some(&b), 0), Err(AuthError::Invalid));
        st.reindex();
        assert_eq!(st.authenticate(Some(&a), 0), Ok(Principal::Key(1)));
    }

    #[test]
    fn ip_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("1.2.3.4", "1.2.3.4", true),
            ("1.2.3.4", "1.2.3.5", false),
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("192.168.1.77/24", "192.168.1.3", true), // host bits ignored
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("1.2.3.4/32", "::ffff:1.2.3.4", true), // mapped peer from a dual-stack socket
            ("::ffff:10.0.0.0/104", "10.9.9.9", true),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            ("::/0", "2001:db8::1", true),
            ("2001:db8::1/128", "2001:db8::1", true),
        ];
        for (rule, peer, want) in cases {
            let r = IpRule::parse(rule).unwrap();
            assert_eq!(r.contains(ip(peer)), *want, "{rule} vs {peer}");
        }
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.4/",
            "x/8",
            "1.2.3.4/-1",
            "::ffff:1.2.3.4/95",
        ] {
            assert!(IpRule::parse(bad).is_err(), "{bad}");
        }
        assert!(ip_allowed(&[], ip("9.9.9.9")));
        assert!(!ip_allowed(&["garbage".into()], ip("9.9.9.9")));
        assert!(ip_allowed(
            &["garbage".into(), "9.9.9.0/24".into()],
            ip("9.9.9.9")
        ));
    }

    #[test]
    fn connection_tokens() {
        let mut st = State::default();
        let (i, t) = st.create_connection_token("fvtt_a", 5);
        let (_, t2) = st.create_connection_token("fvtt_b", 5);
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 9));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(st.check_connection_token(&t, "fvtt_a", v4), Ok(i));
        assert_eq!(
            st.check_connection_token(&t, "fvtt_b", v4),
            Err(TokenError::WrongClient)
        );
        assert_eq!(
            st.check_connection_token("nope", "fvtt_a", v4),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            st.check_connection_token("", "fvtt_a", v4),
            Err(TokenError::Invalid)
        );
        let id = st.tokens[i].id.clone();
        assert!(st
            .set_token_allowed_ips(&id, vec!["not an ip".into()])
            .is_err());
        assert_eq!(
            st.set_token_allowed_ips(&id, vec![" 192.168.1.0/24".into(), "2001:db8::/48".into()]),
            Ok(true)
        );
        assert_eq!(st.set_token_allowed_ips("tok_x", vec![]), Ok(false));
        assert_eq!(st.check_connection_token(&t, "fvtt_a", v4), Ok(i));
        assert_eq!(st.check_connection_token(&t, "fvtt_a", v6), Ok(i));
        assert_eq!(
            st.check_connection_token(&t, "fvtt_a", ip("192.168.2.9")),
            Err(TokenError::IpNotAllowed)
        );
        assert_eq!(
            st.check_connection_token(&t, "fvtt_a", ip("2001:db8:1::1")),
            Err(TokenError::IpNotAllowed)
        );
        assert_eq!(st.find_connection_token(&t2), Some(1));
        assert_eq!(st.tokens_for_client("fvtt_a"), [0]);
        assert_eq!(st.revoke_token(&id), Some("fvtt_a".to_string()));
        assert_eq!(st.revoke_token(&id), None);
        assert_eq!(
            st.check_connection_token(&t, "fvtt_a", v4),
            Err(TokenError::Invalid)
        );
        assert_eq!(st.check_connection_token(&t2, "fvtt_b", v4), Ok(0));
    }

    #[test]
    fn pairing_codes_single_use_and_expiry() {
        let mut st = State::default();
        let (c, exp) = st.create_pairing_code(600_000, 1_000);
        assert_eq!(exp, 601_000);
        assert_eq!(c.len(), 6);
        assert!(c.bytes().all(|b| ids::CODE_ALPHABET.contains(&b)));
        assert_eq!(
            st.take_pairing_code("ZZZZZZ", 2_000),
            Err(PairingError::Invalid)
        );
        assert!(st.redeem_pairing_code(&c.to_lowercase(), 2_000));
        assert_eq!(st.take_pairing_code(&c, 2_001), Err(PairingError::Used));
        assert!(!st.redeem_pairing_code(&c, 2_002));

        let (c2, exp2) = st.create_pairing_code_for(Some("fvtt_a"), 10, 5_000);
        assert_eq!(st.take_pairing_code(&c2, exp2), Err(PairingError::Expired));
        // Expired codes are gone afterwards (the used one too, once it expires).
        assert!(st.pairing_codes.iter().all(|p| p.code != c2));
        assert_eq!(st.take_pairing_code(&c2, exp2), Err(PairingError::Invalid));
        let (c3, exp3) = st.create_pairing_code_for(Some("fvtt_a"), 10, 5_000);
        assert_eq!(
            st.take_pairing_code(&c3, exp3 - 1),
            Ok(Some("fvtt_a".to_string()))
        );
        st.purge_expired_codes(u64::MAX);
        assert!(st.pairing_codes.is_empty());
        assert_eq!(PairingError::Used.status(), 410);
    }

    #[test]
    fn codes_are_unique_among_live_ones() {
        let mut st = State::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (c, _) = st.create_pairing_code(1_000, 0);
            assert!(seen.insert(c));
        }
    }

    #[test]
    fn worlds_upsert_and_remove_revokes_tokens() {
        let mut st = State::default();
        let w = |id: &str, title: &str| KnownWorld {
            client_id: id.into(),
            world_title: title.into(),
            ..KnownWorld::default()
        };
        st.upsert_world(w("fvtt_a", "one"));
        st.upsert_world(w("fvtt_b", "two"));
        st.upsert_world(w("fvtt_a", "uno"));
        assert_eq!(st.worlds.len(), 2);
        assert_eq!(st.worlds[0].world_title, "uno");
        let (_, ta) = st.create_connection_token("fvtt_a", 0);
        let (_, tb) = st.create_connection_token("fvtt_b", 0);
        st.create_connection_token("fvtt_a", 0);
        st.create_pairing_code_for(Some("fvtt_a"), 100, 0);
        assert!(st.remove_world("fvtt_a"));
        assert!(!st.remove_world("fvtt_a"));
        assert_eq!(st.worlds.len(), 1);
        assert!(st.tokens_for_client("fvtt_a").is_empty());
        assert!(st.pairing_codes.is_empty());
        let any = ip("127.0.0.1");
        assert_eq!(
            st.check_connection_token(&ta, "fvtt_a", any),
            Err(TokenError::Invalid)
        );
        assert_eq!(st.check_connection_token(&tb, "fvtt_b", any), Ok(0));
    }
}
