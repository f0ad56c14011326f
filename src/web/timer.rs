//! The one engine timer: armed for [`Engine::poll_timeout`](crate::engine::Engine) and
//! re-armed only when the deadline changes. Dropping it clears the browser timeout.
//! Late firing (a sleeping laptop, a throttled background tab) is not corrected here: the
//! engine compares the deadline with `now` and treats a large lateness as a clock jump.

use gloo_timers::callback::Timeout;

#[derive(Default)]
pub struct Timer {
    armed: Option<(u64, Timeout)>,
}

impl Timer {
    /// Arms the timer for `deadline` (engine clock) unless it already is; `None` disarms.
    pub fn set(&mut self, deadline: Option<u64>, now: u64, fire: impl FnOnce() + 'static) {
        match deadline {
            None => self.armed = None,
            Some(at) if self.armed.as_ref().map(|a| a.0) == Some(at) => {}
            Some(at) => {
                // setTimeout takes an i32; longer waits fire early and the engine re-arms.
                let ms = at.saturating_sub(now).min(i32::MAX as u64) as u32;
                self.armed = Some((at, Timeout::new(ms, fire)));
            }
        }
    }

    /// Forgets the armed deadline after it fired (its callback already ran).
    pub fn fired(&mut self) {
        self.armed = None;
    }

    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }
}
