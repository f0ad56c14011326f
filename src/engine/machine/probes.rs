//! Probes: moving back up.
//!
//! Contract. While the session is on a lower rung, a higher one is opened in the
//! background after `probe.initialMs` (doubling after each failure, up to `probe.maxMs`). A
//! probe takes over when it delivers (a WebSocket to a server known to answer pings: when
//! it answers one), or when it stayed quiet for its first-frame time while the session was
//! quiet too; it has failed when the session delivered events it did not.

use super::*;

impl<D: Clone> Engine<D> {
    pub(super) fn start_probe(&mut self, now: Millis) {
        let Some(rung) = self.session_rung else {
            return;
        };
        if rung == 0 || self.conns.iter().any(|c| c.role == Role::Probe) {
            return;
        }
        if self.options.use_token && self.token.is_none() {
            self.probe_at = Some(now + self.probe_delay);
            return;
        }
        let target = self.probe_target.min(rung - 1);
        self.probe_buffer.clear();
        self.handover.clear();
        self.open_conn(target, Role::Probe, now);
    }

    pub(super) fn probe_failed(&mut self, now: Millis) {
        let Some(rung) = self.session_rung else {
            return;
        };
        self.probe_target += 1;
        if self.probe_target >= rung {
            self.probe_target = 0;
            self.probe_delay = (self.probe_delay.saturating_mul(2)).min(self.options.probe.max_ms);
        }
        self.probe_at = Some(now + self.probe_delay);
    }

    /// A probe opened and has been quiet for its first-frame deadline. It is blocked when
    /// the session delivered events it did not (they went to both), or when its server
    /// spoke at once on earlier connections; otherwise both were quiet and it takes over
    /// (cross-checks then watch it like any quiet stream).
    pub(super) fn judge_probe(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        let session = self.session_rung.map_or("?", |r| self.ladder[r].as_str());
        let owed = self.delivered_count.saturating_sub(c.delivered_before);
        let known = self.speaks_first.get(c.rung) == Some(&true);
        if owed == 0 && !known {
            self.diagnostics.note(
                now,
                cat(&[
                    "the ",
                    c.transport.as_str(),
                    " probe stayed open and quiet while ",
                    session,
                    " was quiet too: moving up; cross-checks watch it",
                ]),
            );
            self.establish(id, now);
            return;
        }
        let why = if owed > 0 {
            cat(&[
                " while ",
                session,
                " delivered ",
                &u64_to_string(owed),
                " events: the path is still blocked",
            ])
        } else {
            String::from(" although this server sent data at once on earlier connections: the path is still blocked")
        };
        let (code, what) = match c.transport {
            Transport::WebSocket => (
                ErrorCode::SilentAfterOpen,
                "the WebSocket probe opened (HTTP 101) but delivered nothing",
            ),
            _ => (
                ErrorCode::SseBuffered,
                "the SSE probe started but delivered nothing",
            ),
        };
        let e = HoldfastError::new(code, cat(&[what, &why])).on(c.transport);
        self.fail_conn(id, e, Action::Fallback, true, now);
    }

    pub(super) fn probe_id(&self) -> Option<ConnId> {
        self.conns
            .iter()
            .find(|c| c.role == Role::Probe)
            .map(|c| c.id)
    }
}
