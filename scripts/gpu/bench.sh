#!/usr/bin/env bash
# Runs `driftsweep bench --suite perf` on cuda:0 for MODEL in f32, bf16 and f16, writing one
# JSON per dtype into OUT_DIR (for BENCHMARKS.md). Needs the CUDA libraries as sweeps.sh does.
#   bash scripts/gpu/bench.sh BINARY OUT_DIR MODEL
set -uo pipefail
bin=$1 out=$2 model=$3
mkdir -p "$out"
source "$(dirname "$0")/cuda_libs.sh"
name=$(basename "$model" | tr ':' '_')
for d in f32 bf16 f16; do
  "$bin" bench --suite perf --model "$model" --dtype "$d" --device cuda:0 --repeat 5 --json \
    >"$out/cuda.$name.$d.json" 2>"$out/cuda.$name.$d.err"
  echo "$name $d: exit $?"
  python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(" ", r["dtype"], "load", round(r["load_ms"]), "ms; prefill tok/s", [round(p["tokens_per_s"]) for p in r["prefill"]],
      "; decode ms", [round(d["median_ms"], 2) for d in r["decode_steps"]])' "$out/cuda.$name.$d.json" || true
done
