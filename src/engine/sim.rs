//! Seeded simulation: thousands of random fault schedules against a model server, under
//! virtual time, checking the delivery and retry invariants after every step.
//!
//! Each schedule draws a server kind ([`Kind`]: the reference protocol, a quiet WebSocket,
//! SSE without preamble, a short poll with bare arrays, all three quiet at once, or live
//! only), a ladder with the rung the kind is about, a ping text, an id style, a history
//! retention, token use, and a fault phase in which every rung switches between working,
//! refusing, hanging, opening then staying silent, buffering, rejecting the token, rate
//! limiting and idle cut-offs; the network also cuts sessions (cleanly or half-open), goes
//! offline, and the machine sleeps. I/O latencies are random, so timer and I/O inputs
//! reorder. After the faults stop, the client must recover and catch up. Against the quiet
//! kinds only the engine's cross-check polls (ordinary poll `Open`s, answered like any
//! poll) can tell a black-holed or buffering stream from an idle one.
//!
//! Invariants, for every kind: nothing repeated, order kept, never two conns delivering at
//! once; nothing lost that is owed (see `check_event`): from the first cursor the client
//! holds, a skip is allowed only behind a gap event answering a reset (or a 410) the model
//! sent on that conn, and only of what the model had trimmed by then; a live-only server
//! may also lose what was published before the stream that delivers next opened. Whatever
//! reached the engine on a conn that delivered is delivered (`final_checks`). No attempt
//! before the announced retry time and none missed when it comes, retry waits within the
//! backoff rules both ways, and at the end: connected, caught up (a live-only server: what
//! it sent), outbox drained — every schedule; one whose fault never ends (a rung broken
//! forever) may run up to two minutes past its end to get there. The summary prints each
//! kind's count. Three named constants waive engine bugs this simulation found, each as
//! narrowly as its symptom, counted per kind.
//!
//! The engine keeps no hash map it iterates (its two hash sets, the probe handover ids and
//! the dedup window, are only asked for membership), so its outputs do not depend on one.
//!
//! `HOLDFAST_SIM_SEED=<n>` replays one schedule (with a trace); `HOLDFAST_SIM_SCHEDULES=<n>`
//! changes how many run (default 12,000: about 2,000 per server kind);
//! `HOLDFAST_SIM_OFFSET=<n>` starts at another seed; `HOLDFAST_SIM_ALL=1` runs them all
//! and lists every failing seed with its kind.
//!
//! A seed is a replay: the model's state is in ordered maps and every choice it makes is a
//! draw from the seeded generator, so the same seed gives the same trace in any process.
//! `simulation_replays_the_same_trace_in_another_process` checks it on 300 seeds against a
//! second run of the test binary.

use std::cmp::Reverse;
// Ordered maps and sets only: the model picks conns and draws random numbers in their
// iteration order, and a hash map's order changes per process (the replay test below).
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::util::Rng;
use super::*;

/// The kind of server a schedule runs against, drawn per seed. The reference kind speaks
/// the Holdfast protocol; the others are the backends users already run (PROTOCOL.md §10),
/// which say nothing on connect, so only the engine's cross-check polls can tell their
/// quiet streams from blocked ones. Events, resets and acks are the same in every kind (a
/// quiet server that keeps a bounded history still sends `reset`, as §10 asks; the
/// short-poll one answers 410 Gone instead, as the FastAPI backend does).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `hello` first on WebSocket and SSE (after `: ok`), a pong to either ping text,
    /// heartbeats after 25 s without traffic, long polls answering
    /// `{"events":[...],"cursor":...}`.
    Reference,
    /// The WebSocket says nothing on connect, leaves the JSON ping unanswered, answers the
    /// text `ping` with a pong, and sends a heartbeat only after 30 s without a client frame
    /// (FastAPI's `wait_for(receive_text(), 30)` loop: a received ping restarts the wait).
    /// SSE and polling as the reference.
    QuietWs,
    /// SSE without a preamble (no `: ok`, no hello) and a keepalive comment only after 30 s
    /// without sending. WebSocket and polling as the reference.
    BareSse,
    /// A short poll answering at once with a bare array (no `cursor`) of integer-id events:
    /// all it keeps without `since`, 410 Gone when `since` is older than what it keeps.
    /// WebSocket and SSE as the reference.
    ShortPoll,
    /// All three rungs at once, as the FastAPI backend of the end-to-end suite
    /// (`QuietWs` + `BareSse` + `ShortPoll`).
    Quiet,
    /// WebSocket and SSE ignore `since` and send only what is published after they opened
    /// (quiet, as `QuietWs` and `BareSse`); polling honours it (as the reference).
    LiveOnly,
}

const KINDS: [Kind; 6] = [
    Kind::Reference,
    Kind::QuietWs,
    Kind::BareSse,
    Kind::ShortPoll,
    Kind::Quiet,
    Kind::LiveOnly,
];

impl Kind {
    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).expect("listed")
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Reference => "reference",
            Kind::QuietWs => "quiet websocket",
            Kind::BareSse => "sse without preamble",
            Kind::ShortPoll => "short poll, bare arrays",
            Kind::Quiet => "all quiet (fastapi)",
            Kind::LiveOnly => "live only",
        }
    }

    fn ws_quiet(self) -> bool {
        matches!(self, Kind::QuietWs | Kind::Quiet | Kind::LiveOnly)
    }

    fn sse_bare(self) -> bool {
        matches!(self, Kind::BareSse | Kind::Quiet | Kind::LiveOnly)
    }

    fn poll_short(self) -> bool {
        matches!(self, Kind::ShortPoll | Kind::Quiet)
    }

    /// The stream rungs ignore `since`.
    fn live_only(self) -> bool {
        self == Kind::LiveOnly
    }

    /// Whether `ladder` has the rung this kind is about.
    fn fits(self, ladder: &[Transport]) -> bool {
        let has = |t| ladder.contains(&t);
        match self {
            Kind::Reference | Kind::Quiet => true,
            Kind::QuietWs => has(Transport::WebSocket),
            Kind::BareSse => has(Transport::Sse),
            Kind::ShortPoll => has(Transport::Polling),
            Kind::LiveOnly => has(Transport::WebSocket) || has(Transport::Sse),
        }
    }
}

/// When a stream's server sends a heartbeat on its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Beat {
    /// After 25 s without traffic either way (the reference server).
    Reference,
    /// After 30 s without a client frame, then every 30 s (a quiet WebSocket).
    ClientQuiet,
    /// After 30 s without sending anything (SSE without preamble).
    Sent,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum IdStyle {
    Int,
    Stream,
    Opaque,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    /// Closed before open (WS) / network error (HTTP).
    Refuse,
    /// HTTP 404 (SSE/poll) or 426 (WS).
    Status,
    /// Never answers.
    Hang,
    /// Opens, then nothing (101 then silence / SSE buffered).
    Silent,
    /// 401 / close 4401.
    Auth,
    /// 429 with Retry-After / close 4429.
    RateLimit,
    /// Works, but dies after this much idle time.
    IdleCut(u64),
    /// Sends its first frames, then nothing more (a proxy that buffers after them).
    Stall,
}

#[derive(Debug)]
struct SConn {
    transport: Transport,
    alive: bool,
    /// Next log position to push (streaming rungs).
    next: usize,
    /// Streams push live events; a poll request holds until `hold_until`.
    streaming: bool,
    opened: bool,
    hold_until: Option<Millis>,
    /// Deliveries on one conn keep their order.
    last_at: Millis,
    last_traffic: Millis,
    idle_cut: Option<u64>,
    silent: bool,
    /// When its server sends heartbeats (streams).
    beat: Beat,
    /// `Beat::ClientQuiet`: the last client frame, or the last heartbeat sent.
    beat_base: Millis,
}

#[derive(Debug)]
enum Ev {
    In(Input<u32>),
    Publish,
    Faults,
    Cut,
    Offline,
    Online,
    Sleep,
    /// The page goes to the background: its timers fire up to a minute late.
    Hide,
    Show,
    /// Server-side check of a held poll / idle cut-off.
    Check(ConnId),
    /// Server heartbeat on a quiet stream.
    Beat(ConnId),
}

