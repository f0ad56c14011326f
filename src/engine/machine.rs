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
            outbox: VecDeque::new(),
            post_retry_at: None,
            post_attempt: 0,
            msg_prefix,
            msg_counter: 0,
            options,
        })
    }

    // ----- public surface -------------------------------------------------------------

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

    /// Whether events are flowing now.
    pub fn is_connected(&self) -> bool {
        self.session_rung.is_some()
    }

    // ----- inputs ---------------------------------------------------------------------

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

    fn on_token(&mut self, result: Result<String, String>, now: Millis) {
        if !self.token_pending {
            return;
        }
        self.token_pending = false;
        match result {
            Ok(t) => {
                self.token = Some(t);
                if self.phase == Phase::Running
                    && self.session_rung.is_none()
                    && !self.round_running
                    && self.retry_at.is_none()
                {
                    self.start_round(now);
                } else if let (Phase::Running, Some(r), None, None, false) = (
                    self.phase,
                    self.session_rung,
                    self.session_conn,
                    self.next_poll_at,
                    self.poll_held,
                ) {
                    // A poll session whose token expired: ask again now.
                    if self.ladder[r] == Transport::Polling {
                        let id = self.open_conn(r, Role::Session, now);
                        self.session_conn = Some(id);
                    }
                }
                self.flush_outbox(now);
            }
            Err(why) => {
                let err = HoldfastError::new(
                    ErrorCode::TokenProvider,
                    cat(&["the token provider failed: ", &why]),
                );
                self.emit_error(err.clone());
                if self.session_rung.is_some() {
                    // Only the outbox was waiting for it: ask again later.
                    self.post_attempt += 1;
                    let d = self.post_backoff();
                    self.post_retry_at = Some(now + d);
                } else if !self.round_running && self.retry_at.is_none() {
                    self.round_failed(err, None, now);
                }
            }
        }
    }

    fn on_opened(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.opened_at.is_some() {
            return;
        }
        c.opened_at = Some(now);
        c.last_rx = now;
        let (transport, role) = (c.transport, c.role);
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.opened_at = Some(now);
        }
        if role == Role::Check {
            return;
        }
        if transport != Transport::WebSocket {
            // A 200 (SSE: with `text/event-stream`, checked before `Opened`) proves the token.
            self.auth_proven = true;
        }
        if transport == Transport::WebSocket {
            // A pong proves frames flow both ways at once; servers that answer none are
            // still open (backends users run send nothing on connect).
            let text = self.options.interop.ping_text.clone();
            if let Some(c) = self.conn_mut(id) {
                c.last_tx = now;
            }
            self.cmd(Command::SendPing { conn: id, text });
        }
        // An opened stream (HTTP 101; a 200 `text/event-stream`) or an answered poll is open:
        // no server preamble is needed. Cross-checks tell later whether it is blocked. A
        // probe must still prove itself before it replaces a working session.
        if role == Role::Primary {
            self.establish(id, now);
        }
    }

    fn on_http_status(
        &mut self,
        id: ConnId,
        status: u16,
        retry_after: Option<u64>,
        error_code: Option<String>,
        now: Millis,
    ) {
        let Some(c) = self.conn(id) else { return };
        let t = c.transport;
        if t == Transport::Polling
            && status == 410
            && matches!(c.role, Role::Session | Role::Primary)
            && self.delivery.cursor().is_some()
        {
            self.poll_gone(id, now);
            return;
        }
        if t == Transport::Polling && status == 429 && c.role == Role::Session {
            self.poll_slowed(id, retry_after, now);
            return;
        }
        let (code, action, msg) = classify_status(t, status, retry_after, error_code.as_deref());
        let url = self.diag_url(id);
        let mut m = cat(&[&msg, " (", t.as_str(), " ", &url, ")"]);
        if action == Action::Fallback {
            if let Some(next) = self.next_rung_name(id) {
                m.push_str("; trying ");
                m.push_str(next);
            }
        }
        // The request is over; closing it again is harmless and keeps the contract simple.
        self.fail_conn(id, HoldfastError::new(code, m).on(t), action, true, now);
    }

    fn on_activity(&mut self, id: ConnId, bytes: usize, now: Millis) {
        let _ = bytes;
        let Some(c) = self.conn_mut(id) else { return };
        c.last_rx = now;
        c.ping_deadline = None;
        c.missed = 0;
        c.spoke = true;
        if c.transport == Transport::Sse && c.opened_at.is_some() && !c.established {
            self.establish(id, now);
        }
    }

    fn on_items(&mut self, id: ConnId, mut items: Vec<Item<D>>, now: Millis) {
        if self.crosscheck.is_check(id) {
            for item in &items {
                match item {
                    Item::Event { id: eid, .. }
                    | Item::TooLarge { id: eid, .. }
                    | Item::Malformed { id: eid, .. } => {
                        self.crosscheck.saw_event(id, eid.as_deref())
                    }
                    Item::Hello { cursor, .. } => self.crosscheck.saw_cursor(id, cursor.as_deref()),
                    _ => {}
                }
            }
            return;
        }
        let answered = items.iter().any(|i| matches!(i, Item::Pong));
        let hello = items.iter().any(|i| matches!(i, Item::Hello { .. }));
        let refusal_only = items.iter().all(|i| matches!(i, Item::ServerError { .. }));
        let Some(c) = self.conn_mut(id) else { return };
        c.spoke = true;
        c.last_rx = now;
        c.ping_deadline = None;
        c.missed = 0;
        if c.opened_at.is_none() {
            c.opened_at = Some(now);
        }
        // A poll that returned something is followed at once, except when all it held is a
        // bad entry without an id: the server sends that again for the same cursor, so
        // asking at once would loop; the normal interval applies.
        if c.transport == Transport::Polling
            && items
                .iter()
                .any(|i| !matches!(i, Item::Malformed { id: None, .. }))
        {
            c.poll_items = true;
        }
        let (t, rung) = (c.transport, c.rung);
        // A hello, or a pong (sent after every frame before it), proves the whole path.
        let proves = match t {
            Transport::WebSocket => hello || answered,
            Transport::Sse => hello,
            Transport::Polling => false,
        };
        if proves {
            c.proven = true;
            c.pings_off = false;
            if let Some(s) = self.speaks_first.get_mut(rung) {
                *s = true;
            }
        }
        // A server that says hello speaks the protocol, which answers pings.
        if (answered || hello) && t == Transport::WebSocket {
            self.ws_answers_pings = true;
        }
        if !refusal_only {
            self.auth_proven = true;
        }
        let Some(c) = self.conn_mut(id) else { return };
        if !c.established {
            // A refusal is sent in-band before the close (`error` frame, then 4401): it
            // proves nothing about the rung, so it must not win the round.
            if items.iter().all(|i| matches!(i, Item::ServerError { .. })) {
                for item in items {
                    self.on_item(id, item, now);
                }
                return;
            }
            // A WebSocket probe to a server known to answer pings replaces a working
            // session only once it answers one: a proxy may pass the first frames and then
            // stall. What it sends before is kept and replayed at the switch (repeats are
            // dropped by the cursor), so the handover loses nothing. A server that answers
            // no ping proves the path by any frame.
            let (role, t) = (c.role, c.transport);
            if role == Role::Probe
                && t == Transport::WebSocket
                && self.ws_answers_pings
                && !answered
            {
                if self.probe_buffer.len() + items.len() > PROBE_BUFFER_MAX {
                    let e = HoldfastError::new(
                        ErrorCode::SilentAfterOpen,
                        "the WebSocket probe sent data but never answered a ping",
                    )
                    .on(t);
                    self.fail_conn(id, e, Action::Fallback, true, now);
                } else {
                    self.probe_buffer.extend(items);
                }
                return;
            }
            self.establish(id, now);
            if role == Role::Probe {
                let mut all = core::mem::take(&mut self.probe_buffer);
                all.extend(items);
                items = all;
            }
        }
        if self.session_conn != Some(id) {
            return;
        }
        for item in items {
            if self.session_conn != Some(id) {
                break; // a control item ended the session
            }
            self.on_item(id, item, now);
        }
    }

    fn on_item(&mut self, id: ConnId, item: Item<D>, now: Millis) {
        match item {
            Item::Event {
                id: eid,
                kind,
                data,
            } => {
                // Delivered by the old session while this conn was a probe: a repeat, even
                // for opaque ids that fell out of the dedup window.
                if let Some(e) = &eid {
                    if !self.handover.is_empty() && self.handover.remove(e.as_str()) {
                        return;
                    }
                }
                if self.delivery.accept(eid.as_deref()) {
                    if let (Some(e), Some(probe)) = (&eid, self.probe_id()) {
                        if self.handover.len() >= HANDOVER_MAX {
                            // Too busy to hand over safely now: try again later.
                            let err = HoldfastError::new(
                                ErrorCode::OpenTimeout,
                                "the probe did not prove itself before too many events passed",
                            );
                            self.fail_conn(probe, err, Action::Fallback, true, now);
                        } else {
                            self.handover.insert(e.clone());
                        }
                    }
                    if let Some(c) = self.conn_mut(id) {
                        c.delivered = true;
                    }
                    self.delivered_count += 1;
                    self.crosscheck
                        .stream_delivered(eid.as_deref().and_then(order_key));
                    self.app(AppEvent::Message {
                        id: eid,
                        kind,
                        data,
                    });
                }
            }
            Item::Hello {
                cursor,
                heartbeat_ms,
            } => {
                // An empty topic has no newest id: `0` asks for everything from the start,
                // so events published before the next reconnect are not skipped.
                let c = cursor.unwrap_or_else(|| String::from("0"));
                self.delivery.adopt(&c);
                self.session_hello = Some(c);
                if let Some(h) = heartbeat_ms {
                    if h > 0 {
                        self.server_heartbeat = Some(h);
                    }
                }
            }
            Item::Heartbeat | Item::Pong => {}
            Item::Reset { reason, oldest } => {
                // A probe subscribed with the cursor of its start; the session may have
                // delivered past the reset point since. Then nothing was lost for us.
                let (since, own) = self
                    .conn(id)
                    .map_or((None, false), |c| (c.since.as_deref(), c.delivered));
                if !own && since != self.delivery.cursor() {
                    let o = oldest.as_deref().and_then(order_key);
                    if o.zip(self.delivery.baseline()).is_some_and(|(o, b)| o <= b) {
                        return;
                    }
                }
                // Opaque ids cannot be ordered: a reset whose oldest kept event the app
                // already has lost nothing (a probe's stale reset, replayed at its takeover).
                if oldest.as_deref().is_some_and(|o| self.delivery.has_seen(o)) {
                    return;
                }
                let cursor = self.delivery.cursor().map(String::from);
                if self
                    .delivery
                    .reset(oldest.as_deref(), self.session_hello.as_deref())
                {
                    let mut m = String::from(
                        "the server no longer holds the events after the cursor: some were lost; reload your state",
                    );
                    if !reason.is_empty() {
                        m.push_str(" (");
                        m.push_str(&reason);
                        m.push(')');
                    }
                    let err = HoldfastError::new(ErrorCode::ServerReset, m)
                        .on(self.ladder[self.session_rung.unwrap_or(0)]);
                    self.last_error = Some(err);
                    self.diagnostics
                        .note(now, cat(&["server reset: ", &reason]));
                    self.app(AppEvent::Gap {
                        reason,
                        cursor,
                        oldest,
                    });
                }
            }
            Item::Ack { id: mid } => self.acked(&mid, now),
            Item::TooLarge {
                id: eid,
                size,
                limit,
            } => {
                if self.delivery.accept(eid.as_deref()) {
                    self.crosscheck
                        .stream_delivered(eid.as_deref().and_then(order_key));
                    let mut msg = FrameError::TooLarge { size, limit }.describe();
                    msg.push_str("; skipped it");
                    let t = self.conn(id).map(|c| c.transport);
                    let mut err = HoldfastError::new(ErrorCode::FrameTooLarge, msg);
                    err.transport = t;
                    self.emit_error(err);
                }
            }
            // A bad entry of a batch: reported in its place; its id, if any, moves the cursor.
            Item::Malformed { id: eid, error } => {
                if self.delivery.accept(eid.as_deref()) {
                    self.crosscheck
                        .stream_delivered(eid.as_deref().and_then(order_key));
                    let mut msg = error.describe();
                    msg.push_str("; skipped it");
                    let mut err = HoldfastError::new(error.code(), msg);
                    err.transport = self.conn(id).map(|c| c.transport);
                    self.emit_error(err);
                }
            }
            Item::ServerError { code, message } => {
                if code == "token_expired" || code == "token_invalid" {
                    self.token = None;
                    if self.options.use_token {
                        // The close that follows decides: a fresh token at once (it had
                        // worked: expired) or `unauthorized`; either way the app hears once.
                        self.diagnostics
                            .note(now, cat(&["the server refused the token: ", &code]));
                        return;
                    }
                }
                let t = self.conn(id).map(|c| c.transport);
                let mut err = HoldfastError::new(
                    ErrorCode::ServerError,
                    cat(&["the server reported ", &code, ": ", &message]),
                );
                err.transport = t;
                self.emit_error(err);
            }
        }
    }

    fn on_bad_frame(&mut self, id: ConnId, error: FrameError, now: Millis) {
        let Some(c) = self.conn_mut(id) else { return };
        c.last_rx = now;
        let t = c.transport;
        let established = c.established;
        let mut msg = error.describe();
        let err_code = error.code();
        // A WebSocket frame or an SSE event is self-contained (the SSE parser skips an
        // oversized event to its blank line), so the stream goes on without it.
        // A poll body is the whole batch: a bad one means the rung answers garbage (a proxy
        // error page), so back off instead of asking again at once.
        let fatal = t == Transport::Polling;
        if established && !fatal {
            msg.push_str("; skipped it");
            self.emit_error(HoldfastError::new(err_code, msg).on(t));
            return;
        }
        let action = if established {
            Action::Retry
        } else {
            Action::Fallback
        };
        self.fail_conn(
            id,
            HoldfastError::new(err_code, msg).on(t),
            action,
            true,
            now,
        );
    }

    fn on_closed(&mut self, id: ConnId, code: Option<u16>, reason: &str, now: Millis) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        let t = c.transport;
        if c.role == Role::Check {
            self.remove_conn(id, now, None);
            if c.opened_at.is_some() {
                self.check_finished(id, now);
            } else {
                self.check_failed(id, "the request failed", now);
            }
            return;
        }
        if t == Transport::Polling && c.opened_at.is_some() && c.established {
            // A poll request finished.
            self.remove_conn(id, now, None);
            if self.session_conn == Some(id) {
                self.session_conn = None;
                let at = if c.poll_items {
                    now
                } else {
                    now.max(c.started_at + self.options.polling.interval_ms)
                };
                if self.polling_held_while_hidden() {
                    // Resumed by `on_visible`, which asks at once (with the cursor).
                    self.poll_held = true;
                } else if at <= now && self.phase == Phase::Running {
                    if let Some(r) = self.session_rung {
                        let next = self.open_conn(r, Role::Session, now);
                        self.session_conn = Some(next);
                    }
                } else {
                    self.next_poll_at = Some(at);
                }
            }
            return;
        }
        let url = self.diag_url(id);
        let abnormal = matches!(code, None | Some(1005) | Some(1006));
        // "At once": sooner than a quiet server's first heartbeat could be due, and sooner
        // than any idle cut-off worth the name.
        let closed_at_once = c.opened_at.is_some_and(|o| {
            now.saturating_sub(o) < self.options.timeouts.first_frame_ms.max(IDLE_MIN_MS)
        });
        let (err_code, action, mut msg) = if let Some(code) = code.filter(|_| !abnormal) {
            classify_close(code, reason)
        } else if c.opened_at.is_none() {
            match t {
                Transport::WebSocket => (
                    ErrorCode::UpgradeRefused,
                    Action::Fallback,
                    String::from("no WebSocket upgrade (HTTP 101): the server is unreachable, or a proxy in between (nginx without Upgrade headers, IIS without the WebSocket module) refused it"),
                ),
                _ => (
                    ErrorCode::NetworkError,
                    Action::Fallback,
                    String::from("the request failed without an HTTP status: the server is unreachable, or CORS, mixed content or a CSP blocked it"),
                ),
            }
        } else if !c.established || (!c.spoke && c.role == Role::Session && closed_at_once) {
            // Open counts as open, but a stream cut at once before any byte is a proxy that
            // accepts and drops it: the rung does not work here.
            (
                ErrorCode::ClosedByPeer,
                if c.established {
                    Action::StepDown
                } else {
                    Action::Fallback
                },
                String::from("the connection opened, then closed before any data arrived: a proxy is probably interfering"),
            )
        } else {
            (
                ErrorCode::ClosedByPeer,
                Action::Retry,
                String::from("the connection was closed by the server or a proxy"),
            )
        };
        let mut err_code = err_code;
        if c.established && abnormal {
            if let Some(m) = self.idle_cutoff_check(&c, now) {
                err_code = ErrorCode::IdleCutoff;
                msg = m;
            }
        }
        if !reason.is_empty() && code != Some(4429) && code != Some(1013) {
            msg.push_str(": ");
            msg.push_str(reason);
        }
        msg.push_str(" (");
        msg.push_str(t.as_str());
        msg.push(' ');
        msg.push_str(&url);
        msg.push(')');
        if action == Action::Fallback {
            if let Some(next) = self.next_rung_name(id) {
                msg.push_str("; trying ");
                msg.push_str(next);
            }
        }
        self.fail_conn(
            id,
            HoldfastError::new(err_code, msg).on(t),
            action,
            false,
            now,
        );
    }

    fn on_send_result(&mut self, msg_id: MessageId, result: Result<(), HttpFailure>, now: Millis) {
        let Some(pos) = self.outbox.iter().position(|p| p.id == msg_id) else {
            return;
        };
        if self.outbox[pos].state != SendState::Posting {
            return;
        }
        match result {
            Ok(()) => self.acked(msg_id.as_str(), now),
            Err(f) => {
                self.outbox[pos].state = SendState::Unsent;
                match f.status {
                    Some(401) => {
                        self.token = None;
                        self.post_attempt += 1;
                        let d = self.post_backoff();
                        self.post_retry_at = Some(now + d);
                        self.request_token();
                    }
                    Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                        let Some(p) = self.outbox.remove(pos) else {
                            return;
                        };
                        let mut m = String::from("the server refused the message (HTTP ");
                        m.push_str(&u64_to_string(s as u64));
                        if let Some(c) = &f.error_code {
                            m.push_str(", ");
                            m.push_str(c);
                        }
                        m.push_str("): it will not be retried");
                        self.app(AppEvent::SendFailed {
                            msg_id: p.id,
                            error: HoldfastError::new(ErrorCode::SendFailed, m),
                        });
                        self.flush_outbox(now);
                    }
                    _ => {
                        self.post_attempt += 1;
                        let d = self.post_backoff();
                        let d = f.retry_after_ms.map_or(d, |r| r.min(MAX_WAIT_MS).max(d));
                        self.post_retry_at = Some(now + d);
                    }
                }
                // Now on a WebSocket? It goes there at once.
                self.flush_outbox(now);
            }
        }
    }

    fn on_online(&mut self, now: Millis) {
        self.online = true;
        match self.phase {
            Phase::Offline => {
                self.phase = Phase::Running;
                self.diagnostics.note(
                    now,
                    String::from("the browser is online again: reconnecting now"),
                );
                self.start_round(now);
            }
            Phase::Running if self.retry_at.is_some() => {
                self.retry_at = None;
                self.start_round(now);
            }
            // The network changed under a live session (a phone switching networks): the
            // old socket may be dead without knowing it.
            Phase::Running => self.verify_session(false, now),
            _ => {}
        }
    }

    fn on_offline(&mut self, now: Millis) {
        self.online = false;
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Offline;
        self.close_all(now);
        self.retry_at = None;
        let err = HoldfastError::new(
            ErrorCode::Offline,
            "the browser reports no network: paused until it is back online",
        );
        self.emit_error(err);
    }

    fn on_visible(&mut self, now: Millis) {
        self.visible = true;
        if std::mem::take(&mut self.poll_held) && self.phase == Phase::Running {
            if let (Some(r), None) = (self.session_rung, self.session_conn) {
                let id = self.open_conn(r, Role::Session, now);
                self.session_conn = Some(id);
            }
        }
        self.verify_session(false, now);
    }

    /// `polling.pause_when_hidden`: a hidden page asks for no new poll (the one in flight
    /// still completes); events wait on the server and arrive in one batch on return.
    fn polling_held_while_hidden(&self) -> bool {
        self.options.polling.pause_when_hidden && !self.visible
    }

    fn on_clock_jump(&mut self, late: u64, now: Millis) {
        self.diagnostics.note(
            now,
            cat(&[
                "a timer fired ",
                &secs(late),
                " late: the machine probably slept; checking the connection",
            ]),
        );
        self.verify_session(true, now);
    }

    /// The session may be dead without anyone having told us (page was hidden, machine
    /// slept): check it now instead of waiting for the next heartbeat.
    fn verify_session(&mut self, slept: bool, now: Millis) {
        let Some(id) = self.session_conn else {
            if slept {
                if let Some(at) = self.next_poll_at {
                    self.next_poll_at = Some(at.min(now));
                }
            }
            return;
        };
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        match c.transport {
            Transport::WebSocket if self.ws_answers_pings => {
                let text = self.options.interop.ping_text.clone();
                let timeout = self.options.heartbeat.pong_timeout_ms;
                let max = self.options.heartbeat.max_missed;
                if let Some(c) = self.conn_mut(id) {
                    c.ping_deadline = Some(now + timeout);
                    // One missed answer is enough now.
                    c.missed = max.saturating_sub(1);
                    c.last_tx = now;
                }
                self.cmd(Command::SendPing { conn: id, text });
            }
            // Without answered pings, only the server's own silence can tell.
            Transport::WebSocket | Transport::Sse => {
                if slept || now >= c.last_rx + self.silence_ms() {
                    let e = HoldfastError::new(
                        ErrorCode::HeartbeatTimeout,
                        "no data from the server since the page was suspended: reconnecting",
                    )
                    .on(c.transport);
                    self.fail_conn(id, e, Action::Now, true, now);
                }
            }
            Transport::Polling => {
                if slept {
                    // The request probably died with the network; ask again now.
                    self.remove_conn(id, now, Some(CLOSE_NORMAL));
                    self.session_conn = None;
                    self.next_poll_at = Some(now);
                }
            }
        }
    }

    // ----- deadlines ------------------------------------------------------------------

    fn silence_ms(&self) -> u64 {
        match self.server_heartbeat {
            Some(h) => h
                .min(MAX_WAIT_MS)
                .saturating_mul(2)
                .saturating_add(self.options.heartbeat.pong_timeout_ms),
            None => self.options.heartbeat.server_silence_ms,
        }
    }

    fn deadlines(&self, mut f: impl FnMut(Millis, Due)) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(at) = self.retry_at {
            f(at, Due::Retry);
        }
        if let Some(at) = self.healthy_at {
            f(at, Due::Healthy);
        }
        if let Some(at) = self.next_poll_at {
            f(at, Due::NextPoll);
        }
        if let Some(at) = self.probe_at {
            f(at, Due::Probe);
        }
        if let Some(at) = self.post_retry_at {
            f(at, Due::PostRetry);
        }
        if let Some(s) = self.crosscheck.suspect() {
            f(s.deadline, Due::Suspect);
        }
        let t = &self.options.timeouts;
        for c in &self.conns {
            if c.transport == Transport::Polling {
                if t.open_ms > 0 {
                    f(
                        c.started_at + c.poll_wait + t.open_ms,
                        Due::OpenTimeout(c.id),
                    );
                }
            } else if c.opened_at.is_none() && t.open_ms > 0 {
                f(c.started_at + t.open_ms, Due::OpenTimeout(c.id));
            }
            if !c.established {
                if c.role == Role::Primary
                    && !c.raced
                    && t.race_ms > 0
                    && self.round_next < self.ladder.len()
                {
                    f(c.started_at + t.race_ms, Due::Race(c.id));
                }
                if let Some(o) = c.opened_at {
                    match c.transport {
                        Transport::WebSocket if t.first_frame_ms > 0 => {
                            f(o + t.first_frame_ms, Due::FirstFrame(c.id))
                        }
                        Transport::Sse if t.sse_first_bytes_ms > 0 => {
                            f(o + t.sse_first_bytes_ms, Due::SseBytes(c.id))
                        }
                        _ => {}
                    }
                }
            } else if c.role == Role::Session {
                match c.transport {
                    Transport::WebSocket if !c.pings_off => match c.ping_deadline {
                        Some(d) => f(d, Due::Pong(c.id)),
                        None => f(
                            c.last_rx.max(c.last_tx) + self.ping_interval,
                            Due::Ping(c.id),
                        ),
                    },
                    // SSE, and a WebSocket whose server answers no ping: the server's own
                    // frames and heartbeats are the only sign of life.
                    Transport::WebSocket | Transport::Sse => {
                        f(c.last_rx + self.silence_ms(), Due::Silence(c.id))
                    }
                    Transport::Polling => {}
                }
                if c.transport != Transport::Polling {
                    // Fast path: this rung's server spoke at once before; silence now is proof.
                    if let (false, Some(true), Some(o)) =
                        (c.spoke, self.speaks_first.get(c.rung).copied(), c.opened_at)
                    {
                        match c.transport {
                            Transport::WebSocket if t.first_frame_ms > 0 => {
                                f(o + t.first_frame_ms, Due::FirstFrame(c.id))
                            }
                            _ if t.sse_first_bytes_ms > 0 => {
                                f(o + t.sse_first_bytes_ms, Due::SseBytes(c.id))
                            }
                            _ => {}
                        }
                    }
                    if let (false, Some(o)) = (c.proven, c.opened_at) {
                        let handshake = o.saturating_sub(c.started_at);
                        let cursor = self.delivery.cursor();
                        if let Some(at) = self.crosscheck.due(cursor, c.last_rx, o, handshake) {
                            f(at, Due::CrossCheck(c.id));
                        }
                    }
                }
            }
        }
    }

    fn handle_due(&mut self, d: Due, now: Millis) {
        match d {
            Due::Retry => {
                self.retry_at = None;
                self.start_round(now);
            }
            Due::Healthy => {
                self.healthy_at = None;
                self.attempt = 0;
            }
            Due::NextPoll => {
                self.next_poll_at = None;
                if self.polling_held_while_hidden() {
                    self.poll_held = true;
                } else if let Some(r) = self.session_rung {
                    if self.session_conn.is_none() {
                        let id = self.open_conn(r, Role::Session, now);
                        self.session_conn = Some(id);
                    }
                }
            }
            Due::Probe => {
                self.probe_at = None;
                self.start_probe(now);
            }
            Due::PostRetry => {
                self.post_retry_at = None;
                self.flush_outbox(now);
            }
            Due::OpenTimeout(id) => {
                let Some(c) = self.conn(id) else { return };
                let t = c.transport;
                let established = c.established;
                let limit = self.options.timeouts.open_ms + c.poll_wait;
                let msg = if t == Transport::Polling {
                    cat(&["the poll request got no answer within ", &secs(limit)])
                } else {
                    cat(&["the connection did not open within ", &secs(limit)])
                };
                let action = if established {
                    Action::Retry
                } else {
                    Action::Fallback
                };
                let e = HoldfastError::new(ErrorCode::OpenTimeout, self.with_next(msg, id)).on(t);
                self.fail_conn(id, e, action, true, now);
            }
            Due::Race(id) => {
                if let Some(c) = self.conn_mut(id) {
                    c.raced = true;
                    let t = c.transport;
                    if self.round_next < self.ladder.len() {
                        let next = self.ladder[self.round_next];
                        self.diagnostics.note(
                            now,
                            cat(&[
                                t.as_str(),
                                " is slow to deliver: starting ",
                                next.as_str(),
                                " beside it",
                            ]),
                        );
                        self.open_next(now);
                    }
                }
            }
            Due::FirstFrame(id) | Due::SseBytes(id) => {
                let Some(c) = self.conn(id).cloned() else {
                    return;
                };
                if c.role == Role::Probe {
                    self.judge_probe(id, now);
                    return;
                }
                // A session whose server spoke at once on earlier connections, silent now.
                let (code, ms, text) = match c.transport {
                    Transport::WebSocket => (
                        ErrorCode::SilentAfterOpen,
                        self.options.timeouts.first_frame_ms,
                        "the WebSocket opened (HTTP 101) but no frame arrived within ",
                    ),
                    _ => (
                        ErrorCode::SseBuffered,
                        self.options.timeouts.sse_first_bytes_ms,
                        "the SSE response started but no bytes followed within ",
                    ),
                };
                let why = match c.transport {
                    Transport::WebSocket => ", although this server sent a frame at once on earlier connections: a proxy passes the upgrade but not the data",
                    _ => ", although this server sent bytes at once on earlier connections: a proxy or compression is buffering the stream (nginx: X-Accel-Buffering: no; IIS: disable response buffering)",
                };
                let e = HoldfastError::new(code, cat(&[text, &secs(ms), why])).on(c.transport);
                self.fail_conn(id, e, Action::StepDown, true, now);
            }
            // Still the session's stream? (A deadline handled just before may have ended it.)
            Due::CrossCheck(id) if self.session_conn == Some(id) => self.open_check(id, now),
            Due::CrossCheck(_) => {}
            Due::Suspect => self.suspect_blocked(now),
            Due::Ping(id) => {
                let text = self.options.interop.ping_text.clone();
                let timeout = self.options.heartbeat.pong_timeout_ms;
                if let Some(c) = self.conn_mut(id) {
                    c.ping_deadline = Some(now + timeout);
                    c.last_tx = now;
                }
                self.cmd(Command::SendPing { conn: id, text });
            }
            Due::Pong(id) if !self.ws_answers_pings => {
                // This server has never answered a ping: a missing pong proves nothing.
                if let Some(c) = self.conn_mut(id) {
                    c.pings_off = true;
                    c.ping_deadline = None;
                }
                let text = self.options.interop.ping_text.clone();
                self.diagnostics.note(
                    now,
                    cat(&[
                        "the WebSocket server does not answer the ping ",
                        &text,
                        ": liveness now rests on its own frames and heartbeats (set interop.pingText if it answers another text)",
                    ]),
                );
            }
            Due::Pong(id) => {
                let h = &self.options.heartbeat;
                let (max, timeout) = (h.max_missed, h.pong_timeout_ms);
                let text = self.options.interop.ping_text.clone();
                let Some(c) = self.conn_mut(id) else { return };
                c.missed += 1;
                if c.missed >= max {
                    let n = c.missed;
                    let e = HoldfastError::new(
                        ErrorCode::HeartbeatTimeout,
                        cat(&[
                            "no answer to ",
                            &u64_to_string(n as u64),
                            " pings in a row: the connection is dead; reconnecting",
                        ]),
                    )
                    .on(Transport::WebSocket);
                    self.fail_conn(id, e, Action::Retry, true, now);
                } else {
                    c.ping_deadline = Some(now + timeout);
                    c.last_tx = now;
                    self.cmd(Command::SendPing { conn: id, text });
                }
            }
            Due::Silence(id) => {
                let ms = self.silence_ms();
                let t = self.conn(id).map_or(Transport::Sse, |c| c.transport);
                let e = HoldfastError::new(
                    ErrorCode::HeartbeatTimeout,
                    cat(&[
                        "no data or heartbeat from the server for ",
                        &secs(ms),
                        ": the stream is dead or buffered; reconnecting",
                    ]),
                )
                .on(t);
                self.fail_conn(id, e, Action::Retry, true, now);
            }
        }
    }

    // ----- rounds, sessions, probes ---------------------------------------------------

    fn start_round(&mut self, now: Millis) {
        if self.phase != Phase::Running || self.session_rung.is_some() {
            return;
        }
        self.retry_at = None;
        if self.options.use_token && self.token.is_none() {
            self.request_token();
            return;
        }
        // Anything left from an earlier round is abandoned.
        let leftovers: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.role == Role::Primary)
            .map(|c| c.id)
            .collect();
        for id in leftovers {
            self.remove_conn(id, now, Some(CLOSE_NORMAL));
        }
        self.round_next = self.start_rung;
        self.round_running = true;
        self.open_next(now);
    }

    fn open_next(&mut self, now: Millis) -> bool {
        if self.round_next >= self.ladder.len() {
            return false;
        }
        let r = self.round_next;
        self.round_next += 1;
        self.open_conn(r, Role::Primary, now);
        true
    }

    fn request_token(&mut self) {
        if !self.token_pending {
            self.token_pending = true;
            self.cmd(Command::RequestToken);
        }
    }

    fn rung_url(&self, t: Transport, wait: Option<u64>, with_token: bool) -> String {
        self.rung_url_since(t, wait, with_token, self.delivery.cursor())
    }

    fn rung_url_since(
        &self,
        t: Transport,
        wait: Option<u64>,
        with_token: bool,
        since: Option<&str>,
    ) -> String {
        let Some(base) = self.endpoints.get(t) else {
            return String::new();
        };
        let i = &self.options.interop;
        let mut params: Vec<(&str, &str)> = Vec::with_capacity(4 + self.options.params.len());
        if let Some(topic) = &self.options.topic {
            params.push((&i.topic_param, topic));
        }
        for (k, v) in &self.options.params {
            params.push((k, v));
        }
        if let Some(c) = since {
            params.push((&i.since_param, c));
        }
        let wait_s;
        if let Some(w) = wait {
            wait_s = u64_to_string(w);
            params.push((&i.wait_param, &wait_s));
        }
        let heartbeat_s;
        if let (Transport::Sse, Some(cap)) = (t, self.idle_cap) {
            heartbeat_s = u64_to_string(cap);
            params.push((&i.heartbeat_param, &heartbeat_s));
        }
        if with_token && t == Transport::WebSocket {
            if let Some(tok) = &self.token {
                params.push((&i.token_param, tok));
            }
        }
        base.to_string_with(&params)
    }

    fn open_conn(&mut self, rung: usize, role: Role, now: Millis) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn = self.next_conn.wrapping_add(1).max(1);
        let t = self.ladder[rung];
        let wait = if t == Transport::Polling {
            // The first request of a poll session returns at once: it proves the rung. So
            // does a cross-check: it asks what is there now.
            Some(if role == Role::Session {
                let wait = self.options.polling.wait_ms.unwrap_or(0);
                self.idle_cap.map_or(wait, |cap| wait.min(cap))
            } else {
                0
            })
        } else {
            None
        };
        // A check always says `wait=0`: a long-poll server would otherwise hold it, and a
        // short-poll one ignores the parameter.
        let wait_param = if self.options.polling.wait_ms.is_some() || role == Role::Check {
            wait
        } else {
            None
        };
        let since = if role == Role::Check {
            self.crosscheck
                .since(self.delivery.cursor())
                .map(String::from)
        } else {
            self.delivery.cursor().map(String::from)
        };
        let url = self.rung_url_since(t, wait_param, true, since.as_deref());
        let diag_url = self.rung_url_since(t, wait_param, false, since.as_deref());
        let token = if t == Transport::WebSocket {
            None
        } else {
            self.token.clone().map(Secret::new)
        };
        let last_event_id = if t == Transport::Sse {
            self.delivery.cursor().map(String::from)
        } else {
            None
        };
        self.conns.push(Conn {
            id,
            transport: t,
            rung,
            role,
            started_at: now,
            opened_at: None,
            // A poll request inside a session needs no proof that the rung works.
            established: role == Role::Session || role == Role::Check,
            last_rx: now,
            last_tx: now,
            ping_deadline: None,
            missed: 0,
            raced: false,
            poll_items: false,
            poll_wait: wait.unwrap_or(0),
            since,
            delivered: false,
            spoke: false,
            proven: false,
            pings_off: false,
            delivered_before: self.delivered_count,
        });
        if role != Role::Session && role != Role::Check {
            self.diagnostics.push_attempt(Attempt {
                conn: id,
                transport: t,
                probe: role == Role::Probe,
                url: diag_url,
                started_at: now,
                opened_at: None,
                first_data_at: None,
                ended_at: None,
                failure: None,
            });
        }
        self.cmd(Command::Open {
            conn: id,
            transport: t,
            url,
            token,
            last_event_id,
        });
        id
    }

    /// A conn delivered its first data: it wins its round, or its probe takes over.
    fn establish(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn_mut(id) else { return };
        c.established = true;
        let (role, rung, t) = (c.role, c.rung, c.transport);
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.first_data_at = Some(now);
        }
        if role == Role::Session {
            return;
        }
        // Everything else that could deliver goes: never two rungs at once.
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.id != id)
            .map(|c| c.id)
            .collect();
        for o in others {
            self.remove_conn(o, now, Some(CLOSE_NORMAL));
        }
        let moved_up = role == Role::Probe;
        if let Some(c) = self.conn_mut(id) {
            c.role = Role::Session;
        }
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.ended_at = None;
        }
        let previous = self.session_rung.map(|r| self.ladder[r]);
        self.session_rung = Some(rung);
        self.session_conn = Some(id);
        self.session_hello = None;
        let interval = self.check_interval(t);
        self.crosscheck.new_session(interval);
        self.idle_noted = false;
        self.next_poll_at = None;
        self.round_running = false;
        self.retry_at = None;
        self.start_rung = rung;
        self.ever_connected = true;
        self.healthy_at = Some(now + self.options.backoff.healthy_after_ms);
        if moved_up {
            self.diagnostics.note(
                now,
                cat(&[
                    "moved up from ",
                    previous.map_or("?", |p| p.as_str()),
                    " to ",
                    t.as_str(),
                ]),
            );
            // After a stall demotion the probe backoff is kept, or a rung that opens and
            // then stalls would be re-probed every `initial_ms`.
            let recent = self
                .demoted_at
                .is_some_and(|t| now.saturating_sub(t) < self.options.probe.max_ms);
            if !recent {
                self.probe_delay = self.options.probe.initial_ms;
            }
            self.probe_target = 0;
        } else if rung > 0 {
            let failed: Vec<&str> = self.ladder[..rung].iter().map(|t| t.as_str()).collect();
            self.diagnostics.note(
                now,
                cat(&[
                    "using ",
                    t.as_str(),
                    " because ",
                    &join(&failed, ", "),
                    " failed",
                ]),
            );
        }
        self.probe_at = None;
        if rung > 0 && self.options.probe.enabled {
            self.probe_at = Some(now + self.probe_delay);
            if self.probe_target >= rung {
                self.probe_target = 0;
            }
        }
        self.remember(rung, now);
        // Messages that were on a previous conn go again on this one.
        for p in self.outbox.iter_mut() {
            if p.state != SendState::Posting {
                p.state = SendState::Unsent;
            }
        }
        self.flush_outbox(now);
    }

    fn remember(&mut self, rung: usize, now: Millis) {
        if !self.options.memory.enabled {
            return;
        }
        let key = self.endpoints.memory_key.clone();
        if rung == 0 {
            if self.remembered.take().is_some() {
                self.cmd(Command::Forget { key });
            }
            return;
        }
        let t = self.ladder[rung];
        let ttl = self.options.memory.ttl_ms;
        let fresh =
            matches!(self.remembered, Some(r) if r.transport == t && r.expires_at >= now + ttl / 2);
        if !fresh {
            let value = RememberedRung {
                transport: t,
                expires_at: now + ttl,
            };
            self.remembered = Some(value);
            self.cmd(Command::Remember { key, value });
        }
    }

    fn start_probe(&mut self, now: Millis) {
        let Some(rung) = self.session_rung else {
            return;
        };
        if rung == 0 || self.conns.iter().any(|c| c.role == Role::Probe) {
            return;
        }
        if self.options.use_token && self.token.is_none() {
            self.probe_at = Some(now + self.probe_delay);
            return;
        }
        let target = self.probe_target.min(rung - 1);
        self.probe_buffer.clear();
        self.handover.clear();
        self.open_conn(target, Role::Probe, now);
    }

    fn probe_failed(&mut self, now: Millis) {
        let Some(rung) = self.session_rung else {
            return;
        };
        self.probe_target += 1;
        if self.probe_target >= rung {
            self.probe_target = 0;
            self.probe_delay = (self.probe_delay.saturating_mul(2)).min(self.options.probe.max_ms);
        }
        self.probe_at = Some(now + self.probe_delay);
    }

    /// A probe opened and has been quiet for its first-frame deadline. It is blocked when
    /// the session delivered events it did not (they went to both), or when its server
    /// spoke at once on earlier connections; otherwise both were quiet and it takes over
    /// (cross-checks then watch it like any quiet stream).
    fn judge_probe(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        let session = self.session_rung.map_or("?", |r| self.ladder[r].as_str());
        let owed = self.delivered_count.saturating_sub(c.delivered_before);
        let known = self.speaks_first.get(c.rung) == Some(&true);
        if owed == 0 && !known {
            self.diagnostics.note(
                now,
                cat(&[
                    "the ",
                    c.transport.as_str(),
                    " probe stayed open and quiet while ",
                    session,
                    " was quiet too: moving up; cross-checks watch it",
                ]),
            );
            self.establish(id, now);
            return;
        }
        let why = if owed > 0 {
            cat(&[
                " while ",
                session,
                " delivered ",
                &u64_to_string(owed),
                " events: the path is still blocked",
            ])
        } else {
            String::from(" although this server sent data at once on earlier connections: the path is still blocked")
        };
        let (code, what) = match c.transport {
            Transport::WebSocket => (
                ErrorCode::SilentAfterOpen,
                "the WebSocket probe opened (HTTP 101) but delivered nothing",
            ),
            _ => (
                ErrorCode::SseBuffered,
                "the SSE probe started but delivered nothing",
            ),
        };
        let e = HoldfastError::new(code, cat(&[what, &why])).on(c.transport);
        self.fail_conn(id, e, Action::Fallback, true, now);
    }

    /// The cross-check interval a new session on `t` starts with: `timeouts.firstFrameMs`
    /// (WebSocket) or `timeouts.sseFirstBytesMs` (SSE); 0 (no checks) for polling, or when
    /// the ladder has no polling rung to ask.
    fn check_interval(&self, t: Transport) -> u64 {
        if !self.ladder.contains(&Transport::Polling) {
            return 0;
        }
        match t {
            Transport::WebSocket => self.options.timeouts.first_frame_ms,
            Transport::Sse => self.options.timeouts.sse_first_bytes_ms,
            Transport::Polling => 0,
        }
    }

    /// Asks the polling rung, without holding, what follows the cursor of stream `target`.
    fn open_check(&mut self, target: ConnId, now: Millis) {
        let Some(rung) = self.ladder.iter().position(|t| *t == Transport::Polling) else {
            return;
        };
        let since = self
            .crosscheck
            .since(self.delivery.cursor())
            .map(String::from);
        if since.as_deref().is_some_and(|s| order_key(s).is_none()) {
            self.crosscheck.turn_off();
            self.diagnostics.note(
                now,
                String::from("cross-checks off: the cursor is not an integer or <ms>-<seq> id, so a poll's answer cannot be compared with the stream's"),
            );
            return;
        }
        let id = self.open_conn(rung, Role::Check, now);
        self.crosscheck.started(id, target, since.as_deref(), now);
    }

    fn check_failed(&mut self, id: ConnId, why: &str, now: Millis) {
        if !self.crosscheck.is_check(id) {
            return;
        }
        self.crosscheck.failed(id, now);
        let next = secs(self.crosscheck.interval_ms());
        self.diagnostics.note(
            now,
            cat(&[
                "cross-check poll failed (",
                why,
                "): no verdict; next check after ",
                &next,
                " of silence",
            ]),
        );
    }

    fn check_finished(&mut self, id: ConnId, now: Millis) {
        let Some(verdict) = self.crosscheck.finished(id, self.delivery.baseline(), now) else {
            return;
        };
        let t = self.session_rung.map_or("?", |r| self.ladder[r].as_str());
        match verdict {
            Verdict::Idle if !self.idle_noted => {
                self.idle_noted = true;
                self.diagnostics.note(
                    now,
                    cat(&[
                        "cross-check: a poll with the stream's cursor found nothing it had not delivered: the ",
                        t,
                        " stream is idle, not blocked",
                    ]),
                );
            }
            Verdict::Suspect { count, newest } => {
                let grace = self
                    .crosscheck
                    .suspect()
                    .map_or(0, |s| s.deadline.saturating_sub(now));
                self.diagnostics.note(
                    now,
                    cat(&[
                        "cross-check: a poll with the stream's cursor found ",
                        &u64_to_string(count as u64),
                        " events up to ",
                        &newest,
                        " that ",
                        t,
                        " has not delivered; it has ",
                        &secs(grace),
                        " to deliver them",
                    ]),
                );
            }
            Verdict::Baseline => {
                // As with a hello's cursor: a reconnect (or a step-down) resumes from here.
                if let Some(b) = self.crosscheck.since(None).map(String::from) {
                    self.delivery.adopt(&b);
                }
            }
            Verdict::Unusable => self.diagnostics.note(
                now,
                String::from("cross-checks off: the polled events' ids are not integers or <ms>-<seq>, so they cannot be compared with the stream's"),
            ),
            Verdict::Idle => {}
        }
    }

    /// A cross-check saw events the session stream still has not delivered: it is blocked.
    fn suspect_blocked(&mut self, now: Millis) {
        let Some(s) = self.crosscheck.take_suspect() else {
            return;
        };
        let Some(c) = self.conn(s.target).filter(|c| c.role == Role::Session) else {
            return;
        };
        let t = c.transport;
        let waited = secs(now.saturating_sub(s.checked_at));
        let head = cat(&[
            "a poll with the same cursor returned ",
            &u64_to_string(s.count as u64),
            " events (up to ",
            &s.newest,
            ") that the ",
            t.as_str(),
            " stream had not delivered ",
            &waited,
            " later: ",
        ]);
        let (code, why) = match t {
            Transport::WebSocket => (
                ErrorCode::SilentAfterOpen,
                "a proxy passes the upgrade but not the data",
            ),
            _ => (
                ErrorCode::SseBuffered,
                "a proxy or compression is buffering the stream (nginx: proxy_buffering off or X-Accel-Buffering: no; IIS: disable response buffering)",
            ),
        };
        let e = HoldfastError::new(code, cat(&[&head, why])).on(t);
        self.fail_conn(s.target, e, Action::StepDown, true, now);
    }

    /// A token that worked was rejected (401, close 4401/4402 after data arrived with it):
    /// it expired. Ask the provider for a fresh one and go on at once, with no error and no
    /// backoff; a poll session stays open meanwhile. `unauthorized` is reported only when
    /// the fresh token fails too (then `auth_proven` is false and this returns `false`).
    fn quiet_token_refresh(&mut self, c: &Conn, close: bool, now: Millis) -> bool {
        if !self.options.use_token || !self.auth_proven || c.role == Role::Probe {
            return false;
        }
        self.auth_proven = false;
        self.token = None;
        self.diagnostics.note(
            now,
            cat(&[
                "the server rejected the token on ",
                c.transport.as_str(),
                " after it had worked (expired?): asking the token provider for a fresh one and going on at once",
            ]),
        );
        self.remove_conn(c.id, now, if close { Some(CLOSE_NORMAL) } else { None });
        match c.role {
            // The poll session goes on: its next request waits for the token.
            Role::Session if c.transport == Transport::Polling => self.session_conn = None,
            Role::Session => {
                self.end_session(c, now);
                self.round_running = false;
            }
            _ => {
                let rest: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|c| c.role == Role::Primary)
                    .map(|c| c.id)
                    .collect();
                for id in rest {
                    self.remove_conn(id, now, Some(CLOSE_NORMAL));
                }
                self.round_running = false;
            }
        }
        self.request_token();
        true
    }

    /// HTTP 429 on a poll of a working session: the server asks for fewer requests, not for
    /// another connection. The session stays open and the next poll waits `Retry-After`
    /// (at least [`POLL_SLOWED_MIN_MS`], plus up to a tenth of jitter).
    fn poll_slowed(&mut self, id: ConnId, retry_after: Option<u64>, now: Millis) {
        self.remove_conn(id, now, Some(CLOSE_NORMAL));
        if self.session_conn == Some(id) {
            self.session_conn = None;
        }
        let wait = retry_after
            .unwrap_or(0)
            .clamp(POLL_SLOWED_MIN_MS, MAX_WAIT_MS);
        let wait = wait + self.rng.below_incl(wait / 10);
        self.next_poll_at = Some(now + wait);
        self.diagnostics.note(
            now,
            cat(&[
                "the server asked for fewer polls (HTTP 429): the session stays open, next poll in ",
                &secs(wait),
            ]),
        );
    }

    /// HTTP 410 Gone on a poll: the backend no longer holds what follows the cursor. That is
    /// a reset: one gap, then polls without a cursor.
    fn poll_gone(&mut self, id: ConnId, now: Millis) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        self.remove_conn(id, now, Some(CLOSE_NORMAL));
        let cursor = self.delivery.cursor().map(String::from);
        if self.delivery.reset(None, None) {
            let err = HoldfastError::new(
                ErrorCode::ServerReset,
                "the server no longer holds the events after the cursor (HTTP 410 Gone): some were lost; reload your state",
            )
            .on(Transport::Polling);
            self.last_error = Some(err);
            self.diagnostics
                .note(now, String::from("server reset: HTTP 410 Gone on a poll"));
            self.app(AppEvent::Gap {
                reason: String::from("gone"),
                cursor,
                oldest: None,
            });
        }
        match c.role {
            Role::Session if self.phase == Phase::Running => {
                let next = self.open_conn(c.rung, Role::Session, now);
                self.session_conn = Some(next);
            }
            Role::Primary => {
                self.open_conn(c.rung, Role::Primary, now);
            }
            _ => {}
        }
    }

    /// Ends conn `id` for `err`, then decides what comes next. `close`: the engine ends it
    /// (so the web layer must be told); otherwise it already ended.
    fn fail_conn(
        &mut self,
        id: ConnId,
        err: HoldfastError,
        action: Action,
        close: bool,
        now: Millis,
    ) {
        let Some(c) = self.conn(id).cloned() else {
            return;
        };
        if c.role == Role::Check {
            self.remove_conn(id, now, if close { Some(CLOSE_NORMAL) } else { None });
            self.check_failed(id, &err.message, now);
            return;
        }
        if action == Action::Auth && self.quiet_token_refresh(&c, close, now) {
            return;
        }
        if let Some(a) = self.diagnostics.attempt_mut(id) {
            a.failure = Some(err.clone());
        } else {
            // A poll request inside a session is logged only when it fails.
            let url = self.rung_url(c.transport, None, false);
            self.diagnostics.push_attempt(Attempt {
                conn: id,
                transport: c.transport,
                probe: false,
                url,
                started_at: c.started_at,
                opened_at: c.opened_at,
                first_data_at: None,
                ended_at: Some(now),
                failure: Some(err.clone()),
            });
        }
        self.remove_conn(id, now, if close { Some(CLOSE_NORMAL) } else { None });
        match c.role {
            Role::Probe => {
                let mut n = String::from("probe of ");
                n.push_str(c.transport.as_str());
                n.push_str(" failed: ");
                n.push_str(err.code.as_str());
                self.diagnostics.note(now, n);
                if action == Action::Auth {
                    self.token = None;
                }
                self.probe_failed(now);
            }
            Role::Session => self.session_lost(c, err, action, now),
            Role::Primary => self.primary_failed(err, action, now),
            Role::Check => {} // handled above
        }
    }

    fn primary_failed(&mut self, err: HoldfastError, action: Action, now: Millis) {
        self.emit_error(err.clone());
        match action {
            Action::Auth | Action::RateLimited(_) => {
                if action == Action::Auth {
                    self.token = None;
                }
                let ids: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|c| c.role == Role::Primary)
                    .map(|c| c.id)
                    .collect();
                for id in ids {
                    self.remove_conn(id, now, Some(CLOSE_NORMAL));
                }
                let floor = match action {
                    Action::RateLimited(ms) => Some(ms),
                    _ => None,
                };
                self.round_failed(err, floor, now);
            }
            _ => {
                if self.conns.iter().any(|c| c.role == Role::Primary) {
                    return; // a racer is still going
                }
                if !self.open_next(now) {
                    self.round_failed(err, None, now);
                }
            }
        }
    }

    fn round_failed(&mut self, err: HoldfastError, floor: Option<u64>, now: Millis) {
        self.round_running = false;
        let delay = self.backoff_delay(false, floor);
        self.attempt += 1;
        if let Some(max) = self.options.backoff.max_attempts {
            if self.attempt >= max {
                let m = cat(&[
                    "gave up after ",
                    &u64_to_string(self.attempt as u64),
                    " failed attempts (option maxAttempts); last error: ",
                    &err.message,
                ]);
                self.close_client(Some(HoldfastError::new(ErrorCode::GaveUp, m)), now);
                return;
            }
        }
        self.retry_at = Some(now + delay);
        if self.options.use_token && self.token.is_none() {
            self.request_token();
        }
    }

    /// The session on `c` is over: everything else goes too (probes, a check), messages
    /// sent on it wait for the next one, and the next round starts from its rung.
    fn end_session(&mut self, c: &Conn, now: Millis) {
        self.handover.clear();
        self.session_rung = None;
        self.session_conn = None;
        self.next_poll_at = None;
        self.probe_at = None;
        self.healthy_at = None;
        let rest: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in rest {
            self.remove_conn(id, now, Some(CLOSE_NORMAL));
        }
        for p in self.outbox.iter_mut() {
            if p.state == SendState::OnConn(c.id) {
                p.state = SendState::Unsent;
            }
        }
        self.start_rung = c.rung;
    }

    fn session_lost(&mut self, c: Conn, err: HoldfastError, action: Action, now: Millis) {
        self.emit_error(err.clone());
        self.end_session(&c, now);
        self.note_stall(&c, &err, action, now);
        match action {
            Action::Now => self.start_round(now),
            Action::StepDown if c.rung + 1 < self.ladder.len() => {
                self.start_rung = c.rung + 1;
                self.demoted_at = Some(now);
                self.probe_delay = self.options.probe.initial_ms;
                let note = cat(&[
                    "stepping down from ",
                    c.transport.as_str(),
                    " to ",
                    self.ladder[c.rung + 1].as_str(),
                    ": ",
                    err.code.as_str(),
                ]);
                self.diagnostics.note(now, note);
                self.start_round(now);
            }
            Action::Auth => {
                self.token = None;
                self.round_failed(err, None, now);
            }
            Action::RateLimited(ms) => self.round_failed(err, Some(ms), now),
            Action::Fallback | Action::Retry | Action::StepDown => {
                let delay = self.backoff_delay(true, None);
                self.attempt += 1;
                self.retry_at = Some(now + delay);
            }
        }
    }

    /// A rung whose sessions open, then go dead (heartbeat timeouts) twice in a row passes
    /// the first frame but not the stream (a proxy that buffers after the first bytes):
    /// the next round starts one rung lower, and probes try it again later with backoff.
    fn note_stall(&mut self, c: &Conn, err: &HoldfastError, action: Action, now: Millis) {
        if err.code != ErrorCode::HeartbeatTimeout || action != Action::Retry {
            self.stalls = 0;
            return;
        }
        if self.stall_rung == c.rung {
            self.stalls += 1;
        } else {
            self.stall_rung = c.rung;
            self.stalls = 1;
        }
        // A rung already stepped down from recently gets no second chance.
        let recently = self
            .demoted_at
            .is_some_and(|t| now.saturating_sub(t) < self.options.probe.max_ms);
        let needed = if recently && self.stall_rung == c.rung {
            1
        } else {
            2
        };
        if self.stalls >= needed && c.rung + 1 < self.ladder.len() {
            self.stalls = 0;
            self.start_rung = c.rung + 1;
            self.demoted_at = Some(now);
            self.probe_delay = (self.probe_delay.saturating_mul(2)).min(self.options.probe.max_ms);
            let note = cat(&[
                c.transport.as_str(),
                " went silent twice after opening (heartbeat timeouts): stepping down to ",
                self.ladder[c.rung + 1].as_str(),
            ]);
            self.diagnostics.note(now, note);
        }
    }

    /// The wait before the next round. The first retry after losing a working session is
    /// spread over `[0, spread_ms]` (everyone cut at once must not return at once); later
    /// ones wait `[cap/2, cap]`, `cap = min(max, initial × factor^attempt)`.
    fn backoff_delay(&mut self, after_session: bool, floor: Option<u64>) -> u64 {
        let b = &self.options.backoff;
        let d = if after_session && self.attempt == 0 {
            self.rng.below_incl(b.spread_ms)
        } else {
            let cap = backoff_cap(b.initial_ms, b.factor, b.max_ms, self.attempt);
            self.jittered(cap)
        };
        match floor {
            Some(f) => f.max(d) + self.rng.below_incl(f / 10),
            None => d,
        }
    }

    fn post_backoff(&mut self) -> u64 {
        let b = &self.options.backoff;
        let cap = backoff_cap(b.initial_ms, b.factor, b.max_ms, self.post_attempt);
        self.jittered(cap)
    }

    /// A wait in `[cap × (1 − jitter), cap]`: `jitter` 0.5 (the default) is "equal
    /// jitter", 1 is "full jitter", 0 none.
    fn jittered(&mut self, cap: u64) -> u64 {
        let spread = ((cap as f64) * self.options.backoff.jitter) as u64;
        let spread = spread.min(cap);
        cap - spread + self.rng.below_incl(spread)
    }

    /// Records an idle death; returns the idle cut-off message when the same idle time
    /// killed two connections in a row (and adapts the ping interval).
    fn idle_cutoff_check(&mut self, c: &Conn, now: Millis) -> Option<String> {
        let idle = now.saturating_sub(c.last_rx.max(c.last_tx));
        if idle < IDLE_MIN_MS {
            return None;
        }
        self.idle_deaths.push(idle);
        if self.idle_deaths.len() > 3 {
            self.idle_deaths.remove(0);
        }
        let n = self.idle_deaths.len();
        if n < 2 {
            return None;
        }
        let (a, b) = (self.idle_deaths[n - 2], self.idle_deaths[n - 1]);
        let tol = (a.max(b) / 10).max(2_000);
        if a.abs_diff(b) > tol {
            return None;
        }
        let cut = a.min(b);
        let mut m = cat(&[
            "connections die after about ",
            &secs(cut),
            " without traffic: a proxy or load balancer has an idle timeout (Cloudflare: 100 s)",
        ]);
        // Adapted traffic keeps a third of the cut-off as margin.
        let new = (cut * 2 / 3).max(1_000);
        if c.transport == Transport::WebSocket
            && self.options.heartbeat.adaptive
            && cut <= self.ping_interval + self.options.heartbeat.pong_timeout_ms
        {
            if new < self.ping_interval {
                let note = cat(&[
                    "adaptive heartbeat: ping interval shortened from ",
                    &secs(self.ping_interval),
                    " to ",
                    &secs(new),
                    ", below the idle cut-off observed at ",
                    &secs(cut),
                ]);
                self.diagnostics.note(now, note);
                self.ping_interval = new;
                self.idle_deaths.clear();
                m.push_str("; pinging more often now");
            }
        } else if c.transport != Transport::WebSocket {
            if self.options.heartbeat.adaptive && new < self.idle_cap.unwrap_or(u64::MAX) {
                let note = cat(&[
                    "adaptive heartbeat: asking SSE servers for heartbeats every ",
                    &secs(new),
                    " and holding polls at most that long, below the idle cut-off observed at ",
                    &secs(cut),
                ]);
                self.diagnostics.note(now, note);
                self.idle_cap = Some(new);
                self.idle_deaths.clear();
                m.push_str("; asking the server for heartbeats more often now");
            } else {
                m.push_str("; make the server send heartbeats more often than that");
            }
        }
        Some(m)
    }

    // ----- upstream -------------------------------------------------------------------

    fn acked(&mut self, mid: &str, now: Millis) {
        let pos = self.outbox.iter().position(|p| p.id.as_str() == mid);
        if let Some(p) = pos.and_then(|i| self.outbox.remove(i)) {
            self.post_attempt = 0;
            self.app(AppEvent::Acked { msg_id: p.id });
            self.flush_outbox(now);
        }
    }

    fn flush_outbox(&mut self, now: Millis) {
        let _ = now;
        if self.phase != Phase::Running {
            return;
        }
        let Some(rung) = self.session_rung else {
            return;
        };
        match self.ladder[rung] {
            Transport::WebSocket => {
                let Some(conn) = self.session_conn else {
                    return;
                };
                // A POST still in flight from an HTTP rung goes first: order is kept.
                if self.outbox.iter().any(|p| p.state == SendState::Posting) {
                    return;
                }
                let mut cmds = Vec::new();
                for p in self.outbox.iter_mut() {
                    if p.state == SendState::Unsent {
                        p.state = SendState::OnConn(conn);
                        cmds.push(Command::SendUpstream {
                            conn,
                            msg_id: p.id.clone(),
                            data: p.data.clone(),
                        });
                    }
                }
                for c in cmds {
                    self.cmd(c);
                }
            }
            _ => {
                // One POST at a time keeps the order.
                if self.post_retry_at.is_some()
                    || self.outbox.iter().any(|p| p.state == SendState::Posting)
                {
                    return;
                }
                if self.options.use_token && self.token.is_none() {
                    if !self.outbox.is_empty() {
                        self.request_token();
                    }
                    return;
                }
                let Some(url) = &self.endpoints.send else {
                    return;
                };
                let i = &self.options.interop;
                let mut params: Vec<(&str, &str)> = Vec::new();
                if let Some(topic) = &self.options.topic {
                    params.push((&i.topic_param, topic));
                }
                for (k, v) in &self.options.params {
                    params.push((k, v));
                }
                let url = url.to_string_with(&params);
                let token = self.token.clone().map(Secret::new);
                if let Some(p) = self
                    .outbox
                    .iter_mut()
                    .find(|p| p.state != SendState::Posting)
                {
                    p.state = SendState::Posting;
                    let c = Command::Post {
                        msg_id: p.id.clone(),
                        url,
                        token,
                        data: p.data.clone(),
                    };
                    self.cmd(c);
                }
            }
        }
    }

    // ----- helpers --------------------------------------------------------------------

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

    fn probe_id(&self) -> Option<ConnId> {
        self.conns
            .iter()
            .find(|c| c.role == Role::Probe)
            .map(|c| c.id)
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn diag_url(&self, id: ConnId) -> String {
        self.diagnostics
            .attempts
            .iter()
            .rev()
            .find(|a| a.conn == id)
            .map(|a| a.url.clone())
            .or_else(|| {
                self.conn(id)
                    .map(|c| self.rung_url(c.transport, None, false))
            })
            .unwrap_or_default()
    }

    fn next_rung_name(&self, id: ConnId) -> Option<&'static str> {
        let c = self.conn(id)?;
        if c.role != Role::Primary
            || self
                .conns
                .iter()
                .any(|o| o.id != id && o.role == Role::Primary)
        {
            return None;
        }
        self.ladder.get(self.round_next).map(|t| t.as_str())
    }

    fn with_next(&self, mut msg: String, id: ConnId) -> String {
        if let Some(n) = self.next_rung_name(id) {
            msg.push_str("; trying ");
            msg.push_str(n);
        }
        msg
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

/// `min(max, initial × factor^n)`, saturating.
fn backoff_cap(initial: u64, factor: f64, max: u64, n: u32) -> u64 {
    let v = (initial as f64) * factor.powi(n.min(64) as i32);
    if !v.is_finite() || v >= max as f64 {
        max
    } else {
        (v as u64).max(1)
    }
}

/// Failure class of a non-2xx HTTP status.
fn classify_status(
    t: Transport,
    status: u16,
    retry_after: Option<u64>,
    error_code: Option<&str>,
) -> (ErrorCode, Action, String) {
    let s = u64_to_string(status as u64);
    let with_code = |m: &str| -> String {
        match error_code {
            Some(c) => cat(&[m, " (HTTP ", &s, ", ", c, ")"]),
            None => cat(&[m, " (HTTP ", &s, ")"]),
        }
    };
    match status {
        401 => (
            ErrorCode::Unauthorized,
            Action::Auth,
            with_code("the server rejected the token: asking the token provider for a new one"),
        ),
        403 => (
            ErrorCode::Forbidden,
            Action::Auth,
            with_code("the token is not allowed to read this topic"),
        ),
        429 | 503 => {
            let wait = retry_after.unwrap_or(5_000).min(MAX_WAIT_MS);
            (
                ErrorCode::RateLimited,
                Action::RateLimited(wait),
                with_code(&cat(&["the server asks to wait ", &secs(wait), " before retrying"])),
            )
        }
        _ if t == Transport::WebSocket => (
            ErrorCode::UpgradeRefused,
            Action::Fallback,
            with_code("the WebSocket upgrade was refused: enable WebSocket support or Upgrade headers in the proxy"),
        ),
        404 | 405 | 501 => (
            ErrorCode::HttpError,
            Action::Fallback,
            with_code("the endpoint does not exist on this server or proxy"),
        ),
        _ => (
            ErrorCode::HttpError,
            Action::Fallback,
            with_code("the server answered with an error status"),
        ),
    }
}

/// Failure class of a WebSocket close code (1005/1006 are handled by the caller).
fn classify_close(code: u16, reason: &str) -> (ErrorCode, Action, String) {
    let c = u64_to_string(code as u64);
    let head = |m: &str| cat(&[m, " (close code ", &c, ")"]);
    match code {
        4401 | 4402 => (
            ErrorCode::Unauthorized,
            Action::Auth,
            head("the server rejected the token: asking the token provider for a new one"),
        ),
        1008 => (
            ErrorCode::ServerError,
            Action::Retry,
            head("the server refused the request as malformed (topic or since)"),
        ),
        1011 => (
            ErrorCode::ServerError,
            Action::Retry,
            head("the server had an internal error (history store unavailable?)"),
        ),
        4403 => (
            ErrorCode::Forbidden,
            Action::Auth,
            head("the token is not allowed to read this topic"),
        ),
        4429 | 1013 => {
            let wait = super::util::parse_u64(reason.trim())
                .map(|s| s.saturating_mul(1000).min(MAX_WAIT_MS))
                .unwrap_or(5_000);
            (
                ErrorCode::RateLimited,
                Action::RateLimited(wait),
                head(&cat(&["rate limited: waiting ", &secs(wait)])),
            )
        }
        1009 => (
            ErrorCode::FrameTooLarge,
            Action::Retry,
            head("a message was too large for the server (1 MiB limit)"),
        ),
        1001 => (
            ErrorCode::ClosedByPeer,
            Action::Retry,
            head("the server is going away (restart or deploy)"),
        ),
        _ => (
            ErrorCode::ClosedByPeer,
            Action::Retry,
            head("the connection was closed by the server or a proxy"),
        ),
    }
}
