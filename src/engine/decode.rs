//! Turning server frames into [`Item`]s.
//!
//! Contract: pure functions over any JSON representation implementing [`JsonValue`]
//! (`serde_json::Value` in native tests, `JsValue` in the browser, so payloads are never
//! copied through Rust). A frame is one event object, an array of them, or a poll body
//! `{"events":[...], "cursor":…}`. Field names come from [`Interop`]. An event without a
//! data field delivers the whole object as its data. Every input either decodes or returns
//! a [`FrameError`]; nothing panics.

use super::error::FrameError;
use super::options::Interop;
use super::sse::{SseError, SseEvent};
use super::types::Item;
use super::util::u64_to_string;

/// The few operations the decoder needs from a JSON value.
pub trait JsonValue: Clone {
    /// Parses JSON text; `None` when it is not valid JSON.
    fn parse_json(text: &str) -> Option<Self>;
    /// A JSON string value.
    fn from_string(s: &str) -> Self;
    /// Field `key` of an object (`None` when not an object, or missing, or `undefined`).
    fn get(&self, key: &str) -> Option<Self>;
    /// The value as a string, when it is a string.
    fn as_string(&self) -> Option<String>;
    /// The value as a number, when it is a number.
    fn as_f64(&self) -> Option<f64>;
    /// Whether it is an object (not an array, not null).
    fn is_object(&self) -> bool;
    /// The elements, when it is an array.
    fn as_array(&self) -> Option<Vec<Self>>;
    /// Whether it is JSON `null`.
    fn is_null(&self) -> bool;
}

/// Control `type`s reserved by the protocol (besides the configurable pong/heartbeat).
const HELLO: &str = "hello";
const RESET: &str = "reset";
const ACK: &str = "ack";
const ERROR: &str = "error";
const PING: &str = "ping";

/// An id given as a string or as an integral number (`{"id": 42}` from existing backends).
fn id_of<V: JsonValue>(v: &V) -> Result<Option<String>, ()> {
    if v.is_null() {
        return Ok(None);
    }
    if let Some(s) = v.as_string() {
        return Ok(Some(s));
    }
    if let Some(n) = v.as_f64() {
        if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n < 9_007_199_254_740_992.0 {
            return Ok(Some(u64_to_string(n as u64)));
        }
    }
    Err(())
}

fn opt_string<V: JsonValue>(obj: &V, key: &str) -> Option<String> {
    obj.get(key).and_then(|v| id_of(&v).ok().flatten())
}

/// Decodes one object (an event or a control frame).
pub fn decode_object<V: JsonValue>(obj: &V, interop: &Interop) -> Result<Item<V>, FrameError> {
    decode_object_with(obj, interop, None, None)
}

fn decode_object_with<V: JsonValue>(
    obj: &V,
    interop: &Interop,
    kind_hint: Option<&str>,
    id_hint: Option<&str>,
) -> Result<Item<V>, FrameError> {
    if !obj.is_object() {
        return Err(FrameError::NotAnObject);
    }
    let kind = match obj.get(&interop.type_field) {
        Some(t) if t.is_null() => None,
        Some(t) => Some(t.as_string().ok_or(FrameError::BadField("type"))?),
        None => None,
    };
    let kind = kind.or_else(|| kind_hint.map(String::from));
    let k = kind.as_deref().unwrap_or("message");
    if k == interop.pong_type {
        return Ok(Item::Pong);
    }
    if k == interop.heartbeat_type || k == PING {
        return Ok(Item::Heartbeat);
    }
    match k {
        HELLO => {
            let heartbeat_ms = obj
                .get("heartbeatMs")
                .and_then(|v| v.as_f64())
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(|n| n as u64);
            Ok(Item::Hello {
                cursor: opt_string(obj, "cursor"),
                heartbeat_ms,
            })
        }
        RESET => Ok(Item::Reset {
            reason: obj
                .get("reason")
                .and_then(|v| v.as_string())
                .unwrap_or_default(),
            oldest: opt_string(obj, "oldest"),
        }),
        ACK => match opt_string(obj, &interop.id_field) {
            Some(id) => Ok(Item::Ack { id }),
            None => Err(FrameError::BadField("id")),
        },
        ERROR => Ok(Item::ServerError {
            code: obj
                .get("code")
                .or_else(|| obj.get("error"))
                .and_then(|v| v.as_string())
                .unwrap_or_default(),
            message: obj
                .get("message")
                .and_then(|v| v.as_string())
                .unwrap_or_default(),
        }),
        _ => {
            let id = match obj.get(&interop.id_field) {
                Some(v) => id_of(&v).map_err(|_| FrameError::BadField("id"))?,
                None => None,
            };
            let id = id.or_else(|| id_hint.map(String::from));
            let data = obj.get(&interop.data_field).unwrap_or_else(|| obj.clone());
            Ok(Item::Event {
                id,
                kind: kind.unwrap_or_else(|| String::from("message")),
                data,
            })
        }
    }
}

