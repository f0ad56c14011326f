//! Polling adapter: one `GET` per engine connection. The server may hold it (long-poll);
//! the engine decides when to poll again (short-poll interval, pause while hidden).
//! Reports [`Input::Opened`] on 200, the batch as [`Input::Items`], then
//! [`Input::Closed`] when the request finished; non-2xx as [`Input::HttpStatus`].

use super::http::{self, Task};
use super::json::Decoder;
use super::Sink;
use crate::engine::{ConnId, Input};
use std::rc::Rc;
use wasm_bindgen_futures::spawn_local;

pub struct PollConn {
    _task: Task,
}

impl PollConn {
    pub fn open(
        conn: ConnId,
        url: &str,
        token: Option<&str>,
        dec: Rc<Decoder>,
        sink: Sink,
    ) -> PollConn {
        let (task, response) =
            http::fetch("GET", url, token, &[("Accept", "application/json")], None);
        let alive = task.alive();
        spawn_local(async move {
            let closed = |reason: String| Input::Closed {
                conn,
                code: None,
                reason,
            };
            let Some(resp) =
                http::accepted_response(conn, response, &alive, &sink, |s| (200..300).contains(&s))
                    .await
            else {
                return;
            };
            let body = http::text(&resp).await;
            if !alive.get() {
                return;
            }
            sink(Input::Opened { conn });
            if !alive.get() {
                return;
            }
            match body {
                // 204 or an empty body: nothing new.
                Ok(text) if text.trim().is_empty() => {}
                Ok(text) => sink(dec.poll_body(conn, &text)),
                Err(e) => return sink(closed(e)),
            }
            if alive.get() {
                sink(closed(String::from("poll finished")));
            }
        });
        PollConn { _task: task }
    }
}
