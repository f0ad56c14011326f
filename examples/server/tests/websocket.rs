//! The WebSocket rung against the real server binary on 127.0.0.1.

mod common;

use common::*;
use serde_json::{json, Value};

async fn hello(ws: &mut Ws) -> Value {
    match ws_next(ws).await {
        Frame::One(v) if v["type"] == "hello" => v,
        other => panic!("expected hello first, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_is_the_first_frame_and_carries_the_latest_cursor() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "t", 0, 3).await;
    let mut ws = ws_connect(&s.ws_url("topic=t")).await;
    let h = hello(&mut ws).await;
    assert_eq!(h["cursor"], ids[2].as_str());
    assert_eq!(h["heartbeatMs"], 25_000);
}

#[tokio::test]
async fn live_events_arrive_in_order_after_hello() {
    let s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=live")).await;
    hello(&mut ws).await;
    publish_n(&s, "live", 0, 5).await;
    let mut controls = vec![];
    let (events, _) = ws_events(&mut ws, 5, &mut controls).await;
    assert_eq!(ns(&events), vec![0, 1, 2, 3, 4]);
    assert!(controls.is_empty(), "{controls:?}");
}

#[tokio::test]
async fn a_topic_can_be_named_in_the_path_like_the_seeds_deployment_ids() {
    let s = Server::start(&[]);
    let url = format!("ws://127.0.0.1:{}/realtime/ws/deploy-123", s.port);
    let mut ws = ws_connect(&url).await;
    assert_eq!(hello(&mut ws).await["topic"], "deploy-123");
    publish_n(&s, "deploy-123", 7, 1).await;
    let (events, _) = ws_events(&mut ws, 1, &mut vec![]).await;
    assert_eq!(ns(&events), vec![7]);
}

#[tokio::test]
async fn a_client_that_resumes_with_since_gets_exactly_the_missed_events() {
    let s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=r")).await;
    hello(&mut ws).await;
    publish_n(&s, "r", 0, 3).await;
    let (events, _) = ws_events(&mut ws, 3, &mut vec![]).await;
    let cursor = events[2]["id"].as_str().unwrap().to_string();
    drop(ws);
    publish_n(&s, "r", 3, 4).await;
    let mut ws = ws_connect(&s.ws_url(&format!("topic=r&since={cursor}"))).await;
    hello(&mut ws).await;
    publish_n(&s, "r", 7, 1).await;
    let mut controls = vec![];
    let (events, _) = ws_events(&mut ws, 5, &mut controls).await;
    assert_eq!(ns(&events), vec![3, 4, 5, 6, 7]);
    assert!(controls.is_empty(), "no reset expected: {controls:?}");
}

#[tokio::test]
async fn a_client_that_adopts_the_hello_cursor_loses_nothing_before_its_first_event() {
    let s = Server::start(&[]);
    publish_n(&s, "h", 0, 2).await;
    let mut ws = ws_connect(&s.ws_url("topic=h")).await;
    let cursor = hello(&mut ws).await["cursor"].as_str().unwrap().to_string();
    drop(ws);
    publish_n(&s, "h", 2, 2).await;
    let mut ws = ws_connect(&s.ws_url(&format!("topic=h&since={cursor}"))).await;
    hello(&mut ws).await;
    let (events, _) = ws_events(&mut ws, 2, &mut vec![]).await;
    assert_eq!(ns(&events), vec![2, 3]);
}

#[tokio::test]
async fn a_client_far_behind_receives_batched_arrays() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "b", 0, 1).await;
    publish_n(&s, "b", 1, 500).await;
    let mut ws = ws_connect(&s.ws_url(&format!("topic=b&since={}", ids[0]))).await;
    hello(&mut ws).await;
    let (events, frames) = ws_events(&mut ws, 500, &mut vec![]).await;
    assert_eq!(ns(&events), (1..501).collect::<Vec<u64>>());
    assert!(frames <= 4, "500 pending events took {frames} frames");
}

#[tokio::test]
async fn ping_gets_pong_in_both_forms() {
    let s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=p")).await;
    hello(&mut ws).await;
    ws_send(&mut ws, json!({"type":"ping"})).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v == json!({"type":"pong"})));
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text("ping".into()))
        .await
        .unwrap();
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v == json!({"type":"pong"})));
}

