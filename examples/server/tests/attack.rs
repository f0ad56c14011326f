//! The server probed as an attacker would (issue 15), over real sockets on 127.0.0.1: each
//! test is one probe and the number it must hold. Loops are bounded; every wait is bounded
//! by the harness step, so a regression fails instead of hanging.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A raw connection from `from` (any 127.x address) that sends `request` and then reads
/// nothing: its receive buffer is made small so the server's writes block soon.
async fn raw(s: &Server, from: &str, request: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", s.port).parse().unwrap();
    let mut tcp = tokio::time::timeout(STEP, sock.connect(addr))
        .await
        .expect("connect timed out")
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

fn get(path: &str, headers: &str) -> String {
    format!("GET /realtime{path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n")
}

/// The status of the response at the head of `tcp`.
async fn status_of(tcp: &mut TcpStream) -> u16 {
    let mut buf = [0u8; 12];
    tokio::time::timeout(STEP, tcp.read_exact(&mut buf))
        .await
        .expect("no status line within the step")
        .unwrap();
    std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap()
}

/// Reads until the server closes the connection (EOF or reset); false if it is still
/// open after the step.
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(STEP, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Publishes `n` events of about `size` bytes each, `per` per request.
async fn publish_sized(s: &Server, topic: &str, n: usize, size: usize, per: usize) {
    let pad = "x".repeat(size);
    let mut sent = 0;
    while sent < n {
        let k = per.min(n - sent);
        let events: Vec<(&str, Value)> = (0..k)
            .map(|i| ("t", json!({"n": sent + i, "pad": pad})))
            .collect();
        publish(s, topic, &events).await;
        sent += k;
    }
}

#[tokio::test]
async fn ten_non_reading_readers_after_100k_events_stay_under_the_budget() {
    // 100,000 events of 1 KB are ~120 MB held: the budget's history half (64 MB) must trim.
    const BUDGET: u64 = 128 << 20;
    let s = Server::start(&[
        "--memory-budget",
        "128M",
        "--history-count",
        "100000",
        "--rate-per-ip",
        "0",
    ]);
    // Two topics, each under its own 64 MB cap: only the process-wide share trims.
    publish_sized(&s, "h", 50_000, 1000, 500).await;
    publish_sized(&s, "g", 50_000, 1000, 500).await;
    let history = s.metric("holdfast_history_bytes").await as u64;
    assert!(
        history <= BUDGET / 2,
        "history {history} over half the budget"
    );
    assert!(s.metric("holdfast_budget_trimmed_bytes_total").await > 0.0);
    let published = s.rss();
    let mut readers = Vec::new();
    for topic in ["h", "g"].repeat(5) {
        let path = format!("/sse?topic={topic}&since=0");
        readers.push(raw(&s, "127.0.0.1", &get(&path, "")).await);
    }
    // The readers' responses are under way: the server has written what their sockets take.
    for _ in 0..50 {
        if s.metric("holdfast_connections{transport=\"sse\"}").await == 10.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(s.rss());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "RSS {} MB after publishing, {} MB at most with the readers; history {} MB",
        published >> 20,
        peak >> 20,
        history >> 20
    );
    assert!(
        peak < BUDGET,
        "RSS {peak} with ten stalled readers, budget {BUDGET}"
    );
    // The oldest events (all of them in the first topic) were trimmed for the budget: a
    // reader from the start is told.
    let (_, v) = poll(&s, "topic=h&since=1-1&wait=0").await;
    assert_eq!(v["events"][0]["type"], "reset", "{}", v["events"][0]);
    drop(readers);
}

#[tokio::test]
async fn poll_bodies_and_sse_chunks_are_cut_by_bytes() {
    let s = Server::start(&["--rate-per-ip", "0"]);
    publish_sized(&s, "b", 8, 200_000, 1).await;
    let (_, v) = poll(&s, "topic=b&since=0&wait=0").await;
    let n = v["events"].as_array().unwrap().len();
    assert!((1..8).contains(&n), "one body carried {n} events of 200 KB");
    // The rest follows from the cursor, nothing skipped.
    let mut seen = n;
    let mut cursor = v["cursor"].as_str().unwrap().to_string();
    for _ in 0..8 {
        if seen == 8 {
            break;
        }
        let (_, v) = poll(&s, &format!("topic=b&since={cursor}&wait=0")).await;
        seen += v["events"].as_array().unwrap().len();
        cursor = v["cursor"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, 8);
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_disconnected_and_only_then_frees_its_slot() {
    let s = Server::start(&[
        "--write-timeout-ms",
        "300",
        "--conns-per-ip",
        "2",
        "--rate-per-ip",
        "0",
    ]);
    publish_sized(&s, "w", 200, 50_000, 10).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = raw(&s, "127.0.0.1", &get("/sse?topic=w&since=0", "")).await;
        assert_eq!(status_of(&mut tcp).await, 200);
        stalled.push(tcp);
    }
    // Both slots are held while the writes are blocked.
    let mut third = raw(&s, "127.0.0.1", &get("/sse?topic=w", "")).await;
    assert_eq!(status_of(&mut third).await, 429);
    // The write timeout closes them: the counter says so, the sockets end, the slots free.
    let mut timeouts = 0.0;
    for _ in 0..100 {
        timeouts = s.metric("holdfast_write_timeouts_total").await;
        if timeouts >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(timeouts >= 2.0, "write timeouts: {timeouts}");
    for tcp in &mut stalled {
        assert!(
            closed_by_server(tcp).await,
            "a stalled reader's socket stayed open"
        );
    }
    assert_eq!(
        s.metric("holdfast_connections{transport=\"sse\"}").await,
        0.0
    );
    let mut again = raw(&s, "127.0.0.1", &get("/sse?topic=w", "")).await;
    assert_eq!(status_of(&mut again).await, 200);
}

#[tokio::test]
async fn slowloris_silent_and_half_sent_sockets_are_closed() {
    let s = Server::start(&["--header-timeout-ms", "300", "--body-timeout-ms", "300"]);
    let mut slow = raw(&s, "127.0.0.1", "GET /health HTTP/1.1\r\n").await;
    let mut silent = raw(&s, "127.0.0.1", "").await;
    let mut half = raw(
        &s,
        "127.0.0.1",
        "POST /realtime/send?topic=a HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Idempotency-Key: k\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    // One byte at a time, as slowloris does, until the server hangs up (bounded).
    let mut dripped = 0;
    let dripping = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            dripped += 1;
            if dripped > 200 {
                return;
            }
        }
    };
    dripping.await;
    assert!(dripped < 200, "the slowloris socket was still taking bytes");
    assert!(closed_by_server(&mut silent).await, "silent socket open");
    assert_eq!(status_of(&mut half).await, 408);
    assert!(closed_by_server(&mut half).await, "half-sent body open");
    assert!(s.metric("holdfast_header_timeouts_total").await >= 2.0);
}

#[tokio::test]
async fn tcp_connections_per_address_are_capped_at_accept() {
    let s = Server::start(&["--sockets-per-ip", "10"]);
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(raw(&s, "127.0.0.1", "").await);
    }
    let mut over = raw(&s, "127.0.0.1", "").await;
    assert!(
        closed_by_server(&mut over).await,
        "the 11th socket was kept"
    );
    // Another address is not affected, and a freed place is reusable.
    let mut other = raw(&s, "127.0.0.3", &get("/health", "")).await;
    assert_eq!(status_of(&mut other).await, 200);
    drop(idle.pop());
    let mut next = None;
    for _ in 0..50 {
        let mut tcp = raw(&s, "127.0.0.1", "GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let mut buf = [0u8; 12];
        if let Ok(Ok(_)) = tokio::time::timeout(STEP, tcp.read_exact(&mut buf)).await {
            next = Some(buf);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(&next.expect("no place came free")[9..12], b"200");
    assert!(
        s.metric("holdfast_rejected_total{reason=\"sockets_per_ip\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn sigterm_exits_with_a_half_sent_request_and_a_non_reading_reader() {
    let mut s = Server::start(&["--shutdown-grace-ms", "300", "--rate-per-ip", "0"]);
    publish_sized(&s, "d", 200, 50_000, 10).await;
    let _half = raw(&s, "127.0.0.1", "GET /health HTTP/1.1\r\nHost: t\r\n").await;
    let mut stalled = raw(&s, "127.0.0.1", &get("/sse?topic=d&since=0", "")).await;
    assert_eq!(status_of(&mut stalled).await, 200);
    let mut ws = ws_connect(&s.ws_url("topic=d")).await;
    let _ = ws_next(&mut ws).await;
    let started = std::time::Instant::now();
    s.terminate();
    let code = s.wait_exit();
    eprintln!("exited after SIGTERM in {:?}", started.elapsed());
    assert_eq!(code, Some(0), "still running with stuck clients");
}

#[tokio::test]
async fn forwarded_for_written_by_the_client_does_not_pass_the_per_address_cap() {
    // 127.0.0.2 plays the proxy; the others are clients.
    let s = Server::start(&["--trust-proxy", "127.0.0.2", "--conns-per-ip", "2"]);
    let opened = |from: &'static str, xff: String| {
        let s = &s;
        async move {
            let mut tcp = raw(
                s,
                from,
                &get("/sse?topic=x", &format!("X-Forwarded-For: {xff}\r\n")),
            )
            .await;
            (status_of(&mut tcp).await, tcp)
        }
    };
    let mut held = Vec::new();
    let mut codes = Vec::new();
    // Directly from an untrusted peer, random headers change nothing.
    for i in 0..5 {
        let (code, tcp) = opened("127.0.0.1", format!("10.9.{i}.1")).await;
        codes.push(code);
        held.push(tcp);
    }
    assert_eq!(codes, [200, 200, 429, 429, 429]);
    // Through the proxy, which appends the address it saw: what the client wrote on the
    // left is ignored, the proxy's entry counts.
    codes.clear();
    for i in 0..5 {
        let (code, tcp) = opened("127.0.0.2", format!("10.9.{i}.1, 127.0.0.9")).await;
        codes.push(code);
        held.push(tcp);
    }
    assert_eq!(codes, [200, 200, 429, 429, 429]);
    // Different clients behind the proxy have their own places.
    let (code, tcp) = opened("127.0.0.2", "127.0.0.10".into()).await;
    assert_eq!(code, 200);
    held.push(tcp);
}

#[tokio::test]
async fn one_address_cannot_create_topics_without_limit() {
    let s = Server::start(&["--rate-per-ip", "10000"]);
    let mut created = 0;
    let mut throttled = 0;
    for i in 0..300 {
        let mut tcp = raw(
            &s,
            "127.0.0.1",
            &get(
                &format!("/poll?topic=t{i}&wait=0"),
                &format!("X-Forwarded-For: 10.0.{}.{}\r\n", i / 250, i % 250),
            ),
        )
        .await;
        match status_of(&mut tcp).await {
            200 => created += 1,
            429 => throttled += 1,
            c => panic!("status {c}"),
        }
    }
    assert!(created >= 100, "{created} created");
    assert!(
        throttled > 0,
        "300 new topics from one address, none refused"
    );
}

#[tokio::test]
async fn wrong_credentials_are_throttled_before_they_are_checked() {
    let s = Server::start(&["--token-secret", "s3cret", "--publish-key", "k3y"]);
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..100 {
        let (code, _) = poll(&s, &format!("topic=a&wait=0&token=guess{i}")).await;
        *codes.entry(code.as_u16()).or_insert(0) += 1;
    }
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.get(&401).copied().unwrap_or(0) < 50, "{codes:?}");
    // Now even the right token is not looked at from this address.
    let good = holdfast_server::auth::mint("s3cret", 4_000_000_000, None);
    let (code, _) = poll(&s, &format!("topic=a&wait=0&token={good}")).await;
    assert_eq!(code, 429);
    // Publish keys likewise.
    let mut key_codes = Vec::new();
    for _ in 0..20 {
        let res = http()
            .post(s.url("/publish?topic=a"))
            .header("X-Api-Key", "guess")
            .json(&json!({"type": "t"}))
            .send()
            .await
            .unwrap();
        key_codes.push(res.status().as_u16());
    }
    assert!(key_codes.contains(&429), "{key_codes:?}");
}

#[tokio::test]
async fn publishing_without_a_key_through_a_proxy_is_refused() {
    let s = Server::start(&["--trust-proxy"]);
    let res = http()
        .post(s.url("/publish?topic=p"))
        .header("X-Forwarded-For", "127.0.0.1")
        .json(&json!({"type": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "forbidden");
    let direct = http()
        .post(s.url("/publish?topic=p"))
        .json(&json!({"type": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
}

#[tokio::test]
async fn cross_origin_requests_cannot_drive_the_server() {
    let s = Server::start(&["--cors-origin", "https://app.example"]);
    let bad = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        s.ws_url("topic=o"),
    )
    .map(|mut r| {
        r.headers_mut()
            .insert("Origin", "https://evil.example".parse().unwrap());
        r
    })
    .unwrap();
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("a foreign origin was upgraded: {:?}", other.map(|_| ())),
    }
    let ok = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        s.ws_url("topic=o"),
    )
    .map(|mut r| {
        r.headers_mut()
            .insert("Origin", "https://app.example".parse().unwrap());
        r
    })
    .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ok).await.unwrap();
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    // A form post (text/plain needs no preflight) is refused before anything is applied.
    for path in ["/send?topic=o", "/publish?topic=o"] {
        let res = http()
            .post(s.url(path))
            .header("Content-Type", "text/plain")
            .header("Idempotency-Key", "f")
            .body(r#"{"type":"t"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415, "{path}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_request");
    }
}

#[tokio::test]
async fn every_error_body_is_json_and_bad_utf8_closes_with_1007() {
    let s = Server::start(&[]);
    for (method, path) in [
        ("GET", "/realtime/poll?topic=a&topic=b"),
        ("GET", "/realtime/nope"),
        ("DELETE", "/realtime/poll"),
        ("GET", "/realtime/sse/a%FF"),
    ] {
        let res = http()
            .request(
                method.parse().unwrap(),
                format!("http://127.0.0.1:{}{path}", s.port),
            )
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        let v: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    let mut ws = ws_connect(&s.ws_url("topic=u")).await;
    let _ = ws_next(&mut ws).await;
    use tokio_tungstenite::tungstenite::protocol::frame::{coding, Frame as RawFrame};
    let bad = RawFrame::message(
        vec![0xff, 0xfe, 0x41],
        coding::OpCode::Data(coding::Data::Text),
        true,
    );
    ws.send(tokio_tungstenite::tungstenite::Message::Frame(bad))
        .await
        .unwrap();
    loop {
        match ws_next(&mut ws).await {
            Frame::Closed(code, _) => {
                assert_eq!(code, Some(1007));
                break;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn the_header_timeout_does_not_cut_streams_or_held_polls() {
    let s = Server::start(&["--header-timeout-ms", "200", "--heartbeat-ms", "600"]);
    let mut sse = Sse::open(&s.url("/sse?topic=k"), None).await;
    assert_eq!(sse.next().await.unwrap().event, "hello");
    // Three heartbeats: the stream outlived the header timeout many times over.
    for _ in 0..3 {
        assert_eq!(sse.next_comment().await.as_deref(), Some("heartbeat"));
    }
    let (status, v) = poll(&s, "topic=k&wait=1000").await;
    assert_eq!(status, 200);
    assert!(v["events"].as_array().unwrap().is_empty());
}
