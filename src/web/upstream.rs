//! Upstream messages on the SSE and polling rungs: `POST` the JSON body to the send URL
//! with `Idempotency-Key: <message id>` (the server drops repeats by it), answered with
//! [`Input::SendResult`]. Dropping the returned [`Task`] aborts the request silently.

use super::http::{self, Task};
use super::Sink;
use crate::engine::{HttpFailure, Input, MessageId};
use wasm_bindgen_futures::spawn_local;

pub fn post(msg_id: MessageId, url: &str, token: Option<&str>, body: &str, sink: Sink) -> Task {
    let (task, response) = http::fetch(
        "POST",
        url,
        token,
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", msg_id.as_str()),
        ],
        Some(body),
    );
    let alive = task.alive();
    spawn_local(async move {
        let result = match response.await {
            Ok(r) if r.ok() => Ok(()),
            Ok(r) => Err(HttpFailure {
                status: Some(r.status()),
                retry_after_ms: http::retry_after_ms(&r),
                error_code: http::error_code(&r).await,
            }),
            Err(_) => Err(HttpFailure::default()),
        };
        if alive.get() {
            sink(Input::SendResult { msg_id, result });
        }
    });
    task
}
