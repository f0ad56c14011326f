//! The SSE and polling rungs, upstream send, publish, static files, CORS, health and metrics.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn sse_starts_with_a_comment_and_hello_then_streams_events_with_ids() {
    let s = Server::start(&[]);
    let mut sse = Sse::open(&s.url("/sse?topic=s"), None).await;
    assert_eq!(
        sse.headers()["content-type"],
        "text/event-stream",
        "content type"
    );
    assert_eq!(sse.headers()["x-accel-buffering"], "no");
    assert_eq!(sse.headers()["cache-control"], "no-cache");
    let hello = sse.next().await.unwrap();
    assert_eq!(sse.comments, vec!["ok"], "the body starts with a comment");
    assert_eq!(hello.event, "hello");
    let h: Value = serde_json::from_str(&hello.data).unwrap();
    assert_eq!(h["type"], "hello");
    let ids = publish_n(&s, "s", 0, 3).await;
    let events = sse.events(3, &mut vec![]).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.id.clone().unwrap())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(events[0].event, "tick");
    assert_eq!(
        serde_json::from_str::<Value>(&events[2].data).unwrap(),
        json!({"n": 2})
    );
}

#[tokio::test]
async fn sse_resumes_from_last_event_id() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "le", 0, 5).await;
    let mut sse = Sse::open(&s.url("/sse?topic=le"), Some(&ids[1])).await;
    let mut controls = vec![];
    let events = sse.events(3, &mut controls).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.id.clone().unwrap())
            .collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    assert_eq!(controls.len(), 1, "only hello: {controls:?}");
}

#[tokio::test]
async fn sse_since_wins_over_last_event_id() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "w", 0, 5).await;
    let mut sse = Sse::open(
        &s.url(&format!("/sse?topic=w&since={}", ids[3])),
        Some(&ids[0]),
    )
    .await;
    let events = sse.events(1, &mut vec![]).await;
    assert_eq!(events[0].id.as_deref(), Some(ids[4].as_str()));
}

#[tokio::test]
async fn sse_sends_a_reset_event_for_a_trimmed_cursor() {
    let s = Server::start(&["--history-count", "3"]);
    let ids = publish_n(&s, "tr", 0, 6).await;
    let mut sse = Sse::open(&s.url(&format!("/sse?topic=tr&since={}", ids[0])), None).await;
    let mut controls = vec![];
    let events = sse.events(3, &mut controls).await;
    assert_eq!(events[0].id.as_deref(), Some(ids[3].as_str()));
    let reset = controls.iter().find(|c| c.event == "reset").expect("reset");
    let r: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(r["reason"], "history_trimmed");
    assert_eq!(r["oldest"], ids[3].as_str());
}

/// A client whose connections were cut after some silence asks for heartbeats more often
/// (`heartbeat=<ms>`); the server obeys down to 1 s, never slower than its own setting.
#[tokio::test]
async fn a_connection_may_ask_for_heartbeats_more_often_but_not_under_a_second() {
    let s = Server::start(&["--heartbeat-ms", "60000"]);
    for (asked, got) in [("1500", 1500), ("10", 1000), ("120000", 60000), ("", 60000)] {
        let mut sse = Sse::open(&s.url(&format!("/sse?topic=hb2&heartbeat={asked}")), None).await;
        let hello = sse.next().await.unwrap();
        let hello: serde_json::Value = serde_json::from_str(&hello.data).unwrap();
        assert_eq!(hello["heartbeatMs"], got, "heartbeat={asked}");
        if got <= 1500 {
            // Nothing is published: only the heartbeat can come, and at the server's own
            // 60 s it would not come within the harness's step (10 s).
            assert_eq!(sse.next_comment().await.as_deref(), Some("heartbeat"));
        }
    }
    let mut ws = ws_connect(&s.ws_url("topic=hb2&heartbeat=2000")).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["heartbeatMs"] == 2000));
    let res = http()
        .get(s.url("/sse?topic=hb2&heartbeat=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("heartbeat"),
        "{body}"
    );
}

#[tokio::test]
async fn sse_heartbeat_is_a_comment_after_silence() {
    let s = Server::start(&["--heartbeat-ms", "100"]);
    let mut sse = Sse::open(&s.url("/sse?topic=hb"), None).await;
    sse.next().await.unwrap();
    publish_n(&s, "hb", 0, 1).await;
    // The heartbeat comment arrives before the next event.
    sse.next().await.unwrap();
    let before = sse.comments.len();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(400), sse.next()).await;
    assert!(
        sse.comments[before..].iter().any(|c| c == "heartbeat"),
        "{:?}",
        sse.comments
    );
}

