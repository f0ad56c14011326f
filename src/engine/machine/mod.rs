//! The engine: the ladder, failure classes, races, probes, backoff, liveness, delivery and
//! the upstream outbox, as one state machine driven by [`Engine::handle`].
//!
//! Vocabulary. A *conn* is one connection attempt the engine asked for with
//! [`Command::Open`]. A *round* walks down the ladder from `start_rung` until a rung opens;
//! a rung that has not opened within `timeouts.race_ms` gets the next rung started beside
//! it, and the first to open wins. Opening needs no server preamble: an HTTP 101, a 200
//! `text/event-stream` response or an answered poll is open, because the backends users
//! already run send nothing on connect. The winner starts a *session*: the only conn whose
//! items reach the app (for polling, the session outlives each request).
//!
//! Whether an open stream is quiet or blocked (an upgrade answered then black-holed, a
//! buffering proxy, a stuck tail) is proven, not guessed: a `hello` or a pong proves the
//! path; otherwise a *cross-check* asks the polling rung with the stream's cursor once the
//! stream has been silent for a while ([`super::crosscheck`]), and a stream that owes events
//! the check saw steps down a rung. A rung whose server spoke at once on an earlier
//! connection and is silent on a new one steps down without a check.
//!
//! While the session is on a lower rung, *probes* open a higher rung in the background and
//! take over when it delivers, or when it stayed quiet while the session was quiet too.
//! Every deadline lives in one list ([`Engine::poll_timeout`] and [`Input::Timeout`] read
//! the same one), so a reported deadline is always consumed.
//!
//! This file holds the state, the public surface and the coordinator; each concern lives in
//! a sub-module with its contract:
//!
//! | module | owns |
//! |---|---|
//! | [`ladder`] | rounds, races, sessions, what a failure leads to |
//! | [`receive`] | what the wire says: opens, statuses, items, bad frames, closes |
//! | [`liveness`] | pings, pongs, server silence, idle cut-offs, page events |
//! | [`checks`] | cross-checks of quiet streams (verdicts in [`super::crosscheck`]) |
//! | [`probes`] | moving back up |
//! | [`retry`] | the retry policy (backoff, jitter, a server's wait) |
//! | [`failure`] | failure classes of HTTP statuses and close codes |
//! | [`outbox`] | upstream messages until acknowledged |
//! | [`auth`] | tokens, and refreshing an expired one quietly |
//! | [`memory`] | the remembered rung |
//! | [`deadlines`] | the one list of deadlines and their dispatch |

use std::collections::{HashSet, VecDeque};

use super::crosscheck::{CrossCheck, Verdict};
use super::delivery::{order_key, Delivery};
use super::diagnostics::{Attempt, Diagnostics};
use super::error::{ErrorCode, FrameError, HoldfastError, HttpFailure};
use super::options::{Interop, Options};
use super::types::*;
use super::url::Endpoints;
use super::util::{cat, join, secs, u64_to_string, Rng};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// Part of a connect round (not delivering yet).
    Primary,
    /// A background attempt at a higher rung.
    Probe,
    /// The session's conn (WebSocket/SSE stream, or the current poll request).
    Session,
    /// A poll asking what follows the session stream's cursor, to tell a quiet stream from
    /// a blocked one (see [`super::crosscheck`]); its events are evidence, never delivered.
    Check,
}

#[derive(Clone, Debug)]
struct Conn {
    id: ConnId,
    transport: Transport,
    rung: usize,
    role: Role,
    started_at: Millis,
    opened_at: Option<Millis>,
    /// First byte/frame seen (a poll response counts at `Opened`).
    established: bool,
    last_rx: Millis,
    last_tx: Millis,
    ping_deadline: Option<Millis>,
    missed: u32,
    raced: bool,
    /// Poll requests: items arrived, and the `wait` asked.
    poll_items: bool,
    poll_wait: u64,
    /// The cursor sent when it opened.
    since: Option<String>,
    /// It delivered an event itself.
    delivered: bool,
    /// Anything arrived on it (a frame, SSE bytes).
    spoke: bool,
    /// The server proved the path end to end on it: a `hello`, or a pong (a WebSocket frame
    /// sent after everything before it). Such a stream is judged by heartbeats, not checks.
    proven: bool,
    /// The server left pings unanswered: its silence is judged like an SSE stream's.
    pings_off: bool,
    /// Events the app had been given when it opened (a probe is judged against it).
    delivered_before: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    Running,
    Offline,
    Closed,
}

