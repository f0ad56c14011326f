//! Each browser adapter against the real reference server, in a real browser
//! (wasm-bindgen-test in headless Chromium). The adapters report engine inputs into a
//! collecting sink; no engine is involved, so these pin down the web layer alone.
//!
//! Run: start `holdfast-server --port 0`, then (the URL is baked in at compile time)
//! `HOLDFAST_TEST_URL=http://127.0.0.1:PORT CHROMEDRIVER=/usr/bin/chromedriver \
//!  cargo test --target wasm32-unknown-unknown -p holdfast --test 'browser_*'`
//! (`cargo xtask test` does all of it). Firefox: `GECKODRIVER=$(which geckodriver)` instead
//! of `CHROMEDRIVER`. wasm-pack: `HOLDFAST_TEST_URL=… wasm-pack test --headless --chrome
//! --chromedriver /usr/bin/chromedriver --mode no-install . --test browser_client`.
//! A publish key, when the server has one: `HOLDFAST_TEST_PUBLISH_KEY`.
#![cfg(target_arch = "wasm32")]

mod browser_common;

use browser_common::*;
use holdfast::engine::{ConnId, FrameError, Input, Interop, Item, MessageId};
use holdfast::web::eventsource::EsConn;
use holdfast::web::poll::PollConn;
use holdfast::web::sse::SseConn;
use holdfast::web::upstream;
use holdfast::web::ws::WsConn;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const C: ConnId = ConnId(7);

#[wasm_bindgen_test]
async fn websocket_adapter_reports_open_then_the_servers_hello() {
    let topic = fresh_topic("ws-hello");
    let rec = Recorder::new();
    let _ws =
        WsConn::open(C, &ws_url(&topic, None), decoder(), rec.sink()).expect("socket created");
    rec.wait_for("a hello frame", hello_seen).await;
    let inputs = rec.take();
    assert!(
        matches!(inputs[0], Input::Opened { conn } if conn == C),
        "first input is Opened: {:?}",
        kinds(&inputs)
    );
}

