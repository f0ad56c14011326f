//! Options: every knob with its default and its validation. Defaults: ping every 30 s, pong
//! timeout 5 s, 3 missed pongs; backoff 0.5 s ×2 up to 30 s.
//!
//! One vocabulary. Options are named as JavaScript spells them (`outboxLimit`,
//! `heartbeat.intervalMs`, `interop.pingText`) everywhere a user reads a name: every error
//! of [`Options::validate`] and [`Options::from_js`] is an [`ErrorCode::InvalidOption`]
//! that starts with `options.<name>` and says what is allowed, so a typo never turns into
//! a silent hang. [`Options::from_js`] is the one reading of the JS option names into these
//! fields; the bindings only flatten the object into `(name, value)` leaves ([`JsLeaf`]).
//!
//! One set of rules. The JS wrapper (`js/src/core.ts`) must reject invalid options
//! synchronously in `createClient`, before the wasm module is even loaded, so it applies
//! these same rules itself (`NUMBERS` there mirrors the `Num` constants here). They are
//! kept equal by a shared list of cases, `js/test/option-cases.json`, that the JS tests pass
//! to `createClient` and `tests::the_engine_judges_every_shared_option_case_like_create_client`
//! passes to the engine: both must accept the valid ones and reject each invalid one naming
//! the same option. Whatever the wrapper accepts therefore creates an engine.

use super::error::{ErrorCode, HoldfastError};
use super::types::Transport;
use super::util::{cat, u64_to_string};

/// All client options. Build with `Options::new(url)` and adjust fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Base URL of the endpoints (`/realtime`, `https://api.example.com/realtime`,
    /// `wss://…`). Relative URLs resolve against the page; `http(s)` maps to `ws(s)` for the
    /// WebSocket rung. Rungs add `/ws`, `/sse`, `/poll`; upstream POSTs go to `/send`.
    pub url: String,
    /// The topic, sent as the query parameter `interop.topic_param` (`?topic=` by default,
    /// `?deploymentId=` for a backend that calls it that) on every URL, upstream included;
    /// `None` leaves the parameter out (the server's default topic).
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
/// `max_missed` misses in a row close the connection. Any positive pair is valid: while a
/// ping is unanswered the next one waits for its deadline (never one per interval), so a
/// timeout longer than the interval (SignalR-style servers) only means a dead connection is
/// declared after `ping_interval_ms + max_missed × pong_timeout_ms` of silence. SSE and
/// polling rely on server heartbeats: no bytes for `server_silence_ms` (or twice the hello's
/// `heartbeatMs` plus the pong timeout, when the server announces it) closes the connection.
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
    /// Not open after this long: start the next rung in parallel (early race).
    pub race_ms: u64,
    /// An open WebSocket whose path no hello or pong has proven, silent this long, is
    /// cross-checked with a poll (idle or blocked: `silent_after_open`); the wait doubles
    /// while it stays idle. Also how long a probe, or a socket to a server that spoke first
    /// before, may stay silent. `0`: no checks.
    pub first_frame_ms: u64,
    /// The same for an SSE stream (blocked: `sse_buffered`).
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

/// A day: the longest most timing options may be. More is a unit mistake (seconds typed
/// as milliseconds, times 1000), and the bounds keep every deadline far from overflow.
const DAY: u64 = 86_400_000;

/// A numeric option as JavaScript spells it and what it allows: least, most, and whether
/// only whole numbers are (counts; milliseconds may have a fraction, which is dropped).
/// `js/src/core.ts` has the same table (`NUMBERS`); `js/test/option-cases.json` holds the
/// cases both must judge alike.
struct Num {
    name: &'static str,
    min: u64,
    max: u64,
    int: bool,
}

const fn n(name: &'static str, min: u64, max: u64) -> Num {
    Num {
        name,
        min,
        max,
        int: false,
    }
}

const fn whole(name: &'static str, min: u64, max: u64) -> Num {
    Num {
        name,
        min,
        max,
        int: true,
    }
}