/// What to do after a failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    /// The rung does not work here: try the next one.
    Fallback,
    /// Ask the token provider again; do not fall back.
    Auth,
    /// Wait as the server asked (`Retry-After`).
    RateLimited(u64),
    /// Reconnect on the same rung after the backoff.
    Retry,
    /// Reconnect on the same rung now (the connection was only suspect).
    Now,
    /// The session's path is proven blocked: start over one rung lower, now.
    StepDown,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SendState {
    Unsent,
    OnConn(ConnId),
    Posting,
}

#[derive(Clone, Debug)]
struct Pending<D> {
    id: MessageId,
    data: D,
    state: SendState,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Due {
    Retry,
    Healthy,
    NextPoll,
    Probe,
    PostRetry,
    /// Not open in time (or, for polling, no answer in time).
    OpenTimeout(ConnId),
    Race(ConnId),
    FirstFrame(ConnId),
    SseBytes(ConnId),
    Ping(ConnId),
    Pong(ConnId),
    Silence(ConnId),
    /// The session stream has been quiet for the cross-check interval.
    CrossCheck(ConnId),
    /// A suspect stream did not deliver what the cross-check saw in time.
    Suspect,
    /// The first baseline poll took too long: the round goes on without it.
    BaselineWait,
}

/// The transport state machine. `D` is the event payload handle (`JsValue` in the browser,
/// any `Clone` type natively); the engine moves payloads, never inspects them.
pub struct Engine<D> {
    options: Options,
    endpoints: Endpoints,
    ladder: Vec<Transport>,
    rng: Rng,
    out: VecDeque<Output<D>>,
    snapshot: Snapshot,
    diagnostics: Diagnostics,

    phase: Phase,
    online: bool,
    visible: bool,
    remembered: Option<RememberedRung>,
    ever_connected: bool,

    next_conn: u32,
    conns: Vec<Conn>,
    /// The delivering rung, while a session exists.
    session_rung: Option<usize>,
    /// The session's current conn (a poll session has none between requests).
    session_conn: Option<ConnId>,
    start_rung: usize,
    round_next: usize,
    round_running: bool,
    retry_at: Option<Millis>,
    attempt: u32,
    healthy_at: Option<Millis>,
    last_error: Option<HoldfastError>,

    token: Option<String>,
    token_pending: bool,

    next_poll_at: Option<Millis>,
    /// A poll was due while the page was hidden and `polling.pause_when_hidden` is set.
    poll_held: bool,
    probe_at: Option<Millis>,
    probe_delay: u64,
    probe_target: usize,

    ping_interval: u64,
    server_heartbeat: Option<u64>,
    idle_deaths: Vec<u64>,
    /// The longest silence the path tolerates, learned from idle cut-offs on SSE or polling
    /// (adaptive heartbeat): SSE asks the server for heartbeats this often, polls are held
    /// at most this long. WebSocket shortens `ping_interval` instead.
    idle_cap: Option<u64>,

    /// What a WebSocket probe delivered before proving itself (see `on_items`).
    probe_buffer: Vec<Item<D>>,
    /// Ids the session delivered while a probe was open: the probe's stream repeats them.
    handover: HashSet<String>,
    stalls: u32,
    stall_rung: usize,
    demoted_at: Option<Millis>,

    delivery: Delivery,
    /// The newest id the current session's server named in its hello.
    session_hello: Option<String>,
    /// Messages given to the app so far (probes are judged against it).
    delivered_count: u64,
    /// Cross-checks of the session stream (see [`super::crosscheck`]).
    crosscheck: CrossCheck,
    /// The session's first idle verdict was noted (one note per session, not one per check).
    idle_noted: bool,
    /// Per rung: its server sent a `hello` (or a pong) on an earlier connection, so silence
    /// on a new one is proof of a blocked path without a cross-check.
    speaks_first: Vec<bool>,
    /// A WebSocket server answered a ping in this client's life.
    ws_answers_pings: bool,
    /// Data arrived since the last token refresh: the next 401 is an expiry, answered by a
    /// fresh token at once rather than an error and a backoff.
    auth_proven: bool,
    /// The first baseline poll was sent (see `baseline_first`).
    baseline_asked: bool,
    /// The first round waits for it until then.
    baseline_wait: Option<Millis>,

