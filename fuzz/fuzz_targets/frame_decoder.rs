//! The frame decoders never panic on any text.
#![no_main]

use holdfast::engine::decode::{decode_sse_event, decode_text, JsonValue};
use holdfast::engine::{Interop, SseEvent};
use libfuzzer_sys::fuzz_target;

#[derive(Clone, Debug)]
struct J(serde_json::Value);

impl JsonValue for J {
    fn parse_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok().map(J)
    }
    fn from_string(s: &str) -> Self {
        J(serde_json::Value::String(s.into()))
    }
    fn get(&self, key: &str) -> Option<Self> {
        self.0.as_object().and_then(|o| o.get(key)).cloned().map(J)
    }
    fn as_string(&self) -> Option<String> {
        self.0.as_str().map(String::from)
    }
    fn as_f64(&self) -> Option<f64> {
        self.0.as_f64()
    }
    fn is_object(&self) -> bool {
        self.0.is_object()
    }
    fn as_array(&self) -> Option<Vec<Self>> {
        self.0
            .as_array()
            .map(|a| a.iter().cloned().map(J).collect())
    }
    fn is_null(&self) -> bool {
        self.0.is_null()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut interop = Interop::default();
    let _ = decode_text::<J>(text, &interop, 1 << 20);
    interop.id_field = "seq".into();
    interop.pong_type = "p".into();
    let _ = decode_text::<J>(text, &interop, 64);
    let (name, body) = text.split_once('\n').unwrap_or(("message", text));
    let ev = SseEvent {
        id: Some(name.into()),
        last_event_id: String::new(),
        event: name.into(),
        data: body.into(),
        too_large: None,
    };
    let _ = decode_sse_event::<J>(&ev, &Interop::default());
});
