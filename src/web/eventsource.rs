//! The browser's `EventSource` as an alternative SSE adapter (option `eventSource`). It
//! cannot send headers (the token goes in the query) nor report an HTTP status, and it only
//! delivers named events someone listens for: it listens to unnamed (`message`) events,
//! the protocol's control events, and the event types the app lists. Its own automatic
//! reconnection is defeated: the first `error` is reported as a close and the engine
//! decides what happens next; when the browser failed the connection before it opened (a
//! wrong status or content type), as [`FrameError::NotEventStream`], an `http_error`.
//! Dropping the adapter closes the source.

use super::json::Decoder;
use super::Sink;
use crate::engine::sse::SseEvent;
use crate::engine::{ConnId, FrameError, Input};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Event, EventSource, MessageEvent};

const CONTROL: [&str; 6] = ["message", "hello", "heartbeat", "pong", "reset", "ack"];

type Listener = (String, Closure<dyn Fn(Event)>);

pub struct EsConn {
    es: EventSource,
    listeners: Vec<Listener>,
}

impl EsConn {
    pub fn open(
        conn: ConnId,
        url: &str,
        types: &[String],
        dec: Rc<Decoder>,
        sink: Sink,
    ) -> Result<EsConn, String> {
        let es = EventSource::new(url).map_err(|e| super::js_error_message(&e))?;
        let mut me = EsConn {
            es,
            listeners: Vec::new(),
        };
        let opened = Rc::new(Cell::new(false));
        let (s, o) = (sink.clone(), opened.clone());
        me.on("open", move |_| {
            o.set(true);
            s(Input::Opened { conn })
        });
        let s = sink.clone();
        let d = dec.clone();
        // The server's `event: error` frames are MessageEvents; connection errors are not.
        me.on("error", move |e| {
            // Closed before it opened: the browser failed the connection, which WHATWG does
            // on a status other than 200 or a type other than `text/event-stream` (and
            // browsers on a CORS refusal), not on a network error (it would retry those).
            let failed = e
                .target()
                .and_then(|t| t.dyn_into::<EventSource>().ok())
                .is_some_and(|es| es.ready_state() == EventSource::CLOSED);
            match e.dyn_into::<MessageEvent>() {
                Ok(m) => {
                    for input in d.sse_inputs(conn, vec![to_sse(&m, "error")]) {
                        s(input)
                    }
                }
                Err(_) if failed && !opened.get() => s(Input::BadFrame {
                    conn,
                    error: FrameError::NotEventStream { content_type: None },
                }),
                Err(_) => s(Input::Closed {
                    conn,
                    code: None,
                    reason: String::from("EventSource error (no status is exposed)"),
                }),
            }
        });
        for name in CONTROL
            .iter()
            .map(|s| s.to_string())
            .chain(types.iter().cloned())
        {
            let s = sink.clone();
            let d = dec.clone();
            let n = name.clone();
            me.on(&name, move |e| {
                if let Ok(m) = e.dyn_into::<MessageEvent>() {
                    s(Input::Activity { conn, bytes: 1 });
                    for input in d.sse_inputs(conn, vec![to_sse(&m, &n)]) {
                        s(input)
                    }
                }
            });
        }
        Ok(me)
    }

    fn on(&mut self, name: &str, f: impl Fn(Event) + 'static) {
        let c = Closure::<dyn Fn(Event)>::new(f);
        if self
            .es
            .add_event_listener_with_callback(name, c.as_ref().unchecked_ref())
            .is_ok()
        {
            self.listeners.push((name.to_string(), c));
        }
    }
}

fn to_sse(m: &MessageEvent, name: &str) -> SseEvent {
    let id = m.last_event_id();
    SseEvent {
        id: if id.is_empty() {
            None
        } else {
            Some(id.clone())
        },
        last_event_id: id,
        event: name.to_string(),
        data: m.data().as_string().unwrap_or_default(),
        // The browser applies no size limit of ours to what it parsed.
        too_large: None,
    }
}

impl Drop for EsConn {
    fn drop(&mut self) {
        for (name, c) in self.listeners.drain(..) {
            let _ = self
                .es
                .remove_event_listener_with_callback(&name, c.as_ref().unchecked_ref());
        }
        self.es.close();
    }
}