    outbox: VecDeque<Pending<D>>,
    post_retry_at: Option<Millis>,
    post_attempt: u32,
    msg_prefix: String,
    msg_counter: u64,
}

const CLOSE_NORMAL: u16 = 1000;
/// Longest wait a server can impose (`Retry-After`, close reasons, `heartbeatMs`): an hour.
/// Values from the wire are clamped so no deadline arithmetic can overflow.
const MAX_WAIT_MS: u64 = 3_600_000;
/// Items a WebSocket probe may deliver before it answers a ping.
const PROBE_BUFFER_MAX: usize = 4_096;
/// Ids remembered for a probe's handover (see `handover`).
const HANDOVER_MAX: usize = 8_192;
/// The least wait after a 429 on a poll that names no `Retry-After`.
const POLL_SLOWED_MIN_MS: u64 = 1_000;
/// Minimum idle time before a death counts towards idle cut-off detection.
const IDLE_MIN_MS: u64 = 5_000;

mod auth;
mod checks;
mod deadlines;
mod failure;
mod ladder;
mod liveness;
mod memory;
mod outbox;
mod probes;
mod receive;
mod retry;

use failure::{classify_close, classify_status};

impl<D: Clone> Engine<D> {
    /// Validates the options, derives every URL from the page, and returns an idle engine.
    /// `seed` feeds jitter and message-id prefixes (use `crypto.getRandomValues`).
    pub fn new(
        options: Options,
        page: PageContext,
        seed: u64,
        now: Millis,
    ) -> Result<Engine<D>, HoldfastError> {
        let _ = now;
        options.validate()?;
        let endpoints = Endpoints::derive(&options, &page.href)?;
        let mut rng = Rng::new(seed);
        let mut msg_prefix = String::from("m");
        let r = rng.next_u64();
        for i in 0..10 {
            let c = b"0123456789abcdefghijklmnopqrstuv"[((r >> (i * 5)) & 31) as usize];
            msg_prefix.push(c as char);
        }
        msg_prefix.push('-');
        let snapshot = Snapshot {
            status: Status::Idle,
            transport: None,
            cursor: None,
            attempt: 0,
            next_retry_at: None,
            outbox_len: 0,
            last_error: None,
            ping_interval_ms: options.heartbeat.ping_interval_ms,
        };
        Ok(Engine {
            diagnostics: Diagnostics::new(options.diagnostics_capacity),
            ladder: options.transports.clone(),
            endpoints,
            rng,
            out: VecDeque::new(),
            snapshot,
            phase: Phase::Idle,
            online: page.online,
            visible: page.visible,
            remembered: page.remembered,
            ever_connected: false,
            next_conn: 1,
            conns: Vec::new(),
            session_rung: None,
            session_conn: None,
            start_rung: 0,
            round_next: 0,
            round_running: false,
            retry_at: None,
            attempt: 0,
            healthy_at: None,
            last_error: None,
            token: None,
            token_pending: false,
            next_poll_at: None,
            poll_held: false,
            probe_at: None,
            probe_delay: options.probe.initial_ms,
            probe_target: 0,
            ping_interval: options.heartbeat.ping_interval_ms,
            server_heartbeat: None,
            idle_deaths: Vec::new(),
            idle_cap: None,
            probe_buffer: Vec::new(),
            handover: HashSet::new(),
            stalls: 0,
            stall_rung: 0,
            demoted_at: None,
            delivery: Delivery::with_cursor(options.dedup_window, options.since.as_deref()),
            session_hello: None,
            delivered_count: 0,
            crosscheck: CrossCheck::new(0),
            idle_noted: false,
            speaks_first: vec![false; options.transports.len()],
            ws_answers_pings: false,
            auth_proven: false,
            baseline_asked: false,
            baseline_wait: None,
            outbox: VecDeque::new(),
            post_retry_at: None,
            post_attempt: 0,
            msg_prefix,
            msg_counter: 0,
            options,
        })
    }

