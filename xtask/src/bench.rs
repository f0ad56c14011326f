//! `cargo xtask bench`: Holdfast against the browser's own APIs and the JavaScript peers.
//!
//! Contract: installs what it needs exactly like `cargo xtask test` (system packages, wasm
//! target, wasm-bindgen-cli, npm packages), builds the npm package, the release reference
//! server and the fault proxy, then runs `node bench/run.mjs`, which drives headless Chromium
//! over the DevTools protocol and prints one table of medians with the ratio to each native
//! baseline (see BENCHMARKS.md). A package that fails to build does not stop the run: the
//! Holdfast columns then read `n/a (…)` and the baselines and peer sizes are still measured.
//! Extra arguments go to the node driver (`--runs N`, `--only ws1,sse`, `--quick`). The
//! markdown table is also written to `<target>/bench/results.md`. The size table also shows
//! the engine alone (`cargo xtask size-floor`), so what the engine costs is told apart from
//! what the web layer, bindings and wrapper add.

use crate::procs;
use crate::{install, package, Ctx};
use std::path::PathBuf;
use std::process::Command;

pub fn run(ctx: &Ctx, args: &[String]) -> Result<(), String> {
    install::ensure_all(ctx)?;
    let package_dir = match package::run(&ctx.root, &ctx.target_dir) {
        Ok(report) => Some(report.package_dir),
        Err(e) => {
            eprintln!("bench: the package did not build; the Holdfast cases will be n/a:\n{e}");
            None
        }
    };
    let floor_dir = match package::size_floor(&ctx.root, &ctx.target_dir) {
        Ok(dir) => Some(dir),
        Err(e) => {
            eprintln!("bench: the size floor did not build; its size row will be n/a:\n{e}");
            None
        }
    };
    let server = procs::build_server(ctx, true)?;
    let proxy = match build_fault_proxy(ctx) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("bench: the fault proxy did not build; the fault cases will be n/a:\n{e}");
            None
        }
    };

    let out_dir = ctx.target_dir.join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("results.md");
    let path_or_empty = |p: &Option<PathBuf>| p.clone().unwrap_or_default();
    let mut cmd = Command::new("node");
    cmd.arg(ctx.root.join("bench/run.mjs"))
        .arg("--out")
        .arg(&out)
        .args(args)
        .env("HOLDFAST_SERVER_BIN", &server)
        .env("HOLDFAST_PACKAGE_DIR", path_or_empty(&package_dir))
        .env("HOLDFAST_FAULT_PROXY_BIN", path_or_empty(&proxy))
        .env("HOLDFAST_SIZE_FLOOR_DIR", path_or_empty(&floor_dir))
        .current_dir(&ctx.root);
    procs::run(&mut cmd)?;
    println!("\nresults written to {}", out.display());
    Ok(())
}

/// Builds `holdfast-fault-proxy` (release) and returns the binary's path.
fn build_fault_proxy(ctx: &Ctx) -> Result<PathBuf, String> {
    procs::run(
        Command::new("cargo")
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "holdfast-fault-proxy",
            ])
            .current_dir(&ctx.root),
    )?;
    Ok(ctx.target_dir.join("release/holdfast-fault-proxy"))
}
