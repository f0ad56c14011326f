//! The memory budget: how many bytes of event data the process may hold at once.
//!
//! Contract:
//! - Two kinds of bytes count against one limit (`--memory-budget`): the retained history
//!   (every event in every topic's ring, [`crate::event::Event::size`]) and bytes in flight
//!   (SSE chunks and poll bodies built and not yet written to their socket, upstream bodies
//!   being read).
//! - History may use at most half of the budget ([`Budget::history_limit`]); above it the
//!   hub trims the oldest events of all topics (their subscribers get a `reset`). The other
//!   half is always left for work in flight.
//! - Work in flight is admitted only by a [`Held`] reservation; [`Budget::reserve`] refuses
//!   when history plus everything in flight would pass the limit, and the caller answers 503
//!   with `Retry-After` (new requests) or waits (a stream that is already open). Dropping the
//!   reservation, or the [`Bytes`] made from it once the socket has taken them, frees it.
//!
//! So the event data a process holds never passes the budget, whatever clients do; what is
//! not counted is the fixed cost of each connection (buffers of a few KiB, see LOAD.md).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// Smallest budget accepted (a few large events must fit).
pub const MIN_BUDGET: usize = 16 << 20;

pub struct Budget {
    limit: usize,
    history: AtomicUsize,
    /// Events retained in all topics.
    events: AtomicUsize,
    inflight: AtomicUsize,
    /// Reservations refused because the budget was full.
    pub refused: AtomicU64,
    /// Bytes of history trimmed to keep within the budget (not by count, age or per-topic cap).
    pub trimmed: AtomicU64,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit: limit.max(MIN_BUDGET),
            history: AtomicUsize::new(0),
            events: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The most the retained history of all topics together may hold.
    pub fn history_limit(&self) -> usize {
        self.limit / 2
    }

    pub fn history(&self) -> usize {
        self.history.load(Ordering::Relaxed)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// An event of `size` bytes joined the history.
    pub fn hold_event(&self, size: usize) {
        self.history.fetch_add(size, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// An event of `size` bytes left the history.
    pub fn release_event(&self, size: usize) {
        self.history.fetch_sub(size, Ordering::Relaxed);
        self.events.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the history holds more than its share.
    pub fn history_over(&self) -> bool {
        self.history() > self.history_limit()
    }

    /// Reserves `n` bytes for work in flight, or `None` when the budget cannot take them.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Option<Held> {
        let mut cur = self.inflight.load(Ordering::Relaxed);
        loop {
            if self.history().saturating_add(cur).saturating_add(n) > self.limit {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.inflight.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Held {
                        budget: self.clone(),
                        n,
                    })
                }
                Err(now) => cur = now,
            }
        }
    }
}

/// Bytes reserved for work in flight; released on drop.
pub struct Held {
    budget: Arc<Budget>,
    n: usize,
}

impl Held {
    pub fn bytes(&self) -> usize {
        self.n
    }

    /// A response chunk that keeps this reservation until the server has written it out
    /// (hyper drops the `Bytes` then). `buf` should be at most the reserved size.
    pub fn into_bytes(self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Owned { buf, _held: self })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.inflight.fetch_sub(self.n, Ordering::Relaxed);
    }
}

struct Owned {
    buf: Vec<u8>,
    _held: Held,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// A default budget from the machine: a quarter of the memory this process may use (the
/// cgroup's `memory.max` when it has one, else the RAM), at least [`MIN_BUDGET`].
pub fn default_budget() -> usize {
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    let avail = match (ram, cgroup) {
        (Some(r), Some(c)) => r.min(c),
        (Some(r), None) => r,
        (None, Some(c)) => c,
        (None, None) => 1 << 30,
    };
    (avail / 4).max(MIN_BUDGET)
}

/// Parses a size: bytes, or with a `K`/`M`/`G` suffix (powers of 1024; `KiB`, `MB` also read).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size like 512M or 2G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back_when_dropped() {
        let b = Budget::new(MIN_BUDGET);
        b.hold_event(MIN_BUDGET / 2);
        let a = b.reserve(MIN_BUDGET / 4).expect("fits");
        assert!(b.reserve(MIN_BUDGET / 4 + 1).is_none(), "over the limit");
        let bytes = b.reserve(MIN_BUDGET / 4).unwrap().into_bytes(vec![1, 2, 3]);
        assert_eq!(b.inflight(), MIN_BUDGET / 2);
        drop(a);
        assert_eq!(&bytes[..], &[1, 2, 3]);
        drop(bytes);
        assert_eq!(b.inflight(), 0);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("x").is_err() && parse_size("5T").is_err());
    }
}
