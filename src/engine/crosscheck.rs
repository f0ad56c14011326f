//! Cross-checks: telling a quiet stream from a blocked one without the server's help.
//!
//! Backends users already run send nothing when a WebSocket or an SSE stream opens (no
//! `hello`, no answer to a JSON ping), so silence on a fresh stream proves nothing: the topic
//! may simply be idle. What does prove something is another rung asked with the same cursor.
//!
//! Contract. A WebSocket or SSE *session* whose path is not proven end to end (no `hello` on
//! this connection, and on the WebSocket no pong: a frame the server sent after everything
//! before it) and that has received nothing for the current interval is **checked**: the
//! engine asks the polling rung once, without holding (`wait=0`), for what follows the
//! stream's cursor. The answer decides:
//!
//! | the check returned | verdict | what follows |
//! |---|---|---|
//! | no event after the cursor | **idle** | next check after twice the interval (at most [`MAX_INTERVAL_MS`]) |
//! | events after the cursor | **suspect** | the stream has a grace ([`grace`]) to deliver up to the newest of them; if it does it was only behind, else it is **blocked** |
//! | anything, while the stream has no cursor yet | **baseline** | the newest id the server holds (the poll's `cursor`, or its last event) is the cursor of the next check |
//! | an error (status, timeout, bad body) | **no verdict** | the interval doubles |
//! | only ids that cannot be ordered | **unusable** | no more checks in this session |
//!
//! An event delivered by the stream brings the interval back to its initial value (a stuck
//! tail shows in the pause after a burst). Only one check is in flight at a time. The module
//! holds state and verdicts only; the engine opens and closes the requests.

use super::delivery::order_key;
use super::types::{ConnId, Millis};

/// Longest silence between two checks of an idle stream.
pub const MAX_INTERVAL_MS: u64 = 60_000;
/// Least time a suspect stream gets to deliver what the check saw.
pub const GRACE_MIN_MS: u64 = 1_000;

/// What one finished check proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing after the cursor: the stream is quiet, not blocked.
    Idle,
    /// `count` events after the cursor, up to `newest`: the stream must deliver them by the
    /// suspect deadline.
    Suspect { count: u32, newest: String },
    /// The stream had no cursor: the check only learned where the server is.
    Baseline,
    /// The check's ids cannot be compared with the stream's.
    Unusable,
}

#[derive(Clone, Debug)]
struct InFlight {
    conn: ConnId,
    target: ConnId,
    /// The cursor the check asked with (`None`: a baseline check).
    since: Option<(u64, u64)>,
    sent_at: Millis,
    /// Newest ordered event id seen after `since`, and how many.
    newest: Option<((u64, u64), String)>,
    count: u32,
    /// An event whose id cannot be ordered (or has none) was seen.
    unordered: bool,
    /// The poll body's `cursor`.
    cursor: Option<String>,
}

/// A stream that owes events a check saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    pub target: ConnId,
    pub newest: String,
    newest_key: (u64, u64),
    pub count: u32,
    pub deadline: Millis,
    /// When the check that raised it was sent.
    pub checked_at: Millis,
}

/// Cross-check state of the current session (see the module contract).
#[derive(Clone, Debug)]
pub struct CrossCheck {
    initial_ms: u64,
    interval_ms: u64,
    baseline: Option<String>,
    in_flight: Option<InFlight>,
    suspect: Option<Suspect>,
    off: bool,
    /// When the last check ended: silence is counted from it too, so an idle stream is
    /// checked once per interval, not again at once.
    last_ended: Millis,
}

/// The grace a suspect stream gets: four round trips of the check, at least
/// [`GRACE_MIN_MS`] (the stream and the check race for the same events).
pub fn grace(round_trip: u64) -> u64 {
    round_trip.saturating_mul(4).max(GRACE_MIN_MS)
}

