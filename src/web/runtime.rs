//! The runtime: one engine and the adapters executing its commands.
//!
//! Rule (str0m's): after every input, drain the engine's outputs, then arm one timer for
//! its next deadline. App events are gathered into one JS array per input and handed to
//! the wrapper's `emit` function after the runtime is no longer borrowed, so a listener may
//! call back into the client (send, close) from inside its callback.
//!
//! Ownership: the runtime owns every adapter; adapters hold only a weak reference back.
//! Dropping the runtime (or [`Runtime::close`]) drops every socket, request, timer and
//! listener with its closures. [`live_adapters`] counts them so tests can prove it.

use super::env::PageEnv;
use super::eventsource::EsConn;
use super::http::Task;
use super::json::Decoder;
use super::poll::PollConn;
use super::sse::SseConn;
use super::timer::Timer;
use super::ws::WsConn;
use super::{js_str, now, storage, upstream, Sink};
use crate::engine::{
    AppEvent, Command, ConnId, Engine, HoldfastError, Input, MessageId, Options, Output,
    PageContext, Secret, Snapshot, Status, Transport,
};
use js_sys::{Array, Function, Object, Reflect};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;

thread_local! {
    /// Adapters alive now (sockets, requests, timers, page listeners), for teardown tests.
    static LIVE: Cell<u32> = const { Cell::new(0) };
    /// The client whose input is being handled and its state, `(0, null)` between calls.
    /// Set once control is back in JS, it means that client's call never returned: it
    /// trapped (a panic, a stack overflow) or a JS exception unwound through it, and its
    /// state is unusable; the state is kept so its adapters can still be released (see
    /// [`take_trapped`]).
    static CURRENT: Cell<(u32, *const RefCell<Inner>)> = const { Cell::new(IDLE) };
}

const IDLE: (u32, *const RefCell<Inner>) = (0, std::ptr::null());

/// Marks client `id` as handling a call with no state behind it (the trap tests).
#[cfg(debug_assertions)]
pub(crate) fn set_current_for_test(id: u32) {
    CURRENT.with(|c| c.set((id, std::ptr::null())));
}

/// After a wasm call threw: the client whose call never returned (0 if none), once. That
/// client's sockets, requests, timers and page listeners are released first, as `close()`
/// would: its state stays borrowed by the dead call, so nothing else could ever reach them.
/// If releasing them traps too, a second call still names the client.
pub(crate) fn take_trapped() -> u32 {
    let (id, inner) = CURRENT.with(|c| c.get());
    // Forget the state first: if releasing it traps, the next call still names the client.
    CURRENT.with(|c| c.set((id, std::ptr::null())));
    if !inner.is_null() {
        // SAFETY: `run` stored this pointer from an `Rc` it was using, and `Runtime::drop`
        // clears it before that `Rc` can be the last one to go, so the `RefCell` is alive.
        // The `RefMut` that holds its borrow belonged to the call that trapped: that call's
        // frames are gone (a trap unwinds the whole wasm stack to JS, and JS is calling this
        // from a fresh one), so no reference into the state exists while we use it.
        unsafe { (*(*inner).as_ptr()).teardown() };
    }
    CURRENT.with(|c| c.set(IDLE));
    id
}

/// How many adapters (sockets, requests, armed timers, page-listener sets) exist across all
/// clients. Zero after every client was closed.
pub fn live_adapters() -> u32 {
    LIVE.with(|l| l.get())
}

/// Counts itself in [`live_adapters`] while it exists.
struct Counted<T>(T);

impl<T> Counted<T> {
    fn new(t: T) -> Counted<T> {
        LIVE.with(|l| l.set(l.get() + 1));
        Counted(t)
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(l.get() - 1));
    }
}

// Held for their `Drop`: dropping a variant closes its socket or aborts its request.
#[allow(dead_code)]
enum Conn {
    Ws(WsConn),
    Sse(SseConn),
    Es(EsConn),
    Poll(PollConn),
}

/// Browser-side settings that are not engine decisions.
#[derive(Clone, Default)]
pub struct WebOptions {
    /// Use `EventSource` instead of fetch streaming for the SSE rung, listening to these
    /// event types besides unnamed and control events.
    pub event_source: Option<Vec<String>>,
}

