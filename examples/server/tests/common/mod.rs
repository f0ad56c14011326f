//! Test harness: runs the real `holdfast-server` binary on a free 127.0.0.1 port (and a real
//! `redis-server` when asked), and speaks the three rungs over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single wait in a test: a hang fails, it does not block the suite.
pub const STEP: Duration = Duration::from_secs(10);

pub struct Server {
    child: Child,
    pub port: u16,
    pub base: String,
}

impl Server {
    /// Starts the server with `--port 0` and extra flags; waits for its startup line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast-server"))
            .args(["--port", "0", "--host", "127.0.0.1"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn holdfast-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read startup line");
        let port = line
            .trim()
            .strip_prefix("holdfast-server listening on http://127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
            .parse()
            .expect("port");
        Server {
            child,
            port,
            base: format!("http://127.0.0.1:{port}/realtime"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// One value of `GET /metrics` (a series without labels, or with them spelled out).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = http()
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/realtime/ws?{}", self.port, query)
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit; returns its status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..200 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real redis-server on a free loopback port, without persistence.
pub struct Redis {
    child: Child,
    pub url: String,
    bin: &'static str,
    port: u16,
    _dir: TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "holdfast-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts redis-server, or returns None when HOLDFAST_SKIP_REDIS=1. Without the binary the
/// test fails and names the package to install.
pub fn redis() -> Option<Redis> {
    if std::env::var("HOLDFAST_SKIP_REDIS").as_deref() == Ok("1") {
        eprintln!("HOLDFAST_SKIP_REDIS=1: skipping a Redis test");
        return None;
    }
    let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found: install it with `apt-get install -y redis-server` \
                 (or set HOLDFAST_SKIP_REDIS=1 to skip the Redis tests)"
            )
        });
    let dir = TempDir::new("redis");
    for _ in 0..5 {
        if let Some(child) = spawn_redis(bin, free_port(), &dir) {
            let port = child.1;
            return Some(Redis {
                child: child.0,
                url: format!("redis://127.0.0.1:{port}"),
                bin,
                port,
                _dir: dir,
            });
        }
    }
    panic!("redis-server did not start");
}

/// redis-server on `port` without persistence, once it answers as itself; `None` when it
/// exited (the port was taken meanwhile).
fn spawn_redis(bin: &'static str, port: u16, dir: &TempDir) -> Option<(Child, u16)> {
    let mut child = Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.0.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    for _ in 0..100 {
        if is_redis_process(port, child.id()) {
            return Some((child, port));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Redis {
    /// Kills this Redis and starts an empty one on the same port, as a Redis without
    /// persistence comes back after a crash or a restart: every stream is gone.
    pub fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..20 {
            if let Some((child, _)) = spawn_redis(self.bin, self.port, &self._dir) {
                self.child = child;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }
}

/// Whether the Redis on `port` is process `pid`. A bare connect is not enough: `free_port`
/// releases its port, so another test's Redis or server may hold it while this Redis fails
/// to bind and exits (seen in CI: the server then found nothing on the port).
fn is_redis_process(port: u16, pid: u32) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    let wanted = format!("process_id:{pid}\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // INFO's reply is one bulk string; read until the line is seen or the reply stops.
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if text.contains(&wanted) {
            return true;
        }
        if text.contains("process_id:") && text.contains("\r\nrun_id:") {
            return false;
        }
    }
    false
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Publishes events `(type, data)`; returns their ids.
pub async fn publish(s: &Server, topic: &str, events: &[(&str, Value)]) -> Vec<String> {
    let body: Vec<Value> = events
        .iter()
        .map(|(t, d)| serde_json::json!({"type": t, "data": d}))
        .collect();
    let res = http()
        .post(s.url(&format!("/publish?topic={topic}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "publish failed");
    let v: Value = res.json().await.unwrap();
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

pub async fn publish_n(s: &Server, topic: &str, from: usize, n: usize) -> Vec<String> {
    let events: Vec<(&str, Value)> = (from..from + n)
        .map(|i| ("tick", serde_json::json!({ "n": i })))
        .collect();
    publish(s, topic, &events).await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("ws connect timed out")
        .expect("ws connect");
    ws
}

/// What the next text frame held: one object, or the objects of a batch.
#[derive(Debug)]
pub enum Frame {
    One(Value),
    Batch(Vec<Value>),
    Closed(Option<u16>, String),
}

pub async fn ws_next(ws: &mut Ws) -> Frame {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no frame within the step");
        match msg {
            None => return Frame::Closed(None, String::new()),
            Some(Err(e)) => return Frame::Closed(None, e.to_string()),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("frame is JSON");
                return match v {
                    Value::Array(a) => Frame::Batch(a),
                    o => Frame::One(o),
                };
            }
            Some(Ok(Message::Close(c))) => {
                return Frame::Closed(
                    c.as_ref().map(|c| u16::from(c.code)),
                    c.map(|c| c.reason.to_string()).unwrap_or_default(),
                )
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads frames until `n` events (objects with an id) arrived; returns (events, frames).
/// Control frames are collected in `controls`.
pub async fn ws_events(ws: &mut Ws, n: usize, controls: &mut Vec<Value>) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut frames = 0;
    while events.len() < n {
        frames += 1;
        let items = match ws_next(ws).await {
            Frame::One(v) => vec![v],
            Frame::Batch(a) => a,
            Frame::Closed(c, r) => panic!("closed ({c:?} {r}) after {} events", events.len()),
        };
        for v in items {
            if v.get("id").is_some() {
                events.push(v);
            } else {
                controls.push(v);
            }
        }
    }
    (events, frames)
}

pub async fn ws_send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Minimal SSE reader over a streamed reqwest body.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
    pub comments: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Sse {
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = http().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = tokio::time::timeout(STEP, req.send())
            .await
            .expect("sse open timed out")
            .unwrap();
        assert_eq!(resp.status(), 200, "sse status");
        Sse {
            resp,
            buf: String::new(),
            comments: Vec::new(),
        }
    }

    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        self.resp.headers()
    }

    /// The next block (up to a blank line), reading more within the step when needed.
    async fn block(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                return Some(self.buf.drain(..pos + 2).collect());
            }
            let chunk = tokio::time::timeout(STEP, self.resp.chunk())
                .await
                .expect("no SSE bytes within the step")
                .ok()??;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next dispatched event (comments are recorded, not returned).
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let block = self.block().await?;
            let mut ev = SseEvent::default();
            let mut has = false;
            for line in block.lines() {
                if let Some(c) = line.strip_prefix(':') {
                    self.comments.push(c.trim().to_string());
                } else if let Some((k, v)) = line.split_once(": ") {
                    has = true;
                    match k {
                        "id" => ev.id = Some(v.to_string()),
                        "event" => ev.event = v.to_string(),
                        "data" => ev.data.push_str(v),
                        _ => {}
                    }
                }
            }
            if has {
                return Some(ev);
            }
        }
    }

    /// The next comment (`heartbeat` for `: heartbeat`), within the step; an event arriving
    /// first is a test failure.
    pub async fn next_comment(&mut self) -> Option<String> {
        let block = self.block().await?;
        let comment = block.lines().find_map(|l| l.strip_prefix(':'));
        let comment = comment.unwrap_or_else(|| panic!("an event, not a comment: {block:?}"));
        self.comments.push(comment.trim().to_string());
        Some(comment.trim().to_string())
    }

    /// Reads until `n` events with ids arrived; control events go to `controls`.
    pub async fn events(&mut self, n: usize, controls: &mut Vec<SseEvent>) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let ev = self.next().await.expect("SSE stream ended");
            if ev.id.is_some() {
                out.push(ev);
            } else {
                controls.push(ev);
            }
        }
        out
    }
}

pub async fn poll(s: &Server, query: &str) -> (reqwest::StatusCode, Value) {
    let res = tokio::time::timeout(STEP, http().get(s.url(&format!("/poll?{query}"))).send())
        .await
        .expect("poll timed out")
        .unwrap();
    let status = res.status();
    let v = res.json().await.unwrap_or(Value::Null);
    (status, v)
}

pub fn ns(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect()
}
