//! The `#[wasm_bindgen]` surface used by the JS wrapper (`js/src/core.ts`). It only
//! converts types: the options object (already shape-checked by the wrapper) into engine
//! [`Options`], errors into `[code, message, transport]` arrays, and app events into the
//! batches described in [`crate::web::runtime`].
//!
//! Batches handed to `emit(batch, ids)` are arrays of arrays, in order:
//! `["message", id, type, data]` (`id`: `1` for the next of `ids.split("\0")`, else
//! the id string, or null), `["gap", reason, cursor|null, oldest|null]`,
//! `["error", code, message, transport|null]`, `["ack", msgId]`,
//! `["fail", msgId, code, message, transport|null]`, `["token"]` (call the token provider
//! and answer with `token()`), and last, once, either `["state", snapshot]` when the
//! snapshot changed or `["cursor", id|null]` when only the cursor moved (`["cursor"]`: the
//! batch's last message id).

use crate::engine::{ErrorCode, HoldfastError, Options, Transport};
use crate::web::runtime::{error_js, live_adapters, take_trapped, Runtime, WebOptions};
use js_sys::{Array, Function, Reflect};
use std::cell::RefCell;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

fn throw(e: &HoldfastError) -> JsValue {
    error_js(e).into()
}

/// One client, owned by the JS wrapper.
#[wasm_bindgen]
pub struct WasmClient {
    rt: Runtime,
}

#[wasm_bindgen]
impl WasmClient {
    /// Creates the engine. Throws `[code, message, transport]` for invalid options.
    #[wasm_bindgen(constructor)]
    pub fn new(id: u32, options: JsValue, emit: Function) -> Result<WasmClient, JsValue> {
        HOOKED.with(|h| {
            if !h.replace(true) {
                install_panic_hook();
            }
        });
        let (opts, web) = read_options(&options).map_err(|e| throw(&e))?;
        let rt = Runtime::new(id, opts, web, emit).map_err(|e| throw(&e))?;
        Ok(WasmClient { rt })
    }

    /// Starts connecting (separate from `new` so the wrapper holds the client before any
    /// event is emitted).
    pub fn start(&self) {
        self.rt.start()
    }

    /// Queues `data` upstream; returns the message id the `ack`/`fail` entry will name.
    pub fn send(&self, data: JsValue) -> Result<String, JsValue> {
        self.rt.send(data).map(|id| id.0).map_err(|e| throw(&e))
    }

    /// The token provider's answer (`ok` false: `value` says why it failed).
    pub fn token(&self, ok: bool, value: String) {
        self.rt.token(if ok { Ok(value) } else { Err(value) })
    }

    /// Closes every connection, timer and listener; emits the final state.
    pub fn close(&self) {
        self.rt.close()
    }

    /// The current snapshot object (the wrapper caches the one from the last `state`).
    pub fn snapshot(&self) -> JsValue {
        self.rt.snapshot().unwrap_or(JsValue::NULL)
    }

    /// `[attempts, notes]`.
    pub fn diagnostics(&self) -> JsValue {
        self.rt.diagnostics().unwrap_or(JsValue::NULL)
    }

    /// Panics inside one of this client's calls (tests of the trap path only; not in
    /// release builds).
    #[cfg(debug_assertions)]
    #[wasm_bindgen(js_name = __panicInCallForTest)]
    pub fn panic_in_call_for_test(&self) {
        self.rt.panic_in_call_for_test()
    }
}

/// Sockets, requests, timers and listener sets alive across all clients (0 when every
/// client is closed). For tests.
#[wasm_bindgen(js_name = liveAdapters)]
pub fn live_adapters_js() -> u32 {
    live_adapters()
}

thread_local! {
    static HOOKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The last panic's text and source line, when the build keeps std's panic machinery
    /// (tests, debug and plain release builds). The package build traps at once instead and
    /// leaves this empty (xtask/src/package.rs).
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let mut msg = String::from(info.payload_as_str().unwrap_or("panic"));
        if let Some(l) = info.location() {
            msg.push_str(" at ");
            msg.push_str(l.file());
            msg.push(':');
            msg.push_str(&crate::engine::util::u64_to_string(l.line() as u64));
        }
        PANIC_MESSAGE.with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                *p = Some(msg);
            }
        });
    }));
}

/// After a wasm call threw (to the wrapper, or uncaught to the page), says whether it was a
/// client's call that never returned: `[clientId, message]`, once, or `undefined`. The
/// wrapper then reports a typed `internal` error and restarts that client from its cursor
/// (the broken instance is abandoned; its sockets, requests, timers and listeners are
/// released here). Works whatever trapped: a panic with or without std's panic machinery,
/// a stack overflow, a JS exception unwinding through the module.
#[wasm_bindgen(js_name = takeTrap)]
pub fn take_trap() -> JsValue {
    let id = take_trapped();
    let message = PANIC_MESSAGE.with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.take()));
    if id == 0 {
        return JsValue::UNDEFINED;
    }
    let message = message.unwrap_or_else(|| String::from("a wasm trap"));
    Array::of2(&JsValue::from(id), &message.into()).into()
}

