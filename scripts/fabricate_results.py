#!/usr/bin/env python3
"""Fabricates a results directory of N pairs from a real one, for memory benchmarks.

    fabricate_results.py SRC DST N [--shards K]

SRC is a results directory `driftsweep run` wrote (or, with --shards K, the parent of the
K shard directories `0-of-K` ... of `run --shard i/K`). Every pair of DST is a copy of one of
SRC's pairs under a new seed: its id, its runs' ids and its token ids' key follow, so that the
records pass the store's checks (ids matching file names, verdicts judged again from their
metrics and limits, the plan in the manifest naming every record). Only plain json is used.
"""

import functools
import json
import os
import re
import sys

SEED = re.compile(r"\.seed(\d+)(?=\.|$)")


def load(path):
    with open(path) as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def template(path):
    """A template's record, read once (retag copies, never changes it)."""
    return load(path)


def dump(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def retag(obj, old_id, new_id, old_seed, new_seed):
    """`obj` with every mention of the pair `old_id` renamed to `new_id` (and its seed)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "seed" and v == old_seed and ("prompt" in obj or "id" in obj):
                out[k] = new_seed
            else:
                out[k] = retag(v, old_id, new_id, old_seed, new_seed)
        return out
    if isinstance(obj, list):
        return [retag(v, old_id, new_id, old_seed, new_seed) for v in obj]
    if isinstance(obj, str):
        if obj == old_id:
            return new_id
        for pre in ("", "logits/", "runs/", "pairs/", "traces/"):
            if obj.startswith(pre + old_id + "."):
                return pre + new_id + obj[len(pre) + len(old_id):]
    return obj


def new_ids(templates, n):
    """(template spec, new id, new seed) for n pairs, cycling over the templates."""
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        seed = 10_000_000 + i
        new_id = SEED.sub(f".seed{seed}", t["id"], count=1)
        assert new_id != t["id"], t["id"]
        out.append((t, new_id, seed))
    return out


def copy_records(src, dst, t, new_id, seed):
    """Writes the pair's records under its new id; returns the file count."""
    old_id, old_seed = t["id"], t["seed"]
    written = 0
    for sub in ("pairs", "traces"):
        p = os.path.join(src, sub, old_id + ".json")
        if os.path.exists(p):
            dump(os.path.join(dst, sub, new_id + ".json"), retag(template(p), old_id, new_id, old_seed, seed))
            written += 1
    for name in os.listdir(os.path.join(src, "runs")):
        if name.startswith(old_id + ".") and name.endswith(".json"):
            rec = retag(template(os.path.join(src, "runs", name)), old_id, new_id, old_seed, seed)
            dump(os.path.join(dst, "runs", new_id + name[len(old_id):]), rec)
            written += 1
    return written


def fabricate(src, dst, plan, own):
    """Writes dst from src: `plan` is [(template, new id, seed, shard)], `own` the shard kept
    (None: every pair)."""
    os.makedirs(dst)
    for sub in ("pairs", "runs", "traces", "logits"):
        os.makedirs(os.path.join(dst, sub), exist_ok=True)
    for name in os.listdir(src):
        p = os.path.join(src, name)
        if os.path.isfile(p) and not name.startswith("report") and name != "manifest.json":
            with open(p, "rb") as f, open(os.path.join(dst, name), "wb") as g:
                g.write(f.read())
    m = load(os.path.join(src, "manifest.json"))
    pairs, tokens = [], {}
    for t, new_id, seed, shard in plan:
        spec = retag(t, t["id"], new_id, t["seed"], seed)
        if own is None or shard == own:
            pairs.append(spec)
            copy_records(src, dst, t, new_id, seed)
        key = f"{t['prompt']}/seed{t['seed']}"
        if key in m["tokens"]:
            tokens[f"{t['prompt']}/seed{seed}"] = m["tokens"][key]
    m["pairs"] = pairs
    m["tokens"] = tokens
    if own is not None:
        m["shard"]["plan"] = [
            dict(retag(t, t["id"], new_id, t["seed"], seed), shard=shard)
            for t, new_id, seed, shard in plan
        ]
    for s in m.get("sessions", []):
        s["planned_pairs"] = len(pairs)
    dump(os.path.join(dst, "manifest.json"), m)


def main():
    args = sys.argv[1:]
    shards = None
    if "--shards" in args:
        i = args.index("--shards")
        shards = int(args[i + 1])
        del args[i : i + 2]
    src, dst, n = args[0], args[1], int(args[2])
    if shards is None:
        templates = load(os.path.join(src, "manifest.json"))["pairs"]
        plan = [(t, nid, s, None) for t, nid, s in new_ids(templates, n)]
        fabricate(src, dst, plan, None)
        return
    dirs = [os.path.join(src, f"{k}-of-{shards}") for k in range(shards)]
    whole = load(os.path.join(dirs[0], "manifest.json"))["shard"]["plan"]
    templates = [{k: v for k, v in p.items() if k != "shard"} for p in whole]
    ids = new_ids(templates, n)
    # Each new pair keeps its template's shard: that shard holds the template's records.
    home = {p["id"]: p["shard"] for p in whole}
    plan = [(t, nid, s, home[t["id"]]) for t, nid, s in ids]
    for k, d in enumerate(dirs):
        fabricate(d, os.path.join(dst, f"{k}-of-{shards}"), plan, k)


if __name__ == "__main__":
    main()
