//! Errors: one type, [`HoldfastError`], with a stable machine code ([`ErrorCode`]) and a
//! message a person can act on. Codes never change meaning once published; messages may
//! improve. No error ever contains a token.

use super::types::Transport;

/// Stable error codes (the string form is what apps match on).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorCode {
    /// The WebSocket upgrade was refused (an HTTP status instead of 101, or no 101 at all).
    UpgradeRefused,
    /// The connection opened but no first frame arrived within the deadline (101 then silence).
    SilentAfterOpen,
    /// The server or a proxy closed an open connection.
    ClosedByPeer,
    /// Connections keep dying after the same idle time (a proxy's idle cut-off).
    IdleCutoff,
    /// SSE response headers arrived but no bytes followed: something buffers the stream.
    SseBuffered,
    /// The server rejected the token (HTTP 401, close 4401/4402).
    Unauthorized,
    /// The token is valid but not allowed (HTTP 403, close 1008).
    Forbidden,
    /// The app's token provider failed.
    TokenProvider,
    /// HTTP 429/503 or close 4429: waiting as asked.
    RateLimited,
    /// The browser reports no network.
    Offline,
    /// A frame could not be decoded.
    BadFrame,
    /// A frame or SSE event exceeded the size limit.
    FrameTooLarge,
    /// The server's history no longer reaches the cursor: events were lost.
    ServerReset,
    /// No pong / no server heartbeat in time.
    HeartbeatTimeout,
    /// The connection did not open within the deadline.
    OpenTimeout,
    /// The request failed without an HTTP status (DNS, refused, CORS, mixed content…).
    NetworkError,
    /// Another unexpected HTTP status, or an SSE answer that is not `text/event-stream`.
    HttpError,
    /// The server sent an `error` frame.
    ServerError,
    /// `send` was called while the outbox was full.
    OutboxFull,
    /// An upstream message could not be delivered.
    SendFailed,
    /// An option is invalid.
    InvalidOption,
    /// A URL is invalid or cannot be derived from the page.
    InvalidUrl,
    /// The configured maximum of attempts was reached.
    GaveUp,
    /// The client is closed.
    Closed,
}

impl ErrorCode {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            UpgradeRefused => "upgrade_refused",
            SilentAfterOpen => "silent_after_open",
            ClosedByPeer => "closed_by_peer",
            IdleCutoff => "idle_cutoff",
            SseBuffered => "sse_buffered",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            TokenProvider => "token_provider_failed",
            RateLimited => "rate_limited",
            Offline => "offline",
            BadFrame => "bad_frame",
            FrameTooLarge => "frame_too_large",
            ServerReset => "server_reset",
            HeartbeatTimeout => "heartbeat_timeout",
            OpenTimeout => "open_timeout",
            NetworkError => "network_error",
            HttpError => "http_error",
            ServerError => "server_error",
            OutboxFull => "outbox_full",
            SendFailed => "send_failed",
            InvalidOption => "invalid_option",
            InvalidUrl => "invalid_url",
            GaveUp => "gave_up",
            Closed => "closed",
        }
    }
}

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
