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
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
