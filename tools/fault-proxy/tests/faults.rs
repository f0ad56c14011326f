//! Each fault, observed from the outside: a real client and the test upstream on 127.0.0.1,
//! the proxy binary in between, faults switched through the control API.

mod common;

use common::*;
use futures_util::SinkExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long "nothing happens" is watched for. Only ever used to show an absence, so a slow
/// machine can make such a test pass vacuously but never fail falsely.
const QUIET: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_passes_through_an_empty_config_and_is_counted() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let mut ws = ws_connect(&proxy.ws_url("/ws")).await;
    echo(&mut ws, "one").await;
    echo(&mut ws, "two").await;
    let s = proxy.stats().await;
    assert_eq!(s["accepted"], 1, "{s}");
    assert_eq!(s["open"], 1, "{s}");
    assert_eq!(s["upgradeRequests"], 1, "{s}");
    assert_eq!(s["upgrades"], 1, "{s}");
    assert!(
        s["bytesToUpstream"].as_u64().unwrap() > 0 && s["bytesToClient"].as_u64().unwrap() > 0,
        "{s}"
    );
    ws.close(None).await.expect("close");
    drop(ws);
    proxy
        .wait_stats("the connection closed", |s| s["open"] == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_request_is_forwarded_with_connection_close_both_ways() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let res = http(proxy.addr, &get("/hello?x=1"))
        .await
        .expect("a response");
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"hello");
    assert!(res.has_header("Connection: close"), "{}", res.head);
    assert!(
        !res.head.to_ascii_lowercase().contains("keep-alive"),
        "{}",
        res.head
    );
    let head = up.heads().pop().expect("the upstream saw the request");
    assert!(head.starts_with("get /hello?x=1 http/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\nconnection: close\r\n") && !head.contains("keep-alive"),
        "{head}"
    );

    let body = r#"{"a":1}"#;
    let post = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let res = http(proxy.addr, post.as_bytes()).await.expect("a response");
    assert_eq!((res.status, res.body.as_slice()), (200, body.as_bytes()));
    assert_eq!(proxy.stats().await["requests"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_stream_passes_each_chunk_as_it_comes_without_buffering() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let feed = up.feed();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get("/feed")).await.unwrap();
    feed.send(b"data: first\n\n".to_vec()).unwrap();
    let got = read_until_contains(&mut s, b"data: first").await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    feed.send(b"data: second\n\n".to_vec()).unwrap();
    read_until_contains(&mut s, b"data: second").await;
    drop(feed);
    let rest = read_at_least(&mut s, usize::MAX).await;
    assert!(
        rest.ends_with(b"0\r\n\r\n"),
        "the stream ends with the last chunk: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

async fn read_until_contains(s: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while !out.windows(needle.len()).any(|w| w == needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {:?} in {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&out)
        );
        out.extend(read_for(s, Duration::from_millis(50)).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_upgrade_answers_the_websocket_client_with_the_configured_status() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    for status in [404u16, 400] {
        proxy.set(&format!(r#"{{"refuseUpgrade":{status}}}"#)).await;
        match tokio_tungstenite::connect_async(proxy.ws_url("/realtime/ws")).await {
            Err(tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), status);
                let body =
                    String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).to_string();
                assert!(body.contains("refused the WebSocket upgrade"), "{body}");
            }
            other => panic!("expected HTTP {status}, got {other:?}"),
        }
    }
    assert!(
        up.heads().is_empty(),
        "a refused upgrade never reaches the upstream"
    );
    let s = proxy.stats().await;
    assert_eq!(
        (
            s["upgradeRequests"].as_u64(),
            s["upgradesRefused"].as_u64(),
            s["upgrades"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{s}"
    );
    // Plain requests are not upgrades and pass.
    assert_eq!(http(proxy.addr, &get("/hello")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paths_filter_refuses_the_upgrade_only_under_matching_prefixes() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy
        .set(r#"{"refuseUpgrade":404,"paths":["/realtime/ws"]}"#)
        .await;
    let refused = tokio_tungstenite::connect_async(proxy.ws_url("/realtime/ws?topic=a")).await;
    assert!(
        matches!(refused, Err(tungstenite::Error::Http(ref r)) if r.status() == 404),
        "{refused:?}"
    );
    let mut ws = ws_connect(&proxy.ws_url("/ws")).await;
    echo(&mut ws, "still works elsewhere").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_after_upgrade_completes_the_handshake_then_forwards_nothing_and_stays_open() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy.set(r#"{"silenceAfterUpgrade":true}"#).await;
    let mut ws = ws_connect(&proxy.ws_url("/ws")).await;
    assert_eq!(up.heads().len(), 1, "the upgrade reached the upstream");
    ws.send(Message::text("anyone?"))
        .await
        .expect("the socket accepts writes");
    assert!(
        next_message(&mut ws, QUIET).await.is_none(),
        "no echo comes back"
    );
    assert!(
        up.received().is_empty(),
        "nothing reached the upstream after the 101"
    );
    let s = proxy
        .wait_stats("the message dropped", |s| {
            s["bytesDropped"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(
        (
            s["upgrades"].as_u64(),
            s["upgradesSilenced"].as_u64(),
            s["open"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{s}"
    );
    // Still open: only a cut ends it.
    assert_eq!(proxy.cut().await["open"], 1);
    assert!(closes(&mut ws).await);
    proxy
        .wait_stats("the manual cut", |s| {
            s["cuts"]["manual"] == 1 && s["open"] == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_upgrade_removes_the_upgrade_headers_so_the_upstream_refuses_the_websocket() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy.set(r#"{"stripUpgrade":true}"#).await;
    match tokio_tungstenite::connect_async(proxy.ws_url("/realtime/ws")).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status().as_u16(), 400),
        other => panic!("expected the upstream's 400, got {other:?}"),
    }
    let head = up.heads().pop().expect("the request reached the upstream");
    assert!(!head.contains("\r\nupgrade:"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-key:"),
        "other headers pass: {head}"
    );
    let s = proxy.stats().await;
    assert_eq!(
        (s["upgradesStripped"].as_u64(), s["upgrades"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_bytes_holds_the_head_and_body_until_n_bytes_then_flushes_and_holds_again() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy.set(r#"{"bufferBytes":1000,"paths":["/feed"]}"#).await;
    let feed = up.feed();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get("/feed")).await.unwrap();
    feed.send(vec![b'a'; 400]).unwrap();
    assert!(
        read_for(&mut s, QUIET).await.is_empty(),
        "not even the head leaves before 1000 body bytes"
    );
    feed.send(vec![b'b'; 700]).unwrap();
    let got = read_until_contains(&mut s, &[b'b'; 700]).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "head and body arrive together"
    );
    assert!(got.windows(400).any(|w| w == [b'a'; 400]));
    // Holding starts again after a flush.
    feed.send(b"data: small\n\n".to_vec()).unwrap();
    assert!(
        read_for(&mut s, QUIET).await.is_empty(),
        "a small event is held again"
    );
    drop(feed);
    let rest = read_at_least(&mut s, usize::MAX).await;
    assert!(
        rest.windows(11).any(|w| w == b"data: small") && rest.ends_with(b"0\r\n\r\n"),
        "the end of the upstream flushes"
    );
    assert_eq!(proxy.stats().await["responsesBuffered"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_bytes_delivers_a_short_response_whole_when_the_upstream_ends_and_spares_other_paths(
) {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy
        .set(r#"{"rules":[{"paths":["/hello"],"bufferBytes":1048576}]}"#)
        .await;
    let res = http(proxy.addr, &get("/hello")).await.expect("a response");
    assert_eq!((res.status, res.body.as_slice()), (200, &b"hello"[..]));

    let feed = up.feed();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get("/feed")).await.unwrap();
    feed.send(b"data: live\n\n".to_vec()).unwrap();
    read_until_contains(&mut s, b"data: live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cut_closes_an_idle_connection_but_never_one_with_steady_traffic() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let mut busy = ws_connect(&proxy.ws_url("/ws")).await;
    let mut idle = ws_connect(&proxy.ws_url("/ws")).await;
    // Switched on while both are open: open connections obey it too.
    proxy.set(r#"{"idleCutMs":500}"#).await;
    let opened = tokio::time::Instant::now();
    let mut rounds = 0;
    // Traffic every 50 ms for at least four idle periods.
    while opened.elapsed() < Duration::from_millis(2000) {
        echo(&mut busy, &format!("tick {rounds}")).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closes(&mut idle).await, "the idle connection was cut");
    echo(&mut busy, "still alive").await;
    let s = proxy.stats().await;
    assert_eq!(
        (s["cuts"]["idle"].as_u64(), s["open"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert!(rounds >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cut_also_ends_a_quiet_http_stream() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy.set(r#"{"idleCutMs":300}"#).await;
    let feed = up.feed();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get("/feed")).await.unwrap();
    feed.send(b"data: one\n\n".to_vec()).unwrap();
    read_until_contains(&mut s, b"data: one").await;
    let rest = read_at_least(&mut s, usize::MAX).await;
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "cut, not ended by the upstream"
    );
    proxy
        .wait_stats("the idle cut", |s| s["cuts"]["idle"] == 1)
        .await;
    drop(feed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_every_closes_each_connection_after_t_even_while_traffic_flows() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy.set(r#"{"cutEveryMs":400}"#).await;
    for _ in 0..2 {
        let start = tokio::time::Instant::now();
        let mut ws = ws_connect(&proxy.ws_url("/ws")).await;
        let deadline = start + BOUND;
        let mut cut = false;
        while tokio::time::Instant::now() < deadline {
            if ws.send(Message::text("x")).await.is_err() {
                cut = true;
                break;
            }
            match tokio::time::timeout(
                Duration::from_millis(100),
                futures_util::StreamExt::next(&mut ws),
            )
            .await
            {
                Ok(Some(Ok(m))) if m.is_text() => {}
                Ok(_) => {
                    cut = true;
                    break;
                }
                Err(_) => {}
            }
        }
        assert!(cut, "the connection was cut within the bound");
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "not before T"
        );
    }
    proxy
        .wait_stats("two scheduled cuts", |s| s["cuts"]["every"] == 2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_every_chunk_each_way() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let mut ws = ws_connect(&proxy.ws_url("/ws")).await;
    proxy.set(r#"{"latencyMs":150}"#).await;
    let start = tokio::time::Instant::now();
    echo(&mut ws, "slow").await;
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "150 ms out and 150 ms back"
    );
    proxy.set("{}").await;
    echo(&mut ws, "and the latency can be switched off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_connections_closes_new_connections_until_switched_off() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let mut existing = ws_connect(&proxy.ws_url("/ws")).await;
    proxy.set(r#"{"refuseConnections":true}"#).await;
    for _ in 0..2 {
        let res = http(proxy.addr, &get("/hello")).await;
        assert!(res.is_err(), "no response while refusing: {res:?}");
    }
    assert!(tokio_tungstenite::connect_async(proxy.ws_url("/ws"))
        .await
        .is_err());
    echo(&mut existing, "open connections are left alone").await;
    let s = proxy.stats().await;
    assert_eq!(
        (s["refused"].as_u64(), s["accepted"].as_u64()),
        (Some(3), Some(4)),
        "{s}"
    );
    assert!(
        up.heads().len() == 1,
        "nothing refused reached the upstream"
    );

    // A socket opened before the refusal whose request comes during it is refused too.
    proxy.set("{}").await;
    let mut early = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.set(r#"{"refuseConnections":true}"#).await;
    early.write_all(&get("/hello")).await.unwrap();
    assert!(
        read_at_least(&mut early, usize::MAX).await.is_empty(),
        "no response"
    );
    proxy
        .wait_stats("the early socket refused", |s| s["refused"] == 4)
        .await;

    proxy.set(r#"{"refuseConnections":false}"#).await;
    assert_eq!(
        http(proxy.addr, &get("/hello"))
            .await
            .expect("served again")
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_cut_closes_every_open_connection_and_later_ones_still_work() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let mut a = ws_connect(&proxy.ws_url("/ws")).await;
    let mut b = ws_connect(&proxy.ws_url("/ws")).await;
    echo(&mut a, "a").await;
    assert_eq!(proxy.cut().await["open"], 2);
    assert!(closes(&mut a).await && closes(&mut b).await);
    proxy
        .wait_stats("two manual cuts", |s| {
            s["cuts"]["manual"] == 2 && s["open"] == 0
        })
        .await;
    let mut c = ws_connect(&proxy.ws_url("/ws")).await;
    echo(&mut c, "after the cut").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_combine_latency_with_buffering_on_one_path() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy
        .set(r#"{"latencyMs":100,"bufferBytes":64,"paths":["/feed"]}"#)
        .await;
    let feed = up.feed();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let start = tokio::time::Instant::now();
    s.write_all(&get("/feed")).await.unwrap();
    feed.send(vec![b'z'; 100]).unwrap();
    read_until_contains(&mut s, &[b'z'; 100]).await;
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "both directions delayed"
    );
    let c = proxy.config(r#"{}"#).await;
    assert_eq!(c.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_headers_false_sends_the_head_at_once_and_holds_only_the_body() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy
        .set(r#"{"bufferBytes":500,"bufferHeaders":false}"#)
        .await;
    let feed = up.feed();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&get("/feed")).await.unwrap();
    feed.send(b"data: held\n\n".to_vec()).unwrap();
    let head = read_until_contains(&mut s, b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let more = read_for(&mut s, QUIET).await;
    assert!(
        !head
            .windows(10)
            .chain(more.windows(10))
            .any(|w| w == b"data: held"),
        "the body is held"
    );
    feed.send(vec![b'c'; 500]).unwrap();
    read_until_contains(&mut s, b"data: held").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_faults_with_a_paths_filter_spare_other_paths() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy
        .set(r#"{"idleCutMs":200,"cutEveryMs":300,"paths":["/realtime/sse"]}"#)
        .await;
    let mut ws = ws_connect(&proxy.ws_url("/ws")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    echo(&mut ws, "neither idle-cut nor cut on another path").await;
    let s = proxy.stats().await;
    assert_eq!(
        (s["cuts"]["idle"].as_u64(), s["cuts"]["every"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_status_answers_matching_requests_with_a_typed_error_and_retry_after() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy
        .set(r#"{"respondStatus":429,"retryAfterSecs":2,"paths":["/feed","/ws"]}"#)
        .await;
    let res = http(proxy.addr, &get("/feed?topic=a"))
        .await
        .expect("an answer");
    assert_eq!(res.status, 429);
    assert!(res.has_header("Retry-After: 2"), "{}", res.head);
    let body: serde_json::Value = serde_json::from_slice(&res.body).expect("JSON");
    assert_eq!(body["error"], "rate_limited");
    match tokio_tungstenite::connect_async(proxy.ws_url("/ws")).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 429),
        other => panic!("expected a 429, got {other:?}"),
    }
    assert_eq!(http(proxy.addr, &get("/hello")).await.unwrap().status, 200);
    assert_eq!(up.heads().len(), 1, "only /hello reached the upstream");
    assert_eq!(proxy.stats().await["statusesInjected"], 2);
}
