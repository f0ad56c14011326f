//! Every deadline in one list. [`Engine::poll_timeout`] and [`Input::Timeout`] read the same
//! [`Engine::deadlines`], so a deadline that was reported is always consumed; `handle_due`
//! dispatches each [`Due`] to the sub-machine that owns it (each handler is documented "When
//! …" where it lives).

use super::*;

impl<D: Clone> Engine<D> {
    pub(super) fn deadlines(&self, mut f: impl FnMut(Millis, Due)) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(at) = self.retry_at {
            f(at, Due::Retry);
        }
        if let Some(at) = self.healthy_at {
            f(at, Due::Healthy);
        }
        if let Some(at) = self.next_poll_at {
            f(at, Due::NextPoll);
        }
        if let Some(at) = self.probe_at {
            f(at, Due::Probe);
        }
        if let Some(at) = self.post_retry_at {
            f(at, Due::PostRetry);
        }
        if let Some(s) = self.crosscheck.suspect() {
            f(s.deadline, Due::Suspect);
        }
        if let Some(at) = self.baseline_wait {
            f(at, Due::BaselineWait);
        }
        let t = &self.options.timeouts;
        for c in &self.conns {
            if c.transport == Transport::Polling {
                if t.open_ms > 0 {
                    f(
                        c.started_at + c.poll_wait + t.open_ms,
                        Due::OpenTimeout(c.id),
                    );
                }
            } else if c.opened_at.is_none() && t.open_ms > 0 {
                f(c.started_at + t.open_ms, Due::OpenTimeout(c.id));
            }
            if !c.established {
                if c.role == Role::Primary
                    && !c.raced
                    && t.race_ms > 0
                    && self.round_next < self.ladder.len()
                {
                    f(c.started_at + t.race_ms, Due::Race(c.id));
                }
                if let Some(o) = c.opened_at {
                    match c.transport {
                        Transport::WebSocket if t.first_frame_ms > 0 => {
                            f(o + t.first_frame_ms, Due::FirstFrame(c.id))
                        }
                        Transport::Sse if t.sse_first_bytes_ms > 0 => {
                            f(o + t.sse_first_bytes_ms, Due::SseBytes(c.id))
                        }
                        _ => {}
                    }
                }
            } else if c.role == Role::Session {
                match c.transport {
                    Transport::WebSocket if !c.pings_off => match c.ping_deadline {
                        Some(d) => f(d, Due::Pong(c.id)),
                        None => f(
                            c.last_rx.max(c.last_tx) + self.ping_interval,
                            Due::Ping(c.id),
                        ),
                    },
                    // SSE, and a WebSocket whose server answers no ping: the server's own
                    // frames and heartbeats are the only sign of life.
                    Transport::WebSocket | Transport::Sse => {
                        f(c.last_rx + self.silence_ms(), Due::Silence(c.id))
                    }
                    Transport::Polling => {}
                }
                if c.transport != Transport::Polling {
                    // Fast path: this rung's server spoke at once before; silence now is proof.
                    if let (false, Some(true), Some(o)) =
                        (c.spoke, self.speaks_first.get(c.rung).copied(), c.opened_at)
                    {
                        match c.transport {
                            Transport::WebSocket if t.first_frame_ms > 0 => {
                                f(o + t.first_frame_ms, Due::FirstFrame(c.id))
                            }
                            _ if t.sse_first_bytes_ms > 0 => {
                                f(o + t.sse_first_bytes_ms, Due::SseBytes(c.id))
                            }
                            _ => {}
                        }
                    }
                    if let (false, Some(o)) = (c.proven, c.opened_at) {
                        let handshake = o.saturating_sub(c.started_at);
                        let cursor = self.delivery.cursor();
                        if let Some(at) = self.crosscheck.due(cursor, c.last_rx, o, handshake) {
                            f(at, Due::CrossCheck(c.id));
                        }
                    }
                }
            }
        }
    }

    pub(super) fn handle_due(&mut self, d: Due, now: Millis) {
        match d {
            Due::Retry => {
                self.retry_at = None;
                self.start_round(now);
            }
            Due::Healthy => {
                self.healthy_at = None;
                self.attempt = 0;
            }
            Due::NextPoll => self.next_poll_due(now),
            Due::Probe => {
                self.probe_at = None;
                self.start_probe(now);
            }
            Due::PostRetry => {
                self.post_retry_at = None;
                self.flush_outbox(now);
            }
            Due::OpenTimeout(id) => self.open_timed_out(id, now),
            Due::Race(id) => self.race_next(id, now),
            Due::FirstFrame(id) | Due::SseBytes(id) => self.first_frame_due(id, now),
            // Still the session's stream? (A deadline handled just before may have ended it.)
            Due::CrossCheck(id) if self.session_conn == Some(id) => self.open_check(id, now),
            Due::CrossCheck(_) => {}
            Due::Suspect => self.suspect_blocked(now),
            Due::BaselineWait => self.baseline_done(now),
            Due::Ping(id) => self.ping_due(id, now),
            Due::Pong(id) if !self.ws_answers_pings => self.pings_unanswered(id, now),
            Due::Pong(id) => self.pong_missed(id, now),
            Due::Silence(id) => self.silence_due(id, now),
        }
    }
}
