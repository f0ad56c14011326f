//! Counters the proxy keeps for `GET /__fault/stats`.
//!
//! Contract: every counter only grows, except `open`. Control requests are counted in
//! `controlRequests` only, so tests see exactly the traffic they proxied.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the proxy closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// `idleCutMs` elapsed with no byte either way.
    Idle,
    /// `cutEveryMs` elapsed since the connection opened.
    Every,
    /// `POST /__fault/cut`.
    Manual,
    /// The proxy is shutting down (SIGTERM).
    Shutdown,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub requests: AtomicU64,
    pub upgrade_requests: AtomicU64,
    pub upgrades: AtomicU64,
    pub upgrades_refused: AtomicU64,
    pub upgrades_stripped: AtomicU64,
    pub upgrades_silenced: AtomicU64,
    pub responses_buffered: AtomicU64,
    pub statuses_injected: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub bad_requests: AtomicU64,
    pub control_requests: AtomicU64,
    pub cut_idle: AtomicU64,
    pub cut_every: AtomicU64,
    pub cut_manual: AtomicU64,
    pub cut_shutdown: AtomicU64,
    pub bytes_to_upstream: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub bytes_dropped: AtomicU64,
}

/// The JSON shape of `GET /__fault/stats`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub open: u64,
    pub accepted: u64,
    pub refused: u64,
    pub requests: u64,
    pub upgrade_requests: u64,
    pub upgrades: u64,
    pub upgrades_refused: u64,
    pub upgrades_stripped: u64,
    pub upgrades_silenced: u64,
    pub responses_buffered: u64,
    pub statuses_injected: u64,
    pub upstream_failures: u64,
    pub bad_requests: u64,
    pub control_requests: u64,
    pub cuts: Cuts,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
    pub bytes_dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct Cuts {
    pub idle: u64,
    pub every: u64,
    pub manual: u64,
    pub shutdown: u64,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl Stats {
    pub fn cut(&self, reason: CutReason) {
        inc(match reason {
            CutReason::Idle => &self.cut_idle,
            CutReason::Every => &self.cut_every,
            CutReason::Manual => &self.cut_manual,
            CutReason::Shutdown => &self.cut_shutdown,
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            open: g(&self.open),
            accepted: g(&self.accepted),
            refused: g(&self.refused),
            requests: g(&self.requests),
            upgrade_requests: g(&self.upgrade_requests),
            upgrades: g(&self.upgrades),
            upgrades_refused: g(&self.upgrades_refused),
            upgrades_stripped: g(&self.upgrades_stripped),
            upgrades_silenced: g(&self.upgrades_silenced),
            responses_buffered: g(&self.responses_buffered),
            statuses_injected: g(&self.statuses_injected),
            upstream_failures: g(&self.upstream_failures),
            bad_requests: g(&self.bad_requests),
            control_requests: g(&self.control_requests),
            cuts: Cuts {
                idle: g(&self.cut_idle),
                every: g(&self.cut_every),
                manual: g(&self.cut_manual),
                shutdown: g(&self.cut_shutdown),
            },
            bytes_to_upstream: g(&self.bytes_to_upstream),
            bytes_to_client: g(&self.bytes_to_client),
            bytes_dropped: g(&self.bytes_dropped),
        }
    }
}
