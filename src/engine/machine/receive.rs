//! What the wire says: opens, statuses, bytes, decoded items, bad frames and closes, turned
//! into decisions. A poll answer's 410 is a reset and its 429 slows the polls; an in-band
//! refusal proves nothing; a probe proves itself before it replaces the session; items of a
//! cross-check are evidence, never delivered.

use super::*;

impl<D: Clone> Engine<D> {
    pub(super) fn on_opened(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.opened_at.is_some() {
            return;
        }
        c.opened_at = Some(now);
        c.last_rx = now;
        let (transport, role) = (c.transport, c.role);
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.opened_at = Some(now);
        }
        if role == Role::Check {
            return;
        }
        if transport != Transport::WebSocket {
            // A 200 (SSE: with `text/event-stream`, checked before `Opened`) proves the token.
            self.auth_proven = true;
        }
        if transport == Transport::WebSocket {
            // A pong proves frames flow both ways at once; servers that answer none are
            // still open (backends users run send nothing on connect).
            let text = self.options.interop.ping_text.clone();
            if let Some(c) = self.conn_mut(id) {
                c.last_tx = now;
            }
            self.cmd(Command::SendPing { conn: id, text });
        }
        // An opened stream (HTTP 101; a 200 `text/event-stream`) or an answered poll is open:
        // no server preamble is needed. Cross-checks tell later whether it is blocked. A
        // probe must still prove itself before it replaces a working session.
        if role == Role::Primary {
            self.establish(id, now);
        }
    }

    pub(super) fn on_http_status(
        &mut self,
        id: ConnId,
        status: u16,
        retry_after: Option<u64>,
        error_code: Option<String>,
        now: Millis,
    ) {
        let Some(c) = self.conn(id) else { return };
        let t = c.transport;
        if t == Transport::Polling
            && status == 410
            && matches!(c.role, Role::Session | Role::Primary)
            && self.delivery.cursor().is_some()
        {
            self.poll_gone(id, now);
            return;
        }
        if t == Transport::Polling && status == 429 && c.role == Role::Session {
            self.poll_slowed(id, retry_after, now);
            return;
        }
        let (code, action, msg) = classify_status(t, status, retry_after, error_code.as_deref());
        let url = self.diag_url(id);
        let mut m = cat(&[&msg, " (", t.as_str(), " ", &url, ")"]);
        if action == Action::Fallback {
            if let Some(next) = self.next_rung_name(id) {
                m.push_str("; trying ");
                m.push_str(next);
            }
        }
        // The request is over; closing it again is harmless and keeps the contract simple.
        self.fail_conn(id, HoldfastError::new(code, m).on(t), action, true, now);
    }

    pub(super) fn on_activity(&mut self, id: ConnId, bytes: usize, now: Millis) {
        let _ = bytes;
        let Some(c) = self.conn_mut(id) else { return };
        c.last_rx = now;
        c.ping_deadline = None;
        c.missed = 0;
        c.spoke = true;
        if c.transport == Transport::Sse && c.opened_at.is_some() && !c.established {
            self.establish(id, now);
        }
    }

    pub(super) fn on_items(&mut self, id: ConnId, mut items: Vec<Item<D>>, now: Millis) {
        if self.crosscheck.is_check(id) {
            for item in &items {
                match item {
                    Item::Event { id: eid, .. }
                    | Item::TooLarge { id: eid, .. }
                    | Item::Malformed { id: eid, .. } => {
                        self.crosscheck.saw_event(id, eid.as_deref())
                    }
                    Item::Hello { cursor, .. } => self.crosscheck.saw_cursor(id, cursor.as_deref()),
                    _ => {}
                }
            }
            return;
        }
        // One pass over the batch for what it proves (a batch can hold a thousand events).
        let (mut answered, mut hello, mut refusal_only, mut usable) = (false, false, true, false);
        for i in &items {
            match i {
                Item::Pong => answered = true,
                Item::Hello { .. } => hello = true,
                _ => {}
            }
            refusal_only &= matches!(i, Item::ServerError { .. });
            usable |= !matches!(i, Item::Malformed { id: None, .. });
        }
        let Some(c) = self.conn_mut(id) else { return };
        c.spoke = true;
        c.last_rx = now;
        c.ping_deadline = None;
        c.missed = 0;
        if c.opened_at.is_none() {
            c.opened_at = Some(now);
        }
        // A poll that returned something is followed at once, except when all it held is a
        // bad entry without an id: the server sends that again for the same cursor, so
        // asking at once would loop; the normal interval applies.
        if c.transport == Transport::Polling && usable {
            c.poll_items = true;
        }
        let (t, rung) = (c.transport, c.rung);
        // A hello, or a pong (sent after every frame before it), proves the whole path.
        let proves = match t {
            Transport::WebSocket => hello || answered,
            Transport::Sse => hello,
            Transport::Polling => false,
        };
        if proves {
            c.proven = true;
            c.pings_off = false;
            if let Some(s) = self.speaks_first.get_mut(rung) {
                *s = true;
            }
        }
        // A server that says hello speaks the protocol, which answers pings.
        if (answered || hello) && t == Transport::WebSocket {
            self.ws_answers_pings = true;
        }
        if !refusal_only {
            self.auth_proven = true;
        }
        let Some(c) = self.conn_mut(id) else { return };
        if !c.established {
            // A refusal is sent in-band before the close (`error` frame, then 4401): it
            // proves nothing about the rung, so it must not win the round.
            if refusal_only {
                for item in items {
                    self.on_item(id, item, now);
                }
                return;
            }
            // A WebSocket probe to a server known to answer pings replaces a working
            // session only once it answers one: a proxy may pass the first frames and then
            // stall. What it sends before is kept and replayed at the switch (repeats are
            // dropped by the cursor), so the handover loses nothing. A server that answers
            // no ping proves the path by any frame.
            let (role, t) = (c.role, c.transport);
            if role == Role::Probe
                && t == Transport::WebSocket
                && self.ws_answers_pings
                && !answered
            {
                if self.probe_buffer.len() + items.len() > PROBE_BUFFER_MAX {
                    let e = HoldfastError::new(
                        ErrorCode::SilentAfterOpen,
                        "the WebSocket probe sent data but never answered a ping",
                    )
                    .on(t);
                    self.fail_conn(id, e, Action::Fallback, true, now);
                } else {
                    self.probe_buffer.extend(items);
                }
                return;
            }
            self.establish(id, now);
            if role == Role::Probe {
                let mut all = core::mem::take(&mut self.probe_buffer);
                all.extend(items);
                items = all;
            }
        }
        if self.session_conn != Some(id) {
            return;
        }
        for item in items {
            if self.session_conn != Some(id) {
                break; // a control item ended the session
            }
            self.on_item(id, item, now);
        }
    }

    pub(super) fn on_item(&mut self, id: ConnId, item: Item<D>, now: Millis) {
        match item {
            Item::Event {
                id: eid,
                kind,
                data,
            } => {
                // Delivered by the old session while this conn was a probe: a repeat, even
                // for opaque ids that fell out of the dedup window.
                if let Some(e) = &eid {
                    if !self.handover.is_empty() && self.handover.remove(e.as_str()) {
                        return;
                    }
                }
                if self.delivery.accept(eid.as_deref()) {
                    if let (Some(e), Some(probe)) = (&eid, self.probe_id()) {
                        if self.handover.len() >= HANDOVER_MAX {
                            // Too busy to hand over safely now: try again later.
                            let err = HoldfastError::new(
                                ErrorCode::OpenTimeout,
                                "the probe did not prove itself before too many events passed",
                            );
                            self.fail_conn(probe, err, Action::Fallback, true, now);
                        } else {
                            self.handover.insert(e.clone());
                        }
                    }
                    if let Some(c) = self.conn_mut(id) {
                        c.delivered = true;
                    }
                    self.delivered_count += 1;
                    self.crosscheck.stream_delivered(self.delivery.baseline());
                    self.app(AppEvent::Message {
                        id: eid,
                        kind,
                        data,
                    });
                }
            }
            Item::Hello {
                cursor,
                heartbeat_ms,
            } => {
                // An empty topic has no newest id: `0` asks for everything from the start,
                // so events published before the next reconnect are not skipped.
                let c = cursor.unwrap_or_else(|| String::from("0"));
                self.delivery.adopt_resume_point(&c);
                self.session_hello = Some(c);
                if let Some(h) = heartbeat_ms {
                    if h > 0 {
                        self.server_heartbeat = Some(h);
                    }
                }
            }
            Item::Heartbeat | Item::Pong => {}
            Item::Reset { reason, oldest } => {
                // A probe subscribed with the cursor of its start; the session may have
                // delivered past the reset point since. Then nothing was lost for us.
                let (since, own) = self
                    .conn(id)
                    .map_or((None, false), |c| (c.since.as_deref(), c.delivered));
                if !own && since != self.delivery.cursor() {
                    let o = oldest.as_deref().and_then(order_key);
                    if o.zip(self.delivery.baseline()).is_some_and(|(o, b)| o <= b) {
                        return;
                    }
                }
                // Opaque ids cannot be ordered: a reset whose oldest kept event the app
                // already has lost nothing (a probe's stale reset, replayed at its takeover).
                if oldest.as_deref().is_some_and(|o| self.delivery.has_seen(o)) {
                    return;
                }
                let cursor = self.delivery.cursor().map(String::from);
                if self
                    .delivery
                    .reset(oldest.as_deref(), self.session_hello.as_deref())
                {
                    let mut m = String::from(
                        "the server no longer holds the events after the cursor: some were lost; reload your state",
                    );
                    if !reason.is_empty() {
                        m.push_str(" (");
                        m.push_str(&reason);
                        m.push(')');
                    }
                    let err = HoldfastError::new(ErrorCode::ServerReset, m)
                        .on(self.ladder[self.session_rung.unwrap_or(0)]);
                    self.last_error = Some(err);
                    self.diagnostics
                        .note(now, cat(&["server reset: ", &reason]));
                    self.app(AppEvent::Gap {
                        reason,
                        cursor,
                        oldest,
                    });
                }
            }
            Item::Ack { id: mid } => self.acked(&mid, now),
            Item::TooLarge {
                id: eid,
                size,
                limit,
            } => {
                if self.delivery.accept(eid.as_deref()) {
                    self.crosscheck.stream_delivered(self.delivery.baseline());
                    let mut msg = FrameError::TooLarge { size, limit }.describe();
                    msg.push_str("; skipped it");
                    let t = self.conn(id).map(|c| c.transport);
                    let mut err = HoldfastError::new(ErrorCode::FrameTooLarge, msg);
                    err.transport = t;
                    self.emit_error(err);
                }
            }
            // A bad entry of a batch: reported in its place; its id, if any, moves the cursor.
            Item::Malformed { id: eid, error } => {
                if self.delivery.accept(eid.as_deref()) {
                    self.crosscheck.stream_delivered(self.delivery.baseline());
                    let mut msg = error.describe();
                    msg.push_str("; skipped it");
                    let mut err = HoldfastError::new(error.code(), msg);
                    err.transport = self.conn(id).map(|c| c.transport);
                    self.emit_error(err);
                }
            }
            Item::ServerError { code, message } => {
                if code == "token_expired" || code == "token_invalid" {
                    self.token = None;
                    if self.options.use_token {
                        // The close that follows decides: a fresh token at once (it had
                        // worked: expired) or `unauthorized`; either way the app hears once.
                        self.diagnostics
                            .note(now, cat(&["the server refused the token: ", &code]));
                        return;
                    }
                }
                let t = self.conn(id).map(|c| c.transport);
                let mut err = HoldfastError::new(
                    ErrorCode::ServerError,
                    cat(&["the server reported ", &code, ": ", &message]),
                );
                err.transport = t;
                self.emit_error(err);
            }
        }
    }

    pub(super) fn on_bad_frame(&mut self, id: ConnId, error: FrameError, now: Millis) {
        let Some(c) = self.conn_mut(id) else { return };
        c.last_rx = now;
        let t = c.transport;
        let established = c.established;
        let mut msg = error.describe();
        let err_code = error.code();
        // A WebSocket frame or an SSE event is self-contained (the SSE parser skips an
        // oversized event to its blank line), so the stream goes on without it.
        // A poll body is the whole batch: a bad one means the rung answers garbage (a proxy
        // error page), so back off instead of asking again at once.
        let fatal = t == Transport::Polling;
        if established && !fatal {
            msg.push_str("; skipped it");
            self.emit_error(HoldfastError::new(err_code, msg).on(t));
            return;
        }
        let action = if established {
            Action::Retry
        } else {
            Action::Fallback
        };
        self.fail_conn(
            id,
            HoldfastError::new(err_code, msg).on(t),
            action,
            true,
            now,
        );
    }

    pub(super) fn on_closed(&mut self, id: ConnId, code: Option<u16>, reason: &str, now: Millis) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        let t = c.transport;
        if c.role == Role::Check {
            self.remove_conn(id, now, None);
            if c.opened_at.is_some() {
                self.check_finished(id, now);
            } else {
                self.check_failed(id, "the request failed", now);
            }
            return;
        }
        if t == Transport::Polling && c.opened_at.is_some() && c.established {
            // A poll request finished.
            self.remove_conn(id, now, None);
            if self.session_conn == Some(id) {
                self.session_conn = None;
                let at = if c.poll_items {
                    now
                } else {
                    now.max(c.started_at + self.options.polling.interval_ms)
                };
                if self.polling_held_while_hidden() {
                    // Resumed by `on_visible`, which asks at once (with the cursor).
                    self.poll_held = true;
                } else if at <= now && self.phase == Phase::Running {
                    if let Some(r) = self.session_rung {
                        let next = self.open_conn(r, Role::Session, now);
                        self.session_conn = Some(next);
                    }
                } else {
                    self.next_poll_at = Some(at);
                }
            }
            return;
        }
        let url = self.diag_url(id);
        let abnormal = matches!(code, None | Some(1005) | Some(1006));
        // "At once": sooner than a quiet server's first heartbeat could be due, and sooner
        // than any idle cut-off worth the name.
        let closed_at_once = c.opened_at.is_some_and(|o| {
            now.saturating_sub(o) < self.options.timeouts.first_frame_ms.max(IDLE_MIN_MS)
        });
        let (err_code, action, mut msg) = if let Some(code) = code.filter(|_| !abnormal) {
            classify_close(code, reason)
        } else if c.opened_at.is_none() {
            match t {
                Transport::WebSocket => (
                    ErrorCode::UpgradeRefused,
                    Action::Fallback,
                    String::from("no WebSocket upgrade (HTTP 101): the server is unreachable, or a proxy in between (nginx without Upgrade headers, IIS without the WebSocket module) refused it"),
                ),
                _ => (
                    ErrorCode::NetworkError,
                    Action::Fallback,
                    String::from("the request failed without an HTTP status: the server is unreachable, or CORS, mixed content or a CSP blocked it"),
                ),
            }
        } else if !c.established || (!c.spoke && c.role == Role::Session && closed_at_once) {
            // Open counts as open, but a stream cut at once before any byte is a proxy that
            // accepts and drops it: the rung does not work here.
            (
                ErrorCode::ClosedByPeer,
                if c.established {
                    Action::StepDown
                } else {
                    Action::Fallback
                },
                String::from("the connection opened, then closed before any data arrived: a proxy is probably interfering"),
            )
        } else {
            (
                ErrorCode::ClosedByPeer,
                Action::Retry,
                String::from("the connection was closed by the server or a proxy"),
            )
        };
        let mut err_code = err_code;
        if c.established && abnormal {
            if let Some(m) = self.idle_cutoff_check(&c, now) {
                err_code = ErrorCode::IdleCutoff;
                msg = m;
            }
        }
        if !reason.is_empty() && code != Some(4429) && code != Some(1013) {
            msg.push_str(": ");
            msg.push_str(reason);
        }
        msg.push_str(" (");
        msg.push_str(t.as_str());
        msg.push(' ');
        msg.push_str(&url);
        msg.push(')');
        if action == Action::Fallback {
            if let Some(next) = self.next_rung_name(id) {
                msg.push_str("; trying ");
                msg.push_str(next);
            }
        }
        self.fail_conn(
            id,
            HoldfastError::new(err_code, msg).on(t),
            action,
            false,
            now,
        );
    }

    /// HTTP 429 on a poll of a working session: the server asks for fewer requests, not for
    /// another connection. The session stays open and the next poll waits `Retry-After`
    /// (at least [`POLL_SLOWED_MIN_MS`], plus up to a tenth of jitter).
    pub(super) fn poll_slowed(&mut self, id: ConnId, retry_after: Option<u64>, now: Millis) {
        self.remove_conn(id, now, Some(CLOSE_NORMAL));
        if self.session_conn == Some(id) {
            self.session_conn = None;
        }
        let wait = retry_after
            .unwrap_or(0)
            .clamp(POLL_SLOWED_MIN_MS, MAX_WAIT_MS);
        let wait = wait + self.rng.below_incl(wait / 10);
        self.next_poll_at = Some(now + wait);
        self.diagnostics.note(
            now,
            cat(&[
                "the server asked for fewer polls (HTTP 429): the session stays open, next poll in ",
                &secs(wait),
            ]),
        );
    }

    /// HTTP 410 Gone on a poll: the backend no longer holds what follows the cursor. That is
    /// a reset: one gap, then polls without a cursor.
    pub(super) fn poll_gone(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        self.remove_conn(id, now, Some(CLOSE_NORMAL));
        let cursor = self.delivery.cursor().map(String::from);
        if self.delivery.reset(None, None) {
            let err = HoldfastError::new(
                ErrorCode::ServerReset,
                "the server no longer holds the events after the cursor (HTTP 410 Gone): some were lost; reload your state",
            )
            .on(Transport::Polling);
            self.last_error = Some(err);
            self.diagnostics
                .note(now, String::from("server reset: HTTP 410 Gone on a poll"));
            self.app(AppEvent::Gap {
                reason: String::from("gone"),
                cursor,
                oldest: None,
            });
        }
        match c.role {
            Role::Session if self.phase == Phase::Running => {
                let next = self.open_conn(c.rung, Role::Session, now);
                self.session_conn = Some(next);
            }
            Role::Primary => {
                self.open_conn(c.rung, Role::Primary, now);
            }
            _ => {}
        }
    }
}
