#!/usr/bin/env python3
"""Prints the compared-positions table of docs/results/gemma3_window.md from a results
directory's report.json: per pair, the compared positions, the exact first divergent
position from the bisection (with its probes and prefix forwards), max |diff| and the
largest per-position KL before and from the window edge, and the verdict. Unlike
scripts/window_table.py it maps the per-position series onto `pairs[].positions`.

    python3 docs/results/gemma3_window/positions/table.py results/gemma3_window [EDGE]
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
    "| engine | kv (cache) | compared positions | first divergent (coarse; probes, prefix forwards) | "
    f"max \\|diff\\| < {edge} | max \\|diff\\| ≥ {edge} | KL max < {edge} | KL max ≥ {edge} | "
    "top-1 flips | verdict |"
)
print("|" + "---|" * 10)
for p in report["pairs"]:
    m, pos = p.get("metrics"), p.get("positions") or []
    kv = f"{int(p['kv_aligned'])} ({p.get('cache_source') or '—'})"
    head = f"| {p['engine']} | {kv} |"
    if not m:
        print(f"{head} — | — | — | — | — | — | — | {p['verdict']} |")
        continue
    rows = list(zip(pos, m["per_pos_max_abs"], m["per_pos_kl"]))
    before = [r for r in rows if r[0] < edge]
    after = [r for r in rows if r[0] >= edge]
    s = p.get("divergence_search") or {}
    fdp = s.get("first_divergent_pos", m["first_divergent_pos"])
    first = (
        f"{fdp if fdp is not None else 'none'} ({s.get('coarse_first') or 'none'}; "
        f"{s.get('probes', 0)}, {s.get('prefills', 0)})"
    )
    flips = ", ".join(f"{f['pos']}: {f['prefill_margin']:.3g}" for f in m["top1_flips"]) or "none"
    print(
        f"{head} {', '.join(map(str, pos))} | {first} | {fmt(worst(before, 1))} | "
        f"{fmt(worst(after, 1))} | {fmt(worst(before, 2))} | {fmt(worst(after, 2))} | "
        f"{flips} | {p['verdict']} |"
    )
