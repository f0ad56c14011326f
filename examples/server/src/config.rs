//! Command-line configuration of `holdfast-server`.
//!
//! Every limit and timing the server applies is a flag here, so tests can scale the clocks
//! down (`--heartbeat-ms 200`) and the load generator can lift the limits
//! (`--conns-per-ip 0`). Defaults are the production values documented in PROTOCOL.md.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// Loopback networks (`--trust-proxy loopback`).
const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1/128"];
/// Private, link-local and unique-local networks (`--trust-proxy private`, with loopback).
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

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

    /// API key for `POST {base}/publish`. Without it, publishing is allowed only from a
    /// direct loopback peer (never through a proxy: a request with forwarding headers or from
    /// a trusted proxy is refused).
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

    /// Bytes of events retained per topic (`K`/`M`/`G` suffixes); at most half the memory
    /// budget.
    #[arg(long, default_value = "64M", value_parser = crate::budget::parse_size)]
    pub history_bytes: usize,

    /// Bytes of event data the process may hold: retained history (at most half of it, the
    /// oldest events of all topics trimmed first) plus chunks, poll bodies and upstream
    /// bodies in flight (refused with 503 + Retry-After when full). Default: a quarter of the
    /// memory available (cgroup limit or RAM), at least 16M.
    #[arg(long, value_parser = crate::budget::parse_size)]
    pub memory_budget: Option<usize>,

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

    /// Open TCP connections per peer address, counted at accept time (idle, unauthenticated
    /// or half-sent ones included); over it new ones are closed at once. Trusted proxies are
    /// exempt. 0 = no limit. Default: 64, or none when `--conns-per-ip 0`.
    #[arg(long)]
    pub sockets_per_ip: Option<u32>,

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

    /// Trusted proxies (comma-separated addresses or CIDRs; `loopback` and `private` name
    /// ranges; the bare flag means `private`, which includes loopback). For a request whose
    /// peer is one of them, the client address is the rightmost `X-Forwarded-For` entry
    /// that is not a trusted proxy (or `X-Real-IP` when there is no `X-Forwarded-For`).
    /// Entries to the left of it were written by the client and are never used.
    #[arg(
        long,
        value_name = "CIDRS",
        num_args = 0..=1,
        default_missing_value = "private",
        value_delimiter = ','
    )]
    pub trust_proxy: Option<Vec<String>>,

    /// Milliseconds given to connections to finish after SIGINT/SIGTERM: WebSockets get 1001,
    /// SSE streams end, held polls return; whatever is still open then is closed and the
    /// process exits.
    #[arg(long, default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,

    /// Milliseconds a client may take to send a request's headers (and, between requests on
    /// a kept-alive connection, to start the next one) before its connection is closed.
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Milliseconds a client may take to send a request body (send, publish): 408 after it.
    #[arg(long, default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// Milliseconds a write to a client may stay blocked (it stopped reading and its TCP
    /// window is full) before the connection is closed and everything it held is freed.
    #[arg(long, default_value_t = 30_000)]
    pub write_timeout_ms: u64,
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
        for (name, v) in [
            ("--header-timeout-ms", self.header_timeout_ms),
            ("--body-timeout-ms", self.body_timeout_ms),
            ("--write-timeout-ms", self.write_timeout_ms),
        ] {
            if !(10..=DAY_MS).contains(&v) {
                return Err(format!("{name} must be between 10 and 86400000"));
            }
        }
        let budget = self.memory_budget();
        if budget < crate::budget::MIN_BUDGET {
            return Err("--memory-budget must be at least 16M".into());
        }
        if budget / 2 < 4 * self.max_frame_bytes {
            return Err(
                "--memory-budget must be at least 8 times --max-frame-bytes (history takes half)"
                    .into(),
            );
        }
        if self.history_bytes < 2 * self.max_frame_bytes {
            return Err("--history-bytes must be at least twice --max-frame-bytes".into());
        }
        self.trusted_proxies()?;
        Ok(())
    }

    pub fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.write_timeout_ms)
    }

    pub fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.body_timeout_ms)
    }

    /// The memory budget in force (the flag, or the machine's default).
    pub fn memory_budget(&self) -> usize {
        self.memory_budget
            .unwrap_or_else(crate::budget::default_budget)
    }

    /// The per-address TCP connection cap in force (0 = none).
    pub fn sockets_per_ip(&self) -> u32 {
        self.sockets_per_ip.unwrap_or(if self.conns_per_ip == 0 {
            0
        } else {
            64.max(self.conns_per_ip * 2)
        })
    }

    /// The trusted proxy networks (empty without `--trust-proxy`).
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        let mut nets = Vec::new();
        for item in self.trust_proxy.iter().flatten() {
            let item = item.trim();
            match item {
                "" => {}
                "loopback" => {
                    nets.extend(LOOPBACK.iter().map(|n| n.parse::<ipnet::IpNet>().unwrap()))
                }
                "private" => nets.extend(
                    LOOPBACK
                        .iter()
                        .chain(PRIVATE)
                        .map(|n| n.parse::<ipnet::IpNet>().unwrap()),
                ),
                _ => nets.push(
                    item.parse::<ipnet::IpNet>()
                        .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            format!("--trust-proxy: {item:?} is not an address or CIDR")
                        })?,
                ),
            }
        }
        Ok(nets)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("holdfast-server").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn trust_proxy_takes_nothing_a_list_or_names() {
        assert!(parse(&[]).trusted_proxies().unwrap().is_empty());
        let bare = parse(&["--trust-proxy", "--demo"])
            .trusted_proxies()
            .unwrap();
        let has = |nets: &[ipnet::IpNet], ip: &str| {
            nets.iter()
                .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()))
        };
        assert!(has(&bare, "127.0.0.1") && has(&bare, "10.1.2.3") && has(&bare, "::1"));
        assert!(!has(&bare, "203.0.113.5"));
        let list = parse(&["--trust-proxy", "192.0.2.0/24,198.51.100.7"])
            .trusted_proxies()
            .unwrap();
        assert!(has(&list, "192.0.2.9") && has(&list, "198.51.100.7"));
        assert!(!has(&list, "198.51.100.8") && !has(&list, "127.0.0.1"));
        assert!(parse(&["--trust-proxy", "nonsense"]).validate().is_err());
    }

    #[test]
    fn the_socket_cap_follows_the_connection_cap_unless_set() {
        assert_eq!(parse(&[]).sockets_per_ip(), 64);
        assert_eq!(parse(&["--conns-per-ip", "0"]).sockets_per_ip(), 0);
        assert_eq!(parse(&["--conns-per-ip", "100"]).sockets_per_ip(), 200);
        assert_eq!(parse(&["--sockets-per-ip", "5"]).sockets_per_ip(), 5);
    }
}