struct Inner {
    engine: Engine<JsValue>,
    me: Weak<RefCell<Inner>>,
    id: u32,
    web: WebOptions,
    dec: Rc<Decoder>,
    conns: Vec<(ConnId, Counted<Conn>)>,
    posts: Vec<(MessageId, Counted<Task>)>,
    timer: Option<Counted<Timer>>,
    env: Option<Counted<PageEnv>>,
    emit: Option<Function>,
    batch: Array,
    state_changed: bool,
    cursor_moved: bool,
    /// JS strings reused from one delivered event to the next: decoding a string out of
    /// wasm memory is the largest per-event cost after the payload (BENCHMARKS.md).
    tag_message: JsValue,
    last_kind: (String, JsValue),
    /// The ids of this batch's messages, each followed by NUL, handed to `emit` as one
    /// string: decoding a string out of wasm memory costs ~1 µs a call whatever its length,
    /// which was a quarter of the time on a 1,000-event poll batch (BENCHMARKS.md).
    ids: String,
    /// Marks a message entry whose id is the next one in `ids`.
    next_id: JsValue,
    /// Inputs produced while executing a command (a socket the browser refused to
    /// create); handled after the current output queue, never re-entrantly.
    deferred: VecDeque<Input<JsValue>>,
}

/// One client's engine and adapters.
pub struct Runtime {
    inner: Rc<RefCell<Inner>>,
}

impl Runtime {
    /// Creates the engine (validating `options`) for this page. `emit` receives arrays of
    /// app events (see `src/bindings`).
    pub fn new(
        id: u32,
        options: Options,
        web: WebOptions,
        emit: Function,
    ) -> Result<Runtime, HoldfastError> {
        let (online, visible) = super::env::current();
        let page = PageContext {
            href: page_href(),
            online,
            visible,
            remembered: None,
        };
        let seed = (js_sys::Math::random() * 4294967296.0) as u64
            ^ (((js_sys::Math::random() * 4294967296.0) as u64) << 32);
        let memory = options.memory.enabled;
        let mut engine = Engine::new(options, page, seed, now())?;
        if memory {
            let remembered = storage::load(engine.memory_key());
            engine.handle(Input::Remembered(remembered), now());
        }
        let dec = Rc::new(Decoder {
            interop: engine.interop().clone(),
            max_bytes: engine.max_frame_bytes(),
        });
        let inner = Rc::new_cyclic(|me| {
            RefCell::new(Inner {
                engine,
                me: me.clone(),
                id,
                web,
                dec,
                conns: Vec::new(),
                posts: Vec::new(),
                timer: Some(Counted::new(Timer::default())),
                env: None,
                emit: Some(emit),
                batch: Array::new(),
                state_changed: false,
                cursor_moved: false,
                tag_message: JsValue::from_str("message"),
                last_kind: (String::new(), JsValue::from_str("")),
                ids: String::new(),
                next_id: JsValue::from(1),
                deferred: VecDeque::new(),
            })
        });
        Ok(Runtime { inner })
    }

    /// Starts listening to the page and connecting.
    pub fn start(&self) {
        let sink = sink(&Rc::downgrade(&self.inner));
        run(&self.inner, move |me, now| {
            if me.env.is_none() && !me.engine.is_closed() {
                me.env = Some(Counted::new(PageEnv::listen(sink)));
            }
            me.engine.handle(Input::Start, now)
        });
    }

    /// Queues an upstream message; the id is what the ack will name.
    pub fn send(&self, data: JsValue) -> Result<MessageId, HoldfastError> {
        run(&self.inner, |me, now| me.engine.send(data, now)).unwrap_or_else(|| Err(busy()))
    }

    /// The token provider's answer.
    pub fn token(&self, result: Result<String, String>) {
        run(&self.inner, |me, now| {
            me.engine.handle(Input::Token(result), now)
        });
    }

    /// Closes the client: the engine says goodbye (final state, failed sends), then every
    /// adapter is dropped and `emit` is released.
    pub fn close(&self) {
        run(&self.inner, |me, now| me.engine.handle(Input::Close, now));
        if let Ok(mut me) = self.inner.try_borrow_mut() {
            me.teardown();
        }
    }

    pub fn snapshot(&self) -> Option<JsValue> {
        self.inner
            .try_borrow()
            .ok()
            .map(|me| snapshot_js(me.engine.snapshot()))
    }

    /// Panics inside this client's call, the way an internal error would (tests of the trap
    /// path only; not in release builds).
    #[cfg(debug_assertions)]
    pub fn panic_in_call_for_test(&self) {
        run(&self.inner, |_, _| {
            panic!("deliberate test panic in a client")
        });
    }

