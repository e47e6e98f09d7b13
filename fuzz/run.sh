#!/usr/bin/env bash
# Builds the fuzz targets and runs one of them for SECONDS (default 600).
#   bash fuzz/run.sh sweep_file|gguf_header|safetensors_header|model_header [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass the sanitizer flags it needs. A crash lands in fuzz/artifacts/<target>/;
# turn it into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target: sweep_file, gguf_header, safetensors_header or model_header}
seconds=${2:-600}
python3 seeds.py
RUSTC_BOOTSTRAP=1 cargo fuzz build -O "$target"
mkdir -p "artifacts/$target"
"./target/x86_64-unknown-linux-gnu/release/$target" "corpus/$target" \
  -max_total_time="$seconds" -rss_limit_mb=4096 -artifact_prefix="artifacts/$target/" \
  -print_final_stats=1
