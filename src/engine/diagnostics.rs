//! Diagnostics: a bounded record of connection attempts and notable decisions, so an app
//! (or a person reading the console) can see *why* the client is on long-polling.
//!
//! Contract: at most `capacity` attempts and `capacity` notes are kept (oldest dropped
//! first). URLs are stored without the token parameter and no message ever contains a
//! token.

use std::collections::VecDeque;

use super::error::HoldfastError;
use super::types::{ConnId, Millis, Transport};

/// One connection attempt (for polling: the first request of a session, or a failed one).
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub conn: ConnId,
    pub transport: Transport,
    /// A background probe of a higher rung.
    pub probe: bool,
    /// The URL without the token.
    pub url: String,
    pub started_at: Millis,
    pub opened_at: Option<Millis>,
    /// When the first byte or frame arrived.
    pub first_data_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// Why it failed or ended (`None` while running, or when closed by the client).
    pub failure: Option<HoldfastError>,
}

/// A decision worth explaining (fell back, moved up, shortened the ping interval, slept…).
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub at: Millis,
    pub text: String,
}

/// The bounded record.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostics {
    pub attempts: VecDeque<Attempt>,
    pub notes: VecDeque<Note>,
    capacity: usize,
}

impl Diagnostics {
    pub fn new(capacity: usize) -> Diagnostics {
        Diagnostics {
            attempts: VecDeque::new(),
            notes: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn push_attempt(&mut self, a: Attempt) {
        if self.attempts.len() == self.capacity {
            self.attempts.pop_front();
        }
        self.attempts.push_back(a);
    }

    pub(crate) fn attempt_mut(&mut self, conn: ConnId) -> Option<&mut Attempt> {
        self.attempts.iter_mut().rev().find(|a| a.conn == conn)
    }

    pub(crate) fn note(&mut self, at: Millis, text: String) {
        if self.notes.len() == self.capacity {
            self.notes.pop_front();
        }
        self.notes.push_back(Note { at, text });
    }

    /// The most recent failure on `transport`, if any.
    pub fn last_failure(&self, transport: Transport) -> Option<&HoldfastError> {
        self.attempts
            .iter()
            .rev()
            .filter(|a| a.transport == transport)
            .find_map(|a| a.failure.as_ref())
    }
}
