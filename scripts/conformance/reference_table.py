#!/usr/bin/env python3
"""The reference columns of docs/results/conformance.md from a results directory of
configs/conformance_reference.yaml: per module, engine and dtype, the largest distance of
prefill and of decode from transformers' float64 forward (max |diff|, KL max), how many
pairs held, the first position a failing path parts from, the window convention found, and
why a module has no reference. Usage: reference_table.py RESULTS_DIR > table.md"""

import glob
import json
import os
import sys


def fmt(x):
    return f"{x:.3g}"


def main(root):
    print("| model | engine | dtype | prefill vs transformers (max \\|diff\\|, KL max, held) "
          "| decode vs transformers | first parting position | note |")
    print("|---|---|---|---|---|---|---|")
    for f in sorted(glob.glob(os.path.join(root, "models", "*", "report.json"))):
        model = f.split(os.sep)[-2]
        pairs = json.load(open(f))["pairs"]
        groups, notes = {}, set()
        for p in pairs:
            c = p.get("reference")
            if not c:
                continue
            if c.get("not_compared"):
                notes.add(c["not_compared"]["reason"].split(": ", 1)[-1][:160])
                continue
            g = groups.setdefault((p["engine"], p["dtype"]),
                                  {"prefill": [], "decode": [], "notes": set()})
            # One statement per path: "prefill admits one key more ... (window 8)".
            for words in (c.get("convention") or "").split("; "):
                if words:
                    g["notes"].add(words)
            for path in ("prefill", "decode"):
                r = c.get(path)
                if r and r["metrics"].get("positions", 0) > 0:
                    g[path].append(r)
        if not groups:
            why = "; ".join(sorted(notes)) or "no pair was compared"
            print(f"| {model} | — | — | not compared | not compared | — | {why} |")
            continue
        for (engine, dtype), g in sorted(groups.items()):
            cells, first = [], []
            for path in ("prefill", "decode"):
                rs = g[path]
                if not rs:
                    cells.append("—")
                    continue
                mx = max(r["metrics"]["max_abs_diff"] for r in rs)
                kl = max(r["metrics"]["kl_max"] for r in rs)
                held = sum(r["pass"] for r in rs)
                cells.append(f"{fmt(mx)}, {fmt(kl)}, {held}/{len(rs)}")
                first += [r["metrics"]["first_divergent_pos"] for r in rs
                          if not r["pass"] and r["metrics"].get("first_divergent_pos") is not None]
            note = "; ".join(sorted(g["notes"]))
            pos = str(min(first)) if first else "—"
            print(f"| {model} | {engine} | {dtype} | {cells[0]} | {cells[1]} | {pos} | {note} |")


if __name__ == "__main__":
    main(sys.argv[1])
