//! One client connection: classify it (refused, control, proxied), then forward one request
//! and its response, or one upgraded byte stream, with the active faults applied.
//!
//! Contract: each direction is a reader task feeding a bounded queue of chunks stamped with
//! the time they may leave (`latencyMs`), and a writer that sends them at that time. The
//! connection ends when either writer ends (its reader hit end of stream and the queue is
//! drained, or a write failed), or when the watchdog cuts it (`idleCutMs`, `cutEveryMs`,
//! `POST /__fault/cut`, shutdown). Ending drops both sockets.

use crate::config::Effective;
use crate::http::{self, HeadError, RequestHead};
use crate::stats::{add, inc, CutReason};
use crate::Shared;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

/// How long a connection may take to show whether it is a control request while
/// `refuseConnections` is on.
const CLASSIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the watchdog re-reads the config, so faults switched on mid-test apply to open
/// connections.
const WATCH_TICK: Duration = Duration::from_millis(50);
const CHUNK: usize = 16 * 1024;
const QUEUE: usize = 32;

struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
}

/// What every task of one proxied connection shares.
struct Ctx {
    shared: Arc<Shared>,
    path: String,
    opened: Instant,
    /// Milliseconds after `opened` at which the last byte moved either way.
    last_activity_ms: AtomicU64,
    /// After a silenced upgrade every byte is read and dropped.
    silenced: AtomicBool,
    /// The faults in force when the request arrived.
    eff: Effective,
    /// For the `--verbose` log: connection number, request line, status, bytes, faults.
    id: u64,
    method: String,
    status: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    faults: std::sync::Mutex<Vec<&'static str>>,
}

impl Ctx {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn note(&self, fault: &'static str) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    fn chunk(&self, bytes: Vec<u8>) -> Chunk {
        let latency = self.shared.effective(&self.path).latency_ms;
        Chunk {
            due: Instant::now() + Duration::from_millis(latency),
            bytes,
        }
    }
}

/// Decrements `open` however the connection ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn handle(shared: Arc<Shared>, mut client: TcpStream) {
    let opened = Instant::now();
    let mut buf = Vec::new();
    if shared.config().refuses_connections() {
        let control = matches!(
            timeout(CLASSIFY_TIMEOUT, starts_like_control(&mut client, &mut buf)).await,
            Ok(true)
        );
        if !control {
            inc(&shared.stats.accepted);
            inc(&shared.stats.refused);
            return;
        }
    }
    let head = timeout(HEAD_TIMEOUT, http::read_request_head(&mut client, &mut buf)).await;
    let (head, head_len) = match head {
        // Like nginx's client_header_timeout: an idle socket is not kept forever.
        Err(_) => return,
        Ok(Ok(parsed)) => parsed,
        // A preconnect that never sent a request: nothing to count or answer.
        Ok(Err(HeadError::Closed)) | Ok(Err(HeadError::Io(_))) => return,
        Ok(Err(e)) => {
            inc(&shared.stats.accepted);
            inc(&shared.stats.bad_requests);
            let (code, error) = match e {
                HeadError::TooLarge => (431, "too_large"),
                _ => (400, "bad_request"),
            };
            let body = error_json(
                error,
                &format!("holdfast-fault-proxy could not read the request: {e}"),
            );
            respond_and_close(
                client,
                &http::simple_response(code, http::reason(code), "application/json", &body, &[]),
            )
            .await;
            return;
        }
    };
    let rest = buf.split_off(head_len);
    if head.path().starts_with("/__fault/") {
        crate::control::handle(&shared, client, head, rest).await;
        return;
    }
    // A socket opened (say, preconnected) before the refusal began whose request arrives
    // during it is refused too.
    if shared.config().refuses_connections() {
        inc(&shared.stats.accepted);
        inc(&shared.stats.refused);
        return;
    }

    let id = shared.stats.accepted.fetch_add(1, Ordering::Relaxed) + 1;
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(shared.clone());
    let path = head.path().to_string();
    let ctx = Ctx {
        eff: shared.effective(&path),
        shared,
        path,
        opened,
        last_activity_ms: AtomicU64::new(opened.elapsed().as_millis() as u64),
        silenced: AtomicBool::new(false),
        id,
        method: head.method.clone(),
        status: AtomicU64::new(0),
        bytes_up: AtomicU64::new(0),
        bytes_down: AtomicU64::new(0),
        faults: std::sync::Mutex::new(Vec::new()),
    };
    let ended = tokio::select! {
        ended = proxy(&ctx, client, head, rest) => ended,
        reason = watchdog(&ctx) => {
            ctx.shared.stats.cut(reason);
            match reason {
                CutReason::Idle => "cut: idleCutMs",
                CutReason::Every => "cut: cutEveryMs",
                CutReason::Manual => "cut: /__fault/cut",
                CutReason::Shutdown => "cut: shutdown",
            }
        }
    };
    if ctx.shared.verbose {
        let faults = ctx
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join(",");
        eprintln!(
            "fault-proxy: #{} {} {} -> {} [{}] up {} B, down {} B, {} ms, {}",
            ctx.id,
            ctx.method,
            ctx.path,
            ctx.status.load(Ordering::Relaxed),
            faults,
            ctx.bytes_up.load(Ordering::Relaxed),
            ctx.bytes_down.load(Ordering::Relaxed),
            ctx.opened.elapsed().as_millis(),
            ended
        );
    }
}

