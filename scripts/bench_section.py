#!/usr/bin/env python3
"""Prints the BENCHMARKS.md section for per-operation results measured on another machine
and committed as `driftsweep bench --suite perf --json` files (scripts/gpu/bench.sh writes
them): python3 scripts/bench_section.py DIR TITLE."""
import glob
import json
import os
import sys

folder, title = sys.argv[1:3]
rows = []
for f in sorted(glob.glob(f"{folder}/*.json")):
    r = json.load(open(f))
    pre = {p["span"]: p for p in r["prefill"]}
    dec = {d["position"]: d for d in r["decode_steps"]}
    rows.append(
        f"| {os.path.basename(r['model'])} | {r['dtype']} | {r['device']} | {r['load_ms']:.0f} | "
        f"{pre[32]['tokens_per_s']:.0f} | {pre[128]['tokens_per_s']:.0f} | {pre[512]['tokens_per_s']:.0f} | "
        f"{dec[10]['median_ms']:.2f} | {dec[500]['median_ms']:.2f} | "
        f"{dec[500]['median_ms'] / dec[10]['median_ms']:.2f} | {r['compare']['gb_per_s']:.2f} | "
        f"{r['peak_rss_mib'] or 0:.0f} |"
    )
print(f"\n## {title}\n")
print(f"From the JSON files in `{folder}/` (same columns as above).\n")
print("| model | dtype | device | load ms | prefill s32 tok/s | s128 tok/s | s512 tok/s | decode @10 ms | decode @500 ms | @500/@10 | compare GB/s | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