    pub fn diagnostics(&self) -> Option<JsValue> {
        self.inner
            .try_borrow()
            .ok()
            .map(|me| diagnostics_js(&me.engine))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(mut me) = self.inner.try_borrow_mut() {
            me.teardown();
        } else if CURRENT.with(|c| c.get()).1 == Rc::as_ptr(&self.inner) {
            // Freed after a trap that nobody took: this state may be about to go away, so
            // `take_trapped` must not reach it (its adapters stay; the trap is still named).
            CURRENT.with(|c| c.set((c.get().0, std::ptr::null())));
        }
    }
}

fn busy() -> HoldfastError {
    HoldfastError::new(
        crate::engine::ErrorCode::Closed,
        "the client is unusable after an internal error",
    )
}

fn page_href() -> String {
    Reflect::get(&js_sys::global(), &"location".into())
        .ok()
        .filter(|l| !l.is_undefined())
        .and_then(|l| Reflect::get(&l, &"href".into()).ok())
        .and_then(|h| h.as_string())
        .unwrap_or_default()
}

/// Where adapters report: handles the input on the runtime if it still exists.
fn sink(weak: &Weak<RefCell<Inner>>) -> Sink {
    let w = weak.clone();
    Rc::new(move |input: Input<JsValue>| {
        if let Some(rc) = w.upgrade() {
            run(&rc, move |me, now| me.input(input, now));
        }
    })
}

/// Runs `f` on the runtime, drains the engine, re-arms the timer, then emits the batch of
/// app events with the runtime released. `None` when the runtime is busy (a re-entrant
/// call) or poisoned by a panic.
fn run<R>(rc: &Rc<RefCell<Inner>>, f: impl FnOnce(&mut Inner, u64) -> R) -> Option<R> {
    let (r, batch, ids, emit) = {
        let mut me = rc.try_borrow_mut().ok()?;
        CURRENT.with(|c| c.set((me.id, Rc::as_ptr(rc))));
        let t = now();
        let r = f(&mut me, t);
        me.drain(t);
        let (batch, ids) = me.take_batch();
        (r, batch, ids, me.emit.clone())
    };
    CURRENT.with(|c| c.set(IDLE));
    if let (Some(batch), Some(emit)) = (batch, emit) {
        let _ = emit.call2(&JsValue::NULL, &batch, &ids);
    }
    Some(r)
}

impl Inner {
    fn input(&mut self, input: Input<JsValue>, now: u64) {
        if let Input::SendResult { msg_id, .. } = &input {
            self.posts.retain(|(id, _)| id != msg_id);
        }
        self.engine.handle(input, now);
    }

    fn drain(&mut self, now: u64) {
        loop {
            while let Some(out) = self.engine.poll_output() {
                match out {
                    Output::Command(c) => self.execute(c),
                    Output::Event(e) => self.event(e),
                }
            }
            match self.deferred.pop_front() {
                Some(input) => self.input(input, now),
                None => break,
            }
        }
        let deadline = self.engine.poll_timeout();
        let w = self.me.clone();
        if let Some(timer) = &mut self.timer {
            timer.0.set(deadline, now, move || {
                if let Some(rc) = w.upgrade() {
                    run(&rc, |me, now| {
                        if let Some(t) = &mut me.timer {
                            t.0.fired();
                        }
                        me.engine.handle(Input::Timeout, now)
                    });
                }
            });
        }
    }

    fn execute(&mut self, c: Command<JsValue>) {
        match c {
            Command::Open {
                conn,
                transport,
                url,
                token,
                last_event_id,
            } => {
                let sink = sink(&self.me);
                let dec = self.dec.clone();
                let token = token.as_ref().map(Secret::expose);
                let opened = match transport {
                    Transport::WebSocket => WsConn::open(conn, &url, dec, sink).map(Conn::Ws),
                    Transport::Sse => match &self.web.event_source {
                        Some(types) => {
                            let url = with_token(&url, &self.engine.interop().token_param, token);
                            EsConn::open(conn, &url, types, dec, sink).map(Conn::Es)
                        }
                        None => Ok(Conn::Sse(SseConn::open(
                            conn,
                            &url,
                            token,
                            last_event_id.as_deref(),
                            dec,
                            sink,
                        ))),
                    },
                    Transport::Polling => {
                        Ok(Conn::Poll(PollConn::open(conn, &url, token, dec, sink)))
                    }
                };
                match opened {
                    Ok(c) => self.conns.push((conn, Counted::new(c))),
                    Err(reason) => self.deferred.push_back(Input::Closed {
                        conn,
                        code: None,
                        reason,
                    }),
                }
            }
            Command::CloseConn { conn, code } => {
                if let Some(i) = self.conns.iter().position(|(c, _)| *c == conn) {
                    let (_, c) = self.conns.swap_remove(i);
                    if let Conn::Ws(ws) = &c.0 {
                        ws.close(code);
                    }
                }
            }
            Command::SendPing { conn, text } => {
                if let Some(ws) = self.ws(conn) {
                    ws.send(&text);
                }
            }
            Command::SendUpstream { conn, msg_id, data } => {
                let i = self.engine.interop();
                let frame = Object::new();
                let _ = Reflect::set(&frame, &js_str(&i.type_field), &js_str("send"));
                let _ = Reflect::set(&frame, &js_str(&i.id_field), &msg_id.as_str().into());
                let _ = Reflect::set(&frame, &js_str(&i.data_field), &data);
                if let (Some(ws), Some(text)) = (self.ws(conn), stringify(&frame)) {
                    ws.send(&text);
                }
            }
            Command::Post {
                msg_id,
                url,
                token,
                data,
            } => self.post(msg_id, &url, token, &data),
            Command::RequestToken => {
                self.batch.push(&Array::of1(&js_str("token")));
            }
            Command::Remember { key, value } => storage::save(&key, &value),
            Command::Forget { key } => storage::forget(&key),
        }
    }

