//! `holdfast-load`: measures what one `holdfast-server` process holds on this machine.
//!
//! It starts the server binary (next to itself) on a free loopback port, and a private
//! `redis-server` when asked, so a run needs nothing else:
//!
//! - `idle --transport ws|sse --count N`: opens N idle subscribers (each waits for its
//!   `hello`), then reads the server's resident memory: bytes per connection.
//! - `fanout --transport ws|sse --subscribers S --events E [--redis]`: S subscribers of one
//!   topic, E events published in arrays of 100; reports events delivered per second (S×E
//!   over the time from the first publish to the last delivery).
//! - `all`: the table of LOAD.md (10,000 WS, 10,000 SSE, fan-out to 1,000 with and without
//!   Redis).
//!
//! Client and server share the machine: numbers are what one box does with both, on loopback.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[derive(Parser)]
#[command(
    name = "holdfast-load",
    about = "Load generator for holdfast-server (see LOAD.md)"
)]
struct Cli {
    /// The server binary (default: holdfast-server next to this binary).
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// The redis-server binary for --redis runs.
    #[arg(long, default_value = "/usr/bin/redis-server")]
    redis_bin: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Idle connection capacity and memory per connection.
    Idle {
        #[arg(long, value_enum, default_value = "ws")]
        transport: Transport,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// Fan-out throughput: events/s delivered to all subscribers of one topic.
    Fanout {
        #[arg(long, value_enum, default_value = "ws")]
        transport: Transport,
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// History in a private redis-server instead of memory.
        #[arg(long)]
        redis: bool,
    },
    /// Every measurement of LOAD.md, as a Markdown table.
    All {
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Transport {
    Ws,
    Sse,
    /// Idle only: `count` WebSocket and `count` SSE connections at the same time.
    Both,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Ws => "WebSocket",
            Transport::Sse => "SSE",
            Transport::Both => "WebSocket + SSE",
        }
    }
}

struct Proc {
    child: Child,
    port: u16,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Set before a measured server is stopped: the resets that follow are not errors.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn report(errors: &AtomicUsize, e: String) {
    if !STOPPING.load(Ordering::Relaxed) && errors.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("subscriber error: {e}");
    }
}

fn fd_limit() -> u64 {
    holdfast_server::raise_fd_limit()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

async fn start_redis(bin: &str) -> Result<Proc, String> {
    let port = free_port();
    let child = Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {bin} (apt-get install -y redis-server): {e}"))?;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(Proc { child, port });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("redis-server did not start".into())
}

async fn start_server(bin: &std::path::Path, extra: &[String]) -> Result<Proc, String> {
    let mut child = Command::new(bin)
        .args(["--port", "0", "--conns-per-ip", "0", "--rate-per-ip", "0"])
        .args(["--max-subscribers", "1000000", "--history-count", "1000000"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line)
        .await
        .map_err(|e| e.to_string())?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("unexpected startup line {line:?}"))?;
    Ok(Proc { child, port })
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Counts occurrences of `pat` across chunk boundaries.
struct Counter {
    carry: Vec<u8>,
    pat: &'static [u8],
}

impl Counter {
    fn new(pat: &'static [u8]) -> Counter {
        Counter {
            carry: Vec::new(),
            pat,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let n = buf
            .windows(self.pat.len())
            .filter(|w| *w == self.pat)
            .count() as u64;
        let keep = buf.len().min(self.pat.len() - 1);
        self.carry = buf[buf.len() - keep..].to_vec();
        n
    }
}

/// One subscriber: connects, waits for hello, then counts events until told to stop.
/// Signals `ready` after hello, and `done` once `target` events arrived.
async fn subscriber(
    transport: Transport,
    port: u16,
    topic: String,
    target: u64,
    ready: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    delivered: Arc<AtomicU64>,
) -> Result<(), String> {
    let mut got = 0u64;
    let mut finished = target == 0;
    match transport {
        Transport::Ws => {
            let url = format!("ws://127.0.0.1:{port}/realtime/ws?topic={topic}");
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let mut hello = false;
            while let Some(msg) = ws.next().await {
                let msg = msg.map_err(|e| e.to_string())?;
                let text = match msg {
                    tokio_tungstenite::tungstenite::Message::Text(t) => t,
                    tokio_tungstenite::tungstenite::Message::Close(_) => break,
                    _ => continue,
                };
                if !hello {
                    hello = true;
                    ready.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let n = Counter::new(b"{\"id\":\"").feed(text.as_bytes());
                got += n;
                delivered.fetch_add(n, Ordering::Relaxed);
                if !finished && got >= target {
                    finished = true;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Transport::Both => return Err("a subscriber has one transport".into()),
        Transport::Sse => {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let req = format!(
                "GET /realtime/sse?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut hello = Counter::new(b"event: hello");
            let mut ids = Counter::new(b"\nid: ");
            let mut seen_hello = false;
            loop {
                let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                if !seen_hello && hello.feed(&buf[..n]) > 0 {
                    seen_hello = true;
                    ready.fetch_add(1, Ordering::Relaxed);
                }
                let k = ids.feed(&buf[..n]);
                got += k;
                delivered.fetch_add(k, Ordering::Relaxed);
                if !finished && got >= target {
                    finished = true;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}

/// At most 256 handshakes in flight (the listen backlog is finite).
async fn throttle(i: usize, ready: &AtomicUsize, errors: &AtomicUsize) {
    while ready.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) + 256 <= i {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_until(
    what: &str,
    counter: &AtomicUsize,
    want: usize,
    limit: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < want {
        if start.elapsed() > limit {
            return Err(format!(
                "{what}: {} of {want} after {:?}",
                counter.load(Ordering::Relaxed),
                limit
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

struct IdleResult {
    count: usize,
    connect_secs: f64,
    rss_before: u64,
    rss_after: u64,
}

async fn idle(
    bin: &std::path::Path,
    transport: Transport,
    count: usize,
) -> Result<IdleResult, String> {
    let server = start_server(bin, &[]).await?;
    // Warm the process up (allocator arenas, first topic) before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_bytes(server.pid());
    let ready = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let total = if transport == Transport::Both {
        2 * count
    } else {
        count
    };
    let start = Instant::now();
    for i in 0..total {
        let transport = match transport {
            Transport::Both if i % 2 == 0 => Transport::Ws,
            Transport::Both => Transport::Sse,
            t => t,
        };
        let (r, d, dl, errs) = (
            ready.clone(),
            done.clone(),
            delivered.clone(),
            errors.clone(),
        );
        let port = server.port;
        tokio::spawn(async move {
            let topic = format!("idle-{}", i % 100);
            if let Err(e) = subscriber(transport, port, topic, 0, r, d, dl).await {
                report(&errs, e);
            }
        });
        throttle(i, &ready, &errors).await;
    }
    wait_until(
        "idle subscribers ready",
        &ready,
        total,
        Duration::from_secs(120),
    )
    .await?;
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_bytes(server.pid());
    STOPPING.store(true, Ordering::Relaxed);
    drop(server);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    STOPPING.store(false, Ordering::Relaxed);
    Ok(IdleResult {
        count: total,
        connect_secs,
        rss_before,
        rss_after,
    })
}

struct FanoutResult {
    delivered: u64,
    secs: f64,
}

async fn fanout(
    bin: &std::path::Path,
    redis_bin: &str,
    transport: Transport,
    subscribers: usize,
    events: usize,
    redis: bool,
) -> Result<FanoutResult, String> {
    let redis_proc = if redis {
        Some(start_redis(redis_bin).await?)
    } else {
        None
    };
    let mut extra = vec![];
    if let Some(r) = &redis_proc {
        extra.push("--redis".to_string());
        extra.push(format!("redis://127.0.0.1:{}", r.port));
    }
    let server = start_server(bin, &extra).await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..subscribers {
        let (r, d, dl, errors2) = (
            ready.clone(),
            done.clone(),
            delivered.clone(),
            errors.clone(),
        );
        let port = server.port;
        handles.push(tokio::spawn(async move {
            if let Err(e) = subscriber(transport, port, "fan".into(), events as u64, r, d, dl).await
            {
                report(&errors2, e);
            }
        }));
        throttle(i, &ready, &errors).await;
    }
    wait_until(
        "fan-out subscribers ready",
        &ready,
        subscribers,
        Duration::from_secs(60),
    )
    .await?;
    let client = Arc::new(HttpClient { port: server.port });
    // ~100-byte events: the size of a typical progress or log line, as in BENCHMARKS.md.
    let payload = serde_json::json!({"msg": "x".repeat(60), "n": 0});
    let start = Instant::now();
    let mut sent = 0;
    while sent < events {
        let n = (events - sent).min(100);
        let batch: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let mut p = payload.clone();
                p["n"] = serde_json::json!(sent + i);
                serde_json::json!({"type": "tick", "data": p})
            })
            .collect();
        client
            .post(
                "/realtime/publish?topic=fan",
                &serde_json::to_vec(&batch).unwrap(),
            )
            .await?;
        sent += n;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    wait_until(
        "fan-out deliveries",
        &done,
        subscribers,
        Duration::from_secs(300),
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("  published {events} in {publish_secs:.2} s; delivered to all in {secs:.2} s");
    STOPPING.store(true, Ordering::Relaxed);
    for h in handles {
        h.abort();
    }
    drop(server);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    STOPPING.store(false, Ordering::Relaxed);
    drop(redis_proc);
    Ok(FanoutResult {
        delivered: delivered.load(Ordering::Relaxed),
        secs,
    })
}

/// A one-request-per-connection HTTP/1.1 POST (keeps the load tool free of an HTTP client).
struct HttpClient {
    port: u16,
}

impl HttpClient {
    async fn post(&self, path: &str, body: &[u8]) -> Result<(), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| e.to_string())?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(body).await.map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
        if !resp.starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "publish failed: {}",
                String::from_utf8_lossy(&resp[..resp.len().min(200)])
            ));
        }
        Ok(())
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn idle_row(t: Transport, r: &IdleResult) -> String {
    let per = r.rss_after.saturating_sub(r.rss_before) as f64 / r.count as f64;
    format!(
        "| idle {} | {} connections held | {:.1} s to open | server RSS {:.1} MB → {:.1} MB | {:.1} KB per connection |",
        t.name(),
        r.count,
        r.connect_secs,
        mb(r.rss_before),
        mb(r.rss_after),
        per / 1024.0
    )
}

fn fanout_row(
    t: Transport,
    subscribers: usize,
    events: usize,
    redis: bool,
    r: &FanoutResult,
) -> String {
    format!(
        "| fan-out {} {} | {} subscribers × {} events | {:.2} s | {:.0} events/s delivered | {} delivered |",
        t.name(),
        if redis { "(Redis)" } else { "(memory)" },
        subscribers,
        events,
        r.secs,
        r.delivered as f64 / r.secs,
        r.delivered
    )
}

async fn main_async(cli: Cli) -> Result<(), String> {
    let bin = match cli.server_bin {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("holdfast-server"),
    };
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release -p holdfast-server)",
            bin.display()
        ));
    }
    match cli.cmd {
        Cmd::Idle { transport, count } => {
            println!(
                "{}",
                idle_row(transport, &idle(&bin, transport, count).await?)
            );
        }
        Cmd::Fanout {
            transport,
            subscribers,
            events,
            redis,
        } => {
            let r = fanout(&bin, &cli.redis_bin, transport, subscribers, events, redis).await?;
            println!("{}", fanout_row(transport, subscribers, events, redis, &r));
        }
        Cmd::All {
            idle: n,
            subscribers,
            events,
        } => {
            for t in [Transport::Ws, Transport::Sse, Transport::Both] {
                // Both at once: each connection is a descriptor in the server, which has the
                // same open-file limit as this process.
                let n = if t == Transport::Both {
                    n.min((fd_limit() as usize).saturating_sub(200) / 2)
                } else {
                    n
                };
                let r = idle(&bin, t, n).await?;
                println!("{}", idle_row(t, &r));
            }
            for (t, redis) in [
                (Transport::Ws, false),
                (Transport::Ws, true),
                (Transport::Sse, false),
                (Transport::Sse, true),
            ] {
                let r = fanout(&bin, &cli.redis_bin, t, subscribers, events, redis).await?;
                println!("{}", fanout_row(t, subscribers, events, redis, &r));
            }
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let fds = holdfast_server::raise_fd_limit();
    eprintln!("holdfast-load: open-file limit {fds}");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdfast-load: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(main_async(cli)) {
        eprintln!("holdfast-load: {e}");
        std::process::exit(1);
    }
}
