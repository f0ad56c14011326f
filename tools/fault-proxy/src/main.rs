//! `holdfast-fault-proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:PORT [--config JSON]`
//!
//! Binds, prints `fault-proxy listening on http://ADDR` on stdout (tests parse that line),
//! and serves until SIGTERM or SIGINT, when it cuts every connection and exits 0. Exit code 2
//! for bad arguments, 1 when the listener cannot be bound.

use holdfast_fault_proxy::{Config, Proxy};
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str =
    "usage: holdfast-fault-proxy --upstream HOST:PORT [--listen 127.0.0.1:0] [--config JSON] [--verbose]

Forwards HTTP/1.1 and WebSocket traffic to the upstream and injects faults configured with
POST /__fault/config (see tools/fault-proxy/README.md). --config sets the initial faults;
--verbose logs one line per connection on stderr.";

struct Args {
    listen: String,
    upstream: String,
    config: Config,
    verbose: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut upstream = None;
    let mut config = Config::default();
    let mut verbose = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "-v" | "--verbose" => verbose = true,
            "--listen" => listen = value()?,
            "--upstream" => upstream = Some(value()?),
            "--config" => {
                config =
                    Config::from_json(value()?.as_bytes()).map_err(|e| format!("--config: {e}"))?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let upstream = upstream.ok_or("--upstream HOST:PORT is required")?;
    Ok(Some(Args {
        listen,
        upstream,
        config,
        verbose,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("holdfast-fault-proxy: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let proxy = match Proxy::bind(&args.listen, &args.upstream, args.config).await {
        Ok(p) => p.verbose(args.verbose),
        Err(e) => {
            eprintln!(
                "holdfast-fault-proxy: cannot listen on {} for upstream {}: {e}",
                args.listen, args.upstream
            );
            return ExitCode::from(1);
        }
    };
    let addr = match proxy.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("holdfast-fault-proxy: {e}");
            return ExitCode::from(1);
        }
    };
    println!("fault-proxy listening on http://{addr}");
    let _ = std::io::stdout().flush();
    proxy.run(shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the default action (exit) still stops the process.
        _ => std::future::pending::<()>().await,
    }
}
