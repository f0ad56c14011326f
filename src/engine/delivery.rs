//! Delivery bookkeeping: the cursor and the exactly-once filter.
//!
//! Contract: ids that are integers (`42`) or Redis stream ids (`<ms>-<seq>`) are ordered;
//! an event at or below the ordering baseline is a repeat and is dropped. Other ids are
//! opaque and dropped when seen among the last `window` opaque ids. Events without an id
//! are always delivered (nothing can be said about them). A server `reset` clears the
//! ordering baseline (ids may restart after it) but keeps the cursor to resume from and the
//! window of opaque ids; the same reset reported twice in a row yields one gap.

use std::collections::{HashSet, VecDeque};

/// Ordering key of an id, when it has one.
pub fn order_key(id: &str) -> Option<(u64, u64)> {
    use super::util::parse_u64;
    match id.split_once('-') {
        Some((ms, seq)) => Some((parse_u64(ms)?, parse_u64(seq)?)),
        None => Some((parse_u64(id)?, 0)),
    }
}

#[derive(Clone, Debug)]
pub struct Delivery {
    cursor: Option<String>,
    baseline: Option<(u64, u64)>,
    window: VecDeque<String>,
    seen: HashSet<String>,
    capacity: usize,
    last_reset: Option<(Option<String>, Option<String>)>,
}

impl Delivery {
    pub fn new(capacity: usize) -> Delivery {
        Delivery {
            cursor: None,
            baseline: None,
            window: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
            last_reset: None,
        }
    }

    /// Starts from a cursor the application already holds (`Options::since`): it is sent
    /// on the first connect and ordered ids at or before it are not delivered.
    pub fn with_cursor(capacity: usize, cursor: Option<&str>) -> Delivery {
        let mut d = Delivery::new(capacity);
        if let Some(c) = cursor {
            d.adopt(c);
        }
        d
    }

    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Whether an opaque id is among the recent ones delivered (ordered ids: compare with
    /// [`Delivery::baseline`] instead).
    pub fn has_seen(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// The ordering key at or below which events are repeats.
    pub fn baseline(&self) -> Option<(u64, u64)> {
        self.baseline
    }

    /// Whether an event with this id is new; if so it becomes the cursor.
    pub fn accept(&mut self, id: Option<&str>) -> bool {
        let Some(id) = id else { return true };
        let key = order_key(id);
        if let (Some(k), Some(b)) = (key, self.baseline) {
            if k <= b {
                return false;
            }
        }
        if key.is_none() || self.baseline.is_none() {
            if self.seen.contains(id) {
                return false;
            }
            if self.window.len() == self.capacity {
                if let Some(old) = self.window.pop_front() {
                    self.seen.remove(&old);
                }
            }
            self.window.push_back(id.into());
            self.seen.insert(id.into());
        }
        if key.is_some() {
            self.baseline = key;
        }
        self.cursor = Some(id.into());
        self.last_reset = None;
        true
    }

    /// A `hello` (or poll body) names the newest id the server holds: adopt it when the
    /// client has delivered nothing yet, so a reconnect resumes from there instead of
    /// "only new events".
    pub fn adopt(&mut self, cursor: &str) {
        if self.cursor.is_none() && self.baseline.is_none() && self.window.is_empty() {
            self.cursor = Some(cursor.into());
            self.baseline = order_key(cursor);
        }
    }

    /// A `hello`'s cursor or a cross-check's baseline names where the server is: when the
    /// client has delivered nothing yet, reconnects resume from there (instead of "only new
    /// events"). It is a resume point, not a filter: nothing was delivered, so nothing can
    /// be a repeat, and an older event still on its way on another connection is new to
    /// the app. (`Options::since`, which the app had, is a filter: [`Delivery::adopt`].)
    pub fn adopt_resume_point(&mut self, cursor: &str) {
        if self.cursor.is_none() && self.baseline.is_none() && self.window.is_empty() {
            self.cursor = Some(cursor.into());
        }
    }

    /// A server reset. Returns `false` when it repeats the previous one (no new gap).
    /// Without `oldest` only new events follow (`unknown_cursor`): the cursor becomes the
    /// connection's hello cursor, so the next reconnect does not send the unknown one again.
    pub fn reset(&mut self, oldest: Option<&str>, hello_cursor: Option<&str>) -> bool {
        let key = (self.cursor.clone(), oldest.map(String::from));
        if self.last_reset.as_ref() == Some(&key) {
            return false;
        }
        self.last_reset = Some(key);
        // Opaque ids stay in the window: a repeat after a reset is still a repeat.
        self.baseline = None;
        if oldest.is_none() {
            self.cursor = hello_cursor.map(String::from);
            self.baseline = hello_cursor.and_then(order_key);
            self.last_reset = Some((self.cursor.clone(), None));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_and_stream_ids_are_ordered() {
        assert!(order_key("10").unwrap() > order_key("9").unwrap());
        assert!(order_key("1700-2").unwrap() > order_key("1700-1").unwrap());
        assert!(order_key("1701-0").unwrap() > order_key("1700-99").unwrap());
        assert_eq!(order_key("abc"), None);
        assert_eq!(order_key("1-2-3"), None);
        assert_eq!(order_key("-1"), None);
    }

    #[test]
    fn repeats_and_older_ordered_ids_are_dropped() {
        let mut d = Delivery::new(4);
        assert!(d.accept(Some("5")));
        assert!(!d.accept(Some("5")));
        assert!(!d.accept(Some("3")));
        assert!(d.accept(Some("6")));
        assert_eq!(d.cursor(), Some("6"));
        assert!(d.accept(None));
        assert!(d.accept(None));
    }

    #[test]
    fn opaque_ids_are_deduplicated_through_a_bounded_window() {
        let mut d = Delivery::new(2);
        assert!(d.accept(Some("a")));
        assert!(d.accept(Some("b")));
        assert!(!d.accept(Some("a")));
        assert!(d.accept(Some("c")));
        // "a" fell out of the window of 2.
        assert!(d.accept(Some("a")));
    }

    #[test]
    fn a_reset_accepts_lower_ids_and_reports_once() {
        let mut d = Delivery::new(4);
        d.accept(Some("50"));
        assert!(d.reset(Some("1"), None));
        assert!(!d.reset(Some("1"), None));
        assert!(d.accept(Some("1")));
        assert_eq!(d.cursor(), Some("1"));
    }

    #[test]
    fn an_unknown_cursor_reset_resumes_from_the_hello_cursor() {
        let mut d = Delivery::new(4);
        d.accept(Some("900-0"));
        assert!(d.reset(None, Some("100-5")));
        assert_eq!(d.cursor(), Some("100-5"));
        assert!(
            !d.reset(None, Some("100-5")),
            "the same reset again is no new gap"
        );
        assert!(!d.accept(Some("100-5")));
        assert!(d.accept(Some("100-6")));
    }

    #[test]
    fn the_hello_cursor_is_adopted_only_before_any_delivery() {
        let mut d = Delivery::new(4);
        d.adopt("7-0");
        assert_eq!(d.cursor(), Some("7-0"));
        assert!(!d.accept(Some("7-0")));
        assert!(d.accept(Some("7-1")));
        d.adopt("9-0");
        assert_eq!(d.cursor(), Some("7-1"));
    }
}
