//! The `#[wasm_bindgen]` surface used by the JS wrapper (`js/src/core.ts`). It only
//! converts types: the options object (already checked by the wrapper), flattened into
//! leaves, into engine [`Options`] through [`Options::from_js`] (which holds every JS
//! option name), errors into
//! `[code, message, transport]` arrays, and app events into the batches described in
//! [`crate::web::runtime`].
//!
//! Batches handed to `emit(batch, ids)` are arrays of arrays, in order:
//! `["message", id, type, data]` (`id`: `1` for the next of `ids.split("\0")`, else
//! the id string, or null), `["gap", reason, cursor|null, oldest|null]`,
//! `["error", code, message, transport|null]`, `["ack", msgId]`,
//! `["fail", msgId, code, message, transport|null]`, `["token"]` (call the token provider
//! and answer with `token()`), and last, once, either `["state", snapshot]` when the
//! snapshot changed or `["cursor", id|null]` when only the cursor moved (`["cursor"]`: the
//! batch's last message id).

use crate::engine::options::{JsLeaf, GROUPS};
use crate::engine::{ErrorCode, HoldfastError, Options};
use crate::web::runtime::{error_js, live_adapters, take_trapped, Runtime, WebOptions};
use js_sys::{Array, Function, Object, Reflect};
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

/// A JS value as a leaf of the options ([`JsLeaf`]).
fn leaf(v: &JsValue) -> JsLeaf {
    if let Some(s) = v.as_string() {
        JsLeaf::Str(s)
    } else if let Some(x) = v.as_f64() {
        JsLeaf::Num(x)
    } else if let Some(b) = v.as_bool() {
        JsLeaf::Bool(b)
    } else if v.is_null() {
        JsLeaf::Null
    } else if let Some(a) = v.dyn_ref::<Array>() {
        a.iter()
            .map(|x| x.as_string())
            .collect::<Option<Vec<_>>>()
            .map_or(JsLeaf::Other, JsLeaf::List)
    } else {
        JsLeaf::Other
    }
}

/// The own enumerable `[key, value]` pairs of a plain object (not an array, not null).
fn entries(o: &JsValue) -> Option<Array> {
    (o.is_object() && !Array::is_array(o)).then(|| Object::entries(o.unchecked_ref::<Object>()))
}

/// Flattens the options object one level below [`GROUPS`] (`heartbeat.intervalMs`, …) for
/// [`Options::from_js`], which holds every JS name; `undefined` values are absent.
fn leaves(o: &JsValue) -> Result<Vec<(String, JsLeaf)>, HoldfastError> {
    let top = entries(o).ok_or_else(|| {
        HoldfastError::new(
            ErrorCode::InvalidOption,
            "options must be an object with at least { url }",
        )
    })?;
    let mut out = Vec::new();
    for pair in top.iter() {
        let pair: Array = pair.unchecked_into();
        let (Some(k), v) = (pair.get(0).as_string(), pair.get(1)) else {
            continue;
        };
        if v.is_undefined() {
            continue;
        }
        match entries(&v) {
            Some(group) if GROUPS.contains(&k.as_str()) => {
                for pair in group.iter() {
                    let pair: Array = pair.unchecked_into();
                    let (Some(field), x) = (pair.get(0).as_string(), pair.get(1)) else {
                        continue;
                    };
                    if !x.is_undefined() {
                        let mut path = k.clone();
                        path.push('.');
                        path.push_str(&field);
                        out.push((path, leaf(&x)));
                    }
                }
            }
            _ => out.push((k, leaf(&v))),
        }
    }
    Ok(out)
}

/// Reads the wrapper's normalized options (`normalizeOptions` in `js/src/core.ts`, which
/// has already applied the same rules synchronously).
fn read_options(o: &JsValue) -> Result<(Options, WebOptions), HoldfastError> {
    let opts = Options::from_js(&leaves(o)?)?;
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
