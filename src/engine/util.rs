//! Small helpers that keep `format!` and its machinery out of the wasm build, and the
//! engine's own seeded random generator (it has no other source of randomness).

/// Decimal form of `n` without `format!`.
pub fn u64_to_string(mut n: u64) -> String {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    String::from_utf8_lossy(&buf[i..]).into_owned()
}

pub fn usize_to_string(n: usize) -> String {
    u64_to_string(n as u64)
}

/// Parses a non-empty string of ASCII digits (no sign, no spaces); `None` on overflow.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

/// Concatenates parts into one string (a `format!` without the formatting machinery).
pub fn cat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// `parts` with `sep` between them: `[T]::join` in one loop, without the generic
/// copy routine std adds to the download for it.
pub fn join(parts: &[&str], sep: &str) -> String {
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        s.push_str(p);
    }
    s
}

/// Seconds with one decimal, e.g. `2.5 s`, for human messages.
pub fn secs(ms: u64) -> String {
    let mut s = u64_to_string(ms / 1000);
    let tenth = (ms % 1000) / 100;
    if tenth != 0 {
        s.push('.');
        s.push((b'0' + tenth as u8) as char);
    }
    s.push_str(" s");
    s
}

/// splitmix64: a tiny, well-mixed, seedable generator. Enough for jitter and message-id
/// prefixes; not for secrets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (tiny modulo bias is irrelevant for jitter).
    pub fn below_incl(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_and_parse_back() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            assert_eq!(u64_to_string(n), n.to_string());
            assert_eq!(parse_u64(&n.to_string()), Some(n));
        }
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("1a"), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64("99999999999999999999999"), None);
    }

    #[test]
    fn join_matches_the_standard_join() {
        for parts in [&[][..], &["a"][..], &["a", "", "bc"][..]] {
            assert_eq!(join(parts, ", "), parts.join(", "));
        }
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(secs(2500), "2.5 s");
        assert_eq!(secs(30000), "30 s");
    }

    #[test]
    fn the_generator_is_deterministic_per_seed() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(42);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::new(42);
        let b: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], Rng::new(43).next_u64());
    }
}
