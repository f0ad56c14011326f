//! Errors: one type, [`HoldfastError`], with a stable machine code ([`ErrorCode`]) and a
//! message a person can act on. Codes never change meaning once published; messages may
//! improve. No error ever contains a token.
//!
//! **The one list of codes.** `error_codes!` below is the only place a code is named: it
//! makes the enum, [`ErrorCode::as_str`] and [`ErrorCode::ALL`] from one table. The few
//! codes that only the TypeScript wrapper raises (the engine cannot: they are about loading
//! the wasm module or the module trapping) are [`WRAPPER_CODES`], here beside it rather than
//! in the enum, so the engine's type holds only what the engine can report. The tests at the
//! end of this file fail when the TypeScript `ErrorCode` union (js/src/types.ts), the
//! package README's error table (pkg-template/README.md), or any code js/src passes to
//! `new HoldfastError(...)` differs from `ALL` plus `WRAPPER_CODES`. To add a code: add it
//! here, then to the union and the table (the test names what is missing).
//!
//! Misuse and the lifecycle have different codes: `already_closed` is `send()` called after
//! `close()` (the app's mistake), `closed` is a message the client's `close()` failed
//! before it was acknowledged.

use super::types::Transport;

/// Defines [`ErrorCode`], its names and [`ErrorCode::ALL`] from one list.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $code:ident = $name:literal,)*) => {
        /// Stable error codes (the string form is what apps match on). Non-exhaustive: new
        /// codes may be added; match with a wildcard arm.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $code,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the list.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code,)*];

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $name,)*
                }
            }
        }
    };
}

error_codes! {
    /// The WebSocket upgrade was refused (an HTTP status instead of 101, or no 101 at all).
    UpgradeRefused = "upgrade_refused",
    /// The connection opened but no first frame arrived within the deadline (101 then silence).
    SilentAfterOpen = "silent_after_open",
    /// The server or a proxy closed an open connection.
    ClosedByPeer = "closed_by_peer",
    /// Connections keep dying after the same idle time (a proxy's idle cut-off).
    IdleCutoff = "idle_cutoff",
    /// SSE response headers arrived but no bytes followed: something buffers the stream.
    SseBuffered = "sse_buffered",
    /// The server rejected the token (HTTP 401, close 4401/4402).
    Unauthorized = "unauthorized",
    /// The token is valid but not allowed (HTTP 403, close 1008).
    Forbidden = "forbidden",
    /// The app's token provider failed.
    TokenProvider = "token_provider_failed",
    /// HTTP 429/503 or close 4429: waiting as asked.
    RateLimited = "rate_limited",
    /// The browser reports no network.
    Offline = "offline",
    /// A frame could not be decoded.
    BadFrame = "bad_frame",
    /// A frame or SSE event exceeded the size limit.
    FrameTooLarge = "frame_too_large",
    /// The server's history no longer reaches the cursor: events were lost.
    ServerReset = "server_reset",
    /// No pong / no server heartbeat in time.
    HeartbeatTimeout = "heartbeat_timeout",
    /// The connection did not open within the deadline.
    OpenTimeout = "open_timeout",
    /// The request failed without an HTTP status (DNS, refused, CORS, mixed content…).
    NetworkError = "network_error",
    /// Another unexpected HTTP status, or an SSE answer that is not `text/event-stream`.
    HttpError = "http_error",
    /// The server sent an `error` frame.
    ServerError = "server_error",
    /// `send` was called while the outbox was full.
    OutboxFull = "outbox_full",
    /// An upstream message could not be delivered.
    SendFailed = "send_failed",
    /// An option is invalid.
    InvalidOption = "invalid_option",
    /// A URL is invalid or cannot be derived from the page.
    InvalidUrl = "invalid_url",
    /// The configured maximum of attempts was reached.
    GaveUp = "gave_up",
    /// Lifecycle: the client was closed before this message was acknowledged.
    Closed = "closed",
    /// Misuse: `send` was called after `close` (create a new client to send).
    AlreadyClosed = "already_closed",
}

/// Codes only the TypeScript wrapper (js/src) raises, never the engine. Checked with
/// [`ErrorCode::ALL`] against the TypeScript union and the package README (tests below).
pub const WRAPPER_CODES: &[&str] = &[
    // The wasm module trapped (a bug in Holdfast): the wrapper restarts the engine from
    // its cursor, or closes the client after repeated traps.
    "internal",
    // holdfast_wasm_bg.wasm could not be fetched or compiled.
    "wasm_load_failed",
    // holdfast/react: `send()` before the client exists (it is created after mount).
    "not_connected",
];

