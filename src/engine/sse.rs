//! A Server-Sent Events parser that follows the WHATWG rules
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
//!
//! Contract: feed it the response body in chunks of any size, split anywhere (inside a
//! UTF-8 sequence, between CR and LF, inside the leading BOM); it yields exactly the events
//! the whole body would. `data`/`event`/`id`/`retry` fields, comments, LF/CR/CRLF line ends,
//! one leading BOM stripped, multi-line data joined with LF, an `id` containing NUL ignored,
//! `retry` only when all ASCII digits, an event whose data buffer is empty not dispatched,
//! an incomplete event at the end of the body discarded. An event (its data plus the current
//! line) larger than the limit is skipped up to its blank line and dispatched in its place,
//! in order, as an event marked [`SseEvent::too_large`] with no data and the block's `id`
//! (an `id` line inside the skipped block counts), so a reader can report it and still move
//! its cursor past it. Memory stays bounded by the limit. Never panics.

/// One dispatched event.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SseEvent {
    /// The `id` field given inside this event's block, if any (used as the resume cursor;
    /// an event without its own id has none, unlike the spec's persisting `lastEventId`).
    pub id: Option<String>,
    /// The spec's last event id buffer at dispatch (persists across events).
    pub last_event_id: String,
    /// Event type; `message` when no `event` field was given.
    pub event: String,
    /// Data lines joined with `\n`.
    pub data: String,
    /// Set when the event was over the limit: it was skipped, `event` and `data` are empty,
    /// and only its `id` is kept. `size` is how far it had grown when it was cut (at least
    /// the limit plus one; it depends on how the body was split).
    pub too_large: Option<SseError>,
}

/// Why an event was not delivered. The stream itself goes on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SseError {
    /// An event grew beyond the limit (bytes so far, limit) and was skipped.
    EventTooLarge { size: usize, limit: usize },
}

/// While skipping, a line longer than this is not interpreted (only `id` lines and the blank
/// line that ends the event matter then).
const SKIP_LINE_KEEP: usize = 1024;

/// The incremental parser.
#[derive(Clone, Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes seen before deciding about the BOM (at most 2).
    head: Vec<u8>,
    bom_done: bool,
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF belongs to that line end.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: String,
    id_in_block: Option<String>,
    last_event_id: String,
    retry: Option<u64>,
    /// Inside an oversized event: discard until its blank line.
    skipping: bool,
    /// The current line lost bytes while skipping: it is neither blank nor a field.
    line_cut: bool,
    /// Why the event being skipped is skipped, dispatched at its blank line.
    skipped: Option<SseError>,
    comments: u64,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

impl SseParser {
    /// A parser that rejects events over `max_event_bytes` bytes.
    pub fn new(max_event_bytes: usize) -> SseParser {
        SseParser {
            max_event_bytes,
            head: Vec::new(),
            bom_done: false,
            line: Vec::new(),
            after_cr: false,
            data: String::new(),
            has_data: false,
            event: String::new(),
            id_in_block: None,
            last_event_id: String::new(),
            retry: None,
            skipping: false,
            line_cut: false,
            skipped: None,
            comments: 0,
        }
    }

