//! Options: every knob with its default and its validation. Defaults follow DESIGN.md and
//! the seeds (ping every 30 s, pong timeout 5 s, 3 missed pongs; backoff 0.5 s ×2 up to 30 s).
//! [`Options::validate`] rejects nonsense with an [`ErrorCode::InvalidOption`] error that names
//! the option, so a typo never turns into a silent hang.

use super::error::{ErrorCode, HoldfastError};
use super::types::Transport;
use super::util::cat;

/// All client options. Build with `Options::new(url)` and adjust fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Base URL of the endpoints (`/realtime`, `https://api.example.com/realtime`,
    /// `wss://…`). Relative URLs resolve against the page; `http(s)` maps to `ws(s)` for the
    /// WebSocket rung. Rungs add `/ws`, `/sse`, `/poll`; upstream POSTs go to `/send`.
    pub url: String,
    /// The topic (`?topic=`); `None` leaves the parameter out (server default).
    pub topic: Option<String>,
    /// Extra query parameters added to every URL.
    pub params: Vec<(String, String)>,
    /// Starting cursor: the id of the last event the application already has. It is sent on
    /// the first connect, and ordered ids at or before it are not delivered.
    pub since: Option<String>,
    /// The ladder, top first. Any order or subset; no repeats.
    pub transports: Vec<Transport>,
    /// Full URL of the WebSocket rung, instead of `{url}/ws`.
    pub websocket_url: Option<String>,
    /// Full URL of the SSE rung, instead of `{url}/sse`.
    pub sse_url: Option<String>,
    /// Full URL of the polling rung, instead of `{url}/poll`.
    pub poll_url: Option<String>,
    /// Full URL for upstream POSTs, instead of `{url}/send`.
    pub send_url: Option<String>,
    /// The app has a token provider: ask it before connecting and after 401/4401/4402.
    pub use_token: bool,
    pub backoff: BackoffOptions,
    pub heartbeat: HeartbeatOptions,
    pub timeouts: TimeoutOptions,
    pub probe: ProbeOptions,
    pub memory: MemoryOptions,
    pub polling: PollingOptions,
    /// Upstream messages held while not acknowledged; `send` fails with `outbox_full` beyond.
    pub outbox_capacity: usize,
    /// How many recent opaque event ids are remembered to drop repeats.
    pub dedup_window: usize,
    /// Largest accepted WebSocket frame / SSE event / poll body, in bytes (default 1 MiB).
    pub max_frame_bytes: usize,
    /// How many attempts and notes the diagnostics keep.
    pub diagnostics_capacity: usize,
    pub interop: Interop,
}

/// Retry delays. Attempt `n ≥ 1` (consecutive failures) waits a random time in
/// `[cap × (1 − jitter), cap]` with `cap = min(max_ms, initial_ms × factor^n)`. The first retry after a
/// connection that was working waits a random time in `[0, spread_ms]`, so clients cut at
/// the same instant (a server restart) do not come back at once.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffOptions {
    pub initial_ms: u64,
    pub factor: f64,
    /// Share of each wait that is random: the wait is in `[cap × (1 − jitter), cap]`.
    /// 0.5 ("equal jitter", the default) keeps a floor; 1 is "full jitter".
    pub jitter: f64,
    pub max_ms: u64,
    pub spread_ms: u64,
    /// A connection open this long resets the attempt counter.
    pub healthy_after_ms: u64,
    /// Give up (status `closed`, error `gave_up`) after this many consecutive failures.
    /// `None`: never give up.
    pub max_attempts: Option<u32>,
}

/// Liveness. On WebSocket the client pings after `ping_interval_ms` without any frame; a
/// missing answer within `pong_timeout_ms` is a miss and is pinged again at once;
/// `max_missed` misses in a row close the connection. SSE and polling rely on server
/// heartbeats: no bytes for `server_silence_ms` (or twice the hello's `heartbeatMs` plus
/// the pong timeout, when the server announces it) closes the connection.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatOptions {
    pub ping_interval_ms: u64,
    pub pong_timeout_ms: u64,
    pub max_missed: u32,
    pub server_silence_ms: u64,
    /// Shorten the ping interval below an idle cut-off observed twice.
    pub adaptive: bool,
    /// A timer firing this much later than asked means the machine slept (doubled, at
    /// least 65 s, while the page is hidden because browsers throttle background timers).
    pub clock_jump_ms: u64,
}

