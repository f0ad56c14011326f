//! Test fixtures: the proxy binary as a child process, a tiny upstream (WebSocket echo,
//! plain and chunked streaming HTTP) on 127.0.0.1, and raw-socket HTTP helpers.
//! Every wait is bounded; no assertion has a wall-clock upper bound.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The longest any single wait in these tests may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(10);

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The proxy binary, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        Proxy::start_with(&["--upstream", &upstream.to_string()])
    }

    pub fn start_with(args: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast-fault-proxy"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the proxy binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("the proxy prints its address");
        let addr = line
            .trim()
            .strip_prefix("fault-proxy listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("a socket address");
        Proxy { child, addr }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub async fn config(&self, json: &str) -> (u16, serde_json::Value) {
        control(self.addr, "POST", "/__fault/config", Some(json)).await
    }

    /// Applies a config that must be accepted.
    pub async fn set(&self, json: &str) {
        let (status, body) = self.config(json).await;
        assert_eq!(status, 200, "config {json} was rejected: {body}");
    }

    pub async fn stats(&self) -> serde_json::Value {
        let (status, body) = control(self.addr, "GET", "/__fault/stats", None).await;
        assert_eq!(status, 200);
        body
    }

    pub async fn cut(&self) -> serde_json::Value {
        let (status, body) = control(self.addr, "POST", "/__fault/cut", None).await;
        assert_eq!(status, 200);
        body
    }

    /// Polls the stats until `pred` holds (bounded); returns the last stats.
    pub async fn wait_stats(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let s = self.stats().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never showed {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control API call over a raw socket.
pub async fn control(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let body = body.unwrap_or("");
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let res = http(addr, raw.as_bytes())
        .await
        .expect("the control API answers");
    let json = serde_json::from_slice(&res.body)
        .unwrap_or_else(|e| panic!("control body is not JSON ({e}): {res:?}"));
    (res.status, json)
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn has_header(&self, line: &str) -> bool {
        self.head.lines().any(|l| l.eq_ignore_ascii_case(line))
    }
}

/// Sends raw bytes and reads until the server closes. Err when the connection ends without
/// a single byte of response (refused or reset).
pub async fn http(addr: SocketAddr, raw: &[u8]) -> Result<RawResponse, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // A refused connection may be closed before (or while) the request is written.
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no end of response within the bound".to_string())?;
    if out.is_empty() {
        return Err(format!("closed without a response ({read:?})"));
    }
    parse_response(&out)
        .ok_or_else(|| format!("not an HTTP response: {:?}", String::from_utf8_lossy(&out)))
}

pub fn parse_response(raw: &[u8]) -> Option<RawResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(RawResponse {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    })
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n").into_bytes()
}

/// Connects a WebSocket through the proxy and checks the echo works.
pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake ends within the bound")
        .expect("the upgrade succeeds");
    ws
}

/// Sends `text` and waits (bounded) for its echo.
pub async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let msg = next_message(ws, BOUND).await.expect("an echo arrives");
    assert_eq!(msg.to_text().expect("text"), text);
}

/// The next data message, or None when nothing arrived within `wait`. Panics when the
/// connection closes.
pub async fn next_message(ws: &mut Ws, wait: Duration) -> Option<Message> {
    match tokio::time::timeout(wait, ws.next()).await {
        Err(_) => None,
        Ok(Some(Ok(m))) if m.is_text() || m.is_binary() => Some(m),
        Ok(other) => panic!("the connection ended instead: {other:?}"),
    }
}

/// Waits (bounded) until the connection closes; true when it did.
pub async fn closes(ws: &mut Ws) -> bool {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The upstream: WebSocket echo on any upgrade, and
/// - `GET /hello`: `hello` with `Content-Length` (and keep-alive headers the proxy must drop);
/// - `GET /feed`: a chunked response whose chunks the test sends through [`Upstream::feed`];
/// - `POST /echo`: the body back;
/// - anything else on `/ws`: 400, as axum answers a WebSocket route without Upgrade headers.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Every request head received, lower-cased.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// Every WebSocket text message the echo received.
    pub received: Arc<Mutex<Vec<String>>>,
    feeds: Arc<Mutex<Vec<mpsc::UnboundedReceiver<Vec<u8>>>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let feeds = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (h, f, r) = (heads.clone(), feeds.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, h.clone(), f.clone(), r.clone()));
            }
        });
        Upstream {
            addr,
            heads,
            received,
            feeds,
        }
    }

    /// The sender for the next `/feed` request's chunks; dropping it ends that response.
    pub fn feed(&self) -> mpsc::UnboundedSender<Vec<u8>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.feeds.lock().unwrap().push(rx);
        tx
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    heads: Arc<Mutex<Vec<String>>>,
    feeds: Arc<Mutex<Vec<mpsc::UnboundedReceiver<Vec<u8>>>>>,
    received: Arc<Mutex<Vec<String>>>,
) {
    // Peek, so a WebSocket handshake can still be read by tungstenite.
    let mut buf = vec![0u8; 16384];
    let mut head_len = None;
    for _ in 0..1000 {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            head_len = Some(i + 4);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(head_len) = head_len else { return };
    let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
    heads.lock().unwrap().push(head.clone());
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    if head.contains("\r\nupgrade: websocket") {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if let Ok(text) = msg.to_text() {
                received.lock().unwrap().push(text.to_string());
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
        return;
    }
    let mut consumed = vec![0u8; head_len];
    if stream.read_exact(&mut consumed).await.is_err() {
        return;
    }
    let response: Vec<u8> = if path.starts_with("/hello") {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello".to_vec()
    } else if path.starts_with("/echo") {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        r.extend_from_slice(&body);
        r
    } else if path.starts_with("/feed") {
        let rx = feeds.lock().unwrap().pop();
        let Some(mut rx) = rx else {
            let _ = stream
                .write_all(b"HTTP/1.1 500 No Feed\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        while let Some(chunk) = rx.recv().await {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
        b"0\r\n\r\n".to_vec()
    } else if path.starts_with("/ws") || path.starts_with("/realtime/ws") {
        let body = "Connection header did not include 'upgrade'";
        format!("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    } else {
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Reads from a raw socket for up to `wait`; returns what arrived (possibly nothing).
pub async fn read_for(s: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// Reads (bounded) until at least `n` bytes arrived or the socket ends.
pub async fn read_at_least(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(BOUND, async {
        while out.len() < n {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(k) => out.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    out
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}
