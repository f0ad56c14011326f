//! Tokens. The provider is asked before connecting and after a refusal. A token that had
//! worked and is refused (401, close 4401/4402 after data arrived with it) expired: a fresh
//! one is asked for and used at once, with no error and no backoff (a poll session stays
//! open). `unauthorized` reaches the app only when a fresh token is refused too.

use super::*;

impl<D: Clone> Engine<D> {
    pub(super) fn on_token(&mut self, result: Result<String, String>, now: Millis) {
        if !self.token_pending {
            return;
        }
        self.token_pending = false;
        match result {
            Ok(t) => {
                self.token = Some(t);
                if self.phase == Phase::Running
                    && self.session_rung.is_none()
                    && !self.round_running
                    && self.retry_at.is_none()
                {
                    self.start_round(now);
                } else if let (Phase::Running, Some(r), None, None, false) = (
                    self.phase,
                    self.session_rung,
                    self.session_conn,
                    self.next_poll_at,
                    self.poll_held,
                ) {
                    // A poll session whose token expired: ask again now.
                    if self.ladder[r] == Transport::Polling {
                        let id = self.open_conn(r, Role::Session, now);
                        self.session_conn = Some(id);
                    }
                }
                self.flush_outbox(now);
            }
            Err(why) => {
                let err = HoldfastError::new(
                    ErrorCode::TokenProvider,
                    cat(&["the token provider failed: ", &why]),
                );
                self.emit_error(err.clone());
                if self.session_rung.is_some() {
                    // Only the outbox was waiting for it: ask again later.
                    self.post_attempt += 1;
                    let d = self.post_backoff();
                    self.post_retry_at = Some(now + d);
                } else if !self.round_running && self.retry_at.is_none() {
                    self.round_failed(err, None, now);
                }
            }
        }
    }

    pub(super) fn request_token(&mut self) {
        if !self.token_pending {
            self.token_pending = true;
            self.cmd(Command::RequestToken);
        }
    }

    /// A token that worked was rejected (401, close 4401/4402 after data arrived with it):
    /// it expired. Ask the provider for a fresh one and go on at once, with no error and no
    /// backoff; a poll session stays open meanwhile. `unauthorized` is reported only when
    /// the fresh token fails too (then `auth_proven` is false and this returns `false`).
    pub(super) fn quiet_token_refresh(&mut self, c: &Conn, close: bool, now: Millis) -> bool {
        if !self.options.use_token || !self.auth_proven || c.role == Role::Probe {
            return false;
        }
        self.auth_proven = false;
        self.token = None;
        self.diagnostics.note(
            now,
            cat(&[
                "the server rejected the token on ",
                c.transport.as_str(),
                " after it had worked (expired?): asking the token provider for a fresh one and going on at once",
            ]),
        );
        self.remove_conn(c.id, now, if close { Some(CLOSE_NORMAL) } else { None });
        match c.role {
            // The poll session goes on: its next request waits for the token.
            Role::Session if c.transport == Transport::Polling => self.session_conn = None,
            Role::Session => {
                self.end_session(c, now);
                self.round_running = false;
            }
            _ => {
                let rest: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|c| c.role == Role::Primary)
                    .map(|c| c.id)
                    .collect();
                for id in rest {
                    self.remove_conn(id, now, Some(CLOSE_NORMAL));
                }
                self.round_running = false;
            }
        }
        self.request_token();
        true
    }
}
