//! The SSE parser never panics, and any split of the input gives the same events.
#![no_main]

use holdfast::engine::{SseError, SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

/// A skipped event's `size` (how far it had grown when cut) depends on the chunks, so it is
/// zeroed: the rest must not.
fn parse(chunks: &[&[u8]], limit: usize) -> Vec<SseEvent> {
    let mut p = SseParser::new(limit);
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, &mut out);
    }
    for e in &mut out {
        if let Some(SseError::EventTooLarge { size, .. }) = &mut e.too_large {
            *size = 0;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let limit = 16 + data[0] as usize * 8;
    let body = &data[2..];
    let whole = parse(&[body], limit);
    // Split at every multiple of a fuzzed stride (1 = byte by byte).
    let stride = (data[1] as usize % 17) + 1;
    let chunks: Vec<&[u8]> = body.chunks(stride).collect();
    let split = parse(&chunks, limit);
    assert_eq!(whole, split);
});
