//! Property tests of both parsers: any chunking of a stream gives the same events, and no
//! input panics.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::decode::{decode_frame, decode_sse_event, decode_text};
use super::sse::{SseError, SseEvent, SseParser};
use super::{Interop, Item};

/// The events of `input` fed in chunks cut at `cuts`. A skipped event's `size` (how far it
/// had grown when cut) depends on the chunks, so it is zeroed: the rest must not.
fn parse_chunked(input: &[u8], cuts: &[usize], limit: usize) -> Vec<SseEvent> {
    let mut p = SseParser::new(limit);
    let mut out = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut last = 0;
    for c in cuts.into_iter().chain(std::iter::once(input.len())) {
        p.feed(&input[last..c], &mut out);
        last = c;
    }
    for e in &mut out {
        if let Some(SseError::EventTooLarge { size, .. }) = &mut e.too_large {
            *size = 0;
        }
    }
    out
}

/// A stream built from events, with every line end style, comments and retry lines.
fn sse_stream() -> impl Strategy<Value = (Vec<u8>, Vec<(Option<String>, String, String)>)> {
    let field = "[a-z0-9 :{}\"\u{e9}\u{1F600}-]{0,12}";
    let event = (
        proptest::option::of(field),
        proptest::option::of("[a-z]{1,8}"),
        proptest::collection::vec(field, 1..4),
        any::<bool>(),
        any::<bool>(),
    );
    (
        any::<bool>(),
        proptest::collection::vec((event, 0u8..3), 0..12),
    )
        .prop_map(|(bom, evs)| {
            let mut s: Vec<u8> = Vec::new();
            if bom {
                s.extend_from_slice(&[0xEF, 0xBB, 0xBF]);
            }
            let mut expect = Vec::new();
            for ((id, name, data, comment, retry), eol) in evs {
                let nl: &[u8] = match eol {
                    0 => b"\n",
                    1 => b"\r",
                    _ => b"\r\n",
                };
                if comment {
                    s.extend_from_slice(b": heartbeat");
                    s.extend_from_slice(nl);
                }
                if retry {
                    s.extend_from_slice(b"retry: 1500");
                    s.extend_from_slice(nl);
                }
                if let Some(id) = &id {
                    s.extend_from_slice(b"id: ");
                    s.extend_from_slice(id.as_bytes());
                    s.extend_from_slice(nl);
                }
                if let Some(n) = &name {
                    s.extend_from_slice(b"event: ");
                    s.extend_from_slice(n.as_bytes());
                    s.extend_from_slice(nl);
                }
                for d in &data {
                    s.extend_from_slice(b"data: ");
                    s.extend_from_slice(d.as_bytes());
                    s.extend_from_slice(nl);
                }
                s.extend_from_slice(nl);
                expect.push((
                    id,
                    name.unwrap_or_else(|| "message".into()),
                    data.join("\n"),
                ));
            }
            (s, expect)
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z]{0,6}".prop_map(Value::String),
        prop_oneof![
            Just("hello"),
            Just("reset"),
            Just("ack"),
            Just("error"),
            Just("pong"),
            Just("heartbeat"),
            Just("ping")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("type".to_string()),
                    Just("data".to_string()),
                    Just("events".to_string()),
                    Just("cursor".to_string()),
                    Just("oldest".to_string()),
                    "[a-z]{1,4}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn any_chunking_of_a_stream_gives_the_same_events((stream, expect) in sse_stream(), cuts in proptest::collection::vec(any::<usize>(), 0..16)) {
        let whole = parse_chunked(&stream, &[], 1 << 20);
        prop_assert!(whole.iter().all(|e| e.too_large.is_none()));
        let chunked = parse_chunked(&stream, &cuts, 1 << 20);
        prop_assert_eq!(&whole, &chunked);
        let got: Vec<(Option<String>, String, String)> = whole.into_iter().map(|e| (e.id, e.event, e.data)).collect();
        prop_assert_eq!(got, expect);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_parse_the_same_in_any_chunks(bytes in proptest::collection::vec(any::<u8>(), 0..400), cuts in proptest::collection::vec(any::<usize>(), 0..24), limit in 8usize..200) {
        let a = parse_chunked(&bytes, &[], limit);
        let b = parse_chunked(&bytes, &cuts, limit);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn sse_like_bytes_parse_the_same_in_any_chunks(parts in proptest::collection::vec(prop_oneof![Just(&b"data:"[..]), Just(&b"id:"[..]), Just(&b"event:"[..]), Just(&b"retry:"[..]), Just(&b"\r"[..]), Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b":"[..]), Just(&b" "[..]), Just(&b"x"[..]), Just(&b"7"[..]), Just(&b"\0"[..]), Just(&b"\xEF\xBB\xBF"[..])], 0..80), cuts in proptest::collection::vec(any::<usize>(), 0..24)) {
        let bytes: Vec<u8> = parts.concat();
        let a = parse_chunked(&bytes, &[], 1 << 20);
        let b = parse_chunked(&bytes, &cuts, 1 << 20);
        prop_assert_eq!(&a, &b);
        let every: Vec<usize> = (0..=bytes.len()).collect();
        let c = parse_chunked(&bytes, &every, 1 << 20);
        prop_assert_eq!(&a, &c, "byte by byte");
    }

    #[test]
    fn the_frame_decoder_never_panics_on_any_json(v in json_value()) {
        let i = Interop::default();
        let _ = decode_frame(&v, &i);
        let text = v.to_string();
        let _ = decode_text::<Value>(&text, &i, 1 << 20);
        let ev = SseEvent { id: None, last_event_id: String::new(), event: "hello".into(), data: text, too_large: None };
        let _ = decode_sse_event::<Value>(&ev, &i);
    }

    #[test]
    fn the_frame_decoder_never_panics_on_any_text(s in "\\PC{0,64}") {
        let i = Interop::default();
        let _ = decode_text::<Value>(&s, &i, 32);
        let ev = SseEvent { id: Some(s.clone()), last_event_id: String::new(), event: s.clone(), data: s, too_large: None };
        let _ = decode_sse_event::<Value>(&ev, &i);
    }

    #[test]
    fn encoded_events_decode_back(ids in proptest::collection::vec(0u64..1_000_000, 1..20), batch in any::<bool>()) {
        let evs: Vec<Value> = ids.iter().map(|n| json!({"id": format!("{n}-0"), "type": "t", "data": {"n": n}})).collect();
        let frame = if batch { json!({"events": evs}) } else { Value::Array(evs) };
        let items = decode_frame(&frame, &Interop::default()).unwrap();
        prop_assert_eq!(items.len(), ids.len());
        for (item, n) in items.iter().zip(&ids) {
            match item {
                Item::Event { id, kind, data } => {
                    prop_assert_eq!(id.clone(), Some(format!("{n}-0")));
                    prop_assert_eq!(kind.as_str(), "t");
                    prop_assert_eq!(data, &json!({"n": n}));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]

    #[test]
    fn any_input_sequence_is_handled_without_panic_and_every_due_deadline_is_consumed(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        super::byte_script::drive(&data);
    }
}
