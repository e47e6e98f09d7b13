#!/usr/bin/env python3
"""Markdown tables of a driftsweep sweep against the peer's run of the same pairs.

    python3 scripts/peer/race_table.py RESULTS_DIR PEER_JSON [--title TITLE]

RESULTS_DIR is a driftsweep results directory (report.json); PEER_JSON is what
scripts/peer/peer_transformers.py wrote for it. Times are per pair (mean over the pairs of a
(dtype, span) group) as each tool spends them: driftsweep's shared prefill counts once for
the two kv_aligned pairs that use it, the peer computes it for each pair, as a script written
for the job would. Ratios are driftsweep / peer: below 1, driftsweep is faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

DTYPE_ORDER = {"f32": 0, "bf16": 1, "f16": 2}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def lanes_of(results: Path) -> str:
    manifest = results / "manifest.json"
    if not manifest.is_file():
        return "(not recorded)"
    loads = json.loads(manifest.read_text())["model_loads"]
    return ", ".join(f"{l['dtype']} {l.get('lanes', 1)}×{l.get('threads_per_lane', 0)}" for l in loads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("peer", type=Path)
    ap.add_argument("--title", default="driftsweep against PyTorch + transformers")
    ap.add_argument(
        "--per-pair",
        type=Path,
        help="a one-lane run of the same sweep, for the per-pair seconds: with several lanes a "
        "pair's own wall time includes the machine it shared with the other lanes",
    )
    args = ap.parse_args()
    report = json.loads((args.results / "report.json").read_text())
    peer = json.loads(args.peer.read_text())
    per_pair = (
        json.loads((args.per_pair / "report.json").read_text()) if args.per_pair else report
    )
    ds_pairs = {p["id"]: p for p in per_pair["pairs"]}
    peer_pairs = {p["id"]: p for p in peer["pairs"] if p.get("metrics")}
    common = [i for i in ds_pairs if i in peer_pairs]

    # (dtype, span) -> lists of per-pair seconds.
    groups: dict = defaultdict(lambda: defaultdict(list))
    for i in common:
        d, q = ds_pairs[i], peer_pairs[i]
        key = (d["dtype"], d["span"])
        # A reused prefill cost driftsweep nothing in this pair.
        ds_pre = 0.0 if d["prefill"].get("reused_from") else d["prefill"]["wall_s"]
        g = groups[key]
        g["ds_pre"].append(ds_pre)
        g["ds_dec"].append(d["decode"]["wall_s"])
        g["peer_pre"].append(q["prefill"]["wall_s"])
        g["peer_dec"].append(q["decode"]["wall_s"])
        if not d["prefill"].get("reused_from"):
            g["ds_pre_computed"].append(d["prefill"]["wall_s"])

    v = peer["tool"]
    print(f"### {args.title}\n")
    print(
        f"Same machine, same pairs and token ids, one after the other: driftsweep "
        f"`{report['tool']['version']}` ({report['device_name']}) and the peer "
        f"(`scripts/peer/peer_transformers.py`: torch {v['torch']}, transformers "
        f"{v['transformers']}, {peer['threads']} threads, attention `{peer['attn_implementation']}`). "
        f"{len(common)} pairs. Seconds per pair, mean over the pairs of each group; "
        f"ratio = driftsweep / peer (below 1: driftsweep is faster). driftsweep's per-pair "
        f"seconds come from a run with lanes {lanes_of(args.per_pair or args.results)} (per load: lanes × threads "
        f"each), its whole sweep from a run with lanes {lanes_of(args.results)}.\n"
    )
    print("| dtype | span | pairs | driftsweep s/pair | peer s/pair | **ratio** | prefill ratio (per computed prefill) | decode ratio |")
    print("|---|---|---|---|---|---|---|---|")
    mean = statistics.fmean
    for (dtype, span) in sorted(groups, key=lambda k: (DTYPE_ORDER.get(k[0], 9), k[1])):
        g = groups[(dtype, span)]
        ds = mean(g["ds_pre"]) + mean(g["ds_dec"])
        pe = mean(g["peer_pre"]) + mean(g["peer_dec"])
        pre = ratio(mean(g["ds_pre_computed"]), mean(g["peer_pre"])) if g["ds_pre_computed"] else "-"
        print(
            f"| {dtype} | {span} | {len(g['ds_dec'])} | {ds:.3f} | {pe:.3f} | **{ratio(ds, pe)}** | "
            f"{pre} | {ratio(mean(g['ds_dec']), mean(g['peer_dec']))} |"
        )
    t = peer["totals"]
    ds_runs = sum(sum(g["ds_pre"]) + sum(g["ds_dec"]) for g in groups.values())
    pe_runs = sum(sum(g["peer_pre"]) + sum(g["peer_dec"]) for g in groups.values())
    peer_load = sum(m["load_s"] for m in peer["model_loads"])
    if len(common) < len(ds_pairs):
        print(
            f"\nThe peer ran {len(common)} of the sweep's {len(ds_pairs)} pairs, so whole-sweep "
            f"wall times do not compare. Runs alone, over those pairs: driftsweep {ds_runs:.1f} s, "
            f"the peer {pe_runs:.1f} s, ratio **{ratio(ds_runs, pe_runs)}**; the peer spent "
            f"{peer_load:.1f} s more loading the GGUF into transformers.\n"
        )
    else:
        print(
        f"\nWhole sweep: driftsweep {report['wall_s']:.1f} s wall (model loads, token generation, "
        f"runs, comparison, reports) against the peer's {t['sweep_wall_s']:.1f} s "
        f"(of which {peer_load:.1f} s loading the GGUF into transformers): ratio "
        f"**{ratio(report['wall_s'], t['sweep_wall_s'])}**. Runs alone (per-pair seconds summed): {ds_runs:.1f} s against "
        f"{pe_runs:.1f} s, ratio {ratio(ds_runs, pe_runs)}.\n"
    )

    # Drift: do the two implementations see the same kind of drift?
    print("Drift seen by each implementation (max over the group's pairs; KL mean over them):\n")
    print("| dtype | kv_aligned | pairs | driftsweep max_abs_diff | peer max_abs_diff | driftsweep kl_mean | peer kl_mean | driftsweep top-1 flips | peer top-1 flips | verdicts (driftsweep / peer) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    drift: dict = defaultdict(list)
    for i in common:
        d = ds_pairs[i]
        drift[(d["dtype"], d["kv_aligned"])].append((d, peer_pairs[i]))
    for (dtype, kv) in sorted(drift, key=lambda k: (DTYPE_ORDER.get(k[0], 9), k[1])):
        rows = drift[(dtype, kv)]
        dm = [d["metrics"] for d, _ in rows]
        pm = [q["metrics"] for _, q in rows]
        vd = sorted({d["verdict"] for d, _ in rows})
        vp = sorted({str(q["verdict"]) for _, q in rows})
        print(
            f"| {dtype} | {str(kv).lower()} | {len(rows)} | {max(m['max_abs_diff'] for m in dm):.3g} | "
            f"{max(m['max_abs_diff'] for m in pm):.3g} | {mean(m['kl_mean'] for m in dm):.3g} | "
            f"{mean(m['kl_mean'] for m in pm):.3g} | {sum(len(m['top1_flips']) for m in dm)} | "
            f"{sum(len(m['top1_flips']) for m in pm)} | {', '.join(vd)} / {', '.join(vp)} |"
        )


if __name__ == "__main__":
    main()
