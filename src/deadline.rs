//! Timers as data: one min-heap of `(Instant, T)` that decides when the loop wakes.
//!
//! The poll timeout is the earliest live deadline, or none at all: an idle relay sleeps until
//! I/O or a due timer and never ticks (STYLE.md habit 9, pitfall 10). Cancelling is lazy: the
//! owner of a payload decides on expiry whether it is still current (a connection's generation
//! and its timer stamp), so a cancelled entry costs one pop, never a spin: `next_timeout`
//! only reports entries that are due in the future or now, and `expired` removes them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

struct Entry<T> {
    at: Instant,
    seq: u64,
    payload: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed so that BinaryHeap (a max-heap) pops the earliest deadline first; `seq`
    // keeps equal instants in insertion order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A min-heap of deadlines carrying any payload.
pub struct Deadlines<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Deadlines<T> {
    pub fn new() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Arm a timer. Re-arming the same payload simply adds another entry; the stale one is
    /// recognised and skipped by its owner when it fires.
    pub fn arm(&mut self, at: Instant, payload: T) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            payload,
        });
    }

    /// How long `poll` may sleep: `None` (forever) when no timer is armed.
    /// Rounded up to the next millisecond so that we never wake a hair early and spin.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap.peek().map(|e| {
            let d = e.at.saturating_duration_since(now);
            let ms = d.as_nanos().div_ceil(1_000_000);
            Duration::from_millis(ms.min(u64::MAX as u128) as u64)
        })
    }

    /// The earliest armed instant, if any.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// Pop every entry due at or before `now`, in deadline order.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<T>) {
        while let Some(e) = self.heap.peek() {
            if e.at > now {
                break;
            }
            if let Some(e) = self.heap.pop() {
                out.push(e.payload);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drop entries for which `keep` is false (used to bound memory when many stale
    /// entries pile up, e.g. after mass disconnects).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let v: Vec<Entry<T>> = std::mem::take(&mut self.heap).into_vec();
        self.heap = v.into_iter().filter(|e| keep(&e.payload)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_heap_sleeps_forever() {
        let d: Deadlines<u32> = Deadlines::new();
        assert_eq!(d.next_timeout(Instant::now()), None);
    }

    #[test]
    fn pops_in_deadline_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        d.arm(t0 + Duration::from_secs(3), 3);
        d.arm(t0 + Duration::from_secs(1), 1);
        d.arm(t0 + Duration::from_secs(2), 2);
        d.arm(t0 + Duration::from_secs(1), 11);
        assert_eq!(d.next_timeout(t0), Some(Duration::from_secs(1)));
        let mut out = vec![];
        d.expired(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(out, vec![1, 11, 2]);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.next_timeout(t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn past_deadline_gives_zero_not_negative() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        d.arm(t0, 1);
        assert_eq!(
            d.next_timeout(t0 + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn rounds_up_sub_millisecond() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        d.arm(t0 + Duration::from_micros(100), 1);
        assert_eq!(d.next_timeout(t0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn retain_drops_entries() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        for i in 0..10 {
            d.arm(t0 + Duration::from_secs(i), i);
        }
        d.retain(|p| p % 2 == 0);
        let mut out = vec![];
        d.expired(t0 + Duration::from_secs(100), &mut out);
        assert_eq!(out, vec![0, 2, 4, 6, 8]);
    }
}
