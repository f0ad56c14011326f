//! Rung memory: the rung that worked for this endpoint is remembered (localStorage, with an
//! expiry), so the next page load starts there; reaching the top rung forgets it.

use super::*;

impl<D: Clone> Engine<D> {
    pub(super) fn remember(&mut self, rung: usize, now: Millis) {
        if !self.options.memory.enabled {
            return;
        }
        let key = self.endpoints.memory_key.clone();
        if rung == 0 {
            if self.remembered.take().is_some() {
                self.cmd(Command::Forget { key });
            }
            return;
        }
        let t = self.ladder[rung];
        let ttl = self.options.memory.ttl_ms;
        let fresh =
            matches!(self.remembered, Some(r) if r.transport == t && r.expires_at >= now + ttl / 2);
        if !fresh {
            let value = RememberedRung {
                transport: t,
                expires_at: now + ttl,
            };
            self.remembered = Some(value);
            self.cmd(Command::Remember { key, value });
        }
    }
}
