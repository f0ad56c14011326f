//! Event ids and events.
//!
//! Ids are `<ms>-<seq>` pairs ordered as numbers (the Redis Streams format). In memory mode
//! `<ms>` is the server's boot time, so ids keep increasing across restarts and a cursor from
//! a previous boot is recognisably older than anything retained. A bare `<ms>` parses as
//! `<ms>-0`. An event keeps one wire encoding, its JSON frame, built once and shared by every
//! subscriber; the SSE `data:` line is a slice of it, so an event is held once, not twice.
//! [`Event::size`] is what it costs the memory budget.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use serde_json::Value;

/// An event id: ordered by `(ms, seq)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> Self {
        EventId { ms, seq }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadId(pub String);

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an event id: expected `<ms>-<seq>` or `<ms>` (digits)",
            self.0.chars().take(64).collect::<String>()
        )
    }
}

impl FromStr for EventId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadId(s.to_string());
        let digits = |p: &str| -> Result<u64, BadId> {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u64>().map_err(|_| bad())
        };
        match s.split_once('-') {
            Some((ms, seq)) => Ok(EventId::new(digits(ms)?, digits(seq)?)),
            None => Ok(EventId::new(digits(s)?, 0)),
        }
    }
}

/// One event of a topic, with its wire encoding.
#[derive(Debug)]
pub struct Event {
    pub id: EventId,
    pub kind: String,
    /// `{"id":..,"type":..,"data":..}`: a WebSocket frame or poll batch element, and (its
    /// `data` part) the SSE `data:` line.
    pub frame: String,
    /// Where the JSON of `data` starts in `frame` (it ends before the closing brace).
    data_at: usize,
    /// When this process learned of the event (for age-based retention of the ring).
    pub seen_at: Instant,
}

/// Bytes an event costs beyond its text: the struct, its `Arc` and the allocator's headers.
const EVENT_OVERHEAD: usize = 128;

impl Event {
    pub fn new(id: EventId, kind: &str, data_json: String) -> Event {
        let mut frame = format!(
            "{{\"id\":\"{}\",\"type\":{},\"data\":",
            id,
            Value::String(kind.to_string())
        );
        let data_at = frame.len();
        frame.reserve_exact(data_json.len() + 1);
        frame.push_str(&data_json);
        frame.push('}');
        Event {
            id,
            kind: kind.to_string(),
            frame,
            data_at,
            seen_at: Instant::now(),
        }
    }

    /// The JSON of `data` alone.
    pub fn data_json(&self) -> &str {
        &self.frame[self.data_at..self.frame.len() - 1]
    }

    /// What holding this event costs, in bytes.
    pub fn size(&self) -> usize {
        self.frame.capacity() + self.kind.capacity() + EVENT_OVERHEAD
    }

    /// Appends the SSE encoding: `id:`, `event:`, `data:` lines and a blank line.
    pub fn sse_into(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(
            out,
            "id: {}\nevent: {}\ndata: ",
            self.id,
            sse_safe(&self.kind)
        );
        out.extend_from_slice(self.data_json().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// The length of [`Event::sse_into`]'s output, give or take the escaped type.
    pub fn sse_len(&self) -> usize {
        self.data_json().len() + self.kind.len() + 48
    }

    /// The SSE encoding as a string.
    pub fn sse(&self) -> String {
        let mut out = Vec::new();
        self.sse_into(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// SSE fields end at a newline: an event type with one would split the event.
fn sse_safe(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Names of control frames; application events may not use them.
pub const RESERVED_TYPES: &[&str] = &[
    "hello",
    "heartbeat",
    "ping",
    "pong",
    "reset",
    "send",
    "ack",
    "error",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_in_both_forms_and_order_numerically() {
        let a: EventId = "1700000000000-9".parse().unwrap();
        let b: EventId = "1700000000000-10".parse().unwrap();
        let c: EventId = "1700000000001".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(c.to_string(), "1700000000001-0");
    }

    #[test]
    fn malformed_ids_are_refused() {
        for s in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "1.5",
            " 1",
            "999999999999999999999",
        ] {
            assert!(s.parse::<EventId>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn frames_escape_the_type_and_embed_the_data() {
        let e = Event::new(EventId::new(5, 1), "a\"b", "{\"x\":1}".into());
        let v: Value = serde_json::from_str(&e.frame).unwrap();
        assert_eq!(v["id"], "5-1");
        assert_eq!(v["type"], "a\"b");
        assert_eq!(v["data"]["x"], 1);
        assert_eq!(e.data_json(), "{\"x\":1}");
        assert_eq!(
            Event::new(EventId::new(5, 1), "a\nb", "1".into()).sse(),
            "id: 5-1\nevent: a b\ndata: 1\n\n"
        );
    }
}