#[tokio::test]
async fn a_send_is_acknowledged_and_applied_once_even_when_repeated() {
    let s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=up")).await;
    hello(&mut ws).await;
    for _ in 0..2 {
        ws_send(
            &mut ws,
            json!({"type":"send","id":"m-1","data":{"text":"hi"}}),
        )
        .await;
    }
    ws_send(
        &mut ws,
        json!({"type":"send","id":"m-2","data":{"text":"again"}}),
    )
    .await;
    let mut acks = vec![];
    let mut messages = vec![];
    while acks.len() < 3 || messages.len() < 2 {
        match ws_next(&mut ws).await {
            Frame::One(v) if v["type"] == "ack" => acks.push(v["id"].as_str().unwrap().to_string()),
            Frame::One(v) if v["type"] == "message" => messages.push(v["data"]["text"].clone()),
            Frame::Batch(a) => messages.extend(a.into_iter().map(|v| v["data"]["text"].clone())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, vec!["m-1", "m-1", "m-2"]);
    assert_eq!(messages, vec![json!("hi"), json!("again")]);
}

#[tokio::test]
async fn malformed_frames_get_a_typed_error_and_the_stream_goes_on() {
    let s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=m")).await;
    hello(&mut ws).await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "{nope".into(),
    ))
    .await
    .unwrap();
    match ws_next(&mut ws).await {
        Frame::One(v) => assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("bad_request"))
        ),
        other => panic!("{other:?}"),
    }
    ws_send(&mut ws, json!({"type":"send"})).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["code"] == "bad_request"));
    publish_n(&s, "m", 1, 1).await;
    let (events, _) = ws_events(&mut ws, 1, &mut vec![]).await;
    assert_eq!(ns(&events), vec![1]);
}

#[tokio::test]
async fn a_cursor_older_than_the_history_gets_a_reset_then_the_retained_events() {
    let s = Server::start(&["--history-count", "5"]);
    let ids = publish_n(&s, "old", 0, 10).await;
    let mut ws = ws_connect(&s.ws_url(&format!("topic=old&since={}", ids[1]))).await;
    hello(&mut ws).await;
    let reset = match ws_next(&mut ws).await {
        Frame::One(v) => v,
        other => panic!("expected a reset, got {other:?}"),
    };
    assert_eq!(reset["type"], "reset");
    assert_eq!(reset["reason"], "history_trimmed");
    assert_eq!(reset["oldest"], ids[5].as_str());
    let (events, _) = ws_events(&mut ws, 5, &mut vec![]).await;
    assert_eq!(ns(&events), vec![5, 6, 7, 8, 9]);
}

#[tokio::test]
async fn a_cursor_within_the_history_gets_no_reset() {
    let s = Server::start(&["--history-count", "5"]);
    let ids = publish_n(&s, "ok", 0, 10).await;
    let mut ws = ws_connect(&s.ws_url(&format!("topic=ok&since={}", ids[4]))).await;
    hello(&mut ws).await;
    let mut controls = vec![];
    let (events, _) = ws_events(&mut ws, 5, &mut controls).await;
    assert_eq!(ns(&events), vec![5, 6, 7, 8, 9]);
    assert!(controls.is_empty(), "{controls:?}");
}

#[tokio::test]
async fn a_cursor_from_a_previous_boot_gets_a_reset() {
    let mut s = Server::start(&[]);
    let ids = publish_n(&s, "boot", 0, 2).await;
    s.kill();
    // Ids start from the boot time in ms: wait until a new boot gives new ids.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let s = Server::start(&[]);
    publish_n(&s, "boot", 100, 1).await;
    let mut ws = ws_connect(&s.ws_url(&format!("topic=boot&since={}", ids[1]))).await;
    hello(&mut ws).await;
    match ws_next(&mut ws).await {
        Frame::One(v) => {
            assert_eq!(v["type"], "reset");
            assert_eq!(v["reason"], "server_restarted");
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let (events, _) = ws_events(&mut ws, 1, &mut vec![]).await;
    assert_eq!(ns(&events), vec![100]);
}

#[tokio::test]
async fn a_cursor_the_server_never_gave_out_gets_a_reset_and_new_events_still_flow() {
    let s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=f&since=99999999999999-5")).await;
    hello(&mut ws).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["reason"] == "unknown_cursor"));
    publish_n(&s, "f", 1, 1).await;
    let (events, _) = ws_events(&mut ws, 1, &mut vec![]).await;
    assert_eq!(ns(&events), vec![1]);
}

#[tokio::test]
async fn silence_brings_a_server_heartbeat() {
    let s = Server::start(&["--heartbeat-ms", "150"]);
    let mut ws = ws_connect(&s.ws_url("topic=hb")).await;
    assert_eq!(hello(&mut ws).await["heartbeatMs"], 150);
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "heartbeat"));
}

#[tokio::test]
async fn a_message_over_the_limit_closes_the_socket_with_1009() {
    let s = Server::start(&["--max-frame-bytes", "1024"]);
    let mut ws = ws_connect(&s.ws_url("topic=big")).await;
    hello(&mut ws).await;
    let big = "x".repeat(4096);
    ws_send(&mut ws, json!({"type":"send","id":"1","data": big})).await;
    match ws_next(&mut ws).await {
        Frame::Closed(code, _) => assert_eq!(code, Some(1009)),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let mut s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=bye")).await;
    hello(&mut ws).await;
    s.terminate();
    match ws_next(&mut ws).await {
        Frame::Closed(code, _) => assert_eq!(code, Some(1001)),
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert_eq!(s.wait_exit(), Some(0));
}

#[tokio::test]
async fn an_invalid_cursor_is_refused_with_a_policy_close_and_a_reason() {
    let s = Server::start(&[]);
    let mut ws = ws_connect(&s.ws_url("topic=x&since=abc")).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["code"] == "bad_request"));
    assert!(matches!(
        ws_next(&mut ws).await,
        Frame::Closed(Some(1008), _)
    ));
}
