//! Request rate limits per key (an API key, an IP), with `now` passed in
//! (relay-protocol.md §6.1).
//!
//! The reference uses a token bucket per key: rate = limit / window, burst = limit. We keep
//! exactly that behaviour in its GCRA form (one "theoretical arrival time" per key instead of
//! a token count and a timestamp): a burst of `limit` requests passes at once, then one more
//! every `window / limit`. Unlike a fixed window it never lets `2 × limit` through across a
//! window edge. The reference sends no rate-limit headers; `Verdict` carries what
//! `X-RateLimit-*` and `Retry-After` need, should the HTTP layer choose to send them.
//!
//! Memory: a key whose bucket has refilled carries no information and is dropped by
//! [`RateLimiter::sweep`]; `check` also sweeps by itself whenever the map has doubled since the
//! last sweep, so an unswept limiter stays within about twice its live keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The outcome of one counted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The burst size (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Requests that would pass right now, after this one (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Whole seconds (rounded up) until the key is back to its full `limit`
    /// (`X-RateLimit-Reset`, as a delta).
    pub reset_after_secs: u64,
    /// Whole seconds (rounded up, at least 1) until a request would pass again; 0 when this
    /// one was allowed. Use this one for `Retry-After` on a 429.
    pub retry_after_secs: u64,
}

/// A limiter of `limit` requests per `window` for each key.
pub struct RateLimiter<K> {
    limit: u32,
    window: Duration,
    /// Per key: the instant at which its bucket would be full again (GCRA's TAT). A key at or
    /// before `now` is equivalent to an absent one.
    tat: HashMap<K, Instant>,
    /// Map size after the last sweep; `check` sweeps again once it doubles.
    swept_len: usize,
}