#[tokio::test]
async fn poll_returns_at_once_when_events_are_pending() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "p", 0, 4).await;
    let (st, v) = poll(&s, &format!("topic=p&since={}", ids[0])).await;
    assert_eq!(st, 200);
    let events = v["events"].as_array().unwrap();
    assert_eq!(ns(events), vec![1, 2, 3]);
    assert_eq!(v["cursor"], ids[3].as_str());
}

#[tokio::test]
async fn poll_holds_the_request_until_an_event_arrives() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "hold", 0, 1).await;
    let cursor = ids[0].clone();
    let port = s.port;
    let waiter = tokio::spawn(async move {
        let url =
            format!("http://127.0.0.1:{port}/realtime/poll?topic=hold&since={cursor}&wait=10000");
        http()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "the poll must be held while nothing is new"
    );
    publish_n(&s, "hold", 1, 1).await;
    let v = tokio::time::timeout(STEP, waiter).await.unwrap().unwrap();
    assert_eq!(ns(v["events"].as_array().unwrap()), vec![1]);
}

#[tokio::test]
async fn poll_returns_an_empty_batch_with_the_same_cursor_after_the_wait() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "e", 0, 1).await;
    let (st, v) = poll(&s, &format!("topic=e&since={}&wait=50", ids[0])).await;
    assert_eq!(st, 200);
    assert_eq!(v, json!({"events": [], "cursor": ids[0]}));
}

#[tokio::test]
async fn poll_batches_are_bounded_and_resume_exactly() {
    let s = Server::start(&[]);
    let first = publish_n(&s, "many", 0, 1).await;
    for k in 0..3 {
        publish_n(&s, "many", 1 + k * 1000, 1000).await;
    }
    let mut cursor = first[0].clone();
    let mut got = vec![];
    let mut batches = 0;
    while got.len() < 3000 {
        let (_, v) = poll(&s, &format!("topic=many&since={cursor}")).await;
        got.extend(ns(v["events"].as_array().unwrap()));
        cursor = v["cursor"].as_str().unwrap().to_string();
        batches += 1;
        assert!(batches <= 3, "3000 events must come in 3 batches of 1000");
    }
    assert_eq!(got, (1..3001).collect::<Vec<u64>>());
}

#[tokio::test]
async fn poll_puts_a_reset_first_for_a_trimmed_cursor() {
    let s = Server::start(&["--history-count", "2"]);
    let ids = publish_n(&s, "pr", 0, 5).await;
    let (_, v) = poll(&s, &format!("topic=pr&since={}", ids[0])).await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "reset");
    assert_eq!(ns(&events[1..]), vec![3, 4]);
}

#[tokio::test]
async fn since_zero_asks_for_the_whole_retained_history() {
    let s = Server::start(&[]);
    publish_n(&s, "z", 0, 3).await;
    let (_, v) = poll(&s, "topic=z&since=0").await;
    assert_eq!(ns(v["events"].as_array().unwrap()), vec![0, 1, 2]);
}

#[tokio::test]
async fn a_malformed_cursor_or_topic_is_a_400_with_a_code() {
    let s = Server::start(&[]);
    for q in [
        "topic=a&since=x1",
        "topic=a%20b",
        "topic=a&since=1-2-3",
        "topic=a&wait=soon",
    ] {
        let (st, v) = poll(&s, q).await;
        assert_eq!(st, 400, "{q}");
        assert_eq!(v["error"], "bad_request", "{q}");
        assert!(v["message"].as_str().unwrap().len() > 10);
    }
}

#[tokio::test]
async fn post_send_is_acknowledged_and_a_repeated_key_is_not_applied_twice() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "snd", 0, 1).await;
    for _ in 0..3 {
        let res = http()
            .post(s.url("/send?topic=snd"))
            .header("Idempotency-Key", "msg-1")
            .json(&json!({"text": "hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"type":"ack","id":"msg-1"})
        );
    }
    let (_, v) = poll(&s, &format!("topic=snd&since={}&wait=50", ids[0])).await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "message");
    assert_eq!(events[0]["data"], json!({"text": "hello"}));
}

