//! The SSE parser never panics, and any split of the input gives the same events.
#![no_main]

use holdfast::engine::{SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

fn parse(chunks: &[&[u8]], limit: usize) -> (Vec<SseEvent>, bool) {
    let mut p = SseParser::new(limit);
    let mut out = Vec::new();
    let mut skipped = false;
    for c in chunks {
        // An oversized event is skipped and reported; the parser goes on.
        skipped |= p.feed(c, &mut out).is_err();
    }
    (out, skipped)
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
