//! Holdfast: a browser realtime client that keeps server events flowing through whatever
//! sits between the page and the server.
//!
//! Layers (the README's Layout section draws the same picture):
//! - [`engine`]: the pure transport state machine. No I/O, no clock, no randomness of its
//!   own; it compiles natively and is tested with virtual time.
//! - `web` (wasm32 only): turns browser callbacks into engine inputs and executes the
//!   engine's commands. It makes no decisions.
//! - `bindings` (wasm32 only): the `#[wasm_bindgen]` surface used by the JS wrapper.
//! - `js_value` (wasm32 only): JS values as the engine's JSON.
//!
//! The `browser` feature (on by default) builds `web` and `bindings`; without it the crate
//! is the engine alone, as `bench/size-floor` measures it.

pub mod engine;

#[cfg(target_arch = "wasm32")]
pub mod js_value;

#[cfg(all(target_arch = "wasm32", feature = "browser"))]
pub mod web;

#[cfg(all(target_arch = "wasm32", feature = "browser"))]
pub mod bindings;

/// Talc instead of std's dlmalloc: the same job in 2 KB less of the gzip download
/// (measured 2026-12-06), and faster. The module is single-threaded (no `atomics`).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
