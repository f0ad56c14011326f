//! `holdfast-server` binary: parses flags (see `--help` and PROTOCOL.md) and runs the server.

use clap::Parser;

fn main() {
    let cfg = holdfast_server::Config::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    holdfast_server::tune_allocator();
    holdfast_server::raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdfast-server: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(holdfast_server::run(cfg)) {
        eprintln!("holdfast-server: {e}");
        std::process::exit(1);
    }
}
