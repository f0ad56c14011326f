//! Counters and gauges, rendered as Prometheus text at `GET /metrics`.
//!
//! Plain atomics: the server has a fixed, small set of series, so a metrics registry
//! would add a dependency without adding anything.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The three rungs, as label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws = 0,
    Sse = 1,
    Poll = 2,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Ws => "websocket",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// Why a request was turned away, as label values.
pub const REJECT_REASONS: [&str; 10] = [
    "auth",
    "rate_limited",
    "conns_per_ip",
    "max_subscribers",
    "too_large",
    "bad_request",
    "unavailable",
    "over_budget",
    "sockets_per_ip",
    "origin",
];

#[derive(Default)]
pub struct Metrics {
    pub connections: [AtomicI64; 3],
    pub connections_total: [AtomicU64; 3],
    pub delivered: [AtomicU64; 3],
    pub resumes: [AtomicU64; 3],
    pub resets: AtomicU64,
    pub published: AtomicU64,
    pub sends: AtomicU64,
    pub sends_repeated: AtomicU64,
    pub heartbeats: AtomicU64,
    pub rejected: [AtomicU64; 10],
    /// Connections closed because a write to them stayed blocked past the write timeout.
    pub write_timeouts: AtomicU64,
    /// Connections closed because their request headers did not arrive in time.
    pub header_timeouts: AtomicU64,
}

impl Metrics {
    pub fn reject(&self, reason: &str) {
        if let Some(i) = REJECT_REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, topics: usize, budget: &crate::budget::Budget) -> String {
        let mut out = String::new();
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let per_transport =
            |out: &mut String, name: &str, kind: &str, help: &str, f: &dyn Fn(usize) -> String| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for t in Transport::ALL {
                    let _ = writeln!(
                        out,
                        "{name}{{transport=\"{}\"}} {}",
                        t.label(),
                        f(t as usize)
                    );
                }
            };
        per_transport(
            &mut out,
            "holdfast_connections",
            "gauge",
            "Open subscriber connections.",
            &|i| g(&self.connections[i]).to_string(),
        );
        per_transport(
            &mut out,
            "holdfast_connections_total",
            "counter",
            "Subscriber connections accepted.",
            &|i| c(&self.connections_total[i]).to_string(),
        );
        per_transport(
            &mut out,
            "holdfast_events_out_total",
            "counter",
            "Events delivered to subscribers.",
            &|i| c(&self.delivered[i]).to_string(),
        );
        per_transport(
            &mut out,
            "holdfast_resumes_total",
            "counter",
            "Subscriptions that resumed from a cursor.",
            &|i| c(&self.resumes[i]).to_string(),
        );
        let single = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        single(
            &mut out,
            "holdfast_events_in_total",
            "counter",
            "Events published (including upstream sends).",
            c(&self.published),
        );
        single(
            &mut out,
            "holdfast_resets_total",
            "counter",
            "Reset frames sent for cursors older than the history.",
            c(&self.resets),
        );
        single(
            &mut out,
            "holdfast_sends_total",
            "counter",
            "Upstream messages acknowledged.",
            c(&self.sends),
        );
        single(
            &mut out,
            "holdfast_sends_repeated_total",
            "counter",
            "Upstream messages acknowledged again without being applied.",
            c(&self.sends_repeated),
        );
        single(
            &mut out,
            "holdfast_heartbeats_total",
            "counter",
            "Server heartbeats sent.",
            c(&self.heartbeats),
        );
        single(
            &mut out,
            "holdfast_topics",
            "gauge",
            "Topics held in this process.",
            topics as u64,
        );
        single(
            &mut out,
            "holdfast_memory_budget_bytes",
            "gauge",
            "The memory budget (--memory-budget).",
            budget.limit() as u64,
        );
        single(
            &mut out,
            "holdfast_history_bytes",
            "gauge",
            "Bytes of events retained in all topics (at most half the budget).",
            budget.history() as u64,
        );
        single(
            &mut out,
            "holdfast_history_events",
            "gauge",
            "Events retained in all topics.",
            budget.events() as u64,
        );
        single(
            &mut out,
            "holdfast_inflight_bytes",
            "gauge",
            "Bytes of chunks, poll bodies and request bodies in flight.",
            budget.inflight() as u64,
        );
        single(
            &mut out,
            "holdfast_budget_trimmed_bytes_total",
            "counter",
            "Bytes of history trimmed to stay within the memory budget.",
            budget.trimmed.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "holdfast_write_timeouts_total",
            "counter",
            "Connections closed because the client stopped reading.",
            c(&self.write_timeouts),
        );
        single(
            &mut out,
            "holdfast_header_timeouts_total",
            "counter",
            "Connections closed because request headers did not arrive in time.",
            c(&self.header_timeouts),
        );
        let _ = writeln!(out, "# HELP holdfast_rejected_total Requests turned away.\n# TYPE holdfast_rejected_total counter");
        for (i, r) in REJECT_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "holdfast_rejected_total{{reason=\"{r}\"}} {}",
                c(&self.rejected[i])
            );
        }
        out
    }
}
