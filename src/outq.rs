//! A connection's output queue: the only gate through which bytes reach a socket.
//!
//! Entries are owned buffers or shared `Rc<[u8]>` chunks, so one event fanned out to a
//! thousand sockets is a thousand reference counts, not a thousand copies (STYLE.md habit 8).
//! The queue counts bytes and chunks so the loop can apply soft and hard limits (habit 7):
//! over the hard limit a peer is a slow consumer and is closed; over the soft limit for longer
//! than a grace period, likewise. Writes use `write_vectored` so a turn costs one syscall per
//! connection however many chunks are queued.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;
use std::time::Instant;

/// One queued piece of output.
pub enum Chunk {
    Owned(Vec<u8>),
    Shared(Rc<[u8]>),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(r) => r,
        }
    }
}

/// What one `write_to` call achieved.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Flush {
    /// Everything queued was written.
    Drained,
    /// The socket would block; arm WRITABLE for the rest.
    Blocked,
    /// The per-turn write budget ran out first; try again next turn.
    Budget,
}

/// Most iovecs handed to one `writev` (Linux IOV_MAX is 1024; 64 is plenty per turn).
const MAX_IOVECS: usize = 64;
/// Small owned pushes are appended to an owned tail up to this size, keeping iovec counts low.
const COALESCE_LIMIT: usize = 16 * 1024;

#[derive(Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head_off: usize,
    /// Unwritten bytes across all chunks.
    bytes: usize,
    /// Since when the queue has been above its soft limit (None while below).
    pub soft_since: Option<Instant>,
    /// Total bytes ever written (for metrics and tests).
    pub written_total: u64,
    /// Bytes of owned (not shared) chunks still queued: what this queue alone keeps alive,
    /// for the memory budget.
    owned: usize,
}

