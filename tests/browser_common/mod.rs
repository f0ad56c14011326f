//! Shared helpers for the browser tests: the reference server's address (baked in at
//! compile time from `HOLDFAST_TEST_URL`), publishing, a recording sink, bounded waits.
#![allow(dead_code)]

use holdfast::engine::{Input, Interop, Item};
use holdfast::web::json::Decoder;
use holdfast::web::Sink;
use js_sys::{Promise, Reflect, JSON};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

const SERVER: Option<&str> = option_env!("HOLDFAST_TEST_URL");
const PUBLISH_KEY: Option<&str> = option_env!("HOLDFAST_TEST_PUBLISH_KEY");

/// `http://127.0.0.1:PORT` of the reference server the tests run against.
pub fn server() -> &'static str {
    SERVER.expect(
        "HOLDFAST_TEST_URL was not set when these tests were compiled: start \
         `holdfast-server --port 0` and build with HOLDFAST_TEST_URL=http://127.0.0.1:PORT \
         (`cargo xtask test` does this)",
    )
}

pub fn fresh_topic(prefix: &str) -> String {
    format!("{}-{}", prefix, (js_sys::Math::random() * 1e9) as u64)
}

fn query(topic: &str, since: Option<&str>) -> String {
    match since {
        Some(s) => format!("?topic={}&since={}", topic, s),
        None => format!("?topic={}", topic),
    }
}

pub fn ws_url(topic: &str, since: Option<&str>) -> String {
    format!(
        "{}/realtime/ws{}",
        server().replacen("http", "ws", 1),
        query(topic, since)
    )
}

pub fn http_url(endpoint: &str, topic: &str, since: Option<&str>) -> String {
    format!("{}/realtime/{}{}", server(), endpoint, query(topic, since))
}

pub fn decoder() -> Rc<Decoder> {
    Rc::new(Decoder {
        interop: Interop::default(),
        max_bytes: 1 << 20,
    })
}

pub async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(f: &js_sys::Function, ms: i32);
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_with_init(url: &str, init: &JsValue) -> Promise;
}

/// Publishes `n` events `{type:"tick", data:{seq:1..=n}}` to `topic`; returns their ids.
pub async fn publish(topic: &str, n: u32) -> Vec<String> {
    let body: Vec<String> = (1..=n)
        .map(|k| format!(r#"{{"type":"tick","data":{{"seq":{}}}}}"#, k))
        .collect();
    let init = js_sys::Object::new();
    Reflect::set(&init, &"method".into(), &"POST".into()).unwrap();
    Reflect::set(
        &init,
        &"body".into(),
        &format!("[{}]", body.join(",")).into(),
    )
    .unwrap();
    let headers = js_sys::Object::new();
    Reflect::set(&headers, &"Content-Type".into(), &"application/json".into()).unwrap();
    if let Some(k) = PUBLISH_KEY {
        Reflect::set(&headers, &"X-Api-Key".into(), &k.into()).unwrap();
    }
    Reflect::set(&init, &"headers".into(), &headers).unwrap();
    let url = format!("{}/realtime/publish?topic={}", server(), topic);
    let resp: web_sys::Response = JsFuture::from(fetch_with_init(&url, &init))
        .await
        .expect("publish request")
        .unchecked_into();
    assert_eq!(resp.status(), 200, "publish answered {}", resp.status());
    let text = JsFuture::from(resp.text().unwrap())
        .await
        .unwrap()
        .as_string()
        .unwrap();
    let v = JSON::parse(&text).unwrap();
    let ids: js_sys::Array = Reflect::get(&v, &"ids".into()).unwrap().unchecked_into();
    ids.iter().map(|i| i.as_string().unwrap()).collect()
}

/// A sink that records every input.
#[derive(Clone, Default)]
pub struct Recorder {
    inputs: Rc<RefCell<Vec<Input<JsValue>>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    pub fn sink(&self) -> Sink {
        let r = self.inputs.clone();
        Rc::new(move |i| r.borrow_mut().push(i))
    }

    pub fn take(&self) -> Vec<Input<JsValue>> {
        std::mem::take(&mut *self.inputs.borrow_mut())
    }

    /// Waits (at most ~15 s, in 20 ms steps) until `pred` holds for the inputs so far.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Input<JsValue>]) -> bool) {
        for _ in 0..750 {
            if pred(&self.inputs.borrow()) {
                return;
            }
            sleep(20).await;
        }
        panic!(
            "timed out waiting for {}; inputs: {:?}",
            what,
            kinds(&self.inputs.borrow())
        );
    }
}

pub fn items(inputs: &[Input<JsValue>]) -> Vec<Item<JsValue>> {
    inputs
        .iter()
        .filter_map(|i| match i {
            Input::Items { items, .. } => Some(items.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn hello_seen(inputs: &[Input<JsValue>]) -> bool {
    items(inputs)
        .iter()
        .any(|i| matches!(i, Item::Hello { .. }))
}

/// `(id, type, data.seq)` of every event, in order.
pub fn events(inputs: &[Input<JsValue>]) -> Vec<(String, String, u32)> {
    items(inputs)
        .into_iter()
        .filter_map(|i| match i {
            Item::Event { id, kind, data } => Some((
                id.unwrap_or_default(),
                kind,
                Reflect::get(&data, &"seq".into())
                    .ok()
                    .and_then(|s| s.as_f64())
                    .unwrap_or(-1.0) as u32,
            )),
            _ => None,
        })
        .collect()
}

pub fn kinds(inputs: &[Input<JsValue>]) -> Vec<String> {
    inputs
        .iter()
        .map(|i| match i {
            Input::Opened { .. } => "Opened".to_string(),
            Input::Items { items, .. } => format!("Items({})", items.len()),
            Input::Activity { bytes, .. } => format!("Activity({})", bytes),
            Input::Closed { code, reason, .. } => format!("Closed({:?}, {})", code, reason),
            Input::HttpStatus { status, .. } => format!("HttpStatus({})", status),
            Input::BadFrame { error, .. } => format!("BadFrame({:?})", error),
            Input::SendResult { result, .. } => format!("SendResult({:?})", result),
            other => format!("{:?}", other),
        })
        .collect()
}
