//! SSE over `fetch` with a streamed body, parsed by the engine's WHATWG SSE parser. Unlike
//! `EventSource` this sends `Authorization` and `Last-Event-ID` headers, reports the HTTP
//! status of a refusal, and reports raw byte arrival ([`Input::Activity`]) so the engine
//! can tell a buffering proxy (headers, then nothing) from a quiet stream. A 200 whose
//! `Content-Type` is not `text/event-stream` is reported as [`Input::BadFrame`]
//! ([`crate::engine::FrameError::NotEventStream`]) instead of [`Input::Opened`].
//! Dropping the adapter aborts the request; the reading task then stops silently.

use super::http::{self, Task};
use super::json::Decoder;
use super::Sink;
use crate::engine::decode::check_event_stream;
use crate::engine::sse::{SseEvent, SseParser};
use crate::engine::{ConnId, Input};
use js_sys::{Reflect, Uint8Array};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::ReadableStreamDefaultReader;

pub struct SseConn {
    _task: Task,
}

impl SseConn {
    pub fn open(
        conn: ConnId,
        url: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
        dec: Rc<Decoder>,
        sink: Sink,
    ) -> SseConn {
        let mut headers = vec![("Accept", "text/event-stream")];
        if let Some(id) = last_event_id {
            headers.push(("Last-Event-ID", id));
        }
        let (task, response) = http::fetch("GET", url, token, &headers, None);
        let alive = task.alive();
        spawn_local(async move {
            let closed = |reason: String| Input::Closed {
                conn,
                code: None,
                reason,
            };
            // An event stream is only ever a 200 (a 204 tells EventSource to stop).
            let Some(resp) =
                http::accepted_response(conn, response, &alive, &sink, |s| s == 200).await
            else {
                return;
            };
            // WHATWG: anything but `text/event-stream` fails the connection (a `text/html`
            // 200 is a login page or a captive portal, not events). The engine decides what
            // follows (the next rung); the task is dropped with the connection.
            let content_type = resp.headers().get("content-type").ok().flatten();
            if let Err(error) = check_event_stream(content_type.as_deref()) {
                return sink(Input::BadFrame { conn, error });
            }
            let Some(reader) = resp.body().and_then(|b| {
                b.get_reader()
                    .dyn_into::<ReadableStreamDefaultReader>()
                    .ok()
            }) else {
                sink(closed(String::from("the SSE response has no body")));
                return;
            };
            sink(Input::Opened { conn });
            let mut parser = SseParser::new(dec.max_bytes);
            let mut events: Vec<SseEvent> = Vec::new();
            loop {
                let chunk = JsFuture::from(reader.read()).await;
                // After a drop the abort already errored the stream; nothing to cancel.
                if !alive.get() {
                    return;
                }
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => return sink(closed(super::js_error_message(&e))),
                };
                let done = Reflect::get(&chunk, &super::js_str("done"))
                    .map(|d| d.is_truthy())
                    .unwrap_or(true);
                if done {
                    return sink(closed(String::from("the server ended the event stream")));
                }
                let Ok(bytes) = Reflect::get(&chunk, &super::js_str("value"))
                    .and_then(|v| v.dyn_into::<Uint8Array>())
                else {
                    continue;
                };
                let bytes = bytes.to_vec();
                sink(Input::Activity {
                    conn,
                    bytes: bytes.len(),
                });
                parser.feed(&bytes, &mut events);
                for input in dec.sse_inputs(conn, std::mem::take(&mut events)) {
                    if !alive.get() {
                        return;
                    }
                    sink(input);
                }
                if !alive.get() {
                    return;
                }
            }
        });
        SseConn { _task: task }
    }
}
