//! `cargo xtask package`: builds the npm package from the Rust crate and the TypeScript
//! wrapper, using only `std::process::Command` (xtask has no dependencies).
//!
//! Contract: `run(root, target_dir)` builds into `target_dir` (the Cargo target dir),
//! writes the wasm-bindgen glue to `js/wasm/` (generated, gitignored), bundles `js/src/`
//! with esbuild into `target/npm/holdfast/dist/`, copies `pkg-template/` beside it, runs
//! `npm pack` into `target/npm/`, and reports the bytes a browser downloads for
//! `createClient` (raw, gzip, brotli; computed by node's zlib). Every step either succeeds
//! or returns an `Err` naming the step and the command's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What one package build produced.
#[allow(dead_code)] // the lead's xtask reads `package_dir`; the rest is for reports
#[derive(Debug, Clone)]
pub struct PackageReport {
    /// `target/npm/holdfast/` (what is packed; serve it as `/pkg/` in the demo).
    pub package_dir: PathBuf,
    /// The `npm pack` tarball.
    pub tarball: PathBuf,
    /// Bytes a browser downloads for `createClient` with the ESM build:
    /// `dist/index.js` + `dist/holdfast_wasm_bg.wasm`.
    pub esm: Sizes,
    /// The script-tag build `dist/holdfast.js` (wasm inlined).
    pub script: Sizes,
}

/// Raw, gzip (level 9) and brotli (quality 11) sizes in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sizes {
    pub raw: u64,
    pub gzip: u64,
    pub brotli: u64,
}

/// The wasm-bindgen version pinned in `Cargo.lock`; the CLI must match it exactly.
fn locked_wasm_bindgen_version(root: &Path) -> Result<String, String> {
    let lock = fs::read_to_string(root.join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next() {
                if let Some(v) = v.trim().strip_prefix("version = \"") {
                    return Ok(v.trim_end_matches('"').to_string());
                }
            }
        }
    }
    Err("Cargo.lock has no wasm-bindgen entry (build the holdfast crate for wasm32 once)".into())
}