/// Deliberately panics inside client `id`'s context (tests of the panic path only; not in
/// release builds).
#[cfg(debug_assertions)]
#[wasm_bindgen(js_name = __panicForTest)]
pub fn panic_for_test(id: u32) {
    crate::web::runtime::set_current_for_test(id);
    panic!("deliberate test panic");
}

fn get(o: &JsValue, k: &str) -> JsValue {
    if !o.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

fn num(o: &JsValue, k: &str) -> Option<f64> {
    get(o, k).as_f64()
}

fn ms(o: &JsValue, k: &str, into: &mut u64) {
    if let Some(n) = num(o, k) {
        *into = n as u64;
    }
}

fn string(o: &JsValue, k: &str) -> Option<String> {
    get(o, k).as_string()
}

fn invalid(option: &str) -> HoldfastError {
    let mut m = String::from("option `");
    m.push_str(option);
    m.push_str("` has the wrong type");
    HoldfastError::new(ErrorCode::InvalidOption, m)
}

/// Reads the wrapper's normalized options (see `normalizeOptions` in `js/src/core.ts`).
fn read_options(o: &JsValue) -> Result<(Options, WebOptions), HoldfastError> {
    let url = string(o, "url").ok_or_else(|| invalid("url"))?;
    let mut opts = Options::new(&url);
    if let Some(list) = get(o, "transports").dyn_ref::<Array>() {
        opts.transports.clear();
        for t in list.iter() {
            let t = t
                .as_string()
                .and_then(|s| Transport::parse(&s))
                .ok_or_else(|| invalid("transports"))?;
            opts.transports.push(t);
        }
    }
    let urls = get(o, "urls");
    opts.websocket_url = string(&urls, "websocket");
    opts.sse_url = string(&urls, "sse");
    opts.poll_url = string(&urls, "polling");
    opts.send_url = string(&urls, "send");
    if let Some(params) = get(o, "params").dyn_ref::<Array>() {
        for pair in params.iter() {
            let k = Reflect::get_u32(&pair, 0).ok().and_then(|v| v.as_string());
            let v = Reflect::get_u32(&pair, 1).ok().and_then(|v| v.as_string());
            match (k, v) {
                (Some(k), Some(v)) => opts.params.push((k, v)),
                _ => return Err(invalid("params")),
            }
        }
    }
    opts.use_token = get(o, "token").is_truthy();
    opts.since = string(o, "since");

    let h = get(o, "heartbeat");
    let hb = &mut opts.heartbeat;
    ms(&h, "intervalMs", &mut hb.ping_interval_ms);
    ms(&h, "timeoutMs", &mut hb.pong_timeout_ms);
    ms(&h, "serverSilenceMs", &mut hb.server_silence_ms);
    if let Some(n) = num(&h, "maxMissed") {
        hb.max_missed = n as u32;
    }

    let b = get(o, "backoff");
    let bo = &mut opts.backoff;
    ms(&b, "initialMs", &mut bo.initial_ms);
    ms(&b, "maxMs", &mut bo.max_ms);
    if let Some(n) = num(&b, "multiplier") {
        bo.factor = n;
    }
    if let Some(n) = num(&b, "jitter") {
        bo.jitter = n;
    }
    if let Some(n) = num(o, "maxAttempts") {
        bo.max_attempts = Some(n as u32);
    }

    let p = get(o, "polling");
    if let Some(n) = num(&p, "waitMs") {
        opts.polling.wait_ms = if n > 0.0 { Some(n as u64) } else { None };
    }
    ms(&p, "intervalMs", &mut opts.polling.interval_ms);
    opts.polling.pause_when_hidden = get(&p, "pauseWhenHidden").is_truthy();

    let t = get(o, "timeouts");
    let to = &mut opts.timeouts;
    ms(&t, "openMs", &mut to.open_ms);
    ms(&t, "raceMs", &mut to.race_ms);
    ms(&t, "firstFrameMs", &mut to.first_frame_ms);
    ms(&t, "sseFirstBytesMs", &mut to.sse_first_bytes_ms);

    let probe = get(o, "probe");
    if probe.is_falsy() && !probe.is_undefined() {
        opts.probe.enabled = false;
    }
    ms(&probe, "initialMs", &mut opts.probe.initial_ms);
    ms(&probe, "maxMs", &mut opts.probe.max_ms);

    let remember = get(o, "remember");
    if remember.is_falsy() && !remember.is_undefined() {
        opts.memory.enabled = false;
    }
    ms(&remember, "ttlMs", &mut opts.memory.ttl_ms);

    if let Some(n) = num(o, "maxFrameBytes") {
        opts.max_frame_bytes = n as usize;
    }
    if let Some(n) = num(o, "outboxLimit") {
        opts.outbox_capacity = n as usize;
    }

    let es = get(o, "eventSource");
    let web = WebOptions {
        event_source: if let Some(list) = es.dyn_ref::<Array>() {
            Some(list.iter().filter_map(|v| v.as_string()).collect())
        } else if es.is_truthy() {
            Some(Vec::new())
        } else {
            None
        },
    };
    Ok((opts, web))
}