struct Sim {
    seed: u64,
    trace: bool,
    /// FNV-1a over every engine input and output, in order (the trace's lines), when asked.
    digest: Option<u64>,
    rng: Rng,
    e: Engine<u32>,
    now: Millis,
    seq: u64,
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    evs: BTreeMap<u64, Ev>,
    conns: BTreeMap<ConnId, SConn>,
    /// The fault mode of each rung, by `rung_index`.
    modes: [Mode; 3],
    broken_forever: Option<Transport>,
    faults_until: Millis,
    publish_until: Millis,
    end: Millis,
    offline: bool,
    hidden: bool,
    kind: Kind,
    style: IdStyle,
    retain: usize,
    log: Vec<String>,
    id_pos: BTreeMap<String, usize>,
    published_started: bool,
    // Checks.
    delivered: Vec<usize>,
    /// The log position each conn's reset said is the oldest kept (the model sent it), and
    /// whether it said so with an HTTP 410 (which names no id).
    resets: BTreeMap<ConnId, (usize, bool)>,
    /// Live-only streams (they start where the server chooses, not at the client's
    /// cursor), and the log position each starts at (see `check_event`).
    fresh: BTreeMap<ConnId, usize>,
    /// The log position the client's cursor asks for next, taken before each input (`None`:
    /// it holds no cursor).
    resume_from: Option<usize>,
    /// How many events had been published when the client came to hold a cursor (`None`
    /// while it holds none): everything from there on is owed to it.
    owed_from: Option<usize>,
    /// The log positions each conn brought to the engine while the engine still had it
    /// open, and how many events each conn delivered (see `final_checks`).
    carried: BTreeMap<ConnId, Vec<usize>>,
    delivered_by: BTreeMap<ConnId, usize>,
    /// Stream conns that brought events while they were the client's session.
    session_streams: BTreeSet<ConnId>,
    /// The log positions skipped behind gaps, as `[from, to)`: a conn that brings one
    /// later (a probe's replay from before the reset) cannot deliver it in order.
    gap_skipped: Vec<(usize, usize)>,
    /// Conns opened without a cursor, and the log position each starts at.
    sinceless: BTreeMap<ConnId, usize>,
    /// The newest log position named by a cursor the engine adopted without delivering it
    /// (a hello's, a poll's or a cross-check's baseline; see `WAIVE_ADOPTED_CURSOR_DROPS`).
    adopted: Option<usize>,
    /// Which waivers this schedule needed: adopted-cursor drops, a quiet WebSocket given up
    /// as silent, a step-down from the last rung (see the constants).
    waived: [bool; 3],
    /// Events skipped under the `fresh` rule (only live-only servers lose any after the
    /// client holds a cursor).
    skipped: usize,
    /// Streams stepped down because a cross-check proved them blocked.
    blocked: usize,
    /// After a gap: the oldest position the matched reset kept. The next event may skip
    /// ahead only up to it: what it skips, the model no longer held.
    gap_pending: Option<usize>,
    gaps: usize,
    last_source: Option<ConnId>,
    engine_closed: BTreeSet<ConnId>,
    peer_closed: BTreeSet<ConnId>,
    sent: Vec<String>,
    received: Vec<String>,
    received_set: BTreeSet<String>,
    acked: Vec<String>,
    last_retry: Option<Millis>,
    /// The engine asked for a token and has not had it yet.
    token_pending: bool,
    opts: Options,
    steps: u64,
    /// The schedule (with a rung broken forever) ran past its end until the client was
    /// connected and caught up.
    extended: bool,
}

// Engine bugs this simulation found, waived while they are open: each waiver is as narrow
// as the symptom, counted per kind in the summary (schedules that needed it), and goes
// with its constant set to `false` (then the seeds named fail).

/// Engine bug: a cursor the engine adopts while it has delivered nothing (a cross-check's
/// baseline, or a hello) becomes the ordering baseline, so events not newer than it that
/// are still to come are dropped as repeats although the app never had them. (1) A stream
/// opened without a cursor (a quiet server, or a reference SSE whose hello is slow) is
/// cross-checked one handshake later; the check's poll names the newest event, published
/// after the stream opened and on its way on the stream, which then drops it (seeds 3153
/// quiet websocket, 2790 and 6324 short poll, 4960 all quiet, 3176 live only: `carried`'s
/// check). (2) After a 410 clears the cursor, a WebSocket probe opened before it proves
/// itself and replays `hello` (cursor = newest), `reset` and the events from the oldest
/// kept: the hello is adopted and the replay dropped, 15 events the server still held lost
/// behind the gap (seeds 21777, 31981, 38474 short poll). The waiver excuses an event at
/// or before an adopted cursor, in `carried`'s check and in a skip.
///
/// Fixed: a hello's or a check's cursor is a resume point, not a filter (`Delivery::adopt_resume_point`). The switch stays, off, so the seeds above can be rerun against an engine that
/// has the bug again.
const WAIVE_ADOPTED_CURSOR_DROPS: bool = false;

/// Engine bug: a quiet WebSocket (FastAPI: a heartbeat 30 s after the last client frame)
/// is given up as silent although its server is fine. The engine pings 30 s after the
/// last frame it received, which is when such a server's heartbeat is due: the ping
/// restarts the server's wait, so heartbeats come about 60 s apart. A heartbeat (any
/// frame) clears the pong deadline, so the engine never learns that pings go unanswered
/// and goes on pinging. (1) With the default silence limit, 65 s, a heartbeat more than
/// 5 s on its way drops a healthy session (seed 90905 all quiet: pings at 555903 and
/// 585909, dropped at 620939, the heartbeat arrives at 621084; seed 97583 live only).
/// (2) The limit is 55 s when a `hello` on another rung of the schedule (the reference
/// SSE, `heartbeatMs` 25 s) taught it: the session is dropped every minute and the client
/// is reconnecting when the schedule ends (seeds 1088, 10169, 16456, 23455 quiet
/// websocket). The waiver excuses "connected at the end" when the last error is a
/// heartbeat timeout on a quiet WebSocket.
///
/// Fixed: a server that never answered a ping gets no more pings, and a heartbeat interval is learned per session. The switch stays, off, so the seeds above can be rerun against an engine that
/// has the bug again.
const WAIVE_QUIET_WS_SILENCE: bool = false;

/// Engine bug: a step-down from the last rung of the ladder has no rung to go to and
/// retries that rung forever; the rungs above (here polling, which the cross-checks
/// themselves show working) are never tried again. A live-only WebSocket last in
/// `[polling, sse, websocket]` with a cursor older than its server keeps is judged blocked
/// by every check (the poll returns a reset and events the stream never replays), every
/// 7 s to 30 s, to the end (seed 8259 live only). The waiver excuses "connected at the
/// end" when the last error is a cross-check's step-down on the last rung of a live-only
/// schedule.
///
/// Fixed: a blocked last rung steps down to the polling rung (`rung_below`). The switch stays, off, so the seeds above can be rerun against an engine that
/// has the bug again.
const WAIVE_STEP_DOWN_FROM_LAST_RUNG: bool = false;

/// A fixed index per transport (`Transport` has no order of its own).
fn rung_index(t: Transport) -> usize {
    match t {
        Transport::WebSocket => 0,
        Transport::Sse => 1,
        Transport::Polling => 2,
    }
}

/// `min(max, initial × factor^n)`: the longest wait after `n` failures.
fn backoff_cap(b: &BackoffOptions, n: u32) -> u64 {
    ((b.initial_ms as f64) * b.factor.powi(n as i32)).min(b.max_ms as f64) as u64
}

fn latency(rng: &mut Rng) -> u64 {
    match rng.below_incl(99) {
        0..=79 => 1 + rng.below_incl(60),
        80..=96 => 50 + rng.below_incl(700),
        _ => 1_000 + rng.below_incl(5_000),
    }
}

