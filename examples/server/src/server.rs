//! HTTP surface: the three subscriber rungs, upstream send, publish, health and metrics.
//!
//! Every rung follows one loop: admit (the address's request rate, then its token, failures
//! counted against the address, then per-IP and global connection caps; a new topic only
//! within the address's allowance) → position the cursor (hello) → repeatedly read the
//! retained events after the cursor and write them in batches of at most 256 KiB, each
//! reserved from the memory budget until written, waiting on the topic's wake-up, the
//! client, the heartbeat timer and shutdown. An SSE response is produced as hyper asks for
//! it, so a client that does not read costs no more than what its socket buffers hold.
//! Refusals on HTTP rungs are statuses with JSON bodies (every error body is §7 JSON,
//! axum's own rejections included); on the WebSocket rung the upgrade is accepted and the
//! socket closed with a code, because a browser cannot see the status of a refused upgrade
//! (a foreign `Origin` is the exception: 403, nothing to tell that page). The client
//! address is the peer's, or read from trusted proxies' headers ([`client_ip`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Auth, AuthError};
use crate::budget::Held;
use crate::config::Config;
use crate::event::{Event, EventId, RESERVED_TYPES};
use crate::hub::{valid_topic, Batch, Hub, HubError, Subscription};
use crate::limits::{Limits, Refusal, Slot};
use crate::metrics::{Metrics, Transport};

pub struct App {
    pub cfg: Config,
    /// `--trust-proxy` networks (empty: the peer address is the client's).
    pub trusted: Vec<ipnet::IpNet>,
    pub hub: Arc<Hub>,
    pub auth: Auth,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
}

type S = State<Arc<App>>;

/// Events per read; every read is also cut at [`FRAME_BYTES`] of frames, so a WebSocket
/// frame, an SSE chunk and a poll body each hold at most that much (or one larger event).
const READ_BATCH: usize = 256;
const FRAME_BYTES: usize = 256 * 1024;
const POLL_BATCH: usize = 1000;

#[derive(Deserialize, Default)]
pub struct SubQuery {
    topic: Option<String>,
    since: Option<String>,
    token: Option<String>,
    /// Kept as text so a bad value gets this server's JSON 400, not the extractor's.
    wait: Option<String>,
    /// The longest silence the client's path tolerates, in ms (see [`heartbeat_for`]).
    heartbeat: Option<String>,
}

pub fn router(app: Arc<App>) -> Router {
    let base = app.cfg.base_path();
    let origins: Vec<HeaderValue> = app
        .cfg
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(if origins.is_empty() {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins)
        })
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600));
    // Each rung takes its topic from the path (`/ws/{topic}`) or the query (`/ws?topic=`):
    // one handler serves both routes (`Option<Path<_>>` is `None` on the first).
    let mut r = Router::new()
        .route(&format!("{base}/ws"), get(ws))
        .route(&format!("{base}/ws/{{topic}}"), get(ws))
        .route(&format!("{base}/sse"), get(sse))
        .route(&format!("{base}/sse/{{topic}}"), get(sse))
        .route(&format!("{base}/poll"), get(poll))
        .route(&format!("{base}/poll/{{topic}}"), get(poll))
        .route(&format!("{base}/send"), post(send))
        .route(&format!("{base}/send/{{topic}}"), post(send))
        .route(&format!("{base}/publish"), post(publish))
        .route(&format!("{base}/publish/{{topic}}"), post(publish))
        .route("/health", get(health))
        .route(&format!("{base}/health"), get(health))
        .route("/metrics", get(metrics));
    if let Some(dir) = &app.cfg.static_dir {
        // `no-cache`: revalidate every load, so a rebuilt package is picked up at once
        // (ServeDir answers revalidations with 304 from Last-Modified).
        let files = tower_http::set_header::SetResponseHeader::if_not_present(
            tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true),
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        r = r.fallback_service(files);
    }
    r.layer(axum::middleware::map_response(json_errors))
        .layer(cors)
        .with_state(app)
}

/// Every error leaves as PROTOCOL.md §7 JSON: the rejections of axum's extractors (a query
/// that does not parse, a bad path segment), 404 and 405 come as plain text or empty, and
/// are wrapped here with their text as the message.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let code = match status.as_u16() {
        401 => "token_invalid",
        403 => "forbidden",
        413 => "too_large",
        429 => "rate_limited",
        500..=599 => "unavailable",
        _ => "bad_request",
    };
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({ "error": code, "message": message }).to_string();
    Response::from_parts(parts, Body::from(body))
}

