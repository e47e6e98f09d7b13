#!/usr/bin/env bash
# Runs `driftsweep bench --suite perf` on cuda:0 for MODEL in f32, bf16 and f16, writing one
# JSON per dtype into OUT_DIR (for BENCHMARKS.md). Needs the CUDA libraries as sweeps.sh does.
#   bash scripts/gpu/bench.sh BINARY OUT_DIR MODEL
set -uo pipefail
bin=$1 out=$2 model=$3
mkdir -p "$out"
if ! ldconfig -p | grep -q 'libcublas.so.13'; then
  for lib in libcublas.so.13 libcudart.so.13 libcurand.so.10; do
    d=$(find / \( -path /proc -o -path /sys \) -prune -o -name "$lib" -print 2>/dev/null | head -1)
    [[ -n $d ]] && LD_LIBRARY_PATH=$(dirname "$d")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH
fi
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
