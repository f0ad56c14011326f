//! The upstream outbox.
//!
//! Contract. Messages get a client id and wait, in order, until acknowledged: on a
//! WebSocket session they go on the socket (re-sent on the next one if it drops); on SSE or
//! polling they are POSTed one at a time, retried with backoff (a 401 asks for a new token,
//! other 4xx fail the message with `send_failed`). Closing the client fails what is left.

use super::*;

impl<D: Clone> Engine<D> {
    pub(super) fn on_send_result(
        &mut self,
        msg_id: MessageId,
        result: Result<(), HttpFailure>,
        now: Millis,
    ) {
        let Some(pos) = self.outbox.iter().position(|p| p.id == msg_id) else {
            return;
        };
        if self.outbox[pos].state != SendState::Posting {
            return;
        }
        match result {
            Ok(()) => self.acked(msg_id.as_str(), now),
            Err(f) => {
                self.outbox[pos].state = SendState::Unsent;
                match f.status {
                    Some(401) => {
                        self.token = None;
                        self.post_attempt += 1;
                        let d = self.post_backoff();
                        self.post_retry_at = Some(now + d);
                        self.request_token();
                    }
                    Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                        let Some(p) = self.outbox.remove(pos) else {
                            return;
                        };
                        let mut m = String::from("the server refused the message (HTTP ");
                        m.push_str(&u64_to_string(s as u64));
                        if let Some(c) = &f.error_code {
                            m.push_str(", ");
                            m.push_str(c);
                        }
                        m.push_str("): it will not be retried");
                        self.app(AppEvent::SendFailed {
                            msg_id: p.id,
                            error: HoldfastError::new(ErrorCode::SendFailed, m),
                        });
                        self.flush_outbox(now);
                    }
                    _ => {
                        self.post_attempt += 1;
                        let d = self.post_backoff();
                        let d = f.retry_after_ms.map_or(d, |r| r.min(MAX_WAIT_MS).max(d));
                        self.post_retry_at = Some(now + d);
                    }
                }
                // Now on a WebSocket? It goes there at once.
                self.flush_outbox(now);
            }
        }
    }

    pub(super) fn acked(&mut self, mid: &str, now: Millis) {
        let pos = self.outbox.iter().position(|p| p.id.as_str() == mid);
        if let Some(p) = pos.and_then(|i| self.outbox.remove(i)) {
            self.post_attempt = 0;
            self.app(AppEvent::Acked { msg_id: p.id });
            self.flush_outbox(now);
        }
    }

    pub(super) fn flush_outbox(&mut self, now: Millis) {
        let _ = now;
        if self.phase != Phase::Running {
            return;
        }
        let Some(rung) = self.session_rung else {
            return;
        };
        match self.ladder[rung] {
            Transport::WebSocket => {
                let Some(conn) = self.session_conn else {
                    return;
                };
                // A POST still in flight from an HTTP rung goes first: order is kept.
                if self.outbox.iter().any(|p| p.state == SendState::Posting) {
                    return;
                }
                let mut cmds = Vec::new();
                for p in self.outbox.iter_mut() {
                    if p.state == SendState::Unsent {
                        p.state = SendState::OnConn(conn);
                        cmds.push(Command::SendUpstream {
                            conn,
                            msg_id: p.id.clone(),
                            data: p.data.clone(),
                        });
                    }
                }
                for c in cmds {
                    self.cmd(c);
                }
            }
            _ => {
                // One POST at a time keeps the order.
                if self.post_retry_at.is_some()
                    || self.outbox.iter().any(|p| p.state == SendState::Posting)
                {
                    return;
                }
                if self.options.use_token && self.token.is_none() {
                    if !self.outbox.is_empty() {
                        self.request_token();
                    }
                    return;
                }
                let Some(url) = &self.endpoints.send else {
                    return;
                };
                let i = &self.options.interop;
                let mut params: Vec<(&str, &str)> = Vec::new();
                if let Some(topic) = &self.options.topic {
                    params.push((&i.topic_param, topic));
                }
                for (k, v) in &self.options.params {
                    params.push((k, v));
                }
                let url = url.to_string_with(&params);
                let token = self.token.clone().map(Secret::new);
                if let Some(p) = self
                    .outbox
                    .iter_mut()
                    .find(|p| p.state != SendState::Posting)
                {
                    p.state = SendState::Posting;
                    let c = Command::Post {
                        msg_id: p.id.clone(),
                        url,
                        token,
                        data: p.data.clone(),
                    };
                    self.cmd(c);
                }
            }
        }
    }
}
