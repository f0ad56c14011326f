//! `cargo xtask test`: every test suite, one after another, and one closing count.
//!
//! Suites:
//! - `native`  — `cargo test --workspace`: the engine (behaviour, simulation, parsers), the
//!               reference server's integration tests (real sockets, real redis-server) and
//!               the deployment-config checks (real nginx).
//! - `js`      — the TypeScript wrapper against a scripted fake of the wasm module
//!               (`node --test js/test/`), no browser.
//! - `fuzz`    — each cargo-fuzz target of the engine (SSE parser, frame decoder, engine
//!               inputs) for a bounded time; a clean run counts as one passed test.
//! - `browser` — wasm-bindgen-test files `tests/browser_*.rs` in headless Chromium, then
//!               headless Firefox, then WebKit (WebKitGTK's MiniBrowser under Xvfb, driven
//!               by WebKitWebDriver), against a reference server this driver starts.
//! - `e2e`     — Playwright (playwright-core driving /usr/bin/chromium) loading the built npm
//!               package: `node --test tests/e2e/ js/e2e/ examples/nextjs/test/` — the
//!               reliability scenarios, the package in Vite/esbuild/script-tag/React pages,
//!               and the Next.js app built with `next build` and served by `next start`.
//!
//! Each suite's own output streams through; its counts are read from the runner's summary
//! lines, and the summary shows passed, failed and skipped per suite. The last line is
//! `N passed, N failed, N skipped`. Nothing can look green without running:
//! - a suite that cannot run (a build error) counts as one failure;
//! - a suite that ran no test (nothing passed or failed: no test found, all skipped)
//!   counts as one failure, and so does a browser that ran none;
//! - `cargo test` runs with `--no-fail-fast`, so one failing test binary does not hide the
//!   counts of the others, and a test binary that started (`running N tests`) but never
//!   reported (`test result:`) — a crash, an abort — counts as one failure;
//! - node's `# cancelled N` (a test cut off by its timeout or a failed hook) counts as
//!   failed; `# skipped` and `# todo` as skipped, cargo's `ignored` as skipped.

use crate::install;
use crate::procs::{self, RunningServer};
use crate::Ctx;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
    /// Test binaries that said `running N tests` and have not yet said `test result:`.
    unfinished: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.unfinished += o.unfinished;
    }

    /// A suite (or one runner of it) that ran nothing fails once.
    fn require_some(&mut self, what: &str) {
        if self.passed + self.failed == 0 {
            eprintln!("{what} ran no test: counted as one failure");
            self.failed += 1;
        }
    }
}

const SUITES: &[&str] = &["native", "js", "fuzz", "browser", "e2e"];

/// The engine's cargo-fuzz targets (fuzz/fuzz_targets/) and how long each runs in a test run
/// (HOLDFAST_FUZZ_SECS overrides; longer campaigns: `fuzz/run.sh 600`).
const FUZZ_TARGETS: &[&str] = &["sse_parser", "frame_decoder", "engine_inputs"];
const FUZZ_SECS_DEFAULT: u64 = 30;

// Upper bounds per suite, including their builds on a cold 2-core machine. Together they
// stay inside CI's 90 minutes with room for the installs.
const NATIVE_LIMIT: Duration = Duration::from_secs(25 * 60);
const FUZZ_LIMIT: Duration = Duration::from_secs(10 * 60);
const JS_LIMIT: Duration = Duration::from_secs(5 * 60);
const BROWSER_LIMIT: Duration = Duration::from_secs(10 * 60);
const E2E_LIMIT: Duration = Duration::from_secs(35 * 60);

pub fn run_all(ctx: &Ctx, args: &[String]) -> Result<(), String> {
    let only: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i > 0 && args[i - 1] == "--only")
        .map(|(_, a)| a.as_str())
        .collect();
    for name in &only {
        if !SUITES.contains(name) {
            return Err(format!(
                "unknown suite `{name}`; suites are {}",
                SUITES.join(", ")
            ));
        }
    }
    let selected: Vec<&str> = SUITES
        .iter()
        .copied()
        .filter(|s| only.is_empty() || only.contains(s))
        .collect();
    install::ensure_for_suites(ctx, &selected)?;

    let mut total = Counts::default();
    let mut lines = Vec::new();
    for &suite in SUITES {
        if !only.is_empty() && !only.contains(&suite) {
            continue;
        }
        println!("\n==> suite {suite}");
        let counts = match run_suite(ctx, suite) {
            Ok(mut c) => {
                c.require_some(&format!("suite {suite}"));
                c
            }
            Err(message) => {
                eprintln!("suite {suite} could not run: {message}");
                Counts {
                    failed: 1,
                    ..Counts::default()
                }
            }
        };
        lines.push(format!("  {suite:<8} {}", summary(&counts)));
        total.add(counts);
    }
    println!("\n==> summary");
    for l in &lines {
        println!("{l}");
    }
    println!("{}", summary(&total));
    if total.failed > 0 {
        Err(format!("{} test(s) failed", total.failed))
    } else if total.passed == 0 {
        Err("no test ran".into())
    } else {
        Ok(())
    }
}

