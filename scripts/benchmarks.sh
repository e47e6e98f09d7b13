#!/usr/bin/env bash
# Regenerates this CPU kind's section of BENCHMARKS.md: `driftsweep bench --suite floors`
# (memory bandwidth, GEMM peak), `driftsweep bench --suite perf` for the built-in model and
# SmolLM2 in f32, bf16 and f16 (set beside those floors), the B3.70 sweeps' wall times and
# the PyTorch race, on this machine's CPU (or the device named by $BENCH_DEVICE). The section
# sits between `<!-- benchmarks.sh:KIND -->` markers (KIND: vendor and SIMD level, e.g.
# amd-avx512, amd-avx2, intel-amx; $BENCH_KIND overrides): other kinds' sections and the
# hand-written ones are kept, so the file holds one section per CPU kind measured. Its raw
# JSON goes to docs/results/bench_KIND/. Needs a release build and, for SmolLM2,
# scripts/fetch_smollm2.sh. Takes about 30 minutes on 2 cores, mostly the SmolLM2 sweep.
#
#   bash scripts/benchmarks.sh            # everything
#   BENCH_SWEEPS=0 bash scripts/benchmarks.sh   # the per-operation table only
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${DRIFTSWEEP_BIN:-target/release/driftsweep}
device=${BENCH_DEVICE:-cpu}
repeat=${BENCH_REPEAT:-5}
[[ -x $bin ]] || cargo build --release --locked
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
kind=${BENCH_KIND:-$(python3 - <<'PY'
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
vendor = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("vendor_id")), "cpu")
vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(vendor, vendor.lower())
level = next((n for f, n in (("amx_tile", "amx"), ("avx512f", "avx512"), ("avx2", "avx2")) if f in flags), "baseline")
print(f"{vendor}-{level}")
PY
)}
[[ $device == cpu ]] || kind=$device
raw=docs/results/bench_$kind
mkdir -p "$raw"
smollm2=models/SmolLM2-135M-Instruct.Q4_1.gguf
models=(builtin:tiny-llama)
[[ -f $smollm2 ]] && models+=("$smollm2")
# The machine's floors first, on a quiet machine: memory bandwidth and GEMM peak.
echo "bench: floors" >&2
"$bin" bench --suite floors --device "$device" --repeat "$repeat" --json >"$tmp/floors.json"
for m in "${models[@]}"; do
  for d in f32 bf16 f16; do
    echo "bench: $m $d" >&2
    "$bin" bench --suite perf --model "$m" --dtype "$d" --device "$device" \
      --repeat "$repeat" --json >"$tmp/$(basename "$m" | tr ':' '_').$d.json"
  done
done
if [[ ${BENCH_SWEEPS:-1} == 1 ]]; then
  # The SmolLM2 B3.70 sweep (54 pairs, about 12 minutes here) only with BENCH_FULL=1; the
  # race config holds the 12 SmolLM2 pairs the peer runs.
  sweeps=(configs/b3_70_sweep.yaml configs/smollm2_race.yaml)
  [[ ${BENCH_FULL:-0} == 1 ]] && sweeps+=(configs/smollm2_b3_70.yaml)
  for c in "${sweeps[@]}"; do
    [[ $c == *smollm2* && ! -f $smollm2 ]] && continue
    echo "sweep: $c" >&2
    "$bin" run "$c" --device "$device" --out "$tmp/sweep_$(basename "$c" .yaml)" \
      --no-progress --start-over >/dev/null || true
    # Pairs in parallel against one lane: the same sweep with --lanes 1 (its wall time, and
    # whether every pair's metrics are the same bits).
    echo "sweep: $c --lanes 1" >&2
    "$bin" run "$c" --device "$device" --out "$tmp/lanes1_$(basename "$c" .yaml)" --lanes 1 \
      --no-progress --start-over >/dev/null || true
  done
