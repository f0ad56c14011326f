//! Per-client limits: simultaneous streaming connections per IP, a request-rate token bucket
//! per IP, and a global subscriber cap. Admission returns a guard; dropping it frees the slot.
//!
//! Two more buckets per address make guessing and exhaustion slow, both off with
//! `--rate-per-ip 0`:
//! - failed credentials (a wrong or expired token, a wrong publish key): [`AUTH_FAIL_BURST`]
//!   at once, then one per second. While it is empty the credential is not even checked:
//!   the answer is 429. Checked before the credential, counted after a failure.
//! - new topics (a subscription or upstream send to a topic the server does not hold):
//!   [`TOPIC_BURST`] at once, then [`TOPIC_RATE`] per second, so one address cannot fill the
//!   server's topic table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::metrics::{Metrics, Transport};

/// Why admission failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests: retry after this many seconds.
    RateLimited(u64),
    /// Too many open connections from this address.
    ConnsPerIp,
    /// The server holds its maximum number of subscribers.
    MaxSubscribers,
}

impl Refusal {
    pub fn metric(self) -> &'static str {
        match self {
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::ConnsPerIp => "conns_per_ip",
            Refusal::MaxSubscribers => "max_subscribers",
        }
    }

    pub fn retry_after(self) -> u64 {
        match self {
            Refusal::RateLimited(s) => s.max(1),
            Refusal::ConnsPerIp => 5,
            Refusal::MaxSubscribers => 10,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Failed credentials an address may present at once; then one per second.
pub const AUTH_FAIL_BURST: f64 = 10.0;
const AUTH_FAIL_RATE: f64 = 1.0;
/// New topics an address may create at once; then [`TOPIC_RATE`] per second.
pub const TOPIC_BURST: f64 = 100.0;
pub const TOPIC_RATE: f64 = 10.0;

/// Refills `ip`'s bucket and, when `take`, takes a token; Err(seconds until one is back)
/// when none is left (a `take` of an empty bucket takes nothing).
fn bucket(
    map: &Mutex<HashMap<IpAddr, Bucket>>,
    ip: IpAddr,
    rate: f64,
    burst: f64,
    take: bool,
) -> Result<(), u64> {
    let mut buckets = map.lock().unwrap();
    if buckets.len() > 100_000 {
        buckets.retain(|_, b| b.at.elapsed().as_secs_f64() * rate < burst);
    }
    let now = Instant::now();
    let b = buckets.entry(ip).or_insert(Bucket {
        tokens: burst,
        at: now,
    });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
    b.at = now;
    if b.tokens >= 1.0 {
        if take {
            b.tokens -= 1.0;
        }
        Ok(())
    } else {
        Err((((1.0 - b.tokens) / rate).ceil() as u64).max(1))
    }
}

pub struct Limits {
    conns_per_ip: u32,
    rate: f64,
    max_subscribers: usize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    auth_failures: Mutex<HashMap<IpAddr, Bucket>>,
    new_topics: Mutex<HashMap<IpAddr, Bucket>>,
    subscribers: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// An admitted streaming connection; frees its slots on drop.
pub struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
    transport: Transport,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.limits.metrics.connections[self.transport as usize].fetch_sub(1, Ordering::Relaxed);
        let mut map = self.limits.per_ip.lock().unwrap();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    pub fn new(
        conns_per_ip: u32,
        rate_per_ip: u32,
        max_subscribers: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Limits> {
        Arc::new(Limits {
            conns_per_ip,
            rate: rate_per_ip as f64,
            max_subscribers,
            per_ip: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            auth_failures: Mutex::new(HashMap::new()),
            new_topics: Mutex::new(HashMap::new()),
            subscribers: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Takes one request from the address's bucket (burst = 2 s worth of requests).
    pub fn rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        bucket(&self.buckets, ip, self.rate, self.rate * 2.0, true).map_err(Refusal::RateLimited)
    }

    /// Whether the address may present a credential now (its failures are not used up).
    pub fn auth_allowed(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        bucket(
            &self.auth_failures,
            ip,
            AUTH_FAIL_RATE,
            AUTH_FAIL_BURST,
            false,
        )
        .map_err(Refusal::RateLimited)
    }

    /// Counts a failed credential against the address.
    pub fn auth_failed(&self, ip: IpAddr) {
        if self.rate > 0.0 {
            let _ = bucket(
                &self.auth_failures,
                ip,
                AUTH_FAIL_RATE,
                AUTH_FAIL_BURST,
                true,
            );
        }
    }

    /// Takes one new topic from the address's allowance; Err(seconds) when it is used up.
    pub fn new_topic(&self, ip: IpAddr) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        bucket(&self.new_topics, ip, TOPIC_RATE, TOPIC_BURST, true)
    }

    /// Admits a streaming connection (per-IP and global caps; the caller took the rate).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, transport: Transport) -> Result<Slot, Refusal> {
        {
            let mut map = self.per_ip.lock().unwrap();
            let n = map.entry(ip).or_insert(0);
            if self.conns_per_ip > 0 && *n >= self.conns_per_ip {
                if *n == 0 {
                    map.remove(&ip);
                }
                return Err(Refusal::ConnsPerIp);
            }
            if self.subscribers.fetch_add(1, Ordering::Relaxed) >= self.max_subscribers {
                self.subscribers.fetch_sub(1, Ordering::Relaxed);
                if *n == 0 {
                    map.remove(&ip);
                }
                return Err(Refusal::MaxSubscribers);
            }
            *n += 1;
        }
        self.metrics.connections[transport as usize].fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_total[transport as usize].fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            limits: self.clone(),
            ip,
            transport,
        })
    }

    pub fn open(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }
}