/// `N passed, N failed, N skipped`.
fn summary(c: &Counts) -> String {
    format!(
        "{} passed, {} failed, {} skipped",
        c.passed, c.failed, c.skipped
    )
}

fn run_suite(ctx: &Ctx, suite: &str) -> Result<Counts, String> {
    match suite {
        "native" => {
            let mut cmd = Command::new("cargo");
            cmd.args(["test", "--workspace", "--no-fail-fast"])
                .current_dir(&ctx.root);
            stream_and_count(&mut cmd, NATIVE_LIMIT, parse_cargo_line)
        }
        "js" => {
            let mut cmd = Command::new("node");
            cmd.args(["--test", "--test-reporter=tap"])
                .arg(ctx.root.join("js/test"))
                .current_dir(&ctx.root);
            stream_and_count(&mut cmd, JS_LIMIT, parse_tap_line)
        }
        "fuzz" => fuzz_suite(ctx),
        "browser" => browser_suite(ctx),
        "e2e" => e2e_suite(ctx),
        _ => unreachable!("suite names are checked in run_all"),
    }
}

/// Each fuzz target runs for a bounded time; a clean run is one pass, a crash one failure
/// (libFuzzer exits non-zero and leaves the input in fuzz/artifacts/).
fn fuzz_suite(ctx: &Ctx) -> Result<Counts, String> {
    let secs = std::env::var("HOLDFAST_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(FUZZ_SECS_DEFAULT);
    let mut total = Counts::default();
    for target in FUZZ_TARGETS {
        println!("--> fuzz {target} for {secs} s");
        // Output to a log under the target dir, one summary line here (xtask/src/fuzz.rs).
        if crate::fuzz::run_target(ctx, target, secs, FUZZ_LIMIT)? {
            total.passed += 1;
        } else {
            total.failed += 1;
        }
    }
    Ok(total)
}

fn browser_suite(ctx: &Ctx) -> Result<Counts, String> {
    let has_browser_tests = std::fs::read_dir(ctx.root.join("tests"))
        .map(|d| {
            d.filter_map(Result::ok).any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("browser_") && name.ends_with(".rs")
            })
        })
        .unwrap_or(false);
    if !has_browser_tests {
        return Err("no tests/browser_*.rs files found".into());
    }
    let server_bin = procs::build_server(ctx, false)?;
    let server = RunningServer::start(&server_bin, &[])?;
    // wasm-bindgen-test-runner picks the browser from the driver variable that is set, so
    // each browser gets its own run with only its driver in the environment.
    let drivers = [
        ("Chromium", "CHROMEDRIVER", install::chromedriver()),
        ("Firefox", "GECKODRIVER", install::geckodriver()),
    ];
    let mut total = Counts::default();
    for (browser, variable, driver) in drivers {
        let driver = driver.ok_or_else(|| format!("the {browser} driver is not installed"))?;
        println!("--> browser tests in headless {browser}");
        let mut cmd = wasm_browser_tests(ctx, &server.url);
        cmd.env(variable, driver);
        let mut counts = stream_and_count(&mut cmd, BROWSER_LIMIT, parse_cargo_line)?;
        counts.require_some(&format!("headless {browser}"));
        total.add(counts);
    }
    total.add(webkit_browser_tests(ctx, &server.url));
    Ok(total)
}

/// `cargo test` of the wasm-bindgen-test files against the server at `server_url`, with
/// every browser driver variable removed: wasm-bindgen-test-runner takes the first
/// `*_REMOTE` it finds (gecko before safari), then the local ones, so the caller sets only
/// its own.
fn wasm_browser_tests(ctx: &Ctx, server_url: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args([
        "test",
        "--no-fail-fast",
        "-p",
        "holdfast",
        "--target",
        "wasm32-unknown-unknown",
        "--test",
        "browser_*",
    ]);
    for browser in [
        "CHROMEDRIVER",
        "GECKODRIVER",
        "SAFARIDRIVER",
        "MSEDGEDRIVER",
    ] {
        cmd.env_remove(browser)
            .env_remove(format!("{browser}_REMOTE"));
    }
    cmd.env("HOLDFAST_TEST_URL", server_url)
        .env("WASM_BINDGEN_TEST_TIMEOUT", "120")
        .current_dir(&ctx.root);
    cmd
}