fi
# The peer race (scripts/peer/setup.sh makes the venv): the same f32 pairs of the SmolLM2
# sweep through PyTorch + transformers, after the sweep, on the same cores. Its JSON and the
# sweep's report are kept in docs/results/bench_KIND/ beside the per-operation JSON.
peer_py=${PEER_PYTHON:-.peer-venv/bin/python}
race=""
if [[ $device == cpu && -x $peer_py && -f $tmp/sweep_smollm2_race/report.json ]]; then
  echo "peer: transformers on the race pairs, f32, bf16 and f16" >&2
  "$peer_py" scripts/peer/peer_transformers.py "$tmp/sweep_smollm2_race" \
    --out "$raw/peer.json" >"$raw/peer.log" 2>&1
  cp "$tmp/sweep_smollm2_race/report.json" "$raw/driftsweep_report.json"
  # Kept records name no path of this machine: the scratch directory and the checkout go.
  sed -i "s#$tmp/#<scratch>/#g; s#$PWD/#./#g" "$raw/peer.json" "$raw/peer.log"
  race=$(python3 scripts/peer/race_table.py "$tmp/sweep_smollm2_race" "$raw/peer.json" \
    --per-pair "$tmp/lanes1_smollm2_race" --title "The peer: SmolLM2-135M on this CPU, every dtype")
