//! Small process and file helpers shared by the xtask commands.

use crate::Ctx;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs a command with inherited output; an error names the command and its status.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("{}: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed with {status}", describe(cmd)))
    }
}

/// Runs a command and returns its stdout.
pub fn capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!("`{}` failed with {}", describe(cmd), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Builds `holdfast-server` and returns the binary's path.
pub fn build_server(ctx: &Ctx, release: bool) -> Result<PathBuf, String> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--quiet", "-p", "holdfast-server", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    cmd.current_dir(&ctx.root);
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(ctx.target_dir.join(profile).join("holdfast-server"))
}

/// Builds the fault-injecting proxy the reliability scenarios put between browser and server.
pub fn build_fault_proxy(ctx: &Ctx) -> Result<PathBuf, String> {
    run(Command::new("cargo")
        .args(["build", "--quiet", "-p", "holdfast-fault-proxy", "--bins"])
        .current_dir(&ctx.root))?;
    Ok(ctx.target_dir.join("debug").join("holdfast-fault-proxy"))
}

/// A reference server started for a test suite; killed when dropped.
pub struct RunningServer {
    child: Child,
    pub url: String,
}

impl RunningServer {
    /// Starts the server on a free port and waits for its `listening on http://…` line.
    pub fn start(binary: &Path, extra_args: &[&str]) -> Result<RunningServer, String> {
        let mut child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Ok(RunningServer { child, url }),
            Err(_) => {
                let _ = child.kill();
                Err(format!(
                    "{} did not print `listening on http://…` within 30 s",
                    binary.display()
                ))
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Recursively copies a directory (the demo site is assembled from a few folders).
pub fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let dest = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .map_err(|e| format!("{} → {}: {e}", entry.path().display(), dest.display()))?;
        }
    }
    Ok(())
}
