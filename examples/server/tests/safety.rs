//! Tokens, limits and refusals: every refusal has a status (or close code) and a reason the
//! client can act on.

mod common;

use common::*;
use holdfast_server::auth::mint;
use serde_json::Value;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn http_rungs_tell_an_expired_token_from_an_invalid_one() {
    let s = Server::start(&["--token-secret", "sekrit"]);
    let fresh = mint("sekrit", unix_now() + 600, None);
    let expired = mint("sekrit", unix_now() - 1, None);
    let forged = mint("other", unix_now() + 600, None);
    for path in ["/poll?topic=a&wait=10", "/sse?topic=a"] {
        let get = |tok: Option<String>| {
            let mut r = http().get(s.url(path));
            if let Some(t) = tok {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let res = get(None).await.unwrap();
        assert_eq!(res.status(), 401, "{path} without a token");
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "token_invalid");
        let res = get(Some(expired.clone())).await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "token_expired");
        let res = get(Some(forged.clone())).await.unwrap();
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "token_invalid");
        let res = get(Some(fresh.clone())).await.unwrap();
        assert_eq!(res.status(), 200, "{path} with a fresh token");
    }
    // The query parameter works too.
    let (st, _) = poll(&s, &format!("topic=a&wait=10&token={fresh}")).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_token_limited_to_other_topics_is_forbidden() {
    let s = Server::start(&["--token-secret", "sekrit"]);
    let tok = mint("sekrit", unix_now() + 600, Some(&["mine"]));
    let (st, v) = poll(&s, &format!("topic=theirs&wait=10&token={tok}")).await;
    assert_eq!(st, 403);
    assert_eq!(v["error"], "forbidden");
    let (st, _) = poll(&s, &format!("topic=mine&wait=10&token={tok}")).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn websocket_auth_failures_close_with_4401_and_4402() {
    let s = Server::start(&["--token-secret", "sekrit"]);
    let expired = mint("sekrit", unix_now() - 1, None);
    for (q, code, err) in [
        ("topic=a".to_string(), 4401, "token_invalid"),
        ("topic=a&token=garbage".to_string(), 4401, "token_invalid"),
        (format!("topic=a&token={expired}"), 4402, "token_expired"),
    ] {
        let mut ws = ws_connect(&s.ws_url(&q)).await;
        match ws_next(&mut ws).await {
            Frame::One(v) => assert_eq!(v["code"], err, "{q}"),
            other => panic!("expected an error frame, got {other:?}"),
        }
        match ws_next(&mut ws).await {
            Frame::Closed(c, reason) => {
                assert_eq!(c, Some(code), "{q}");
                assert_eq!(reason, err);
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }
    let fresh = mint("sekrit", unix_now() + 600, None);
    let mut ws = ws_connect(&s.ws_url(&format!("topic=a&token={fresh}"))).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
}

#[tokio::test]
async fn static_tokens_from_flags_and_files_are_accepted() {
    let dir = TempDir::new("tokens");
    let file = dir.0.join("tokens.txt");
    std::fs::write(&file, "# comment\nfile-token\n").unwrap();
    let s = Server::start(&[
        "--token",
        "flag-token",
        "--tokens-file",
        file.to_str().unwrap(),
    ]);
    for t in ["flag-token", "file-token"] {
        let (st, _) = poll(&s, &format!("topic=a&wait=10&token={t}")).await;
        assert_eq!(st, 200, "{t}");
    }
    let (st, v) = poll(&s, "topic=a&wait=10&token=nope").await;
    assert_eq!(
        (st.as_u16(), v["error"].as_str()),
        (401, Some("token_invalid"))
    );
}

#[tokio::test]
async fn send_needs_a_token_when_subscribing_does() {
    let s = Server::start(&["--token-secret", "sekrit"]);
    let res = http()
        .post(s.url("/send?topic=a"))
        .header("Idempotency-Key", "1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn connections_per_ip_are_capped_with_429_and_retry_after() {
    let s = Server::start(&["--conns-per-ip", "3"]);
    let mut open = vec![];
    for _ in 0..3 {
        open.push(Sse::open(&s.url("/sse?topic=c"), None).await);
    }
    let res = http().get(s.url("/sse?topic=c")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "rate_limited");
    let mut ws = ws_connect(&s.ws_url("topic=c")).await;
    let _ = ws_next(&mut ws).await; // the error frame
    assert!(matches!(
        ws_next(&mut ws).await,
        Frame::Closed(Some(4429), _)
    ));
    // Closing one frees its slot.
    drop(open.pop());
    let mut admitted = false;
    for _ in 0..100 {
        let res = http()
            .get(s.url("/poll?topic=c&wait=10"))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted, "a freed slot must admit a new connection");
}

#[tokio::test]
async fn request_rate_is_limited_with_429_and_retry_after() {
    let s = Server::start(&["--rate-per-ip", "5"]);
    let mut limited = None;
    for i in 0..40 {
        let res = http()
            .get(s.url("/poll?topic=r&wait=0"))
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            limited = Some((
                i,
                res.headers()["retry-after"].to_str().unwrap().to_string(),
            ));
            break;
        }
    }
    let (i, retry) = limited.expect("40 quick requests at 5/s must be limited");
    assert!(
        i >= 10,
        "the burst (2 s worth) is allowed first, limited at {i}"
    );
    assert!(retry.parse::<u64>().unwrap() >= 1);
    let text = http()
        .get(format!("http://127.0.0.1:{}/metrics", s.port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("holdfast_rejected_total{reason=\"rate_limited\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn the_subscriber_cap_answers_503_with_retry_after() {
    let s = Server::start(&["--max-subscribers", "1"]);
    let _first = Sse::open(&s.url("/sse?topic=m"), None).await;
    let res = http().get(s.url("/sse?topic=m")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let mut ws = ws_connect(&s.ws_url("topic=m")).await;
    let _ = ws_next(&mut ws).await;
    assert!(matches!(
        ws_next(&mut ws).await,
        Frame::Closed(Some(1013), _)
    ));
}

#[tokio::test]
async fn publishing_without_a_key_is_open_on_loopback() {
    let s = Server::start(&[]);
    let ids = publish_n(&s, "open", 0, 1).await;
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn websocket_sends_over_the_rate_are_refused_unacknowledged_and_not_applied() {
    let s = Server::start(&["--rate-per-ip", "1"]);
    let mut ws = ws_connect(&s.ws_url("topic=flood")).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    for i in 0..6 {
        ws_send(
            &mut ws,
            serde_json::json!({"type":"send","id": format!("m{i}"),"data": i}),
        )
        .await;
    }
    let (mut acks, mut refused, mut applied) = (0, 0, 0);
    while acks + refused < 6 {
        let items = match ws_next(&mut ws).await {
            Frame::One(v) => vec![v],
            Frame::Batch(a) => a,
            other => panic!("{other:?}"),
        };
        for v in items {
            match v["type"].as_str() {
                Some("ack") => acks += 1,
                Some("error") => {
                    assert_eq!(v["code"], "rate_limited");
                    assert!(v["retryAfter"].as_u64().unwrap() >= 1);
                    refused += 1;
                }
                Some("message") => applied += 1,
                _ => {}
            }
        }
    }
    assert!(refused >= 1, "a 1/s budget cannot take 6 sends at once");
    // Every acknowledged send is applied once; refused ones are not.
    while applied < acks {
        match ws_next(&mut ws).await {
            Frame::One(v) if v["type"] == "message" => applied += 1,
            Frame::Batch(a) => applied += a.len(),
            _ => {}
        }
    }
    assert_eq!(applied, acks);
}

#[test]
fn nonsensical_flags_are_refused_at_startup_with_a_message() {
    for args in [
        &["--heartbeat-ms", "0"][..],
        &["--heartbeat-ms", "18446744073709551615"][..],
        &["--history-count", "0"][..],
        &["--max-frame-bytes", "10"][..],
        &["--port", "70000"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast-server"))
            .args(["--port", "0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a listening line");
    }
}