/// Below this many keys `check` never sweeps by itself: too small to matter.
const AUTO_SWEEP_FLOOR: usize = 1024;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `limit` requests per `window`. A limit of 0 disables limiting (every request passes),
    /// mirroring the reference's "≤0 disables" for `PER_MINUTE_REQUEST_LIMIT` (§6.1). A zero
    /// window is treated as 1 ms so the arithmetic stays defined.
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window: window.max(Duration::from_millis(1)),
            tat: HashMap::new(),
            swept_len: 0,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Keys currently tracked (for metrics and tests).
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    /// Count one request for `key` against the limiter's own limit.
    pub fn check(&mut self, key: &K, now: Instant) -> Verdict {
        self.check_with_limit(key, self.limit, now)
    }

    /// Count one request for `key` against `limit` (a per-key override, e.g. an API key's
    /// `rate_limit_per_minute`) over the limiter's window. A key should always be checked
    /// with the same limit; a changed limit takes over smoothly from the stored state.
    pub fn check_with_limit(&mut self, key: &K, limit: u32, now: Instant) -> Verdict {
        if limit == 0 {
            return Verdict {
                allowed: true,
                limit: 0,
                remaining: 0,
                reset_after_secs: 0,
                retry_after_secs: 0,
            };
        }
        if self.tat.len() >= AUTO_SWEEP_FLOOR.max(self.swept_len.saturating_mul(2)) {
            self.sweep(now);
        }
        // Each request "costs" one emission interval; a full bucket holds `window` of credit.
        let interval = self.window / limit;
        let tat = self.tat.get(key).copied().map_or(now, |t| t.max(now));
        let new_tat = tat + interval;
        let debt = new_tat.saturating_duration_since(now);
        if debt > self.window {
            // Over the burst: nothing is recorded, so a refused client does not dig deeper.
            let backlog = tat.saturating_duration_since(now);
            let retry = debt.saturating_sub(self.window);
            return Verdict {
                allowed: false,
                limit,
                remaining: 0,
                reset_after_secs: ceil_secs(backlog),
                retry_after_secs: ceil_secs(retry).max(1),
            };
        }
        self.tat.insert(key.clone(), new_tat);
        let spare = self.window.saturating_sub(debt);
        let remaining = u32::try_from(spare.as_nanos() / interval.as_nanos().max(1))
            .unwrap_or(u32::MAX)
            .min(limit);
        Verdict {
            allowed: true,
            limit,
            remaining,
            reset_after_secs: ceil_secs(debt),
            retry_after_secs: 0,
        }
    }

    /// Drop every key whose bucket has refilled by `now`.
    pub fn sweep(&mut self, now: Instant) {
        self.tat.retain(|_, tat| *tat > now);
        self.swept_len = self.tat.len();
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_one_per_interval() {
        // 3 per minute: interval 20 s.
        let mut rl = RateLimiter::new(3, MIN);
        let t0 = Instant::now();
        let k = "key".to_string();
        let steps: &[(Duration, bool, u32, u64, u64)] = &[
            // (at, allowed, remaining, reset_after_secs, retry_after_secs)
            (ms(0), true, 2, 20, 0),
            (ms(0), true, 1, 40, 0),
            (ms(0), true, 0, 60, 0),
            (ms(0), false, 0, 60, 20),
            (ms(19_999), false, 0, 41, 1),
            (ms(20_000), true, 0, 60, 0),
            (ms(20_001), false, 0, 60, 20),
            (ms(100_000), true, 2, 20, 0),
        ];
        for (i, (at, allowed, remaining, reset, retry)) in steps.iter().enumerate() {
            let v = rl.check(&k, t0 + *at);
            let want = Verdict {
                allowed: *allowed,
                limit: 3,
                remaining: *remaining,
                reset_after_secs: *reset,
                retry_after_secs: *retry,
            };
            assert_eq!(v, want, "step {i} at {at:?}");
        }
    }

    #[test]
    fn no_double_burst_across_a_window_edge() {
        // A fixed window would pass 2 × limit around its edge; the bucket passes limit + refill.
        let mut rl = RateLimiter::new(10, MIN);
        let t0 = Instant::now();
        let mut passed = 0;
        for i in 0..40u64 {
            // 40 requests spread over 2 s across t0 + 59 s .. 61 s.
            if rl.check(&1u8, t0 + ms(59_000 + i * 50)).allowed {
                passed += 1;
            }
        }
        assert_eq!(passed, 10);
    }

    #[test]
    fn refused_requests_do_not_extend_the_wait() {
        let mut rl = RateLimiter::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(rl.check(&"a", t0).allowed);
        for s in 1..10 {
            assert!(!rl.check(&"a", t0 + Duration::from_secs(s)).allowed);
        }
        assert!(rl.check(&"a", t0 + Duration::from_secs(10)).allowed);
    }

    #[test]
    fn keys_are_independent_and_overrides_apply() {
        let mut rl = RateLimiter::new(1, MIN);
        let t0 = Instant::now();
        assert!(rl.check(&"a", t0).allowed);
        assert!(!rl.check(&"a", t0).allowed);
        assert!(rl.check(&"b", t0).allowed);
        for _ in 0..5 {
            assert!(rl.check_with_limit(&"c", 5, t0).allowed);
        }
        let v = rl.check_with_limit(&"c", 5, t0);
        assert!(!v.allowed);
        assert_eq!((v.limit, v.retry_after_secs), (5, 12));
        // Limit 0 disables.
        for _ in 0..100 {
            assert!(rl.check_with_limit(&"d", 0, t0).allowed);
        }
        let mut off = RateLimiter::new(0, MIN);
        assert!(off.check(&"x", t0).allowed);
        assert!(off.is_empty());
    }

    #[test]
    fn sweep_drops_only_refilled_keys() {
        let mut rl = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        rl.check(&"idle", t0); // full again at t0 + 5 s
        rl.check(&"busy", t0 + Duration::from_secs(4));
        rl.check(&"busy", t0 + Duration::from_secs(4)); // full again at t0 + 14 s
        rl.sweep(t0 + Duration::from_secs(5));
        assert_eq!(rl.len(), 1);
        // The busy key kept its state through the sweep.
        assert!(!rl.check(&"busy", t0 + Duration::from_secs(5)).allowed);
        rl.sweep(t0 + Duration::from_secs(14));
        assert!(rl.is_empty());
    }

    #[test]
    fn check_sweeps_by_itself_when_the_map_grows() {
        let mut rl = RateLimiter::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            // Each key refills 1 s after its hit; keys arrive every 1 ms.
            rl.check(&i, t0 + ms(u64::from(i)));
        }
        // Only about the last second's keys (≈1000) are live; the map stays near 2× that.
        assert!(rl.len() <= 2 * AUTO_SWEEP_FLOOR + 1, "{}", rl.len());
    }

    #[test]
    fn ip_keys_work() {
        use std::net::{IpAddr, Ipv4Addr};
        let mut rl: RateLimiter<IpAddr> = RateLimiter::new(2, MIN);
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        assert_eq!(rl.check(&a, t0).remaining, 1);
        assert_eq!(rl.check(&a, t0).remaining, 0);
        assert!(!rl.check(&a, t0).allowed);
    }
}
