//! Installs what the tests and the package build need, each step only when it is missing.
//!
//! Contract: on a fresh Debian machine of this project's kind (rustup, Node, npm, root) every
//! tool ends up installed by these steps alone; on a machine that has them, every step is a
//! quick check. Nothing here downloads a prebuilt binary from outside the package registries:
//! wasm-bindgen-cli, geckodriver and cargo-fuzz are built from crates.io, wasm-opt comes from
//! npm's `binaryen`, browsers and servers from Debian.
//!
//! `cargo xtask test --only SUITE` installs only what that suite needs (`ensure_for_suites`),
//! and `cargo xtask demo` only what the package build needs (`ensure_build_tools`).

use crate::procs::{capture, run, which};
use crate::Ctx;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Debian packages the test suites drive, with the binary each one provides.
const APT_TOOLS: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("nginx", "/usr/sbin/nginx"),
    ("redis-server", "/usr/bin/redis-server"),
    ("firefox-esr", "/usr/bin/firefox-esr"),
];

/// geckodriver is built from crates.io (there is no Debian package); pinned so every
/// machine drives Firefox the same way.
const GECKODRIVER_VERSION: &str = "0.37.1";

/// Everything `cargo xtask test` needs.
pub fn ensure_all(ctx: &Ctx) -> Result<(), String> {
    ensure_for_suites(ctx, &["native", "js", "fuzz", "browser", "e2e"])
}

/// What building the browser package needs: the wasm target and `rust-src`, wasm-bindgen-cli at the
/// locked version, and the npm tooling (esbuild, typescript, binaryen's wasm-opt).
pub fn ensure_build_tools(ctx: &Ctx) -> Result<(), String> {
    ensure_wasm_target()?;
    if let Err(e) = ensure_rust_src() {
        // Not fatal: without rust-src the size build fails and the package is built
        // without it, larger, with a warning (package.rs, build_wasm).
        println!("==> install: rust-src could not be added: {e}");
    }
    ensure_wasm_bindgen_cli(ctx)?;
    ensure_npm_packages(&ctx.root)
}

/// What the named test suites need, and nothing more: `--only js` installs no browser,
/// driver or cargo-fuzz. System packages are gathered first so apt runs once.
pub fn ensure_for_suites(ctx: &Ctx, suites: &[&str]) -> Result<(), String> {
    let wants = |s: &str| suites.contains(&s);
    let mut apt: Vec<&str> = Vec::new();
    for (pkg, _) in APT_TOOLS {
        let needed = match *pkg {
            // The deployment-config checks (native) and the nginx scenarios (e2e);
            // the server's Redis tests (native) and Redis restarts (e2e).
            "nginx" | "redis-server" => wants("native") || wants("e2e"),
            // wasm-bindgen-test-runner drives Chromium through chromedriver; Playwright
            // drives /usr/bin/chromium itself.
            "chromium" => wants("browser") || wants("e2e"),
            "chromium-driver" | "firefox-esr" => wants("browser"),
            // A package added to APT_TOOLS without a rule here is installed for every run.
            _ => true,
        };
        if needed {
            apt.push(pkg);
        }
    }
    ensure_apt_packages(&apt)?;
    if wants("browser") {
        if let Err(e) = ensure_webkit() {
            // Not fatal here: the browser suite still runs in Chromium and Firefox and
            // counts WebKit as one failure (browser_suite).
            println!("==> install: WebKit could not be installed: {e}");
        }
        ensure_geckodriver()?;
        ensure_wasm_target()?;
        ensure_wasm_bindgen_cli(ctx)?;
    }
    if wants("fuzz") {
        ensure_cargo_fuzz()?;
    }
    if wants("e2e") {
        ensure_build_tools(ctx)?;
        ensure_example_packages(ctx);
    } else if wants("js") {
        ensure_npm_packages(&ctx.root)?;
    }
    Ok(())
}

