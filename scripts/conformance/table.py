#!/usr/bin/env python3
"""Print the conformance table of a driftsweep results directory as Markdown.

Usage: scripts/conformance/table.py RESULTS_DIR

Reads RESULTS_DIR/summary.json and RESULTS_DIR/models/<id>/report.json (as written by
`driftsweep run configs/conformance.yaml --out RESULTS_DIR`) and prints:
  1. counts per path: modules consistent (every pair PASS_* or EXPECTED_DRIFT),
     failing (any FAIL_*), erroring (no FAIL_* but some INCOMPLETE);
  2. one row per model x path x dtype x kv_aligned x engine with the verdict, the
     first divergent position, max|diff|, KL max and, for INCOMPLETE, the error shortened.
A "module" is the candle-transformers implementation report.json names
(model_load_details[].implementation); the driftsweep reference engine's rows are kept
so the table shows when the reference agrees and candle does not.
Python 3 standard library only.
"""
import json
import os
import re
import sys

OK = {"PASS_EQUIV", "EXPECTED_DRIFT", "PASS"}
PATH_ORDER = {"decode": 0}


def short_error(text, limit=110):
    """The error text without the run-stage preamble, cut to `limit` characters."""
    if not text:
        return ""
    # Both prefill and decode usually fail with the same cause; keep the first cause once.
    parts = [p.strip() for p in text.split("; ") if p.strip()]
    causes = []
    for p in parts:
        cause = p.split(": ")[-1] if ": " in p else p
        head = p.split(":")[0]
        item = "%s: %s" % (head, cause)
        if cause not in [c.split(": ", 1)[-1] for c in causes]:
            causes.append(item)
    out = "; ".join(causes)
    out = re.sub(r"\s+", " ", out).replace("|", "\\|")
    return out if len(out) <= limit else out[: limit - 1] + "…"


def fmt(x):
    """A metric in 3 significant digits, or an em dash when absent."""
    if x is None:
        return "—"
    if isinstance(x, int):
        return str(x)
    return "%.3g" % x


def implementation(report, engine):
    """The implementation path report.json names for `engine`, shortened to the module."""
    for load in report.get("model_load_details", []):
        if load.get("engine") == engine:
            impl = load.get("implementation", "")
            return impl.replace("candle_transformers::models::", "")
    return engine


def pair_path(pair):
    return pair.get("path") or "decode"


def load(results):
    """(summary, [(model_id, report or None)]) in summary order."""
    with open(os.path.join(results, "summary.json")) as f:
        summary = json.load(f)
    out = []
    for m in summary["models"]:
        rp = os.path.join(results, m.get("dir", "models/" + m["id"]), "report.json")
        rep = None
        if os.path.exists(rp):
            with open(rp) as f:
                rep = json.load(f)
        out.append((m, rep))
    return summary, out


def classify(verdicts):
    if any(v.startswith("FAIL") for v in verdicts):
        return "failing"
    if any(v == "INCOMPLETE" for v in verdicts):
        return "erroring"
    return "consistent"


def counts_table(models):
    """Markdown counts of modules per path, candle-transformers engine only."""
    per_path = {}
    for m, rep in models:
        if rep is None:
            continue
        by_path = {}
        for p in rep["pairs"]:
            if p["engine"] != "candle-transformers":
                continue
            by_path.setdefault(pair_path(p), []).append(p["verdict"])
        for path, vs in by_path.items():
            c = per_path.setdefault(path, {"consistent": [], "failing": [], "erroring": []})
            c[classify(vs)].append(m["id"])
    lines = [
        "| path | consistent | failing | erroring | failing ids | erroring ids |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(per_path, key=lambda p: (PATH_ORDER.get(p, 1), p)):
        c = per_path[path]
        lines.append(
            "| %s | %d | %d | %d | %s | %s |"
            % (
                path,
                len(c["consistent"]),
                len(c["failing"]),
                len(c["erroring"]),
                ", ".join(c["failing"]) or "—",
                ", ".join(c["erroring"]) or "—",
            )
        )
    return lines


def rows_table(models):
    """One Markdown row per model x path x dtype x kv_aligned x engine."""
    lines = [
        "| model | module | engine | path | dtype | kv | verdict | first div pos | max\\|diff\\| | KL max | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, rep in models:
        if rep is None:
            lines.append("| `%s` | — | — | — | — | — | %s | — | — | — | %s |" % (m["id"], m.get("status"), m.get("verdict", "")))
            continue
        pairs = sorted(
            rep["pairs"],
            key=lambda p: (p["engine"] != "candle-transformers", PATH_ORDER.get(pair_path(p), 1), pair_path(p), p["dtype"], p["kv_aligned"]),
        )
        for p in pairs:
            met = p.get("metrics") or {}
            err = short_error(p.get("reason")) if p["verdict"] == "INCOMPLETE" else ""
            lines.append(
                "| `%s` | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |"
                % (
                    m["id"],
                    implementation(rep, p["engine"]),
                    p["engine"],
                    pair_path(p),
                    p["dtype"],
                    1 if p["kv_aligned"] else 0,
                    p["verdict"],
                    fmt(met.get("first_divergent_pos")),
                    fmt(met.get("max_abs_diff")),
                    fmt(met.get("kl_max")),
                    err,
                )
            )
    return lines


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results = argv[1]
    try:
        summary, models = load(results)
    except (OSError, ValueError, KeyError) as e:
        print("table.py: cannot read %s/summary.json: %s" % (results, e), file=sys.stderr)
        return 2
    print("Sweep `%s`: %d models, verdict %s.\n" % (summary.get("sweep"), len(models), summary.get("verdict")))
    print("### Counts per path (candle-transformers engine; a module = one model id)\n")
    print("\n".join(counts_table(models)))
    print("\n### Every pair\n")
    print("\n".join(rows_table(models)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