fn since_of(url: &str, param: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    for kv in q.split('&') {
        if let Some((k, v)) = kv.split_once('=') {
            if k == param {
                return Some(v.to_string());
            }
        }
    }
    None
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng::new(seed ^ 0x5EED_5EED);
        let kind = KINDS[rng.below_incl(KINDS.len() as u64 - 1) as usize];
        let mut opts = Options::new("/realtime");
        // A ladder with the rung the kind is about.
        opts.transports = loop {
            let ladder = match rng.below_incl(9) {
                0 => vec![Transport::Sse, Transport::Polling],
                1 => vec![Transport::WebSocket, Transport::Polling],
                2 => vec![Transport::Polling],
                3 => vec![Transport::WebSocket],
                4 => vec![Transport::Polling, Transport::Sse, Transport::WebSocket],
                _ => vec![Transport::WebSocket, Transport::Sse, Transport::Polling],
            };
            if kind.fits(&ladder) {
                break ladder;
            }
        };
        opts.use_token = rng.below_incl(3) == 0;
        opts.dedup_window = 64;
        opts.outbox_capacity = 16;
        // A quiet WebSocket answers only the text `ping`: half its schedules say so (the
        // others must do without pongs); the reference answers either text.
        if rng.below_incl(if kind.ws_quiet() { 1 } else { 4 }) == 0 {
            opts.interop.ping_text = "ping".into();
        }
        if kind.poll_short() {
            opts.polling.wait_ms = None;
            opts.polling.interval_ms = 1_000 + rng.below_incl(1_000);
        } else if rng.below_incl(3) == 0 {
            opts.polling.wait_ms = None;
        }
        let ladder = opts.transports.clone();
        let style = match rng.below_incl(2) {
            _ if kind.poll_short() => IdStyle::Int,
            0 => IdStyle::Int,
            1 => IdStyle::Stream,
            _ => IdStyle::Opaque,
        };
        let retain = if rng.below_incl(2) == 0 { 15 } else { 100_000 };
        let broken_forever = if ladder.len() > 1 && rng.below_incl(2) == 0 {
            Some(ladder[rng.below_incl(ladder.len() as u64 - 2) as usize])
        } else {
            None
        };
        let faults_until = 60_000 + rng.below_incl(240_000);
        let page = PageContext::new("https://app.example.com/");
        let e = Engine::new(opts.clone(), page, seed, 0).expect("valid options");
        let mut s = Sim {
            seed,
            trace,
            digest: None,
            rng,
            e,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            evs: BTreeMap::new(),
            conns: BTreeMap::new(),
            modes: [Mode::Ok; 3],
            broken_forever,
            faults_until,
            publish_until: faults_until + 60_000,
            end: faults_until + 360_000,
            offline: false,
            hidden: false,
            kind,
            style,
            retain,
            log: Vec::new(),
            id_pos: BTreeMap::new(),
            published_started: false,
            delivered: Vec::new(),
            resets: BTreeMap::new(),
            fresh: BTreeMap::new(),
            resume_from: None,
            owed_from: None,
            carried: BTreeMap::new(),
            delivered_by: BTreeMap::new(),
            session_streams: BTreeSet::new(),
            skipped: 0,
            blocked: 0,
            gap_skipped: Vec::new(),
            sinceless: BTreeMap::new(),
            adopted: None,
            waived: [false; 3],
            gap_pending: None,
            gaps: 0,
            last_source: None,
            engine_closed: BTreeSet::new(),
            peer_closed: BTreeSet::new(),
            sent: Vec::new(),
            received: Vec::new(),
            received_set: BTreeSet::new(),
            acked: Vec::new(),
            last_retry: None,
            token_pending: false,
            opts,
            steps: 0,
            extended: false,
        };
        s.reroll_faults();
        s.at(0, Ev::Faults);
        let (a, b, c) = (
            s.rng.below_incl(20_000),
            s.rng.below_incl(60_000),
            s.rng.below_incl(100_000),
        );
        s.at(1_000 + a, Ev::Cut);
        s.at(5_000 + b, Ev::Offline);
        s.at(10_000 + c, Ev::Sleep);
        let d = s.rng.below_incl(90_000);
        s.at(3_000 + d, Ev::Hide);
        s
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "simulation seed {} failed at t={} ms: {}\nreplay: HOLDFAST_SIM_SEED={} cargo test -p holdfast simulation -- --nocapture",
            self.seed, self.now, what, self.seed
        );
    }

    /// One line of the trace: printed when tracing, and folded into the digest.
    fn note(&mut self, dir: &str, what: &dyn std::fmt::Debug) {
        if !self.trace && self.digest.is_none() {
            return;
        }
        let line = format!("{:>7} {dir} {what:?}\n", self.now);
        if self.trace {
            print!("{line}");
        }
        if let Some(d) = &mut self.digest {
            for b in line.bytes() {
                *d = (*d ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
    }

    fn at(&mut self, t: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.evs.insert(self.seq, ev);
    }

    fn to_engine(&mut self, delay: u64, i: Input<u32>) {
        let t = self.now + delay;
        self.at(t, Ev::In(i));
    }

    /// Sends `i` on conn `c` keeping per-conn order.
    fn on_conn(&mut self, c: ConnId, i: Input<u32>) {
        let lat = latency(&mut self.rng);
        let Some(sc) = self.conns.get_mut(&c) else {
            return;
        };
        let t = (self.now + lat).max(sc.last_at);
        sc.last_at = t;
        sc.last_traffic = self.now;
        self.at(t, Ev::In(i));
    }

    fn in_faults(&self) -> bool {
        self.now < self.faults_until
    }

    fn mode(&self, t: Transport) -> Mode {
        if self.broken_forever == Some(t) {
            return match t {
                Transport::Polling => Mode::Ok,
                _ if self.seed.is_multiple_of(2) => Mode::Stall,
                _ => Mode::Silent,
            };
        }
        if !self.in_faults() {
            return Mode::Ok;
        }
        self.modes[rung_index(t)]
    }

    fn reroll_faults(&mut self) {
        for t in [Transport::WebSocket, Transport::Sse, Transport::Polling] {
            let m = match self.rng.below_incl(15) {
                0 => Mode::Refuse,
                1 => Mode::Status,
                2 => Mode::Hang,
                3 => Mode::Silent,
                4 => Mode::Auth,
                5 => Mode::RateLimit,
                6 => Mode::IdleCut(8_000 + self.rng.below_incl(1) * 12_000),
                7 if t != Transport::Polling => Mode::Stall,
                _ => Mode::Ok,
            };
            self.modes[rung_index(t)] = m;
        }
    }

    fn id(&self, n: usize) -> String {
        match self.style {
            IdStyle::Int => (n + 1).to_string(),
            IdStyle::Stream => format!("{}-{}", 1_700_000 + n / 3, n % 3),
            IdStyle::Opaque => format!(
                "e{:x}",
                (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20
            ),
        }
    }

    fn oldest(&self) -> usize {
        self.log.len().saturating_sub(self.retain)
    }

    fn event_item(&self, p: usize) -> Item<u32> {
        Item::Event {
            id: Some(self.log[p].clone()),
            kind: "t".into(),
            data: p as u32,
        }
    }

    /// Where a subscription with `since` starts, and whether the server must reset.
    fn start_of(&self, since: Option<&str>) -> (usize, bool) {
        match since {
            None => (self.log.len(), false),
            // `since=0`: the whole retained history, a reset only if some of it is gone.
            Some("0") => (self.oldest(), self.oldest() > 0),
            Some(s) => match self.id_pos.get(s) {
                Some(&p) if p + 1 >= self.oldest() => (p + 1, false),
                Some(_) => (self.oldest(), true),
                None => (self.log.len(), false),
            },
        }
    }

    fn hello(&self) -> Item<u32> {
        Item::Hello {
            cursor: self.log.last().cloned(),
            heartbeat_ms: Some(25_000),
        }
    }

    fn open(&mut self, c: ConnId, t: Transport, url: &str) {
        let since = since_of(url, &self.opts.interop.since_param);
        let wait = since_of(url, "wait")
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0);
        let mode = if self.offline {
            Mode::Refuse
        } else {
            self.mode(t)
        };
        self.conns.insert(
            c,
            SConn {
                transport: t,
                alive: true,
                next: self.log.len(),
                streaming: false,
                opened: false,
                hold_until: None,
                last_at: self.now,
                last_traffic: self.now,
                idle_cut: None,
                silent: false,
                beat: match t {
                    Transport::WebSocket if self.kind.ws_quiet() => Beat::ClientQuiet,
                    Transport::Sse if self.kind.sse_bare() => Beat::Sent,
                    _ => Beat::Reference,
                },
                beat_base: self.now,
            },
        );
        match mode {
            Mode::Refuse => {
                self.on_conn(
                    c,
                    Input::Closed {
                        conn: c,
                        code: None,
                        reason: String::new(),
                    },
                );
                self.kill(c);
            }
            Mode::Status => {
                let status = if t == Transport::WebSocket { 426 } else { 404 };
                self.on_conn(
                    c,
                    Input::HttpStatus {
                        conn: c,
                        status,
                        retry_after_ms: None,
                        error_code: None,
                    },
                );
                self.kill(c);
            }
            Mode::Hang => {
                if let Some(sc) = self.conns.get_mut(&c) {
                    sc.silent = true;
                }
            }
            Mode::Auth => {
                if t == Transport::WebSocket {
                    // Refused in-band, as the reference server does: error frame, then close.
                    self.on_conn(c, Input::Opened { conn: c });
                    let refusal = Item::ServerError {
                        code: "token_invalid".into(),
                        message: String::new(),
                    };
                    self.on_conn(
                        c,
                        Input::Items {
                            conn: c,
                            items: vec![refusal],
                        },
                    );
                    self.on_conn(
                        c,
                        Input::Closed {
                            conn: c,
                            code: Some(4401),
                            reason: "token".into(),
                        },
                    );
                } else {
                    self.on_conn(
                        c,
                        Input::HttpStatus {
                            conn: c,
                            status: 401,
                            retry_after_ms: None,
                            error_code: Some("token_invalid".into()),
                        },
                    );
                }
                self.kill(c);
            }
            Mode::RateLimit => {
                let secs = 1 + self.rng.below_incl(4);
                if t == Transport::WebSocket {
                    self.on_conn(c, Input::Opened { conn: c });
                    self.on_conn(
                        c,
                        Input::Closed {
                            conn: c,
                            code: Some(4429),
                            reason: secs.to_string(),
                        },
                    );
                } else {
                    self.on_conn(
                        c,
                        Input::HttpStatus {
                            conn: c,
                            status: 429,
                            retry_after_ms: Some(secs * 1000),
                            error_code: None,
                        },
                    );
                }
                self.kill(c);
            }
            Mode::Silent => {
                self.on_conn(c, Input::Opened { conn: c });
                if let Some(sc) = self.conns.get_mut(&c) {
                    sc.silent = true;
                    sc.opened = true;
                }
            }
            Mode::Ok | Mode::IdleCut(_) | Mode::Stall => {
                if let Mode::IdleCut(ms) = mode {
                    if let Some(sc) = self.conns.get_mut(&c) {
                        sc.idle_cut = Some(ms);
                    }
                    self.at(self.now + ms, Ev::Check(c));
                }
                let live = t != Transport::Polling && self.kind.live_only();
                let short = t == Transport::Polling && self.kind.poll_short();
                let quiet = match t {
                    Transport::WebSocket => self.kind.ws_quiet(),
                    Transport::Sse => self.kind.sse_bare(),
                    Transport::Polling => false,
                };
                let (start, reset) = if live {
                    (self.log.len(), false)
                } else if short && since.is_none() {
                    // A short poll without `since` returns every event it keeps.
                    (self.oldest(), false)
                } else {
                    self.start_of(since.as_deref())
                };
                if live {
                    self.fresh.insert(c, start);
                }
                if since.is_none() {
                    self.sinceless.insert(c, start);
                }
                if short && reset {
                    // Gone: the FastAPI backend's answer to a `since` older than it keeps.
                    self.resets.insert(c, (self.oldest(), true));
                    self.on_conn(
                        c,
                        Input::HttpStatus {
                            conn: c,
                            status: 410,
                            retry_after_ms: None,
                            error_code: None,
                        },
                    );
                    self.kill(c);
                    return;
                }
                self.on_conn(c, Input::Opened { conn: c });
                if let Some(sc) = self.conns.get_mut(&c) {
                    sc.opened = true;
                    sc.next = start;
                }
                let mut first: Vec<Item<u32>> = Vec::new();
                if t != Transport::Polling && !quiet {
                    if t == Transport::Sse {
                        self.on_conn(c, Input::Activity { conn: c, bytes: 5 });
                    }
                    first.push(self.hello());
                }
                if reset {
                    let oldest = self.oldest();
                    self.resets.insert(c, (oldest, false));
                    first.push(Item::Reset {
                        reason: "trimmed".into(),
                        oldest: Some(self.log[oldest].clone()),
                    });
                }
                if short {
                    // Answers at once, whatever `wait` says.
                    self.respond_poll(c, first);
                } else if t == Transport::Polling {
                    if start < self.log.len() || reset || wait == 0 {
                        self.respond_poll(c, first);
                    } else {
                        if let Some(sc) = self.conns.get_mut(&c) {
                            sc.hold_until = Some(self.now + wait);
                        }
                        self.at(self.now + wait, Ev::Check(c));
                    }
                } else {
                    if !first.is_empty() {
                        self.on_conn(
                            c,
                            Input::Items {
                                conn: c,
                                items: first,
                            },
                        );
                    }
                    if let Some(sc) = self.conns.get_mut(&c) {
                        sc.streaming = true;
                    }
                    let beat = self.beat_due(c);
                    self.at(beat, Ev::Beat(c));
                    self.push_backlog(c);
                    if mode == Mode::Stall {
                        if let Some(sc) = self.conns.get_mut(&c) {
                            sc.silent = true;
                        }
                    }
                }
            }
        }
    }

    fn respond_poll(&mut self, c: ConnId, mut items: Vec<Item<u32>>) {
        let Some(sc) = self.conns.get(&c) else { return };
        let start = sc.next;
        for p in start..self.log.len() {
            items.push(self.event_item(p));
        }
        if !self.kind.poll_short() {
            // Like the reference server, the cursor is never null ("0" for an empty topic).
            // A bare array has none.
            let last = self.log.last().cloned().unwrap_or_else(|| "0".into());
            items.push(Item::Hello {
                cursor: Some(last),
                heartbeat_ms: None,
            });
        }
        // An empty bare array is still a response (the web layer gives it as no items).
        self.on_conn(c, Input::Items { conn: c, items });
        self.on_conn(
            c,
            Input::Closed {
                conn: c,
                code: None,
                reason: String::new(),
            },
        );
        self.kill(c);
    }

    /// When stream `c`'s server next sends a heartbeat on its own (if nothing else happens).
    fn beat_due(&self, c: ConnId) -> Millis {
        let s = &self.conns[&c];
        match s.beat {
            Beat::Reference => s.last_traffic + 25_000,
            Beat::ClientQuiet => s.beat_base + 30_000,
            Beat::Sent => s.last_traffic + 30_000,
        }
    }

    fn push_backlog(&mut self, c: ConnId) {
        let Some(sc) = self.conns.get(&c) else { return };
        if !sc.alive || !sc.streaming || sc.silent {
            return;
        }
        let (start, end) = (sc.next, self.log.len());
        if start >= end {
            return;
        }
        let t = sc.transport;
        let mut p = start;
        while p < end {
            // WebSocket frames batch up to 16 events; SSE sends one per event.
            let n = if t == Transport::WebSocket {
                (end - p).min(1 + self.rng.below_incl(15) as usize)
            } else {
                1
            };
            let items: Vec<Item<u32>> = (p..p + n).map(|q| self.event_item(q)).collect();
            self.on_conn(c, Input::Items { conn: c, items });
            p += n;
        }
        if let Some(sc) = self.conns.get_mut(&c) {
            sc.next = end;
        }
    }

    fn kill(&mut self, c: ConnId) {
        if let Some(sc) = self.conns.get_mut(&c) {
            sc.alive = false;
        }
    }

    /// The server or network ends conn `c`; `notify`: the client hears about it.
    fn cut(&mut self, c: ConnId, notify: bool, code: Option<u16>) {
        let alive = self.conns.get(&c).is_some_and(|s| s.alive);
        if !alive {
            return;
        }
        if notify {
            self.on_conn(
                c,
                Input::Closed {
                    conn: c,
                    code,
                    reason: String::new(),
                },
            );
        }
        self.kill(c);
    }

    fn publish(&mut self) {
        let n = self.log.len();
        let id = self.id(n);
        self.id_pos.insert(id.clone(), n);
        self.log.push(id);
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, s)| s.alive)
            .map(|(c, _)| *c)
            .collect();
        for c in ids {
            let (poll_held, t) = {
                let s = &self.conns[&c];
                (s.hold_until.is_some(), s.transport)
            };
            if t == Transport::Polling {
                if poll_held {
                    if let Some(s) = self.conns.get_mut(&c) {
                        s.hold_until = None;
                    }
                    self.respond_poll(c, Vec::new());
                }
            } else {
                self.push_backlog(c);
            }
        }
    }

    fn exec(&mut self, cmd: Command<u32>) {
        match cmd {
            Command::Open {
                conn,
                transport,
                url,
                ..
            } => {
                if url.contains("token=") && !self.opts.use_token {
                    self.fail("token in url without use_token");
                }
                self.open(conn, transport, &url)
            }
            Command::CloseConn { conn, .. } => {
                self.engine_closed.insert(conn);
                self.kill(conn);
            }
            Command::SendPing { conn, text } => {
                let ok = self.conns.get(&conn).is_some_and(|s| s.alive && !s.silent);
                if ok && !self.offline {
                    let quiet = self.kind.ws_quiet();
                    if let Some(s) = self.conns.get_mut(&conn) {
                        s.last_traffic = self.now;
                        s.beat_base = self.now;
                    }
                    // The reference server answers `{"type":"ping"}` and `ping`; a quiet one
                    // only `ping` (any text restarts its heartbeat wait).
                    if quiet && text != "ping" {
                        return;
                    }
                    self.on_conn(
                        conn,
                        Input::Items {
                            conn,
                            items: vec![Item::Pong],
                        },
                    );
                }
            }
            Command::SendUpstream { conn, msg_id, .. } => {
                let ok = self.conns.get(&conn).is_some_and(|s| s.alive && !s.silent);
                if ok && !self.offline {
                    if let Some(s) = self.conns.get_mut(&conn) {
                        s.beat_base = self.now;
                    }
                    self.receive(&msg_id.0);
                    self.on_conn(
                        conn,
                        Input::Items {
                            conn,
                            items: vec![Item::Ack {
                                id: msg_id.0.clone(),
                            }],
                        },
                    );
                }
            }
            Command::Post { msg_id, .. } => {
                let lat = latency(&mut self.rng);
                let fail = self.offline || (self.in_faults() && self.rng.below_incl(4) == 0);
                if fail {
                    let status = if self.rng.below_incl(1) == 0 {
                        None
                    } else {
                        Some(503)
                    };
                    self.to_engine(
                        lat,
                        Input::SendResult {
                            msg_id,
                            result: Err(HttpFailure {
                                status,
                                retry_after_ms: Some(1_000),
                                error_code: None,
                            }),
                        },
                    );
                } else {
                    self.receive(&msg_id.0);
                    self.to_engine(
                        lat,
                        Input::SendResult {
                            msg_id,
                            result: Ok(()),
                        },
                    );
                }
            }
            Command::RequestToken => {
                self.token_pending = true;
                let lat = latency(&mut self.rng);
                self.to_engine(lat, Input::Token(Ok("tok".into())));
            }
            Command::Remember { .. } | Command::Forget { .. } => {}
        }
    }

    fn receive(&mut self, id: &str) {
        if self.received_set.insert(id.to_string()) {
            self.received.push(id.to_string());
        }
    }

    /// Checks one app event as it is emitted.
    ///
    /// What is owed. Once the client holds a cursor (`owed_from`), every event after it,
    /// except what a reset or a 410 answered by a gap said is gone. Before that, only what
    /// came to it (`carried`): a server that names no cursor (no hello, a bare array) gives
    /// the client nothing to resume from, so events published while it holds none and no
    /// conn of its brought are not owed. A live-only server (streams ignore `since`) owes
    /// exactly what it sent to a session: an event published while no stream of the client
    /// was open and delivering, and that no poll the client delivered from returned, it
    /// could not send, and no gap event is required for it (it sent no reset). As checks:
    /// such a stream's first event may skip ahead, and only to its own start (`fresh`);
    /// every event that reached the engine on a conn that delivered is delivered
    /// (`final_checks`); order and once hold as for every kind.
    fn check_event(&mut self, ev: &AppEvent<u32>, source: Option<ConnId>) {
        match ev {
            AppEvent::Message { id, data, .. } => {
                let p = *data as usize;
                if id.as_deref() != Some(self.log[p].as_str()) {
                    self.fail("message id does not match its payload");
                }
                let src = source.unwrap_or_else(|| self.fail("a message without a conn input"));
                if let Some(last) = self.last_source {
                    if last != src
                        && !self.engine_closed.contains(&last)
                        && !self.peer_closed.contains(&last)
                    {
                        self.fail(&format!(
                            "two conns delivering: {last:?} still open while {src:?} delivers"
                        ));
                    }
                }
                self.last_source = Some(src);
                if let Some(&q) = self.delivered.last() {
                    if p <= q {
                        self.fail(&format!("repeat or reorder: {p} after {q}"));
                    }
                }
                // The next event due: after the last one delivered; before the first, after
                // the cursor the client held (adopted from a hello, a poll's cursor or a
                // cross-check's baseline: a resume point, not a filter, so an older event
                // still on its way may come first, it is new to the app); with no cursor at
                // all, wherever the server starts.
                let next = match (self.delivered.last(), self.resume_from) {
                    (Some(q), _) => q + 1,
                    (None, Some(r)) => r.min(p),
                    (None, None) => p,
                };
                if p < next {
                    self.fail(&format!(
                        "delivered {p}, which the cursor the client held already covers (next due {next})"
                    ));
                }
                if p != next {
                    // Skipped p - next events. Allowed only
                    // - behind a gap: those the model had trimmed when it sent the reset the
                    //   gap answered (`gap_pending`); after a 410 the client holds no cursor
                    //   and asks for all the server keeps, which starts where it starts;
                    // - at the first event of a live-only stream (`fresh`): it sends only what
                    //   is published after it opened, whatever the cursor, so the skip lands
                    //   exactly at its start, and what it skips was published before it
                    //   opened and never came on it. (Whether an earlier conn brought some of
                    //   it to the engine is `carried`'s check, at the end.)
                    // - at the first event delivered, over what was published before the
                    //   client first held a cursor (`owed_from`): a server that names none
                    //   (no hello, a bare array) gives the client nothing to resume from
                    //   until it delivers an event or a cross-check learns a baseline.
                    let fresh = self.fresh.get(&src) == Some(&p);
                    let unowed =
                        self.delivered.is_empty() && self.owed_from.is_some_and(|o| p <= o);
                    // After a 410 the client holds no cursor and asks without one: the
                    // server answers with all it keeps, from where it starts now.
                    let restart = self.resume_from.is_none()
                        && self.sinceless.get(&src).is_some_and(|s| p <= *s);
                    let waived =
                        WAIVE_ADOPTED_CURSOR_DROPS && self.adopted.is_some_and(|a| p <= a + 1);
                    match self.gap_pending {
                        _ if fresh => self.skipped += p - next,
                        None if unowed => {}
                        Some(o) if p <= o || restart => self.gap_skipped.push((next, p)),
                        _ if waived => {
                            self.waived[0] = true;
                            self.gap_skipped.push((next, p))
                        }
                        None => self.fail(&format!(
                            "lost events: {p} delivered where {next} was due, without a gap"
                        )),
                        Some(o) => self.fail(&format!(
                            "lost events: {p} delivered where {next} was due, but the reset kept everything from {o}"
                        )),
                    }
                }
                self.resume_from = Some(p + 1);
                self.gap_pending = None;
                self.delivered.push(p);
                *self.delivered_by.entry(src).or_insert(0) += 1;
            }
            AppEvent::Gap { oldest, .. } => {
                // Matched to the reset the model sent on the conn it came from, and only
                // where that reset really lost events the client had not been given.
                let Some((o, gone)) = source.and_then(|c| self.resets.get(&c).copied()) else {
                    self.fail(&format!(
                        "a gap on {source:?}, which the model sent no reset (retention {})",
                        self.retain
                    ));
                };
                // A 410 names no oldest id.
                let said = (!gone).then(|| self.log[o].as_str());
                if oldest.as_deref() != said {
                    self.fail(&format!(
                        "a gap with oldest {oldest:?}, but the reset said {said:?}"
                    ));
                }
                let next = self
                    .delivered
                    .last()
                    .map(|q| q + 1)
                    .or(self.resume_from)
                    .unwrap_or(0);
                if o <= next {
                    self.fail(&format!(
                        "a gap although nothing was lost: next due {next}, the reset kept everything from {o}"
                    ));
                }
                self.gaps += 1;
                self.gap_pending = Some(o);
            }
            AppEvent::Acked { msg_id } => {
                if self.acked.contains(&msg_id.0) {
                    self.fail("acked twice");
                }
                self.acked.push(msg_id.0.clone());
            }
            AppEvent::SendFailed { .. } => {
                self.fail("a message failed although the client stays open")
            }
            AppEvent::Error(e) => {
                if matches!(e.code, ErrorCode::SilentAfterOpen | ErrorCode::SseBuffered) {
                    self.blocked += 1;
                }
            }
            AppEvent::StateChanged | AppEvent::CursorMoved => {}
        }
    }

    fn step(&mut self, input: Input<u32>) {
        self.steps += 1;
        let source = match &input {
            Input::Items { conn, items } => {
                if !self.engine_closed.contains(conn) {
                    let got = items.iter().filter_map(|i| match i {
                        Item::Event { data, .. } => Some(*data as usize),
                        _ => None,
                    });
                    self.carried.entry(*conn).or_default().extend(got);
                    // A stream of the transport the client is connected on is its session
                    // (a probe is of another rung, a check polls, and the session before it
                    // was closed first).
                    let snap = self.e.snapshot();
                    let t = self.conns.get(conn).map(|s| s.transport);
                    if snap.status == Status::Connected
                        && t.is_some_and(|t| t != Transport::Polling)
                        && snap.transport == t
                    {
                        self.session_streams.insert(*conn);
                    }
                }
                Some(*conn)
            }
            // A 410 on a poll is a reset too.
            Input::HttpStatus { conn, .. } => Some(*conn),
            Input::Closed { conn, .. } => {
                self.peer_closed.insert(*conn);
                None
            }
            _ => None,
        };
        let is_online = matches!(input, Input::Online);
        let is_timeout = matches!(input, Input::Timeout);
        // A rate limit's wait (the engine's reading of it): the next retry may wait that
        // long, plus a tenth.
        let floor = match &input {
            Input::HttpStatus {
                status: 429 | 503,
                retry_after_ms,
                ..
            } => Some(retry_after_ms.unwrap_or(5_000)),
            Input::Closed {
                code: Some(4429 | 1013),
                reason,
                ..
            } => Some(reason.trim().parse::<u64>().map_or(5_000, |s| s * 1_000)),
            _ => None,
        };
        if let Input::Token(_) = &input {
            self.token_pending = false;
        }
        let (before_retry, before_status) =
            (self.e.snapshot().next_retry_at, self.e.snapshot().status);
        self.resume_from = match self.e.snapshot().cursor.as_deref() {
            None => None,
            Some("0") => Some(0),
            Some(c) => match self.id_pos.get(c) {
                Some(p) => Some(p + 1),
                None => self.fail(&format!(
                    "the client holds cursor {c}, which the model never gave out"
                )),
            },
        };
        let held_none = self.resume_from.is_none();
        let delivered_before = self.delivered.len();

        self.note("->", &input);
        self.e.handle(input, self.now);
        let mut opened = false;
        while let Some(out) = self.e.poll_output() {
            self.note("<-", &out);
            match out {
                Output::Command(c) => {
                    if matches!(c, Command::Open { .. }) {
                        opened = true;
                    }
                    self.exec(c)
                }
                Output::Event(ev) => self.check_event(&ev, source),
            }
        }
        // No attempt before the announced retry time (unless the network just came back).
        if let Some(t) = before_retry {
            if opened && self.now < t && !is_online && before_status != Status::Connected {
                self.fail(&format!(
                    "an attempt at {} before the retry time {t}",
                    self.now
                ));
            }
            // Nor after it: the timer that reaches it starts the attempt, unless the
            // network is down or a token is on its way.
            if is_timeout
                && t <= self.now
                && !opened
                && !self.offline
                && !self.token_pending
                && self.e.snapshot().status != Status::Connected
            {
                self.fail(&format!(
                    "no attempt at the retry time {t} (timer at {}): {:?}",
                    self.now,
                    self.e.snapshot()
                ));
            }
        }
        let s = self.e.snapshot();
        let (next_retry_at, attempt, has_cursor, connected) = (
            s.next_retry_at,
            s.attempt,
            s.cursor.is_some(),
            s.status == Status::Connected,
        );
        if let Some(t) = next_retry_at {
            if Some(t) != self.last_retry {
                // The wait drawn with `n` failures before it: the first after a working
                // session is spread over [0, spread]; later ones are in [cap/2, cap]; a
                // rate limit's wait is a floor, plus up to a tenth of it.
                let n = attempt.saturating_sub(1);
                let b = &self.opts.backoff;
                let (lb, ub) = if n == 0 {
                    (0, backoff_cap(b, 0).max(b.spread_ms))
                } else {
                    (backoff_cap(b, n) / 2, backoff_cap(b, n))
                };
                let ub = floor.map_or(ub, |f| ub.max(f) + f / 10);
                if t < self.now + lb {
                    self.fail(&format!("retry after {} ms is faster than the backoff allows ({lb} ms at attempt {})", t - self.now, attempt));
                }
                if t > self.now + ub {
                    self.fail(&format!("retry after {} ms is slower than the backoff allows ({ub} ms at attempt {})", t - self.now, attempt));
                }
            }
        }
        self.last_retry = next_retry_at;
        // A cursor that appeared without a delivery was adopted.
        if held_none && has_cursor && self.delivered.len() == delivered_before {
            let c = self.e.snapshot().cursor.clone().expect("has a cursor");
            if let Some(&p) = self.id_pos.get(&c) {
                self.adopted = Some(self.adopted.map_or(p, |a| a.max(p)));
            }
        }
        if !has_cursor {
            self.owed_from = None;
        } else if self.owed_from.is_none() {
            self.owed_from = Some(self.log.len());
        }
        // Events are expected from the first cursor the client holds (a hello or poll
        // cursor, adopted): without one, "only new events" is all a server promises. A
        // server that names no cursor gets events once the client is connected (what a
        // cursorless conn misses is the `fresh` rule's).
        let quiet = self.kind != Kind::Reference;
        if (has_cursor || (quiet && connected)) && !self.published_started {
            self.published_started = true;
            let t = self.now + 100;
            self.at(t, Ev::Publish);
        }
    }

    fn run(&mut self) {
        self.step(Input::Start);
        let mut sends_left = 12;
        for _ in 0..2_000_000 {
            let next_q = self.queue.peek().map(|Reverse((t, _))| *t);
            // Background throttling: a hidden page's timers run on a one-minute grid.
            let next_t = self.e.poll_timeout().map(|t| {
                if self.hidden {
                    t.div_ceil(60_000) * 60_000
                } else {
                    t
                }
            });
            let (t, timer) = match (next_q, next_t) {
                (None, None) => break,
                (Some(q), None) => (q, false),
                (None, Some(tt)) => (tt, true),
                // Equal times go either way: timers and I/O reorder.
                (Some(q), Some(tt)) => {
                    if tt < q || (tt == q && self.rng.below_incl(1) == 0) {
                        (tt, true)
                    } else {
                        (q, false)
                    }
                }
            };
            if t > self.end {
                // A rung broken forever is a fault that never ends: probes move up to it now
                // and then (an SSE probe on its first bytes, a quiet stream until a check
                // proves it blocked) and its session dies, so the schedule may reach its end
                // in the recovery from that. Such a schedule runs on, at most two minutes,
                // until the client is connected and caught up; every other one (and this one
                // then) must be connected at its end.
                if self.broken_forever.is_some() && !self.extended && !self.settled() {
                    self.extended = true;
                    self.end = self.end.max(self.now) + 120_000;
                } else {
                    break;
                }
            }
            if self.extended && self.settled() {
                break;
            }
            self.now = self.now.max(t);
            if timer {
                // Timers sometimes fire a little late, as browsers do.
                self.now += self.rng.below_incl(3) * self.rng.below_incl(40);

                self.step(Input::Timeout);
                if self.e.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.fail("a deadline at or before now survived a Timeout");
                }
                continue;
            }
            let Reverse((_, seq)) = self.queue.pop().expect("peeked");
            let ev = self.evs.remove(&seq).expect("event stored");
            match ev {
                Ev::In(i) => {
                    if self.offline && !matches!(i, Input::Token(_) | Input::SendResult { .. }) {
                        continue; // the network is down: nothing arrives
                    }
                    self.step(i)
                }
                Ev::Publish => {
                    if self.now < self.publish_until {
                        self.publish();
                        let d = 50 + self.rng.below_incl(3_000);
                        self.at(self.now + d, Ev::Publish);
                        if sends_left > 0 && self.rng.below_incl(3) == 0 {
                            sends_left -= 1;
                            if let Ok(id) = self.e.send(0, self.now) {
                                self.sent.push(id.0);
                            }
                            self.step(Input::Remembered(None)); // drains the send's outputs
                        }
                    }
                }
                Ev::Faults => {
                    if self.in_faults() {
                        self.reroll_faults();
                        let d = 10_000 + self.rng.below_incl(40_000);
                        self.at(self.now + d, Ev::Faults);
                    }
                }
                Ev::Cut => {
                    if self.in_faults() {
                        let alive: Vec<ConnId> = self
                            .conns
                            .iter()
                            .filter(|(_, s)| s.alive && s.opened)
                            .map(|(c, _)| *c)
                            .collect();
                        if !alive.is_empty() {
                            let c = alive[self.rng.below_incl(alive.len() as u64 - 1) as usize];
                            match self.rng.below_incl(3) {
                                0 => self.cut(c, false, None), // half-open: silence
                                1 => self.cut(c, true, Some(1001)),
                                _ => self.cut(c, true, None),
                            }
                        }
                        let d = 2_000 + self.rng.below_incl(30_000);
                        self.at(self.now + d, Ev::Cut);
                    }
                }
                Ev::Offline => {
                    if self.in_faults() && !self.offline {
                        self.offline = true;
                        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                        for c in ids {
                            self.kill(c);
                        }
                        self.step(Input::Offline);
                        let d = 1_000 + self.rng.below_incl(60_000);
                        self.at(self.now + d, Ev::Online);
                    }
                }
                Ev::Online => {
                    self.offline = false;
                    self.step(Input::Online);
                    if self.in_faults() {
                        let d = 20_000 + self.rng.below_incl(120_000);
                        self.at(self.now + d, Ev::Offline);
                    }
                }
                Ev::Hide => {
                    if self.in_faults() {
                        self.hidden = true;
                        self.step(Input::Hidden);
                        let d = 10_000 + self.rng.below_incl(150_000);
                        self.at(self.now + d, Ev::Show);
                    }
                }
                Ev::Show => {
                    self.hidden = false;
                    self.step(Input::Visible);
                    if self.in_faults() {
                        let d = 20_000 + self.rng.below_incl(120_000);
                        self.at(self.now + d, Ev::Hide);
                    }
                }
                Ev::Sleep => {
                    if self.in_faults() && !self.offline {
                        // Everything dies silently while the machine sleeps; no timer fires.
                        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                        for c in ids {
                            self.kill(c);
                        }
                        let d = 60_000 + self.rng.below_incl(300_000);
                        self.now += d;
                        // Pending I/O from before the sleep is gone.
                        let stale: Vec<u64> = self
                            .evs
                            .iter()
                            .filter(|(_, e)| {
                                matches!(
                                    e,
                                    Ev::In(Input::Items { .. })
                                        | Ev::In(Input::Opened { .. })
                                        | Ev::In(Input::Activity { .. })
                                )
                            })
                            .map(|(k, _)| *k)
                            .collect();
                        for k in stale {
                            self.evs.remove(&k);
                        }
                        self.queue
                            .retain(|Reverse((_, s))| self.evs.contains_key(s));
                        self.faults_until += d;
                        self.publish_until += d;
                        self.end += d;
                        self.step(Input::Timeout);
                    }
                }
                Ev::Beat(c) => {
                    let Some(s) = self.conns.get(&c) else {
                        continue;
                    };
                    if !s.alive || s.silent || self.offline {
                        continue;
                    }
                    if self.now >= self.beat_due(c) {
                        let i = if s.transport == Transport::Sse {
                            Input::Activity { conn: c, bytes: 13 }
                        } else {
                            Input::Items {
                                conn: c,
                                items: vec![Item::Heartbeat],
                            }
                        };
                        self.on_conn(c, i);
                        if let Some(s) = self.conns.get_mut(&c) {
                            s.beat_base = self.now;
                        }
                    }
                    let t = self.beat_due(c);
                    self.at(t.max(self.now + 1), Ev::Beat(c));
                }
                Ev::Check(c) => {
                    let Some(s) = self.conns.get(&c) else {
                        continue;
                    };
                    if !s.alive {
                        continue;
                    }
                    if let Some(h) = s.hold_until {
                        if self.now >= h {
                            if let Some(s) = self.conns.get_mut(&c) {
                                s.hold_until = None;
                            }
                            self.respond_poll(c, Vec::new());
                        }
                    } else if let Some(cut) = s.idle_cut {
                        let idle = self.now.saturating_sub(s.last_traffic);
                        if idle >= cut {
                            self.cut(c, true, Some(1006));
                        } else {
                            let t = s.last_traffic + cut;
                            self.at(t, Ev::Check(c));
                        }
                    }
                }
            }
        }
        self.final_checks();
    }

    /// Connected, and everything published delivered (a live-only server: connected; what
    /// it owes is `carried`'s check).
    fn settled(&self) -> bool {
        self.e.snapshot().status == Status::Connected && self.caught_up()
    }

    /// Everything owed delivered: the last event published, unless it was published
    /// before the client held a cursor (`owed_from`), or the server is live-only (what it
    /// owes is `carried`'s check).
    fn caught_up(&self) -> bool {
        let Some(last) = self.log.len().checked_sub(1) else {
            return true;
        };
        self.kind.live_only()
            || self.owed_from.is_none_or(|o| last < o)
            || self.delivered.last() == Some(&last)
    }

    fn outcome(&self) -> Outcome {
        let mut o = Outcome {
            steps: self.steps,
            ..Outcome::default()
        };
        o.kinds[self.kind.index()] = Tally {
            schedules: 1,
            delivered: self.delivered.len(),
            gaps: self.gaps,
            skipped: self.skipped,
            blocked: self.blocked,
            waived: self.waived.map(usize::from),
            extended: self.extended as usize,
        };
        o
    }

    fn final_checks(&mut self) {
        let s = self.e.snapshot().clone();
        let last_error = s.last_error.as_ref().map(|e| (e.code, e.transport));
        let quiet_ws_silence = WAIVE_QUIET_WS_SILENCE
            && self.kind.ws_quiet()
            && last_error == Some((ErrorCode::HeartbeatTimeout, Some(Transport::WebSocket)));
        let last_rung = self.opts.transports.last().copied();
        let last_rung_step_down = WAIVE_STEP_DOWN_FROM_LAST_RUNG
            && self.kind.live_only()
            && matches!(
                last_error,
                Some((ErrorCode::SilentAfterOpen | ErrorCode::SseBuffered, t)) if t == last_rung
            );
        if s.status != Status::Connected && (quiet_ws_silence || last_rung_step_down) {
            self.waived[1] |= quiet_ws_silence;
            self.waived[2] |= last_rung_step_down;
        } else if s.status != Status::Connected {
            self.fail(&format!(
                "not connected after the faults stopped{}: {:?}",
                if self.extended {
                    " (nor two minutes later)"
                } else {
                    ""
                },
                s
            ));
        }
        if !self.caught_up() && !self.waived[1] && !self.waived[2] {
            self.fail(&format!(
                "did not catch up: delivered up to {:?} of {}",
                self.delivered.last(),
                self.log.len() - 1
            ));
        }
        // Whatever reached the engine on a conn it was still listening to is delivered, when
        // that conn was a session (it delivered something, or it is a stream that brought
        // events while the client was connected on its transport) or is a stream still open
        // at the end; events a gap skipped excepted (a late replay cannot come in order).
        // For a live-only server this is the no-loss rule: it loses exactly what it never
        // sent to a session of the client (published while none of its streams was open
        // and the session, and returned by no poll the client delivered from); a
        // cross-check poll's events are evidence, never delivered, so they do not count.
        // For every other kind it follows from the stricter rules above, and is checked
        // all the same.
        let carried = std::mem::take(&mut self.carried);
        for (c, ps) in &carried {
            let delivering = self.delivered_by.get(c).is_some_and(|n| *n > 0);
            let open_stream = self
                .conns
                .get(c)
                .is_some_and(|s| s.alive && s.transport != Transport::Polling)
                && !self.engine_closed.contains(c)
                && !self.peer_closed.contains(c);
            let session = self.session_streams.contains(c);
            if !(delivering || open_stream || session) {
                continue;
            }
            let mut lost = None;
            for &p in ps {
                if self.delivered.binary_search(&p).is_ok()
                    || self.gap_skipped.iter().any(|&(a, b)| a <= p && p < b)
                {
                    continue;
                }
                if WAIVE_ADOPTED_CURSOR_DROPS && self.adopted.is_some_and(|a| p <= a) {
                    self.waived[0] = true;
                    continue;
                }
                lost = Some(p);
                break;
            }
            if let Some(p) = lost {
                self.fail(&format!(
                    "lost event {p}: it reached the engine on {c:?}, which {}, and was never delivered",
                    if delivering {
                        "delivered other events"
                    } else if session {
                        "was the session stream"
                    } else {
                        "is still open"
                    }
                ));
            }
        }
        if s.outbox_len != 0 || self.acked.len() != self.sent.len() {
            self.fail(&format!(
                "outbox not drained: {} sent, {} acked",
                self.sent.len(),
                self.acked.len()
            ));
        }
        if self.received != self.sent {
            self.fail(&format!(
                "the server received upstream messages out of order: sent {:?}, received {:?}",
                self.sent, self.received
            ));
        }
    }
}