/// The one error type.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HoldfastError {
    pub code: ErrorCode,
    /// What happened and what to do about it.
    pub message: String,
    /// The rung it happened on, if any.
    pub transport: Option<Transport>,
}

impl HoldfastError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> HoldfastError {
        HoldfastError {
            code,
            message: message.into(),
            transport: None,
        }
    }

    pub fn on(mut self, transport: Transport) -> HoldfastError {
        self.transport = Some(transport);
        self
    }
}

impl core::fmt::Display for HoldfastError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.code.as_str())?;
        f.write_str(": ")?;
        f.write_str(&self.message)
    }
}

impl std::error::Error for HoldfastError {}

/// Why a frame could not be turned into [`super::Item`]s.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FrameError {
    /// The text is not JSON.
    InvalidJson,
    /// JSON, but not an object, an array of objects, or `{"events":[...]}`.
    NotAnObject,
    /// A field has the wrong type (e.g. `type` is a number).
    BadField(&'static str),
    /// Over the size limit.
    TooLarge { size: usize, limit: usize },
    /// A binary frame where text was expected.
    Binary,
    /// An SSE response that is not an event stream: a `Content-Type` other than
    /// `text/event-stream` (a login page, a captive portal), or `None` when the browser's
    /// `EventSource` failed the connection without saying why (it does on a wrong type or
    /// status, as WHATWG says). The attempt fails and the ladder moves on.
    NotEventStream { content_type: Option<String> },
}

impl FrameError {
    /// A person-readable description.
    pub fn describe(&self) -> String {
        use super::util::usize_to_string as n;
        match self {
            FrameError::InvalidJson => "the server sent a frame that is not valid JSON".into(),
            FrameError::NotAnObject => {
                "the server sent JSON that is not an event object or an array of them".into()
            }
            FrameError::BadField(f) => {
                let mut s = String::from("the server sent an event whose `");
                s.push_str(f);
                s.push_str("` field has the wrong type");
                s
            }
            FrameError::TooLarge { size, limit } => {
                let mut s = String::from("the server sent a frame of ");
                s.push_str(&n(*size));
                s.push_str(" bytes, over the limit of ");
                s.push_str(&n(*limit));
                s.push_str(" bytes (option maxFrameBytes)");
                s
            }
            FrameError::Binary => {
                "the server sent a binary frame; Holdfast expects JSON text".into()
            }
            FrameError::NotEventStream {
                content_type: Some(t),
            } => {
                let mut s = if t.is_empty() {
                    String::from("the SSE response has no Content-Type")
                } else {
                    let mut s = String::from("the SSE response is `");
                    s.push_str(t);
                    s.push('`');
                    s
                };
                s.push_str(", not `text/event-stream`: a login page, a captive portal or a proxy answered instead of the event stream");
                s
            }
            FrameError::NotEventStream { content_type: None } => {
                "EventSource failed the connection: the answer was not a 200 `text/event-stream` (an HTTP error status, another content type such as a login page, or a CORS refusal; EventSource does not say which)".into()
            }
        }
    }

    /// The error code this frame error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            // Not a frame at all: the HTTP answer was not what was asked for.
            FrameError::NotEventStream { .. } => ErrorCode::HttpError,
            _ => ErrorCode::BadFrame,
        }
    }
}

/// Why an upstream POST failed. `status: None` means no HTTP response at all.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct HttpFailure {
    pub status: Option<u16>,
    pub retry_after_ms: Option<u64>,
    pub error_code: Option<String>,
}

/// The one list against the places that repeat it for people and for TypeScript.
#[cfg(test)]
mod tests {
    use super::{ErrorCode, WRAPPER_CODES};
    use std::collections::BTreeSet;

    fn read(path: &str) -> String {
        let full = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + path;
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {full}: {e}"))
    }

