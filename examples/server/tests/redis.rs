//! Redis Streams history: a real `redis-server` on a free loopback port, shared by several
//! server processes. Fails (naming the apt package) when redis-server is missing, unless
//! HOLDFAST_SKIP_REDIS=1.

mod common;

use common::*;
use serde_json::Value;

fn redis_server(r: &Redis, extra: &[&str]) -> Server {
    let mut args = vec!["--redis", r.url.as_str(), "--conns-per-ip", "0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[tokio::test]
async fn ids_are_redis_stream_ids_and_health_says_redis() {
    let Some(r) = redis() else { return };
    let s = redis_server(&r, &[]);
    let ids = publish_n(&s, "x", 0, 2).await;
    for id in &ids {
        let (ms, seq) = id.split_once('-').unwrap();
        assert!(
            ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(),
            "{id}"
        );
    }
    let h: Value = http()
        .get(format!("http://127.0.0.1:{}/health", s.port))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["store"], "redis");
}

#[tokio::test]
async fn a_client_cut_from_one_process_resumes_on_another_with_nothing_lost_or_repeated() {
    let Some(r) = redis() else { return };
    let a = redis_server(&r, &[]);
    let b = redis_server(&r, &[]);
    let mut ws = ws_connect(&a.ws_url("topic=shared")).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    // Published on B, delivered live on A.
    publish_n(&b, "shared", 0, 50).await;
    let (events, _) = ws_events(&mut ws, 50, &mut vec![]).await;
    assert_eq!(ns(&events), (0..50).collect::<Vec<u64>>());
    let cursor = events[49]["id"].as_str().unwrap().to_string();
    drop(ws);
    // Events published while the client is away, on both processes.
    publish_n(&a, "shared", 50, 25).await;
    publish_n(&b, "shared", 75, 25).await;
    // Resume on B, over SSE this time, then keep receiving live events.
    let mut sse = Sse::open(&b.url(&format!("/sse?topic=shared&since={cursor}")), None).await;
    let mut controls = vec![];
    let got = sse.events(50, &mut controls).await;
    publish_n(&a, "shared", 100, 10).await;
    let live = sse.events(10, &mut controls).await;
    let all: Vec<u64> = got
        .iter()
        .chain(live.iter())
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(all, (50..110).collect::<Vec<u64>>());
    assert!(controls.iter().all(|c| c.event == "hello"), "{controls:?}");
}

#[tokio::test]
async fn polling_resumes_across_processes() {
    let Some(r) = redis() else { return };
    let a = redis_server(&r, &[]);
    let b = redis_server(&r, &[]);
    let ids = publish_n(&a, "pp", 0, 10).await;
    let (_, v) = poll(&b, &format!("topic=pp&since={}", ids[3])).await;
    assert_eq!(
        ns(v["events"].as_array().unwrap()),
        (4..10).collect::<Vec<u64>>()
    );
    assert_eq!(v["cursor"], ids[9].as_str());
}

#[tokio::test]
async fn a_cursor_below_the_trimmed_range_gets_a_reset() {
    let Some(r) = redis() else { return };
    // MAXLEN ~ trims whole macro nodes (100 entries by default): publish well past it.
    let s = redis_server(&r, &["--history-count", "10"]);
    let first = publish_n(&s, "trim", 0, 1).await;
    for k in 0..4 {
        publish_n(&s, "trim", 1 + k * 100, 100).await;
    }
    let (_, v) = poll(&s, &format!("topic=trim&since={}", first[0])).await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "reset", "{:?}", &events[..2]);
    assert_eq!(events[0]["reason"], "history_trimmed");
    assert_eq!(events[0]["oldest"], events[1]["id"]);
    // Nothing after the reset is skipped: the retained range is delivered to its end.
    let n = ns(&events[1..]);
    assert_eq!(*n.last().unwrap(), 400);
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1));
}

