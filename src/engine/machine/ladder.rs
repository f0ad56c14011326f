//! Rounds, races and sessions: the ladder.
//!
//! Contract. A *round* walks down the ladder from `start_rung`; a rung not open within
//! `timeouts.raceMs` gets the next one started beside it, and the first to open wins and
//! becomes the *session* (an opened stream needs no server preamble). A failure is handled
//! by [`Action`]: the next rung (`Fallback`), one rung lower at once (`StepDown`), a new
//! token (`Auth`), the server's wait (`RateLimited`), or the same rung after the backoff
//! (`Retry`). Sessions that open and then go dead twice in a row step the next round down
//! (`note_stall`). URLs carry the cursor as `since`.

use super::*;

impl<D: Clone> Engine<D> {
    /// `polling.pause_when_hidden`: a hidden page asks for no new poll (the one in flight
    /// still completes); events wait on the server and arrive in one batch on return.
    pub(super) fn polling_held_while_hidden(&self) -> bool {
        self.options.polling.pause_when_hidden && !self.visible
    }

    /// When to poll again: the gap after an empty poll is over (or a 429's wait).
    pub(super) fn next_poll_due(&mut self, now: Millis) {
        self.next_poll_at = None;
        if self.polling_held_while_hidden() {
            self.poll_held = true;
        } else if let Some(r) = self.session_rung {
            if self.session_conn.is_none() {
                let id = self.open_conn(r, Role::Session, now);
                self.session_conn = Some(id);
            }
        }
    }

    /// When a conn has not opened (a poll: not answered) within `timeouts.openMs`.
    pub(super) fn open_timed_out(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn(id) else { return };
        let t = c.transport;
        let established = c.established;
        let limit = self.options.timeouts.open_ms + c.poll_wait;
        let msg = if t == Transport::Polling {
            cat(&["the poll request got no answer within ", &secs(limit)])
        } else {
            cat(&["the connection did not open within ", &secs(limit)])
        };
        let action = if established {
            Action::Retry
        } else {
            Action::Fallback
        };
        let e = HoldfastError::new(ErrorCode::OpenTimeout, self.with_next(msg, id)).on(t);
        self.fail_conn(id, e, action, true, now);
    }

    /// When a rung of the round has not opened within `timeouts.raceMs`: start the next beside it.
    pub(super) fn race_next(&mut self, id: ConnId, now: Millis) {
        if let Some(c) = self.conn_mut(id) {
            c.raced = true;
            let t = c.transport;
            if self.round_next < self.ladder.len() {
                let next = self.ladder[self.round_next];
                self.diagnostics.note(
                    now,
                    cat(&[
                        t.as_str(),
                        " is slow to deliver: starting ",
                        next.as_str(),
                        " beside it",
                    ]),
                );
                self.open_next(now);
            }
        }
    }

    /// Where a blocked rung steps down to: the next one, or from the last rung of a
    /// reordered ladder, the polling rung (the cross-checks that proved it blocked came
    /// from there, so it works).
    pub(super) fn rung_below(&self, rung: usize) -> Option<usize> {
        if rung + 1 < self.ladder.len() {
            return Some(rung + 1);
        }
        self.ladder
            .iter()
            .position(|t| *t == Transport::Polling)
            .filter(|&p| p != rung)
    }