impl CrossCheck {
    /// `initial_ms` 0 turns checks off.
    pub fn new(initial_ms: u64) -> CrossCheck {
        CrossCheck {
            initial_ms,
            interval_ms: initial_ms,
            baseline: None,
            in_flight: None,
            suspect: None,
            off: initial_ms == 0,
            last_ended: 0,
        }
    }

    /// A new session starts: its checks start over (the learned baseline stays until the
    /// stream has a cursor of its own).
    pub fn new_session(&mut self, initial_ms: u64) {
        *self = CrossCheck {
            baseline: self.baseline.take(),
            ..CrossCheck::new(initial_ms)
        };
    }

    /// When the next check is due, for a stream silent since `quiet_since`. A stream with
    /// no cursor (`stream_cursor` and the learned baseline both absent) is checked one
    /// handshake after it opened (`opened_at`, `handshake`): a server that speaks first
    /// has said so by then, and the sooner the baseline, the less a blocked first
    /// connection can hide.
    pub fn due(
        &self,
        stream_cursor: Option<&str>,
        quiet_since: Millis,
        opened_at: Millis,
        handshake: u64,
    ) -> Option<Millis> {
        if self.off || self.in_flight.is_some() || self.suspect.is_some() {
            return None;
        }
        if self.since(stream_cursor).is_none() {
            return Some(opened_at.saturating_add(handshake.min(self.interval_ms)));
        }
        Some(
            quiet_since
                .max(self.last_ended)
                .saturating_add(self.interval_ms),
        )
    }

    /// The cursor a check should ask with: the stream's, else the learned baseline. After a
    /// baseline check the engine adopts the baseline as the stream's cursor (as it adopts a
    /// `hello`'s), so a step-down resumes from it.
    pub fn since<'a>(&'a self, stream_cursor: Option<&'a str>) -> Option<&'a str> {
        stream_cursor.or(self.baseline.as_deref())
    }

    /// A check request `conn` was sent for stream `target`, asking after `since`.
    pub fn started(&mut self, conn: ConnId, target: ConnId, since: Option<&str>, now: Millis) {
        let since = since.map(|s| order_key(s).unwrap_or((0, 0)));
        self.in_flight = Some(InFlight {
            conn,
            target,
            since,
            sent_at: now,
            newest: None,
            count: 0,
            unordered: false,
            cursor: None,
        });
    }

