//! Connections: accepting them, capping them per address, timing them out, and a shutdown
//! that always ends.
//!
//! Contract:
//! - Every accepted TCP connection is counted against its peer address until its socket is
//!   closed (an upgraded WebSocket included: the count travels with the socket). Past
//!   `--sockets-per-ip` a new connection is closed at once, before hyper reads a byte.
//!   Trusted proxies (`--trust-proxy`) are exempt: every client behind them shares their
//!   address, and the per-client limits apply to the forwarded address instead.
//! - Request headers must arrive within `--header-timeout-ms` (hyper's header read timeout,
//!   which also bounds the wait for the next request on a kept-alive connection); bodies are
//!   bounded where they are read (`server::read_body`).
//! - A write that stays blocked for `--write-timeout-ms` (the client stopped reading and its
//!   TCP window is full) fails the connection: hyper drops the response (an SSE stream with
//!   its subscriber slot), the socket is closed and everything it held is freed.
//! - Shutdown: stop accepting, ask every connection to finish (hyper's graceful shutdown:
//!   in-flight requests complete, idle connections close; the rungs end their streams and
//!   close WebSockets with 1001), wait at most `--shutdown-grace-ms`, then shut every
//!   socket still open down (`shutdown(2)`, which also ends upgraded WebSockets and half-sent
//!   requests) and return. The grace period bounds everything.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Open sockets per peer address, and every open socket's descriptor (to end them all when
/// the grace period is over).
pub struct Sockets {
    cap: u32,
    exempt: Vec<ipnet::IpNet>,
    inner: Mutex<SocketsInner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct SocketsInner {
    per_ip: HashMap<IpAddr, u32>,
    fds: HashMap<u64, RawFd>,
}

/// One accepted socket's place in [`Sockets`]; dropped just before the socket closes.
pub struct SocketGuard {
    sockets: Arc<Sockets>,
    id: u64,
    /// `None` when the address is not counted (exempt, or no cap).
    ip: Option<IpAddr>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let mut inner = self.sockets.inner.lock().unwrap();
        inner.fds.remove(&self.id);
        if let Some(ip) = self.ip {
            if let Some(n) = inner.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    inner.per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Sockets {
    /// `cap` sockets per address (0 = none); addresses in `exempt` are not counted.
    pub fn new(cap: u32, exempt: Vec<ipnet::IpNet>) -> Arc<Sockets> {
        Arc::new(Sockets {
            cap,
            exempt,
            inner: Mutex::new(SocketsInner::default()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Admits a socket from `ip`, or `None` when the address holds its cap already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, fd: RawFd) -> Option<SocketGuard> {
        let counted = self.cap > 0 && !self.exempt.iter().any(|n| n.contains(&ip));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap();
        if counted {
            let n = inner.per_ip.entry(ip).or_insert(0);
            if *n >= self.cap {
                return None;
            }
            *n += 1;
        }
        inner.fds.insert(id, fd);
        Some(SocketGuard {
            sockets: self.clone(),
            id,
            ip: counted.then_some(ip),
        })
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap().fds.len()
    }

    /// Shuts every open socket down in both directions: pending reads and writes fail, so
    /// whatever owns the socket (hyper, a WebSocket session) ends and closes it.
    fn shutdown_all(&self) {
        let inner = self.inner.lock().unwrap();
        for fd in inner.fds.values() {
            // SAFETY: the descriptor is open: a guard leaves the map (under this lock) before
            // its socket is closed, so no closed or reused descriptor is ever in it.
            unsafe {
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// An accepted socket with a write timeout, holding its place in [`Sockets`].
pub struct Conn {
    // Declared first: dropped (leaving the registry) before the socket closes.
    _guard: SocketGuard,
    tcp: TcpStream,
    write_timeout: Duration,
    /// Set while a write (or flush) is blocked; reset by any progress.
    blocked: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl Conn {
    /// Ready(err) when the current blocked write has waited past the timeout.
    fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let sleep = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.metrics.write_timeouts.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read within the write timeout",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn on_write<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => match self.poll_blocked(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                self.blocked = None;
                done
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.on_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_flush(cx);
        this.on_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_shutdown(cx);
        this.on_write(cx, r)
    }
}

/// How connections are served.
pub struct Options {
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub grace: Duration,
}

/// Serves `router` on `listener` until `stop` turns true, then shuts down within the grace
/// period (see the module doc). `drained` tells when the application has nothing open any
/// more (upgraded WebSockets are not hyper's connections).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: Options,
    sockets: Arc<Sockets>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    drained: impl Fn() -> bool,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, usually: keep serving what is open, try again shortly.
                tracing::warn!("accept error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical(peer.ip());
        let Some(guard) = sockets.admit(ip, tcp.as_raw_fd()) else {
            metrics.reject("sockets_per_ip");
            drop(tcp);
            continue;
        };
        // Realtime frames are small and latency matters: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(Conn {
            _guard: guard,
            tcp,
            write_timeout: opts.write_timeout,
            blocked: None,
            metrics: metrics.clone(),
        });
        let peer = SocketAddr::new(ip, peer.port());
        let svc = router.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        );
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let http = http.clone();
        let mut stop = stop.clone();
        let metrics = metrics.clone();
        tasks.spawn(async move {
            let conn = http.serve_connection(io, svc).with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + opts.grace;
    // Connections finish (graceful shutdown), WebSockets close with 1001.
    while (!tasks.is_empty() || !drained()) && Instant::now() < deadline {
        tokio::select! {
            _ = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    // Whatever is still open now (a half-sent request, a client that does not read, a
    // WebSocket that does not answer its close) is ended.
    let left = sockets.open();
    if left > 0 {
        tracing::info!(
            sockets = left,
            "grace period over: closing what is still open"
        );
    }
    sockets.shutdown_all();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ask for a shutdown any more.
            std::future::pending::<()>().await;
        }
    }
}

/// An IPv4 peer of a dual-stack socket arrives as `::ffff:a.b.c.d`: count it as `a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