/// What the schedules of one kind did.
#[derive(Default, Debug, Clone, Copy, PartialEq)]
struct Tally {
    schedules: usize,
    delivered: usize,
    gaps: usize,
    /// Events skipped under the `fresh` rule.
    skipped: usize,
    /// Streams given up as silent or buffered (by a cross-check, or silent where the
    /// rung's server spoke at once before).
    blocked: usize,
    /// Schedules that needed each waiver (adopted-cursor drops, quiet WebSocket silence,
    /// step-down from the last rung).
    waived: [usize; 3],
    /// Ran past their end to be connected and caught up (a rung broken forever).
    extended: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.schedules += o.schedules;
        self.delivered += o.delivered;
        self.gaps += o.gaps;
        self.skipped += o.skipped;
        self.blocked += o.blocked;
        for (a, b) in self.waived.iter_mut().zip(o.waived) {
            *a += b;
        }
        self.extended += o.extended;
    }
}

/// What one schedule (or many) did, by server kind (in the order of `KINDS`).
#[derive(Default, Debug, Clone, Copy, PartialEq)]
struct Outcome {
    steps: u64,
    kinds: [Tally; KINDS.len()],
}

impl Outcome {
    fn add(&mut self, o: Outcome) {
        self.steps += o.steps;
        for (a, b) in self.kinds.iter_mut().zip(&o.kinds) {
            a.add(b);
        }
    }

