#!/usr/bin/env python3
"""Prints the BENCHMARKS.md section for per-operation results measured on another machine
and committed as `driftsweep bench --suite perf --json` files (scripts/gpu/bench.sh and
scripts/benchmarks.sh write them): python3 scripts/bench_section.py DIR TITLE.

When DIR also holds `floors.json` (`driftsweep bench --suite floors --json`), the section
sets decode, prefill and peak memory beside that machine's floors; `notes.md` (the CPU, its
features, the load while measuring) is printed first."""
import glob
import json
import os
import sys

folder, title = sys.argv[1:3]
perf = [json.load(open(f)) for f in sorted(glob.glob(f"{folder}/*.json"))
        if os.path.basename(f) != "floors.json"]
print(f"\n## {title}\n")
if os.path.exists(f"{folder}/notes.md"):
    print(open(f"{folder}/notes.md").read().strip() + "\n")
print(f"From the JSON files in `{folder}/` (same columns as above).\n")
print("| model | dtype | device | load ms | prefill s32 tok/s | s128 tok/s | s512 tok/s | decode @10 ms | decode @500 ms | @500/@10 | compare GB/s | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in perf:
    pre = {p["span"]: p for p in r["prefill"]}
    dec = {d["position"]: d for d in r["decode_steps"]}
    print(
        f"| {os.path.basename(r['model'])} | {r['dtype']} | {r['device']} | {r['load_ms']:.0f} | "
        f"{pre[32]['tokens_per_s']:.0f} | {pre[128]['tokens_per_s']:.0f} | {pre[512]['tokens_per_s']:.0f} | "
        f"{dec[10]['median_ms']:.2f} | {dec[500]['median_ms']:.2f} | "
        f"{dec[500]['median_ms'] / dec[10]['median_ms']:.2f} | {r['compare']['gb_per_s']:.2f} | "
        f"{r['peak_rss_mib'] or 0:.0f} |"
    )
if not os.path.exists(f"{folder}/floors.json"):
    sys.exit(0)
floors = json.load(open(f"{folder}/floors.json"))
tri = floors["triad"]
bw = tri["gb_per_s"] * 1e9
peak = {}
for g in floors["gemm"]:
    if g.get("gflop_per_s") and g["m"] == g["k"] == g["n"]:
        peak[g["dtype"]] = max(peak.get(g["dtype"], 0), g["gflop_per_s"])
print(f"\nFloors there: STREAM triad **{tri['gb_per_s']:.2f} GB/s** on {floors['threads']} threads "
      f"({tri['gb_per_s_1thread']:.2f} on one); best square f32/bf16/f16 GEMM "
      + " / ".join(f"{peak.get(d, 0):.1f}" for d in ("f32", "bf16", "f16")) + " GFLOP/s.\n")
print("Decode floor: weight bytes in the run dtype ÷ triad. Peak RSS against the weights in the run "
      "dtype (the rest is the process: activations, the span-512 logits and the comparator's "
      "two 512 × vocab inputs, allocator and binary).\n")
print("| model | dtype | weight MiB | decode floor ms | decode @10 ms | @10 / floor | prefill s512 GFLOP/s | of GEMM peak | peak RSS MiB | RSS − weights MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in perf:
    if "weight_bytes" not in r:
        continue
    floor_ms = r["weight_bytes"] / bw * 1e3
    dec10 = {d["position"]: d for d in r["decode_steps"]}[10]["median_ms"]
    p512 = {p["span"]: p for p in r["prefill"]}[512]
    gflops = 2 * r["params"] * p512["tokens_per_s"] / 1e9
    frac = f"{gflops / peak[r['dtype']]:.1%}" if peak.get(r["dtype"]) else "n/a"
    wmib = r["weight_bytes"] / 2**20
    rss = r["peak_rss_mib"] or 0
    print(f"| {os.path.basename(r['model'])} | {r['dtype']} | {wmib:.0f} | {floor_ms:.3f} | {dec10:.2f} | "
          f"{dec10 / floor_ms:.1f}× | {gflops:.2f} | {frac} | {rss:.0f} | {rss - wmib:.0f} |")