    fn ws(&self, conn: ConnId) -> Option<&WsConn> {
        self.conns.iter().find_map(|(c, k)| match &k.0 {
            Conn::Ws(ws) if *c == conn => Some(ws),
            _ => None,
        })
    }

    fn post(&mut self, msg_id: MessageId, url: &str, token: Option<Secret>, data: &JsValue) {
        let body = stringify(data).unwrap_or_else(|| String::from("null"));
        let token = token.as_ref().map(Secret::expose);
        let task = upstream::post(msg_id.clone(), url, token, &body, sink(&self.me));
        self.posts.push((msg_id, Counted::new(task)));
    }

    fn event(&mut self, e: AppEvent<JsValue>) {
        let b = &self.batch;
        match e {
            AppEvent::Message { id, kind, data } => {
                // Streams mostly repeat one type: keep its JS string while it does.
                if self.last_kind.0 != kind {
                    self.last_kind.1 = JsValue::from_str(&kind);
                    self.last_kind.0 = kind;
                }
                let id = match id {
                    // An id that holds the separator itself (never seen in practice) goes
                    // on its own.
                    Some(id) if id.contains('\0') => JsValue::from_str(&id),
                    Some(id) => {
                        self.ids.push_str(&id);
                        self.ids.push('\0');
                        self.next_id.clone()
                    }
                    None => JsValue::NULL,
                };
                b.push(&Array::of4(
                    &self.tag_message,
                    &id,
                    &self.last_kind.1,
                    &data,
                ));
            }
            AppEvent::Gap {
                reason,
                cursor,
                oldest,
            } => {
                let a = Array::of3(&js_str("gap"), &reason.into(), &opt(cursor.as_deref()));
                a.push(&opt(oldest.as_deref()));
                b.push(&a);
            }
            AppEvent::Error(err) => {
                let a = error_js(&err);
                a.unshift(&js_str("error"));
                b.push(&a);
            }
            AppEvent::Acked { msg_id } => {
                b.push(&Array::of2(&js_str("ack"), &msg_id.as_str().into()));
            }
            AppEvent::SendFailed { msg_id, error } => {
                let a = error_js(&error);
                a.unshift(&msg_id.as_str().into());
                a.unshift(&js_str("fail"));
                b.push(&a);
            }
            AppEvent::StateChanged => self.state_changed = true,
            AppEvent::CursorMoved => self.cursor_moved = true,
        }
    }

    /// The pending app events, with one `state` entry last when the snapshot changed, or
    /// a `cursor` entry (just the new id; the wrapper patches its snapshot) when only the
    /// cursor moved — that is every delivered batch, so it must stay cheap: when the cursor
    /// is the batch's last message id the entry is `["cursor"]`, meaning that id. Second:
    /// the message ids (see `ids`), or `undefined`.
    fn take_batch(&mut self) -> (Option<Array>, JsValue) {
        let cursor_moved = std::mem::take(&mut self.cursor_moved);
        // The batch's last id is the tail of `ids`, before its final separator.
        let last_id = self
            .ids
            .strip_suffix('\0')
            .and_then(|s| s.rsplit('\0').next());
        if std::mem::take(&mut self.state_changed) {
            let s = snapshot_js(self.engine.snapshot());
            self.batch.push(&Array::of2(&js_str("state"), &s));
        } else if cursor_moved {
            let cursor = self.engine.snapshot().cursor.as_deref();
            if cursor.is_some() && cursor == last_id {
                self.batch.push(&Array::of1(&js_str("cursor")));
            } else {
                self.batch
                    .push(&Array::of2(&js_str("cursor"), &opt(cursor)));
            }
        }
        let ids = if self.ids.is_empty() {
            JsValue::UNDEFINED
        } else {
            self.ids.pop(); // the last separator
            let ids = JsValue::from_str(&self.ids);
            self.ids.clear();
            ids
        };
        if self.batch.length() == 0 {
            return (None, ids);
        }
        (Some(std::mem::replace(&mut self.batch, Array::new())), ids)
    }