#[tokio::test]
async fn every_route_takes_its_topic_from_the_path_as_from_the_query() {
    let s = Server::start(&[]);
    // publish/{topic}
    let res = http()
        .post(s.url("/publish/pt"))
        .json(&json!([{"type": "tick", "data": {"n": 0}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // send/{topic}
    let res = http()
        .post(s.url("/send/pt"))
        .header("Idempotency-Key", "m-1")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"type":"ack","id":"m-1"})
    );
    // Both landed on topic `pt`: the query form sees them, and so does poll/{topic}.
    let (_, by_query) = poll(&s, "topic=pt&since=0&wait=50").await;
    assert_eq!(
        by_query["events"].as_array().unwrap().len(),
        2,
        "{by_query}"
    );
    let res = http()
        .get(s.url("/poll/pt?since=0&wait=50"))
        .send()
        .await
        .unwrap();
    let by_path: Value = res.json().await.unwrap();
    assert_eq!(by_path["events"], by_query["events"]);
    // sse/{topic}
    let mut sse = Sse::open(&s.url("/sse/pt?since=0"), None).await;
    let events = sse.events(2, &mut vec![]).await;
    assert_eq!(events[0].event, "tick");
    assert_eq!(events[1].event, "message");
    // A topic the path cannot carry is refused like one in the query.
    let res = http()
        .get(s.url("/poll/a%20b?wait=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn post_send_without_an_idempotency_key_is_refused() {
    let s = Server::start(&[]);
    let res = http()
        .post(s.url("/send?topic=x"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_request");
}

#[tokio::test]
async fn publish_validates_its_body() {
    let s = Server::start(&[]);
    for body in ["nope", "[]", "{\"data\":1}", "{\"type\":\"reset\"}", "42"] {
        let res = http()
            .post(s.url("/publish?topic=v"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_request");
    }
}

#[tokio::test]
async fn publish_needs_the_api_key_when_one_is_configured() {
    let s = Server::start(&["--publish-key", "k3y"]);
    let body = json!({"type":"x","data":1});
    let res = http()
        .post(s.url("/publish?topic=k"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http()
        .post(s.url("/publish?topic=k"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    for (h, v) in [("authorization", "Bearer k3y"), ("x-api-key", "k3y")] {
        let res = http()
            .post(s.url("/publish?topic=k"))
            .header(h, v)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{h}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let s = Server::start(&["--max-frame-bytes", "1024"]);
    let big = json!({"type":"x","data":"y".repeat(2000)});
    let res = http()
        .post(s.url("/publish?topic=l"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "too_large");
}

#[tokio::test]
async fn cors_preflight_allows_the_headers_the_client_sends() {
    let s = Server::start(&[]);
    let res = http()
        .request(reqwest::Method::OPTIONS, s.url("/send?topic=c"))
        .header("Origin", "http://127.0.0.1:5555")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "idempotency-key,content-type,authorization,last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for h in ["idempotency-key", "last-event-id", "authorization"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    let res = http()
        .get(s.url("/poll?topic=c&wait=10"))
        .header("Origin", "http://127.0.0.1:5555")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn static_files_are_served_with_wasm_and_javascript_types() {
    let dir = TempDir::new("static");
    std::fs::write(dir.0.join("index.html"), "<!doctype html><p>hi</p>").unwrap();
    std::fs::write(dir.0.join("a.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.0.join("a.mjs"), "export {}").unwrap();
    std::fs::write(dir.0.join("b.js"), "1").unwrap();
    let s = Server::start(&["--static", dir.0.to_str().unwrap()]);
    let root = format!("http://127.0.0.1:{}", s.port);
    for (path, ty) in [
        ("/", "text/html"),
        ("/a.wasm", "application/wasm"),
        ("/a.mjs", "javascript"),
        ("/b.js", "javascript"),
    ] {
        let res = http().get(format!("{root}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.contains(ty), "{path}: {ct}");
        assert_eq!(res.headers()["cache-control"], "no-cache", "{path}");
    }
    let res = http()
        .get(format!("{root}/missing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn health_and_metrics_report_the_state() {
    let s = Server::start(&[]);
    let root = format!("http://127.0.0.1:{}", s.port);
    let h: Value = http()
        .get(format!("{root}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"], "memory");
    let ids = publish_n(&s, "m", 0, 2).await;
    poll(&s, &format!("topic=m&since={}", ids[0])).await;
    let mut ws = ws_connect(&s.ws_url("topic=m")).await;
    let _ = ws_next(&mut ws).await;
    let text = http()
        .get(format!("{root}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "holdfast_connections{transport=\"websocket\"} 1",
        "holdfast_events_in_total 2",
        "holdfast_events_out_total{transport=\"poll\"} 1",
        "holdfast_resumes_total{transport=\"poll\"} 1",
        "holdfast_rejected_total{reason=\"rate_limited\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn the_demo_generator_publishes_a_deployment_on_topic_demo() {
    let s = Server::start(&["--demo", "--demo-interval-ms", "10"]);
    let mut sse = Sse::open(&s.url("/sse?topic=demo&since=0"), None).await;
    let events = sse.events(6, &mut vec![]).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(
        kinds.contains(&"status") && kinds.contains(&"log") && kinds.contains(&"progress"),
        "{kinds:?}"
    );
    let status: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(status["deploymentId"], "deploy-1");
}

#[tokio::test]
async fn events_older_than_the_age_limit_are_dropped_and_a_stale_cursor_gets_a_reset() {
    let s = Server::start(&["--history-secs", "1"]);
    let old = publish_n(&s, "age", 0, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    publish_n(&s, "age", 2, 1).await;
    let (_, v) = poll(&s, &format!("topic=age&since={}", old[0])).await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "reset", "{v}");
    assert_eq!(events[0]["reason"], "history_trimmed");
    assert_eq!(ns(&events[1..]), vec![2]);
}

#[tokio::test]
async fn a_plain_get_on_the_websocket_endpoint_names_the_missing_upgrade() {
    let s = Server::start(&[]);
    let res = http().get(s.url("/ws?topic=a")).send().await.unwrap();
    assert_eq!(res.status(), 426);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "upgrade_required");
    assert!(v["message"].as_str().unwrap().contains("Upgrade"));
}

#[tokio::test]
async fn shutdown_ends_sse_streams_and_returns_held_polls() {
    let mut s = Server::start(&[]);
    let mut sse = Sse::open(&s.url("/sse?topic=bye"), None).await;
    assert_eq!(sse.next().await.unwrap().event, "hello");
    let url = s.url("/poll?topic=bye&wait=20000");
    let held = tokio::spawn(async move { http().get(url).send().await.unwrap().status() });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    s.terminate();
    assert!(sse.next().await.is_none(), "the SSE stream ends");
    let status = tokio::time::timeout(STEP, held).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(s.wait_exit(), Some(0));
}

#[tokio::test]
async fn cors_can_be_limited_to_listed_origins() {
    let s = Server::start(&["--cors-origin", "http://app.example"]);
    let get = |origin: &'static str| {
        http()
            .get(s.url("/poll?topic=c&wait=0"))
            .header("Origin", origin)
            .send()
    };
    let res = get("http://app.example").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let res = get("http://evil.example").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_client_switching_rungs_at_every_step_gets_every_event_exactly_once() {
    let s = Server::start(&[]);
    let mut got: Vec<u64> = vec![];
    let mut cursor: Option<String> = None;
    let mut next = 0;
    for round in 0..3 {
        // WebSocket: what is pending plus a live batch.
        let q = match &cursor {
            Some(c) => format!("topic=sw&since={c}"),
            None => "topic=sw".to_string(),
        };
        let mut ws = ws_connect(&s.ws_url(&q)).await;
        assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
        let pending = got.len();
        publish_n(&s, "sw", next, 5).await;
        next += 5;
        let (events, _) = ws_events(&mut ws, next - pending, &mut vec![]).await;
        got.extend(ns(&events));
        cursor = Some(events.last().unwrap()["id"].as_str().unwrap().to_string());
        drop(ws);
        publish_n(&s, "sw", next, 5).await; // published while switching
        next += 5;
        // Polling.
        let (_, v) = poll(&s, &format!("topic=sw&since={}", cursor.as_ref().unwrap())).await;
        got.extend(ns(v["events"].as_array().unwrap()));
        cursor = Some(v["cursor"].as_str().unwrap().to_string());
        publish_n(&s, "sw", next, 5).await;
        next += 5;
        // SSE with Last-Event-ID.
        let mut sse = Sse::open(&s.url("/sse?topic=sw"), cursor.as_deref()).await;
        let evs = sse.events(5, &mut vec![]).await;
        for e in &evs {
            got.push(
                serde_json::from_str::<Value>(&e.data).unwrap()["n"]
                    .as_u64()
                    .unwrap(),
            );
        }
        cursor = evs.last().unwrap().id.clone();
        drop(sse);
        publish_n(&s, "sw", next, 5).await;
        next += 5;
        assert_eq!(got.len(), next - 5, "round {round}");
    }
    // The last 5 are still pending for the next connection.
    let (_, v) = poll(&s, &format!("topic=sw&since={}", cursor.unwrap())).await;
    got.extend(ns(v["events"].as_array().unwrap()));
    assert_eq!(got, (0..next as u64).collect::<Vec<u64>>());
}