    /// Every code, the engine's then the wrapper's, checked for repeats and overlap.
    fn every_code() -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for c in ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .chain(WRAPPER_CODES.iter().copied())
        {
            assert!(
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "`{c}` is not snake_case"
            );
            assert!(all.insert(c.to_string()), "`{c}` is listed twice");
        }
        all
    }

    /// Drops `// …` and `/* … */` comments (a quote in a comment is not a code).
    fn strip_comments(ts: &str) -> String {
        let mut out = String::new();
        let mut rest = ts;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("//") {
                rest = r.find('\n').map_or("", |i| &r[i..]);
            } else if let Some(r) = rest.strip_prefix("/*") {
                rest = r.find("*/").map_or("", |i| &r[i + 2..]);
            } else {
                let c = rest.chars().next().unwrap();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    /// The string literals of `export type ErrorCode = 'a' | 'b' …;` in js/src/types.ts.
    fn ts_union() -> Vec<String> {
        let ts = strip_comments(&read("js/src/types.ts"));
        let at = ts
            .find("export type ErrorCode =")
            .expect("js/src/types.ts has no `export type ErrorCode =`");
        let body = &ts[at..at + ts[at..].find(';').expect("the union ends with `;`")];
        body.split('\'')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    /// The codes in the first column of the package README's `## Errors` table.
    fn readme_table() -> Vec<String> {
        let md = read("pkg-template/README.md");
        let at = md
            .find("\n## Errors\n")
            .expect("pkg-template/README.md has no `## Errors`");
        let section = &md[at + 1..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let mut codes = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let first_cell = row.split('|').nth(1).unwrap_or("");
            codes.extend(first_cell.split('`').skip(1).step_by(2).map(String::from));
        }
        codes
    }

    /// The literal first argument of every `HoldfastError(…)` in js/src/*.ts.
    fn thrown_by_wrapper() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/js/src");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("js/src") {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("ts") {
                continue;
            }
            let ts = strip_comments(&std::fs::read_to_string(&path).unwrap());
            for call in ts.split("HoldfastError(").skip(1) {
                let arg = call.trim_start();
                if let Some(q) = arg.chars().next().filter(|q| *q == '\'' || *q == '"') {
                    let code = &arg[1..1 + arg[1..].find(q).unwrap()];
                    let file = path.file_name().unwrap().to_string_lossy().into_owned();
                    found.push((file, code.to_string()));
                }
            }
        }
        found
    }

    /// Names what differs, both ways.
    fn assert_same(place: &str, listed: &[String], expected: &BTreeSet<String>) {
        let set: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(
            set.len(),
            listed.len(),
            "{place} lists a code twice: {listed:?}"
        );
        let missing: Vec<_> = expected.difference(&set).collect();
        let unknown: Vec<_> = set.difference(expected).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{place} differs from src/engine/error.rs (ErrorCode + WRAPPER_CODES): \
             missing {missing:?}, not in the Rust list {unknown:?}"
        );
    }

    #[test]
    fn error_codes_are_one_list_in_rust() {
        let all = every_code();
        assert_eq!(all.len(), ErrorCode::ALL.len() + WRAPPER_CODES.len());
        // Misuse and the lifecycle stay apart.
        assert_eq!(ErrorCode::Closed.as_str(), "closed");
        assert_eq!(ErrorCode::AlreadyClosed.as_str(), "already_closed");
    }

    #[test]
    fn error_codes_typescript_union_is_the_rust_list() {
        assert_same("js/src/types.ts `ErrorCode`", &ts_union(), &every_code());
    }

    #[test]
    fn error_codes_package_readme_table_is_the_rust_list() {
        assert_same(
            "pkg-template/README.md `## Errors` table",
            &readme_table(),
            &every_code(),
        );
    }

    #[test]
    fn error_codes_thrown_by_the_wrapper_are_listed() {
        let all = every_code();
        let thrown = thrown_by_wrapper();
        // The scan itself works: these are thrown in js/src today.
        for code in [
            "invalid_option",
            "already_closed",
            "wasm_load_failed",
            "internal",
        ] {
            assert!(
                thrown.iter().any(|(_, c)| c == code),
                "no `HoldfastError('{code}'` found in js/src: {thrown:?}"
            );
        }
        for (file, code) in &thrown {
            assert!(
                all.contains(code),
                "js/src/{file} throws `{code}`, which is not in src/engine/error.rs"
            );
        }
        // A wrapper-only code the wrapper no longer throws is a stale entry.
        for code in WRAPPER_CODES {
            assert!(
                thrown.iter().any(|(_, c)| c == code),
                "WRAPPER_CODES lists `{code}` but js/src never throws it"
            );
        }
    }
}
