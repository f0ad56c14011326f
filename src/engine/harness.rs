//! Test harness: drives an [`Engine`] with virtual time and records every output, so
//! behaviour tests read as a script ("the server refuses the upgrade, then…").

use serde_json::{json, Value};

use super::*;

pub struct H {
    pub e: Engine<Value>,
    pub now: Millis,
    pub cmds: Vec<Command<Value>>,
    pub events: Vec<AppEvent<Value>>,
    /// Conns opened and not yet closed by the engine: (conn, transport, url).
    pub open: Vec<(ConnId, Transport, String)>,
    /// Every Open, in order: (time, conn, transport, url, last_event_id).
    pub opens: Vec<(Millis, ConnId, Transport, String, Option<String>)>,
    pub pings: Vec<(Millis, ConnId, String)>,
    pub upstream: Vec<(ConnId, String)>,
    pub posts: Vec<String>,
    pub timeouts: u32,
    /// The test answers the first baseline poll itself (see `started`).
    pub answer_baseline: bool,
}

pub fn opts() -> Options {
    Options::new("/realtime")
}

impl H {
    pub fn new(o: Options) -> H {
        H::with_page(o, PageContext::new("https://app.example.com/dash/"))
    }

    pub fn with_page(o: Options, page: PageContext) -> H {
        H::seeded(o, page, 7)
    }

    pub fn seeded(o: Options, page: PageContext, seed: u64) -> H {
        let e = Engine::new(o, page, seed, 1_000).expect("valid options");
        H {
            e,
            now: 1_000,
            cmds: Vec::new(),
            events: Vec::new(),
            open: Vec::new(),
            opens: Vec::new(),
            pings: Vec::new(),
            upstream: Vec::new(),
            posts: Vec::new(),
            timeouts: 0,
            answer_baseline: false,
        }
    }

    /// Starts the client. A client with no cursor asks where the server is before its
    /// first stream (a baseline poll); the harness refuses that poll unless
    /// `answer_baseline` is set, so most tests see the ladder start at once.
    pub fn started(o: Options) -> H {
        let mut h = H::new(o);
        h.input(Input::Start);
        h
    }

    /// Starts the client and answers its first baseline poll with `items`.
    pub fn started_with_baseline(o: Options, items: Vec<Item<Value>>) -> H {
        let mut h = H::new(o);
        h.answer_baseline = true;
        h.input(Input::Start);
        let c =
            h.e.first_baseline_poll()
                .expect("a baseline poll before the first stream");
        h.opened(c);
        h.items(c, items);
        h.closed(c, None);
        h
    }

    pub fn drain(&mut self) {
        while let Some(out) = self.e.poll_output() {
            match out {
                Output::Command(c) => {
                    match &c {
                        Command::Open {
                            conn,
                            transport,
                            url,
                            last_event_id,
                            ..
                        } => {
                            self.open.push((*conn, *transport, url.clone()));
                            self.opens.push((
                                self.now,
                                *conn,
                                *transport,
                                url.clone(),
                                last_event_id.clone(),
                            ));
                        }
                        Command::CloseConn { conn, .. } => self.open.retain(|(c, _, _)| c != conn),
                        Command::SendPing { conn, text } => {
                            self.pings.push((self.now, *conn, text.clone()))
                        }
                        Command::SendUpstream { conn, msg_id, .. } => {
                            self.upstream.push((*conn, msg_id.0.clone()))
                        }
                        Command::Post { msg_id, .. } => self.posts.push(msg_id.0.clone()),
                        _ => {}
                    }
                    self.cmds.push(c);
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    pub fn input(&mut self, i: Input<Value>) {
        self.e.handle(i, self.now);
        self.drain();
        if !self.answer_baseline {
            if let Some(c) = self.e.first_baseline_poll() {
                self.open.retain(|(x, _, _)| *x != c);
                self.e.handle(
                    Input::HttpStatus {
                        conn: c,
                        status: 404,
                        retry_after_ms: None,
                        error_code: None,
                    },
                    self.now,
                );
                self.drain();
            }
        }
    }

    /// Moves time forward by `ms`, firing every timer the engine asks for on the way.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        for _ in 0..100_000 {
            match self.e.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.timeouts += 1;
                    self.input(Input::Timeout);
                }
                _ => break,
            }
        }
        self.now = target;
    }

