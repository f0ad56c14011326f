//! Bad input, bad config, a dead upstream, the CLI and shutdown: the proxy answers with typed
//! errors and keeps serving.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_requests_get_typed_errors_and_the_proxy_keeps_serving() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    let res = http(proxy.addr, b"\x00\x01\x02\xff not http at all\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(res.status, 400);
    assert!(String::from_utf8_lossy(&res.body).contains("\"error\":\"bad_request\""));

    let big = format!(
        "GET /hello HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let res = http(proxy.addr, big.as_bytes()).await.expect("an answer");
    assert_eq!(res.status, 431);

    let many: String = (0..500).map(|i| format!("X-{i}: v\r\n")).collect();
    let res = http(
        proxy.addr,
        format!("GET /hello HTTP/1.1\r\n{many}\r\n").as_bytes(),
    )
    .await
    .expect("an answer");
    assert_eq!(res.status, 431);

    // A connection that closes halfway through its head, and one that never says anything.
    let mut half = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /hel")
        .await
        .unwrap();
    drop(half);
    drop(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());

    assert_eq!(
        http(proxy.addr, &get("/hello"))
            .await
            .expect("still serving")
            .status,
        200
    );
    let s = proxy
        .wait_stats("four bad requests", |s| s["badRequests"] == 4)
        .await;
    assert_eq!(s["requests"], 1, "{s}");
    assert!(
        up.heads()
            .iter()
            .all(|h| h.starts_with("get /hello http/1.1")),
        "no garbage was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_rejected_with_a_typed_error_and_the_active_one_stays() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(up.addr);
    proxy.set(r#"{"latencyMs":1}"#).await;
    for bad in [
        r#"{"bufferByte":10}"#,
        r#"{"refuseUpgrade":"404"}"#,
        "not json",
        r#"{"paths":["no-slash"],"latencyMs":5}"#,
    ] {
        let (status, body) = proxy.config(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"], "bad_config", "{bad}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, active) = control(proxy.addr, "GET", "/__fault/config", None).await;
    assert_eq!((status, active), (200, serde_json::json!({"latencyMs":1})));
    let (status, body) = control(proxy.addr, "GET", "/__fault/nothing", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = control(proxy.addr, "GET", "/__fault/cut", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(
        up.heads().is_empty(),
        "control requests are never forwarded"
    );
    assert_eq!(
        proxy.stats().await["accepted"],
        0,
        "control requests are not proxied traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gives_a_502_with_a_json_error() {
    let proxy = Proxy::start(closed_port().await);
    let res = http(proxy.addr, &get("/hello")).await.expect("an answer");
    assert_eq!(res.status, 502);
    assert!(String::from_utf8_lossy(&res.body).contains("\"error\":\"bad_gateway\""));
    match tokio_tungstenite::connect_async(proxy.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 502),
        other => panic!("expected a 502, got {other:?}"),
    }
    assert_eq!(proxy.stats().await["upstreamFailures"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_config_can_be_given_on_the_command_line() {
    let up = Upstream::start().await;
    let proxy = Proxy::start_with(&[
        "--upstream",
        &up.addr.to_string(),
        "--config",
        r#"{"refuseUpgrade":404}"#,
    ]);
    let res = tokio_tungstenite::connect_async(proxy.ws_url("/ws")).await;
    assert!(
        matches!(res, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 404),
        "{res:?}"
    );
}

#[test]
fn bad_arguments_exit_with_code_2_and_a_usage_message() {
    for args in [
        &[][..],
        &["--upstream"][..],
        &["--upstream", "127.0.0.1:1", "--bogus"][..],
        &["--upstream", "127.0.0.1:1", "--config", "{\"x\":1}"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast-fault-proxy"))
            .args(args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage:"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_open_connections_and_exits_with_success() {
    let up = Upstream::start().await;
    let mut proxy = Proxy::start(up.addr);
    let mut ws = ws_connect(&proxy.ws_url("/ws")).await;
    echo(&mut ws, "before").await;
    let killed = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert!(closes(&mut ws).await, "the open WebSocket is closed");
    let deadline = std::time::Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = proxy.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_mode_logs_one_line_per_connection_on_stderr() {
    use std::io::Read;
    let up = Upstream::start().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast-fault-proxy"))
        .args(["--upstream", &up.addr.to_string(), "--verbose"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .trim_start_matches("fault-proxy listening on http://")
        .parse()
        .unwrap();
    assert_eq!(http(addr, &get("/hello")).await.unwrap().status, 200);
    control(
        addr,
        "POST",
        "/__fault/config",
        Some(r#"{"refuseUpgrade":404}"#),
    )
    .await;
    assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .is_err());
    // Both connections are over once the answers were read; give the log lines a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = child.wait();
    assert!(stderr.contains("#1 GET /hello -> 200 []"), "{stderr}");
    assert!(
        stderr.contains("#2 GET /ws -> 404 [refuseUpgrade]"),
        "{stderr}"
    );
}