/// The browser tests in WebKit: WebKitGTK's MiniBrowser, the engine of Safari and of every
/// iOS browser. MiniBrowser has no headless mode, so its WebDriver runs under `xvfb-run`,
/// started here on 127.0.0.1 and killed at the end (`WebKitDriver`). wasm-bindgen-test-runner
/// reaches it as a remote "safaridriver" (`SAFARIDRIVER_REMOTE`): that path asks for a
/// session with no capabilities, and WebKitWebDriver's default browser is MiniBrowser in
/// automation mode. WebKit that is not installed or does not start counts as one failure:
/// CI installs it (install.rs), so a missing browser there is a broken matrix.
fn webkit_browser_tests(ctx: &Ctx, server_url: &str) -> Counts {
    let failed = |why: &str| {
        println!("--> WebKit skipped: {why}: counted as one failure");
        Counts {
            failed: 1,
            ..Counts::default()
        }
    };
    let Some((webdriver, xvfb_run)) = install::webkit_driver() else {
        return failed("WebKitWebDriver or xvfb-run is not installed (see the install step above)");
    };
    let log = ctx.target_dir.join("webkit-webdriver.log");
    let driver = match WebKitDriver::start(&webdriver, &xvfb_run, &log) {
        Ok(d) => d,
        Err(e) => return failed(&e),
    };
    println!("--> browser tests in WebKit (MiniBrowser under Xvfb)");
    let mut cmd = wasm_browser_tests(ctx, server_url);
    cmd.env("SAFARIDRIVER_REMOTE", &driver.url);
    let mut counts = match stream_and_count(&mut cmd, BROWSER_LIMIT, parse_cargo_line) {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    if counts.failed > 0 {
        println!("    (WebKitWebDriver's log: {})", log.display());
    }
    counts.require_some("WebKit");
    drop(driver);
    counts
}

/// WebKitWebDriver under `xvfb-run -a` (a free display, no X over TCP), on a free port of
/// 127.0.0.1, in a process group of its own. Dropping it ends the group: xvfb-run, Xvfb,
/// the driver and any MiniBrowser it left. `timeout` bounds the group's life even if this
/// driver dies first (a Ctrl-C does not reach another process group).
struct WebKitDriver {
    child: std::process::Child,
    url: String,
}

impl WebKitDriver {
    fn start(
        webdriver: &std::path::Path,
        xvfb_run: &std::path::Path,
        log: &std::path::Path,
    ) -> Result<WebKitDriver, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // The X authority file beside the log (`-f`): without one, xvfb-run makes a
        // temporary directory that only its own exit removes, and the group's TERM ends it
        // before it can.
        let lifetime = BROWSER_LIMIT + Duration::from_secs(120);
        let child = Command::new("timeout")
            .args(["-k", "5", &format!("{}s", lifetime.as_secs())])
            .arg(xvfb_run)
            .arg("-a")
            .arg("-f")
            .arg(log.with_extension("xauthority"))
            .arg(webdriver)
            .arg(format!("--port={port}"))
            .arg("--host=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", xvfb_run.display()))?;
        let mut driver = WebKitDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Err(format!(
                    "xvfb-run {} exited with {status} (log: {})",
                    webdriver.display(),
                    log.display()
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(driver);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "WebKitWebDriver did not listen on 127.0.0.1:{port} within 30 s (log: {})",
            log.display()
        ))
    }
}

impl Drop for WebKitDriver {
    fn drop(&mut self) {
        // TERM first, so Xvfb removes its display's lock file; then KILL whatever of the
        // group is left.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn e2e_suite(ctx: &Ctx) -> Result<Counts, String> {
    let report = crate::package::run(&ctx.root, &ctx.target_dir)?;
    let server_bin = procs::build_server(ctx, false)?;
    let proxy_bin = procs::build_fault_proxy(ctx)?;
    let _ = install::ensure_seed_backend(ctx).map_err(|e| eprintln!("seed backend: {e}"));
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=tap", "--test-concurrency=1"])
        .arg(ctx.root.join("tests/e2e"))
        .arg(ctx.root.join("js/e2e"))
        .arg(ctx.root.join("examples/nextjs/test"))
        .env("HOLDFAST_SERVER_BIN", &server_bin)
        .env("HOLDFAST_FAULT_PROXY_BIN", &proxy_bin)
        .env("HOLDFAST_PACKAGE_DIR", &report.package_dir)
        .env("HOLDFAST_ROOT", &ctx.root)
        .current_dir(&ctx.root);
    stream_and_count(&mut cmd, E2E_LIMIT, parse_tap_line)
}

/// Runs `cmd`, echoing its stdout line by line and adding up the counts `parse` finds.
/// A runner that exits non-zero without reporting a failure counts as one failure.
///
/// A suite that outlives `limit` is killed with its whole process group (test binaries,
/// browsers, servers) and counts as a failure: a hang must fail the run, not eat CI's
/// 90 minutes.
fn stream_and_count(
    cmd: &mut Command,
    limit: Duration,
    parse: fn(&str, &mut Counts),
) -> Result<Counts, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{}: {e}", procs::describe(cmd)))?;
    let group = child.id();
    let finished = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (finished, timed_out) = (finished.clone(), timed_out.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if finished.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            timed_out.store(true, Ordering::Relaxed);
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
        })
    };
    let mut counts = Counts::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        println!("{line}");
        parse(&line, &mut counts);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    finished.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    if counts.unfinished > 0 {
        eprintln!(
            "{} test binar{} of `{}` started but never reported a result (crashed?): counted as failed",
            counts.unfinished,
            if counts.unfinished == 1 { "y" } else { "ies" },
            procs::describe(cmd)
        );
        counts.failed += counts.unfinished;
        counts.unfinished = 0;
    }
    if timed_out.load(Ordering::Relaxed) {
        counts.failed += 1;
        eprintln!(
            "`{}` was still running after {} s and was killed",
            procs::describe(cmd),
            limit.as_secs()
        );
    } else if !status.success() && counts.failed == 0 {
        counts.failed = 1;
        eprintln!("`{}` exited with {status}", procs::describe(cmd));
    }
    Ok(counts)
}

