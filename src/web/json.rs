//! JSON as JavaScript values: the engine's [`JsonValue`] for `JsValue` (`JSON.parse` and
//! `Reflect.get`, so payloads are never copied into Rust), and the [`Decoder`] the adapters
//! share to turn frames into engine inputs.

use crate::engine::decode::{decode_frame, decode_sse_event_parsed, decode_text};
use crate::engine::{ConnId, FrameError, Input, Interop, Item, JsonValue, SseEvent};
use js_sys::{Array, JsString, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen]
extern "C" {
    // JSON.parse on a JS string, without copying it through wasm memory.
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    fn parse_js(text: &JsString) -> Result<JsValue, JsValue>;
}

impl JsonValue for JsValue {
    fn parse_json(text: &str) -> Option<Self> {
        js_sys::JSON::parse(text).ok()
    }
    fn from_string(s: &str) -> Self {
        JsValue::from_str(s)
    }
    fn get(&self, key: &str) -> Option<Self> {
        if !self.is_object() {
            return None;
        }
        Reflect::get(self, &super::js_str(key))
            .ok()
            .filter(|v| !v.is_undefined())
    }
    fn as_string(&self) -> Option<String> {
        JsValue::as_string(self)
    }
    fn as_f64(&self) -> Option<f64> {
        JsValue::as_f64(self)
    }
    fn is_object(&self) -> bool {
        JsValue::is_object(self) && !Array::is_array(self)
    }
    fn as_array(&self) -> Option<Vec<Self>> {
        self.dyn_ref::<Array>().map(|a| a.iter().collect())
    }
    fn is_null(&self) -> bool {
        JsValue::is_null(self)
    }
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
        if len > self.max_bytes {
            return self.too_large(conn, len);
        }
        let decoded = match parse_js(text) {
            Ok(v) => decode_frame(&v, &self.interop),
            Err(_) => Err(FrameError::InvalidJson),
        };
        self.input(conn, decoded)
    }

    /// A poll body. A batch may be larger than one frame may be, so the limit holds per
    /// event there: within the limit it decodes like a frame; over it, every event whose
    /// data is over the limit becomes [`Item::TooLarge`] (reported and passed by the
    /// engine) and the rest are delivered. Measuring happens only on that rare path.
    pub fn poll_body(&self, conn: ConnId, text: &str) -> Input<JsValue> {
        if text.len() <= self.max_bytes {
            return self.text(conn, text);
        }
        let decoded = match JsValue::parse_json(text) {
            Some(v) => decode_frame(&v, &self.interop),
            None => Err(FrameError::InvalidJson),
        };
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
