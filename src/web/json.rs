//! The [`Decoder`] the adapters share to turn frames into engine inputs, with payloads as
//! JavaScript values (the engine's [`JsonValue`] for `JsValue` is in `crate::js_value`).

use crate::engine::decode::{decode_frame, decode_sse_event_parsed, decode_text};
use crate::engine::{ConnId, FrameError, Input, Interop, Item, JsonValue, SseEvent};
use js_sys::{Array, JsString};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen]
extern "C" {
    // JSON.parse on a JS string, without copying it through wasm memory.
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    fn parse_js(text: &JsString) -> Result<JsValue, JsValue>;
}

/// Frame decoding settings shared by every adapter of one client.
pub struct Decoder {
    pub interop: Interop,
    pub max_bytes: usize,
}

impl Decoder {
    /// A text frame or body already in Rust.
    pub fn text(&self, conn: ConnId, text: &str) -> Input<JsValue> {
        self.input(conn, decode_text(text, &self.interop, self.max_bytes))
    }

    /// A WebSocket text frame as a JS string: short frames (a plain-text `pong`) go through
    /// [`decode_text`]; the rest is parsed by `JSON.parse` directly.
    pub fn js_text(&self, conn: ConnId, text: &JsString) -> Input<JsValue> {
        let len = text.length() as usize;
        if len <= 32 {
            return self.text(conn, &String::from(text));
        }
        let parsed = parse_js(text).ok();
        if len > self.max_bytes {
            return self.over_limit(conn, parsed, len);
        }
        let decoded = match parsed {
            Some(v) => decode_frame(&v, &self.interop),
            None => Err(FrameError::InvalidJson),
        };
        self.input(conn, decoded)
    }

    /// A poll body: within the limit it decodes like a frame; over it, see
    /// [`Decoder::over_limit`] (a batch may well be larger than one event may be).
    pub fn poll_body(&self, conn: ConnId, text: &str) -> Input<JsValue> {
        if text.len() <= self.max_bytes {
            return self.text(conn, text);
        }
        self.over_limit(conn, JsValue::parse_json(text), text.len())
    }

    /// A frame or body over the limit is still decoded, and the limit then holds per event:
    /// an event whose data is over it becomes [`Item::TooLarge`] with its id (reported, and
    /// the cursor moves past it, so a reconnect does not fetch it again) and the rest are
    /// delivered. Measuring happens only on this rare path. Text that is not JSON is one
    /// `TooLarge` error.
    fn over_limit(&self, conn: ConnId, parsed: Option<JsValue>, size: usize) -> Input<JsValue> {
        let Some(v) = parsed else {
            return self.too_large(conn, size);
        };
        let decoded = decode_frame(&v, &self.interop);
        self.input(
            conn,
            decoded.map(|items| items.into_iter().map(|i| self.limit(i)).collect()),
        )
    }

    fn limit(&self, item: Item<JsValue>) -> Item<JsValue> {
        let Item::Event { id, kind, data } = item else {
            return item;
        };
        let size = js_sys::JSON::stringify(&data).map_or(0, |s| s.length() as usize);
        if size > self.max_bytes {
            Item::TooLarge {
                id,
                size,
                limit: self.max_bytes,
            }
        } else {
            Item::Event { id, kind, data }
        }
    }

    pub fn too_large(&self, conn: ConnId, size: usize) -> Input<JsValue> {
        Input::BadFrame {
            conn,
            error: FrameError::TooLarge {
                size,
                limit: self.max_bytes,
            },
        }
    }

    /// Decoded SSE events as inputs, in order: runs of good events (and of events the
    /// parser skipped as too large, as [`Item::TooLarge`]) as one [`Input::Items`], an
    /// undecodable event as [`Input::BadFrame`] (never dropped silently).
    pub fn sse_inputs(&self, conn: ConnId, events: Vec<SseEvent>) -> Vec<Input<JsValue>> {
        let texts = data_as_js(&events);
        let mut out = Vec::new();
        let mut items = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let parsed = match &texts {
                Some(texts) => parse_js(texts.get(i as u32).unchecked_ref::<JsString>()).ok(),
                None => JsValue::parse_json(&e.data),
            };
            match decode_sse_event_parsed(e, parsed, &self.interop) {
                Ok(item) => items.push(item),
                Err(error) => {
                    if !items.is_empty() {
                        out.push(Input::Items {
                            conn,
                            items: std::mem::take(&mut items),
                        });
                    }
                    out.push(Input::BadFrame { conn, error });
                }
            }
        }
        if !items.is_empty() {
            out.push(Input::Items { conn, items });
        }
        out
    }

    fn input(&self, conn: ConnId, r: Result<Vec<Item<JsValue>>, FrameError>) -> Input<JsValue> {
        match r {
            Ok(items) => Input::Items { conn, items },
            Err(error) => Input::BadFrame { conn, error },
        }
    }
}

/// The data of a chunk's events as JS strings, created from one string for the whole chunk
/// (`None` for a single event, or when a data holds the separator itself): creating a JS
/// string out of wasm memory costs ~1 µs a call whatever its length, which was a quarter of
/// the time of an SSE stream (BENCHMARKS.md). Raw NUL never occurs in JSON text.
fn data_as_js(events: &[SseEvent]) -> Option<Array> {
    if events.len() < 2 || events.iter().any(|e| e.data.contains('\0')) {
        return None;
    }
    let mut joined = String::with_capacity(events.iter().map(|e| e.data.len() + 1).sum());
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            joined.push('\0');
        }
        joined.push_str(&e.data);
    }
    Some(JsString::from(joined.as_str()).split("\0"))
}
