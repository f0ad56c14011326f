//! `cargo xtask package`: builds the npm package from the Rust crate and the TypeScript
//! wrapper, using only `std::process::Command` (xtask has no dependencies).
//!
//! Contract: `run(root, target_dir)` builds into `target_dir` (the Cargo target dir),
//! writes the wasm-bindgen glue to `js/wasm/` (generated, gitignored), bundles `js/src/`
//! with esbuild into `<target>/npm/holdfast/dist/` (`<target>`: `target/` or
//! `CARGO_TARGET_DIR`), copies `pkg-template/` beside it, runs `npm pack` into
//! `<target>/npm/`, and reports the bytes a browser downloads for `createClient` (raw,
//! gzip, brotli; computed by node's zlib). Every step either succeeds
//! or returns an `Err` naming the step and the command's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What one package build produced.
#[allow(dead_code)] // the lead's xtask reads `package_dir`; the rest is for reports
#[derive(Debug, Clone)]
pub struct PackageReport {
    /// `<target>/npm/holdfast/` (what is packed; serve it as `/pkg/` in the demo).
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

/// The size build: the standard library rebuilt with panics that trap at once (no panic
/// or formatting machinery, no panic message: the wrapper recovers a trapped client, see
/// `take_trap`) and without source locations. Measured on Rust 1.95.0, 2026-12-06, as the
/// download for `createClient` (gzip) built without each part, the rest kept:
/// all of it 8.9 KB (the stable build: 85.0 KB instead of 76.1 KB);
/// `-Cpanic=immediate-abort` 4.4 KB; `-Zlocation-detail=none` 0.4 KB (4.9 KB without
/// immediate-abort: the two overlap); `-Zbuild-std` alone nothing (it is what lets std be
/// built with immediate-abort). Dropped after the same measurement:
/// `-Zbuild-std-features=optimize_for_size` (15 B smaller without it) and
/// `-Zfmt-debug=none` (not one byte: nothing formats `{:?}` in the package). These are
/// unstable flags: `RUSTC_BOOTSTRAP=1` scopes them to this one cargo call on the stable
/// toolchain, with its `rust-src` component (install.rs adds it). A Rust release may
/// change or refuse them, so a failed size build falls back to the stable one
/// ([`build_wasm`]).
const SIZE_ARGS: &[&str] = &[
    "-Zbuild-std=std,panic_abort",
    // Appended to the target's rustflags in .cargo/config.toml (arrays merge).
    "--config",
    "target.wasm32-unknown-unknown.rustflags=[\"-Zunstable-options\", \"-Cpanic=immediate-abort\", \"-Zlocation-detail=none\"]",
];

/// What the stable build costs, as measured (see [`SIZE_ARGS`]); printed when it is used.
const STABLE_COST: &str = "larger (the package's createClient download by 8.9 KB gzip: \
     85.0 KB instead of 76.1 KB, measured on Rust 1.95.0)";

/// Builds the package. `target_dir` is the Cargo target directory to build in. The tools
/// (wasm-bindgen-cli at the locked version, npm packages) are installed by the caller
/// through `install::ensure_build_tools`.
pub fn run(root: &Path, target_dir: &Path) -> Result<PackageReport, String> {
    if !root.join("node_modules/.bin/esbuild").exists() {
        run_cmd("npm ci", Command::new("npm").arg("ci").current_dir(root))?;
    }

    let glue_dir = root.join("js/wasm");
    let (_, _, fallback) = build_wasm(
        root,
        target_dir,
        &root.join("Cargo.toml"),
        "holdfast",
        &glue_dir,
        "holdfast_wasm",
    )?;

    // 4. Bundles and types (js/build.mjs drives esbuild and tsc).
    let npm_root = target_dir.join("npm");
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
    copy_licenses(root, &pkg_dir)?;
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
    if let Some(warning) = fallback {
        println!("{warning}");
    }
    Ok(PackageReport {
        package_dir: pkg_dir,
        tarball,
        esm,
        script,
    })
}

/// The licence texts ship in the package (listed in pkg-template/package.json's `files`:
/// npm packs only a plain LICENSE file by itself).
fn copy_licenses(root: &Path, pkg_dir: &Path) -> Result<(), String> {
    for name in ["LICENSE-MIT", "LICENSE-APACHE"] {
        fs::copy(root.join(name), pkg_dir.join(name))
            .map_err(|e| format!("copying {name}: {e}"))?;
    }
    Ok(())
}

/// Steps 1–3 of a package build, for any crate of the shape of `holdfast` (the package, and
/// the size floor in `bench/size-floor`): builds `manifest`'s cdylib `crate_name.wasm`, runs
/// wasm-bindgen into `out_dir` as `out_name.js` + `out_name_bg.wasm`, then wasm-opt and
/// short names. Returns the paths of the glue and the wasm, and the warning to repeat
/// beside the size report when the size build failed and the stable one was used.
///
/// The size build ([`SIZE_ARGS`]) is tried first. When it fails (a Rust release that
/// changed an unstable flag, no `rust-src`) the same crate is built without those flags,
/// which stable Rust supports: a working package, larger by [`STABLE_COST`], and a one-line
/// warning. When that fails too, the code is at fault and its error is the one returned.
/// `HOLDFAST_STABLE_BUILD=1` skips the size build (to check the stable one, or to build
/// on a toolchain known to refuse the flags).
pub fn build_wasm(
    root: &Path,
    target_dir: &Path,
    manifest: &Path,
    crate_name: &str,
    out_dir: &Path,
    out_name: &str,
) -> Result<(PathBuf, PathBuf, Option<String>), String> {
    // 1. The wasm, small over fast (see [profile.wasm-release]).
    let cargo = |size: bool| {
        let mut cmd = Command::new("cargo");
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(manifest)
            .args(["-p", crate_name])
            .args(["--lib", "--target", "wasm32-unknown-unknown"])
            .args(["--profile", "wasm-release"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(root);
        if size {
            cmd.args(SIZE_ARGS).env("RUSTC_BOOTSTRAP", "1");
        }
        cmd
    };
    let size_build = if std::env::var_os("HOLDFAST_STABLE_BUILD").is_some_and(|v| v == "1") {
        Err("skipped (HOLDFAST_STABLE_BUILD=1)".to_string())
    } else {
        run_cmd(
            "cargo build (wasm32, wasm-release, std rebuilt for size)",
            &mut cargo(true),
        )
        .map(|_| ())
    };
    let fallback = match size_build {
        Ok(()) => None,
        Err(size_error) => {
            run_cmd(
                "cargo build (wasm32, wasm-release, stable)",
                &mut cargo(false),
            )
            .map_err(|e| {
                format!(
                    "{e}\n(the size build failed first: {})",
                    first_error(&size_error)
                )
            })?;
            let warning = format!(
                "warning: {crate_name} was built without the size flags (std rebuilt for size, \
                 panics that trap at once): {STABLE_COST}. The size build: {}",
                first_error(&size_error)
            );
            eprintln!("{warning}");
            Some(warning)
        }
    };
    let wasm = target_dir.join(format!(
        "wasm32-unknown-unknown/wasm-release/{crate_name}.wasm"
    ));

    // 2. JS glue for the web target: ESM with an explicit init (no bundler-specific imports).
    let _ = fs::remove_dir_all(out_dir);
    run_cmd(
        "wasm-bindgen",
        Command::new("wasm-bindgen")
            .args(["--target", "web", "--out-name", out_name, "--out-dir"])
            .arg(out_dir)
            .arg(&wasm),
    )?;

    // 3. wasm-opt from the npm binaryen (Debian's v108 breaks the externref table init).
    let bg = out_dir.join(format!("{out_name}_bg.wasm"));
    run_cmd(
        "wasm-opt -Oz",
        Command::new(root.join("node_modules/.bin/wasm-opt"))
            // --converge repeats -Oz while it still shrinks: 0.2 KB gzip for a few seconds.
            .args(["-Oz", "--converge"])
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

    // 3b. Short import/export names: wasm-bindgen's hashed names (`__wbg_call_a410eb4b…`)
    // appear twice (glue and wasm) and do not compress.
    let glue = out_dir.join(format!("{out_name}.js"));
    shorten_names(&glue, &bg, &format!("./{out_name}_bg.js"))?;
    Ok((glue, bg, fallback))
}

/// The line of a failed command's output that says why (its first `error`), or its first line.
fn first_error(output: &str) -> &str {
    output
        .lines()
        .find(|l| l.trim_start().starts_with("error"))
        .or_else(|| output.lines().next())
        .unwrap_or("")
        .trim()
}

/// `cargo xtask size-floor`: the engine alone (bench/size-floor), built like the package.
/// Prints its wasm and glue sizes: the least any download that runs this engine can be.
/// Returns the directory holding `floor_bg.wasm` and the minified glue `floor.min.js`.
pub fn size_floor(root: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let out_dir = target_dir.join("size-floor");
    let (glue, bg, fallback) = build_wasm(
        root,
        target_dir,
        &root.join("bench/size-floor/Cargo.toml"),
        "holdfast_size_floor",
        &out_dir,
        "floor",
    )?;
    // Minified, as the package's bundle carries it.
    let min_glue = out_dir.join("floor.min.js");
    run_cmd(
        "esbuild --minify (glue)",
        Command::new(root.join("node_modules/.bin/esbuild"))
            .arg(&glue)
            .args(["--minify", "--format=esm", "--log-level=warning"])
            .arg(format!("--outfile={}", min_glue.display())),
    )?;
    let wasm = sizes(&[bg])?;
    let glue = sizes(&[min_glue])?;
    println!(
        "engine alone (bench/size-floor; no web layer, no wrapper):\n  \
         wasm {} B raw, {} B gzip, {} B brotli\n  \
         glue (minified) {} B raw, {} B gzip, {} B brotli\n  \
         together {} B gzip, {} B brotli",
        wasm.raw,
        wasm.gzip,
        wasm.brotli,
        glue.raw,
        glue.gzip,
        glue.brotli,
        wasm.gzip + glue.gzip,
        wasm.brotli + glue.brotli
    );
    if let Some(warning) = fallback {
        println!("{warning}");
    }
    Ok(out_dir)
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

/// Renames the wasm's imports from the glue module and the exports the glue reaches as
/// `wasm.NAME` to one- or two-letter names, in the `.wasm` and in the glue alike.
fn shorten_names(glue: &Path, wasm: &Path, glue_module: &str) -> Result<(), String> {
    let js = fs::read_to_string(glue).map_err(|e| format!("reading {glue:?}: {e}"))?;
    let bin = fs::read(wasm).map_err(|e| format!("reading {wasm:?}: {e}"))?;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    walk_names(&bin, &mut |section, module, name| {
        if section == 2 && module == Some(glue_module) {
            imports.push(name.to_string());
        } else if section == 7 && only_as_wasm_property(&js, name) {
            exports.push(name.to_string());
        }
        None
    })?;
    let imap: std::collections::HashMap<String, String> = imports
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), short_name(i)))
        .collect();
    let emap: std::collections::HashMap<String, String> = exports
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), short_name(i)))
        .collect();
    let new_bin = walk_names(&bin, &mut |section, module, name| match section {
        2 if module == Some(glue_module) => imap.get(name).cloned(),
        7 => emap.get(name).cloned(),
        _ => None,
    })?;
    let new_js = rename_tokens(&js, &imap, &emap);
    fs::write(wasm, new_bin).map_err(|e| format!("writing {wasm:?}: {e}"))?;
    fs::write(glue, new_js).map_err(|e| format!("writing {glue:?}: {e}"))?;
    Ok(())
}

