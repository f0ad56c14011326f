//! `cargo xtask`: the project's own build and test driver.
//!
//! - `cargo xtask test`    installs what is missing, then runs every test suite and prints
//!                         `N passed, N failed`.
//! - `cargo xtask demo`    builds the package, starts the reference server with the demo
//!                         event generator and serves the admin demo page until Ctrl-C.
//! - `cargo xtask package` builds the npm package (wasm + glue + wrapper) and prints sizes.
//! - `cargo xtask size-floor` prints the size of the engine alone in wasm (bench/size-floor).
//!
//! Every install step checks first and is skipped when already satisfied, so the second run
//! starts testing at once. Only std is used here, so the driver itself builds in seconds.

mod bench;
mod fuzz;
mod install;
mod package;
mod procs;
mod suites;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Paths every command needs: the repository root and the cargo target directory.
pub struct Ctx {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

impl Ctx {
    fn discover() -> Ctx {
        // xtask lives at <root>/xtask, so the root is the manifest dir's parent.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask has a parent directory")
            .to_path_buf();
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|p| if p.is_absolute() { p } else { root.join(p) })
            .unwrap_or_else(|| root.join("target"));
        Ctx { root, target_dir }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ctx = Ctx::discover();
    put_cargo_bin_on_path();
    let result = match args.first().map(String::as_str) {
        Some("test") => suites::run_all(&ctx, &args[1..]),
        Some("demo") => demo(&ctx, &args[1..]),
        Some("package") => build_package(&ctx).map(|_| ()),
        Some("size-floor") => install::ensure_build_tools(&ctx)
            .and_then(|()| package::size_floor(&ctx.root, &ctx.target_dir))
            .map(|_| ()),
        Some("install") => install::ensure_all(&ctx),
        Some("bench") => bench::run(&ctx, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 test [--only SUITE]   install what is missing and run every test\n  \
                 demo [--port N]       run the demo: reference server + admin page\n  \
                 package               build the npm package and print its size\n  \
                 size-floor            print the size of the engine alone in wasm (no web layer)\n  \
                 install               only install the tools the tests need"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Tools installed by `cargo install` (wasm-bindgen, its test runner) land in
/// `$CARGO_HOME/bin`, which a fresh shell may not have on PATH; cargo's runner lookup for
/// wasm tests needs them there.
fn put_cargo_bin_on_path() {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(bin) = cargo_home.map(|h| h.join("bin")) else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .expect("PATH entries were already valid");
    std::env::set_var("PATH", joined);
}

/// Installs the build tools the package needs and builds it.
fn build_package(ctx: &Ctx) -> Result<package::PackageReport, String> {
    install::ensure_build_tools(ctx)?;
    package::run(&ctx.root, &ctx.target_dir)
}

/// `cargo xtask demo [--port N]`.
///
/// The page and its realtime traffic reach the reference server through the fault proxy
/// (tools/fault-proxy): the browser talks to the proxy on port N, the proxy to the server on a
/// free port. The page's "network" panel switches the proxy's faults through its control API
/// (`/__fault/config` on the same origin), so a visitor can break the WebSocket, buffer SSE,
/// cut idle connections or take the network down and watch the client recover.
fn demo(ctx: &Ctx, args: &[String]) -> Result<(), String> {
    let port = match args.iter().position(|a| a == "--port") {
        Some(i) => args
            .get(i + 1)
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or("--port needs a number, e.g. --port 8080")?,
        None => 8080,
    };
    let report = build_package(ctx)?;
    let site = assemble_demo_site(ctx, &report.package_dir)?;
    let server_bin = procs::build_server(ctx, true)?;
    let proxy_bin = procs::build_fault_proxy(ctx)?;
    println!("starting the reference server with the demo deployment generator…");
    let site_arg = site.to_string_lossy().into_owned();
    let server = procs::RunningServer::start(&server_bin, &["--demo", "--static", &site_arg])?;
    let upstream = server.url.trim_start_matches("http://").to_string();
    let (mut proxy, url) = start_demo_proxy(&proxy_bin, port, &upstream)?;
    // Printed only now that the port is bound: the page can be opened at once.
    println!("\n  Holdfast demo: {url}/   (Ctrl-C to stop)\n");
    let status = proxy.wait().map_err(|e| e.to_string())?;
    drop(server);
    if status.success() {
        Ok(())
    } else {
        Err(format!("the fault proxy exited with {status}"))
    }
}

/// Starts the fault proxy on `127.0.0.1:port` in front of `upstream` and waits until it has
/// bound the port (its `fault-proxy listening on http://…` line).
fn start_demo_proxy(
    bin: &Path,
    port: u16,
    upstream: &str,
) -> Result<(std::process::Child, String), String> {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            upstream,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    let _ = reader.read_line(&mut first);
    // Keep the pipe open and drained for as long as the proxy runs.
    std::thread::spawn(move || for _ in reader.lines() {});
    match first.trim().strip_prefix("fault-proxy listening on ") {
        Some(url) => Ok((child, url.to_string())),
        None => {
            let status = child.wait().map_err(|e| e.to_string())?;
            Err(format!(
                "the demo could not listen on 127.0.0.1:{port} (the proxy exited with {status}); \
                 is another program using it? Choose another port with --port N"
            ))
        }
    }
}

/// The demo site is the admin page with the built package beside it under `/pkg/`.
fn assemble_demo_site(ctx: &Ctx, package_dir: &Path) -> Result<PathBuf, String> {
    let site = ctx.target_dir.join("demo-site");
    let _ = std::fs::remove_dir_all(&site);
    procs::copy_dir(&ctx.root.join("examples/admin"), &site)?;
    procs::copy_dir(package_dir, &site.join("pkg"))?;
    Ok(site)
}