#[wasm_bindgen_test]
async fn websocket_adapter_delivers_published_events_in_order() {
    let topic = fresh_topic("ws-events");
    let rec = Recorder::new();
    let _ws = WsConn::open(C, &ws_url(&topic, None), decoder(), rec.sink()).unwrap();
    rec.wait_for("a hello frame", hello_seen).await;
    let ids = publish(&topic, 5).await;
    rec.wait_for("5 events", |inputs| events(inputs).len() >= 5)
        .await;
    let got = events(&rec.take());
    assert_eq!(got.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(
        got.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(got.iter().all(|e| e.1 == "tick"));
}

#[wasm_bindgen_test]
async fn websocket_adapter_resumes_after_the_since_cursor() {
    let topic = fresh_topic("ws-since");
    let ids = publish(&topic, 4).await;
    let rec = Recorder::new();
    let _ws = WsConn::open(C, &ws_url(&topic, Some(&ids[1])), decoder(), rec.sink()).unwrap();
    rec.wait_for("2 events after the cursor", |inputs| {
        events(inputs).len() >= 2
    })
    .await;
    let got = events(&rec.take());
    assert_eq!(got.iter().map(|e| e.2).collect::<Vec<_>>(), vec![3, 4]);
}

#[wasm_bindgen_test]
async fn websocket_adapter_probes_a_refused_upgrade_and_reports_its_http_status() {
    let rec = Recorder::new();
    let url = format!("{}/no-such-endpoint/ws", server().replacen("http", "ws", 1));
    let _ws = WsConn::open(C, &url, decoder(), rec.sink()).unwrap();
    rec.wait_for("the outcome", |inputs| !inputs.is_empty())
        .await;
    sleep(100).await;
    let inputs = rec.take();
    assert_eq!(inputs.len(), 1, "one outcome: {:?}", kinds(&inputs));
    assert!(
        matches!(
            inputs[0],
            Input::HttpStatus {
                conn: C,
                status: 404,
                ..
            }
        ),
        "{:?}",
        kinds(&inputs)
    );
}

#[wasm_bindgen_test]
async fn websocket_adapter_reports_the_close_when_the_probe_learns_nothing() {
    // Nothing listens on port 9 (discard): the probe fails too, so the close is reported.
    // Browsers block port 9: Chromium and Firefox fail the socket with a close (1006),
    // WebKit with an `error` alone, which the adapter turns into that close (web/ws.rs).
    let rec = Recorder::new();
    let _ws = WsConn::open(C, "ws://127.0.0.1:9/realtime/ws", decoder(), rec.sink()).unwrap();
    rec.wait_for("the close", |inputs| !inputs.is_empty()).await;
    let inputs = rec.take();
    assert!(!inputs.iter().any(|i| matches!(i, Input::Opened { .. })));
    assert!(
        matches!(
            inputs[0],
            Input::Closed {
                code: Some(1006),
                ..
            }
        ),
        "{:?}",
        kinds(&inputs)
    );
}

#[wasm_bindgen_test]
async fn a_plain_get_of_the_websocket_endpoint_is_refused_so_a_probe_can_tell() {
    let (_task, response) =
        holdfast::web::http::fetch("GET", &http_url("ws", "probe", None), None, &[], None);
    let status = response.await.expect("an answer").status();
    assert!(
        (400..500).contains(&status),
        "a plain GET of the WebSocket endpoint answers {}",
        status
    );
}

#[wasm_bindgen_test]
async fn websocket_adapter_sends_text_frames_and_the_server_acknowledges() {
    let topic = fresh_topic("ws-send");
    let rec = Recorder::new();
    let ws = WsConn::open(C, &ws_url(&topic, None), decoder(), rec.sink()).unwrap();
    rec.wait_for("a hello frame", hello_seen).await;
    assert!(ws.send(r#"{"type":"send","id":"m-ws-1","data":{"x":1}}"#));
    assert!(ws.send(r#"{"type":"ping"}"#));
    rec.wait_for("the ack and the pong", |inputs| {
        items(inputs)
            .iter()
            .any(|i| matches!(i, Item::Ack { id } if id == "m-ws-1"))
            && items(inputs).iter().any(|i| matches!(i, Item::Pong))
    })
    .await;
}

#[wasm_bindgen_test]
async fn dropping_the_websocket_adapter_silences_it() {
    let topic = fresh_topic("ws-drop");
    let rec = Recorder::new();
    let ws = WsConn::open(C, &ws_url(&topic, None), decoder(), rec.sink()).unwrap();
    rec.wait_for("a hello frame", hello_seen).await;
    drop(ws);
    rec.take();
    publish(&topic, 2).await;
    sleep(300).await;
    assert!(rec.take().is_empty(), "no input after drop");
}

#[wasm_bindgen_test]
async fn fetch_sse_adapter_reports_open_activity_hello_and_events() {
    let topic = fresh_topic("sse-events");
    let rec = Recorder::new();
    let _sse = SseConn::open(
        C,
        &http_url("sse", &topic, None),
        None,
        None,
        decoder(),
        rec.sink(),
    );
    rec.wait_for("a hello event", hello_seen).await;
    publish(&topic, 3).await;
    rec.wait_for("3 events", |inputs| events(inputs).len() >= 3)
        .await;
    let inputs = rec.take();
    assert!(
        matches!(inputs[0], Input::Opened { .. }),
        "{:?}",
        kinds(&inputs)
    );
    assert!(inputs
        .iter()
        .any(|i| matches!(i, Input::Activity { bytes, .. } if *bytes > 0)));
    assert_eq!(
        events(&inputs).iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[wasm_bindgen_test]
async fn fetch_sse_adapter_resumes_from_the_last_event_id_header() {
    let topic = fresh_topic("sse-resume");
    let ids = publish(&topic, 3).await;
    let rec = Recorder::new();
    let _sse = SseConn::open(
        C,
        &http_url("sse", &topic, None),
        None,
        Some(&ids[0]),
        decoder(),
        rec.sink(),
    );
    rec.wait_for("2 events after the cursor", |inputs| {
        events(inputs).len() >= 2
    })
    .await;
    assert_eq!(
        events(&rec.take()).iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

#[wasm_bindgen_test]
async fn fetch_sse_adapter_reports_the_http_status_of_a_refusal() {
    let rec = Recorder::new();
    let url = format!("{}/no-such-endpoint/sse", server());
    let _sse = SseConn::open(C, &url, None, None, decoder(), rec.sink());
    rec.wait_for("the status", |inputs| !inputs.is_empty())
        .await;
    let inputs = rec.take();
    assert!(
        matches!(inputs[0], Input::HttpStatus { status: 404, .. }),
        "{:?}",
        kinds(&inputs)
    );
}

#[wasm_bindgen_test]
async fn dropping_the_fetch_sse_adapter_aborts_the_stream() {
    let topic = fresh_topic("sse-drop");
    let rec = Recorder::new();
    let sse = SseConn::open(
        C,
        &http_url("sse", &topic, None),
        None,
        None,
        decoder(),
        rec.sink(),
    );
    rec.wait_for("a hello event", hello_seen).await;
    drop(sse);
    rec.take();
    publish(&topic, 2).await;
    sleep(300).await;
    assert!(rec.take().is_empty(), "no input after drop");
}

#[wasm_bindgen_test]
async fn eventsource_adapter_receives_listed_event_types() {
    let topic = fresh_topic("es-events");
    let rec = Recorder::new();
    let _es = EsConn::open(
        C,
        &http_url("sse", &topic, None),
        &["tick".to_string()],
        decoder(),
        rec.sink(),
    )
    .unwrap();
    rec.wait_for("a hello event", hello_seen).await;
    publish(&topic, 2).await;
    rec.wait_for("2 events", |inputs| events(inputs).len() >= 2)
        .await;
    let got = events(&rec.take());
    assert_eq!(got.iter().map(|e| e.2).collect::<Vec<_>>(), vec![1, 2]);
    assert!(got.iter().all(|e| e.1 == "tick"));
}

#[wasm_bindgen_test]
async fn poll_adapter_returns_the_batch_after_the_cursor_then_closes() {
    let topic = fresh_topic("poll");
    let ids = publish(&topic, 3).await;
    let rec = Recorder::new();
    let _p = PollConn::open(
        C,
        &http_url("poll", &topic, Some(&ids[0])),
        None,
        decoder(),
        rec.sink(),
    );
    rec.wait_for("the poll to finish", |inputs| {
        inputs.iter().any(|i| matches!(i, Input::Closed { .. }))
    })
    .await;
    let inputs = rec.take();
    assert!(
        matches!(inputs[0], Input::Opened { .. }),
        "{:?}",
        kinds(&inputs)
    );
    assert_eq!(
        events(&inputs).iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(matches!(
        inputs.last(),
        Some(Input::Closed { code: None, .. })
    ));
}

#[wasm_bindgen_test]
async fn poll_adapter_reports_the_http_status_of_a_refusal() {
    let rec = Recorder::new();
    let url = format!("{}/no-such-endpoint/poll", server());
    let _p = PollConn::open(C, &url, None, decoder(), rec.sink());
    rec.wait_for("the status", |inputs| !inputs.is_empty())
        .await;
    let inputs = rec.take();
    assert!(
        matches!(inputs[0], Input::HttpStatus { status: 404, .. }),
        "{:?}",
        kinds(&inputs)
    );
}

#[wasm_bindgen_test]
async fn upstream_post_is_acknowledged_and_a_repeat_is_acknowledged_again() {
    let topic = fresh_topic("post");
    let url = http_url("send", &topic, None);
    let rec = Recorder::new();
    let id = MessageId(format!("m-post-{}", topic));
    let _t1 = upstream::post(id.clone(), &url, None, r#"{"x":1}"#, rec.sink());
    rec.wait_for("the first result", |inputs| !inputs.is_empty())
        .await;
    let _t2 = upstream::post(id.clone(), &url, None, r#"{"x":1}"#, rec.sink());
    rec.wait_for("the second result", |inputs| inputs.len() >= 2)
        .await;
    for input in rec.take() {
        match input {
            Input::SendResult { msg_id, result } => {
                assert_eq!(msg_id, id);
                assert!(result.is_ok(), "{:?}", result);
            }
            other => panic!("unexpected {:?}", other),
        }
    }
}

// ----- bad batch entries, the size limit per event, SSE content types (issue 12) -------------

/// A `data:` URL: `fetch` answers it with status 200, `Content-Type: mime` and `body`, which
/// lets these tests serve what the reference server never sends.
fn data_url(mime: &str, body: &str) -> String {
    format!(
        "data:{},{}",
        mime,
        String::from(js_sys::encode_uri_component(body))
    )
}

async fn finished_poll(
    url: &str,
    dec: std::rc::Rc<holdfast::web::json::Decoder>,
) -> Vec<Input<wasm_bindgen::JsValue>> {
    let rec = Recorder::new();
    let _p = PollConn::open(C, url, None, dec, rec.sink());
    rec.wait_for("the poll to finish", |inputs| {
        inputs.iter().any(|i| matches!(i, Input::Closed { .. }))
    })
    .await;
    rec.take()
}

#[wasm_bindgen_test]
async fn poll_adapter_delivers_the_good_events_of_a_batch_and_reports_each_bad_entry_in_its_place()
{
    let body = r#"{"events":[{"id":"1","type":"tick","data":{"seq":1}}, 7,
        {"id":"3","type":5}, {"id":"4","type":"tick","data":{"seq":4}}], "cursor":"4"}"#;
    let inputs = finished_poll(&data_url("application/json", body), decoder()).await;
    assert!(
        !inputs.iter().any(|i| matches!(i, Input::BadFrame { .. })),
        "the batch is not rejected whole: {:?}",
        kinds(&inputs)
    );
    let got = items(&inputs);
    assert_eq!(got.len(), 5, "{:?}", kinds(&inputs));
    assert!(matches!(&got[0], Item::Event { id: Some(i), .. } if i == "1"));
    assert!(matches!(
        &got[1],
        Item::Malformed {
            id: None,
            error: FrameError::NotAnObject
        }
    ));
    assert!(matches!(
        &got[2],
        Item::Malformed { id: Some(i), error: FrameError::BadField("type") } if i == "3"
    ));
    assert!(matches!(&got[3], Item::Event { id: Some(i), .. } if i == "4"));
    assert!(matches!(&got[4], Item::Hello { .. }));
}

#[wasm_bindgen_test]
async fn poll_adapter_applies_the_size_limit_per_event_not_to_the_body() {
    let dec = std::rc::Rc::new(holdfast::web::json::Decoder {
        interop: Interop::default(),
        max_bytes: 256,
    });
    let mut entries: Vec<String> = (1..=20)
        .map(|n| format!(r#"{{"id":"{n}","type":"tick","data":{{"seq":{n}}}}}"#))
        .collect();
    entries.insert(
        10,
        format!(
            r#"{{"id":"99","type":"tick","data":{{"pad":"{}"}}}}"#,
            "x".repeat(400)
        ),
    );
    let body = format!("[{}]", entries.join(","));
    assert!(body.len() > 4 * 256, "the body is well over the limit");
    let inputs = finished_poll(&data_url("application/json", &body), dec).await;
    assert!(
        !inputs.iter().any(|i| matches!(i, Input::BadFrame { .. })),
        "{:?}",
        kinds(&inputs)
    );
    assert_eq!(
        events(&inputs).iter().map(|e| e.2).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>(),
        "every event under the limit is delivered"
    );
    let too_large: Vec<_> = items(&inputs)
        .into_iter()
        .filter(|i| matches!(i, Item::TooLarge { .. }))
        .collect();
    assert!(
        matches!(&too_large[..], [Item::TooLarge { id: Some(i), limit: 256, .. }] if i == "99"),
        "{:?}",
        too_large
    );
}

#[wasm_bindgen_test]
async fn fetch_sse_adapter_fails_a_200_that_is_not_an_event_stream_naming_its_type() {
    let rec = Recorder::new();
    let page = "<html><body>Sign in to the Wi-Fi</body></html>\n\ndata: {}\n\n";
    let _sse = SseConn::open(
        C,
        &data_url("text/html;charset=utf-8", page),
        None,
        None,
        decoder(),
        rec.sink(),
    );
    rec.wait_for("the outcome", |inputs| !inputs.is_empty())
        .await;
    sleep(200).await;
    let inputs = rec.take();
    assert_eq!(inputs.len(), 1, "{:?}", kinds(&inputs));
    assert!(
        matches!(
            &inputs[0],
            Input::BadFrame {
                error: FrameError::NotEventStream { content_type: Some(t) },
                ..
            } if t.to_ascii_lowercase().starts_with("text/html")
        ),
        "{:?}",
        kinds(&inputs)
    );
}

#[wasm_bindgen_test]
async fn fetch_sse_adapter_accepts_an_event_stream_with_parameters() {
    let rec = Recorder::new();
    let stream = "id: 1\nevent: tick\ndata: {\"seq\":1}\n\n";
    let _sse = SseConn::open(
        C,
        &data_url("Text/Event-Stream;charset=UTF-8", stream),
        None,
        None,
        decoder(),
        rec.sink(),
    );
    rec.wait_for("the end of the stream", |inputs| {
        inputs.iter().any(|i| matches!(i, Input::Closed { .. }))
    })
    .await;
    let inputs = rec.take();
    assert!(
        matches!(inputs[0], Input::Opened { .. }),
        "{:?}",
        kinds(&inputs)
    );
    assert_eq!(
        events(&inputs).iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![1]
    );
}

#[wasm_bindgen_test]
async fn eventsource_adapter_reports_a_connection_the_browser_failed_as_not_an_event_stream() {
    // The reference server's poll endpoint answers 200 `application/json`: EventSource fails
    // the connection (WHATWG) without telling why.
    let rec = Recorder::new();
    let url = format!("{}&wait=0", http_url("poll", &fresh_topic("es-type"), None));
    let _es = EsConn::open(C, &url, &[], decoder(), rec.sink()).unwrap();
    rec.wait_for("the outcome", |inputs| !inputs.is_empty())
        .await;
    let inputs = rec.take();
    assert!(
        matches!(
            inputs[0],
            Input::BadFrame {
                error: FrameError::NotEventStream { content_type: None },
                ..
            }
        ),
        "{:?}",
        kinds(&inputs)
    );
}
