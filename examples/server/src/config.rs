//! Command-line configuration of `holdfast-server`.
//!
//! Every limit and timing the server applies is a flag here, so tests can scale the clocks
//! down (`--heartbeat-ms 200`) and the load generator can lift the limits
//! (`--conns-per-ip 0`). Defaults are the production values documented in PROTOCOL.md.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// The reference server for the Holdfast wire protocol (see PROTOCOL.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "holdfast-server", version, about)]
pub struct Config {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1", env = "HOLDFAST_HOST")]
    pub host: IpAddr,

    /// Port to bind; 0 picks a free port (the startup line says which).
    #[arg(long, default_value_t = 8080, env = "HOLDFAST_PORT")]
    pub port: u16,

    /// Base path of the realtime endpoints.
    #[arg(long, default_value = "/realtime")]
    pub base: String,

    /// Serve this directory at `/` (demo page, built npm package).
    #[arg(long = "static", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,

    /// Run the demo generator: a simulated deployment on topic `demo`, repeating.
    #[arg(long)]
    pub demo: bool,

    /// Milliseconds between two demo events.
    #[arg(long, default_value_t = 400)]
    pub demo_interval_ms: u64,

    /// API key for `POST {base}/publish`. Without it, publishing is allowed from loopback
    /// addresses only.
    #[arg(long, env = "HOLDFAST_PUBLISH_KEY")]
    pub publish_key: Option<String>,

    /// Redis URL (`redis://127.0.0.1:6379`): history in Redis Streams, shared by every
    /// server process pointing at it. Without it, history is kept in memory.
    #[arg(long, env = "HOLDFAST_REDIS")]
    pub redis: Option<String>,

    /// Prefix of the Redis keys.
    #[arg(long, default_value = "holdfast")]
    pub redis_prefix: String,

    /// Events retained per topic (a bounded ring; Redis: `XADD MAXLEN ~`).
    #[arg(long, default_value_t = 10_000)]
    pub history_count: usize,

    /// Seconds an event is retained (0 = no age limit).
    #[arg(long, default_value_t = 3600)]
    pub history_secs: u64,

    /// Server heartbeat after this many milliseconds of silence on a connection.
    #[arg(long, default_value_t = 25_000)]
    pub heartbeat_ms: u64,

    /// Longest time a poll request is held, in milliseconds.
    #[arg(long, default_value_t = 25_000)]
    pub poll_max_ms: u64,

    /// Secret for HMAC-SHA256 (JWT HS256) subscriber tokens. With it or `--token`,
    /// subscribing and sending require a token.
    #[arg(long, env = "HOLDFAST_TOKEN_SECRET")]
    pub token_secret: Option<String>,

    /// A static subscriber token (repeatable); never expires.
    #[arg(long = "token", value_name = "TOKEN")]
    pub tokens: Vec<String>,

    /// A file of static subscriber tokens, one per line.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Simultaneous streaming connections (WebSocket, SSE, held polls) per client IP; 0 = no limit.
    #[arg(long, default_value_t = 20)]
    pub conns_per_ip: u32,

    /// Requests per second per client IP (token bucket, burst = 2x); 0 = no limit.
    #[arg(long, default_value_t = 50)]
    pub rate_per_ip: u32,

    /// Simultaneous subscribers across all topics and transports.
    #[arg(long, default_value_t = 50_000)]
    pub max_subscribers: usize,

    /// Largest WebSocket message and HTTP body accepted, in bytes (WebSocket close 1009 / HTTP 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_frame_bytes: usize,

    /// Most events packed into one WebSocket frame when a subscriber is behind (1 sends one
    /// event per frame; the benchmarks use it to measure per-frame cost).
    #[arg(long, default_value_t = 256)]
    pub ws_batch_max: usize,

    /// Allowed origin for cross-origin fetch/SSE/send (repeatable, e.g.
    /// `https://app.example.com`); without it any origin is allowed (`*`).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// Use `X-Forwarded-For` / `X-Real-IP` as the client address (only behind a trusted proxy).
    #[arg(long)]
    pub trust_proxy: bool,

    /// Milliseconds given to open connections to close after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,
}

impl Config {
    /// Refuses values that would make timers overflow or limits meaningless.
    pub fn validate(&self) -> Result<(), String> {
        const DAY_MS: u64 = 86_400_000;
        if !(10..=DAY_MS).contains(&self.heartbeat_ms) {
            return Err("--heartbeat-ms must be between 10 and 86400000".into());
        }
        if self.poll_max_ms > DAY_MS {
            return Err("--poll-max-ms must be at most 86400000".into());
        }
        if self.shutdown_grace_ms > DAY_MS {
            return Err("--shutdown-grace-ms must be at most 86400000".into());
        }
        if self.history_count == 0 {
            return Err("--history-count must be at least 1".into());
        }
        if self.history_secs > 10 * 365 * 86_400 {
            return Err("--history-secs must be at most ten years".into());
        }
        if self.max_frame_bytes < 1024 {
            return Err("--max-frame-bytes must be at least 1024".into());
        }
        if self.demo_interval_ms == 0 || self.demo_interval_ms > DAY_MS {
            return Err("--demo-interval-ms must be between 1 and 86400000".into());
        }
        Ok(())
    }

    /// The base path normalised to `/x/y` (no trailing slash; empty for `/`).
    pub fn base_path(&self) -> String {
        let trimmed = self.base.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        }
    }
}
