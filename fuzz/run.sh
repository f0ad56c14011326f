#!/bin/sh
# Runs every engine fuzz target for a bounded time (default 60 s each). Works on stable
# Rust through RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). Usage: fuzz/run.sh [seconds]
set -eu
secs="${1:-60}"
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
# The same build directory as `cargo xtask test --only fuzz`: <target>/fuzz, where <target>
# is CARGO_TARGET_DIR or the repository's target/.
target_dir="${CARGO_TARGET_DIR:-$(pwd)/../target}/fuzz"
for t in sse_parser frame_decoder engine_inputs; do
  echo "== fuzz $t for ${secs}s"
  cargo fuzz run --target-dir "$target_dir" "$t" -- -max_total_time="$secs" -print_final_stats=0
done
