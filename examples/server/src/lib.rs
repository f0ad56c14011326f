//! `holdfast-server`: the reference backend of the Holdfast wire protocol (PROTOCOL.md).
//!
//! One process serves the WebSocket, SSE and long-polling rungs of every topic from a
//! per-topic history (memory ring, or Redis Streams shared by several processes), so any
//! client can resume from its cursor on any rung, on any process, with nothing lost or
//! repeated while the history still holds the events, and a `reset` when it does not.
//!
//! [`run`] binds, prints `holdfast-server listening on http://HOST:PORT` on stdout (tests
//! parse it), and serves until SIGINT/SIGTERM, then closes WebSockets with 1001, ends
//! streams and exits within `--shutdown-grace-ms` whatever the clients do ([`net`]).

pub mod auth;
pub mod budget;
pub mod config;
pub mod demo;
pub mod event;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod redis_store;
pub mod server;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use config::Config;

/// Raises the open-file limit as far as allowed (every connection is a descriptor): the soft
/// limit to the hard one, and, when the process may (root), both to the kernel's `nr_open`.
/// Returns the soft limit in force.
// `rlim_t` is u64 here but not on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if let Some(max) = nr_open.filter(|m| *m > lim.rlim_max as u64) {
            let want = libc::rlimit {
                rlim_cur: max as libc::rlim_t,
                rlim_max: max as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return max;
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        lim.rlim_cur as u64
    }
}

/// Keeps glibc's allocator from holding freed memory: a fixed mmap threshold (128 KiB), so
/// large short-lived buffers (request bodies, their parsed JSON, response chunks) are
/// mapped and unmapped instead of pinning heap pages. By default glibc raises the threshold
/// each time such a buffer is freed, after which they all land in the heap and its resident
/// size stays near its peak: with the history at its share of the budget, that alone took
/// the process above the budget (issue 15). Call before the runtime starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Binds with a deep accept queue: after a restart every client reconnects at once, and the
/// default backlog (1,024) overflows, turning the burst into 1 s SYN retransmits.
fn bind(host: std::net::IpAddr, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if host.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(host, port))?;
    socket.listen(8192)
}

/// Runs the server until a shutdown signal.
pub async fn run(cfg: Config) -> Result<(), String> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    serve(cfg, rx).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the server until `shutdown` turns true.
pub async fn serve(cfg: Config, shutdown: watch::Receiver<bool>) -> Result<(), String> {
    cfg.validate()?;
    let store = match &cfg.redis {
        Some(url) => Some(
            redis_store::RedisStore::connect(url, &cfg.redis_prefix)
                .await
                .map_err(|e| format!("cannot use --redis {url}: {e}"))?,
        ),
        None => None,
    };
    let mut statics = cfg.tokens.clone();
    if let Some(path) = &cfg.tokens_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --tokens-file {}: {e}", path.display()))?;
        statics.extend(
            text.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        );
    }
    if let Some(dir) = &cfg.static_dir {
        if !dir.is_dir() {
            return Err(format!("--static {}: not a directory", dir.display()));
        }
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let budget = budget::Budget::new(cfg.memory_budget());
    let hub = hub::Hub::new(
        cfg.history_count,
        cfg.history_secs,
        cfg.history_bytes,
        budget,
        store,
    );
    let limits = limits::Limits::new(
        cfg.conns_per_ip,
        cfg.rate_per_ip,
        cfg.max_subscribers,
        metrics.clone(),
    );
    let app = Arc::new(server::App {
        cfg: cfg.clone(),
        trusted: cfg.trusted_proxies()?,
        hub: hub.clone(),
        auth: auth::Auth::new(cfg.token_secret.as_deref(), statics),
        limits: limits.clone(),
        metrics,
        shutdown: shutdown.clone(),
    });
    let listener = bind(cfg.host, cfg.port)
        .map_err(|e| format!("cannot bind {}:{}: {e}", cfg.host, cfg.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "holdfast-server listening on http://{addr}");
        let _ = out.flush();
    }
    tracing::info!(
        store = if hub.is_redis() { "redis" } else { "memory" },
        base = %cfg.base_path(),
        "serving"
    );

    let sweeper = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                hub.sweep().await;
            }
        })
    };
    let demo = cfg
        .demo
        .then(|| tokio::spawn(demo::run(hub.clone(), cfg.demo_interval_ms)));

    let router = server::router(app.clone());
    let sockets = net::Sockets::new(cfg.sockets_per_ip(), cfg.trusted_proxies()?);
    net::serve(
        listener,
        router,
        net::Options {
            header_timeout: Duration::from_millis(cfg.header_timeout_ms),
            write_timeout: cfg.write_timeout(),
            grace: Duration::from_millis(cfg.shutdown_grace_ms),
        },
        sockets,
        app.metrics.clone(),
        shutdown,
        // Upgraded WebSockets are not hyper's connections: wait for them to close (1001).
        move || limits.open() == 0,
    )
    .await;
    sweeper.abort();
    if let Some(d) = demo {
        d.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
