//! The engine's vocabulary: inputs it accepts, outputs it emits, and the small value types
//! they carry. Everything here is plain data; no type holds a clock, a socket or a callback.

use super::error::{FrameError, HoldfastError, HttpFailure};

/// Milliseconds on the caller's clock (`Date.now()` in the browser). Only differences
/// matter, except for [`RememberedRung::expires_at`], which is compared across page loads.
pub type Millis = u64;

/// One connection attempt (a WebSocket, an SSE stream, or one poll request). Inputs carry
/// the id the engine gave in [`Command::Open`]; inputs for an id the engine already closed
/// are ignored, so late callbacks from a dropped socket can never confuse it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u32);

/// A rung of the transport ladder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Transport {
    WebSocket,
    Sse,
    Polling,
}

impl Transport {
    /// Stable lower-case name: `websocket`, `sse`, `polling`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::Polling => "polling",
        }
    }

    /// Parses the stable name (also accepts `ws` and `poll`).
    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "websocket" | "ws" => Some(Transport::WebSocket),
            "sse" => Some(Transport::Sse),
            "polling" | "poll" => Some(Transport::Polling),
            _ => None,
        }
    }
}

/// A client-generated id for an upstream message. The server drops repeats by this id
/// (`Idempotency-Key` on POST, `id` in a WebSocket `send` frame).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct MessageId(pub String);

impl MessageId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A token. Its `Debug` never shows the value, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    /// The token itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The rung that worked for an endpoint, as persisted by the web layer
/// (see [`Command::Remember`]). `expires_at` is on the same clock as `now`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RememberedRung {
    pub transport: Transport,
    pub expires_at: Millis,
}

impl RememberedRung {
    /// A compact storage form: `"<transport> <expires_at>"`.
    pub fn encode(&self) -> String {
        let mut s = String::from(self.transport.as_str());
        s.push(' ');
        s.push_str(&super::util::u64_to_string(self.expires_at));
        s
    }

    /// Parses [`RememberedRung::encode`]'s output; anything else is `None` (stale or
    /// foreign storage is ignored, never an error).
    pub fn decode(s: &str) -> Option<RememberedRung> {
        let (t, e) = s.split_once(' ')?;
        Some(RememberedRung {
            transport: Transport::parse(t)?,
            expires_at: super::util::parse_u64(e)?,
        })
    }
}

/// What the engine knows about the page when it is created.
#[derive(Clone, Debug, Default)]
pub struct PageContext {
    /// `location.href`; relative URLs resolve against it and `http(s)` maps to `ws(s)`.
    /// Empty when there is no page (then every URL in the options must be absolute).
    pub href: String,
    /// `navigator.onLine`.
    pub online: bool,
    /// `document.visibilityState == "visible"`.
    pub visible: bool,
    /// The stored rung for [`crate::engine::Engine::memory_key`], if any.
    pub remembered: Option<RememberedRung>,
}

impl PageContext {
    /// An online, visible page at `href`.
    pub fn new(href: &str) -> PageContext {
        PageContext {
            href: href.into(),
            online: true,
            visible: true,
            remembered: None,
        }
    }
}

/// One decoded unit from the server: an application event or a control frame.
#[derive(Clone, PartialEq, Debug)]
pub enum Item<D> {
    /// An application event. `id` is the resume cursor value, when the server gives one.
    Event {
        id: Option<String>,
        kind: String,
        data: D,
    },
    /// First frame of a connection (or a poll batch's `cursor`): data flows. `cursor` is the
    /// newest id the server holds, adopted when the client has none yet.
    Hello {
        cursor: Option<String>,
        heartbeat_ms: Option<u64>,
    },
    Heartbeat,
    Pong,
    /// The server can no longer reach back to our cursor: events were lost.
    Reset {
        reason: String,
        oldest: Option<String>,
    },
    /// Upstream message `id` was accepted.
    Ack {
        id: String,
    },
    /// The server rejects something (`{"type":"error"}`).
    ServerError {
        code: String,
        message: String,
    },
    /// An event over `max_frame_bytes` inside a batch the web layer could still read (a
    /// poll body): not delivered, reported, and its id still moves the cursor, so a
    /// reconnect does not fetch it again and again.
    TooLarge {
        id: Option<String>,
        size: usize,
        limit: usize,
    },
    /// An entry of a batch (a poll body, a WebSocket frame holding an array) that does not
    /// decode: not an object, or a field of the wrong type. The good entries around it are
    /// delivered; it is reported, and when its `id` could still be read the cursor moves
    /// past it, so the next poll does not fetch it again and again.
    Malformed {
        id: Option<String>,
        error: FrameError,
    },
}

