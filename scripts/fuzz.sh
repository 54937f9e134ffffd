#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (fuzz/, docs/security.md "Fuzzing"):
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Installs cargo-fuzz (pinned) into target/tools if it is missing, builds
# every target, then runs each for the given time, starting from a scratch
# copy of its committed seed corpus (fuzz/corpus/<target>, never written to).
# Exits non-zero if any target crashed, timed out or ran out of memory, and
# says which; the crashing input is kept under fuzz/artifacts/<target>/.
# Add it to fuzz/corpus/<target>/ once the bug is fixed.
#
# Stable Rust only: with `--sanitizer none` (and no --build-std) cargo-fuzz
# passes no -Z flag, so no nightly and no RUSTC_BOOTSTRAP are needed. The
# coverage instrumentation (-Cpasses=sancov-module) is a stable flag, and
# overflow checks and debug assertions stay on, so arithmetic overflow and
# failed invariants are crashes. Without AddressSanitizer the fuzzers find
# panics, aborts, hangs and excessive memory; the crates have no unsafe code.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

secs=${1:-60}
if [ $# -gt 0 ]; then shift; fi
case $secs in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;; esac

CARGO_FUZZ_VERSION=0.13.2
tools="${AETHERFS_TOOLS_DIR:-$repo/target/tools}"
export PATH="$tools/bin:$PATH"
if [ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked --root "$tools"
fi

# The fuzz package is its own workspace with its own build directory: a
# CARGO_TARGET_DIR meant for the main workspace would mix instrumented and
# plain builds of the same crates.
unset CARGO_TARGET_DIR
target_dir="${AETHERFS_FUZZ_TARGET_DIR:-$repo/fuzz/target}"
triple=$(rustc -vV | sed -n 's/^host: //p')
cd fuzz
# cargo-fuzz has no --locked: check the committed lock file first, so a stale
# one fails here rather than being rewritten by the build.
cargo metadata --locked --format-version 1 >/dev/null
start=$SECONDS
cargo fuzz build --sanitizer none --target-dir "$target_dir"
echo "fuzz targets built in $((SECONDS - start)) s"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

scratch="$target_dir/fuzz-run"
rm -rf "$scratch"
mkdir -p "$scratch"
failed=()
for t in "${targets[@]}"; do
  bin="$target_dir/$triple/release/$t"
  [ -x "$bin" ] || { echo "no fuzz target $t (cargo fuzz list)" >&2; exit 2; }
  mkdir -p "$scratch/$t" "$repo/fuzz/artifacts/$t"
  [ -d "corpus/$t" ] && cp -R "corpus/$t/." "$scratch/$t/"
  log="$scratch/$t.log"
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: libFuzzer's default, stated.
  if "$bin" "$scratch/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$repo/fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    echo "fuzz $t: ok, ${runs:-?} runs in ${secs} s, $cov, corpus $(find "$scratch/$t" -type f | wc -l) inputs"
  else
    echo "fuzz $t: FAILED; the end of its log ($log):"
    { grep -E "panicked at|^Error|ERROR: libFuzzer|SUMMARY|Test unit written|Base64" "$log" || true; } | head -20 | sed 's/^/  /'
    tail -5 "$log" | sed 's/^/  /'
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found a crash in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${secs} s each, no crash"