impl OutQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, v: Vec<u8>) {
        if v.is_empty() {
            return;
        }
        self.bytes += v.len();
        self.owned += v.len();
        if v.len() < COALESCE_LIMIT {
            // Only coalesce into a tail that is not the partially written front chunk, so
            // head_off keeps pointing into stable bytes.
            let n = self.chunks.len();
            if n > 1 || (n == 1 && self.head_off == 0) {
                if let Some(Chunk::Owned(tail)) = self.chunks.back_mut() {
                    if tail.len() + v.len() <= COALESCE_LIMIT {
                        tail.extend_from_slice(&v);
                        return;
                    }
                }
            }
        }
        self.chunks.push_back(Chunk::Owned(v));
    }

    pub fn push_slice(&mut self, s: &[u8]) {
        self.push(s.to_vec());
    }

    pub fn push_shared(&mut self, r: Rc<[u8]>) {
        if r.is_empty() {
            return;
        }
        self.bytes += r.len();
        self.chunks.push_back(Chunk::Shared(r));
    }

    /// Bytes of owned chunks queued (shared chunks belong to a fan-out, counted nowhere).
    pub fn owned_bytes(&self) -> usize {
        self.owned
    }

    /// Unwritten bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queued chunks (messages, roughly: coalesced small pieces count once).
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Release the spare slots of an empty queue (a burst may have grown it).
    pub fn shrink(&mut self) {
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
    }

    /// Drop everything not yet written (used when a connection is abandoned).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.head_off = 0;
        self.bytes = 0;
        self.owned = 0;
    }

    /// Drop every chunk not yet started, keeping a partially written front chunk intact so
    /// the byte stream stays well-formed (a half-sent WebSocket frame must be completed
    /// before a close frame can follow it). Used when a slow consumer is cut off.
    pub fn discard_unstarted(&mut self) {
        if self.head_off > 0 {
            let front = self.chunks.pop_front();
            self.chunks.clear();
            if let Some(f) = front {
                self.bytes = f.as_slice().len() - self.head_off;
                self.owned = match &f {
                    Chunk::Owned(v) => v.len(),
                    Chunk::Shared(_) => 0,
                };
                self.chunks.push_back(f);
            }
        } else {
            self.clear();
        }
    }

    /// Write as much as the socket takes, up to `budget` bytes. `EINTR` is retried;
    /// other errors are returned for the caller to close the connection.
    pub fn write_to<W: Write>(&mut self, w: &mut W, budget: usize) -> io::Result<Flush> {
        let mut spent = 0usize;
        while self.bytes > 0 {
            if spent >= budget {
                return Ok(Flush::Budget);
            }
            let n = {
                let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (i, c) in self.chunks.iter().enumerate() {
                    if count == MAX_IOVECS {
                        break;
                    }
                    let s = c.as_slice();
                    let s = if i == 0 { &s[self.head_off..] } else { s };
                    slices[count] = IoSlice::new(s);
                    count += 1;
                }
                match w.write_vectored(&slices[..count]) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write zero")),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) => return Err(e),
                }
            };
            spent += n;
            self.consume(n);
        }
        Ok(Flush::Drained)
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        self.written_total += n as u64;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.as_slice().len() - self.head_off;
            if n >= left {
                n -= left;
                if let Some(Chunk::Owned(v)) = self.chunks.pop_front() {
                    self.owned = self.owned.saturating_sub(v.len());
                }
                self.head_off = 0;
            } else {
                self.head_off += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `cap` bytes per call and then blocks after `calls`.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = b.len().min(self.cap);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_preserve_order() {
        let mut q = OutQueue::new();
        q.push(b"hello ".to_vec());
        let shared: Rc<[u8]> = Rc::from(&b"shared "[..]);
        q.push_shared(shared.clone());
        q.push(b"world".to_vec());
        assert_eq!(q.owned_bytes(), 11, "the shared chunk is not this queue's");
        let mut w = Trickle {
            got: vec![],
            cap: 3,
            calls_left: 2,
        };
        assert_eq!(q.write_to(&mut w, usize::MAX).unwrap(), Flush::Blocked);
        assert_eq!(q.bytes(), 18 - 6);
        w.calls_left = 100;
        assert_eq!(q.write_to(&mut w, usize::MAX).unwrap(), Flush::Drained);
        assert_eq!(w.got, b"hello shared world");
        assert_eq!(q.owned_bytes(), 0);
        assert!(q.is_empty());
        assert_eq!(q.chunks(), 0);
    }

    #[test]
    fn discard_keeps_partial_front() {
        let mut q = OutQueue::new();
        q.push(vec![1u8; 20_000]);
        q.push(vec![2u8; 20_000]);
        let mut w = Trickle {
            got: vec![],
            cap: 5,
            calls_left: 1,
        };
        q.write_to(&mut w, usize::MAX).unwrap();
        q.discard_unstarted();
        assert_eq!(q.bytes(), 19_995);
        assert_eq!(q.chunks(), 1);
        let mut q2 = OutQueue::new();
        q2.push(vec![1u8; 10]);
        q2.discard_unstarted();
        assert!(q2.is_empty());
    }

    #[test]
    fn budget_stops_early() {
        let mut q = OutQueue::new();
        q.push(vec![1u8; 100]);
        let mut w = Trickle {
            got: vec![],
            cap: 10,
            calls_left: 100,
        };
        assert_eq!(q.write_to(&mut w, 25).unwrap(), Flush::Budget);
        assert_eq!(w.got.len(), 30);
    }

    #[test]
    fn small_pushes_coalesce_but_not_into_partial_front() {
        let mut q = OutQueue::new();
        q.push(b"ab".to_vec());
        q.push(b"cd".to_vec());
        assert_eq!(q.chunks(), 1);
        let mut w = Trickle {
            got: vec![],
            cap: 1,
            calls_left: 1,
        };
        q.write_to(&mut w, usize::MAX).unwrap();
        q.push(b"ef".to_vec());
        assert_eq!(q.chunks(), 2);
        w.calls_left = 100;
        w.cap = 100;
        q.write_to(&mut w, usize::MAX).unwrap();
        assert_eq!(w.got, b"abcdef");
    }
}