/// Everything that can happen to the engine. Connection-scoped inputs carry the
/// [`ConnId`] from [`Command::Open`].
#[derive(Clone, Debug)]
pub enum Input<D> {
    /// Begin connecting (the app created the client or called `connect`).
    Start,
    /// The app closes the client: close everything, stop retrying.
    Close,
    /// The timer armed for [`crate::engine::Engine::poll_timeout`] fired (it may fire late
    /// or early; the engine checks every deadline against `now`).
    Timeout,
    /// Answer to [`Command::RequestToken`]: the token, or why the provider failed.
    Token(Result<String, String>),
    /// WebSocket `onopen`, SSE response headers with status 200, or a poll response 200.
    Opened {
        conn: ConnId,
    },
    /// A non-2xx HTTP status on an SSE stream or a poll request. `retry_after_ms` comes from
    /// `Retry-After`; `error_code` from the JSON body's `"error"`.
    HttpStatus {
        conn: ConnId,
        status: u16,
        retry_after_ms: Option<u64>,
        error_code: Option<String>,
    },
    /// Bytes arrived (an SSE chunk, a comment) even if no whole event was decoded yet.
    Activity {
        conn: ConnId,
        bytes: usize,
    },
    /// One decoded WebSocket frame, SSE event, or poll batch, in order.
    Items {
        conn: ConnId,
        items: Vec<Item<D>>,
    },
    /// A frame could not be decoded, or was too large.
    BadFrame {
        conn: ConnId,
        error: FrameError,
    },
    /// The socket closed, the stream ended, the request failed, or a poll request finished.
    /// `code` is the WebSocket close code when there is one.
    Closed {
        conn: ConnId,
        code: Option<u16>,
        reason: String,
    },
    /// Outcome of a [`Command::Post`].
    SendResult {
        msg_id: MessageId,
        result: Result<(), HttpFailure>,
    },
    Online,
    Offline,
    Visible,
    Hidden,
    /// The stored rung, read by the web layer under [`crate::engine::Engine::memory_key`].
    /// Give it before `Start` (or in [`PageContext::remembered`]).
    Remembered(Option<RememberedRung>),
}

/// What the web layer must do.
#[derive(Clone, Debug)]
pub enum Command<D> {
    /// Open a connection. `url` is complete (topic, params, cursor; for WebSocket also the
    /// token, since browsers cannot set headers there). For SSE and polling send `token` as
    /// `Authorization: Bearer` and `last_event_id` as `Last-Event-ID` (SSE).
    Open {
        conn: ConnId,
        transport: Transport,
        url: String,
        token: Option<Secret>,
        last_event_id: Option<String>,
    },
    /// Close (or abort) a connection. No further inputs are expected for it.
    CloseConn { conn: ConnId, code: u16 },
    /// Send this text frame as a liveness probe on a WebSocket.
    SendPing { conn: ConnId, text: String },
    /// Send `{"type":"send","id":msg_id,"data":data}` on a WebSocket.
    SendUpstream {
        conn: ConnId,
        msg_id: MessageId,
        data: D,
    },
    /// POST `data` as JSON to `url` with `Idempotency-Key: msg_id` (and the token as
    /// `Authorization: Bearer`); answer with [`Input::SendResult`].
    Post {
        msg_id: MessageId,
        url: String,
        token: Option<Secret>,
        data: D,
    },
    /// Call the app's token provider; answer with [`Input::Token`].
    RequestToken,
    /// Persist `value` under `key` (localStorage).
    Remember { key: String, value: RememberedRung },
    /// Remove `key` from storage.
    Forget { key: String },
}

/// What the application sees.
#[derive(Clone, Debug)]
pub enum AppEvent<D> {
    /// An event, delivered exactly once and in order.
    Message {
        id: Option<String>,
        kind: String,
        data: D,
    },
    /// Events were lost (the server's history no longer reaches the cursor): reload state.
    Gap {
        reason: String,
        cursor: Option<String>,
        oldest: Option<String>,
    },
    /// Something went wrong; the engine keeps trying unless the status is `closed`.
    Error(HoldfastError),
    /// Upstream message acknowledged by the server.
    Acked { msg_id: MessageId },
    /// Upstream message dropped (the client was closed before it could be delivered).
    SendFailed {
        msg_id: MessageId,
        error: HoldfastError,
    },
    /// [`crate::engine::Engine::snapshot`] changed.
    StateChanged,
    /// Only the snapshot's `cursor` changed (an event was delivered): the hot path, so the
    /// bindings can patch one field instead of rebuilding the whole snapshot.
    CursorMoved,
}

/// One output: a command for the web layer or an event for the app.
#[derive(Clone, Debug)]
pub enum Output<D> {
    Command(Command<D>),
    Event(AppEvent<D>),
}

/// Connection status as the app sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// Created, not started.
    Idle,
    /// First connection attempt in progress.
    Connecting,
    /// Events flow.
    Connected,
    /// Lost the connection; waiting or trying again.
    Reconnecting,
    /// The browser reports no network; paused until `online`.
    Offline,
    /// Closed by the app, or gave up after the configured maximum of attempts.
    Closed,
}

impl Status {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Reconnecting => "reconnecting",
            Status::Offline => "offline",
            Status::Closed => "closed",
        }
    }
}

/// The state an app renders. Updated (and [`AppEvent::StateChanged`], or
/// [`AppEvent::CursorMoved`] when only the cursor moved, emitted) only when a field changes.
#[derive(Clone, PartialEq, Debug)]
pub struct Snapshot {
    pub status: Status,
    /// The rung delivering events now.
    pub transport: Option<Transport>,
    /// Id of the last event delivered.
    pub cursor: Option<String>,
    /// Failed attempts since the last healthy connection.
    pub attempt: u32,
    /// When the next attempt starts, while waiting.
    pub next_retry_at: Option<Millis>,
    /// Upstream messages not yet acknowledged.
    pub outbox_len: usize,
    /// The most recent error.
    pub last_error: Option<HoldfastError>,
    /// Current client ping interval (shortened by the adaptive heartbeat).
    pub ping_interval_ms: u64,
}
