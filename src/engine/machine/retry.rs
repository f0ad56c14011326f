//! The retry policy, a value: attempt `n ≥ 1` waits `[cap × (1 − jitter), cap]` with
//! `cap = min(max, initial × factor^n)`; the first retry after a working session waits
//! `[0, spread]` (clients cut together do not return together); a server's wait is a floor
//! plus up to a tenth. Upstream POSTs back off the same way on their own counter.

use super::*;

impl<D: Clone> Engine<D> {
    /// The wait before the next round. The first retry after losing a working session is
    /// spread over `[0, spread_ms]` (everyone cut at once must not return at once); later
    /// ones wait `[cap/2, cap]`, `cap = min(max, initial × factor^attempt)`.
    pub(super) fn backoff_delay(&mut self, after_session: bool, floor: Option<u64>) -> u64 {
        let b = &self.options.backoff;
        let d = if after_session && self.attempt == 0 {
            self.rng.below_incl(b.spread_ms)
        } else {
            let cap = backoff_cap(b.initial_ms, b.factor, b.max_ms, self.attempt);
            self.jittered(cap)
        };
        match floor {
            Some(f) => f.max(d) + self.rng.below_incl(f / 10),
            None => d,
        }
    }

    pub(super) fn post_backoff(&mut self) -> u64 {
        let b = &self.options.backoff;
        let cap = backoff_cap(b.initial_ms, b.factor, b.max_ms, self.post_attempt);
        self.jittered(cap)
    }

    /// A wait in `[cap × (1 − jitter), cap]`: `jitter` 0.5 (the default) is "equal
    /// jitter", 1 is "full jitter", 0 none.
    pub(super) fn jittered(&mut self, cap: u64) -> u64 {
        let spread = ((cap as f64) * self.options.backoff.jitter) as u64;
        let spread = spread.min(cap);
        cap - spread + self.rng.below_incl(spread)
    }
}

/// `min(max, initial × factor^n)`, saturating.
pub(super) fn backoff_cap(initial: u64, factor: f64, max: u64, n: u32) -> u64 {
    let v = (initial as f64) * factor.powi(n.min(64) as i32);
    if !v.is_finite() || v >= max as f64 {
        max
    } else {
        (v as u64).max(1)
    }
}
