//! The process-wide memory budget (`--memory-budget`, issue 15): sans-IO accounting of the
//! bytes the relay holds for its peers, and the choice of what to shed when a new
//! allocation would pass the budget.
//!
//! The loop charges each connection what it holds (input buffer, request body being read,
//! owned output bytes: `Conn::held_bytes`) whenever that may have changed, after reading and
//! after flushing; the budget keeps the sum. While the sum is over the budget, the loop sheds
//! unauthenticated work, the largest holder first (the newest on a tie): an HTTP connection
//! gets 503 and is closed, a WebSocket that has not authenticated is closed 1013. A world
//! link and every authenticated client are never shed: their own limits (--module-max-message,
//! --outq-hard-bytes, slow-consumer rules) bound them. A body that would pass the budget is
//! refused on its head (503) before any of it is read.
//!
//! What is not counted: tungstenite's partial-message buffers (bounded per link by the
//! endpoint's message limit, small until a world link authenticates), shared `Rc` chunks of
//! a fan-out (one allocation, however many queues point at it), and the relay core's own
//! tables (bounded by their counts). The budget therefore bounds what a peer can make the
//! relay hold, not the process's RSS exactly; the tests measure RSS against it.

/// Why work was shed (the `reason` label of `fvtt_relay_shed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// An unauthenticated HTTP connection (buffered requests, a body, unread answers).
    Http,
    /// A WebSocket that has not authenticated yet (a world link before auth-success).
    WsUnauthenticated,
    /// A request body refused on its head: it would have passed the budget.
    Body,
}

impl ShedReason {
    pub const ALL: [ShedReason; 3] = [
        ShedReason::Http,
        ShedReason::WsUnauthenticated,
        ShedReason::Body,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ShedReason::Http => "http",
            ShedReason::WsUnauthenticated => "ws-unauthenticated",
            ShedReason::Body => "body",
        }
    }

    pub fn index(self) -> usize {
        match self {
            ShedReason::Http => 0,
            ShedReason::WsUnauthenticated => 1,
            ShedReason::Body => 2,
        }
    }
}

/// The running total against the limit.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: usize,
    /// The most ever held (for the bench and debugging).
    peak: usize,
    /// Bytes given back since the last heap trim.
    freed: usize,
}

/// One candidate for shedding, as the loop sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    pub key: K,
    /// Bytes charged to it.
    pub bytes: usize,
    /// Larger is newer (the connection generation).
    pub age_rank: u32,
    /// Authenticated work (and world links) is never shed.
    pub sheddable: bool,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            held: 0,
            peak: 0,
            freed: 0,
        }
    }

    /// Record that one holder now holds `now` bytes; `charged` is what it was charged before
    /// and is updated.
    pub fn recharge(&mut self, charged: &mut usize, now: usize) {
        self.freed += charged.saturating_sub(now);
        self.held = self.held.saturating_sub(*charged).saturating_add(now);
        *charged = now;
        self.peak = self.peak.max(self.held);
    }

    /// A holder is gone: give back what it was charged.
    pub fn release(&mut self, charged: usize) {
        let before = self.held;
        self.held = self.held.saturating_sub(charged);
        self.freed += before - self.held;
    }

    /// Bytes given back since the last `take_freed` (whether a heap trim is worth it).
    pub fn freed(&self) -> usize {
        self.freed
    }

    /// Reset the freed count (a trim ran).
    pub fn take_freed(&mut self) -> usize {
        std::mem::take(&mut self.freed)
    }

    pub fn held(&self) -> usize {
        self.held
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn over(&self) -> bool {
        self.held > self.limit
    }

    /// Whether holding `extra` more bytes would pass the budget.
    pub fn would_pass(&self, extra: usize) -> bool {
        self.held.saturating_add(extra) > self.limit
    }
}

/// Freed bytes after which the allocator is asked to give memory back (`trim_heap`).
pub const TRIM_AFTER_FREED: usize = 1 << 20;

/// How long after a large free the trim runs: frees of one burst are trimmed once, and
/// never more often than this (malloc_trim walks the heap; it is not per-request work).
pub const TRIM_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    /// glibc malloc(3): release free memory at the top of the heap and, since glibc 2.8,
    /// whole free pages inside it (madvise MADV_DONTNEED). Returns 1 if any was released.
    fn malloc_trim(pad: usize) -> i32;
}

/// Give freed heap memory back to the system. glibc keeps freed memory of its main arena
/// in the process (after a load, RSS stayed at ~21 MiB against 3.8 MiB idle: issue 15);
/// other allocators (musl) return large blocks themselves, so this is a no-op there.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a plain size and touches only the allocator's own state;
    // it is thread-safe, and this process has one thread anyway.
    unsafe {
        malloc_trim(0);
    }
}

/// The next one to shed: the sheddable candidate holding the most, the newest on a tie.
/// None when nothing sheddable holds anything.
pub fn victim<K: Copy>(candidates: impl Iterator<Item = Candidate<K>>) -> Option<K> {
    candidates
        .filter(|c| c.sheddable && c.bytes > 0)
        .max_by_key(|c| (c.bytes, c.age_rank))
        .map(|c| c.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recharge_and_release_keep_the_sum() {
        let mut b = Budget::new(100);
        let (mut a, mut c) = (0, 0);
        b.recharge(&mut a, 40);
        b.recharge(&mut c, 50);
        assert_eq!(b.held(), 90);
        assert!(!b.over());
        assert!(b.would_pass(11));
        assert!(!b.would_pass(10));
        b.recharge(&mut a, 70);
        assert_eq!((b.held(), a), (120, 70));
        assert!(b.over());
        b.recharge(&mut a, 0);
        assert_eq!(b.held(), 50);
        b.release(c);
        assert_eq!(b.held(), 0);
        assert_eq!(b.peak(), 120);
        assert_eq!(
            b.take_freed(),
            70 + 50,
            "what was given back, for the heap trim"
        );
        assert_eq!(b.freed(), 0);
        trim_heap(); // harmless at any time
                     // Never below zero, whatever the order of events.
        b.release(1000);
        assert_eq!(b.held(), 0);
    }

    fn cand(key: u32, bytes: usize, age_rank: u32, sheddable: bool) -> Candidate<u32> {
        Candidate {
            key,
            bytes,
            age_rank,
            sheddable,
        }
    }

    #[test]
    fn the_largest_unauthenticated_goes_first_then_the_newest() {
        let c = [
            cand(1, 500, 1, false), // a world link: never
            cand(2, 300, 2, true),
            cand(3, 300, 5, true), // same size, newer
            cand(4, 100, 9, true),
        ];
        assert_eq!(victim(c.iter().copied()), Some(3));
        assert_eq!(
            victim(c[..3].iter().copied().filter(|x| x.key != 3)),
            Some(2)
        );
        assert_eq!(victim([cand(1, 500, 1, false)].into_iter()), None);
        assert_eq!(
            victim([cand(7, 0, 1, true)].into_iter()),
            None,
            "holds nothing"
        );
    }
}