/// Deadlines for a connection attempt. `0` disables a check.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeoutOptions {
    /// Not open after this long: the attempt failed (`open_timeout`).
    pub open_ms: u64,
    /// Not delivering after this long: start the next rung in parallel (early race).
    pub race_ms: u64,
    /// WebSocket open but no first frame after this long: `silent_after_open`.
    pub first_frame_ms: u64,
    /// SSE headers received but no bytes after this long: `sse_buffered`.
    pub sse_first_bytes_ms: u64,
}

/// Background probes of a higher rung while on a lower one.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOptions {
    pub enabled: bool,
    /// First probe this long after settling on a lower rung; doubles after each failure.
    pub initial_ms: u64,
    pub max_ms: u64,
}

/// Rung memory (localStorage in the browser).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryOptions {
    pub enabled: bool,
    pub ttl_ms: u64,
}

/// The polling rung.
#[derive(Clone, Debug, PartialEq)]
pub struct PollingOptions {
    /// Long-poll hold time asked from the server (`wait=`); `None` leaves it out.
    pub wait_ms: Option<u64>,
    /// Least time between the starts of two empty polls (short-poll servers).
    pub interval_ms: u64,
    /// Ask for no new poll while the page is hidden (the request in flight completes);
    /// on return one poll fetches everything missed.
    pub pause_when_hidden: bool,
}

/// Wire names, for backends that already exist.
#[derive(Clone, Debug, PartialEq)]
pub struct Interop {
    pub id_field: String,
    pub type_field: String,
    pub data_field: String,
    /// Field of a poll response holding the events (`{"events":[...]}`).
    pub events_field: String,
    pub since_param: String,
    pub topic_param: String,
    pub token_param: String,
    pub wait_param: String,
    /// Query parameter asking an SSE server for heartbeats more often (adaptive heartbeat).
    pub heartbeat_param: String,
    /// Text of a client ping frame: `{"type":"ping"}` (default) or e.g. `ping`.
    pub ping_text: String,
    /// `type` of a pong frame; a plain-text frame equal to it also counts.
    pub pong_type: String,
    /// `type` of a server heartbeat frame.
    pub heartbeat_type: String,
}

impl Default for Interop {
    fn default() -> Self {
        Interop {
            id_field: "id".into(),
            type_field: "type".into(),
            data_field: "data".into(),
            events_field: "events".into(),
            since_param: "since".into(),
            topic_param: "topic".into(),
            token_param: "token".into(),
            wait_param: "wait".into(),
            heartbeat_param: "heartbeat".into(),
            ping_text: "{\"type\":\"ping\"}".into(),
            pong_type: "pong".into(),
            heartbeat_type: "heartbeat".into(),
        }
    }
}

impl Default for BackoffOptions {
    fn default() -> Self {
        BackoffOptions {
            initial_ms: 500,
            factor: 2.0,
            jitter: 0.5,
            max_ms: 30_000,
            spread_ms: 5_000,
            healthy_after_ms: 10_000,
            max_attempts: None,
        }
    }
}

impl Default for HeartbeatOptions {
    fn default() -> Self {
        HeartbeatOptions {
            ping_interval_ms: 30_000,
            pong_timeout_ms: 5_000,
            max_missed: 3,
            server_silence_ms: 65_000,
            adaptive: true,
            clock_jump_ms: 15_000,
        }
    }
}

impl Default for TimeoutOptions {
    fn default() -> Self {
        TimeoutOptions {
            open_ms: 10_000,
            race_ms: 3_000,
            first_frame_ms: 5_000,
            sse_first_bytes_ms: 5_000,
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            enabled: true,
            initial_ms: 30_000,
            max_ms: 600_000,
        }
    }
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            enabled: true,
            ttl_ms: 24 * 60 * 60 * 1000,
        }
    }
}

