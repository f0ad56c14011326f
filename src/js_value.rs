//! JavaScript values as the engine's JSON (wasm32 only, with or without the web layer).
//!
//! Contract: [`JsonValue`] for `JsValue` reads fields with `Reflect.get` and parses with
//! `JSON.parse`, so payloads are never copied into Rust; [`js_str`] keeps the few JS strings
//! used for every event. The web layer decodes frames with these; the size floor
//! (`bench/size-floor`, which builds the engine without the web layer) uses them too, so it
//! measures the same code.

use crate::engine::JsonValue;
use js_sys::{Array, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

thread_local! {
    static STRINGS: std::cell::RefCell<Vec<(String, JsValue)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many strings are kept by [`js_str`]; more are created each time.
const STRINGS_MAX: usize = 32;

/// The JS string for `s`, kept for the next call: for the few strings used per event or per
/// batch (the interop field names read from every event, the batch entry tags). Creating a
/// JS string from wasm memory costs a `TextDecoder` call (~1 µs) whatever its length; three
/// field names per event made that the largest cost of decoding a poll batch.
pub fn js_str(s: &str) -> JsValue {
    STRINGS.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return JsValue::from_str(s);
        };
        if let Some((_, v)) = cache.iter().find(|(k, _)| k == s) {
            return v.clone();
        }
        let v = JsValue::from_str(s);
        if cache.len() < STRINGS_MAX {
            cache.push((String::from(s), v.clone()));
        }
        v
    })
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
        Reflect::get(self, &js_str(key))
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
