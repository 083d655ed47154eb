//! Identifiers: `ConnId` (slab key + generation) and random secrets, codes and ids.
//!
//! NOTE: anything that outlives one turn of the loop (a pending request, a subscription,
//! a deadline) stores a `ConnId`, never a bare slab key: the slab hands a freed key to the
//! very next accept, and a late reply or timer must miss rather than reach a stranger.

use std::fmt;

/// A connection's address: its slab key plus the generation it was created with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId {
    pub key: usize,
    pub gen: u32,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}", self.key, self.gen)
    }
}

/// Fill `buf` with bytes from the operating system's CSPRNG.
///
/// getrandom only fails when the OS has no entropy source at all; the relay cannot mint
/// secrets safely then, so that is a fatal start-up condition rather than a peer error.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // No peer controls this; without an entropy source no secret can be minted.
        panic!("operating system random source failed: {e}");
    }
}

/// `n` random bytes as lowercase hex (2n characters).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf);
    let mut s = String::with_capacity(n * 2);
    for b in buf {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Alphabet of pairing codes: no 0/O, 1/I to avoid misreading (relay-protocol.md §5.6).
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A random code of `len` characters from [`CODE_ALPHABET`], without modulo bias
/// (32 symbols divide 256 evenly).
pub fn random_code(len: usize) -> String {
    let mut buf = vec![0u8; len];
    fill_random(&mut buf);
    buf.iter()
        .map(|b| CODE_ALPHABET[(*b as usize) % CODE_ALPHABET.len()] as char)
        .collect()
}

/// A new world clientId: `fvtt_` + 16 hex digits, the shape the module expects.
pub fn new_client_id() -> String {
    format!("fvtt_{}", random_hex(8))
}

/// A source of unique request ids: a per-process random prefix plus a counter, so ids never
/// collide under concurrency (the reference's `<type>_<ms>` does: api-surface.md, bug 1) and
/// never repeat across restarts.
pub struct RequestIds {
    prefix: String,
    next: u64,
}

impl RequestIds {
    pub fn new() -> Self {
        RequestIds {
            prefix: random_hex(4),
            next: 1,
        }
    }

    /// `<ws_type>_<prefix><counter>`: keeps the reference's readable `<type>_` head.
    pub fn next(&mut self, ws_type: &str) -> String {
        let n = self.next;
        self.next += 1;
        format!("{ws_type}_{}{n:x}", self.prefix)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_the_alphabet() {
        for _ in 0..100 {
            let c = random_code(6);
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        }
    }

    #[test]
    fn client_id_shape() {
        let id = new_client_id();
        assert!(id.starts_with("fvtt_"));
        assert_eq!(id.len(), 21);
        assert!(id[5..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn request_ids_are_unique() {
        let mut ids = RequestIds::new();
        let a = ids.next("entity");
        let b = ids.next("entity");
        assert_ne!(a, b);
        assert!(a.starts_with("entity_"));
    }
}
