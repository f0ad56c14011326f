//! The whole client (engine + web layer + bindings) against the real reference server in
//! a real browser: each rung forced alone delivers in order and gets sends acknowledged,
//! the token provider is asked, invalid options come back as typed errors, and `close()`
//! leaves no socket, request, timer or listener behind.
//!
//! Run like `browser_adapters` (see there), with `--test browser_client`.
#![cfg(target_arch = "wasm32")]

mod browser_common;

use browser_common::*;
use holdfast::bindings::{live_adapters_js, WasmClient};
use js_sys::{Array, Function, Object, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A client plus everything it emitted.
struct Client {
    wasm: WasmClient,
    events: Rc<RefCell<Vec<Array>>>,
    _emit: Closure<dyn FnMut(Array)>,
}

fn options(topic: &str, transports: &[&str]) -> Object {
    let o = Object::new();
    set(&o, "url", &format!("{}/realtime", server()).into());
    set(&o, "topic", &topic.into());
    if !transports.is_empty() {
        set(
            &o,
            "transports",
            &transports
                .iter()
                .map(|t| JsValue::from_str(t))
                .collect::<Array>(),
        );
    }
    set(&o, "remember", &false.into());
    o
}

fn set(o: &Object, k: &str, v: &JsValue) {
    Reflect::set(o, &k.into(), v).unwrap();
}

fn create(opts: &Object) -> Result<Client, JsValue> {
    let events: Rc<RefCell<Vec<Array>>> = Rc::default();
    let e = events.clone();
    let emit = Closure::<dyn FnMut(Array)>::new(move |batch: Array| {
        for ev in batch.iter() {
            e.borrow_mut().push(ev.unchecked_into());
        }
    });
    let f: &Function = emit.as_ref().unchecked_ref();
    let wasm = WasmClient::new(1, opts.into(), f.clone())?;
    Ok(Client {
        wasm,
        events,
        _emit: emit,
    })
}

impl Client {
    fn of_kind(&self, kind: &str) -> Vec<Array> {
        self.events
            .borrow()
            .iter()
            .filter(|a| a.get(0).as_string().as_deref() == Some(kind))
            .cloned()
            .collect()
    }

    fn status(&self) -> String {
        Reflect::get(&self.wasm.snapshot(), &"status".into())
            .unwrap()
            .as_string()
            .unwrap()
    }

    fn transport(&self) -> Option<String> {
        Reflect::get(&self.wasm.snapshot(), &"transport".into())
            .unwrap()
            .as_string()
    }

    /// `data.seq` of every delivered message, in order.
    fn seqs(&self) -> Vec<u32> {
        self.of_kind("message")
            .iter()
            .map(|m| {
                Reflect::get(&m.get(3), &"seq".into())
                    .unwrap()
                    .as_f64()
                    .unwrap() as u32
            })
            .collect()
    }

    async fn wait(&self, what: &str, pred: impl Fn(&Client) -> bool) {
        for _ in 0..750 {
            if pred(self) {
                return;
            }
            sleep(20).await;
        }
        panic!(
            "timed out waiting for {}; status {}, events: {:?}",
            what,
            self.status(),
            self.events
                .borrow()
                .iter()
                .map(|a| a.get(0).as_string().unwrap_or_default())
                .collect::<Vec<_>>()
        );
    }
}

async fn rung_delivers_in_order_and_acknowledges_sends(rung: &str) {
    let topic = fresh_topic(rung);
    let c = create(&options(&topic, &[rung])).expect("valid options");
    c.wasm.start();
    c.wait("the client to open", |c| c.status() == "open").await;
    assert_eq!(c.transport().as_deref(), Some(rung));

    let ids = publish(&topic, 50).await;
    c.wait("50 messages", |c| c.seqs().len() >= 50).await;
    assert_eq!(
        c.seqs(),
        (1..=50).collect::<Vec<_>>(),
        "in order, each once"
    );
    let cursor = Reflect::get(&c.wasm.snapshot(), &"cursor".into())
        .unwrap()
        .as_string();
    assert_eq!(cursor.as_ref(), ids.last(), "the cursor is the last id");

    let msg_id = c.wasm.send(JsValue::from_str("hello")).expect("queued");
    c.wait("the ack", |c| {
        c.of_kind("ack")
            .iter()
            .any(|a| a.get(1).as_string().as_deref() == Some(msg_id.as_str()))
    })
    .await;

    c.wasm.close();
    assert_eq!(c.status(), "closed");
    assert_eq!(live_adapters_js(), 0, "close() left an adapter alive");
}

#[wasm_bindgen_test]
async fn websocket_alone_delivers_in_order_and_acknowledges_sends() {
    rung_delivers_in_order_and_acknowledges_sends("websocket").await;
}

#[wasm_bindgen_test]
async fn sse_alone_delivers_in_order_and_acknowledges_sends() {
    rung_delivers_in_order_and_acknowledges_sends("sse").await;
}

#[wasm_bindgen_test]
async fn polling_alone_delivers_in_order_and_acknowledges_sends() {
    rung_delivers_in_order_and_acknowledges_sends("polling").await;
}

#[wasm_bindgen_test]
async fn eventsource_option_delivers_listed_types_in_order() {
    let topic = fresh_topic("es");
    let o = options(&topic, &["sse"]);
    set(&o, "eventSource", &Array::of1(&"tick".into()));
    let c = create(&o).unwrap();
    c.wasm.start();
    c.wait("the client to open", |c| c.status() == "open").await;
    publish(&topic, 10).await;
    c.wait("10 messages", |c| c.seqs().len() >= 10).await;
    assert_eq!(c.seqs(), (1..=10).collect::<Vec<_>>());
    c.wasm.close();
    assert_eq!(live_adapters_js(), 0);
}

#[wasm_bindgen_test]
async fn the_token_provider_is_asked_before_connecting() {
    let topic = fresh_topic("token");
    let o = options(&topic, &["sse"]);
    set(&o, "token", &true.into());
    let c = create(&o).unwrap();
    c.wasm.start();
    c.wait("a token request", |c| !c.of_kind("token").is_empty())
        .await;
    assert_ne!(
        c.status(),
        "open",
        "does not connect before the token arrives"
    );
    c.wasm.token(true, "secret-token".into());
    c.wait("the client to open", |c| c.status() == "open").await;
    let diag = format!("{:?}", c.wasm.diagnostics());
    assert!(
        !diag.contains("secret-token"),
        "diagnostics never show the token"
    );
    c.wasm.close();
    assert_eq!(live_adapters_js(), 0);
}

#[wasm_bindgen_test]
async fn close_before_opening_leaves_nothing_behind() {
    let c = create(&options(&fresh_topic("early-close"), &[])).unwrap();
    c.wasm.start();
    assert!(live_adapters_js() > 0, "a started client holds adapters");
    c.wasm.close();
    assert_eq!(c.status(), "closed");
    assert_eq!(live_adapters_js(), 0);
    sleep(200).await;
    let after = c.events.borrow().len();
    sleep(300).await;
    assert_eq!(
        c.events.borrow().len(),
        after,
        "nothing is emitted after close"
    );
}

#[wasm_bindgen_test]
fn invalid_options_are_a_typed_error_naming_the_option() {
    let o = options("t", &[]);
    let polling = Object::new();
    set(&polling, "intervalMs", &0.into());
    set(&o, "polling", &polling);
    let err: Array = create(&o).err().expect("rejected").unchecked_into();
    assert_eq!(err.get(0).as_string().as_deref(), Some("invalid_option"));
    let msg = err.get(1).as_string().unwrap();
    assert!(msg.starts_with("options.polling.intervalMs "), "{}", msg);

    // Any positive heartbeat pair is valid, the timeout longer than the interval included.
    let o = options("t", &[]);
    let hb = Object::new();
    set(&hb, "intervalMs", &1_000.into());
    set(&hb, "timeoutMs", &1_500.into());
    set(&o, "heartbeat", &hb);
    assert!(create(&o).is_ok());

    let o = options("t", &[]);
    set(&o, "url", &"ftp://example.com/realtime".into());
    let err: Array = create(&o).err().expect("rejected").unchecked_into();
    assert_eq!(
        err.get(0).as_string().as_deref(),
        Some("invalid_url"),
        "{:?}",
        err.get(1)
    );
}

#[wasm_bindgen_test]
fn topic_and_interop_names_from_js_shape_the_urls() {
    let o = options("deploy-123", &["polling"]);
    set(&o, "since", &"41".into());
    let interop = Object::new();
    set(&interop, "topicParam", &"deploymentId".into());
    set(&interop, "sinceParam", &"cursor".into());
    set(&o, "interop", &interop);
    let params = Object::new();
    set(&params, "tenant", &"acme".into());
    set(&o, "params", &params);
    let c = create(&o).unwrap();
    c.wasm.start();
    let attempts: Array = Array::from(&c.wasm.diagnostics()).get(0).unchecked_into();
    let url = Reflect::get(&attempts.get(0), &"url".into())
        .unwrap()
        .as_string()
        .unwrap();
    assert!(
        url.ends_with("/realtime/poll?deploymentId=deploy-123&tenant=acme&cursor=41&wait=0"),
        "{url}"
    );
    c.wasm.close();
}

#[wasm_bindgen_test]
async fn falls_back_to_sse_when_the_websocket_endpoint_is_missing() {
    let topic = fresh_topic("fallback");
    let o = options(&topic, &["websocket", "sse"]);
    let urls = Object::new();
    set(
        &urls,
        "websocket",
        &format!("{}/no-such-endpoint/ws", server().replacen("http", "ws", 1)).into(),
    );
    set(&o, "urls", &urls);
    let c = create(&o).unwrap();
    c.wasm.start();
    c.wait("the client to open", |c| c.status() == "open").await;
    assert_eq!(c.transport().as_deref(), Some("sse"));
    let refused = c
        .of_kind("error")
        .into_iter()
        .find(|e| e.get(1).as_string().as_deref() == Some("upgrade_refused"))
        .expect("an upgrade_refused error");
    let msg = refused.get(2).as_string().unwrap();
    assert!(
        msg.contains("HTTP 404"),
        "the probe's status is in the message: {}",
        msg
    );
    publish(&topic, 3).await;
    c.wait("3 messages", |c| c.seqs().len() >= 3).await;
    assert_eq!(c.seqs(), vec![1, 2, 3]);
    c.wasm.close();
    assert_eq!(live_adapters_js(), 0);
}
