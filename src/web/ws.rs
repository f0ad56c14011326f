//! WebSocket adapter. Text frames (and binary frames holding UTF-8 JSON) become
//! [`Input::Items`]; `onopen`/`onclose` become [`Input::Opened`]/[`Input::Closed`] with the
//! close code. Browsers hide the HTTP status of a refused upgrade (the socket just closes
//! with 1006 before opening), so then the adapter probes: a plain `GET` of the same URL
//! shows what answered (404: no such endpoint; 400/426: something dropped the Upgrade
//! headers; 401/403: the token), reported as [`Input::HttpStatus`] for the engine to
//! classify. When the probe learns nothing (no answer, a 2xx page) the close is reported
//! as is. Dropping the adapter removes its handlers, closes the socket and aborts a probe.
//!
//! WebKit (Safari, every iOS browser) fails a socket it refuses early (a blocked port such
//! as 9) with an `error` event and no `close` at all: the socket just turns CLOSED. So an
//! `error` arms a short check, and a socket found CLOSED with no close event seen is
//! reported as the close (1006) every other browser fires; a close is reported only once.

use super::http::{self, Task};
use super::json::Decoder;
use super::Sink;
use crate::engine::{ConnId, FrameError, Input};
use gloo_timers::callback::Timeout;
use js_sys::{ArrayBuffer, JsString, Uint8Array};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

pub struct WsConn {
    ws: WebSocket,
    _on_open: Closure<dyn Fn()>,
    _on_message: Closure<dyn Fn(MessageEvent)>,
    _on_close: Closure<dyn Fn(CloseEvent)>,
    _on_error: Closure<dyn Fn()>,
    _probe: Rc<RefCell<Option<Task>>>,
    /// The check armed by `error` for a close event that may never come (WebKit).
    _no_close_check: Rc<RefCell<Option<Timeout>>>,
}

/// How long after `error` a socket already CLOSED may still fire its close event. Browsers
/// that fire one do so at once (Chromium and Firefox in the same task, WebKit in the next).
const CLOSE_AFTER_ERROR_MS: u32 = 100;

impl WsConn {
    /// Opens `url`. `Err` holds why the browser refused to even try (a bad URL, a blocked
    /// port, `ws:` from an `https:` page).
    pub fn open(conn: ConnId, url: &str, dec: Rc<Decoder>, sink: Sink) -> Result<WsConn, String> {
        let ws = WebSocket::new(url).map_err(|e| super::js_error_message(&e))?;
        ws.set_binary_type(BinaryType::Arraybuffer);

        let opened = Rc::new(Cell::new(false));
        let probe: Rc<RefCell<Option<Task>>> = Rc::default();
        let s = sink.clone();
        let o = opened.clone();
        let on_open = Closure::<dyn Fn()>::new(move || {
            o.set(true);
            s(Input::Opened { conn })
        });
        let s = sink.clone();
        let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            let input = if let Some(text) = data.dyn_ref::<JsString>() {
                dec.js_text(conn, text)
            } else if let Some(buf) = data.dyn_ref::<ArrayBuffer>() {
                if buf.byte_length() as usize > dec.max_bytes {
                    dec.too_large(conn, buf.byte_length() as usize)
                } else {
                    match String::from_utf8(Uint8Array::new(buf).to_vec()) {
                        Ok(text) => dec.text(conn, &text),
                        Err(_) => Input::BadFrame {
                            conn,
                            error: FrameError::Binary,
                        },
                    }
                }
            } else {
                Input::BadFrame {
                    conn,
                    error: FrameError::Binary,
                }
            };
            s(input)
        });
        let p = probe.clone();
        let probe_url = http_url(url);
        let ended = Rc::new(Cell::new(false));
        let closed_with = Rc::new(move |code: u16, reason: String| {
            if ended.replace(true) {
                return;
            }
            let closed = Input::Closed {
                conn,
                code: Some(code),
                reason,
            };
            match (&probe_url, opened.get() || code != 1006) {
                (Some(u), false) => *p.borrow_mut() = Some(probe_upgrade(u, closed, sink.clone())),
                _ => sink(closed),
            }
        });
        let c = closed_with.clone();
        let on_close =
            Closure::<dyn Fn(CloseEvent)>::new(move |e: CloseEvent| c(e.code(), e.reason()));
        // `error` carries nothing more than the close that follows it, except in WebKit,
        // where no close may follow (see the module's documentation).
        let no_close_check: Rc<RefCell<Option<Timeout>>> = Rc::default();
        let check = no_close_check.clone();
        let socket = ws.clone();
        let on_error = Closure::<dyn Fn()>::new(move || {
            let (c, socket) = (closed_with.clone(), socket.clone());
            *check.borrow_mut() = Some(Timeout::new(CLOSE_AFTER_ERROR_MS, move || {
                if socket.ready_state() == WebSocket::CLOSED {
                    c(1006, String::new());
                }
            }));
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(WsConn {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
            _probe: probe,
            _no_close_check: no_close_check,
        })
    }

    /// Sends a text frame; false when the socket is not open (the engine will see the
    /// close and resend from its outbox).
    pub fn send(&self, text: &str) -> bool {
        self.ws.ready_state() == WebSocket::OPEN && self.ws.send_with_str(text).is_ok()
    }

    /// Closes with `code` (browsers only allow 1000 and 3000–4999 from a page).
    pub fn close(&self, code: u16) {
        let code = if code == 1000 || (3000..=4999).contains(&code) {
            code
        } else {
            1000
        };
        let _ = self.ws.close_with_code(code);
    }
}

/// The `http(s)` URL of a `ws(s)` URL.
fn http_url(ws: &str) -> Option<String> {
    let rest = ws.strip_prefix("ws")?;
    Some(String::from("http") + rest)
}

/// `GET`s the endpoint of a socket that closed without opening and reports the status
/// (`closed` when the probe learns nothing).
fn probe_upgrade(url: &str, closed: Input<JsValue>, sink: Sink) -> Task {
    let (task, response) = http::fetch("GET", url, None, &[], None);
    let alive = task.alive();
    wasm_bindgen_futures::spawn_local(async move {
        let input = match (response.await, &closed) {
            (Ok(r), Input::Closed { conn, .. }) if !r.ok() => Input::HttpStatus {
                conn: *conn,
                status: r.status(),
                retry_after_ms: http::retry_after_ms(&r),
                error_code: http::error_code(&r).await,
            },
            _ => closed,
        };
        if alive.get() {
            sink(input);
        }
    });
    task
}

impl Drop for WsConn {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        if self.ws.ready_state() <= WebSocket::OPEN {
            self.close(1000);
        }
    }
}