    /// Moves time in 100 ms steps until a connection is open (bounded).
    pub fn advance_until_open(&mut self) {
        for _ in 0..10_000 {
            if !self.open.is_empty() {
                return;
            }
            self.advance(100);
        }
        panic!("no connection opened within 1000 s");
    }

    /// Jumps the clock without firing timers in between (the machine slept), then fires.
    pub fn sleep_then_wake(&mut self, ms: u64) {
        self.now += ms;
        self.input(Input::Timeout);
    }

    pub fn last_conn(&self) -> (ConnId, Transport, String) {
        self.open.last().cloned().expect("a connection is open")
    }

    pub fn conn_of(&self, t: Transport) -> ConnId {
        self.open
            .iter()
            .rev()
            .find(|(_, tt, _)| *tt == t)
            .map(|c| c.0)
            .expect("conn of transport")
    }

    pub fn is_open(&self, c: ConnId) -> bool {
        self.open.iter().any(|(x, _, _)| *x == c)
    }

    pub fn opened(&mut self, c: ConnId) {
        self.input(Input::Opened { conn: c });
    }

    pub fn items(&mut self, c: ConnId, items: Vec<Item<Value>>) {
        self.input(Input::Items { conn: c, items });
    }

    pub fn hello(&mut self, c: ConnId, cursor: Option<&str>) {
        self.items(
            c,
            vec![Item::Hello {
                cursor: cursor.map(Into::into),
                heartbeat_ms: None,
            }],
        );
    }

    pub fn ev(id: &str) -> Item<Value> {
        Item::Event {
            id: Some(id.into()),
            kind: "t".into(),
            data: json!(id),
        }
    }

    pub fn events_on(&mut self, c: ConnId, ids: &[&str]) {
        self.items(c, ids.iter().map(|i| H::ev(i)).collect());
    }

    pub fn closed(&mut self, c: ConnId, code: Option<u16>) {
        self.open.retain(|(x, _, _)| *x != c);
        self.input(Input::Closed {
            conn: c,
            code,
            reason: String::new(),
        });
    }

    /// Opens the last conn and makes it deliver a hello (a working WebSocket or SSE).
    pub fn connect_last(&mut self) -> ConnId {
        let (c, t, _) = self.last_conn();
        self.opened(c);
        if t != Transport::Polling {
            self.hello(c, None);
        }
        c
    }

    /// Connects the last conn, lets it sit silent for `idle_ms`, then has it cut (as a
    /// proxy's idle timeout would, `code` as the browser reports it) and waits for the retry.
    pub fn cut_after_idle(&mut self, idle_ms: u64, code: Option<u16>) {
        let c = self.connect_last();
        self.advance(idle_ms);
        self.closed(c, code);
        let at = self.e.snapshot().next_retry_at.expect("a retry is planned");
        self.advance(at - self.now);
    }

    /// Answers the open cross-check poll (the one polling conn open beside a stream) with
    /// `items`, as a poll response that then finishes; returns the URL it asked.
    pub fn answer_check(&mut self, items: Vec<Item<Value>>) -> String {
        self.advance(0); // fire what is due now
        let (c, _, url) = self
            .open
            .iter()
            .rev()
            .find(|(_, t, _)| *t == Transport::Polling)
            .cloned()
            .expect("a cross-check poll is open");
        self.opened(c);
        self.items(c, items);
        self.closed(c, None);
        url
    }

    pub fn has_check_open(&self) -> bool {
        self.open.iter().any(|(_, t, _)| *t == Transport::Polling)
    }

    pub fn notes(&self) -> Vec<String> {
        self.e
            .diagnostics()
            .notes
            .iter()
            .map(|n| n.text.clone())
            .collect()
    }

    pub fn delivered(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                AppEvent::Message { id, .. } => id.clone(),
                _ => None,
            })
            .collect()
    }

    pub fn errors(&self) -> Vec<ErrorCode> {
        self.events
            .iter()
            .filter_map(|e| match e {
                AppEvent::Error(e) => Some(e.code),
                _ => None,
            })
            .collect()
    }

    pub fn error_messages(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                AppEvent::Error(e) => Some(e.message.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn gaps(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, AppEvent::Gap { .. }))
            .count()
    }

    pub fn acked(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                AppEvent::Acked { msg_id } => Some(msg_id.0.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn count_cmd(&self, f: impl Fn(&Command<Value>) -> bool) -> usize {
        self.cmds.iter().filter(|c| f(c)).count()
    }

    pub fn status(&self) -> Status {
        self.e.snapshot().status
    }
}