fn short_name(mut i: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut s = String::new();
    loop {
        s.insert(0, A[i % A.len()] as char);
        if i < A.len() {
            return s;
        }
        i = i / A.len() - 1;
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Every occurrence of `name` as a whole identifier in `js` is `wasm.name`.
fn only_as_wasm_property(js: &str, name: &str) -> bool {
    let b = js.as_bytes();
    let mut found = false;
    let mut from = 0;
    while let Some(i) = js[from..].find(name).map(|i| i + from) {
        from = i + name.len();
        let before_ok = i == 0 || !is_ident(b[i - 1]);
        let after_ok = from >= b.len() || !is_ident(b[from]);
        if !(before_ok && after_ok) {
            continue;
        }
        if i < 5 || &js[i - 5..i] != "wasm." {
            return false;
        }
        found = true;
    }
    found
}

/// Import keys are replaced as whole identifiers; exports only after `wasm.`.
fn rename_tokens(
    js: &str,
    imports: &std::collections::HashMap<String, String>,
    exports: &std::collections::HashMap<String, String>,
) -> String {
    let b = js.as_bytes();
    let mut out = String::with_capacity(js.len());
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let tok = &js[start..i];
            let after_wasm = start >= 5 && &js[start - 5..start] == "wasm.";
            match (imports.get(tok), exports.get(tok)) {
                (_, Some(e)) if after_wasm => out.push_str(e),
                (Some(n), _) if !after_wasm => out.push_str(n),
                _ => out.push_str(tok),
            }
        } else {
            let c = js[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn read_leb(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = *b.get(*pos).ok_or("wasm: truncated LEB128")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err("wasm: LEB128 too long".into());
        }
    }
}

fn write_leb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_name<'a>(b: &'a [u8], pos: &mut usize) -> Result<&'a str, String> {
    let len = read_leb(b, pos)? as usize;
    let s = b.get(*pos..*pos + len).ok_or("wasm: truncated name")?;
    *pos += len;
    std::str::from_utf8(s).map_err(|_| "wasm: name is not UTF-8".to_string())
}