const HB_INTERVAL: Num = n("heartbeat.intervalMs", 1_000, DAY);
const HB_TIMEOUT: Num = n("heartbeat.timeoutMs", 100, DAY);
const HB_MISSED: Num = whole("heartbeat.maxMissed", 1, 1_000);
const HB_SILENCE: Num = n("heartbeat.serverSilenceMs", 1_000, DAY);
const B_INITIAL: Num = n("backoff.initialMs", 1, DAY);
const B_MAX: Num = n("backoff.maxMs", 1, DAY);
const B_MULTIPLIER: Num = n("backoff.multiplier", 1, 100);
const B_JITTER: Num = n("backoff.jitter", 0, 1);
const MAX_ATTEMPTS: Num = whole("maxAttempts", 1, 1_000_000_000);
const P_WAIT: Num = n("polling.waitMs", 0, 120_000);
const P_INTERVAL: Num = n("polling.intervalMs", 1, DAY);
const T_OPEN: Num = n("timeouts.openMs", 0, DAY);
const T_RACE: Num = n("timeouts.raceMs", 0, DAY);
const T_FIRST_FRAME: Num = n("timeouts.firstFrameMs", 0, DAY);
const T_SSE_BYTES: Num = n("timeouts.sseFirstBytesMs", 0, DAY);
const PR_INITIAL: Num = n("probe.initialMs", 1_000, DAY);
const PR_MAX: Num = n("probe.maxMs", 1_000, 30 * DAY);
const R_TTL: Num = n("remember.ttlMs", 1, 365 * DAY);
const MAX_FRAME: Num = whole("maxFrameBytes", 64, 1 << 30);
const OUTBOX: Num = whole("outboxLimit", 1, 1_000_000);
// Engine-only knobs (no JS option yet): named in the same style.
const B_SPREAD: Num = n("backoff.spreadMs", 0, DAY);
const B_HEALTHY: Num = n("backoff.healthyAfterMs", 0, DAY);
const HB_CLOCK_JUMP: Num = n("heartbeat.clockJumpMs", 1_000, DAY);
const DEDUP: Num = whole("dedupWindow", 1, 1_000_000);
const DIAGNOSTICS: Num = whole("diagnosticsCapacity", 1, 10_000);

fn invalid(option: &str, why: &str) -> HoldfastError {
    HoldfastError::new(
        ErrorCode::InvalidOption,
        cat(&["options.", option, " ", why]),
    )
}

impl Num {
    fn allowed(&self) -> String {
        let kind = if self.int { "an integer" } else { "a number" };
        cat(&[
            "must be ",
            kind,
            " from ",
            &u64_to_string(self.min),
            " to ",
            &u64_to_string(self.max),
        ])
    }

    fn check(&self, v: u64) -> Result<(), HoldfastError> {
        if v < self.min || v > self.max {
            return Err(invalid(
                self.name,
                &cat(&[&self.allowed(), ", got ", &u64_to_string(v)]),
            ));
        }
        Ok(())
    }

    /// Checks a number read from JS (any `f64`, NaN included).
    fn read(&self, v: f64) -> Result<f64, HoldfastError> {
        if !(v >= self.min as f64 && v <= self.max as f64) || (self.int && v.fract() != 0.0) {
            return Err(invalid(self.name, &self.allowed()));
        }
        Ok(v)
    }
}