    /// Drops every adapter. The engine is kept for `snapshot()`/`diagnostics()`; `emit` is
    /// kept until the final batch went out (`run` clones it before calling).
    fn teardown(&mut self) {
        self.conns.clear();
        self.posts.clear();
        self.timer = None;
        self.env = None;
        self.deferred.clear();
        self.emit = None;
    }
}

fn with_token(url: &str, param: &str, token: Option<&str>) -> String {
    let mut u = String::from(url);
    if let Some(t) = token {
        u.push(if url.contains('?') { '&' } else { '?' });
        u.push_str(param);
        u.push('=');
        crate::engine::url::encode_component(t, &mut u);
    }
    u
}

fn stringify(v: &JsValue) -> Option<String> {
    js_sys::JSON::stringify(v).ok().and_then(|s| s.as_string())
}

fn opt(s: Option<&str>) -> JsValue {
    s.map(JsValue::from_str).unwrap_or(JsValue::NULL)
}

fn transport_js(t: Option<Transport>) -> JsValue {
    opt(t.map(Transport::as_str))
}

/// `[code, message, transport|null]`; the wrapper turns it into a `HoldfastError`.
pub fn error_js(e: &HoldfastError) -> Array {
    Array::of3(
        &e.code.as_str().into(),
        &e.message.as_str().into(),
        &transport_js(e.transport),
    )
}

fn set(o: &Object, k: &str, v: &JsValue) {
    let _ = Reflect::set(o, &k.into(), v);
}

fn num_opt(n: Option<u64>) -> JsValue {
    n.map(|n| JsValue::from_f64(n as f64))
        .unwrap_or(JsValue::NULL)
}

/// The public status name (`Connected` is `open` in the JS API; `Idle` is `connecting`).
pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Idle | Status::Connecting => "connecting",
        Status::Connected => "open",
        other => other.as_str(),
    }
}

pub fn snapshot_js(s: &Snapshot) -> JsValue {
    let o = Object::new();
    set(&o, "status", &status_name(s.status).into());
    set(&o, "transport", &transport_js(s.transport));
    set(&o, "cursor", &opt(s.cursor.as_deref()));
    set(&o, "attempt", &JsValue::from_f64(s.attempt as f64));
    set(&o, "nextRetryAt", &num_opt(s.next_retry_at));
    set(&o, "outboxLength", &JsValue::from_f64(s.outbox_len as f64));
    set(
        &o,
        "lastError",
        &s.last_error
            .as_ref()
            .map(|e| error_js(e).into())
            .unwrap_or(JsValue::NULL),
    );
    set(
        &o,
        "pingIntervalMs",
        &JsValue::from_f64(s.ping_interval_ms as f64),
    );
    o.into()
}

pub fn diagnostics_js(engine: &Engine<JsValue>) -> JsValue {
    let d = engine.diagnostics();
    let attempts = Array::new();
    for a in &d.attempts {
        let o = Object::new();
        set(&o, "transport", &a.transport.as_str().into());
        set(&o, "probe", &a.probe.into());
        set(&o, "url", &a.url.as_str().into());
        set(&o, "startedAt", &JsValue::from_f64(a.started_at as f64));
        set(&o, "openedAt", &num_opt(a.opened_at));
        set(&o, "firstDataAt", &num_opt(a.first_data_at));
        set(&o, "endedAt", &num_opt(a.ended_at));
        set(
            &o,
            "failure",
            &a.failure
                .as_ref()
                .map(|e| error_js(e).into())
                .unwrap_or(JsValue::NULL),
        );
        attempts.push(&o);
    }
    let notes = Array::new();
    for n in &d.notes {
        notes.push(&Array::of2(
            &JsValue::from_f64(n.at as f64),
            &n.text.as_str().into(),
        ));
    }
    Array::of2(&attempts, &notes).into()
}
