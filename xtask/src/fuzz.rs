//! One cargo-fuzz target of the fuzz suite, run for a bounded time with its output in a log.
//!
//! libFuzzer prints a line per new input and per pulse (thousands in a 30 s run), which
//! buried the rest of a test run's output. Its output, and that of the target's build, goes
//! to `<target>/fuzz/logs/<fuzz target>.log` instead; a clean run prints one line (libFuzzer's
//! `Done N runs in S second(s)`), a failed one the last lines of the log and where the rest
//! is. The fuzz crate is its own workspace; it builds into `<target>/fuzz`, so it moves with
//! `CARGO_TARGET_DIR` like everything else the driver builds.

use crate::procs::describe;
use crate::Ctx;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of the log shown when a target fails.
const TAIL_LINES: usize = 40;

/// Runs `target` for `secs` seconds (killed with its process group after `limit`).
/// `Ok(true)` for a clean run, `Ok(false)` for a crash, a failed build or a timeout.
pub fn run_target(ctx: &Ctx, target: &str, secs: u64, limit: Duration) -> Result<bool, String> {
    let fuzz_target_dir = ctx.target_dir.join("fuzz");
    let logs = fuzz_target_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;

    let mut cmd = Command::new("cargo");
    cmd.args(["fuzz", "run", "--target-dir"])
        .arg(&fuzz_target_dir)
        .arg(target)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=0")
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(ctx.root.join("fuzz"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", describe(&cmd)))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let lines = read_lines(&log_path);
    match status {
        Some(s) if s.success() => {
            let done = lines
                .iter()
                .rev()
                .find(|l| l.starts_with("Done "))
                .map(String::as_str)
                .unwrap_or("finished");
            println!("    {target}: ok, {done} (log: {})", log_path.display());
            Ok(true)
        }
        other => {
            match other {
                Some(s) => eprintln!("    {target}: `{}` exited with {s}", describe(&cmd)),
                None => eprintln!(
                    "    {target}: still running after {} s and killed",
                    limit.as_secs()
                ),
            }
            eprintln!(
                "    last {} lines of {} (a crashing input is kept in fuzz/artifacts/{target}/):",
                TAIL_LINES.min(lines.len()),
                log_path.display()
            );
            for l in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
                eprintln!("    | {l}");
            }
            Ok(false)
        }
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    File::open(path)
        .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
        .unwrap_or_default()
}
