#!/usr/bin/env python3
"""Prints the window-edge table of a results directory as Markdown: per pair, the first
divergent position, max |diff| and per-position KL before and at/after the edge, and the
top-1 flips with their prefill margins. Reads only what driftsweep wrote (report.json).

    python3 scripts/window_table.py results/gemma3_window [EDGE]   # EDGE defaults to 512
"""
import json
import sys
from pathlib import Path

report = json.loads((Path(sys.argv[1]) / "report.json").read_text())
edge = int(sys.argv[2]) if len(sys.argv) > 2 else 512


def fmt(x):
    if x is None:
        return "—"
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def worst(rows, i):
    return max((r[i] for r in rows), default=None)


print(
    f"| engine | weights | dtype | prompt | kv | positions | first divergent | "
    f"max \\|diff\\| < {edge} | max \\|diff\\| ≥ {edge} | KL max < {edge} | KL max ≥ {edge} | "
    "top-1 flips (position: prefill margin) | verdict |"
)
print("|" + "---|" * 13)
key = lambda p: (p["engine"], p["weights"], p["dtype"], p["prompt"], p["span"], p["kv_aligned"])
for p in sorted(report["pairs"], key=key):
    m, start = p.get("metrics"), p["prefill"].get("span_start")
    head = f"| {p['engine']} | {p['weights']} | {p['dtype']} | {p['prompt']} | {int(p['kv_aligned'])} |"
    if not m or start is None:
        print(f"{head} — | — | — | — | — | — | — | {p['verdict']} |")
        continue
    rows = [(start + i, d, kl) for i, (d, kl) in enumerate(zip(m["per_pos_max_abs"], m["per_pos_kl"]))]
    before = [r for r in rows if r[0] < edge]
    after = [r for r in rows if r[0] >= edge]
    flips = ", ".join(f"{f['pos']}: {f['prefill_margin']:.3g}" for f in m["top1_flips"]) or "none"
    fdp = m["first_divergent_pos"]
    print(
        f"{head} {start}–{start + p['span'] - 1} | {fdp if fdp is not None else 'none'} | "
        f"{fmt(worst(before, 1))} | {fmt(worst(after, 1))} | {fmt(worst(before, 2))} | "
        f"{fmt(worst(after, 2))} | {flips} | {p['verdict']} |"
    )
