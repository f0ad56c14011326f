//! Browser adapters (wasm32 only). This layer turns browser callbacks into engine
//! [`Input`](crate::engine::Input)s and executes the engine's commands; it makes no
//! decisions. One file per browser API, each adapter owning its closures and removing them
//! when dropped, so dropping the [`runtime::Runtime`] leaves no timer, listener, socket or
//! request behind.
//!
//! Payloads stay JavaScript values (`JsValue`) from `JSON.parse` to the app's listener: the
//! engine only reads the few fields it needs through [`crate::js_value`].

pub mod env;
pub mod eventsource;
pub mod http;
pub mod json;
pub mod poll;
pub mod runtime;
pub mod sse;
pub mod storage;
pub mod timer;
pub mod upstream;
pub mod ws;

use crate::engine::Input;
pub use crate::js_value::js_str;
use wasm_bindgen::JsValue;

/// Where an adapter reports what happened. It never holds the runtime alive (it holds a
/// weak reference), and it is only called from browser callbacks or promise continuations,
/// never while the runtime is handling another input.
pub type Sink = std::rc::Rc<dyn Fn(Input<JsValue>)>;

/// `Date.now()`, the engine's clock.
pub fn now() -> u64 {
    js_sys::Date::now() as u64
}

/// The message of a thrown JS value (`err.message`, or its string form).
pub fn js_error_message(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    js_sys::Reflect::get(e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| String::from("unknown error"))
}