/// Decodes a parsed WebSocket frame or poll body: an object, an array of objects, or
/// `{"events":[...], "cursor":…}` (the cursor becomes a trailing [`Item::Hello`]).
///
/// A batch (an array, or `events`) is decoded entry by entry: an entry that does not decode
/// becomes [`Item::Malformed`] in its place, with its id when that can still be read, and
/// the others are decoded as usual. A batch in which no entry decodes and none has a
/// readable id is one error (the error of its first entry): nothing in it can be delivered
/// or passed, so it is the whole answer that is bad (a poll is then retried with backoff
/// rather than at once).
pub fn decode_frame<V: JsonValue>(v: &V, interop: &Interop) -> Result<Vec<Item<V>>, FrameError> {
    if let Some(arr) = v.as_array() {
        let mut items = Vec::with_capacity(arr.len());
        decode_batch(&arr, interop, &mut items)?;
        return Ok(items);
    }
    if !v.is_object() {
        return Err(FrameError::NotAnObject);
    }
    if v.get(&interop.type_field).is_none() {
        if let Some(events) = v.get(&interop.events_field) {
            let arr = events.as_array().ok_or(FrameError::BadField("events"))?;
            let mut items = Vec::with_capacity(arr.len() + 1);
            decode_batch(&arr, interop, &mut items)?;
            if let Some(cursor) = opt_string(v, "cursor") {
                items.push(Item::Hello {
                    cursor: Some(cursor),
                    heartbeat_ms: None,
                });
            }
            return Ok(items);
        }
    }
    Ok(vec![decode_object(v, interop)?])
}

/// The entries of a batch as items, a bad one as [`Item::Malformed`] (see [`decode_frame`]).
fn decode_batch<V: JsonValue>(
    entries: &[V],
    interop: &Interop,
    items: &mut Vec<Item<V>>,
) -> Result<(), FrameError> {
    let mut first_error = None;
    let mut usable = false;
    for o in entries {
        match decode_object(o, interop) {
            Ok(item) => {
                usable = true;
                items.push(item);
            }
            Err(error) => {
                // Only an object's own, well-typed id can move the cursor.
                let id = o
                    .get(&interop.id_field)
                    .and_then(|v| id_of(&v).ok().flatten());
                usable |= id.is_some();
                if first_error.is_none() {
                    first_error = Some(error.clone());
                }
                items.push(Item::Malformed { id, error });
            }
        }
    }
    match first_error {
        Some(e) if !usable => Err(e),
        _ => Ok(()),
    }
}

