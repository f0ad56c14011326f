//! The engine itself (skeleton: the public surface is final, behaviour lands next).

use std::collections::VecDeque;

use super::diagnostics::Diagnostics;
use super::error::{ErrorCode, HoldfastError};
use super::options::{Interop, Options};
use super::types::*;
use super::url::Endpoints;
use super::util::Rng;

/// The transport state machine. `D` is the event payload handle (`JsValue` in the browser).
pub struct Engine<D> {
    options: Options,
    endpoints: Endpoints,
    page: PageContext,
    rng: Rng,
    out: VecDeque<Output<D>>,
    snapshot: Snapshot,
    diagnostics: Diagnostics,
}

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
            options,
            endpoints,
            page,
            rng: Rng::new(seed),
            out: VecDeque::new(),
            snapshot,
        })
    }

    /// Feeds one input at time `now`. Drain [`Engine::poll_output`] afterwards.
    pub fn handle(&mut self, input: Input<D>, now: Millis) {
        let _ = (input, now);
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<Output<D>> {
        self.out.pop_front()
    }

    /// The earliest time at which the engine wants [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Millis> {
        None
    }

    /// Queues an upstream message. Fails with `outbox_full` when the outbox is full and
    /// with `closed` after the client was closed.
    pub fn send(&mut self, data: D, now: Millis) -> Result<MessageId, HoldfastError> {
        let _ = (data, now, &mut self.rng);
        Err(HoldfastError::new(ErrorCode::Closed, "not implemented yet"))
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
        self.snapshot.status == Status::Closed
    }

    #[allow(dead_code)]
    fn page(&self) -> &PageContext {
        &self.page
    }
}