impl Default for PollingOptions {
    fn default() -> Self {
        PollingOptions {
            wait_ms: Some(25_000),
            interval_ms: 1_000,
            pause_when_hidden: false,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new("/realtime")
    }
}

fn invalid(option: &str, why: &str) -> HoldfastError {
    HoldfastError::new(
        ErrorCode::InvalidOption,
        cat(&["option `", option, "` ", why]),
    )
}

impl Options {
    /// Defaults for the endpoints under `url`.
    pub fn new(url: &str) -> Options {
        Options {
            url: url.into(),
            topic: None,
            params: Vec::new(),
            since: None,
            transports: vec![Transport::WebSocket, Transport::Sse, Transport::Polling],
            websocket_url: None,
            sse_url: None,
            poll_url: None,
            send_url: None,
            use_token: false,
            backoff: BackoffOptions::default(),
            heartbeat: HeartbeatOptions::default(),
            timeouts: TimeoutOptions::default(),
            probe: ProbeOptions::default(),
            memory: MemoryOptions::default(),
            polling: PollingOptions::default(),
            outbox_capacity: 1_000,
            dedup_window: 1_024,
            max_frame_bytes: 1 << 20,
            diagnostics_capacity: 32,
            interop: Interop::default(),
        }
    }

    /// Checks every option; the error names the first bad one and says what is allowed.
    /// URLs are checked when the engine is created (they need the page).
    pub fn validate(&self) -> Result<(), HoldfastError> {
        // A year is more than any sane timing and keeps every deadline far from overflow.
        const MAX_MS: u64 = 365 * 24 * 3600 * 1000;
        let b = &self.backoff;
        let h = &self.heartbeat;
        let t = &self.timeouts;
        for (name, v) in [
            ("backoff.initialMs", b.initial_ms),
            ("backoff.maxMs", b.max_ms),
            ("backoff.spreadMs", b.spread_ms),
            ("backoff.healthyAfterMs", b.healthy_after_ms),
            ("heartbeat.pingIntervalMs", h.ping_interval_ms),
            ("heartbeat.pongTimeoutMs", h.pong_timeout_ms),
            ("heartbeat.serverSilenceMs", h.server_silence_ms),
            ("heartbeat.clockJumpMs", h.clock_jump_ms),
            ("timeouts.openMs", t.open_ms),
            ("timeouts.raceMs", t.race_ms),
            ("timeouts.firstFrameMs", t.first_frame_ms),
            ("timeouts.sseFirstBytesMs", t.sse_first_bytes_ms),
            ("probe.initialMs", self.probe.initial_ms),
            ("probe.maxMs", self.probe.max_ms),
            ("memory.ttlMs", self.memory.ttl_ms),
            ("polling.waitMs", self.polling.wait_ms.unwrap_or(0)),
            ("polling.intervalMs", self.polling.interval_ms),
        ] {
            if v > MAX_MS {
                return Err(invalid(name, "must be at most a year (31536000000 ms)"));
            }
        }
        if self.transports.is_empty() {
            return Err(invalid(
                "transports",
                "must list at least one of websocket, sse, polling",
            ));
        }
        for (i, t) in self.transports.iter().enumerate() {
            if self.transports[..i].contains(t) {
                return Err(invalid("transports", "must not list a transport twice"));
            }
        }
        if self.url.trim().is_empty()
            && self
                .transports
                .iter()
                .any(|t| self.rung_override(*t).is_none())
        {
            return Err(invalid("url", "must not be empty (e.g. \"/realtime\")"));
        }
        let b = &self.backoff;
        if b.initial_ms == 0 {
            return Err(invalid("backoff.initialMs", "must be at least 1 ms"));
        }
        if !(b.factor >= 1.0 && b.factor <= 100.0) {
            return Err(invalid("backoff.factor", "must be a number from 1 to 100"));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            return Err(invalid("backoff.jitter", "must be a number from 0 to 1"));
        }
        if self.since.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(invalid("since", "must be a non-empty event id when given"));
        }
        if b.max_ms < b.initial_ms {
            return Err(invalid(
                "backoff.maxMs",
                "must be at least backoff.initialMs",
            ));
        }
        if b.max_attempts == Some(0) {
            return Err(invalid(
                "backoff.maxAttempts",
                "must be at least 1 (or absent: never give up)",
            ));
        }
        let h = &self.heartbeat;
        if h.ping_interval_ms < 1_000 {
            return Err(invalid(
                "heartbeat.pingIntervalMs",
                "must be at least 1000 ms",
            ));
        }
        if h.pong_timeout_ms == 0 || h.pong_timeout_ms >= h.ping_interval_ms {
            return Err(invalid(
                "heartbeat.pongTimeoutMs",
                "must be more than 0 and less than heartbeat.pingIntervalMs",
            ));
        }
        if h.max_missed == 0 {
            return Err(invalid("heartbeat.maxMissed", "must be at least 1"));
        }
        if h.server_silence_ms < 1_000 {
            return Err(invalid(
                "heartbeat.serverSilenceMs",
                "must be at least 1000 ms",
            ));
        }
        if h.clock_jump_ms < 1_000 {
            return Err(invalid("heartbeat.clockJumpMs", "must be at least 1000 ms"));
        }
        if self.probe.enabled
            && (self.probe.initial_ms < 1_000 || self.probe.max_ms < self.probe.initial_ms)
        {
            return Err(invalid(
                "probe.initialMs",
                "must be at least 1000 ms and at most probe.maxMs",
            ));
        }
        if self.memory.enabled && self.memory.ttl_ms == 0 {
            return Err(invalid("memory.ttlMs", "must be more than 0"));
        }
        if self.polling.interval_ms == 0 {
            return Err(invalid("polling.intervalMs", "must be at least 1 ms"));
        }
        if self.outbox_capacity == 0 {
            return Err(invalid("outboxCapacity", "must be at least 1"));
        }
        if self.dedup_window == 0 {
            return Err(invalid("dedupWindow", "must be at least 1"));
        }
        if self.max_frame_bytes < 64 {
            return Err(invalid("maxFrameBytes", "must be at least 64 bytes"));
        }
        if self.diagnostics_capacity == 0 {
            return Err(invalid("diagnosticsCapacity", "must be at least 1"));
        }
        let i = &self.interop;
        for (name, v) in [
            ("interop.idField", &i.id_field),
            ("interop.typeField", &i.type_field),
            ("interop.dataField", &i.data_field),
            ("interop.eventsField", &i.events_field),
            ("interop.sinceParam", &i.since_param),
            ("interop.topicParam", &i.topic_param),
            ("interop.tokenParam", &i.token_param),
            ("interop.waitParam", &i.wait_param),
            ("interop.heartbeatParam", &i.heartbeat_param),
            ("interop.pingText", &i.ping_text),
            ("interop.pongType", &i.pong_type),
            ("interop.heartbeatType", &i.heartbeat_type),
        ] {
            if v.is_empty() {
                return Err(invalid(name, "must not be empty"));
            }
        }
        for (k, _) in &self.params {
            if k.is_empty() {
                return Err(invalid(
                    "params",
                    "must not contain an empty parameter name",
                ));
            }
        }
        Ok(())
    }

