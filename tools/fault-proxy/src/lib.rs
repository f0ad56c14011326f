//! A TCP proxy that understands just enough HTTP/1.1 to misbehave the way real proxies do.
//!
//! Contract:
//! - Every connection carries one request. Plain requests are forwarded with
//!   `Connection: close` and their response comes back with `Connection: close`, so bodies
//!   end where connections end and the proxy never parses a body. Upgrade requests (WebSocket)
//!   become a byte pipe after the upstream's 101.
//! - Requests whose path starts with `/__fault/` are the control API (see `control`) and are
//!   never forwarded or faulted.
//! - Faults come from the active [`Config`], which a test may replace at any time. Faults
//!   decided per request (`respondStatus`, `refuseUpgrade`, `silenceAfterUpgrade`,
//!   `stripUpgrade`, `bufferBytes`) use the config current when the request (or response head) arrives;
//!   `latencyMs`, `idleCutMs` and `cutEveryMs` are re-read while connections are open, so
//!   switching them on affects connections that are already open.
//! - Bad input from either side ends that connection with an error response where one can
//!   still be written; nothing panics.

mod config;
mod conn;
mod control;
pub mod http;
mod stats;

pub use config::{Config, ConfigError, Effective};
pub use stats::{CutReason, Snapshot};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// State shared by every connection of one proxy.
pub(crate) struct Shared {
    pub upstream: String,
    /// Log one line per proxied connection on stderr.
    pub verbose: bool,
    config: RwLock<Arc<Config>>,
    pub stats: stats::Stats,
    /// Bumped by `POST /__fault/cut`; every open connection watches it.
    pub cut_tx: watch::Sender<u64>,
    /// Set once when the proxy shuts down.
    pub shutdown_tx: watch::Sender<bool>,
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    pub fn effective(&self, path: &str) -> Effective {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .effective(path)
    }
}

/// A bound proxy, ready to [`run`](Proxy::run).
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds `listen` and prepares to forward to `upstream` (`host:port`, an `http://` prefix
    /// is accepted) with `config` active.
    pub async fn bind(listen: &str, upstream: &str, config: Config) -> std::io::Result<Proxy> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if tokio::net::lookup_host(upstream.as_str())
            .await?
            .next()
            .is_none()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("upstream {upstream:?} resolves to no address"),
            ));
        }
        let listener = TcpListener::bind(listen).await?;
        let (cut_tx, _) = watch::channel(0);
        let (shutdown_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream,
            verbose: false,
            config: RwLock::new(Arc::new(config)),
            stats: stats::Stats::default(),
            cut_tx,
            shutdown_tx,
        });
        Ok(Proxy { listener, shared })
    }

    /// Logs one line per proxied connection on stderr when it ends (request, status, faults
    /// applied, bytes each way, duration, how it ended).
    pub fn verbose(mut self, on: bool) -> Proxy {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.verbose = on;
        }
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then cuts every open connection and returns once
    /// they are gone (or after two seconds).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Proxy { listener, shared } = self;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(conn::handle(shared.clone(), stream));
                    }
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            }
        }
        drop(listener);
        shared.shutdown_tx.send_replace(true);
        for _ in 0..200 {
            if shared.stats.open.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