    /// A check is out.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub fn is_check(&self, conn: ConnId) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.conn == conn)
    }

    /// An event the check returned.
    pub fn saw_event(&mut self, conn: ConnId, id: Option<&str>) {
        let Some(f) = self.in_flight.as_mut().filter(|f| f.conn == conn) else {
            return;
        };
        let Some((id, key)) = id.and_then(|i| Some((i, order_key(i)?))) else {
            f.unordered = true;
            return;
        };
        if f.since.is_some_and(|s| key <= s) {
            return; // a server that ignores `since` repeats what the stream has
        }
        f.count += 1;
        if !matches!(&f.newest, Some((k, _)) if key <= *k) {
            f.newest = Some((key, id.into()));
        }
    }

    /// The poll body's `cursor` field.
    pub fn saw_cursor(&mut self, conn: ConnId, cursor: Option<&str>) {
        if let Some(f) = self.in_flight.as_mut().filter(|f| f.conn == conn) {
            if let Some(c) = cursor {
                f.cursor = Some(c.into());
            }
        }
    }

    /// The check request failed without a verdict.
    pub fn failed(&mut self, conn: ConnId, now: Millis) {
        if self.is_check(conn) {
            self.in_flight = None;
            self.last_ended = now;
            self.interval_ms = self.interval_ms.saturating_mul(2).min(MAX_INTERVAL_MS);
        }
    }

    /// The check request finished; `delivered` is the stream's ordering key now (what it
    /// delivered while the check was out counts).
    pub fn finished(
        &mut self,
        conn: ConnId,
        delivered: Option<(u64, u64)>,
        now: Millis,
    ) -> Option<Verdict> {
        let f = self.in_flight.take_if(|f| f.conn == conn)?;
        self.last_ended = now;
        if f.since.is_none() {
            let learned = f.newest.map(|(_, id)| id).or(f.cursor);
            return Some(match learned {
                Some(b) if order_key(&b).is_some() => {
                    self.baseline = Some(b);
                    Verdict::Baseline
                }
                Some(_) => {
                    self.off = true;
                    Verdict::Unusable
                }
                None if f.unordered => {
                    self.off = true;
                    Verdict::Unusable
                }
                // An empty store: the next check asks from the start.
                _ => {
                    self.baseline = Some(String::from("0"));
                    Verdict::Baseline
                }
            });
        }
        match f.newest {
            Some((key, id)) if !matches!(delivered, Some(d) if key <= d) => {
                let count = f.count;
                self.suspect = Some(Suspect {
                    target: f.target,
                    newest: id.clone(),
                    newest_key: key,
                    count,
                    deadline: now + grace(now.saturating_sub(f.sent_at)),
                    checked_at: f.sent_at,
                });
                Some(Verdict::Suspect { count, newest: id })
            }
            Some(_) => {
                // The stream delivered them while the check was out.
                self.interval_ms = self.initial_ms;
                Some(Verdict::Idle)
            }
            None if f.unordered => {
                self.off = true;
                Some(Verdict::Unusable)
            }
            None => {
                self.interval_ms = self.interval_ms.saturating_mul(2).min(MAX_INTERVAL_MS);
                Some(Verdict::Idle)
            }
        }
    }

    /// The stream delivered an event; `key` is the ordering key delivered up to (the
    /// delivery baseline, already computed: no second parse of the id per event).
    pub fn stream_delivered(&mut self, key: Option<(u64, u64)>) {
        self.interval_ms = self.initial_ms;
        self.baseline = None;
        if let (Some(s), Some(k)) = (&self.suspect, key) {
            if k >= s.newest_key {
                self.suspect = None;
            }
        }
    }

    pub fn suspect(&self) -> Option<&Suspect> {
        self.suspect.as_ref()
    }

    /// The suspect's deadline passed: it is blocked. Returns what it owed.
    pub fn take_suspect(&mut self) -> Option<Suspect> {
        self.suspect.take()
    }

    /// No more checks in this session (the stream's cursor cannot be compared).
    pub fn turn_off(&mut self) {
        self.off = true;
        self.in_flight = None;
        self.suspect = None;
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: ConnId = ConnId(1);
    const CHECK: ConnId = ConnId(2);

    #[test]
    fn a_check_that_finds_nothing_calls_the_stream_idle_and_waits_twice_as_long() {
        let mut x = CrossCheck::new(5_000);
        assert_eq!(x.due(Some("7"), 1_000, 0, 0), Some(6_000));
        x.started(CHECK, STREAM, Some("7"), 6_000);
        assert_eq!(x.due(Some("7"), 1_000, 0, 0), None, "one check at a time");
        assert_eq!(x.finished(CHECK, Some((7, 0)), 6_050), Some(Verdict::Idle));
        assert_eq!(
            x.due(Some("7"), 1_000, 0, 0),
            Some(16_050),
            "twice the interval after the last check, not after the last frame"
        );
        for _ in 0..10 {
            x.started(CHECK, STREAM, Some("7"), 0);
            x.finished(CHECK, Some((7, 0)), 0);
        }
        assert_eq!(x.interval_ms(), MAX_INTERVAL_MS);
        x.stream_delivered(Some((8, 0)));
        assert_eq!(x.interval_ms(), 5_000, "an event brings the interval back");
    }

    #[test]
    fn events_the_stream_has_not_delivered_make_it_suspect_until_it_delivers_them() {
        let mut x = CrossCheck::new(5_000);
        x.started(CHECK, STREAM, Some("7"), 10_000);
        x.saw_event(CHECK, Some("8"));
        x.saw_event(CHECK, Some("9"));
        let v = x.finished(CHECK, Some((7, 0)), 10_400);
        assert_eq!(
            v,
            Some(Verdict::Suspect {
                count: 2,
                newest: "9".into()
            })
        );
        let s = x.suspect().unwrap().clone();
        assert_eq!(s.deadline, 10_400 + 1_600, "four round trips of 400 ms");
        assert_eq!(x.due(Some("7"), 0, 0, 0), None);
        x.stream_delivered(Some((8, 0)));
        assert!(x.suspect().is_some(), "it still owes 9");
        x.stream_delivered(Some((9, 0)));
        assert!(x.suspect().is_none());
    }

    #[test]
    fn what_the_stream_delivered_while_the_check_was_out_is_not_owed() {
        let mut x = CrossCheck::new(5_000);
        x.started(CHECK, STREAM, Some("7"), 0);
        x.saw_event(CHECK, Some("8"));
        assert_eq!(x.finished(CHECK, Some((8, 0)), 10), Some(Verdict::Idle));
        assert!(x.suspect().is_none());
    }

    #[test]
    fn without_a_cursor_the_first_check_learns_a_baseline() {
        let mut x = CrossCheck::new(5_000);
        assert_eq!(x.since(None), None);
        assert_eq!(
            x.due(None, 9_000, 1_040, 40),
            Some(1_080),
            "no cursor: one handshake after opening"
        );
        x.started(CHECK, STREAM, None, 0);
        x.saw_event(CHECK, Some("3"));
        x.saw_event(CHECK, Some("4"));
        assert_eq!(x.finished(CHECK, None, 10), Some(Verdict::Baseline));
        assert_eq!(x.since(None), Some("4"));
        assert_eq!(
            x.since(Some("9")),
            Some("9"),
            "the stream's own cursor wins"
        );

        let mut x = CrossCheck::new(5_000);
        x.started(CHECK, STREAM, None, 0);
        x.saw_cursor(CHECK, Some("1700-3"));
        x.finished(CHECK, None, 10);
        assert_eq!(x.since(None), Some("1700-3"), "a poll body's cursor");

        let mut x = CrossCheck::new(5_000);
        x.started(CHECK, STREAM, None, 0);
        x.finished(CHECK, None, 10);
        assert_eq!(
            x.since(None),
            Some("0"),
            "an empty store: ask from the start"
        );
    }

    #[test]
    fn repeats_of_a_server_that_ignores_since_are_not_evidence() {
        let mut x = CrossCheck::new(5_000);
        x.started(CHECK, STREAM, Some("5"), 0);
        for id in ["1", "2", "5"] {
            x.saw_event(CHECK, Some(id));
        }
        assert_eq!(x.finished(CHECK, Some((5, 0)), 10), Some(Verdict::Idle));
    }

    #[test]
    fn unordered_ids_turn_checks_off_and_failures_back_off() {
        let mut x = CrossCheck::new(5_000);
        x.started(CHECK, STREAM, Some("5"), 0);
        x.saw_event(CHECK, Some("abc"));
        assert_eq!(x.finished(CHECK, Some((5, 0)), 10), Some(Verdict::Unusable));
        assert_eq!(x.due(Some("5"), 0, 0, 0), None);

        let mut x = CrossCheck::new(5_000);
        x.started(CHECK, STREAM, Some("5"), 0);
        x.failed(CHECK, 3);
        assert_eq!(x.due(Some("5"), 0, 0, 0), Some(10_003));
        assert_eq!(
            x.finished(CHECK, None, 0),
            None,
            "a finished failure is no verdict"
        );
    }

    #[test]
    fn zero_turns_checks_off() {
        assert_eq!(CrossCheck::new(0).due(Some("1"), 0, 0, 0), None);
    }
}
