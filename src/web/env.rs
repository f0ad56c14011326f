//! The page environment: `online`/`offline` on `window` and `visibilitychange` on
//! `document`, turned into engine inputs. Listeners are removed when this is dropped.
//! Clock jumps need no listener: the engine detects them from a late timer.

use super::Sink;
use crate::engine::Input;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::EventTarget;

type Listener = (EventTarget, &'static str, Closure<dyn Fn()>);

pub struct PageEnv {
    listeners: Vec<Listener>,
}

/// What the page looks like now: (`navigator.onLine`, `document.visibilityState == "visible"`).
/// Outside a window (a worker, a test runner) both are true.
pub fn current() -> (bool, bool) {
    let Some(w) = web_sys::window() else {
        return (true, true);
    };
    let online = w.navigator().on_line();
    let visible = w
        .document()
        .map(|d| d.visibility_state() == web_sys::VisibilityState::Visible)
        .unwrap_or(true);
    (online, visible)
}

impl PageEnv {
    pub fn listen(sink: Sink) -> PageEnv {
        let mut env = PageEnv {
            listeners: Vec::new(),
        };
        let Some(w) = web_sys::window() else {
            return env;
        };
        let win: EventTarget = w.clone().into();
        let s = sink.clone();
        env.add(win.clone(), "online", move || s(Input::Online));
        let s = sink.clone();
        env.add(win, "offline", move || s(Input::Offline));
        if let Some(doc) = w.document() {
            let d = doc.clone();
            env.add(doc.into(), "visibilitychange", move || {
                sink(
                    if d.visibility_state() == web_sys::VisibilityState::Visible {
                        Input::Visible
                    } else {
                        Input::Hidden
                    },
                )
            });
        }
        env
    }

    fn add(&mut self, target: EventTarget, name: &'static str, f: impl Fn() + 'static) {
        let c = Closure::<dyn Fn()>::new(f);
        if target
            .add_event_listener_with_callback(name, c.as_ref().unchecked_ref())
            .is_ok()
        {
            self.listeners.push((target, name, c));
        }
    }

    /// How many listeners are registered.
    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }
}

impl Drop for PageEnv {
    fn drop(&mut self) {
        for (t, name, c) in self.listeners.drain(..) {
            let _ = t.remove_event_listener_with_callback(name, c.as_ref().unchecked_ref());
        }
    }
}