/// `running 12 tests` opens a test binary's run and `test result: ok. 12 passed; 0 failed;
/// 1 ignored; …` closes it (cargo and wasm-bindgen-test-runner); ignored tests are skipped.
fn parse_cargo_line(line: &str, c: &mut Counts) {
    let line = line.trim();
    if let Some(n) = line.strip_prefix("running ") {
        let n = n.strip_suffix(" tests").or_else(|| n.strip_suffix(" test"));
        if n.is_some_and(|n| n.parse::<u64>().is_ok()) {
            c.unfinished += 1;
        }
        return;
    }
    let Some(rest) = line.strip_prefix("test result: ") else {
        return;
    };
    c.unfinished = c.unfinished.saturating_sub(1);
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let n: u64 = n.parse().unwrap_or(0);
        match label {
            "passed" => c.passed += n,
            "failed" => c.failed += n,
            "ignored" => c.skipped += n,
            _ => {}
        }
    }
}

/// TAP summary lines from node's test runner: `# pass 3`, `# fail 0`, `# cancelled 0`
/// (failed: cut off by a timeout or a failing hook), `# skipped 0`, `# todo 0`.
fn parse_tap_line(line: &str, c: &mut Counts) {
    let Some(rest) = line.trim().strip_prefix("# ") else {
        return;
    };
    let Some((label, n)) = rest.split_once(' ') else {
        return;
    };
    let Ok(n) = n.trim().parse::<u64>() else {
        return;
    };
    match label {
        "pass" => c.passed += n,
        "fail" | "cancelled" => c.failed += n,
        "skipped" | "todo" => c.skipped += n,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_from_cargo_summary_lines() {
        let mut c = Counts::default();
        parse_cargo_line(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            &mut c,
        );
        parse_cargo_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured",
            &mut c,
        );
        assert_eq!((c.passed, c.failed, c.skipped), (15, 2, 1));
    }

    #[test]
    fn a_test_binary_that_never_reports_is_left_unfinished() {
        let mut c = Counts::default();
        for l in [
            "running 2 tests",
            "test a ... ok",
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured",
            "running 1 test",
            "test b ... ",
            "running 5 tests",
            "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured",
            "running the server", // not a runner line
        ] {
            parse_cargo_line(l, &mut c);
        }
        assert_eq!((c.passed, c.failed, c.unfinished), (6, 1, 1));
    }

    #[test]
    fn reads_counts_from_tap_summary_lines() {
        let mut c = Counts::default();
        for l in [
            "# tests 9",
            "# suites 0",
            "# pass 3",
            "# fail 1",
            "# cancelled 2",
            "# skipped 1",
            "# todo 2",
            "# duration_ms 12.5",
            "# Subtest: pass 4",
            "ok 1 - x",
        ] {
            parse_tap_line(l, &mut c);
        }
        assert_eq!((c.passed, c.failed, c.skipped), (3, 3, 3));
    }

    #[test]
    fn a_suite_that_ran_nothing_fails_once() {
        let mut none = Counts {
            skipped: 4,
            ..Counts::default()
        };
        none.require_some("suite x");
        assert_eq!((none.passed, none.failed), (0, 1));
        let mut some = Counts {
            passed: 1,
            ..Counts::default()
        };
        some.require_some("suite y");
        assert_eq!((some.passed, some.failed), (1, 0));
    }
}
