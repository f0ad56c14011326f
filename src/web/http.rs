//! `fetch` plumbing shared by the SSE, polling and upstream adapters: one request with an
//! `AbortController`, owned by a [`Task`] whose drop aborts it and silences its callbacks.

use super::{js_error_message, Sink};
use crate::engine::util::parse_u64;
use crate::engine::{ConnId, Input};
use js_sys::{Promise, Reflect, JSON};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, RequestInit, Response};

#[wasm_bindgen]
extern "C" {
    // The global `fetch` (window or worker), not `Window::fetch`, so tests can run anywhere.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str, init: &RequestInit) -> Promise;
}

/// A running request. Dropping it aborts the request, and [`Task::alive`] turns false so
/// the async code that reads the response stops without reporting anything.
pub struct Task {
    abort: Option<AbortController>,
    alive: Rc<Cell<bool>>,
}

impl Task {
    pub fn alive(&self) -> Rc<Cell<bool>> {
        self.alive.clone()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.alive.set(false);
        if let Some(a) = self.abort.take() {
            a.abort();
        }
    }
}

/// Awaits the response of a subscribe request (SSE, poll) on engine connection `conn`. A
/// network error is reported as [`Input::Closed`], a status `accept` refuses as
/// [`Input::HttpStatus`] (with `Retry-After` and the JSON body's error code); either way
/// `None`. Nothing is reported once the task was dropped.
pub async fn accepted_response(
    conn: ConnId,
    response: impl std::future::Future<Output = Result<Response, String>>,
    alive: &Cell<bool>,
    sink: &Sink,
    accept: fn(u16) -> bool,
) -> Option<Response> {
    let resp = match response.await {
        Ok(r) => r,
        Err(reason) => {
            if alive.get() {
                sink(Input::Closed {
                    conn,
                    code: None,
                    reason,
                });
            }
            return None;
        }
    };
    if !alive.get() {
        return None;
    }
    let status = resp.status();
    if accept(status) {
        return Some(resp);
    }
    let retry_after_ms = retry_after_ms(&resp);
    let error_code = error_code(&resp).await;
    if alive.get() {
        sink(Input::HttpStatus {
            conn,
            status,
            retry_after_ms,
            error_code,
        });
    }
    None
}

/// Starts `method url` with the token as `Authorization: Bearer` and the extra headers.
/// Returns the task guard and the response future (an `Err` holds a network error message).
pub fn fetch(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (
    Task,
    impl std::future::Future<Output = Result<Response, String>>,
) {
    let abort = AbortController::new().ok();
    let init = RequestInit::new();
    init.set_method(method);
    if let Ok(h) = Headers::new() {
        if let Some(t) = token {
            let mut v = String::from("Bearer ");
            v.push_str(t);
            let _ = h.set("Authorization", &v);
        }
        for (k, v) in headers {
            let _ = h.set(k, v);
        }
        init.set_headers(&h);
    }
    if let Some(b) = body {
        init.set_body(&JsValue::from_str(b));
    }
    init.set_cache(web_sys::RequestCache::NoStore);
    if let Some(a) = &abort {
        init.set_signal(Some(&a.signal()));
    }
    let promise = global_fetch(url, &init);
    let task = Task {
        abort,
        alive: Rc::new(Cell::new(true)),
    };
    let fut = async move {
        match JsFuture::from(promise).await {
            Ok(r) => r
                .dyn_into::<Response>()
                .map_err(|_| String::from("fetch returned no Response")),
            Err(e) => Err(js_error_message(&e)),
        }
    };
    (task, fut)
}

/// `Retry-After` in ms: seconds, or an HTTP date.
pub fn retry_after_ms(resp: &Response) -> Option<u64> {
    let v = resp.headers().get("retry-after").ok()??;
    let v = v.trim();
    if let Some(s) = parse_u64(v) {
        return Some(s.saturating_mul(1000));
    }
    let at = js_sys::Date::parse(v);
    if at.is_nan() {
        return None;
    }
    Some((at - js_sys::Date::now()).max(0.0) as u64)
}

/// Reads the body as text.
pub async fn text(resp: &Response) -> Result<String, String> {
    let p = resp.text().map_err(|e| js_error_message(&e))?;
    JsFuture::from(p)
        .await
        .map_err(|e| js_error_message(&e))?
        .as_string()
        .ok_or_else(|| String::from("response body is not text"))
}

/// The `"error"` code of a JSON error body (`{"error":"token_expired",...}`), if any.
pub async fn error_code(resp: &Response) -> Option<String> {
    let body = text(resp).await.ok()?;
    let v = JSON::parse(&body).ok()?;
    Reflect::get(&v, &JsValue::from_str("error"))
        .ok()?
        .as_string()
}