    pub(super) fn start_round(&mut self, now: Millis) {
        if self.phase != Phase::Running || self.session_rung.is_some() {
            return;
        }
        self.retry_at = None;
        if self.options.use_token && self.token.is_none() {
            self.request_token();
            return;
        }
        // Anything left from an earlier round is abandoned.
        let leftovers: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.role == Role::Primary)
            .map(|c| c.id)
            .collect();
        for id in leftovers {
            self.remove_conn(id, now, Some(CLOSE_NORMAL));
        }
        self.round_next = self.start_rung;
        self.round_running = true;
        self.baseline_wait = None;
        if self.baseline_first(now) {
            return;
        }
        self.open_next(now);
    }

    pub(super) fn open_next(&mut self, now: Millis) -> bool {
        if self.round_next >= self.ladder.len() {
            return false;
        }
        let r = self.round_next;
        self.round_next += 1;
        self.open_conn(r, Role::Primary, now);
        true
    }

    pub(super) fn rung_url(&self, t: Transport, wait: Option<u64>, with_token: bool) -> String {
        self.rung_url_since(t, wait, with_token, self.delivery.cursor())
    }

    pub(super) fn rung_url_since(
        &self,
        t: Transport,
        wait: Option<u64>,
        with_token: bool,
        since: Option<&str>,
    ) -> String {
        let Some(base) = self.endpoints.get(t) else {
            return String::new();
        };
        let i = &self.options.interop;
        let mut params: Vec<(&str, &str)> = Vec::with_capacity(4 + self.options.params.len());
        if let Some(topic) = &self.options.topic {
            params.push((&i.topic_param, topic));
        }
        for (k, v) in &self.options.params {
            params.push((k, v));
        }
        if let Some(c) = since {
            params.push((&i.since_param, c));
        }
        let wait_s;
        if let Some(w) = wait {
            wait_s = u64_to_string(w);
            params.push((&i.wait_param, &wait_s));
        }
        let heartbeat_s;
        if let (Transport::Sse, Some(cap)) = (t, self.idle_cap) {
            heartbeat_s = u64_to_string(cap);
            params.push((&i.heartbeat_param, &heartbeat_s));
        }
        if with_token && t == Transport::WebSocket {
            if let Some(tok) = &self.token {
                params.push((&i.token_param, tok));
            }
        }
        base.to_string_with(&params)
    }

    pub(super) fn open_conn(&mut self, rung: usize, role: Role, now: Millis) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn = self.next_conn.wrapping_add(1).max(1);
        let t = self.ladder[rung];
        let wait = if t == Transport::Polling {
            // The first request of a poll session returns at once: it proves the rung. So
            // does a cross-check: it asks what is there now.
            Some(if role == Role::Session {
                let wait = self.options.polling.wait_ms.unwrap_or(0);
                self.idle_cap.map_or(wait, |cap| wait.min(cap))
            } else {
                0
            })
        } else {
            None
        };
        // A check always says `wait=0`: a long-poll server would otherwise hold it, and a
        // short-poll one ignores the parameter.
        let wait_param = if self.options.polling.wait_ms.is_some() || role == Role::Check {
            wait
        } else {
            None
        };
        let since = if role == Role::Check {
            self.crosscheck
                .since(self.delivery.cursor())
                .map(String::from)
        } else {
            self.delivery.cursor().map(String::from)
        };
        let url = self.rung_url_since(t, wait_param, true, since.as_deref());
        let diag_url = self.rung_url_since(t, wait_param, false, since.as_deref());
        let token = if t == Transport::WebSocket {
            None
        } else {
            self.token.clone().map(Secret::new)
        };
        let last_event_id = if t == Transport::Sse {
            self.delivery.cursor().map(String::from)
        } else {
            None
        };
        self.conns.push(Conn {
            id,
            transport: t,
            rung,
            role,
            started_at: now,
            opened_at: None,
            // A poll request inside a session needs no proof that the rung works.
            established: role == Role::Session || role == Role::Check,
            last_rx: now,
            last_tx: now,
            ping_deadline: None,
            missed: 0,
            raced: false,
            poll_items: false,
            poll_wait: wait.unwrap_or(0),
            since,
            delivered: false,
            spoke: false,
            proven: false,
            pings_off: false,
            delivered_before: self.delivered_count,
        });
        if role != Role::Session && role != Role::Check {
            self.diagnostics.push_attempt(Attempt {
                conn: id,
                transport: t,
                probe: role == Role::Probe,
                url: diag_url,
                started_at: now,
                opened_at: None,
                first_data_at: None,
                ended_at: None,
                failure: None,
            });
        }
        self.cmd(Command::Open {
            conn: id,
            transport: t,
            url,
            token,
            last_event_id,
        });
        id
    }

    /// A conn delivered its first data: it wins its round, or its probe takes over.
    pub(super) fn establish(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn_mut(id) else { return };
        c.established = true;
        let (role, rung, t) = (c.role, c.rung, c.transport);
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.first_data_at = Some(now);
        }
        if role == Role::Session {
            return;
        }
        // Everything else that could deliver goes: never two rungs at once.
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.id != id)
            .map(|c| c.id)
            .collect();
        for o in others {
            self.remove_conn(o, now, Some(CLOSE_NORMAL));
        }
        let moved_up = role == Role::Probe;
        if let Some(c) = self.conn_mut(id) {
            c.role = Role::Session;
        }
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.ended_at = None;
        }
        let previous = self.session_rung.map(|r| self.ladder[r]);
        self.session_rung = Some(rung);
        self.session_conn = Some(id);
        self.session_hello = None;
        // A heartbeat interval is learned per session: another rung may be another server.
        self.server_heartbeat = None;
        let interval = self.check_interval(t);
        self.crosscheck.new_session(interval);
        self.idle_noted = false;
        self.next_poll_at = None;
        self.round_running = false;
        self.retry_at = None;
        self.start_rung = rung;
        self.ever_connected = true;
        self.healthy_at = Some(now + self.options.backoff.healthy_after_ms);
        if moved_up {
            self.diagnostics.note(
                now,
                cat(&[
                    "moved up from ",
                    previous.map_or("?", |p| p.as_str()),
                    " to ",
                    t.as_str(),
                ]),
            );
            // After a stall demotion the probe backoff is kept, or a rung that opens and
            // then stalls would be re-probed every `initial_ms`.
            let recent = self
                .demoted_at
                .is_some_and(|t| now.saturating_sub(t) < self.options.probe.max_ms);
            if !recent {
                self.probe_delay = self.options.probe.initial_ms;
            }
            self.probe_target = 0;
        } else if rung > 0 {
            let failed: Vec<&str> = self.ladder[..rung].iter().map(|t| t.as_str()).collect();
            self.diagnostics.note(
                now,
                cat(&[
                    "using ",
                    t.as_str(),
                    " because ",
                    &join(&failed, ", "),
                    " failed",
                ]),
            );
        }
        self.probe_at = None;
        if rung > 0 && self.options.probe.enabled {
            self.probe_at = Some(now + self.probe_delay);
            if self.probe_target >= rung {
                self.probe_target = 0;
            }
        }
        self.remember(rung, now);
        // Messages that were on a previous conn go again on this one.
        for p in self.outbox.iter_mut() {
            if p.state != SendState::Posting {
                p.state = SendState::Unsent;
            }
        }
        self.flush_outbox(now);
    }

    /// Ends conn `id` for `err`, then decides what comes next. `close`: the engine ends it
    /// (so the web layer must be told); otherwise it already ended.
    pub(super) fn fail_conn(
        &mut self,
        id: ConnId,
        err: HoldfastError,
        action: Action,
        close: bool,
        now: Millis,
    ) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        if c.role == Role::Check {
            self.remove_conn(id, now, if close { Some(CLOSE_NORMAL) } else { None });
            self.check_failed(id, &err.message, now);
            return;
        }
        if action == Action::Auth && self.quiet_token_refresh(&c, close, now) {
            return;
        }
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.failure = Some(err.clone());
        } else {
            // A poll request inside a session is logged only when it fails.
            let url = self.rung_url(c.transport, None, false);
            self.diagnostics.push_attempt(Attempt {
                conn: id,
                transport: c.transport,
                probe: false,
                url,
                started_at: c.started_at,
                opened_at: c.opened_at,
                first_data_at: None,
                ended_at: Some(now),
                failure: Some(err.clone()),
            });
        }
        self.remove_conn(id, now, if close { Some(CLOSE_NORMAL) } else { None });
        match c.role {
            Role::Probe => {
                let mut n = String::from("probe of ");
                n.push_str(c.transport.as_str());
                n.push_str(" failed: ");
                n.push_str(err.code.as_str());
                self.diagnostics.note(now, n);
                if action == Action::Auth {
                    self.token = None;
                }
                self.probe_failed(now);
            }
            Role::Session => self.session_lost(c, err, action, now),
            Role::Primary => self.primary_failed(err, action, now),
            Role::Check => {} // handled above
        }
    }

    pub(super) fn primary_failed(&mut self, err: HoldfastError, action: Action, now: Millis) {
        self.emit_error(err.clone());
        match action {
            Action::Auth | Action::RateLimited(_) => {
                if action == Action::Auth {
                    self.token = None;
                }
                let ids: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|c| c.role == Role::Primary)
                    .map(|c| c.id)
                    .collect();
                for id in ids {
                    self.remove_conn(id, now, Some(CLOSE_NORMAL));
                }
                let floor = match action {
                    Action::RateLimited(ms) => Some(ms),
                    _ => None,
                };
                self.round_failed(err, floor, now);
            }
            _ => {
                if self.conns.iter().any(|c| c.role == Role::Primary) {
                    return; // a racer is still going
                }
                if !self.open_next(now) {
                    self.round_failed(err, None, now);
                }
            }
        }
    }

    pub(super) fn round_failed(&mut self, err: HoldfastError, floor: Option<u64>, now: Millis) {
        self.round_running = false;
        let delay = self.backoff_delay(false, floor);
        self.attempt += 1;
        if let Some(max) = self.options.backoff.max_attempts {
            if self.attempt >= max {
                let m = cat(&[
                    "gave up after ",
                    &u64_to_string(self.attempt as u64),
                    " failed attempts (option maxAttempts); last error: ",
                    &err.message,
                ]);
                self.close_client(Some(HoldfastError::new(ErrorCode::GaveUp, m)), now);
                return;
            }
        }
        self.retry_at = Some(now + delay);
        if self.options.use_token && self.token.is_none() {
            self.request_token();
        }
    }

    /// The session on `c` is over: everything else goes too (probes, a check), messages
    /// sent on it wait for the next one, and the next round starts from its rung.
    pub(super) fn end_session(&mut self, c: &Conn, now: Millis) {
        self.handover.clear();
        self.session_rung = None;
        self.session_conn = None;
        self.next_poll_at = None;
        self.probe_at = None;
        self.healthy_at = None;
        let rest: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in rest {
            self.remove_conn(id, now, Some(CLOSE_NORMAL));
        }
        for p in self.outbox.iter_mut() {
            if p.state == SendState::OnConn(c.id) {
                p.state = SendState::Unsent;
            }
        }
        self.start_rung = c.rung;
    }

    pub(super) fn session_lost(
        &mut self,
        c: Conn,
        err: HoldfastError,
        action: Action,
        now: Millis,
    ) {
        self.emit_error(err.clone());
        self.end_session(&c, now);
        self.note_stall(&c, &err, action, now);
        match action {
            Action::Now => self.start_round(now),
            Action::StepDown if self.rung_below(c.rung).is_some() => {
                let below = self.rung_below(c.rung).unwrap_or(c.rung);
                self.start_rung = below;
                self.demoted_at = Some(now);
                self.probe_delay = self.options.probe.initial_ms;
                let note = cat(&[
                    "stepping down from ",
                    c.transport.as_str(),
                    " to ",
                    self.ladder[below].as_str(),
                    ": ",
                    err.code.as_str(),
                ]);
                self.diagnostics.note(now, note);
                self.start_round(now);
            }
            Action::Auth => {
                self.token = None;
                self.round_failed(err, None, now);
            }
            Action::RateLimited(ms) => self.round_failed(err, Some(ms), now),
            Action::Fallback | Action::Retry | Action::StepDown => {
                let delay = self.backoff_delay(true, None);
                self.attempt += 1;
                self.retry_at = Some(now + delay);
            }
        }
    }

    /// A rung whose sessions open, then go dead (heartbeat timeouts) twice in a row passes
    /// the first frame but not the stream (a proxy that buffers after the first bytes):
    /// the next round starts one rung lower, and probes try it again later with backoff.
    pub(super) fn note_stall(
        &mut self,
        c: &Conn,
        err: &HoldfastError,
        action: Action,
        now: Millis,
    ) {
        if err.code != ErrorCode::HeartbeatTimeout || action != Action::Retry {
            self.stalls = 0;
            return;
        }
        if self.stall_rung == c.rung {
            self.stalls += 1;
        } else {
            self.stall_rung = c.rung;
            self.stalls = 1;
        }
        // A rung already stepped down from recently gets no second chance.
        let recently = self
            .demoted_at
            .is_some_and(|t| now.saturating_sub(t) < self.options.probe.max_ms);
        let needed = if recently && self.stall_rung == c.rung {
            1
        } else {
            2
        };
        if self.stalls >= needed && c.rung + 1 < self.ladder.len() {
            self.stalls = 0;
            self.start_rung = c.rung + 1;
            self.demoted_at = Some(now);
            self.probe_delay = (self.probe_delay.saturating_mul(2)).min(self.options.probe.max_ms);
            let note = cat(&[
                c.transport.as_str(),
                " went silent twice after opening (heartbeat timeouts): stepping down to ",
                self.ladder[c.rung + 1].as_str(),
            ]);
            self.diagnostics.note(now, note);
        }
    }

    pub(super) fn diag_url(&self, id: ConnId) -> String {
        self.diagnostics
            .attempts
            .iter()
            .rev()
            .find(|a| a.conn == id)
            .map(|a| a.url.clone())
            .or_else(|| {
                self.conn(id)
                    .map(|c| self.rung_url(c.transport, None, false))
            })
            .unwrap_or_default()
    }

    pub(super) fn next_rung_name(&self, id: ConnId) -> Option<&'static str> {
        let c = self.conn(id)?;
        if c.role != Role::Primary
            || self
                .conns
                .iter()
                .any(|o| o.id != id && o.role == Role::Primary)
        {
            return None;
        }
        self.ladder.get(self.round_next).map(|t| t.as_str())
    }

    pub(super) fn with_next(&self, mut msg: String, id: ConnId) -> String {
        if let Some(n) = self.next_rung_name(id) {
            msg.push_str("; trying ");
            msg.push_str(n);
        }
        msg
    }
}
