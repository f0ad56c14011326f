//! Liveness: is the session's stream alive?
//!
//! Contract. A WebSocket whose server answers pings is pinged after `heartbeat.intervalMs`
//! of quiet and dropped after `heartbeat.maxMissed` unanswered ones; a server that never
//! answered one is not pinged again, and like an SSE stream it is judged by its own frames:
//! silence for `heartbeat.serverSilenceMs` (or twice the hello's `heartbeatMs` plus the
//! pong timeout) ends it. The same idle time killing two connections is an idle cut-off
//! (adaptive heartbeat). Page events (online, visible, a clock jump after sleep) verify
//! the session at once. A rung whose server spoke at once before and is silent now is
//! blocked without a cross-check ([`super::checks`] covers the rest).

use super::*;

impl<D: Clone> Engine<D> {
    pub(super) fn on_online(&mut self, now: Millis) {
        self.online = true;
        match self.phase {
            Phase::Offline => {
                self.phase = Phase::Running;
                self.diagnostics.note(
                    now,
                    String::from("the browser is online again: reconnecting now"),
                );
                self.start_round(now);
            }
            Phase::Running if self.retry_at.is_some() => {
                self.retry_at = None;
                self.start_round(now);
            }
            // The network changed under a live session (a phone switching networks): the
            // old socket may be dead without knowing it.
            Phase::Running => self.verify_session(false, now),
            _ => {}
        }
    }

    pub(super) fn on_offline(&mut self, now: Millis) {
        self.online = false;
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Offline;
        self.close_all(now);
        self.retry_at = None;
        let err = HoldfastError::new(
            ErrorCode::Offline,
            "the browser reports no network: paused until it is back online",
        );
        self.emit_error(err);
    }

    pub(super) fn on_visible(&mut self, now: Millis) {
        self.visible = true;
        if std::mem::take(&mut self.poll_held) && self.phase == Phase::Running {
            if let (Some(r), None) = (self.session_rung, self.session_conn) {
                let id = self.open_conn(r, Role::Session, now);
                self.session_conn = Some(id);
            }
        }
        self.verify_session(false, now);
    }

    pub(super) fn on_clock_jump(&mut self, late: u64, now: Millis) {
        self.diagnostics.note(
            now,
            cat(&[
                "a timer fired ",
                &secs(late),
                " late: the machine probably slept; checking the connection",
            ]),
        );
        self.verify_session(true, now);
    }

    /// The session may be dead without anyone having told us (page was hidden, machine
    /// slept): check it now instead of waiting for the next heartbeat.
    pub(super) fn verify_session(&mut self, slept: bool, now: Millis) {
        let Some(id) = self.session_conn else {
            if slept {
                if let Some(at) = self.next_poll_at {
                    self.next_poll_at = Some(at.min(now));
                }
            }
            return;
        };
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        match c.transport {
            Transport::WebSocket if self.ws_answers_pings => {
                let text = self.options.interop.ping_text.clone();
                let timeout = self.options.heartbeat.pong_timeout_ms;
                let max = self.options.heartbeat.max_missed;
                if let Some(c) = self.conn_mut(id) {
                    c.ping_deadline = Some(now + timeout);
                    // One missed answer is enough now.
                    c.missed = max.saturating_sub(1);
                    c.last_tx = now;
                }
                self.cmd(Command::SendPing { conn: id, text });
            }
            // Without answered pings, only the server's own silence can tell.
            Transport::WebSocket | Transport::Sse => {
                if slept || now >= c.last_rx + self.silence_ms() {
                    let e = HoldfastError::new(
                        ErrorCode::HeartbeatTimeout,
                        "no data from the server since the page was suspended: reconnecting",
                    )
                    .on(c.transport);
                    self.fail_conn(id, e, Action::Now, true, now);
                }
            }
            Transport::Polling => {
                if slept {
                    // The request probably died with the network; ask again now.
                    self.remove_conn(id, now, Some(CLOSE_NORMAL));
                    self.session_conn = None;
                    self.next_poll_at = Some(now);
                }
            }
        }
    }

    pub(super) fn silence_ms(&self) -> u64 {
        match self.server_heartbeat {
            Some(h) => h
                .min(MAX_WAIT_MS)
                .saturating_mul(2)
                .saturating_add(self.options.heartbeat.pong_timeout_ms),
            None => self.options.heartbeat.server_silence_ms,
        }
    }

    /// When an opened probe, or a session whose server spoke at once before, has been silent
    /// for the first-frame time.
    pub(super) fn first_frame_due(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        if c.role == Role::Probe {
            self.judge_probe(id, now);
            return;
        }
        // A session whose server spoke at once on earlier connections, silent now.
        let (code, ms, text) = match c.transport {
            Transport::WebSocket => (
                ErrorCode::SilentAfterOpen,
                self.options.timeouts.first_frame_ms,
                "the WebSocket opened (HTTP 101) but no frame arrived within ",
            ),
            _ => (
                ErrorCode::SseBuffered,
                self.options.timeouts.sse_first_bytes_ms,
                "the SSE response started but no bytes followed within ",
            ),
        };
        let why = match c.transport {
            Transport::WebSocket => ", although this server sent a frame at once on earlier connections: a proxy passes the upgrade but not the data",
            _ => ", although this server sent bytes at once on earlier connections: a proxy or compression is buffering the stream (nginx: X-Accel-Buffering: no; IIS: disable response buffering)",
        };
        let e = HoldfastError::new(code, cat(&[text, &secs(ms), why])).on(c.transport);
        self.fail_conn(id, e, Action::StepDown, true, now);
    }

