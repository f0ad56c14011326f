//! Per-client limits: simultaneous streaming connections per IP, a request-rate token bucket
//! per IP, and a global subscriber cap. Admission returns a guard; dropping it frees the slot.

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

pub struct Limits {
    conns_per_ip: u32,
    rate: f64,
    max_subscribers: usize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
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
            subscribers: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Takes one request from the address's bucket (burst = 2 s worth of requests).
    pub fn rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let burst = self.rate * 2.0;
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| b.at.elapsed().as_secs() < 10);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: Instant::now(),
        });
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Refusal::RateLimited(
                ((1.0 - b.tokens) / self.rate).ceil() as u64
            ))
        }
    }

    /// Admits a streaming connection (rate, per-IP and global caps).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, transport: Transport) -> Result<Slot, Refusal> {
        self.rate(ip)?;
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
