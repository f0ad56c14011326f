//! Event ids and events.
//!
//! Ids are `<ms>-<seq>` pairs ordered as numbers (the Redis Streams format). In memory mode
//! `<ms>` is the server's boot time, so ids keep increasing across restarts and a cursor from
//! a previous boot is recognisably older than anything retained. A bare `<ms>` parses as
//! `<ms>-0`. Events keep their wire encodings precomputed so fan-out to many subscribers
//! serialises each event once.

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

/// One event of a topic, with its wire encodings.
#[derive(Debug)]
pub struct Event {
    pub id: EventId,
    pub kind: String,
    /// `{"id":..,"type":..,"data":..}`: a WebSocket frame or poll batch element.
    pub frame: String,
    /// The JSON of `data` alone: the SSE `data:` line.
    pub data_json: String,
    /// When this process learned of the event (for age-based retention of the ring).
    pub seen_at: Instant,
}

impl Event {
    pub fn new(id: EventId, kind: &str, data_json: String) -> Event {
        let frame = format!(
            "{{\"id\":\"{}\",\"type\":{},\"data\":{}}}",
            id,
            Value::String(kind.to_string()),
            data_json
        );
        Event {
            id,
            kind: kind.to_string(),
            frame,
            data_json,
            seen_at: Instant::now(),
        }
    }

    /// The SSE encoding: `id:`, `event:`, `data:` lines and a blank line.
    pub fn sse(&self) -> String {
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id,
            sse_safe(&self.kind),
            self.data_json
        )
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
        assert_eq!(
            Event::new(EventId::new(5, 1), "a\nb", "1".into()).sse(),
            "id: 5-1\nevent: a b\ndata: 1\n\n"
        );
    }
}