    /// When the WebSocket has been quiet for the ping interval: ping it.
    pub(super) fn ping_due(&mut self, id: ConnId, now: Millis) {
        if !self.ws_answers_pings {
            // The ping sent at open went unanswered (or a frame came first and hid it): a
            // server that answers no ping gets none, or our pings would keep restarting its
            // own heartbeat timer (a FastAPI `wait_for(receive_text(), 30)` loop).
            self.pings_unanswered(id, now);
            return;
        }
        let text = self.options.interop.ping_text.clone();
        let timeout = self.options.heartbeat.pong_timeout_ms;
        if let Some(c) = self.conn_mut(id) {
            c.ping_deadline = Some(now + timeout);
            c.last_tx = now;
        }
        self.cmd(Command::SendPing { conn: id, text });
    }

    /// When a ping went unanswered on a server that never answered one: stop pinging it.
    pub(super) fn pings_unanswered(&mut self, id: ConnId, now: Millis) {
        // This server has never answered a ping: a missing pong proves nothing.
        if let Some(c) = self.conn_mut(id) {
            c.pings_off = true;
            c.ping_deadline = None;
        }
        let text = self.options.interop.ping_text.clone();
        self.diagnostics.note(
            now,
            cat(&[
                "the WebSocket server does not answer the ping ",
                &text,
                ": liveness now rests on its own frames and heartbeats (set interop.pingText if it answers another text)",
            ]),
        );
    }

    /// When a ping went unanswered: ping again, or give up after `heartbeat.maxMissed`.
    pub(super) fn pong_missed(&mut self, id: ConnId, now: Millis) {
        let h = &self.options.heartbeat;
        let (max, timeout) = (h.max_missed, h.pong_timeout_ms);
        let text = self.options.interop.ping_text.clone();
        let Some(c) = self.conn_mut(id) else { return };
        c.missed += 1;
        if c.missed >= max {
            let n = c.missed;
            let e = HoldfastError::new(
                ErrorCode::HeartbeatTimeout,
                cat(&[
                    "no answer to ",
                    &u64_to_string(n as u64),
                    " pings in a row: the connection is dead; reconnecting",
                ]),
            )
            .on(Transport::WebSocket);
            self.fail_conn(id, e, Action::Retry, true, now);
        } else {
            c.ping_deadline = Some(now + timeout);
            c.last_tx = now;
            self.cmd(Command::SendPing { conn: id, text });
        }
    }

    /// When a stream judged by the server's own frames has been silent too long.
    pub(super) fn silence_due(&mut self, id: ConnId, now: Millis) {
        let ms = self.silence_ms();
        let t = self.conn(id).map_or(Transport::Sse, |c| c.transport);
        let e = HoldfastError::new(
            ErrorCode::HeartbeatTimeout,
            cat(&[
                "no data or heartbeat from the server for ",
                &secs(ms),
                ": the stream is dead or buffered; reconnecting",
            ]),
        )
        .on(t);
        self.fail_conn(id, e, Action::Retry, true, now);
    }

    /// Records an idle death; returns the idle cut-off message when the same idle time
    /// killed two connections in a row (and adapts the ping interval).
    pub(super) fn idle_cutoff_check(&mut self, c: &Conn, now: Millis) -> Option<String> {
        let idle = now.saturating_sub(c.last_rx.max(c.last_tx));
        if idle < IDLE_MIN_MS {
            return None;
        }
        self.idle_deaths.push(idle);
        if self.idle_deaths.len() > 3 {
            self.idle_deaths.remove(0);
        }
        let n = self.idle_deaths.len();
        if n < 2 {
            return None;
        }
        let (a, b) = (self.idle_deaths[n - 2], self.idle_deaths[n - 1]);
        let tol = (a.max(b) / 10).max(2_000);
        if a.abs_diff(b) > tol {
            return None;
        }
        let cut = a.min(b);
        let mut m = cat(&[
            "connections die after about ",
            &secs(cut),
            " without traffic: a proxy or load balancer has an idle timeout (Cloudflare: 100 s)",
        ]);
        // Adapted traffic keeps a third of the cut-off as margin.
        let new = (cut * 2 / 3).max(1_000);
        if c.transport == Transport::WebSocket
            && self.options.heartbeat.adaptive
            && cut <= self.ping_interval + self.options.heartbeat.pong_timeout_ms
        {
            if new < self.ping_interval {
                let note = cat(&[
                    "adaptive heartbeat: ping interval shortened from ",
                    &secs(self.ping_interval),
                    " to ",
                    &secs(new),
                    ", below the idle cut-off observed at ",
                    &secs(cut),
                ]);
                self.diagnostics.note(now, note);
                self.ping_interval = new;
                self.idle_deaths.clear();
                m.push_str("; pinging more often now");
            }
        } else if c.transport != Transport::WebSocket {
            if self.options.heartbeat.adaptive && new < self.idle_cap.unwrap_or(u64::MAX) {
                let note = cat(&[
                    "adaptive heartbeat: asking SSE servers for heartbeats every ",
                    &secs(new),
                    " and holding polls at most that long, below the idle cut-off observed at ",
                    &secs(cut),
                ]);
                self.diagnostics.note(now, note);
                self.idle_cap = Some(new);
                self.idle_deaths.clear();
                m.push_str("; asking the server for heartbeats more often now");
            } else {
                m.push_str("; make the server send heartbeats more often than that");
            }
        }
        Some(m)
    }
}
