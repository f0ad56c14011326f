//! Cross-checks, the engine side of [`crate::engine::crosscheck`]: when to ask the polling
//! rung about a quiet stream, and what each verdict does (idle: a note; suspect: a deadline;
//! blocked: one rung lower at once; a baseline: adopted as the cursor).

use super::*;

impl<D: Clone> Engine<D> {
    /// Before the first stream of a client with no cursor subscribes, learn where the
    /// server is: one poll without a cursor (`wait=0`), answered before the stream is even
    /// asked for, so its newest id cannot be past the stream's start. Adopted as the
    /// cursor, it lets a stream that turns out blocked step down without losing what was
    /// published since it opened (a baseline learned after the stream opened could be past
    /// its start). Once per client; the round waits at most `timeouts.raceMs` (at least
    /// 1 s) for it, and goes on without it when the poll fails.
    pub(super) fn baseline_first(&mut self, now: Millis) -> bool {
        if self.baseline_asked || self.delivery.cursor().is_some() {
            return false;
        }
        let Some(&first) = self.ladder.get(self.round_next) else {
            return false;
        };
        if first == Transport::Polling || self.check_interval(first) == 0 {
            return false;
        }
        self.baseline_asked = true;
        self.open_check(ConnId(0), now);
        if !self.crosscheck.in_flight() {
            return false;
        }
        self.baseline_wait = Some(now + self.options.timeouts.race_ms.max(1_000));
        true
    }

    /// The round waited for the first baseline: open its first rung now.
    pub(super) fn baseline_done(&mut self, now: Millis) {
        if self.baseline_wait.take().is_some() && self.round_running {
            self.open_next(now);
        }
    }

    /// The cross-check interval a new session on `t` starts with: `timeouts.firstFrameMs`
    /// (WebSocket) or `timeouts.sseFirstBytesMs` (SSE); 0 (no checks) for polling, or when
    /// the ladder has no polling rung to ask.
    pub(super) fn check_interval(&self, t: Transport) -> u64 {
        if !self.ladder.contains(&Transport::Polling) {
            return 0;
        }
        match t {
            Transport::WebSocket => self.options.timeouts.first_frame_ms,
            Transport::Sse => self.options.timeouts.sse_first_bytes_ms,
            Transport::Polling => 0,
        }
    }

    /// Asks the polling rung, without holding, what follows the cursor of stream `target`.
    pub(super) fn open_check(&mut self, target: ConnId, now: Millis) {
        let Some(rung) = self.ladder.iter().position(|t| *t == Transport::Polling) else {
            return;
        };
        let since = self
            .crosscheck
            .since(self.delivery.cursor())
            .map(String::from);
        if since.as_deref().is_some_and(|s| order_key(s).is_none()) {
            self.crosscheck.turn_off();
            self.diagnostics.note(
                now,
                String::from("cross-checks off: the cursor is not an integer or <ms>-<seq> id, so a poll's answer cannot be compared with the stream's"),
            );
            return;
        }
        let id = self.open_conn(rung, Role::Check, now);
        self.crosscheck.started(id, target, since.as_deref(), now);
    }

    pub(super) fn check_failed(&mut self, id: ConnId, why: &str, now: Millis) {
        if !self.crosscheck.is_check(id) {
            return;
        }
        self.crosscheck.failed(id, now);
        if self.baseline_wait.is_some() {
            // The first baseline failed before any stream: no session's checks to slow.
            let first = self.ladder[self.round_next.min(self.ladder.len() - 1)];
            self.crosscheck.new_session(self.check_interval(first));
        }
        self.baseline_done(now);
        let next = secs(self.crosscheck.interval_ms());
        self.diagnostics.note(
            now,
            cat(&[
                "cross-check poll failed (",
                why,
                "): no verdict; next check after ",
                &next,
                " of silence",
            ]),
        );
    }

    pub(super) fn check_finished(&mut self, id: ConnId, now: Millis) {
        let Some(verdict) = self.crosscheck.finished(id, self.delivery.baseline(), now) else {
            return;
        };
        let before_stream = self.baseline_wait.is_some();
        let t = self.session_rung.map_or("?", |r| self.ladder[r].as_str());
        match verdict {
            Verdict::Idle if !self.idle_noted => {
                self.idle_noted = true;
                self.diagnostics.note(
                    now,
                    cat(&[
                        "cross-check: a poll with the stream's cursor found nothing it had not delivered: the ",
                        t,
                        " stream is idle, not blocked",
                    ]),
                );
            }
            Verdict::Suspect { count, newest } => {
                let grace = self
                    .crosscheck
                    .suspect()
                    .map_or(0, |s| s.deadline.saturating_sub(now));
                self.diagnostics.note(
                    now,
                    cat(&[
                        "cross-check: a poll with the stream's cursor found ",
                        &u64_to_string(count as u64),
                        " events up to ",
                        &newest,
                        " that ",
                        t,
                        " has not delivered; it has ",
                        &secs(grace),
                        " to deliver them",
                    ]),
                );
            }
            Verdict::Baseline => {
                // As with a hello's cursor: a reconnect (or a step-down) resumes from here.
                if let Some(b) = self.crosscheck.since(None).map(String::from) {
                    self.delivery.adopt_resume_point(&b);
                }
                if !before_stream {
                    self.diagnostics.note(
                        now,
                        String::from("cross-check: the server's position was learned after the stream opened: a step-down resumes from there, and what was published in between could be missed if the stream is blocked"),
                    );
                }
            }
            Verdict::Unusable => self.diagnostics.note(
                now,
                String::from("cross-checks off: the polled events' ids are not integers or <ms>-<seq>, so they cannot be compared with the stream's"),
            ),
            Verdict::Idle => {}
        }
        self.baseline_done(now);
    }

    /// A cross-check saw events the session stream still has not delivered: it is blocked.
    pub(super) fn suspect_blocked(&mut self, now: Millis) {
        let Some(s) = self.crosscheck.take_suspect() else {
            return;
        };
        let Some(c) = self.conn(s.target).filter(|c| c.role == Role::Session) else {
            return;
        };
        let t = c.transport;
        let waited = secs(now.saturating_sub(s.checked_at));
        let head = cat(&[
            "a poll with the same cursor returned ",
            &u64_to_string(s.count as u64),
            " events (up to ",
            &s.newest,
            ") that the ",
            t.as_str(),
            " stream had not delivered ",
            &waited,
            " later: ",
        ]);
        let (code, why) = match t {
            Transport::WebSocket => (
                ErrorCode::SilentAfterOpen,
                "a proxy passes the upgrade but not the data",
            ),
            _ => (
                ErrorCode::SseBuffered,
                "a proxy or compression is buffering the stream (nginx: proxy_buffering off or X-Accel-Buffering: no; IIS: disable response buffering)",
            ),
        };
        let e = HoldfastError::new(code, cat(&[&head, why])).on(t);
        self.fail_conn(s.target, e, Action::StepDown, true, now);
    }
}
