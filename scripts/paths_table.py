#!/usr/bin/env python3
"""Prints the serving-paths table of a results directory as Markdown: per (engine, weights,
dtype, kv_aligned, path), the largest max |diff| and KL against one-shot prefill, the smallest
top-1 agreement, how many pairs were bit-identical to prefill and to the path's smaller
neighbour (batch 1, the next smaller chunk), the verdicts and the mean run time of the path.
Reads only what driftsweep wrote (report.json).

    python3 scripts/paths_table.py results/serving_paths
"""
import json
import sys
from pathlib import Path

report = json.loads((Path(sys.argv[1]) / "report.json").read_text())
sp = report.get("serving_paths")
if not sp:
    sys.exit("no serving paths in this report")


def fmt(x):
    if x is None:
        return "—"
    if x == 0:
        return "0"
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def key(g):
    return (g["engine"], g["weights"], g["dtype"], g["kv_aligned"])


neighbour = {}
for c in sp["comparisons"]:
    first = c["first_difference"]
    where = f" (from {first[0]})" if first else ""
    neighbour[key(c) + (c["path"],)] = (
        f"{c['identical']}/{c['pairs']} vs {c['against']}{where}"
    )

skipped = {}
for p in report["pairs"]:
    if p["verdict"] == "SKIPPED":
        k = (p["engine"], p["weights"], p["dtype"], p["kv_aligned"], p.get("path", "decode"))
        skipped[k] = p["reason"]

print(
    "| engine | weights | dtype | kv | path | pairs | max \\|diff\\| | KL max | top-1 min | "
    "bit-identical to prefill | bit-identical to neighbour | failed | run time (mean) |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for g in sp["groups"]:
    k = key(g) + (g["path"],)
    wall = g["wall_mean_s"]
    print(
        f"| {g['engine']} | {g['weights']} | {g['dtype']} | {int(g['kv_aligned'])} | "
        f"{g['path']} | {g['pairs']} | {fmt(g['max_abs_max'])} | {fmt(g['kl_max_max'])} | "
        f"{g['top1_min']:.4f} | {g['identical_to_prefill']}/{g['pairs']} | "
        f"{neighbour.get(k, '—')} | {g['failed']} | "
        f"{'—' if wall is None else f'{wall:.2f} s'} |"
    )
incomplete = [p for p in report["pairs"] if p["verdict"] == "INCOMPLETE"]
if incomplete:
    print()
    print("INCOMPLETE pairs:")
    for p in incomplete:
        print(f"- `{p['id']}`: {p['reason']}")