/// Whether an SSE response's `Content-Type` (`None`: absent) announces an event stream.
/// WHATWG: its essence (before any `;` parameter, trimmed, any case) must be
/// `text/event-stream`; anything else fails the connection (a `text/html` login page or
/// captive portal must not be parsed as events).
pub fn check_event_stream(content_type: Option<&str>) -> Result<(), FrameError> {
    let t = content_type.unwrap_or("");
    let essence = t.split(';').next().unwrap_or("");
    let essence = essence.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n');
    if essence.eq_ignore_ascii_case("text/event-stream") {
        return Ok(());
    }
    Err(FrameError::NotEventStream {
        content_type: Some(t.trim().into()),
    })
}

/// Decodes a WebSocket text frame or a poll body: checks the size, recognises a plain-text
/// pong (`pong`) or heartbeat, parses JSON, then [`decode_frame`].
pub fn decode_text<V: JsonValue>(
    text: &str,
    interop: &Interop,
    max_bytes: usize,
) -> Result<Vec<Item<V>>, FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge {
            size: text.len(),
            limit: max_bytes,
        });
    }
    let t = text.trim();
    if t == interop.pong_type {
        return Ok(vec![Item::Pong]);
    }
    if t == interop.heartbeat_type || t == PING {
        return Ok(vec![Item::Heartbeat]);
    }
    let v = V::parse_json(text).ok_or(FrameError::InvalidJson)?;
    decode_frame(&v, interop)
}

/// Decodes one SSE event. Control events (`event: hello`, `reset`, …) take their fields from
/// the JSON data. Other events deliver the JSON data (or the raw text when it is not JSON)
/// with the SSE `event` name as kind and the SSE `id`. An unnamed event whose data is an
/// object with a `type` field is decoded like a WebSocket frame (existing backends).
pub fn decode_sse_event<V: JsonValue>(
    ev: &SseEvent,
    interop: &Interop,
) -> Result<Item<V>, FrameError> {
    decode_sse_event_parsed(ev, V::parse_json(&ev.data), interop)
}

/// [`decode_sse_event`] with the event's data already parsed (`None`: not JSON), for
/// callers that parse many events' data at once.
pub fn decode_sse_event_parsed<V: JsonValue>(
    ev: &SseEvent,
    parsed: Option<V>,
    interop: &Interop,
) -> Result<Item<V>, FrameError> {
    // Skipped by the parser: reported in its place, and its id still moves the cursor.
    if let Some(SseError::EventTooLarge { size, limit }) = ev.too_large {
        return Ok(Item::TooLarge {
            id: ev.id.clone(),
            size,
            limit,
        });
    }
    let name = ev.event.as_str();
    let is_control = name == HELLO
        || name == RESET
        || name == ACK
        || name == ERROR
        || name == PING
        || name == interop.pong_type
        || name == interop.heartbeat_type;
    if is_control {
        return match parsed {
            Some(obj) if obj.is_object() => {
                decode_object_with(&obj, interop, Some(name), ev.id.as_deref()).map(|item| {
                    match item {
                        // `{"type":…}` inside may disagree with the event name; the name wins.
                        Item::Event { .. } => control_without_body(name, interop),
                        other => other,
                    }
                })
            }
            _ => Ok(control_without_body(name, interop)),
        };
    }
    if name == "message" {
        if let Some(obj) = &parsed {
            if obj.is_object() && obj.get(&interop.type_field).is_some() {
                return decode_object_with(obj, interop, None, ev.id.as_deref());
            }
        }
    }
    Ok(Item::Event {
        id: ev.id.clone(),
        kind: ev.event.clone(),
        data: parsed.unwrap_or_else(|| V::from_string(&ev.data)),
    })
}

