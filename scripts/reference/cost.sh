#!/usr/bin/env bash
# The transformers reference's cost per compared position (issue 33's figure in
# BENCHMARKS.md): SmolLM2-135M, the own decoder on dequantized weights in f32 (kv_aligned
# false, so every span position is compared), the same sweep with the reference the own
# decoder (nothing extra: that setting is the yardstick), transformers in float32 and in
# float64, at spans 32, 128 and 512. The extra wall time over the own-reference sweep, per
# compared position, is the reference's cost; its slope over the spans leaves out the worker's
# start and the model's load (the intercept). Needs a release build,
# scripts/fetch_smollm2.sh and scripts/peer/setup.sh. Prints a Markdown table; run it on a
# quiet machine (about 4 minutes on 2 cores).
#
#   bash scripts/reference/cost.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${DRIFTSWEEP_BIN:-target/release/driftsweep}
repeats=${1:-2}
model=$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f $model ]] || { echo "no $model: bash scripts/fetch_smollm2.sh" >&2; exit 2; }
[[ -x .peer-venv/bin/python ]] || { echo "no .peer-venv: bash scripts/peer/setup.sh" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for span in 32 128 512; do
  for ref in own transformers:f32 transformers:f64; do
    case $ref in
      own) section="{engine: own}" ;;
      *) section="{engine: transformers, dtype: ${ref#*:}}" ;;
    esac
    cfg=$tmp/s$span.${ref/:/_}.yaml
    cat >"$cfg" <<YAML
name: reference_cost
model: {source: $model}
reference: $section
device: cpu
prompts:
  - id: chatml_france
    text: "<|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n<|im_start|>assistant\\n"
continuation: random
sweep: {span: [$span], dtype: [f32], kv_aligned: [false], seed: [0], engine: [driftsweep], weights: [dequantized]}
YAML
    for r in $(seq "$repeats"); do
      out=$tmp/out
      start=$(date +%s.%N)
      "$bin" run "$cfg" --out "$out" --start-over --no-progress >/dev/null 2>"$tmp/err" || {
        rc=$?; [[ $rc == 1 ]] || { echo "run failed ($rc): $cfg" >&2; cat "$tmp/err" >&2; exit 1; }
      }
      end=$(date +%s.%N)
      python3 - "$out/report.json" "$span" "$ref" "$start" "$end" >>"$tmp/rows.tsv" <<'PY'
import json, sys
report, span, ref, start, end = sys.argv[1:]
r = json.load(open(report))
checked = sum(1 for p in r["pairs"] if p.get("reference"))
print(f"{span}\t{ref}\t{float(end) - float(start):.3f}\t{checked}")
PY
    done
  done
done
python3 - "$tmp/rows.tsv" <<'PY'
import collections, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
best = collections.defaultdict(lambda: float("inf"))
for span, ref, wall, _ in rows:
    best[(int(span), ref)] = min(best[(int(span), ref)], float(wall))
spans = sorted({s for s, _ in best})
print("| span (compared positions) | own reference: sweep s | own per position | transformers f32: extra s | extra ms / position | transformers f64: extra s | extra ms / position |")
print("|---|---|---|---|---|---|---|")
for s in spans:
    own = best[(s, "own")]
    cells = [f"{s}", f"{own:.2f}", f"{own / s * 1e3:.1f} ms"]
    for ref in ("transformers:f32", "transformers:f64"):
        extra = best[(s, ref)] - own
        cells += [f"{extra:.2f}", f"{extra / s * 1e3:.1f}"]
    print("| " + " | ".join(cells) + " |")
for ref in ("transformers:f32", "transformers:f64"):
    lo, hi = spans[0], spans[-1]
    slope = ((best[(hi, ref)] - best[(hi, "own")]) - (best[(lo, ref)] - best[(lo, "own")])) / (hi - lo)
    fixed = (best[(lo, ref)] - best[(lo, "own")]) - slope * lo
    print(f"\n{ref}: {slope * 1e3:.2f} ms per compared position beyond the own runs (slope from span {lo} to {hi}); "
          f"{fixed:.2f} s fixed (worker start, model load).")
own_slope = (best[(spans[-1], "own")] - best[(spans[0], "own")]) / (spans[-1] - spans[0])
print(f"\nThe own runs themselves (prefill + decode of every position, the comparator): {own_slope * 1e3:.2f} ms per compared position (same slope).")
PY