    /// Feeds one input at time `now`. Drain [`Engine::poll_output`] afterwards.
    pub fn handle(&mut self, input: Input<D>, now: Millis) {
        if self.phase == Phase::Closed {
            return;
        }
        match input {
            Input::Start => self.on_start(now),
            Input::Close => self.close_client(None, now),
            Input::Timeout => self.on_timeout(now),
            Input::Token(result) => self.on_token(result, now),
            Input::Opened { conn } => self.on_opened(conn, now),
            Input::HttpStatus {
                conn,
                status,
                retry_after_ms,
                error_code,
            } => self.on_http_status(conn, status, retry_after_ms, error_code, now),
            Input::Activity { conn, bytes } => self.on_activity(conn, bytes, now),
            Input::Items { conn, items } => self.on_items(conn, items, now),
            Input::BadFrame { conn, error } => self.on_bad_frame(conn, error, now),
            Input::Closed { conn, code, reason } => self.on_closed(conn, code, &reason, now),
            Input::SendResult { msg_id, result } => self.on_send_result(msg_id, result, now),
            Input::Online => self.on_online(now),
            Input::Offline => self.on_offline(now),
            Input::Visible => self.on_visible(now),
            Input::Hidden => {
                self.visible = false;
            }
            Input::Remembered(r) => {
                if self.phase == Phase::Idle {
                    self.remembered = r;
                }
            }
        }
        self.sync_snapshot();
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<Output<D>> {
        self.out.pop_front()
    }

    /// The earliest time at which the engine wants [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut best: Option<Millis> = None;
        self.deadlines(|at, _| {
            best = Some(best.map_or(at, |b: Millis| b.min(at)));
        });
        best
    }

    /// Queues an upstream message. Fails with `outbox_full` when the outbox is full and
    /// with `already_closed` after the client was closed.
    pub fn send(&mut self, data: D, now: Millis) -> Result<MessageId, HoldfastError> {
        if self.phase == Phase::Closed {
            return Err(HoldfastError::new(
                ErrorCode::AlreadyClosed,
                "send() after close(): create a new client to send",
            ));
        }
        if self.outbox.len() >= self.options.outbox_capacity {
            return Err(HoldfastError::new(
                ErrorCode::OutboxFull,
                cat(&[
                    "the outbox already holds ",
                    &u64_to_string(self.outbox.len() as u64),
                    " unacknowledged messages (option outboxLimit): wait for acknowledgements or raise the limit",
                ]),
            ));
        }
        self.msg_counter += 1;
        let id = MessageId(cat(&[&self.msg_prefix, &u64_to_string(self.msg_counter)]));
        self.outbox.push_back(Pending {
            id: id.clone(),
            data,
            state: SendState::Unsent,
        });
        self.flush_outbox(now);
        self.sync_snapshot();
        Ok(id)
    }

    /// The current state.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The bounded attempt log.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    /// The storage key for rung memory (read it before `Start`, answer with
    /// [`Input::Remembered`]).
    pub fn memory_key(&self) -> &str {
        &self.endpoints.memory_key
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Wire names for the decoders ([`super::decode`]).
    pub fn interop(&self) -> &Interop {
        &self.options.interop
    }

    /// Largest accepted frame, for [`super::decode::decode_text`] and [`super::SseParser::new`].
    pub fn max_frame_bytes(&self) -> usize {
        self.options.max_frame_bytes
    }

    /// Whether the client was closed (by the app or after giving up).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the first round waits for its baseline poll (a client with no cursor asks
    /// where the server is before its first stream), and which conn that poll is.
    pub fn first_baseline_poll(&self) -> Option<ConnId> {
        self.baseline_wait?;
        self.conns
            .iter()
            .find(|c| c.role == Role::Check && self.crosscheck.is_check(c.id))
            .map(|c| c.id)
    }

    /// Whether events are flowing now.
    pub fn is_connected(&self) -> bool {
        self.session_rung.is_some()
    }

    fn on_start(&mut self, now: Millis) {
        if self.phase != Phase::Idle {
            return;
        }
        if let Some(r) = self.remembered {
            let idx = self.ladder.iter().position(|t| *t == r.transport);
            if r.expires_at <= now || !self.options.memory.enabled || idx.is_none() {
                self.remembered = None;
                if self.options.memory.enabled {
                    self.cmd(Command::Forget {
                        key: self.endpoints.memory_key.clone(),
                    });
                }
            } else if let Some(i) = idx {
                self.start_rung = i;
                if i > 0 {
                    self.diagnostics.note(
                        now,
                        cat(&[
                            "starting on ",
                            r.transport.as_str(),
                            ": it is remembered as the rung that worked for this endpoint",
                        ]),
                    );
                }
            }
        }
        if !self.online {
            self.phase = Phase::Offline;
            return;
        }
        self.phase = Phase::Running;
        self.start_round(now);
    }

    fn on_timeout(&mut self, now: Millis) {
        if let Some(expected) = self.poll_timeout() {
            let h = &self.options.heartbeat;
            let threshold = if self.visible {
                h.clock_jump_ms
            } else {
                (h.clock_jump_ms * 2).max(65_000)
            };
            if now > expected.saturating_add(threshold) {
                self.on_clock_jump(now - expected, now);
            }
        }
        // Handling a deadline can only create later ones (or ones due now, which the next
        // pass handles); the bound is a guard, not a limit reached in practice.
        for _ in 0..32 {
            let mut due: Vec<Due> = Vec::new();
            self.deadlines(|at, d| {
                if at <= now {
                    due.push(d)
                }
            });
            if due.is_empty() {
                break;
            }
            for d in due {
                self.handle_due(d, now);
            }
        }
    }

    fn close_client(&mut self, err: Option<HoldfastError>, now: Millis) {
        self.close_all(now);
        self.retry_at = None;
        self.phase = Phase::Closed;
        if let Some(e) = err {
            self.emit_error(e);
        }
        let error = HoldfastError::new(
            ErrorCode::Closed,
            "the client was closed before the message was acknowledged",
        );
        while let Some(p) = self.outbox.pop_front() {
            self.app(AppEvent::SendFailed {
                msg_id: p.id,
                error: error.clone(),
            });
        }
        self.sync_snapshot();
    }

    fn close_all(&mut self, now: Millis) {
        self.baseline_wait = None;
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            self.remove_conn(id, now, Some(CLOSE_NORMAL));
        }
        self.session_rung = None;
        self.session_conn = None;
        self.round_running = false;
        self.next_poll_at = None;
        self.probe_at = None;
        self.healthy_at = None;
        self.post_retry_at = None;
        for p in self.outbox.iter_mut() {
            p.state = SendState::Unsent;
        }
    }