    fn total(&self) -> Tally {
        let mut t = Tally::default();
        for k in &self.kinds {
            t.add(k);
        }
        t
    }
}

/// Runs one schedule.
fn run_one(seed: u64, trace: bool) -> Outcome {
    let mut s = Sim::new(seed, trace);
    s.run();
    s.outcome()
}

/// Runs one schedule; returns the digest of its whole trace (every engine input and
/// output, in order, with its time) and of what it delivered.
fn trace_digest(seed: u64) -> u64 {
    let mut s = Sim::new(seed, false);
    s.digest = Some(0xCBF2_9CE4_8422_2325);
    s.run();
    let summary = s.outcome();
    s.note("=", &summary);
    s.digest.expect("set above")
}

/// Seeds the replay test runs in two processes (they include 1007, 1010, 1011 and 1018,
/// which replayed differently while the model kept its state in hash maps).
const REPLAY_SEEDS: std::ops::Range<u64> = 1_000..1_300;
/// Set in the child process of the replay test: it prints its digests instead of comparing.
const REPLAY_CHILD: &str = "HOLDFAST_SIM_REPLAY_CHILD";

/// A schedule replays: the same seed gives the same trace in another process (hash maps
/// iterate in a per-process random order, so an order taken from one would show here).
#[test]
fn simulation_replays_the_same_trace_in_another_process() {
    let here: Vec<(u64, u64)> = REPLAY_SEEDS.map(|s| (s, trace_digest(s))).collect();
    if std::env::var_os(REPLAY_CHILD).is_some() {
        for (seed, d) in &here {
            println!("sim-digest {seed} {d:016x}");
        }
        return;
    }
    // The test's own name as the harness knows it (without the crate name).
    let full = concat!(
        module_path!(),
        "::simulation_replays_the_same_trace_in_another_process"
    );
    let name = full.split_once("::").map_or(full, |(_, rest)| rest);
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(REPLAY_CHILD, "1")
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the replay process failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let there: Vec<(u64, u64)> = stdout
        .lines()
        .filter_map(|l| {
            // The harness may print its own words before the first line.
            let at = l.find("sim-digest ")?;
            let mut w = l[at + "sim-digest ".len()..].split(' ');
            let seed = w.next()?.parse().ok()?;
            let d = u64::from_str_radix(w.next()?, 16).ok()?;
            Some((seed, d))
        })
        .collect();
    assert_eq!(
        there.len(),
        here.len(),
        "the replay process printed {} digests, not {}:\n{stdout}",
        there.len(),
        here.len()
    );
    let differ: Vec<u64> = here
        .iter()
        .zip(&there)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0)
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} seeds gave another trace in another process: {differ:?}",
        differ.len(),
        here.len()
    );
    println!(
        "replay: {} seeds, the same trace in two processes",
        here.len()
    );
}