/// Reads just enough to tell whether this is a `/__fault/` request.
async fn starts_like_control(client: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    const PREFIXES: [&[u8]; 3] = [b"GET /__fault/", b"POST /__fault/", b"OPTIONS /__fault/"];
    let mut chunk = [0u8; 1024];
    loop {
        if PREFIXES.iter().any(|p| buf.starts_with(p)) {
            return true;
        }
        let possible = PREFIXES.iter().any(|p| {
            let k = buf.len().min(p.len());
            buf[..k] == p[..k]
        });
        if !possible {
            return false;
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Returns the reason to cut the connection, when there is one.
async fn watchdog(ctx: &Ctx) -> CutReason {
    let mut cut_rx = ctx.shared.cut_tx.subscribe();
    let mut shutdown_rx = ctx.shared.shutdown_tx.subscribe();
    if *shutdown_rx.borrow() {
        return CutReason::Shutdown;
    }
    loop {
        let eff = ctx.shared.effective(&ctx.path);
        let now = Instant::now();
        let mut next = now + WATCH_TICK;
        if let Some(every) = eff.cut_every_ms {
            let deadline = ctx.opened + Duration::from_millis(every);
            if now >= deadline {
                return CutReason::Every;
            }
            next = next.min(deadline);
        }
        if let Some(idle) = eff.idle_cut_ms {
            let last = ctx.last_activity_ms.load(Ordering::Relaxed);
            let deadline = ctx.opened + Duration::from_millis(last + idle);
            if now >= deadline {
                return CutReason::Idle;
            }
            next = next.min(deadline);
        }
        tokio::select! {
            _ = sleep_until(next) => {}
            Ok(()) = cut_rx.changed() => return CutReason::Manual,
            Ok(()) = shutdown_rx.changed() => return CutReason::Shutdown,
        }
    }
}

/// Proxies the request; returns how it ended, for the log.
async fn proxy(ctx: &Ctx, client: TcpStream, head: RequestHead, rest: Vec<u8>) -> &'static str {
    let stats = &ctx.shared.stats;
    let upgrade = head.is_upgrade();
    let mut keep_upgrade = upgrade;
    if upgrade {
        inc(&stats.upgrade_requests);
    }
    if let Some(code) = ctx.eff.respond_status {
        inc(&stats.statuses_injected);
        ctx.note("respondStatus");
        ctx.status.store(code.into(), Ordering::Relaxed);
        let error = match code {
            400 => "bad_request",
            401 => "token_expired",
            403 => "forbidden",
            404 => "not_found",
            413 => "too_large",
            429 => "rate_limited",
            502 => "bad_gateway",
            503 => "unavailable",
            _ => "proxy_status",
        };
        let body = error_json(
            error,
            &format!("holdfast-fault-proxy answered {code} instead of forwarding (respondStatus)"),
        );
        let retry = ctx.eff.retry_after_secs.map(|s| s.to_string());
        let mut extra = CORS.to_vec();
        if let Some(r) = retry.as_deref() {
            extra.push(("Retry-After", r));
        }
        let response =
            http::simple_response(code, http::reason(code), "application/json", &body, &extra);
        ctx.touch();
        respond_and_close(client, &response).await;
        return "answered by the proxy";
    }
    if upgrade {
        if let Some(code) = ctx.eff.refuse_upgrade {
            inc(&stats.upgrades_refused);
            ctx.note("refuseUpgrade");
            ctx.status.store(code.into(), Ordering::Relaxed);
            let reason = http::reason(code);
            let body = format!(
                "<!DOCTYPE html><html><head><title>{code} {reason}</title></head><body><h1>{code} {reason}</h1>\
                 <p>The proxy refused the WebSocket upgrade (holdfast-fault-proxy refuseUpgrade).</p></body></html>\n"
            );
            let response = http::simple_response(
                code,
                reason,
                "text/html; charset=utf-8",
                body.as_bytes(),
                &[],
            );
            ctx.touch();
            respond_and_close(client, &response).await;
            return "answered by the proxy";
        }
        if ctx.eff.strip_upgrade {
            inc(&stats.upgrades_stripped);
            ctx.note("stripUpgrade");
            keep_upgrade = false;
        }
    }
    inc(&stats.requests);
    let upstream = match timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(ctx.shared.upstream.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        outcome => {
            inc(&stats.upstream_failures);
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "connect timed out".to_string(),
            };
            let body = error_json(
                "bad_gateway",
                &format!(
                    "holdfast-fault-proxy could not reach the upstream {}: {why}",
                    ctx.shared.upstream
                ),
            );
            ctx.status.store(502, Ordering::Relaxed);
            respond_and_close(
                client,
                &http::simple_response(502, "Bad Gateway", "application/json", &body, &CORS),
            )
            .await;
            return "upstream unreachable";
        }
    };
    let _ = upstream.set_nodelay(true);
    let mut first = head.encode_for_upstream(keep_upgrade);
    first.extend_from_slice(&rest);

    let (client_r, client_w) = client.into_split();
    let (upstream_r, upstream_w) = upstream.into_split();
    let (up_tx, up_rx) = mpsc::channel(QUEUE);
    let (down_tx, down_rx) = mpsc::channel(QUEUE);
    let up = pipe(
        client_reader(ctx, client_r, up_tx, first),
        write_loop(
            ctx,
            upstream_w,
            up_rx,
            &stats.bytes_to_upstream,
            &ctx.bytes_up,
        ),
    );
    let down = pipe(
        response_reader(ctx, upstream_r, down_tx),
        write_loop(
            ctx,
            client_w,
            down_rx,
            &stats.bytes_to_client,
            &ctx.bytes_down,
        ),
    );
    tokio::select! {
        _ = up => "client closed",
        _ = down => "upstream closed",
    }
}

/// Runs a reader and its writer together; done when the writer is (the reader ending only
/// closes the queue, which the writer drains first).
async fn pipe(reader: impl Future<Output = ()>, writer: impl Future<Output = ()>) {
    tokio::pin!(reader);
    tokio::pin!(writer);
    let mut reading = true;
    loop {
        tokio::select! {
            _ = &mut reader, if reading => reading = false,
            _ = &mut writer => return,
        }
    }
}

async fn write_loop(
    ctx: &Ctx,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Chunk>,
    counter: &AtomicU64,
    per_conn: &AtomicU64,
) {
    while let Some(chunk) = rx.recv().await {
        if chunk.due > Instant::now() {
            sleep_until(chunk.due).await;
        }
        if w.write_all(&chunk.bytes).await.is_err() {
            return;
        }
        add(counter, chunk.bytes.len());
        add(per_conn, chunk.bytes.len());
        ctx.touch();
    }
    let _ = w.shutdown().await;
}

async fn client_reader(ctx: &Ctx, mut r: OwnedReadHalf, tx: mpsc::Sender<Chunk>, first: Vec<u8>) {
    if tx.send(ctx.chunk(first)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        ctx.touch();
        if ctx.silenced.load(Ordering::Relaxed) {
            add(&ctx.shared.stats.bytes_dropped, n);
            continue;
        }
        if tx.send(ctx.chunk(buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

async fn response_reader(ctx: &Ctx, mut r: OwnedReadHalf, tx: mpsc::Sender<Chunk>) {
    let stats = &ctx.shared.stats;
    let mut buf = Vec::new();
    loop {
        let (head, len) = match http::read_response_head(&mut r, &mut buf, |_| ctx.touch()).await {
            Ok(parsed) => parsed,
            Err(e) => {
                inc(&stats.upstream_failures);
                let body = error_json(
                    "bad_gateway",
                    &format!(
                        "holdfast-fault-proxy got no valid response head from the upstream: {e}"
                    ),
                );
                let _ = tx
                    .send(ctx.chunk(http::simple_response(
                        502,
                        "Bad Gateway",
                        "application/json",
                        &body,
                        &[],
                    )))
                    .await;
                return;
            }
        };
        let raw: Vec<u8> = buf.drain(..len).collect();
        ctx.status.store(head.code.into(), Ordering::Relaxed);
        if head.code == 101 {
            inc(&stats.upgrades);
            if ctx.eff.silence_after_upgrade {
                // Set before the 101 leaves, so nothing the client sends after it gets through.
                ctx.silenced.store(true, Ordering::Relaxed);
                inc(&stats.upgrades_silenced);
                ctx.note("silenceAfterUpgrade");
                add(&stats.bytes_dropped, buf.len());
                if tx.send(ctx.chunk(raw)).await.is_err() {
                    return;
                }
                discard(ctx, &mut r).await;
                // Keep the client's socket open whatever the upstream does, like a proxy that
                // lost its upstream without telling anyone.
                std::future::pending::<()>().await;
                return;
            }
            if tx.send(ctx.chunk(raw)).await.is_err() {
                return;
            }
            if !buf.is_empty() && tx.send(ctx.chunk(buf)).await.is_err() {
                return;
            }
            pass_through(ctx, &mut r, &tx).await;
            return;
        }
        if (100..200).contains(&head.code) {
            // 100 Continue and friends: forward and wait for the final head.
            if tx.send(ctx.chunk(raw)).await.is_err() {
                return;
            }
            continue;
        }
        let mut out = head.encode_close();
        let eff = ctx.shared.effective(&ctx.path);
        match eff.buffer_bytes {
            Some(limit) if !eff.buffer_headers => {
                inc(&stats.responses_buffered);
                ctx.note("bufferBytes");
                if tx.send(ctx.chunk(out)).await.is_err() {
                    return;
                }
                let held = buf.len() as u64;
                hold(ctx, &mut r, &tx, buf, held, limit).await;
            }
            None => {
                out.extend_from_slice(&buf);
                if tx.send(ctx.chunk(out)).await.is_err() {
                    return;
                }
                pass_through(ctx, &mut r, &tx).await;
            }
            Some(limit) => {
                inc(&stats.responses_buffered);
                ctx.note("bufferBytes");
                let held = buf.len() as u64;
                out.extend_from_slice(&buf);
                hold(ctx, &mut r, &tx, out, held, limit).await;
            }
        }
        return;
    }
}

async fn pass_through(ctx: &Ctx, r: &mut OwnedReadHalf, tx: &mpsc::Sender<Chunk>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        ctx.touch();
        if tx.send(ctx.chunk(buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

/// `bufferBytes`: hold everything (the head included) until `limit` body bytes are held or
/// the upstream ends, send it as one chunk, and start holding again.
async fn hold(
    ctx: &Ctx,
    r: &mut OwnedReadHalf,
    tx: &mpsc::Sender<Chunk>,
    mut pending: Vec<u8>,
    mut held: u64,
    limit: u64,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if held >= limit {
            if tx
                .send(ctx.chunk(std::mem::take(&mut pending)))
                .await
                .is_err()
            {
                return;
            }
            held = 0;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        ctx.touch();
        pending.extend_from_slice(&buf[..n]);
        held += n as u64;
    }
    if !pending.is_empty() {
        let _ = tx.send(ctx.chunk(pending)).await;
    }
}

async fn discard(ctx: &Ctx, r: &mut OwnedReadHalf) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => add(&ctx.shared.stats.bytes_dropped, n),
        }
    }
}

/// Lets a cross-origin test page read the proxy's own error answers, `Retry-After` included.
const CORS: [(&str, &str); 2] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Expose-Headers", "Retry-After"),
];

/// `{"error":code,"message":...}`, the shape of the protocol's HTTP errors.
pub(crate) fn error_json(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "error": code, "message": message })
        .to_string()
        .into_bytes()
}

/// Writes a complete response, then reads (and drops) what the client still sends for a
/// moment, so closing with unread input does not reset the connection before the client has
/// read the response.
pub(crate) async fn respond_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    response: &[u8],
) {
    if client.write_all(response).await.is_err() {
        return;
    }
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = timeout(Duration::from_secs(1), async {
        let mut total = 0usize;
        while total < 1 << 20 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