fn write_name(s: &str, out: &mut Vec<u8>) {
    write_leb(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Skips a `limits` (table/memory) encoding.
fn skip_limits(b: &[u8], pos: &mut usize) -> Result<(), String> {
    let flags = *b.get(*pos).ok_or("wasm: truncated limits")?;
    *pos += 1;
    read_leb(b, pos)?;
    if flags & 1 != 0 {
        read_leb(b, pos)?;
    }
    Ok(())
}

/// Walks the import (2) and export (7) sections, calling `f(section, module, name)` for
/// each entry (`module` only for imports), and returns the module with every name `f`
/// answered `Some(new)` for renamed. Other sections are copied byte for byte.
fn walk_names(
    b: &[u8],
    f: &mut dyn FnMut(u8, Option<&str>, &str) -> Option<String>,
) -> Result<Vec<u8>, String> {
    if b.len() < 8 || &b[..4] != b"\0asm" {
        return Err("not a wasm module".into());
    }
    let mut out = b[..8].to_vec();
    let mut pos = 8;
    while pos < b.len() {
        let id = b[pos];
        pos += 1;
        let size = read_leb(b, &mut pos)? as usize;
        let body = b.get(pos..pos + size).ok_or("wasm: truncated section")?;
        pos += size;
        if id != 2 && id != 7 {
            out.push(id);
            write_leb(size as u64, &mut out);
            out.extend_from_slice(body);
            continue;
        }
        let mut p = 0;
        let count = read_leb(body, &mut p)?;
        let mut nb = Vec::with_capacity(body.len());
        write_leb(count, &mut nb);
        for _ in 0..count {
            let module = if id == 2 {
                Some(read_name(body, &mut p)?)
            } else {
                None
            };
            let name = read_name(body, &mut p)?;
            let new = f(id, module, name);
            if let Some(m) = module {
                write_name(m, &mut nb);
            }
            write_name(new.as_deref().unwrap_or(name), &mut nb);
            let desc_start = p;
            let kind = *body.get(p).ok_or("wasm: truncated entry")?;
            p += 1;
            match (id, kind) {
                (7, _) | (2, 0) => {
                    read_leb(body, &mut p)?;
                }
                (2, 1) => {
                    p += 1; // reftype
                    skip_limits(body, &mut p)?;
                }
                (2, 2) => skip_limits(body, &mut p)?,
                (2, 3) => p += 2, // valtype, mutability
                (2, 4) => {
                    p += 1; // tag attribute
                    read_leb(body, &mut p)?;
                }
                _ => return Err(format!("wasm: unknown import kind {kind}")),
            }
            nb.extend_from_slice(body.get(desc_start..p).ok_or("wasm: truncated entry")?);
        }
        out.push(id);
        write_leb(nb.len() as u64, &mut out);
        out.extend_from_slice(&nb);
    }
    Ok(out)
}
