#!/usr/bin/env bash
# Builds every fuzz target and runs each one, one after the other.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS (default 20) is the fuzzing time per target; 0 only replays the committed seed corpus
# (fuzz/corpus/<target>, `-runs=0`): the quick regression check CI uses. New inputs found while
# fuzzing go to fuzz/target/fuzz-corpus/<target> (not committed); crashes to fuzz/artifacts/<target>.
# Exits non-zero when a target fails to build, crashes or breaks its property.
#
# Environment: FUZZ_SANITIZER (default `none`: portcullis forbids unsafe code; `address` for ASan).
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-20}"
shift || true
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

# cargo-fuzz needs nightly -Z flags; stable accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
san="${FUZZ_SANITIZER:-none}"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
mkdir -p target/fuzz-logs
if ! cargo fuzz build -s "$san" >target/fuzz-logs/build.log 2>&1; then
    grep -E -A 12 '^error' target/fuzz-logs/build.log | head -n 80 || tail -n 40 target/fuzz-logs/build.log
    echo "FAILED  build (log: fuzz/target/fuzz-logs/build.log)" >&2
    exit 1
fi
echo "build: $(( $(date +%s) - start ))s"
# Run the built binaries directly: `cargo fuzz run` would start cargo again for every target.
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"
failed=()
for t in "${targets[@]}"; do
    log="target/fuzz-logs/$t.log"
    args=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [ "$secs" -eq 0 ]; then
        dirs=("corpus/$t")
        args+=(-runs=0)
    else
        mkdir -p "target/fuzz-corpus/$t"
        dirs=("target/fuzz-corpus/$t" "corpus/$t")
        args+=(-max_total_time="$secs")
        [ -f "dict/$t.dict" ] && args+=(-dict="dict/$t.dict")
    fi
    mkdir -p "artifacts/$t"
    if "$bin/$t" -artifact_prefix="artifacts/$t/" "${args[@]}" "${dirs[@]}" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "ok      $t: ${runs:-?} executions"
    else
        echo "FAILED  $t (log: fuzz/$log)"
        { grep -E -A 3 -m 1 'panicked at' "$log" | grep -v -E '^ *[0-9]+: |^ *at |^stack backtrace' ; grep -E 'Test unit written|ERROR: libFuzzer' "$log"; } | cut -c 1-300 | sed 's/^/        /' || tail -n 20 "$log"
        failed+=("$t")
    fi
done
echo "total: $(( $(date +%s) - start ))s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