#[test]
fn simulation_of_random_fault_schedules_keeps_every_invariant() {
    if let Ok(seed) = std::env::var("HOLDFAST_SIM_SEED") {
        let seed: u64 = seed.parse().expect("HOLDFAST_SIM_SEED is a number");
        let r = run_one(seed, true);
        println!("seed {seed}: {r:?}");
        return;
    }
    let n: u64 = std::env::var("HOLDFAST_SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000);
    // HOLDFAST_SIM_OFFSET explores other seeds (the default run is always seeds 0..n).
    let offset: u64 = std::env::var("HOLDFAST_SIM_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // HOLDFAST_SIM_ALL=1 runs every schedule and lists each failing seed (with its kind)
    // instead of stopping at the first.
    let keep_going = std::env::var_os("HOLDFAST_SIM_ALL").is_some();
    let threads = 2u64;
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            std::thread::spawn(move || {
                let mut tot = Outcome::default();
                let mut failed: Vec<String> = Vec::new();
                let mut seed = offset + k;
                while seed < offset + n {
                    if keep_going {
                        match std::panic::catch_unwind(|| run_one(seed, false)) {
                            Ok(o) => tot.add(o),
                            Err(e) => {
                                let why = e
                                    .downcast_ref::<String>()
                                    .map_or("?", |s| s.lines().next().unwrap_or("?"));
                                let kind = Sim::new(seed, false).kind.name();
                                failed.push(format!("[{kind}] {why}"));
                            }
                        }
                    } else {
                        tot.add(run_one(seed, false));
                    }
                    seed += threads;
                }
                (tot, failed)
            })
        })
        .collect();
    let mut tot = Outcome::default();
    let mut failed = Vec::new();
    for h in handles {
        let (t, f) = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        tot.add(t);
        failed.extend(f);
    }
    failed.sort();
    for f in &failed {
        println!("FAILED {f}");
    }
    assert!(failed.is_empty(), "{} schedules failed", failed.len());
    let all = tot.total();
    println!(
        "simulation: {n} schedules, {} engine steps, {} events delivered, {} gaps, {} streams given up as silent or buffered; {} schedules with a rung broken forever ran up to two minutes past their end to be connected and caught up",
        tot.steps, all.delivered, all.gaps, all.blocked, all.extended
    );
    for (k, t) in KINDS.iter().zip(&tot.kinds) {
        println!(
            "  {:<24} {:>5} schedules, {:>7} delivered, {:>4} gaps, {:>5} silent/buffered, {:>4} skipped by a live-only start, {:>2} extended; waived (engine bugs): {} adopted-cursor drops, {} quiet-ws silence, {} last-rung step-down",
            k.name(),
            t.schedules,
            t.delivered,
            t.gaps,
            t.blocked,
            t.skipped,
            t.extended,
            t.waived[0],
            t.waived[1],
            t.waived[2],
        );
    }
    assert!(
        all.delivered > n as usize * 10,
        "the schedules deliver events"
    );
    if n >= 1_000 {
        for (k, t) in KINDS.iter().zip(&tot.kinds) {
            assert!(
                t.schedules >= n as usize / 10,
                "only {} schedules of kind {}",
                t.schedules,
                k.name()
            );
        }
    }
}