#[tokio::test]
async fn a_cursor_inside_the_retained_range_gets_no_reset() {
    let Some(r) = redis() else { return };
    let s = redis_server(&r, &[]);
    let ids = publish_n(&s, "keep", 0, 5).await;
    let (_, v) = poll(&s, &format!("topic=keep&since={}", ids[0])).await;
    assert_eq!(ns(v["events"].as_array().unwrap()), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn idempotent_sends_are_recognised_by_every_process() {
    let Some(r) = redis() else { return };
    let a = redis_server(&r, &[]);
    let b = redis_server(&r, &[]);
    let start = publish_n(&a, "idem", 0, 1).await;
    for s in [&a, &b, &a] {
        let res = http()
            .post(s.url("/send?topic=idem"))
            .header("Idempotency-Key", "m-42")
            .header("Content-Type", "application/json")
            .body("{\"v\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let (_, v) = poll(&b, &format!("topic=idem&since={}&wait=200", start[0])).await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn websocket_live_fanout_reaches_subscribers_of_every_process() {
    let Some(r) = redis() else { return };
    let a = redis_server(&r, &[]);
    let b = redis_server(&r, &[]);
    let mut subs = vec![];
    for s in [&a, &b, &a, &b] {
        let mut ws = ws_connect(&s.ws_url("topic=fan")).await;
        assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
        subs.push(ws);
    }
    publish_n(&a, "fan", 0, 20).await;
    for ws in subs.iter_mut() {
        let (events, _) = ws_events(ws, 20, &mut vec![]).await;
        assert_eq!(ns(&events), (0..20).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn a_missing_redis_is_a_clear_startup_error() {
    let port = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast-server"))
        .args([
            "--port",
            "0",
            "--redis",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use --redis"), "{err}");
}

#[tokio::test]
async fn health_turns_503_degraded_when_redis_goes_away() {
    let Some(r) = redis() else { return };
    let s = redis_server(&r, &[]);
    let health = format!("http://127.0.0.1:{}/health", s.port);
    assert_eq!(http().get(&health).send().await.unwrap().status(), 200);
    drop(r);
    let res = http().get(&health).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "degraded");
}

#[tokio::test]
async fn a_process_shutting_down_sends_1001_and_the_client_resumes_on_another_without_loss() {
    let Some(r) = redis() else { return };
    let mut a = redis_server(&r, &[]);
    let b = redis_server(&r, &[]);
    let mut ws = ws_connect(&a.ws_url("topic=roll")).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    publish_n(&b, "roll", 0, 10).await;
    let (events, _) = ws_events(&mut ws, 10, &mut vec![]).await;
    let cursor = events[9]["id"].as_str().unwrap().to_string();
    // A rolling deploy stops A; B keeps taking events meanwhile.
    a.terminate();
    match ws_next(&mut ws).await {
        Frame::Closed(code, _) => assert_eq!(code, Some(1001)),
        other => panic!("expected 1001, got {other:?}"),
    }
    assert_eq!(a.wait_exit(), Some(0));
    publish_n(&b, "roll", 10, 10).await;
    let mut ws = ws_connect(&b.ws_url(&format!("topic=roll&since={cursor}"))).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    let mut controls = vec![];
    let (events, _) = ws_events(&mut ws, 10, &mut controls).await;
    assert_eq!(ns(&events), (10..20).collect::<Vec<u64>>());
    assert!(controls.is_empty(), "{controls:?}");
}

#[tokio::test]
async fn many_topics_are_followed_over_a_couple_of_redis_connections() {
    let Some(r) = redis() else { return };
    let s = redis_server(&r, &[]);
    let mut subs = vec![];
    for i in 0..40 {
        let mut ws = ws_connect(&s.ws_url(&format!("topic=many-{i}"))).await;
        assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
        subs.push(ws);
    }
    for i in 0..40 {
        publish_n(&s, &format!("many-{i}"), i, 1).await;
    }
    for (i, ws) in subs.iter_mut().enumerate() {
        let (events, _) = ws_events(ws, 1, &mut vec![]).await;
        assert_eq!(ns(&events), vec![i as u64], "topic many-{i}");
    }
    let client = redis::Client::open(r.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut conn)
        .await
        .unwrap();
    let clients: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The server's command connection, its follower, and this test's connection.
    assert!(clients <= 4, "{clients} Redis connections for 40 topics");
}

/// A Redis without persistence that restarts comes back empty: every stream is gone, and the
/// topic's stream is created anew by the next publish. A cursor from before is one the new
/// stream never gave out; delivering "what follows it" would skip what was lost in silence.
#[tokio::test]
async fn a_cursor_from_before_redis_lost_its_data_gets_a_reset_then_the_new_events() {
    let Some(mut r) = redis() else { return };
    let s = redis_server(&r, &[]);
    let old = publish_n(&s, "lost", 0, 3).await;
    // A live subscriber, so this process's cache follows the topic.
    let mut ws = ws_connect(&s.ws_url("topic=lost")).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    r.restart_empty();
    let health = format!("http://127.0.0.1:{}/health", s.port);
    let mut new = Vec::new();
    for _ in 0..100 {
        let up = http().get(&health).send().await.unwrap().status() == 200;
        if up {
            new = publish_n(&s, "lost", 100, 2).await;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        new.len(),
        2,
        "the server publishes again once Redis is back"
    );
    for since in [&old[2], &old[0]] {
        let (_, v) = poll(&s, &format!("topic=lost&since={since}")).await;
        let events = v["events"].as_array().unwrap();
        assert_eq!(events[0]["type"], "reset", "since={since}: {events:?}");
        assert_eq!(events[0]["reason"], "history_lost");
        assert_eq!(events[0]["oldest"], new[0].as_str());
        assert_eq!(
            ns(&events[1..]),
            vec![100, 101],
            "then the new stream, whole"
        );
    }
    // The same over SSE, from Last-Event-ID.
    let mut sse = Sse::open(&s.url("/sse?topic=lost"), Some(&old[2])).await;
    let mut controls = vec![];
    let got = sse.events(2, &mut controls).await;
    assert!(
        controls
            .iter()
            .any(|c| c.event == "reset" && c.data.contains("history_lost")),
        "{controls:?}"
    );
    assert_eq!(got[0].id.as_deref(), Some(new[0].as_str()));
    // Cursors the new stream gave out resume as usual; one it never reached gets a reset.
    let (_, v) = poll(&s, &format!("topic=lost&since={}", new[0])).await;
    assert_eq!(ns(v["events"].as_array().unwrap()), vec![101]);
    let (_, v) = poll(&s, "topic=lost&since=99999999999999-0").await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events[0]["reason"], "unknown_cursor", "{events:?}");
    assert_eq!(events.len(), 1, "only new events follow an unknown cursor");
    // The live subscriber: if it read while Redis was down it was told so and closed
    // (1011), and its reconnect is reset; if it read after, the reset comes on its socket.
    let mut controls = vec![];
    let first = ws_next(&mut ws).await;
    if matches!(&first, Frame::One(v) if v["code"] == "unavailable") {
        assert!(matches!(
            ws_next(&mut ws).await,
            Frame::Closed(Some(1011), _)
        ));
        ws = ws_connect(&s.ws_url(&format!("topic=lost&since={}", old[2]))).await;
        assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    } else if let Frame::One(v) = first {
        controls.push(v);
    }
    let (events, _) = ws_events(&mut ws, 2, &mut controls).await;
    assert_eq!(ns(&events), vec![100, 101]);
    assert!(
        controls.iter().any(|c| c["type"] == "reset"
            && (c["reason"] == "history_lost" || c["reason"] == "unknown_cursor")),
        "{controls:?}"
    );
}