    fn remove_conn(&mut self, id: ConnId, now: Millis, close: Option<u16>) {
        if let Some(pos) = self.conns.iter().position(|c| c.id == id) {
            if self.conns.remove(pos).role == Role::Probe {
                self.probe_buffer.clear();
                self.handover.clear();
            }
            if let Some(a) = self.diagnostics.attempt_mut(id) {
                if a.ended_at.is_none() {
                    a.ended_at = Some(now);
                }
            }
            if let Some(code) = close {
                self.cmd(Command::CloseConn { conn: id, code });
            }
            if self.session_conn == Some(id)
                && self.ladder[self.session_rung.unwrap_or(0)] != Transport::Polling
            {
                self.session_conn = None;
            }
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn cmd(&mut self, c: Command<D>) {
        self.out.push_back(Output::Command(c));
    }

    fn app(&mut self, e: AppEvent<D>) {
        self.out.push_back(Output::Event(e));
    }

    fn emit_error(&mut self, e: HoldfastError) {
        self.last_error = Some(e.clone());
        self.app(AppEvent::Error(e));
    }

    fn sync_snapshot(&mut self) {
        let status = match self.phase {
            Phase::Idle => Status::Idle,
            Phase::Offline => Status::Offline,
            Phase::Closed => Status::Closed,
            Phase::Running => {
                if self.session_rung.is_some() {
                    Status::Connected
                } else if self.ever_connected {
                    Status::Reconnecting
                } else {
                    Status::Connecting
                }
            }
        };
        // Compared field by field so the hot path (an event batch) allocates nothing
        // unless the snapshot really changes.
        let transport = self.session_rung.map(|r| self.ladder[r]);
        let snap = &self.snapshot;
        let same_but_cursor = snap.status == status
            && snap.transport == transport
            && snap.attempt == self.attempt
            && snap.next_retry_at == self.retry_at
            && snap.outbox_len == self.outbox.len()
            && snap.last_error == self.last_error
            && snap.ping_interval_ms == self.ping_interval;
        let same_cursor = snap.cursor.as_deref() == self.delivery.cursor();
        if same_but_cursor && !same_cursor {
            // Every delivered event lands here: reuse the cursor's buffer.
            match (&mut self.snapshot.cursor, self.delivery.cursor()) {
                (Some(c), Some(new)) => {
                    c.clear();
                    c.push_str(new);
                }
                (slot, new) => *slot = new.map(String::from),
            }
            self.app(AppEvent::CursorMoved);
        } else if !same_but_cursor {
            self.snapshot = Snapshot {
                status,
                transport,
                cursor: self.delivery.cursor().map(String::from),
                attempt: self.attempt,
                next_retry_at: self.retry_at,
                outbox_len: self.outbox.len(),
                last_error: self.last_error.clone(),
                ping_interval_ms: self.ping_interval,
            };
            self.app(AppEvent::StateChanged);
        }
    }
}