/// The interop names that are query parameters, which must differ from each other and
/// from the names in `params`.
fn query_names(i: &Interop) -> [(&'static str, &str); 5] {
    [
        ("interop.topicParam", &i.topic_param),
        ("interop.sinceParam", &i.since_param),
        ("interop.tokenParam", &i.token_param),
        ("interop.waitParam", &i.wait_param),
        ("interop.heartbeatParam", &i.heartbeat_param),
    ]
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

    /// Checks every option; the error names the first bad one as JavaScript spells it
    /// (`options.outboxLimit`, `options.heartbeat.intervalMs`) and says what is allowed.
    /// URLs are resolved when the engine is created (they need the page).
    ///
    /// Any positive heartbeat pair is valid, `heartbeat.timeoutMs` longer than
    /// `heartbeat.intervalMs` included (SignalR-style servers need it): while a ping is
    /// unanswered the next ping waits for that ping's deadline, so pings never pile up.
    pub fn validate(&self) -> Result<(), HoldfastError> {
        if self.transports.is_empty() {
            return Err(invalid(
                "transports",
                "must list at least one of 'websocket', 'sse', 'polling'",
            ));
        }
        for (i, t) in self.transports.iter().enumerate() {
            if self.transports[..i].contains(t) {
                return Err(invalid("transports", "lists a transport twice"));
            }
        }
        for (name, u) in [
            ("urls.websocket", &self.websocket_url),
            ("urls.sse", &self.sse_url),
            ("urls.polling", &self.poll_url),
            ("urls.send", &self.send_url),
        ] {
            if u.as_deref().is_some_and(|u| u.trim().is_empty()) {
                return Err(invalid(name, "must be a non-empty URL or path"));
            }
        }
        if self.url.trim().is_empty() {
            // Upstream POSTs go to `{url}/send` when SSE or polling carries the session.
            let needs_send = self.transports.iter().any(|t| *t != Transport::WebSocket);
            if self
                .transports
                .iter()
                .any(|t| self.rung_override(*t).is_none())
                || (needs_send && self.send_url.is_none())
            {
                return Err(invalid(
                    "url",
                    "is required: the base URL or path of the endpoints, e.g. \"/realtime\" (it may be left out only when `urls` gives every rung in `transports`, and `urls.send` when they include sse or polling)",
                ));
            }
        }
        if self.topic.as_deref().is_some_and(|t| t.is_empty()) {
            return Err(invalid(
                "topic",
                "must be a non-empty string when given (leave it out for the server's default topic)",
            ));
        }
        if self.since.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(invalid(
                "since",
                "must be a non-empty event id when given (leave it out to start from now)",
            ));
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
                return Err(invalid(
                    name,
                    "must be a non-empty string (leave it out for the default)",
                ));
            }
        }
        let q = query_names(i);
        for (a, (name, v)) in q.iter().enumerate() {
            if let Some((other, _)) = q[..a].iter().find(|(_, w)| w == v) {
                return Err(invalid(
                    name,
                    &cat(&[
                        "is \"",
                        v,
                        "\", the same as ",
                        other,
                        ": each query parameter needs its own name",
                    ]),
                ));
            }
        }
        for (k, _) in &self.params {
            if k.is_empty() {
                return Err(invalid(
                    "params",
                    "must not contain an empty parameter name",
                ));
            }
            let param = cat(&["params.", k]);
            if self.topic.is_some() && *k == i.topic_param {
                return Err(invalid(
                    &param,
                    "repeats `topic`: give the topic once, as `topic`",
                ));
            }
            // The client sets these itself; a second copy would contradict it.
            if let Some((name, _)) = q[1..].iter().find(|(_, v)| *v == k) {
                return Err(invalid(
                    &param,
                    &cat(&[
                        "is a parameter the client sets itself; remove it (to rename the client's parameter, set ",
                        name,
                        ")",
                    ]),
                ));
            }
        }
        let b = &self.backoff;
        let h = &self.heartbeat;
        let t = &self.timeouts;
        for (num, v) in [
            (&HB_INTERVAL, h.ping_interval_ms),
            (&HB_TIMEOUT, h.pong_timeout_ms),
            (&HB_MISSED, h.max_missed as u64),
            (&HB_SILENCE, h.server_silence_ms),
            (&HB_CLOCK_JUMP, h.clock_jump_ms),
            (&B_INITIAL, b.initial_ms),
            (&B_MAX, b.max_ms),
            (&B_SPREAD, b.spread_ms),
            (&B_HEALTHY, b.healthy_after_ms),
            (&MAX_ATTEMPTS, b.max_attempts.map_or(1, u64::from)),
            (&P_WAIT, self.polling.wait_ms.unwrap_or(0)),
            (&P_INTERVAL, self.polling.interval_ms),
            (&T_OPEN, t.open_ms),
            (&T_RACE, t.race_ms),
            (&T_FIRST_FRAME, t.first_frame_ms),
            (&T_SSE_BYTES, t.sse_first_bytes_ms),
            (&PR_INITIAL, self.probe.initial_ms),
            (&PR_MAX, self.probe.max_ms),
            (&R_TTL, self.memory.ttl_ms),
            (&MAX_FRAME, self.max_frame_bytes as u64),
            (&OUTBOX, self.outbox_capacity as u64),
            (&DEDUP, self.dedup_window as u64),
            (&DIAGNOSTICS, self.diagnostics_capacity as u64),
        ] {
            num.check(v)?;
        }
        for (num, v) in [(&B_MULTIPLIER, b.factor), (&B_JITTER, b.jitter)] {
            num.read(v)?;
        }
        if b.max_ms < b.initial_ms {
            return Err(invalid(
                "backoff.maxMs",
                &cat(&[
                    "must be at least backoff.initialMs (",
                    &u64_to_string(b.initial_ms),
                    " ms), got ",
                    &u64_to_string(b.max_ms),
                ]),
            ));
        }
        if self.probe.enabled && self.probe.max_ms < self.probe.initial_ms {
            return Err(invalid(
                "probe.maxMs",
                &cat(&[
                    "must be at least probe.initialMs (",
                    &u64_to_string(self.probe.initial_ms),
                    " ms), got ",
                    &u64_to_string(self.probe.max_ms),
                ]),
            ));
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

    /// Reads the JavaScript options object (`ClientOptions` in `js/src/types.ts`, after the
    /// wrapper's `normalizeOptions`: `token` is `true` when a token or provider was given,
    /// `since` and `params` values are strings), flattened by the caller into leaves
    /// ([`JsLeaf`]): `("url", Str)`, `("heartbeat.intervalMs", Num)`,
    /// `("params.tenant", Str)`. One level of the names in [`GROUPS`] is flattened; a group
    /// given as anything but an object stays one leaf under its own name. Unknown names
    /// and wrong types are `invalid_option` errors naming the option; values are left to
    /// [`Options::validate`]. `eventSource` belongs to the web layer and is skipped here.
    pub fn from_js(leaves: &[(String, JsLeaf)]) -> Result<Options, HoldfastError> {
        let mut opts = Options::new("");
        for (path, v) in leaves {
            let path = path.as_str();
            let read = if let Some((num, set)) = NUMERIC.iter().find(|(n, _)| n.name == path) {
                match v {
                    JsLeaf::Num(x) => set(&mut opts, num.read(*x)?),
                    _ => return Err(invalid(path, &num.allowed())),
                }
                true
            } else if let Some((_, field)) = STRINGS.iter().find(|(name, _)| *name == path) {
                match v {
                    JsLeaf::Str(s) => *field(&mut opts) = s.clone(),
                    _ => return Err(invalid(path, "must be a string")),
                }
                true
            } else {
                match (path, v) {
                    ("eventSource", _) | ("since", JsLeaf::Null) => true,
                    ("topic", JsLeaf::Str(s)) => {
                        opts.topic = Some(s.clone());
                        true
                    }
                    ("transports", JsLeaf::List(list)) => {
                        opts.transports.clear();
                        for t in list {
                            let Some(t) = Transport::parse(t) else {
                                return Err(invalid(
                                    path,
                                    "must list 'websocket', 'sse', 'polling'",
                                ));
                            };
                            opts.transports.push(t);
                        }
                        true
                    }
                    ("since", JsLeaf::Str(s)) => {
                        opts.since = Some(s.clone());
                        true
                    }
                    // A whole number is an id too (the wrapper passes it as a string already).
                    ("since", JsLeaf::Num(x))
                        if x.fract() == 0.0 && *x >= 0.0 && *x <= 9_007_199_254_740_991.0 =>
                    {
                        opts.since = Some(u64_to_string(*x as u64));
                        true
                    }
                    ("token", JsLeaf::Bool(b)) => {
                        opts.use_token = *b;
                        true
                    }
                    ("token", JsLeaf::Str(s)) => {
                        opts.use_token = true;
                        !s.is_empty()
                    }
                    // `false` turns the feature off, `true` keeps it; an object (its fields
                    // arrive as `probe.initialMs`, …) tunes it.
                    ("probe", JsLeaf::Bool(b)) => {
                        opts.probe.enabled = *b;
                        true
                    }
                    ("remember", JsLeaf::Bool(b)) => {
                        opts.memory.enabled = *b;
                        true
                    }
                    ("polling.pauseWhenHidden", JsLeaf::Bool(b)) => {
                        opts.polling.pause_when_hidden = *b;
                        true
                    }
                    _ => match (path.strip_prefix("params."), v) {
                        (Some(name), JsLeaf::Str(s)) => {
                            opts.params.push((name.into(), s.clone()));
                            true
                        }
                        (Some(_), _) => false,
                        (None, _) if OTHER_NAMES.contains(&path) || GROUPS.contains(&path) => false,
                        (None, _) => return Err(invalid(path, "is not an option")),
                    },
                }
            };
            if !read {
                // The wrapper says exactly what is expected; this only guards the engine.
                return Err(invalid(
                    path,
                    "has the wrong type or value (see ClientOptions in js/src/types.ts)",
                ));
            }
        }
        Ok(opts)
    }
}

/// One value of the JS options object, as [`Options::from_js`] reads it. The bindings
/// flatten a `JsValue` into these (`src/bindings`), the engine's tests a
/// `serde_json::Value`, so the reading of every JS option name is tested natively.
#[derive(Clone, Debug, PartialEq)]
pub enum JsLeaf {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    /// An array of strings.
    List(Vec<String>),
    /// Anything else: an object where a value belongs, a function, an array of non-strings.
    Other,
}

/// The options that are objects of options: their fields are flattened into
/// `group.field` leaves.
pub const GROUPS: &[&str] = &[
    "urls",
    "params",
    "heartbeat",
    "backoff",
    "polling",
    "timeouts",
    "probe",
    "remember",
    "interop",
];

type SetNum = fn(&mut Options, f64);

/// Every numeric JS option and where it goes.
const NUMERIC: &[(Num, SetNum)] = &[
    (HB_INTERVAL, |o, x| o.heartbeat.ping_interval_ms = x as u64),
    (HB_TIMEOUT, |o, x| o.heartbeat.pong_timeout_ms = x as u64),
    (HB_MISSED, |o, x| o.heartbeat.max_missed = x as u32),
    (HB_SILENCE, |o, x| o.heartbeat.server_silence_ms = x as u64),
    (B_INITIAL, |o, x| o.backoff.initial_ms = x as u64),
    (B_MAX, |o, x| o.backoff.max_ms = x as u64),
    (B_MULTIPLIER, |o, x| o.backoff.factor = x),
    (B_JITTER, |o, x| o.backoff.jitter = x),
    (MAX_ATTEMPTS, |o, x| o.backoff.max_attempts = Some(x as u32)),
    // 0: the server answers at once (short polling); no `wait=` is sent.
    (P_WAIT, |o, x| {
        o.polling.wait_ms = if x >= 1.0 { Some(x as u64) } else { None }
    }),
    (P_INTERVAL, |o, x| o.polling.interval_ms = x as u64),
    (T_OPEN, |o, x| o.timeouts.open_ms = x as u64),
    (T_RACE, |o, x| o.timeouts.race_ms = x as u64),
    (T_FIRST_FRAME, |o, x| o.timeouts.first_frame_ms = x as u64),
    (T_SSE_BYTES, |o, x| o.timeouts.sse_first_bytes_ms = x as u64),
    (PR_INITIAL, |o, x| o.probe.initial_ms = x as u64),
    (PR_MAX, |o, x| o.probe.max_ms = x as u64),
    (R_TTL, |o, x| o.memory.ttl_ms = x as u64),
    (MAX_FRAME, |o, x| o.max_frame_bytes = x as usize),
    (OUTBOX, |o, x| o.outbox_capacity = x as usize),
];

type StringField = fn(&mut Options) -> &mut String;

/// Every string JS option that is always present in the engine, and where it goes.
const STRINGS: &[(&str, StringField)] = &[
    ("url", |o| &mut o.url),
    ("interop.idField", |o| &mut o.interop.id_field),
    ("interop.typeField", |o| &mut o.interop.type_field),
    ("interop.dataField", |o| &mut o.interop.data_field),
    ("interop.eventsField", |o| &mut o.interop.events_field),
    ("interop.sinceParam", |o| &mut o.interop.since_param),
    ("interop.topicParam", |o| &mut o.interop.topic_param),
    ("interop.tokenParam", |o| &mut o.interop.token_param),
    ("interop.waitParam", |o| &mut o.interop.wait_param),
    ("interop.heartbeatParam", |o| &mut o.interop.heartbeat_param),
    ("interop.pingText", |o| &mut o.interop.ping_text),
    ("interop.pongType", |o| &mut o.interop.pong_type),
    ("interop.heartbeatType", |o| &mut o.interop.heartbeat_type),
    ("urls.websocket", |o| {
        o.websocket_url.get_or_insert_with(String::new)
    }),
    ("urls.sse", |o| o.sse_url.get_or_insert_with(String::new)),
    ("urls.polling", |o| {
        o.poll_url.get_or_insert_with(String::new)
    }),
    ("urls.send", |o| o.send_url.get_or_insert_with(String::new)),
];

/// The other option names [`Options::from_js`] reads (in its `match`).
const OTHER_NAMES: &[&str] = &[
    "topic",
    "transports",
    "since",
    "token",
    "probe",
    "remember",
    "polling.pauseWhenHidden",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::harness::H;
    use serde_json::Value;

    /// The leaves of a JSON options object, flattened as the bindings flatten a `JsValue`.
    fn flatten(js: &Value) -> Vec<(String, JsLeaf)> {
        let leaf = |v: &Value| match v {
            Value::Null => JsLeaf::Null,
            Value::Bool(b) => JsLeaf::Bool(*b),
            Value::Number(n) => JsLeaf::Num(n.as_f64().unwrap()),
            Value::String(s) => JsLeaf::Str(s.clone()),
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .map_or(JsLeaf::Other, JsLeaf::List),
            Value::Object(_) => JsLeaf::Other,
        };
        let mut out = Vec::new();
        for (k, v) in js.as_object().expect("options are an object") {
            match v.as_object() {
                Some(group) if GROUPS.contains(&k.as_str()) => {
                    for (field, x) in group {
                        out.push((format!("{k}.{field}"), leaf(x)));
                    }
                }
                _ => out.push((k.clone(), leaf(v))),
            }
        }
        out
    }

    /// What `createClient` would hand the engine for these JS options, read and checked.
    fn engine_for(js: &Value) -> Result<Options, HoldfastError> {
        let o = Options::from_js(&flatten(js))?;
        o.validate()?;
        Ok(o)
    }

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
        assert_eq!(
            Options::from_js(&flatten(&serde_json::json!({ "url": "/realtime" }))),
            Ok(o)
        );
    }

    #[test]
    fn errors_name_the_option_as_javascript_spells_it() {
        for (name, f) in [
            (
                "options.outboxLimit",
                (|o| o.outbox_capacity = 0) as fn(&mut Options),
            ),
            ("options.heartbeat.intervalMs", |o| {
                o.heartbeat.ping_interval_ms = 10
            }),
            ("options.heartbeat.timeoutMs", |o| {
                o.heartbeat.pong_timeout_ms = 0
            }),
            ("options.backoff.multiplier", |o| {
                o.backoff.factor = f64::NAN
            }),
            ("options.remember.ttlMs", |o| o.memory.ttl_ms = 0),
            ("options.urls.polling", |o| o.poll_url = Some(" ".into())),
            ("options.maxAttempts", |o| o.backoff.max_attempts = Some(0)),
            ("options.interop.pingText", |o| o.interop.ping_text.clear()),
            ("options.transports", |o| {
                o.transports = vec![Transport::Sse, Transport::Sse]
            }),
        ] {
            let mut o = Options::default();
            f(&mut o);
            let e = o.validate().expect_err(name);
            assert_eq!(e.code, ErrorCode::InvalidOption);
            assert!(e.message.starts_with(name), "{name}: {}", e.message);
        }
    }

    #[test]
    fn any_positive_heartbeat_pair_is_valid() {
        // SignalR needs the pong timeout longer than the ping interval.
        for (interval, timeout) in [
            (1_000, 1_500),
            (15_000, 30_000),
            (30_000, 5_000),
            (1_000, 1_000),
        ] {
            let mut o = Options::default();
            o.heartbeat.ping_interval_ms = interval;
            o.heartbeat.pong_timeout_ms = timeout;
            assert_eq!(o.validate(), Ok(()), "{interval}/{timeout}");
        }
    }

    #[test]
    fn a_timeout_longer_than_the_interval_pings_once_per_deadline() {
        // interval 1 s, timeout 1.5 s, 3 misses: a ping after 1 s of silence, the next
        // one when its deadline passes (not one per interval while it is unanswered),
        // and the connection is given up after interval + 3 × timeout.
        let mut o = Options::new("/realtime");
        o.transports = vec![Transport::WebSocket];
        o.heartbeat.ping_interval_ms = 1_000;
        o.heartbeat.pong_timeout_ms = 1_500;
        o.timeouts.first_frame_ms = 0;
        let mut h = H::started(o);
        let (ws, _, _) = h.last_conn();
        h.opened(ws);
        // The server answers the ping sent on opening: it is one that answers pings.
        h.items(ws, vec![crate::engine::Item::Pong]);
        h.events_on(ws, &["1"]);
        let from = h.now;
        let pings_before = h.pings.len();
        h.advance(1_000 + 3 * 1_500 - 1);
        let at: Vec<u64> = h.pings[pings_before..].iter().map(|p| p.0 - from).collect();
        assert_eq!(at, [1_000, 2_500, 4_000]);
        assert!(h.is_open(ws), "still within the last deadline");
        h.advance(1);
        assert!(!h.is_open(ws), "three unanswered pings close it");
        assert_eq!(h.errors().last(), Some(&ErrorCode::HeartbeatTimeout));
    }

    /// `js/test/option-cases.json` is judged by `createClient` in the JS tests and here by
    /// the engine reading the same object: the two must agree on every case, so nothing
    /// the wrapper accepts can fail later in the engine (and the reverse).
    #[test]
    fn the_engine_judges_every_shared_option_case_like_create_client() {
        let cases: Value = serde_json::from_str(include_str!("../../js/test/option-cases.json"))
            .expect("option-cases.json is JSON");
        let valid = cases["valid"].as_array().unwrap();
        assert!(valid.len() >= 10);
        for js in valid {
            let o = engine_for(js).unwrap_or_else(|e| panic!("{js}: {}", e.message));
            crate::engine::Engine::<Value>::new(
                o,
                crate::engine::PageContext::new("https://app.example.com/dash/"),
                1,
                0,
            )
            .unwrap_or_else(|e| panic!("{js}: {}", e.message));
        }
        let invalid = cases["invalid"].as_array().unwrap();
        assert!(invalid.len() >= 20);
        for case in invalid {
            let (js, name) = (&case[0], case[1].as_str().unwrap());
            let e = engine_for(js).expect_err(name);
            assert_eq!(e.code, ErrorCode::InvalidOption);
            let want = ["options.", name, " "].concat();
            assert!(
                e.message.starts_with(&want),
                "{js}: want {want:?}, got {:?}",
                e.message
            );
        }
    }

    /// Every row of PROTOCOL.md §10 (`js/test/protocol-s10.json`, checked against the
    /// document by the JS tests) produces exactly the URLs the row says, on each rung.
    #[test]
    fn protocol_section_10_rows_produce_their_urls() {
        let rows: Value = serde_json::from_str(include_str!("../../js/test/protocol-s10.json"))
            .expect("protocol-s10.json is JSON");
        let rows = rows["rows"].as_array().unwrap();
        assert!(rows.len() >= 5);
        for row in rows {
            let o = engine_for(&row["options"]).unwrap_or_else(|e| panic!("{row}: {}", e.message));
            let urls = row["urls"].as_object().unwrap();
            let got: Vec<(String, String)> = o
                .transports
                .iter()
                .map(|t| {
                    // Each rung alone: the first thing the engine does is open it.
                    let mut one = o.clone();
                    one.transports = vec![*t];
                    let h = H::started(one);
                    (t.as_str().to_string(), h.last_conn().2)
                })
                .collect();
            let want: Vec<(String, String)> = urls
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            let mut want_sorted = want;
            want_sorted.sort();
            assert_eq!(got_sorted, want_sorted, "{}", row["options"]);
        }
    }

    #[test]
    fn js_types_are_checked_while_reading() {
        use serde_json::json;
        for (js, name) in [
            (json!({ "url": 5 }), "options.url"),
            (json!({ "url": "/r", "heartbeat": 5 }), "options.heartbeat"),
            (
                json!({ "url": "/r", "heartbeat": { "intervalMs": "5" } }),
                "options.heartbeat.intervalMs",
            ),
            (
                json!({ "url": "/r", "interop": { "pingtext": "ping" } }),
                "options.interop.pingtext",
            ),
            (
                json!({ "url": "/r", "interop": { "pingText": 1 } }),
                "options.interop.pingText",
            ),
            (json!({ "url": "/r", "probe": "no" }), "options.probe"),
        ] {
            let e = Options::from_js(&flatten(&js)).expect_err(name);
            assert_eq!(e.code, ErrorCode::InvalidOption);
            assert!(e.message.starts_with(name), "{name}: {}", e.message);
        }
        let o = Options::from_js(&flatten(&json!({
            "url": "/r",
            "topic": "t",
            "probe": false,
            "remember": { "ttlMs": 5000 },
            "polling": { "waitMs": 0 },
            "interop": { "pingText": "ping", "topicParam": "deploymentId" },
        })))
        .unwrap();
        assert_eq!(o.topic.as_deref(), Some("t"));
        assert!(!o.probe.enabled);
        assert!(o.memory.enabled);
        assert_eq!(o.memory.ttl_ms, 5_000);
        assert_eq!(o.polling.wait_ms, None);
        assert_eq!(o.interop.ping_text, "ping");
        assert_eq!(o.interop.topic_param, "deploymentId");
    }
}
