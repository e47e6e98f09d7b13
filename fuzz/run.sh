#!/usr/bin/env bash
# Builds the fuzz targets and runs one of them for SECONDS (default 600).
#   bash fuzz/run.sh TARGET [SECONDS]
# TARGET: sweep_file, gguf_header, safetensors_header, model_header (file parsers), or
# report_json, manifest, pair_record, run_record, shard_plan, shard_pair_record, slurm_options
# (the results directory and the Slurm writer: tests/fuzz_mutate/entries.rs, whose seed is the
# file of a real results directory each builds on first use, so their corpus may start empty).
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass the sanitizer flags it needs. A crash lands in fuzz/artifacts/<target>/;
# turn it into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target: see the list above}
seconds=${2:-600}
python3 seeds.py
RUSTC_BOOTSTRAP=1 cargo fuzz build -O "$target"
mkdir -p "artifacts/$target"
mkdir -p "corpus/$target"
"./target/x86_64-unknown-linux-gnu/release/$target" "corpus/$target" \
  -max_total_time="$seconds" -rss_limit_mb=4096 -artifact_prefix="artifacts/$target/" \
  -print_final_stats=1