fi
cp "$tmp"/*.json "$raw/"
BENCH_KIND_RESOLVED=$kind python3 - "$tmp" "$device" "$bin" <<'PY' >"$tmp/section.md"
import glob, json, os, platform, subprocess, sys
tmp, device, binary = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
simd = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
family = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("cpu family")), "?")
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model\t")), "?")
top = "AMX" if "amx_tile" in simd else "AVX-512" if "avx512f" in simd else "AVX2" if "avx2" in simd else "no AVX2"
print(f"## {cpu} ({top}), {os.cpu_count()} cores: `scripts/benchmarks.sh` on this CPU kind\n")
print("Regenerated by `bash scripts/benchmarks.sh`; every figure is the median of "
      f"{os.environ.get('BENCH_REPEAT', '5')} timed repetitions after one warm-up. Raw JSON: "
      f"`docs/results/bench_{os.environ['BENCH_KIND_RESOLVED']}/`.\n")
print(f"- machine: {cpu} (family {family}, model {model}), {os.cpu_count()} cores; device `{device}`; SIMD: {', '.join(simd) or 'none of AVX2/AVX-512'}")
print(f"- load average while measuring (1, 5, 15 min, at the end): {' '.join(open('/proc/loadavg').read().split()[:3])}")
print(f"- commit: `{commit}`; binary `{binary}`\n")
# The per-operation reports (one JSON per model and dtype), read once for both tables.
perf = [json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/*.json")) if os.path.basename(f) != "floors.json"]
print("### Per operation (`driftsweep bench --suite perf`)\n")
print("Prefill: one forward over a 31-token prompt plus the span (logits for the span rows, left on the device). "
      "Decode: one single-token forward with its logits row to the host, at absolute "
      "position 10 and 500 (the cache holds every earlier position). Compare: the comparator, on "
      "the run device, on 512 × vocab f32 logits of both runs.\n")
print("| model | dtype | load ms | prefill s32 tok/s | s128 tok/s | s512 tok/s | decode @10 ms | decode @500 ms | @500/@10 | compare GB/s | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in perf:
    pre = {p["span"]: p for p in r["prefill"]}
    dec = {d["position"]: d for d in r["decode_steps"]}
    print(f"| {os.path.basename(r['model'])} | {r['dtype']} | {r['load_ms']:.0f} | "
          f"{pre[32]['tokens_per_s']:.0f} | {pre[128]['tokens_per_s']:.0f} | {pre[512]['tokens_per_s']:.0f} | "
          f"{dec[10]['median_ms']:.2f} | {dec[500]['median_ms']:.2f} | {dec[500]['median_ms'] / dec[10]['median_ms']:.2f} | "
          f"{r['compare']['gb_per_s']:.2f} | {r['peak_rss_mib'] or 0:.0f} |")
floors = json.load(open(f"{tmp}/floors.json"))
tri = floors["triad"]
bw = tri["gb_per_s"] * 1e9
gemm = floors["gemm"]
# The dtype's GEMM peak: the better of the square 1024 and 2048 products.
peak = {}
for g in gemm:
    if g.get("gflop_per_s") and g["m"] == g["k"] == g["n"]:
        peak[g["dtype"]] = max(peak.get(g["dtype"], 0), g["gflop_per_s"])
print("\n### Physical floors (`driftsweep bench --suite floors`)\n")
print(f"Memory bandwidth, STREAM triad `a[i] = b[i] + s·c[i]` over three {tri['bytes'] // 3 >> 20} MiB f32 arrays, "
      f"best of the repetitions: **{tri['gb_per_s']:.2f} GB/s** on {floors['threads']} threads, "
      f"{tri['gb_per_s_1thread']:.2f} GB/s on one (2 reads + 1 write counted; write-allocate traffic not, as STREAM). "
      f"GEMM: `Tensor::matmul` on `{floors['device']}`, best of the repetitions, GFLOP/s = 2·m·k·n / s; "
      "543 × 576 · 576 × 1536 is SmolLM2's MLP up-projection at prefill span 512.\n")
print("| dtype | m × k × n | best ms | GFLOP/s |")
print("|---|---|---|---|")
for g in gemm:
    shape = f"{g['m']} × {g['k']} × {g['n']}"
    if g.get("gflop_per_s") is None:
        print(f"| {g['dtype']} | {shape} | unsupported: {g.get('unsupported', '?')} | |")
    else:
        print(f"| {g['dtype']} | {shape} | {g['best_ms']:.2f} | {g['gflop_per_s']:.1f} |")
print("\n#### Per operation against the floors\n")
print("Decode floor: the weights in the run dtype (params × bytes per element), read once per token at the triad's "
      "bandwidth (weights small enough to stay in the last-level cache, as the built-in model's, are not bound by it). Prefill GFLOP/s ≈ 2 · params · tokens / s at span 512 (543 tokens; attention's own FLOPs excluded), "
      "as a fraction of the dtype's best square-GEMM rate above.\n")
print("| model | dtype | params M | weight MB | decode floor ms | decode @10 ms | @10 / floor | prefill s512 GFLOP/s | of GEMM peak |")
print("|---|---|---|---|---|---|---|---|---|")
for r in perf:
    if "weight_bytes" not in r:
        continue
    floor_ms = r["weight_bytes"] / bw * 1e3
    dec10 = {d["position"]: d for d in r["decode_steps"]}[10]["median_ms"]
    p512 = {p["span"]: p for p in r["prefill"]}[512]
    gflops = 2 * r["params"] * p512["tokens_per_s"] / 1e9
    frac = f"{gflops / peak[r['dtype']]:.1%}" if peak.get(r["dtype"]) else "n/a"
    print(f"| {os.path.basename(r['model'])} | {r['dtype']} | {r['params'] / 1e6:.2f} | {r['weight_bytes'] / 1e6:.1f} | "
          f"{floor_ms:.3f} | {dec10:.2f} | {dec10 / floor_ms:.1f}× | {gflops:.2f} | {frac} |")
sweeps = sorted(glob.glob(f"{tmp}/sweep_*/report.json"))
if sweeps:
    print("\n### Whole sweeps (`driftsweep run`)\n")
    print("| sweep | model | pairs | runs | verdict | wall s | model loads | mean s/run | slowest run s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in sweeps:
        r = json.load(open(f))
        walls = [p[m]["wall_s"] for p in r["pairs"] for m in ("prefill", "decode") if p[m].get("wall_s") and not p[m].get("reused_from")]
        print(f"| {r['sweep']['name']} | {os.path.basename(r['model']['source'])} | {r['counts']['pairs']} | {r['counts']['runs']} | "
              f"{r['verdict']} | {r['wall_s']:.1f} | {r['model_loads']} | {sum(walls) / max(len(walls), 1):.2f} | {max(walls or [0]):.2f} |")
    print("\nThe system driftsweep replaces took 40 s (span 32) to 117 s (span 512) per run and "
          "about 85 minutes for its 72-run B3.70 sweep.")
    def fingerprint(d):
        pairs = json.load(open(f"{d}/report.json"))["pairs"]
        return sorted((p["id"], json.dumps(p.get("metrics"), sort_keys=True)) for p in pairs)
    def lanes_of(d):
        loads = json.load(open(f"{d}/manifest.json"))["model_loads"]
        return ", ".join(f"{l['dtype']} {l.get('lanes', 1)}×{l.get('threads_per_lane', 0)}" for l in loads)
    print("\n#### Pairs in parallel (`--lanes`)\n")
    print("Each sweep as run by default (lanes chosen from the model's size and the device) and with "
          "`--lanes 1` (one pair at a time on every thread). Lanes: per load, lanes × threads each.\n")
    print("| sweep | default lanes | default wall s | `--lanes 1` wall s | speed-up | metrics bit-identical |")
    print("|---|---|---|---|---|---|")
    for f in sweeps:
        d = os.path.dirname(f)
        one = d.replace("/sweep_", "/lanes1_")
        if not os.path.exists(f"{one}/report.json"):
            continue
        a, b = json.load(open(f)), json.load(open(f"{one}/report.json"))
        same = "yes" if fingerprint(d) == fingerprint(one) else "**no**"
        print(f"| {a['sweep']['name']} | {lanes_of(d)} | {a['wall_s']:.1f} | {b['wall_s']:.1f} | "
              f"{b['wall_s'] / a['wall_s']:.2f}× | {same} |")
    for f in sweeps:
        r = json.load(open(f))
        print(f"\n#### {r['sweep']['name']}: per (span, dtype, mode)\n")
        print("| span | dtype | mode | mean ms | p95 ms | tokens/s |")
        print("|---|---|---|---|---|---|")
        for g in r["performance"]:
            print(f"| {g['span']} | {g['dtype']} | {g['mode']} | {g['wall_mean_s'] * 1e3:.1f} | {g['wall_p95_s'] * 1e3:.1f} | {g['tokens_per_s']:.0f} |")
PY
if [[ -n $race ]]; then
  printf '\n### Against PyTorch + transformers (`scripts/peer/`)\n\n%s\n' "$race" >>"$tmp/section.md"
fi
# The transformers reference's cost per compared position (SmolLM2, f32 and f64).
if [[ $device == cpu && -x $peer_py && -f $smollm2 ]]; then
  echo "reference: transformers' cost per compared position" >&2
  if DRIFTSWEEP_BIN=$bin bash scripts/reference/cost.sh "${BENCH_REFCOST_REPEAT:-1}" >"$tmp/refcost.md"; then
    printf '\n### The transformers reference per compared position (`scripts/reference/cost.sh`)\n\n%s\n' \
      "$(cat "$tmp/refcost.md")" >>"$tmp/section.md"
  fi
fi
# This kind's section replaces its previous one; every other section stays as it is.
python3 - "$tmp/section.md" "$kind" <<'PY'
import sys
section, kind = open(sys.argv[1]).read().rstrip("\n"), sys.argv[2]
begin, end = f"<!-- benchmarks.sh:{kind} -->", f"<!-- /benchmarks.sh:{kind} -->"
try:
    text = open("BENCHMARKS.md").read()
except FileNotFoundError:
    text = "# Benchmarks\n"
block = f"{begin}\n{section}\n{end}"
if begin in text and end in text:
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    # First measurement of this kind: after the file's introduction, before other sections.
    at = text.find("\n## ")
    text = text.rstrip("\n") + "\n\n" + block + "\n" if at < 0 else text[: at + 1] + block + "\n\n" + text[at + 1:]
open("BENCHMARKS.md", "w").write(text)
PY
echo "wrote the $kind section of BENCHMARKS.md (raw figures in $raw/)" >&2