    /// The last `retry` value (reconnection time in ms) the stream gave.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The spec's last event id buffer.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Comment lines seen so far (`: heartbeat`).
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Feeds one chunk; complete events (and skipped ones, marked
    /// [`SseEvent::too_large`]) are appended to `out` in order.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        if !self.bom_done {
            // Decide about the BOM only once 3 bytes (or a mismatch) are known, so a BOM
            // split across chunks is still stripped.
            let mut i = 0;
            while i < chunk.len() && self.head.len() < 3 {
                self.head.push(chunk[i]);
                i += 1;
                let n = self.head.len();
                if self.head[..] != BOM[..n] {
                    break;
                }
            }
            let n = self.head.len();
            if n < 3 && self.head[..] == BOM[..n] {
                return; // still a possible BOM prefix, chunk consumed
            }
            self.bom_done = true;
            let head = core::mem::take(&mut self.head);
            if head[..] != BOM[..] {
                self.scan(&head, out);
            }
            return self.scan(&chunk[i..], out);
        }
        self.scan(chunk, out)
    }

    fn scan(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(p) => {
                    self.line.extend_from_slice(&bytes[..p]);
                    self.check_size();
                    let cr = bytes[p] == b'\r';
                    let mut next = p + 1;
                    if cr {
                        if next < bytes.len() {
                            if bytes[next] == b'\n' {
                                next += 1;
                            }
                        } else {
                            self.after_cr = true;
                        }
                    }
                    bytes = &bytes[next..];
                    self.process_line(out);
                }
                None => {
                    self.line.extend_from_slice(bytes);
                    self.check_size();
                    bytes = &[];
                }
            }
        }
    }

    /// Keeps memory within the limit: an event that outgrows it is dropped and the parser
    /// skips to its end; while skipping, long lines are cut to [`SKIP_LINE_KEEP`].
    fn check_size(&mut self) {
        if self.skipping {
            if self.line.len() > SKIP_LINE_KEEP {
                self.line.clear();
                self.line_cut = true;
            }
            return;
        }
        let size = self.line.len() + self.data.len();
        if size > self.max_event_bytes {
            self.skipped = Some(SseError::EventTooLarge {
                size,
                limit: self.max_event_bytes,
            });
            self.skipping = true;
            // The line being read is part of the oversized event: never interpret it.
            self.line_cut = !self.line.is_empty();
            self.line = Vec::new();
            self.data = String::new();
            self.has_data = false;
            self.event.clear();
        }
    }

    fn process_line(&mut self, out: &mut Vec<SseEvent>) {
        let raw = core::mem::take(&mut self.line);
        if self.skipping {
            if core::mem::take(&mut self.line_cut) {
                return;
            }
            if raw.is_empty() {
                // The end of the skipped event: it is dispatched as skipped, with its id.
                self.skipping = false;
                self.event.clear();
                out.push(SseEvent {
                    id: self.id_in_block.take(),
                    last_event_id: self.last_event_id.clone(),
                    event: String::new(),
                    data: String::new(),
                    too_large: self.skipped.take(),
                });
                return;
            }
            if raw.starts_with(b"id:") {
                self.process_field(&raw);
            }
            return;
        }
        if raw.is_empty() {
            self.dispatch(out);
            return;
        }
        if raw[0] == b':' {
            self.comments += 1;
            return;
        }
        self.process_field(&raw);
    }

    fn process_field(&mut self, raw: &[u8]) {
        let line = String::from_utf8_lossy(raw);
        let (field, value) = match line.find(':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.into(),
            "data" if !self.skipping => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
                self.check_size();
            }
            // An id containing NUL is ignored (spec).
            "id" if !value.contains('\0') => {
                self.last_event_id = value.into();
                self.id_in_block = Some(value.into());
            }
            // Only all-digit values count; absurdly long ones saturate instead of failing.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = Some(super::util::parse_u64(value).unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let id = self.id_in_block.take();
        if !self.has_data {
            self.event.clear();
            return;
        }
        let mut data = core::mem::take(&mut self.data);
        data.pop(); // the trailing LF
        self.has_data = false;
        let event = if self.event.is_empty() {
            String::from("message")
        } else {
            core::mem::take(&mut self.event)
        };
        out.push(SseEvent {
            id,
            last_event_id: self.last_event_id.clone(),
            event,
            data,
            too_large: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        p.feed(input, &mut out);
        out
    }

    fn ev(id: Option<&str>, last: &str, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(Into::into),
            last_event_id: last.into(),
            event: event.into(),
            data: data.into(),
            too_large: None,
        }
    }

    #[test]
    fn fields_comments_and_multi_line_data_follow_the_spec() {
        let out =
            parse_all(b": ok\nid: 1\nevent: progress\ndata: {\"a\":1}\ndata:second\n\ndata: x\n\n");
        assert_eq!(
            out,
            vec![
                ev(Some("1"), "1", "progress", "{\"a\":1}\nsecond"),
                ev(None, "1", "message", "x"),
            ]
        );
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        let a = parse_all(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n");
        assert_eq!(
            a.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn a_crlf_split_between_chunks_is_one_line_end() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b"data: a\r", &mut out);
        p.feed(b"\n", &mut out);
        p.feed(b"\r", &mut out);
        p.feed(b"\ndata: b\n\n", &mut out);
        assert_eq!(
            out.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_lone_lf_chunk_after_cr_is_consumed_once() {
        // Found by the fuzzer: "\r" | "\n" | "\n" is one line end then a blank line.
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        for c in [&b"data: a\r"[..], b"\n", b"\n"] {
            p.feed(c, &mut out);
        }
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_leading_bom_is_stripped_even_when_split_but_only_once() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(&[0xEF], &mut out);
        p.feed(&[0xBB], &mut out);
        p.feed(&[0xBF], &mut out);
        p.feed(b"data: a\n\n", &mut out);
        assert_eq!(out[0].data, "a");
        // A second BOM is part of the field name, so the line is an unknown field.
        let out = parse_all(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, "b");
    }

    #[test]
    fn an_id_containing_nul_is_ignored() {
        let out = parse_all(b"id: 7\ndata: a\n\nid: 8\0x\ndata: b\n\n");
        assert_eq!(out[1].id, None);
        assert_eq!(out[1].last_event_id, "7");
    }

    #[test]
    fn retry_counts_only_when_all_digits() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b"retry: 12x\n\n", &mut out);
        assert_eq!(p.retry(), None);
        p.feed(b"retry: 3000\n\n", &mut out);
        assert_eq!(p.retry(), Some(3000));
        p.feed(b"retry: -5\nretry:\n\n", &mut out);
        assert_eq!(p.retry(), Some(3000));
        assert!(out.is_empty());
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_resets_the_type() {
        let out = parse_all(b"event: a\n\ndata: x\n\ndata\n\n");
        assert_eq!(
            out,
            vec![ev(None, "", "message", "x"), ev(None, "", "message", "")]
        );
    }

    #[test]
    fn a_field_without_colon_and_a_value_without_space_are_handled() {
        let out = parse_all(b"data:no-space\ndata\ndata:  two\n\n");
        assert_eq!(out[0].data, "no-space\n\n two");
    }

    #[test]
    fn an_incomplete_event_at_the_end_is_not_dispatched() {
        assert!(parse_all(b"data: a\n").is_empty());
        assert!(parse_all(b"data: a").is_empty());
    }

    /// The ids and the skipped marks of `out`, in order.
    fn ids_and_skips(out: &[SseEvent]) -> Vec<(Option<&str>, bool)> {
        out.iter()
            .map(|e| (e.id.as_deref(), e.too_large.is_some()))
            .collect()
    }

    #[test]
    fn an_oversized_event_is_dispatched_in_its_place_as_skipped_with_its_id() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.feed(
            b"id: 1\ndata: a\n\nid: 2\ndata: 0123456789abcdefghij\n\nid: 3\ndata: c\n\n",
            &mut out,
        );
        assert_eq!(
            ids_and_skips(&out),
            [(Some("1"), false), (Some("2"), true), (Some("3"), false)]
        );
        assert!(matches!(
            out[1].too_large,
            Some(SseError::EventTooLarge { limit: 16, size }) if size > 16
        ));
        assert_eq!((out[1].event.as_str(), out[1].data.as_str()), ("", ""));
        p.feed(b"data: d\n\n", &mut out);
        assert_eq!(
            out.last().unwrap().data,
            "d",
            "the next chunk parses cleanly"
        );
    }

    #[test]
    fn an_event_over_the_limit_across_many_lines_and_chunks_is_skipped_to_its_blank_line() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.feed(
            b"event: big\ndata: 0123\ndata: 4567\ndata: 89ab\ndata: cd",
            &mut out,
        );
        assert!(out.is_empty(), "a skipped event is dispatched at its end");
        // The rest of the oversized event, its id, then a good event, split anywhere.
        for chunk in [
            &b"ef0123456789"[..],
            b"\nid: 7\r",
            b"\ndata: x\n",
            b"\r\n",
            b"data: ok\n\n",
        ] {
            p.feed(chunk, &mut out);
        }
        assert_eq!(ids_and_skips(&out), [(Some("7"), true), (None, false)]);
        assert_eq!(
            out[1].event, "message",
            "the skipped event's type does not leak"
        );
        assert_eq!(out[1].data, "ok");
        assert_eq!(
            p.last_event_id(),
            "7",
            "an id inside the skipped event still counts"
        );
    }

    #[test]
    fn a_single_line_longer_than_the_limit_never_buffers_more_than_the_limit() {
        let mut p = SseParser::new(64);
        let mut out = Vec::new();
        p.feed(b"data: ", &mut out);
        let big = vec![b'x'; 10_000];
        for _ in 0..100 {
            p.feed(&big, &mut out);
            assert!(p.line.len() <= SKIP_LINE_KEEP && p.data.len() <= 64);
        }
        p.feed(b"\n\ndata: after\n\n", &mut out);
        assert_eq!(ids_and_skips(&out), [(None, true), (None, false)]);
        assert_eq!(out[1].data, "after");
    }

    #[test]
    fn an_oversized_event_cut_off_by_the_end_of_the_body_is_not_dispatched() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.feed(b"id: 9\ndata: 0123456789abcdefghij\n", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let out = parse_all(b"data: \xFF\xFEok\n\n");
        assert_eq!(out[0].data, "\u{FFFD}\u{FFFD}ok");
    }
}
