//! The transport state machine: pure, deterministic, sans-IO.
//!
//! Contract (as quinn-proto and str0m): the engine never touches a socket, a clock or a
//! random source of its own. The web layer feeds it [`Input`]s with the current time and
//! executes the [`Output`]s it asks for. **After every input (and after [`Engine::send`]),
//! drain [`Engine::poll_output`] until it returns `None`, then arm one timer for
//! [`Engine::poll_timeout`]** and call `handle(Input::Timeout, now)` when it fires.
//! Given the same options, seed and inputs, it produces the same outputs: every test and
//! every simulated schedule can be replayed.
//!
//! ```ignore
//! let mut engine = Engine::new(options, PageContext::new(href), seed, now)?;
//! engine.handle(Input::Start, now);
//! while let Some(out) = engine.poll_output() { execute(out) }
//! if let Some(at) = engine.poll_timeout() { arm_timer(at) }
//! ```
//!
//! It compiles for wasm32 without web-sys; payloads are an opaque `D` (a `JsValue` in the
//! browser) that the engine only moves, never inspects.
//!
//! What it decides, in one table (failure class → [`ErrorCode`] → what happens next):
//!
//! | failure | code | next |
//! |---|---|---|
//! | WebSocket closed before open / HTTP 4xx-5xx on the upgrade | `upgrade_refused` | next rung now |
//! | WebSocket open, a cross-check poll sees events it never delivers | `silent_after_open` | one rung lower now |
//! | SSE open, a cross-check poll sees events it never delivers | `sse_buffered` | one rung lower now |
//! | … or silent for `timeouts.firstFrameMs` / `sseFirstBytesMs` although its server spoke at once before | same | one rung lower now |
//! | not open within `timeouts.openMs` | `open_timeout` | next rung now |
//! | HTTP 404/405/501 or other error status on SSE/poll | `http_error` | next rung now |
//! | request failed without status | `network_error` | next rung now |
//! | 401, close 4401/4402 after data arrived with the token (it expired) | — (a note) | fresh token, same rung, at once; a poll session stays open |
//! | 401, close 4401/4402 otherwise (403, 4403: `forbidden`) | `unauthorized` | new token, same rung, backoff |
//! | 429/503, close 4429/1013 | `rate_limited` | same rung after `Retry-After` (+ jitter) |
//! | open session closed by the peer | `closed_by_peer` | same rung after backoff |
//! | … after the same idle time twice | `idle_cutoff` | same rung; ping interval shortened below it |
//! | no pong (WebSocket whose server answers pings) / no frame or bytes from the server (SSE, other WebSockets) in time | `heartbeat_timeout` | same rung; twice in a row: one rung lower |
//! | undecodable frame, or one bad entry of a batch | `bad_frame` | skipped, its id (if readable) passed (a poll body that is no batch: backoff) |
//! | oversized frame / SSE event | `frame_too_large` | frame skipped; SSE reconnects |
//! | server `reset`; HTTP 410 on a poll | `server_reset` (as `last_error`) | [`AppEvent::Gap`], delivery continues (after a 410: polls without a cursor) |
//! | browser offline | `offline` | paused until `Online` |
//!
//! Every rung of a round failing → backoff, then the round again from the rung that last
//! worked (or the remembered one). Backoff: first retry after a working session in
//! `[0, spread]`, then `[cap/2, cap]` with `cap = min(max, initial × factor^n)`.

// Not part of the API: the input generator for the property test and the fuzz target.
#[doc(hidden)]
pub mod byte_script;
mod crosscheck;
pub mod decode;
mod delivery;
pub mod diagnostics;
pub mod error;
mod machine;
pub mod options;
pub mod sse;
pub mod types;
pub mod url;
pub(crate) mod util;

pub use decode::JsonValue;
pub use diagnostics::{Attempt, Diagnostics, Note};
pub use error::{ErrorCode, FrameError, HoldfastError, HttpFailure};
pub use machine::Engine;
pub use options::{
    BackoffOptions, HeartbeatOptions, Interop, MemoryOptions, Options, PollingOptions,
    ProbeOptions, TimeoutOptions,
};
pub use sse::{SseError, SseEvent, SseParser};
pub use types::{
    AppEvent, Command, ConnId, Input, Item, MessageId, Millis, Output, PageContext, RememberedRung,
    Secret, Snapshot, Status, Transport,
};

#[cfg(test)]
mod harness;
// proptest does not build for wasm32 (it pulls getrandom); `wasm-pack test` builds the
// library's unit tests for the browser too.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