/// Whether a request body is declared JSON (`application/json` or `…+json`). Upstream sends
/// and publishes require it: a cross-origin form post cannot set it without a CORS preflight,
/// so a page on another origin cannot make a browser send one.
/// `None` when it is; else the refusal.
fn json_body(app: &App, headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if ok {
        return None;
    }
    app.metrics.reject("bad_request");
    Some(error(
        415,
        "bad_request",
        "the body must be JSON with Content-Type: application/json",
        None,
    ))
}

/// Whether a WebSocket upgrade's `Origin` is allowed: any without `--cors-origin`, else one
/// of the list (a request without `Origin` does not come from a browser page).
fn origin_allowed(cfg: &Config, headers: &HeaderMap) -> bool {
    if cfg.cors_origins.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => cfg.cors_origins.iter().any(|o| {
            o.trim_end_matches('/')
                .eq_ignore_ascii_case(origin.trim_end_matches('/'))
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers

/// A JSON error response (PROTOCOL.md §7).
pub fn error(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> Response {
    let mut res = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": code, "message": message }).to_string(),
    )
        .into_response();
    if let Some(s) = retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    res
}

fn refusal_response(r: Refusal) -> Response {
    match r {
        Refusal::RateLimited(s) => error(
            429,
            "rate_limited",
            &format!("too many requests from this address: retry after {s} s"),
            Some(r.retry_after()),
        ),
        Refusal::ConnsPerIp => error(
            429,
            "rate_limited",
            "too many open connections from this address",
            Some(r.retry_after()),
        ),
        Refusal::MaxSubscribers => error(
            503,
            "unavailable",
            "the server holds its maximum number of subscribers",
            Some(r.retry_after()),
        ),
    }
}

fn hub_error_response(app: &App, e: &HubError) -> Response {
    app.metrics.reject(match e {
        HubError::BadTopic(_) => "bad_request",
        HubError::NewTopicsThrottled(_) => "rate_limited",
        _ => "unavailable",
    });
    match e {
        HubError::BadTopic(_) => error(400, "bad_request", &e.to_string(), None),
        HubError::NewTopicsThrottled(s) => error(429, "rate_limited", &e.to_string(), Some(*s)),
        HubError::TooManyTopics | HubError::Store(_) => {
            error(503, "unavailable", &e.to_string(), Some(2))
        }
    }
}

/// The client's address. The peer's, unless the peer is a trusted proxy (`--trust-proxy`);
/// then `X-Forwarded-For` is read from the right: each proxy appends the address it got the
/// request from, so the rightmost entry that is not itself a trusted proxy is the client as
/// seen by the last proxy we trust. Entries further left were written by the client and are
/// never believed. Without `X-Forwarded-For`, `X-Real-IP` (set by the proxy) is used.
pub fn client_ip(trusted: &[ipnet::IpNet], peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let peer_ip = crate::net::canonical(peer.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let parse = |s: &str| s.trim().parse::<IpAddr>().ok().map(crate::net::canonical);
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    if hops.is_empty() {
        return headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(parse)
            .unwrap_or(peer_ip);
    }
    let mut client = peer_ip;
    for hop in hops.iter().rev() {
        let Some(ip) = parse(hop) else {
            // Not an address: nothing from here leftwards can be vouched for.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// Whether a request came through a proxy (it carries forwarding headers).
fn forwarded(headers: &HeaderMap) -> bool {
    ["x-forwarded-for", "x-real-ip", "forwarded"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Everything a subscriber rung checks before streaming.
struct Admitted {
    slot: Slot,
    ip: IpAddr,
    topic: String,
    since: Option<EventId>,
    /// Heartbeat after this much silence on this connection.
    heartbeat_ms: u64,
}

/// Heartbeats never come closer than this, whatever a client asks for.
const MIN_HEARTBEAT_MS: u64 = 1_000;

/// The heartbeat interval of one connection: the server's own, or shorter when the client
/// asks (`heartbeat=<ms>`: it saw its connections cut after that much silence, by a proxy
/// with an idle timeout), but never under [`MIN_HEARTBEAT_MS`].
fn heartbeat_for(cfg_ms: u64, asked: Option<&str>) -> Result<u64, String> {
    let Some(asked) = asked.filter(|s| !s.is_empty()) else {
        return Ok(cfg_ms);
    };
    let ms: u64 = asked
        .parse()
        .map_err(|_| format!("heartbeat: {asked:?} is not a number of milliseconds"))?;
    Ok(cfg_ms.min(ms.max(MIN_HEARTBEAT_MS)))
}

enum Refused {
    Limit(Refusal),
    Auth(AuthError),
    BadRequest(String),
}

impl Refused {
    fn response(&self) -> Response {
        match self {
            Refused::Limit(r) => refusal_response(*r),
            Refused::Auth(a) => error(a.status(), a.code(), a.message(), None),
            Refused::BadRequest(m) => error(400, "bad_request", m, None),
        }
    }

    fn metric(&self) -> &'static str {
        match self {
            Refused::Limit(r) => r.metric(),
            Refused::Auth(_) => "auth",
            Refused::BadRequest(_) => "bad_request",
        }
    }
}

/// Checks a subscriber token for `ip`, counting a failure against the address.
fn check_token(app: &App, ip: IpAddr, token: Option<String>, topic: &str) -> Result<(), Refused> {
    if !app.auth.required() {
        return Ok(());
    }
    app.limits.auth_allowed(ip).map_err(Refused::Limit)?;
    app.auth
        .check(token.as_deref(), topic, now_secs())
        .map_err(|e| {
            app.limits.auth_failed(ip);
            Refused::Auth(e)
        })
}

fn admit(
    app: &App,
    transport: Transport,
    peer: SocketAddr,
    headers: &HeaderMap,
    q: &SubQuery,
    path_topic: Option<String>,
    header_since: Option<&str>,
) -> Result<Admitted, Refused> {
    let ip = client_ip(&app.trusted, peer, headers);
    let topic = path_topic
        .or_else(|| q.topic.clone())
        .unwrap_or_else(|| "default".to_string());
    let result = (|| {
        if !valid_topic(&topic) {
            return Err(Refused::BadRequest(
                HubError::BadTopic(topic.clone()).to_string(),
            ));
        }
        let since = match q
            .since
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(header_since)
        {
            Some(s) => Some(
                s.parse::<EventId>()
                    .map_err(|e| Refused::BadRequest(format!("since: {e}")))?,
            ),
            None => None,
        };
        // The rate first, then the credential: failures count against the address, and once
        // it has used its failures up, its credentials are not even looked at.
        app.limits.rate(ip).map_err(Refused::Limit)?;
        check_token(app, ip, q.token.clone().or_else(|| bearer(headers)), &topic)?;
        let heartbeat_ms = heartbeat_for(app.cfg.heartbeat_ms, q.heartbeat.as_deref())
            .map_err(Refused::BadRequest)?;
        let slot = app.limits.admit(ip, transport).map_err(Refused::Limit)?;
        Ok(Admitted {
            slot,
            ip,
            topic: topic.clone(),
            since,
            heartbeat_ms,
        })
    })();
    if let Err(r) = &result {
        app.metrics.reject(r.metric());
    }
    result
}

/// Subscribes and positions the cursor; returns the hello frame.
async fn start(
    app: &App,
    a: &Admitted,
    transport: Transport,
) -> Result<(Subscription, EventId, String), HubError> {
    let limits = app.limits.clone();
    let ip = a.ip;
    let sub = app
        .hub
        .subscribe_as(&a.topic, Some(&move || limits.new_topic(ip)))?;
    let latest = app.hub.latest(&sub.topic).await?;
    if a.since.is_some() {
        app.metrics.resumes[transport as usize].fetch_add(1, Ordering::Relaxed);
    }
    let hello = json!({
        "type": "hello",
        "topic": a.topic,
        "heartbeatMs": a.heartbeat_ms,
        "cursor": latest.to_string(),
        "transport": transport.label(),
    })
    .to_string();
    Ok((sub, a.since.unwrap_or(latest), hello))
}

/// Splits a batch of event frames into WebSocket frames: one object, or an array when
/// several are pending (cut at [`FRAME_BYTES`]).
fn ws_frames(events: &[Arc<Event>]) -> Vec<String> {
    if events.len() == 1 {
        return vec![events[0].frame.clone()];
    }
    let mut frames = Vec::new();
    let mut cur = String::new();
    for e in events {
        if !cur.is_empty() && cur.len() + e.frame.len() > FRAME_BYTES {
            cur.push(']');
            frames.push(std::mem::take(&mut cur));
        }
        cur.push(if cur.is_empty() { '[' } else { ',' });
        cur.push_str(&e.frame);
    }
    if !cur.is_empty() {
        cur.push(']');
        frames.push(cur);
    }
    frames
}

fn note_batch(app: &App, batch: &Batch, transport: Transport) {
    if batch.reset.is_some() {
        app.metrics.resets.fetch_add(1, Ordering::Relaxed);
    }
    app.metrics.delivered[transport as usize]
        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------
// WebSocket rung

struct Close {
    code: u16,
    reason: String,
    frame: Option<String>,
}

async fn ws(
    State(app): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SubQuery>,
    path: Option<Path<String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let path_topic = path.map(|Path(topic)| topic);
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            // Usually a proxy that dropped the Upgrade/Connection headers: say so.
            app.metrics.reject("bad_request");
            return error(
                426,
                "upgrade_required",
                &format!(
                    "this endpoint needs a WebSocket upgrade ({}): a proxy may have dropped the \
                     Upgrade/Connection headers; use the SSE or polling endpoint instead",
                    rejection.body_text()
                ),
                None,
            );
        }
    };
    if !origin_allowed(&app.cfg, &headers) {
        app.metrics.reject("origin");
        return error(
            403,
            "forbidden",
            "this page's origin is not allowed (--cors-origin)",
            None,
        );
    }
    let verdict = admit(&app, Transport::Ws, peer, &headers, &q, path_topic, None).map_err(|r| {
        let (code, reason) = match &r {
            Refused::Limit(l @ Refusal::MaxSubscribers) => (1013, format!("{}", l.retry_after())),
            Refused::Limit(l) => (4429, format!("{}", l.retry_after())),
            Refused::Auth(a) => (a.close_code(), a.code().to_string()),
            Refused::BadRequest(_) => (1008, "bad_request".to_string()),
        };
        let frame = match &r {
            Refused::Limit(l) => json!({"type":"error","code": l.metric(),
                "message": "connection refused by a limit", "retryAfter": l.retry_after()}),
            Refused::Auth(a) => json!({"type":"error","code": a.code(), "message": a.message()}),
            Refused::BadRequest(m) => json!({"type":"error","code":"bad_request","message": m}),
        };
        Close {
            code,
            reason,
            frame: Some(frame.to_string()),
        }
    });
    let max = app.cfg.max_frame_bytes;
    // tungstenite's default 128 KiB read buffer per socket dominates idle memory: frames
    // from clients are small (pings, sends), so start small; it grows for large messages.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            match verdict {
                Err(close) => {
                    let mut socket = socket;
                    close_ws(&mut socket, close, app.cfg.write_timeout()).await;
                }
                Ok(a) => ws_session(app, socket, a).await,
            }
        })
}

async fn close_ws(socket: &mut WebSocket, close: Close, wt: Duration) {
    if let Some(f) = close.frame {
        let _ = send_text(socket, f, wt).await;
    }
    let close_frame = Message::Close(Some(CloseFrame {
        code: close.code,
        reason: close.reason.into(),
    }));
    let _ = tokio::time::timeout(wt, socket.send(close_frame)).await;
    // Let the client's close reply arrive so the close is clean, but not forever.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn ws_session(app: Arc<App>, mut socket: WebSocket, a: Admitted) {
    let wt = app.cfg.write_timeout();
    let (sub, mut cursor, hello) = match start(&app, &a, Transport::Ws).await {
        Ok(x) => x,
        Err(e) => {
            let close = match e {
                HubError::NewTopicsThrottled(s) => {
                    app.metrics.reject("rate_limited");
                    let frame = json!({"type":"error","code":"rate_limited",
                        "message": e.to_string(), "retryAfter": s});
                    Close {
                        code: 4429,
                        reason: s.to_string(),
                        frame: Some(frame.to_string()),
                    }
                }
                _ => {
                    app.metrics.reject("unavailable");
                    let frame =
                        json!({"type":"error","code":"unavailable","message": e.to_string()});
                    Close {
                        code: 1011,
                        reason: "unavailable".into(),
                        frame: Some(frame.to_string()),
                    }
                }
            };
            close_ws(&mut socket, close, wt).await;
            return;
        }
    };
    let _slot = a.slot;
    let heartbeat = Duration::from_millis(a.heartbeat_ms.max(10));
    let mut shutdown = app.shutdown.clone();
    let mut wake = sub.topic.watch();
    if !send_text(&mut socket, hello, wt).await {
        return;
    }
    let mut last_sent = Instant::now();
    loop {
        if *shutdown.borrow() {
            close_ws(
                &mut socket,
                Close {
                    code: 1001,
                    reason: "server shutting down".into(),
                    frame: None,
                },
                wt,
            )
            .await;
            return;
        }
        wake.borrow_and_update();
        let batch = match app
            .hub
            .read_after(
                &sub.topic,
                cursor,
                app.cfg.ws_batch_max.clamp(1, READ_BATCH),
                FRAME_BYTES,
            )
            .await
        {
            Ok(b) => b,
            Err(e) => {
                app.metrics.reject("unavailable");
                let frame = json!({"type":"error","code":"unavailable","message": e.to_string()});
                close_ws(
                    &mut socket,
                    Close {
                        code: 1011,
                        reason: "unavailable".into(),
                        frame: Some(frame.to_string()),
                    },
                    wt,
                )
                .await;
                return;
            }
        };
        // The frames built for a client count against the budget until written; when it is
        // full, wait for room (the cursor stays where it was).
        let size = batch
            .events
            .iter()
            .map(|e| e.frame.len() + 1)
            .sum::<usize>()
            + batch.reset.as_ref().map_or(0, |_| 128);
        // Nothing to send: no reservation, on to the wait below (heartbeats, client frames).
        let _held = match (size > 0).then(|| app.hub.budget().reserve(size)) {
            Some(None) => {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(BUDGET_WAIT) => {}
                }
                continue;
            }
            held => held.flatten(),
        };
        note_batch(&app, &batch, Transport::Ws);
        cursor = batch.cursor;
        if let Some(reset) = &batch.reset {
            if !send_text(&mut socket, reset.frame(), wt).await {
                return;
            }
            last_sent = Instant::now();
        }
        if !batch.events.is_empty() {
            for f in ws_frames(&batch.events) {
                if !send_text(&mut socket, f, wt).await {
                    return;
                }
            }
            last_sent = Instant::now();
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            changed = wake.changed() => {
                if changed.is_err() { return; }
            }
            _ = sleep_until(last_sent + heartbeat) => {
                app.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                if !send_text(&mut socket, r#"{"type":"heartbeat"}"#, wt).await {
                    return;
                }
                last_sent = Instant::now();
            }
            msg = socket.recv() => match msg {
                None | Some(Ok(Message::Close(_))) => return,
                Some(Err(e)) => {
                    if let Some((code, reason, metric)) = close_for_read_error(e) {
                        app.metrics.reject(metric);
                        let frame = Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        }));
                        let _ = tokio::time::timeout(wt, socket.send(frame)).await;
                    }
                    return;
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some(reply) = ws_upstream(&app, &a.topic, a.ip, t.as_str()).await {
                        if !send_text(&mut socket, reply, wt).await {
                            return;
                        }
                        last_sent = Instant::now();
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let f = json!({"type":"error","code":"bad_request",
                        "message":"binary frames are not part of the protocol: send JSON text"});
                    if !send_text(&mut socket, f.to_string(), wt).await {
                        return;
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends a text frame; false when the client is gone or did not take it within `wt` (the
/// write timeout: the socket's own cuts it at the same point, see [`crate::net`]).
async fn send_text(socket: &mut WebSocket, text: impl Into<String>, wt: Duration) -> bool {
    let msg = Message::Text(text.into().into());
    matches!(tokio::time::timeout(wt, socket.send(msg)).await, Ok(Ok(())))
}

/// The close a read error deserves: 1009 for a message over the limit, 1007 for a text
/// frame that is not UTF-8; `None` when the connection is simply gone.
fn close_for_read_error(e: axum::Error) -> Option<(u16, &'static str, &'static str)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some((1009, "message too big", "too_large")),
        Some(WsError::Utf8(_)) => Some((1007, "invalid UTF-8", "bad_request")),
        Some(_) => None,
        None => {
            let s = inner.to_string().to_ascii_lowercase();
            if s.contains("too long") || s.contains("too big") || s.contains("capacity") {
                Some((1009, "message too big", "too_large"))
            } else if s.contains("utf-8") || s.contains("utf8") {
                Some((1007, "invalid UTF-8", "bad_request"))
            } else {
                None
            }
        }
    }
}

/// Handles one client frame; returns the reply, if any.
async fn ws_upstream(app: &App, topic: &str, ip: IpAddr, text: &str) -> Option<String> {
    if text.trim() == "ping" {
        return Some(r#"{"type":"pong"}"#.to_string());
    }
    let bad = |m: &str| Some(json!({"type":"error","code":"bad_request","message": m}).to_string());
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return bad("frame is not JSON"),
    };
    match v.get("type").and_then(Value::as_str) {
        Some("ping") => Some(r#"{"type":"pong"}"#.to_string()),
        Some("pong") => None,
        Some("send") => {
            let Some(id) = v.get("id").and_then(id_text) else {
                return bad("send needs an `id` (string, at most 200 characters)");
            };
            // Upstream messages share the address's request budget; a refused one is not
            // acknowledged, so the client's outbox sends it again after `retryAfter`.
            if let Err(r) = app.limits.rate(ip) {
                app.metrics.reject(r.metric());
                return Some(
                    json!({"type":"error","code":"rate_limited","id": id,
                        "retryAfter": r.retry_after(),
                        "message": "too many messages from this address: retry after the given seconds"})
                    .to_string(),
                );
            }
            let data = v.get("data").cloned().unwrap_or(Value::Null);
            match apply_send(app, topic, &id, ip, data).await {
                Ok(()) => Some(json!({"type":"ack","id": id}).to_string()),
                Err(e) => {
                    app.metrics.reject("unavailable");
                    Some(
                        json!({"type":"error","code":"unavailable","id": id,"message": e.to_string()})
                            .to_string(),
                    )
                }
            }
        }
        _ => bad("unknown frame type: expected ping or send"),
    }
}

fn id_text(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty() && s.len() <= 200).then_some(s)
}

/// Applies an upstream message once: it is published on the topic as a `message` event.
async fn apply_send(
    app: &App,
    topic: &str,
    id: &str,
    ip: IpAddr,
    data: Value,
) -> Result<(), HubError> {
    if app.hub.first_send(topic, id).await? {
        let limits = app.limits.clone();
        app.hub
            .publish_as(
                topic,
                vec![("message".to_string(), data.to_string())],
                Some(&move || limits.new_topic(ip)),
            )
            .await?;
        app.metrics.published.fetch_add(1, Ordering::Relaxed);
        app.metrics.sends.fetch_add(1, Ordering::Relaxed);
    } else {
        app.metrics.sends_repeated.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SSE rung

async fn sse(
    State(app): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SubQuery>,
    path: Option<Path<String>>,
) -> Response {
    let path_topic = path.map(|Path(topic)| topic);
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let a = match admit(
        &app,
        Transport::Sse,
        peer,
        &headers,
        &q,
        path_topic,
        last_event_id.as_deref().filter(|s| !s.is_empty()),
    ) {
        Ok(a) => a,
        Err(r) => return r.response(),
    };
    let (sub, cursor, hello) = match start(&app, &a, Transport::Sse).await {
        Ok(x) => x,
        Err(e) => return hub_error_response(&app, &e),
    };
    let first = format!(": ok\n\nevent: hello\ndata: {hello}\n\n");
    let heartbeat = Duration::from_millis(a.heartbeat_ms.max(10));
    let state = SseStream {
        shutdown: app.shutdown.clone(),
        wake: sub.topic.watch(),
        app,
        _a: a,
        sub,
        cursor,
        heartbeat,
        last_sent: Instant::now(),
        first: Some(first),
        done: false,
    };
    // The stream is the session: hyper polls it only when the socket can take more, so
    // nothing is read or encoded for a client that is not reading, and when the connection
    // goes (closed, write timeout, shutdown) the stream is dropped with its slot.
    let body = futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| error(500, "internal", "response build failed", None))
}

/// How long a stream waits before trying again when the memory budget is full.
const BUDGET_WAIT: Duration = Duration::from_millis(100);

/// One SSE subscriber: yields the next chunk of the response when hyper asks for it.
struct SseStream {
    app: Arc<App>,
    /// Holds the connection's slot until the response is dropped.
    _a: Admitted,
    sub: Subscription,
    cursor: EventId,
    heartbeat: Duration,
    shutdown: watch::Receiver<bool>,
    wake: watch::Receiver<u64>,
    last_sent: Instant,
    first: Option<String>,
    done: bool,
}

impl SseStream {
    /// The next chunk: events after the cursor (at most [`FRAME_BYTES`]), a reset, a
    /// heartbeat after silence, or `None` to end the stream (shutdown, error sent).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            self.last_sent = Instant::now();
            return Some(Bytes::from(first));
        }
        let app = self.app.clone();
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            self.wake.borrow_and_update();
            let batch = match app
                .hub
                .read_after(&self.sub.topic, self.cursor, READ_BATCH, FRAME_BYTES)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    app.metrics.reject("unavailable");
                    self.done = true;
                    let f = json!({"type":"error","code":"unavailable","message": e.to_string()});
                    return Some(Bytes::from(format!("event: error\ndata: {f}\n\n")));
                }
            };
            let reset = batch.reset.as_ref().map(|r| r.frame());
            if reset.is_none() && batch.events.is_empty() {
                self.cursor = batch.cursor;
            } else {
                let size = reset.as_ref().map_or(0, |r| r.len() + 24)
                    + batch.events.iter().map(|e| e.sse_len()).sum::<usize>();
                let Some(held) = app.hub.budget().reserve(size) else {
                    tokio::select! {
                        _ = self.shutdown.changed() => {}
                        _ = tokio::time::sleep(BUDGET_WAIT) => {}
                    }
                    continue;
                };
                note_batch(&app, &batch, Transport::Sse);
                self.cursor = batch.cursor;
                let mut chunk = Vec::with_capacity(size);
                if let Some(r) = reset {
                    chunk.extend_from_slice(b"event: reset\ndata: ");
                    chunk.extend_from_slice(r.as_bytes());
                    chunk.extend_from_slice(b"\n\n");
                }
                for e in &batch.events {
                    e.sse_into(&mut chunk);
                }
                self.last_sent = Instant::now();
                return Some(held.into_bytes(chunk));
            }
            tokio::select! {
                _ = self.shutdown.changed() => {}
                changed = self.wake.changed() => {
                    if changed.is_err() { return None; }
                }
                _ = sleep_until(self.last_sent + self.heartbeat) => {
                    app.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                    self.last_sent = Instant::now();
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Polling rung

async fn poll(
    State(app): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SubQuery>,
    path: Option<Path<String>>,
) -> Response {
    let path_topic = path.map(|Path(topic)| topic);
    let a = match admit(&app, Transport::Poll, peer, &headers, &q, path_topic, None) {
        Ok(a) => a,
        Err(r) => return r.response(),
    };
    let (sub, mut cursor, _hello) = match start(&app, &a, Transport::Poll).await {
        Ok(x) => x,
        Err(e) => return hub_error_response(&app, &e),
    };
    let wait_ms = match q.wait.as_deref().filter(|w| !w.is_empty()) {
        None => app.cfg.poll_max_ms,
        Some(w) => match w.parse::<u64>() {
            Ok(ms) => ms.min(app.cfg.poll_max_ms),
            Err(_) => {
                app.metrics.reject("bad_request");
                return error(
                    400,
                    "bad_request",
                    "wait: expected milliseconds as a whole number",
                    None,
                );
            }
        },
    };
    let wait = Duration::from_millis(wait_ms);
    let deadline = Instant::now() + wait;
    let mut shutdown = app.shutdown.clone();
    let mut wake = sub.topic.watch();
    let batch = loop {
        wake.borrow_and_update();
        let batch = match app
            .hub
            .read_after(&sub.topic, cursor, POLL_BATCH, FRAME_BYTES)
            .await
        {
            Ok(b) => b,
            Err(e) => return hub_error_response(&app, &e),
        };
        cursor = batch.cursor;
        if batch.reset.is_some() || !batch.events.is_empty() || *shutdown.borrow() {
            break batch;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = sleep_until(deadline) => break batch,
            changed = wake.changed() => {
                if changed.is_err() { break batch; }
            }
        }
    };
    let reset = batch.reset.as_ref().map(|r| r.frame());
    let size = 64
        + reset.as_ref().map_or(0, |r| r.len() + 1)
        + batch
            .events
            .iter()
            .map(|e| e.frame.len() + 1)
            .sum::<usize>();
    // The body counts against the memory budget until it is written out.
    let Some(held) = app.hub.budget().reserve(size) else {
        app.metrics.reject("over_budget");
        return error(
            503,
            "unavailable",
            "the server is at its memory budget: retry after the given seconds",
            Some(1),
        );
    };
    note_batch(&app, &batch, Transport::Poll);
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"events\":[");
    let mut first = true;
    if let Some(r) = &reset {
        body.extend_from_slice(r.as_bytes());
        first = false;
    }
    for e in &batch.events {
        if !first {
            body.push(b',');
        }
        body.extend_from_slice(e.frame.as_bytes());
        first = false;
    }
    body.extend_from_slice(format!("],\"cursor\":\"{}\"}}", batch.cursor).as_bytes());
    drop(a.slot);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from(held.into_bytes(body)),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Upstream send and publish

/// Reads a request body (send, publish): at most `--max-frame-bytes`, within
/// `--body-timeout-ms`, and counted against the memory budget while the request is handled
/// (the returned reservation).
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<(Bytes, Held), Response> {
    let max = app.cfg.max_frame_bytes;
    let too_large = || {
        app.metrics.reject("too_large");
        error(
            413,
            "too_large",
            &format!("the body is over {max} bytes"),
            None,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let want = declared.map_or(max, |n| n as usize).max(1);
    let Some(held) = app.hub.budget().reserve(want) else {
        app.metrics.reject("over_budget");
        return Err(error(
            503,
            "unavailable",
            "the server is at its memory budget: retry after the given seconds",
            Some(1),
        ));
    };
    match tokio::time::timeout(app.cfg.body_timeout(), axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => Ok((bytes, held)),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => {
            app.metrics.reject("bad_request");
            Err(error(
                408,
                "bad_request",
                "the request body did not arrive in time",
                None,
            ))
        }
    }
}

async fn send(
    State(app): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SubQuery>,
    path: Option<Path<String>>,
    body: Body,
) -> Response {
    let path_topic = path.map(|Path(topic)| topic);
    let ip = client_ip(&app.trusted, peer, &headers);
    if let Err(r) = app.limits.rate(ip) {
        app.metrics.reject(r.metric());
        return refusal_response(r);
    }
    let topic = path_topic
        .or_else(|| q.topic.clone())
        .unwrap_or_else(|| "default".to_string());
    if !valid_topic(&topic) {
        return hub_error_response(&app, &HubError::BadTopic(topic));
    }
    if let Err(r) = check_token(
        &app,
        ip,
        q.token.clone().or_else(|| bearer(&headers)),
        &topic,
    ) {
        app.metrics.reject(r.metric());
        return r.response();
    }
    if let Some(r) = json_body(&app, &headers) {
        return r;
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 200)
    else {
        app.metrics.reject("bad_request");
        return error(
            400,
            "bad_request",
            "an Idempotency-Key header (the message id, 1-200 characters) is required",
            None,
        );
    };
    let (bytes, _held) = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let data: Value = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                app.metrics.reject("bad_request");
                return error(400, "bad_request", &format!("body is not JSON: {e}"), None);
            }
        }
    };
    match apply_send(&app, &topic, &key, ip, data).await {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/json")],
            json!({"type":"ack","id": key}).to_string(),
        )
            .into_response(),
        Err(e) => hub_error_response(&app, &e),
    }
}

async fn publish(
    State(app): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SubQuery>,
    path: Option<Path<String>>,
    body: Body,
) -> Response {
    let path_topic = path.map(|Path(topic)| topic);
    match &app.cfg.publish_key {
        Some(key) => {
            let ip = client_ip(&app.trusted, peer, &headers);
            if let Err(r) = app.limits.auth_allowed(ip) {
                app.metrics.reject(r.metric());
                return refusal_response(r);
            }
            let given = bearer(&headers).or_else(|| {
                headers
                    .get("x-api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            if !given.is_some_and(|g| crate::auth::secret_eq(&g, key)) {
                app.limits.auth_failed(ip);
                app.metrics.reject("auth");
                return error(
                    401,
                    "token_invalid",
                    "publishing needs the API key: Authorization: Bearer <key> or X-Api-Key",
                    None,
                );
            }
        }
        // Only a direct loopback peer: behind a proxy every request comes from loopback.
        None if !crate::net::canonical(peer.ip()).is_loopback() || forwarded(&headers) => {
            app.metrics.reject("auth");
            return error(
                403,
                "forbidden",
                "without --publish-key, publishing is only allowed from a direct loopback \
                 connection (not through a proxy)",
                None,
            );
        }
        None => {}
    }
    let topic = path_topic
        .or_else(|| q.topic.clone())
        .unwrap_or_else(|| "default".to_string());
    if let Some(r) = json_body(&app, &headers) {
        return r;
    }
    let (bytes, _held) = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let items = match parse_publish(&bytes) {
        Ok(items) => items,
        Err(m) => {
            app.metrics.reject("bad_request");
            return error(400, "bad_request", &m, None);
        }
    };
    let n = items.len() as u64;
    match app.hub.publish(&topic, items).await {
        Ok(ids) => {
            app.metrics.published.fetch_add(n, Ordering::Relaxed);
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                json!({ "ids": ids }).to_string(),
            )
                .into_response()
        }
        Err(e) => hub_error_response(&app, &e),
    }
}

/// `{"type":..,"data":..}` or an array of them → (type, data JSON) pairs.
pub fn parse_publish(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("body is not JSON: {e}"))?;
    let list = match v {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        _ => return Err("body must be an event object or an array of them".into()),
    };
    if list.is_empty() || list.len() > 1000 {
        return Err("publish 1 to 1000 events at a time".into());
    }
    list.into_iter()
        .enumerate()
        .map(|(i, e)| {
            let kind = e
                .get("type")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.len() <= 128)
                .ok_or_else(|| format!("event {i}: `type` must be a string of 1-128 characters"))?;
            if RESERVED_TYPES.contains(&kind) {
                return Err(format!(
                    "event {i}: `{kind}` is a control frame type and cannot be published"
                ));
            }
            let data = e.get("data").cloned().unwrap_or(Value::Null);
            Ok((kind.to_string(), data.to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Health and metrics

async fn health(State(app): S) -> Response {
    let store_ok = app.hub.store_ok().await;
    let status = if *app.shutdown.borrow() {
        "stopping"
    } else if !store_ok {
        "degraded"
    } else {
        "ok"
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "status": status,
            "store": if app.hub.is_redis() { "redis" } else { "memory" },
            "subscribers": app.limits.open(),
            "topics": app.hub.topic_count(),
            "bootMs": app.hub.boot_ms,
        })
        .to_string(),
    )
        .into_response()
}

async fn metrics(State(app): S) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(app.hub.topic_count(), app.hub.budget()),
    )
        .into_response()
}
