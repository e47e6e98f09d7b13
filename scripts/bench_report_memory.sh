#!/usr/bin/env bash
# Peak resident memory of `driftsweep report` and `driftsweep merge` against the number of
# pairs (issue 34, item 5: memory independent of the pair count beyond the summary).
#
# Runs a small sweep of the built-in model whole and as two shards, fabricates results
# directories of N pairs from them (scripts/fabricate_results.py: copies of the real pairs
# under new seeds, so every record passes the store's checks), then measures each command's
# peak RSS with /usr/bin/time -v. Prints one line per (command, N): pairs, seconds, peak
# RSS in MiB and the report files' sizes. Needs a release build, python3 and GNU time.
#
#   bash scripts/bench_report_memory.sh               # N = 1000 10000 100000
#   bash scripts/bench_report_memory.sh 2000          # chosen sizes
#   BENCH_COMMANDS=report bash scripts/bench_report_memory.sh 100000   # report only
#
# Every record is written with an fsync; TMPDIR=/dev/shm keeps 100,000 pairs' worth of them
# from taking an hour on a slow disk (and measures the same memory).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${DRIFTSWEEP_BIN:-${CARGO_TARGET_DIR:-target}/release/driftsweep}
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 10000 100000)
[[ -x $bin ]] || { echo "no release build at $bin" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/sweep.yaml" <<'EOF'
name: memory
model: builtin:tiny-llama
device: cpu
prompts:
  - id: p0
    text: "What is the capital of France?"
  - id: r8
    random_tokens: 8
continuation: sample
sweep:
  span: [8, 20]
  dtype: [f32, f16]
  kv_aligned: [false, true]
  seed: [0, 1]
EOF
# A sweep that fails some pairs still writes every record: exit 0 or 1 both serve.
ok() { "$@" >/dev/null 2>"$tmp/err" || [[ $? -eq 1 ]] || { cat "$tmp/err" >&2; exit 2; }; }
ok "$bin" run "$tmp/sweep.yaml" --out "$tmp/base" --no-progress
for k in 0 1; do
  ok "$bin" run "$tmp/sweep.yaml" --shard "$k/2" --out "$tmp/shards/$k-of-2" --no-progress
done

# measure LABEL N COMMAND...: one line with the peak RSS /usr/bin/time reports.
measure() {
  local label=$1 n=$2 dir=$3
  shift 3
  /usr/bin/time -v "$@" >/dev/null 2>"$tmp/time" || [[ $? -eq 1 ]] ||
    { cat "$tmp/time" >&2; exit 2; }
  local kb s
  kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time")
  s=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tmp/time")
  local sizes_mb
  sizes_mb=$(for f in report.json report.md report.html report.junit.xml; do
    printf '%s=%.1fMB ' "$f" "$(($(stat -c %s "$dir/$f") / 1000))e-3"
  done)
  printf '%-6s pairs=%-7s wall=%-8s peak_rss=%6.1f MiB  %s\n' \
    "$label" "$n" "$s" "$(echo "$kb / 1024" | bc -l)" "$sizes_mb"
}

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "load before: $(uptime)"
commands=${BENCH_COMMANDS:-report merge}
for n in "${sizes[@]}"; do
  if [[ $commands == *report* ]]; then
    python3 scripts/fabricate_results.py "$tmp/base" "$tmp/r$n" "$n"
    measure report "$n" "$tmp/r$n" "$bin" report "$tmp/r$n"
    rm -rf "$tmp/r$n"
  fi
  if [[ $commands == *merge* ]]; then
    python3 scripts/fabricate_results.py "$tmp/shards" "$tmp/s$n" "$n" --shards 2
    measure merge "$n" "$tmp/m$n" "$bin" merge "$tmp/m$n" "$tmp/s$n/0-of-2" "$tmp/s$n/1-of-2"
    rm -rf "$tmp/s$n" "$tmp/m$n"
  fi
done
echo "load after: $(uptime)"
