//! Rung memory in `localStorage`. Storage can be missing or throw (private mode, sandboxed
//! iframes, quota): every failure is ignored, the client just doesn't remember.

use crate::engine::RememberedRung;

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

pub fn load(key: &str) -> Option<RememberedRung> {
    RememberedRung::decode(&storage()?.get_item(key).ok()??)
}

pub fn save(key: &str, value: &RememberedRung) {
    if let Some(s) = storage() {
        let _ = s.set_item(key, &value.encode());
    }
}

pub fn forget(key: &str) {
    if let Some(s) = storage() {
        let _ = s.remove_item(key);
    }
}