fn run_cmd(step: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{step}: could not start {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{step} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs `wasm-bindgen-cli` at the locked version unless it is already on PATH.
/// (`--locked` fails against this registry mirror; the version pin is what matters.)
pub fn ensure_wasm_bindgen(root: &Path) -> Result<(), String> {
    let want = locked_wasm_bindgen_version(root)?;
    let have = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want.as_str()) {
        return Ok(());
    }
    eprintln!(
        "installing wasm-bindgen-cli {want} (found: {:?})",
        have.trim()
    );
    run_cmd(
        "cargo install wasm-bindgen-cli",
        Command::new("cargo").args(["install", "wasm-bindgen-cli", "--version", &want]),
    )?;
    Ok(())
}

/// Builds the package. `target_dir` is the Cargo target directory to build in.
pub fn run(root: &Path, target_dir: &Path) -> Result<PackageReport, String> {
    ensure_wasm_bindgen(root)?;
    if !root.join("node_modules/.bin/esbuild").exists() {
        run_cmd("npm ci", Command::new("npm").arg("ci").current_dir(root))?;
    }

    // 1. The wasm, small over fast (see [profile.wasm-release]).
    run_cmd(
        "cargo build (wasm32, wasm-release)",
        Command::new("cargo")
            .args([
                "build",
                "-p",
                "holdfast",
                "--lib",
                "--target",
                "wasm32-unknown-unknown",
                "--profile",
                "wasm-release",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(root),
    )?;
    let wasm = target_dir.join("wasm32-unknown-unknown/wasm-release/holdfast.wasm");

    // 2. JS glue for the web target: ESM with an explicit init (no bundler-specific imports).
    let glue_dir = root.join("js/wasm");
    let _ = fs::remove_dir_all(&glue_dir);
    run_cmd(
        "wasm-bindgen",
        Command::new("wasm-bindgen")
            .args([
                "--target",
                "web",
                "--out-name",
                "holdfast_wasm",
                "--out-dir",
            ])
            .arg(&glue_dir)
            .arg(&wasm),
    )?;

    // 3. wasm-opt from the npm binaryen (Debian's v108 breaks the externref table init).
    let bg = glue_dir.join("holdfast_wasm_bg.wasm");
    run_cmd(
        "wasm-opt -Oz",
        Command::new(root.join("node_modules/.bin/wasm-opt"))
            .arg("-Oz")
            .args([
                "--enable-bulk-memory",
                "--enable-mutable-globals",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-reference-types",
                "--enable-multivalue",
                "--strip-debug",
                "--strip-producers",
            ])
            .arg(&bg)
            .arg("-o")
            .arg(&bg),
    )?;

    // 4. Bundles and types (js/build.mjs drives esbuild and tsc).
    let npm_root = root.join("target/npm");
    let pkg_dir = npm_root.join("holdfast");
    let _ = fs::remove_dir_all(&pkg_dir);
    fs::create_dir_all(pkg_dir.join("dist")).map_err(|e| format!("creating {pkg_dir:?}: {e}"))?;
    run_cmd(
        "js/build.mjs (esbuild + tsc)",
        Command::new("node")
            .arg(root.join("js/build.mjs"))
            .arg(pkg_dir.join("dist"))
            .current_dir(root),
    )?;

    // 5. Assemble from pkg-template/ and pack.
    for entry in
        fs::read_dir(root.join("pkg-template")).map_err(|e| format!("pkg-template: {e}"))?
    {
        let entry = entry.map_err(|e| format!("pkg-template: {e}"))?;
        if entry.path().is_file() {
            fs::copy(entry.path(), pkg_dir.join(entry.file_name()))
                .map_err(|e| format!("copying {:?}: {e}", entry.path()))?;
        }
    }
    let packed = run_cmd(
        "npm pack",
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&npm_root)
            .current_dir(&pkg_dir),
    )?;
    let tarball = npm_root.join(packed.trim().lines().last().unwrap_or("holdfast.tgz"));

    let dist = pkg_dir.join("dist");
    let esm = sizes(&[dist.join("index.js"), dist.join("holdfast_wasm_bg.wasm")])?;
    let script = sizes(&[dist.join("holdfast.js")])?;
    println!(
        "createClient download (ESM: index.js + wasm): {} B raw, {} B gzip, {} B brotli",
        esm.raw, esm.gzip, esm.brotli
    );
    println!(
        "script tag (holdfast.js, wasm inlined):        {} B raw, {} B gzip, {} B brotli",
        script.raw, script.gzip, script.brotli
    );
    println!(
        "package: {}\ntarball: {}",
        pkg_dir.display(),
        tarball.display()
    );
    Ok(PackageReport {
        package_dir: pkg_dir,
        tarball,
        esm,
        script,
    })
}

/// Sums the sizes of `files`, each compressed on its own (as a browser downloads them).
fn sizes(files: &[PathBuf]) -> Result<Sizes, String> {
    const SCRIPT: &str = "const fs=require('fs'),z=require('zlib');let r=0,g=0,b=0;\
        for(const f of process.argv.slice(1)){const d=fs.readFileSync(f);r+=d.length;\
        g+=z.gzipSync(d,{level:9}).length;\
        b+=z.brotliCompressSync(d,{params:{[z.constants.BROTLI_PARAM_QUALITY]:11}}).length}\
        console.log(r,g,b)";
    let out = run_cmd(
        "size report",
        Command::new("node").arg("-e").arg(SCRIPT).args(files),
    )?;
    let n: Vec<u64> = out
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    match n[..] {
        [raw, gzip, brotli] => Ok(Sizes { raw, gzip, brotli }),
        _ => Err(format!("size report: unexpected output {out:?}")),
    }
}