fn control_without_body<V>(name: &str, interop: &Interop) -> Item<V> {
    match name {
        HELLO => Item::Hello {
            cursor: None,
            heartbeat_ms: None,
        },
        RESET => Item::Reset {
            reason: String::new(),
            oldest: None,
        },
        ERROR => Item::ServerError {
            code: String::new(),
            message: String::new(),
        },
        n if n == interop.pong_type => Item::Pong,
        _ => Item::Heartbeat,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The native [`JsonValue`] used by every engine test.
    impl JsonValue for Value {
        fn parse_json(text: &str) -> Option<Self> {
            serde_json::from_str(text).ok()
        }
        fn from_string(s: &str) -> Self {
            Value::String(s.into())
        }
        fn get(&self, key: &str) -> Option<Self> {
            self.as_object().and_then(|o| o.get(key)).cloned()
        }
        fn as_string(&self) -> Option<String> {
            self.as_str().map(String::from)
        }
        fn as_f64(&self) -> Option<f64> {
            Value::as_f64(self)
        }
        fn is_object(&self) -> bool {
            Value::is_object(self)
        }
        fn as_array(&self) -> Option<Vec<Self>> {
            Value::as_array(self).cloned()
        }
        fn is_null(&self) -> bool {
            Value::is_null(self)
        }
    }

    fn io() -> Interop {
        Interop::default()
    }

    #[test]
    fn an_event_object_decodes_with_id_type_and_data() {
        let v = json!({"id":"1-2","type":"progress","data":{"p":40}});
        assert_eq!(
            decode_frame(&v, &io()).unwrap(),
            vec![Item::Event {
                id: Some("1-2".into()),
                kind: "progress".into(),
                data: json!({"p":40})
            }]
        );
    }

    #[test]
    fn an_event_without_data_delivers_the_whole_object() {
        let v = json!({"id":7,"type":"log","msg":"hi"});
        assert_eq!(
            decode_frame(&v, &io()).unwrap(),
            vec![Item::Event {
                id: Some("7".into()),
                kind: "log".into(),
                data: v.clone()
            }]
        );
    }

    #[test]
    fn arrays_and_poll_bodies_decode_in_order() {
        let v = json!([{"id":1,"type":"a","data":1},{"id":2,"type":"b","data":2}]);
        assert_eq!(decode_frame(&v, &io()).unwrap().len(), 2);
        let v = json!({"events":[{"id":"1-0","type":"a","data":1}],"cursor":"1-0"});
        let items = decode_frame(&v, &io()).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            Item::Hello {
                cursor: Some("1-0".into()),
                heartbeat_ms: None
            }
        );
        assert_eq!(decode_frame(&json!([]), &io()).unwrap(), vec![]);
    }

    #[test]
    fn control_frames_are_recognised() {
        let d = |v: Value| decode_frame(&v, &io()).unwrap().remove(0);
        assert_eq!(
            d(json!({"type":"hello","cursor":"5-0","heartbeatMs":25000})),
            Item::Hello {
                cursor: Some("5-0".into()),
                heartbeat_ms: Some(25000)
            }
        );
        assert_eq!(d(json!({"type":"pong"})), Item::Pong);
        assert_eq!(d(json!({"type":"heartbeat"})), Item::Heartbeat);
        assert_eq!(
            d(json!({"type":"ack","id":"m-1"})),
            Item::Ack { id: "m-1".into() }
        );
        assert_eq!(
            d(json!({"type":"reset","reason":"gone","oldest":"9-0"})),
            Item::Reset {
                reason: "gone".into(),
                oldest: Some("9-0".into())
            }
        );
        assert_eq!(
            d(json!({"type":"error","code":"forbidden","message":"no"})),
            Item::ServerError {
                code: "forbidden".into(),
                message: "no".into()
            }
        );
    }

    #[test]
    fn interop_names_are_configurable() {
        let mut i = io();
        i.id_field = "seq".into();
        i.type_field = "kind".into();
        i.data_field = "payload".into();
        i.events_field = "items".into();
        let v = json!({"items":[{"seq":3,"kind":"x","payload":true}]});
        assert_eq!(
            decode_frame(&v, &i).unwrap(),
            vec![Item::Event {
                id: Some("3".into()),
                kind: "x".into(),
                data: json!(true)
            }]
        );
    }

    #[test]
    fn plain_text_pong_and_bad_json_are_handled() {
        assert_eq!(
            decode_text::<Value>("pong", &io(), 100).unwrap(),
            vec![Item::Pong]
        );
        assert_eq!(
            decode_text::<Value>("{nope", &io(), 100).unwrap_err(),
            FrameError::InvalidJson
        );
        assert_eq!(
            decode_text::<Value>("42", &io(), 100).unwrap_err(),
            FrameError::NotAnObject
        );
        assert_eq!(
            decode_text::<Value>("[1]", &io(), 100).unwrap_err(),
            FrameError::NotAnObject
        );
        assert_eq!(
            decode_text::<Value>(r#"{"type":5}"#, &io(), 100).unwrap_err(),
            FrameError::BadField("type")
        );
        assert_eq!(
            decode_text::<Value>(r#"{"id":-1}"#, &io(), 100).unwrap_err(),
            FrameError::BadField("id")
        );
        assert_eq!(
            decode_text::<Value>(r#"{"id":1.5}"#, &io(), 100).unwrap_err(),
            FrameError::BadField("id")
        );
        assert_eq!(
            decode_text::<Value>(r#"{"events":3}"#, &io(), 100).unwrap_err(),
            FrameError::BadField("events")
        );
        assert!(matches!(
            decode_text::<Value>(&"x".repeat(101), &io(), 100).unwrap_err(),
            FrameError::TooLarge {
                size: 101,
                limit: 100
            }
        ));
    }

    #[test]
    fn a_bad_entry_in_a_batch_is_reported_in_its_place_and_the_good_ones_still_decode() {
        let good = |n: u32| json!({"id": n, "type": "t", "data": n});
        let ev = |n: u32| Item::Event {
            id: Some(n.to_string()),
            kind: "t".into(),
            data: json!(n),
        };
        let bad = |id: Option<&str>, error| Item::Malformed {
            id: id.map(Into::into),
            error,
        };
        let batch = vec![
            good(1),
            json!("not an object"),
            json!({"id": 3, "type": 5}),
            json!({"id": {"x": 1}, "type": "t"}),
            json!({"id": "5", "type": "ack"}),
            good(6),
        ];
        let want = vec![
            ev(1),
            bad(None, FrameError::NotAnObject),
            // The type is wrong but the id is fine: it can still move the cursor.
            bad(Some("3"), FrameError::BadField("type")),
            bad(None, FrameError::BadField("id")),
            ev(6),
        ];
        // An `ack` names the upstream message: `{"id":"5","type":"ack"}` is a good one.
        let mut want_array = want.clone();
        want_array.insert(4, Item::Ack { id: "5".into() });
        assert_eq!(
            decode_frame(&Value::Array(batch.clone()), &io()).unwrap(),
            want_array
        );
        // A bare array as a WebSocket frame or poll body, through the text entry point.
        let text = Value::Array(batch.clone()).to_string();
        assert_eq!(
            decode_text::<Value>(&text, &io(), 1 << 20).unwrap(),
            want_array
        );
        // The poll envelope: same entries, then its cursor.
        let mut want_body = want_array;
        want_body.push(Item::Hello {
            cursor: Some("6".into()),
            heartbeat_ms: None,
        });
        assert_eq!(
            decode_frame(&json!({"events": batch, "cursor": "6"}), &io()).unwrap(),
            want_body
        );
    }

    #[test]
    fn a_batch_with_nothing_usable_is_one_error_and_a_body_that_is_not_a_batch_stays_one() {
        // No entry decodes and none has an id: nothing to deliver or pass.
        assert_eq!(
            decode_frame(&json!([1, "x", {"id": -1}]), &io()).unwrap_err(),
            FrameError::NotAnObject
        );
        assert_eq!(
            decode_frame(&json!({"events": [{"id": -1}], "cursor": "9"}), &io()).unwrap_err(),
            FrameError::BadField("id")
        );
        // A bad entry whose id can be read is usable: the cursor can pass it.
        assert_eq!(
            decode_frame(&json!([{"id": "7", "type": 5}]), &io()).unwrap(),
            vec![Item::Malformed {
                id: Some("7".into()),
                error: FrameError::BadField("type")
            }]
        );
        // A proxy's error page, or JSON that is no batch: the whole answer is bad.
        assert_eq!(
            decode_text::<Value>("<html>502 Bad Gateway</html>", &io(), 1 << 20).unwrap_err(),
            FrameError::InvalidJson
        );
        assert_eq!(
            decode_text::<Value>("\"a string\"", &io(), 1 << 20).unwrap_err(),
            FrameError::NotAnObject
        );
        assert_eq!(
            decode_text::<Value>(r#"{"events":{"id":1}}"#, &io(), 1 << 20).unwrap_err(),
            FrameError::BadField("events")
        );
    }

    #[test]
    fn only_a_text_event_stream_content_type_is_an_event_stream() {
        for ok in [
            "text/event-stream",
            "text/event-stream; charset=utf-8",
            "Text/Event-Stream;charset=UTF-8",
            " text/event-stream ",
            "text/event-stream\t;foo=bar",
        ] {
            assert_eq!(check_event_stream(Some(ok)), Ok(()), "{ok}");
        }
        for (bad, named) in [
            ("text/html; charset=utf-8", "`text/html; charset=utf-8`"),
            ("application/json", "`application/json`"),
            ("text/event-streams", "`text/event-streams`"),
            (
                "text/plain, text/event-stream",
                "`text/plain, text/event-stream`",
            ),
            ("", "no Content-Type"),
        ] {
            let e = check_event_stream(Some(bad)).unwrap_err();
            assert_eq!(e.code(), crate::engine::ErrorCode::HttpError);
            assert!(e.describe().contains(named), "{}", e.describe());
            assert!(e.describe().contains("text/event-stream"));
        }
        let e = check_event_stream(None).unwrap_err();
        assert!(e.describe().contains("no Content-Type"), "{}", e.describe());
    }

    #[test]
    fn sse_events_decode_with_their_name_and_id() {
        let ev = |id: Option<&str>, name: &str, data: &str| SseEvent {
            id: id.map(Into::into),
            last_event_id: String::new(),
            event: name.into(),
            data: data.into(),
            too_large: None,
        };
        assert_eq!(
            decode_sse_event::<Value>(&ev(Some("3-1"), "progress", "{\"p\":1}"), &io()).unwrap(),
            Item::Event {
                id: Some("3-1".into()),
                kind: "progress".into(),
                data: json!({"p":1})
            }
        );
        assert_eq!(
            decode_sse_event::<Value>(
                &ev(
                    None,
                    "hello",
                    "{\"type\":\"hello\",\"cursor\":null,\"heartbeatMs\":25000}"
                ),
                &io()
            )
            .unwrap(),
            Item::Hello {
                cursor: None,
                heartbeat_ms: Some(25000)
            }
        );
        assert_eq!(
            decode_sse_event::<Value>(
                &ev(None, "reset", "{\"reason\":\"r\",\"oldest\":\"1-0\"}"),
                &io()
            )
            .unwrap(),
            Item::Reset {
                reason: "r".into(),
                oldest: Some("1-0".into())
            }
        );
        assert_eq!(
            decode_sse_event::<Value>(&ev(Some("4"), "message", "not json"), &io()).unwrap(),
            Item::Event {
                id: Some("4".into()),
                kind: "message".into(),
                data: json!("not json")
            }
        );
        assert_eq!(
            decode_sse_event::<Value>(
                &ev(Some("4"), "message", "{\"type\":\"t\",\"data\":1}"),
                &io()
            )
            .unwrap(),
            Item::Event {
                id: Some("4".into()),
                kind: "t".into(),
                data: json!(1)
            }
        );
        assert_eq!(
            decode_sse_event::<Value>(&ev(None, "heartbeat", ""), &io()).unwrap(),
            Item::Heartbeat
        );
    }
}