    /// The per-rung URL override, if set.
    pub fn rung_override(&self, t: Transport) -> Option<&str> {
        match t {
            Transport::WebSocket => self.websocket_url.as_deref(),
            Transport::Sse => self.sse_url.as_deref(),
            Transport::Polling => self.poll_url.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_design() {
        let o = Options::default();
        assert!(o.validate().is_ok());
        assert_eq!(o.heartbeat.ping_interval_ms, 30_000);
        assert_eq!(o.heartbeat.pong_timeout_ms, 5_000);
        assert_eq!(o.heartbeat.max_missed, 3);
        assert_eq!(o.backoff.initial_ms, 500);
        assert_eq!(o.backoff.max_ms, 30_000);
        assert_eq!(o.max_frame_bytes, 1 << 20);
    }

    #[test]
    fn a_bad_option_is_named_in_the_error() {
        let mut o = Options::default();
        o.transports.clear();
        let e = o.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidOption);
        assert!(e.message.contains("transports"));

        let mut o = Options::default();
        o.heartbeat.pong_timeout_ms = 40_000;
        assert!(o
            .validate()
            .unwrap_err()
            .message
            .contains("heartbeat.pongTimeoutMs"));

        let mut o = Options::default();
        o.backoff.factor = f64::NAN;
        assert!(o.validate().unwrap_err().message.contains("backoff.factor"));

        let mut o = Options::default();
        o.transports = vec![Transport::Sse, Transport::Sse];
        assert!(o.validate().unwrap_err().message.contains("twice"));

        let mut o = Options::default();
        o.interop.since_param.clear();
        assert!(o
            .validate()
            .unwrap_err()
            .message
            .contains("interop.sinceParam"));

        let mut o = Options::default();
        o.outbox_capacity = 0;
        assert!(o.validate().unwrap_err().message.contains("outboxCapacity"));
    }
}