/// The Next.js example's npm packages, for its end-to-end test only (the demo and the
/// package build do not need them). Quiet: npm's output is kept only if both `npm ci` and
/// the `npm install` fallback fail, and then one line says so; the Next.js test is then the
/// only one to fail.
fn ensure_example_packages(ctx: &Ctx) {
    let dir = ctx.root.join("examples/nextjs");
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.package-lock.json");
    if !lock.exists()
        || (is_newer_or_equal(&stamp, &lock) && dir.join("node_modules/.bin").exists())
    {
        return;
    }
    step(&format!("npm packages of {}", dir.display()));
    let quiet = |args: &[&str]| {
        Command::new("npm")
            .args(args)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
    };
    // `npm ci` first; when it calls the lock out of sync (see ensure_npm_packages), the
    // `npm install` fallback takes every version the lock pins.
    let ci = quiet(&["ci"]);
    if matches!(&ci, Ok(o) if o.status.success()) {
        return;
    }
    match quiet(&["install", "--no-save"]) {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            println!(
                "==> install: npm install in {} failed ({}{}); the Next.js test will fail",
                dir.display(),
                o.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {}", last.trim())
                }
            );
        }
        Err(e) => println!("==> install: npm in {} did not start ({e})", dir.display()),
    }
}

fn ensure_wasm_target() -> Result<(), String> {
    let installed = capture(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    step(&format!("rustup target add {WASM_TARGET}"));
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// The package build rebuilds the standard library for size (package.rs), from the
/// toolchain's own `rust-src` component (a rustup download).
fn ensure_rust_src() -> Result<(), String> {
    let installed = capture(Command::new("rustup").args(["component", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok(());
    }
    step("rustup component add rust-src");
    run(Command::new("rustup").args(["component", "add", "rust-src"]))
}

/// The CLI must match the `wasm-bindgen` crate in Cargo.lock exactly, or the generated glue
/// and the wasm disagree. `--locked` is deliberately absent: one of its locked dependencies
/// may be missing from a registry mirror, and without it cargo picks the newest compatible
/// versions instead.
fn ensure_wasm_bindgen_cli(ctx: &Ctx) -> Result<(), String> {
    let wanted = locked_version(&ctx.root, "wasm-bindgen")?;
    let have = capture(Command::new("wasm-bindgen").arg("--version")).unwrap_or_default();
    let runner =
        capture(Command::new("wasm-bindgen-test-runner").arg("--version")).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(wanted.as_str())
        && runner.split_whitespace().nth(1) == Some(wanted.as_str())
    {
        return Ok(());
    }
    step(&format!(
        "cargo install wasm-bindgen-cli --version {wanted} (about 2 minutes)"
    ));
    run(Command::new("cargo").args([
        "install",
        "wasm-bindgen-cli",
        "--force",
        "--version",
        &wanted,
    ]))
}

fn ensure_geckodriver() -> Result<(), String> {
    let have = capture(Command::new("geckodriver").arg("--version")).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(GECKODRIVER_VERSION) {
        return Ok(());
    }
    step(&format!(
        "cargo install geckodriver --version {GECKODRIVER_VERSION} (about 4 minutes)"
    ));
    run(Command::new("cargo").args([
        "install",
        "geckodriver",
        "--force",
        "--version",
        GECKODRIVER_VERSION,
    ]))
}

/// cargo-fuzz drives the engine's fuzz targets (`fuzz/`); it runs on stable with
/// RUSTC_BOOTSTRAP=1 because it passes -Z flags for the sanitizer.
pub fn ensure_cargo_fuzz() -> Result<(), String> {
    const VERSION: &str = "0.13.2";
    let have = capture(Command::new("cargo").args(["fuzz", "--version"])).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(VERSION) {
        return Ok(());
    }
    step(&format!(
        "cargo install cargo-fuzz --version {VERSION} (about 2 minutes)"
    ));
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--force", "--version", VERSION]))
}

/// The FastAPI test backend of the existing-backends tests (tests/backends/seed_fastapi) that
/// the end-to-end suite drives: a venv under the cargo target dir (`seed-backend-venv`, so
/// `CARGO_TARGET_DIR` moves it too) with the pinned requirements from PyPI. Skipped when
/// the venv's stamp (a copy of the requirements it was installed from) matches. Returns
/// the venv's python; tests/e2e/existing_backends.test.mjs finds it at the same place.
pub fn ensure_seed_backend(ctx: &Ctx) -> Result<PathBuf, String> {
    let requirements = ctx
        .root
        .join("tests/backends/seed_fastapi/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    let venv = ctx.target_dir.join("seed-backend-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    if !python.exists() {
        // The python3 on PATH first; Debian's own if that one cannot make a venv (no
        // ensurepip). A half-made venv is removed before the next try.
        step(&format!("python3 -m venv {}", venv.display()));
        let made = ["python3", "/usr/bin/python3"].iter().any(|py| {
            let _ = std::fs::remove_dir_all(&venv);
            run(Command::new(py).arg("-m").arg("venv").arg(&venv)).is_ok()
        });
        if !made {
            return Err(format!(
                "python3 -m venv {} failed; on Debian: apt-get install -y python3-venv",
                venv.display()
            ));
        }
    }
    step(&format!(
        "pip install -r {} (the FastAPI test backend)",
        requirements.display()
    ));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&stamp, &wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(python)
}

/// `npm ci` when node_modules is missing or older than the lock file.
fn ensure_npm_packages(dir: &Path) -> Result<(), String> {
    let lock = dir.join("package-lock.json");
    if !lock.exists() {
        return Ok(());
    }
    // npm writes node_modules/.package-lock.json on every install: it is the stamp.
    let stamp = dir.join("node_modules/.package-lock.json");
    if is_newer_or_equal(&stamp, &lock) && dir.join("node_modules/.bin").exists() {
        return Ok(());
    }
    step(&format!("npm ci in {}", dir.display()));
    let ci = run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir));
    if ci.is_ok() {
        return ci;
    }
    // The registry mirror here lacks some other platforms' optional binaries (Next.js's
    // @next/swc-darwin-*, -win32-*), so npm leaves them out of the lock it writes and then
    // `npm ci` calls that same lock out of sync. `npm install` takes every version the
    // lock pins and only tolerates those absent entries.
    step(&format!(
        "npm ci refused the lock file; npm install in {}",
        dir.display()
    ));
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save"])
        .current_dir(dir))
}

/// Chromium, chromedriver, nginx and redis-server come from Debian. Installing needs root;
/// without it the error names the packages to install.
fn ensure_apt_packages(wanted: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = APT_TOOLS
        .iter()
        .filter(|(pkg, bin)| wanted.contains(pkg) && !Path::new(bin).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    apt_install(&missing, "")
}

/// Installs Debian packages as root (`apt-get update` once per call, no recommends);
/// without root the error names the packages to install. `label` is shown in the step line.
fn apt_install(missing: &[&str], label: &str) -> Result<(), String> {
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = capture(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false);
    if !is_root {
        return Err(format!(
            "missing system packages: {}. Install them with: sudo apt-get install -y {}",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    step(&format!("apt-get install {}{label}", missing.join(" ")));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The version of `crate_name` recorded in Cargo.lock.
pub fn locked_version(root: &Path, crate_name: &str) -> Result<String, String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))
        .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{crate_name}\"") {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                return Ok(v.trim_matches('"').to_string());
            }
        }
    }
    Err(format!(
        "{crate_name} is not in Cargo.lock; run `cargo generate-lockfile`"
    ))
}

/// WebKit for the browser suite: WebKitGTK's WebDriver and its MiniBrowser (Debian's
/// `webkit2gtk-driver`, which pulls in `libwebkit2gtk-4.1-0`), run under Xvfb because
/// MiniBrowser has no headless mode (`xvfb`, and `xauth`, which `xvfb-run` needs but `xvfb`
/// only recommends). Installing needs root; without it the error names the packages.
const WEBKIT_APT: &[(&str, &str)] = &[
    ("webkit2gtk-driver", "/usr/bin/WebKitWebDriver"),
    ("xvfb", "/usr/bin/xvfb-run"),
    ("xauth", "/usr/bin/xauth"),
];

fn ensure_webkit() -> Result<(), String> {
    let missing: Vec<&str> = WEBKIT_APT
        .iter()
        .filter(|(_, bin)| !Path::new(bin).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    apt_install(&missing, " (WebKit)")
}

/// WebKitWebDriver and xvfb-run, when both are installed (`ensure_webkit`).
pub fn webkit_driver() -> Option<(PathBuf, PathBuf)> {
    let found = |bin: &str| Some(PathBuf::from(bin)).filter(|p| p.exists());
    Some((found(WEBKIT_APT[0].1)?, found(WEBKIT_APT[1].1)?))
}

/// Chromedriver for wasm-bindgen-test-runner.
pub fn chromedriver() -> Option<PathBuf> {
    which("chromedriver")
        .or_else(|| Some(PathBuf::from("/usr/bin/chromedriver")).filter(|p| p.exists()))
}

/// geckodriver for wasm-bindgen-test-runner (installed by `cargo install` into CARGO_HOME/bin).
pub fn geckodriver() -> Option<PathBuf> {
    which("geckodriver")
}

fn is_newer_or_equal(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(a), modified(b)), (Some(x), Some(y)) if x >= y)
}

fn step(what: &str) {
    println!("==> install: {what}");
}
