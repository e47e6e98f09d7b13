#!/usr/bin/env python3
"""The peer: runs driftsweep's pairs again with Hugging Face transformers + PyTorch (CPU).

Reads a driftsweep results directory (manifest.json: the pairs and the exact token ids each
pair consumed), loads the same model from the same GGUF file (dequantized to f32 by
transformers through the `gguf` package, then cast to the run dtype, as driftsweep does),
and for every pair makes the same two runs driftsweep makes (src/run/forward.rs):

- prefill: one forward over prompt + span (P + S tokens) at offset 0; keep the logits of
  positions P .. P+S-1 (driftsweep's `span_start` = P).
- decode, kv_aligned=true: one forward over all P + S tokens (prefill's own computation), the
  KV cache cropped to its first P positions, then one forward per span token; keep each span
  step's logits.
- decode, kv_aligned=false: every token, prompt included, fed one at a time; keep the logits of
  the S span steps.

Logits leave the model in the run dtype and are upcast to f32; the metrics are those of
src/compare.rs (differences in f32, sums and log-softmax in f64), with the pair's limits taken
from the manifest (`resolved.limits`), and a verdict as src/verdict.rs gives it. Timing is per
run, as driftsweep times it: from the start of the run to the span logits in host memory as
f32; model loading is excluded; torch.inference_mode; torch.set_num_threads(--threads).

Output: a JSON file (--out) and a printed table of per-run wall times beside driftsweep's own
(from runs/*.json), plus totals. If driftsweep kept logits (logits/*.safetensors), the peer's
logits of each run are compared with driftsweep's of the same run ("cross" in the JSON).

Usage:
    python scripts/peer/peer_transformers.py RESULTS_DIR --out peer.json [--dtype f32]
        [--span 8] [--limit N] [--threads N] [--attn sdpa|eager] [--gguf PATH]
        [--save-logits DIR] [--warmup N]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantization progress bar

import numpy as np  # noqa: E402

DTYPES = ("f32", "bf16", "f16")
MANTISSA_BITS = {"f32": 23, "bf16": 7, "f16": 10}


# --------------------------------------------------------------------------------------------
# Metrics: a port of src/compare.rs and the pair judgement of src/verdict.rs.
# --------------------------------------------------------------------------------------------


def percentile(xs: np.ndarray, q: float) -> float:
    """Nearest-rank percentile (compare.rs `percentile`); 0 for an empty array."""
    n = xs.size
    if n == 0:
        return 0.0
    rank = min(max(int(math.ceil(q * n)), 1), n) - 1
    return float(np.partition(xs, rank)[rank])


def argmax(row: np.ndarray) -> int:
    """Index of the largest finite value, first on ties; 0 when none is finite."""
    finite = np.isfinite(row)
    if not finite.any():
        return 0
    if finite.all():
        return int(np.argmax(row))
    masked = np.where(finite, row, -np.inf)
    return int(np.argmax(masked))


def log_softmax64(row: np.ndarray) -> np.ndarray:
    m = float(row.max())
    x = row.astype(np.float64)
    lse = m + math.log(float(np.exp(x - m).sum()))
    return x - lse


def kl_row(p: np.ndarray, q: np.ndarray) -> float:
    lp = log_softmax64(p)
    lq = log_softmax64(q)
    k = float((np.exp(lp) * (lp - lq)).sum())
    return float(np.float32(max(k, 0.0)))


def compare(pre: np.ndarray, dec: np.ndarray, span_start: int, divergence_limit: float) -> dict:
    """compare.rs `compare` over f32 arrays of shape (positions, vocab)."""
    if pre.shape != dec.shape or pre.ndim != 2 or pre.shape[0] == 0:
        raise ValueError(f"shape mismatch: prefill {pre.shape}, decode {dec.shape}")
    pre = pre.astype(np.float32, copy=False)
    dec = dec.astype(np.float32, copy=False)
    positions, vocab = pre.shape
    fin = np.isfinite(pre) & np.isfinite(dec)
    non_finite = int((~np.isfinite(pre)).sum() + (~np.isfinite(dec)).sum())
    diff = np.abs(np.where(fin, pre, 0).astype(np.float32) - np.where(fin, dec, 0).astype(np.float32))
    diff = diff.astype(np.float32)
    abs_diffs = diff[fin]
    per_pos_max_abs = [float(np.float32(diff[i][fin[i]].max())) if fin[i].any() else 0.0 for i in range(positions)]
    per_pos_kl: list = []
    flips = []
    first_div = None
    for i in range(positions):
        pos = span_start + i
        row_finite = bool(fin[i].all())
        if first_div is None and (not row_finite or per_pos_max_abs[i] > divergence_limit):
            first_div = pos
        if not row_finite:
            per_pos_kl.append(None)
            continue
        per_pos_kl.append(kl_row(pre[i], dec[i]))
        ia, ib = argmax(pre[i]), argmax(dec[i])
        if ia != ib:
            flips.append(
                {
                    "pos": pos,
                    "prefill_margin": float(np.float32(pre[i, ia] - pre[i, ib])),
                    "prefill_top": float(pre[i, ia]),
                }
            )
    max_abs = float(abs_diffs.max()) if abs_diffs.size else 0.0
    mean_abs = float(np.float32(abs_diffs.astype(np.float64).sum() / abs_diffs.size)) if abs_diffs.size else 0.0
    finite_kl = np.array([k for k in per_pos_kl if k is not None], dtype=np.float32)
    kl_mean = float(np.float32(finite_kl.astype(np.float64).mean())) if finite_kl.size else 0.0
    kl_max = float(finite_kl.max()) if finite_kl.size else 0.0
    return {
        "max_abs_diff": max_abs,
        "p99_abs_diff": percentile(abs_diffs, 0.99),
        "mean_abs_diff": mean_abs,
        "top1_agreement": float(np.float32((positions - len(flips)) / positions)),
        "kl_mean": kl_mean,
        "kl_p99": percentile(finite_kl, 0.99),
        "kl_max": kl_max,
        "first_divergent_pos": first_div,
        "first_top1_flip": flips[0] if flips else None,
        "top1_flips": flips,
        "non_finite": non_finite,
        "positions": positions,
        "vocab": vocab,
        "per_pos_max_abs": per_pos_max_abs,
        "per_pos_kl": per_pos_kl,
    }


def ulp(dtype: str, x: float) -> float:
    e = math.floor(math.log2(max(abs(x), np.finfo(np.float32).tiny)))
    return 2.0 ** (e - MANTISSA_BITS[dtype])


def judge(m: dict, dtype: str, kv_aligned: bool, lim: dict | None) -> tuple[str | None, str]:
    """verdict.rs `judge_pair`, with the limits driftsweep recorded in its manifest."""
    if lim is None:
        return None, "no limits for this dtype in the manifest"
    ok, bad, what = (
        ("PASS_EQUIV", "FAIL_EQUIV", "tolerance") if kv_aligned else ("EXPECTED_DRIFT", "FAIL_DRIFT", "drift budget")
    )
    breaches = []
    if m["non_finite"]:
        breaches.append(f"{m['non_finite']} non-finite logits")
    for k in ("max_abs_diff", "p99_abs_diff", "mean_abs_diff", "kl_mean", "kl_p99", "kl_max"):
        if m[k] > lim[k]:
            breaches.append(f"{k} {m[k]:.3g} > {lim[k]:.3g}")
    # verdict.rs `allowed_flips`: the fraction of positions rounded up.
    allowed = max(0, math.ceil((1.0 - min(max(lim["top1_agreement_min"], 0.0), 1.0)) * m["positions"] - 1e-6))
    if len(m["top1_flips"]) > allowed:
        breaches.append(f"top1_agreement {m['top1_agreement']:.4f} < {lim['top1_agreement_min']:.4f}")
    wide = [
        f
        for f in m["top1_flips"]
        if f["prefill_margin"] > max(lim["tie_margin"], lim["tie_ulps"] * ulp(dtype, f["prefill_top"]))
    ]
    if wide:
        breaches.append(f"{len(wide)} top-1 flip(s) on a wide margin, first at position {wide[0]['pos']}")
    if breaches:
        return bad, f"outside the {what}: " + "; ".join(breaches)
    reason = f"within the {what}"
    if m["max_abs_diff"] == 0.0:
        reason += "; no drift observed: the logits are bit-identical"
    else:
        reason += f" (max_abs_diff {m['max_abs_diff']:.3g} of {lim['max_abs_diff']:.3g}, kl_mean {m['kl_mean']:.3g})"
        if m["top1_flips"]:
            reason += f"; {len(m['top1_flips'])} top-1 flip(s), all on near-ties"
    return ok, reason


# --------------------------------------------------------------------------------------------
# Model and runs.
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(manifest: dict, results: Path, override: str | None) -> Path:
    if override:
        p = Path(override)
        if not p.exists():
            sys.exit(f"peer: --gguf {p} does not exist")
        return p
    src = manifest.get("model", {}).get("source") or manifest.get("resolved", {}).get("model", {}).get("source")
    if not src:
        sys.exit("peer: the manifest names no model source; pass --gguf")
    if src.startswith("builtin:") or src.startswith("hf:"):
        sys.exit(f"peer: model source `{src}` is not a file; the peer runs GGUF files or HF directories (--gguf)")
    p = Path(src)
    if p.is_absolute():
        cands = [p]
    else:
        repo = Path(__file__).resolve().parents[2]
        cfg = manifest.get("config_path")
        cands = [Path.cwd() / p, repo / p, results / p]
        if cfg:
            cands.append(Path(cfg).parent / p)
    for c in cands:
        if c.exists():
            return c
    sys.exit(f"peer: model `{src}` not found (looked at {', '.join(map(str, cands))}); pass --gguf")


def load_f32(path: Path, attn: str):
    """The model in f32 from a GGUF file (transformers' GGUF loader) or an HF directory."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    if path.is_dir():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation=attn)
        how = "from_pretrained(dir)"
    else:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation=attn
        )
        how = "from_pretrained(dir, gguf_file=...) [gguf dequantize -> f32]"
    model.eval()
    return model, time.perf_counter() - t0, how


def torch_dtype(name: str):
    import torch

    return {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]


def to_host(logits) -> np.ndarray:
    import torch

    return logits.to(torch.float32).contiguous().numpy()


def run_prefill(model, tokens: list[int], p: int) -> tuple[np.ndarray, dict]:
    import torch

    t0 = time.perf_counter()
    ids = torch.tensor([tokens], dtype=torch.long)
    out = model(input_ids=ids, use_cache=False)
    rows = to_host(out.logits[0, p:])
    wall = time.perf_counter() - t0
    return rows, {"wall_s": wall, "forwards": 1, "tokens_fed": len(tokens), "span_start": p, "positions": rows.shape[0]}


def run_decode(model, tokens: list[int], p: int, kv_aligned: bool) -> tuple[np.ndarray, dict]:
    import torch
    from transformers import DynamicCache

    t0 = time.perf_counter()
    forwards = 0
    if kv_aligned:
        # Prefill's own forward over P + S, then keep the prompt's P cached positions.
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([tokens], dtype=torch.long), past_key_values=cache, use_cache=True)
        # crop(-n) removes the last n positions (transformers 5 refuses a positive target size;
        # older versions read a negative value the same way).
        if len(tokens) > p:
            cache.crop(p - len(tokens))
        if cache.get_seq_length() != p:
            raise RuntimeError(f"cropped cache holds {cache.get_seq_length()} positions, expected {p}")
        forwards += 1
    else:
        cache = DynamicCache(config=model.config)
        for tok in tokens[:p]:
            model(input_ids=torch.tensor([[tok]], dtype=torch.long), past_key_values=cache, use_cache=True)
            forwards += 1
    rows = []
    for tok in tokens[p:]:
        out = model(input_ids=torch.tensor([[tok]], dtype=torch.long), past_key_values=cache, use_cache=True)
        rows.append(to_host(out.logits[0, -1]))
        forwards += 1
    logits = np.stack(rows)
    wall = time.perf_counter() - t0
    if cache.get_seq_length() != len(tokens):
        raise RuntimeError(f"decode ended at cache length {cache.get_seq_length()}, expected {len(tokens)}")
    return logits, {
        "wall_s": wall,
        "forwards": forwards,
        "tokens_fed": len(tokens),
        "span_start": p,
        "positions": logits.shape[0],
    }


def read_safetensors_logits(path: Path) -> np.ndarray | None:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        return None
    if not path.exists():
        return None
    return load_file(str(path))["logits"]


def save_logits(dirpath: Path, run_id: str, logits: np.ndarray) -> str:
    from safetensors.numpy import save_file

    dirpath.mkdir(parents=True, exist_ok=True)
    f = dirpath / f"{run_id}.safetensors"
    save_file({"logits": np.ascontiguousarray(logits, dtype=np.float32)}, str(f))
    return str(f)


def cross_check(peer: np.ndarray, ds: np.ndarray) -> dict:
    d = np.abs(peer.astype(np.float64) - ds.astype(np.float64))
    top = float(np.abs(ds).max())
    same_top1 = sum(argmax(peer[i]) == argmax(ds[i]) for i in range(ds.shape[0]))
    return {
        "max_abs_diff": float(d.max()),
        "mean_abs_diff": float(d.mean()),
        "max_abs_logit": top,
        "rel_max_abs_diff": float(d.max()) / top if top else None,
        "top1_agreement": same_top1 / ds.shape[0],
    }


# --------------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------------


def versions() -> dict:
    import torch
    import transformers

    v = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }
    for mod in ("gguf", "safetensors"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            try:
                from importlib.metadata import version

                v[mod] = version(mod)
            except Exception:  # noqa: BLE001
                v[mod] = None
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a driftsweep results directory (with manifest.json)")
    ap.add_argument("--out", type=Path, default=Path("peer.json"), help="JSON output (default peer.json)")
    ap.add_argument("--dtype", action="append", choices=DTYPES, help="only these dtypes (repeatable)")
    ap.add_argument("--span", action="append", type=int, help="only these spans (repeatable)")
    ap.add_argument("--kv-aligned", choices=("true", "false"), help="only pairs with this kv_aligned")
    ap.add_argument("--limit", type=int, help="at most N pairs (after the filters, in manifest order)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="transformers attention implementation (default sdpa)")
    ap.add_argument("--gguf", help="model file or HF directory (default: the manifest's model source)")
    ap.add_argument("--save-logits", type=Path, help="write each run's span logits here as safetensors (f32)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed prefill forwards per dtype before timing (default 0, as driftsweep)")
    ap.add_argument("--no-hash", action="store_true", help="skip checking the model file's sha256 against the manifest")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    sweep_t0 = time.perf_counter()

    manifest = json.loads((args.results / "manifest.json").read_text())
    pairs = manifest["pairs"]
    if args.dtype:
        pairs = [p for p in pairs if p["dtype"] in args.dtype]
    if args.span:
        pairs = [p for p in pairs if p["span"] in args.span]
    if args.kv_aligned:
        pairs = [p for p in pairs if p["kv_aligned"] == (args.kv_aligned == "true")]
    if args.limit is not None:
        pairs = pairs[: args.limit]
    if not pairs:
        print("peer: no pairs left after the filters", file=sys.stderr)
        return 2
    bad = [p["dtype"] for p in pairs if p["dtype"] not in DTYPES]
    if bad:
        sys.exit(f"peer: unknown dtype(s) {bad}")

    model_path = resolve_model(manifest, args.results, args.gguf)
    model_info = {"path": str(model_path)}
    want_sha = manifest.get("model", {}).get("sha256")
    if model_path.is_file() and not args.no_hash:
        got = sha256_file(model_path)
        model_info["sha256"] = got
        if want_sha and got != want_sha:
            sys.exit(f"peer: {model_path} has sha256 {got}, the manifest's model has {want_sha}")
    limits = manifest.get("resolved", {}).get("limits", {})
    tokens = manifest["tokens"]

    print(
        f"peer: {len(pairs)} pair(s) from {args.results}, model {model_path}, "
        f"torch {torch.__version__}, {args.threads} thread(s), attn={args.attn}",
        file=sys.stderr,
    )
    base, load_s, how = load_f32(model_path, args.attn)
    model_info.update({"loader": how, "load_f32_s": load_s, "config": {k: getattr(base.config, k, None) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "rms_norm_eps", "rope_theta", "tie_word_embeddings", "max_position_embeddings")}})
    model_loads = [{"dtype": "f32", "load_s": load_s, "how": how}]

    runs_out, pairs_out, cross = [], [], []
    by_dtype: dict[str, list] = {}
    for p in pairs:
        by_dtype.setdefault(p["dtype"], []).append(p)

    with torch.inference_mode():
        for dt, group in by_dtype.items():
            if dt == "f32":
                model = base
            else:
                t0 = time.perf_counter()
                model = copy.deepcopy(base).to(torch_dtype(dt))
                model_loads.append({"dtype": dt, "load_s": time.perf_counter() - t0, "how": "deepcopy(f32 model).to(dtype)"})
            for _ in range(args.warmup):
                tk = tokens[f"{group[0]['prompt']}/seed{group[0]['seed']}"]
                model(input_ids=torch.tensor([tk["prompt"]], dtype=torch.long), use_cache=False)
            for p in group:
                tk = tokens.get(f"{p['prompt']}/seed{p['seed']}")
                if tk is None or len(tk["continuation"]) < p["span"]:
                    pairs_out.append({**p, "verdict": "INCOMPLETE", "reason": "no tokens for this prompt and seed in the manifest"})
                    continue
                seq = list(tk["prompt"]) + list(tk["continuation"][: p["span"]])
                plen = len(tk["prompt"])
                pre, pre_info = run_prefill(model, seq, plen)
                dec, dec_info = run_decode(model, seq, plen, p["kv_aligned"])
                rec = {}
                for mode, lg, info in (("prefill", pre, pre_info), ("decode", dec, dec_info)):
                    rid = f"{p['id']}.{mode}"
                    r = {"id": rid, "pair_id": p["id"], "mode": mode, **info}
                    dsr = args.results / "runs" / f"{rid}.json"
                    if dsr.exists():
                        dj = json.loads(dsr.read_text())
                        r["driftsweep_wall_s"] = dj.get("wall_s")
                        r["driftsweep_tokens_fed"] = dj.get("tokens_fed")
                        r["driftsweep_forwards"] = dj.get("forwards")
                    if args.save_logits:
                        r["logits_file"] = save_logits(args.save_logits, rid, lg)
                    ds_logits = read_safetensors_logits(args.results / "logits" / f"{rid}.safetensors")
                    if ds_logits is not None:
                        c = {"run": rid, "dtype": dt, "mode": mode, **cross_check(lg, ds_logits)}
                        cross.append(c)
                        r["vs_driftsweep"] = c
                    runs_out.append(r)
                    rec[mode] = {"wall_s": info["wall_s"], "tokens_fed": info["tokens_fed"], "forwards": info["forwards"]}
                lim_key = "tolerance" if p["kv_aligned"] else "drift_budget"
                lim = limits.get(dt, {}).get(lim_key)
                div = lim["max_abs_diff"] if lim else float("inf")
                m = compare(pre, dec, plen, div)
                verdict, reason = judge(m, dt, p["kv_aligned"], lim)
                out = {**p, "verdict": verdict, "reason": reason, "metrics": m, "limits": lim, **rec}
                dsp = args.results / "pairs" / f"{p['id']}.json"
                if dsp.exists():
                    dj = json.loads(dsp.read_text())
                    dm = dj.get("metrics") or {}
                    out["driftsweep"] = {
                        "verdict": dj.get("verdict"),
                        **{k: dm.get(k) for k in ("max_abs_diff", "p99_abs_diff", "mean_abs_diff", "top1_agreement", "kl_mean", "kl_max")},
                    }
                pairs_out.append(out)
            if model is not base:
                del model

    sweep_wall = time.perf_counter() - sweep_t0
    run_total = sum(r["wall_s"] for r in runs_out)
    ds_total = sum(r.get("driftsweep_wall_s") or 0.0 for r in runs_out)
    have_ds = all(r.get("driftsweep_wall_s") is not None for r in runs_out)
    report = {
        "tool": {"name": "driftsweep-peer", "impl": "transformers+pytorch", **versions()},
        "results_dir": str(args.results),
        "sweep_name": manifest.get("sweep_name"),
        "device": "cpu",
        "threads": args.threads,
        "attn_implementation": args.attn,
        "warmup": args.warmup,
        "model": model_info,
        "model_loads": model_loads,
        "runs": runs_out,
        "pairs": pairs_out,
        "cross": cross,
        "totals": {
            "runs": len(runs_out),
            "pairs": len(pairs_out),
            "runs_wall_s": run_total,
            "driftsweep_runs_wall_s": ds_total if have_ds else None,
            "sweep_wall_s": sweep_wall,
            "driftsweep_sweep_wall_s": manifest.get("wall_s"),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, allow_nan=False))
    tmp.replace(args.out)

    # Tables.
    w = max(len(r["id"]) for r in runs_out)
    print(f"{'run':<{w}}  {'tokens':>6}  {'fwd':>4}  {'peer_s':>8}  {'ds_s':>8}  {'peer/ds':>7}")
    for r in runs_out:
        ds = r.get("driftsweep_wall_s")
        ratio = f"{r['wall_s'] / ds:7.2f}" if ds else f"{'-':>7}"
        dss = f"{ds:8.3f}" if ds is not None else f"{'-':>8}"
        print(f"{r['id']:<{w}}  {r['tokens_fed']:>6}  {r['forwards']:>4}  {r['wall_s']:8.3f}  {dss}  {ratio}")
    print(f"{'total runs':<{w}}  {'':>6}  {'':>4}  {run_total:8.3f}  " + (f"{ds_total:8.3f}" if have_ds else f"{'-':>8}"))
    dsw = manifest.get("wall_s")
    print(f"sweep wall (peer, incl. model load {sum(l['load_s'] for l in model_loads):.2f}s): {sweep_wall:.2f}s"
          + (f"; driftsweep sweep wall: {dsw:.2f}s" if dsw else ""))
    print()
    wp = max(len(p["id"]) for p in pairs_out)
    print(f"{'pair':<{wp}}  {'peer verdict':<14}  {'max_abs':>9}  {'p99_abs':>9}  {'kl_mean':>9}  {'top1':>6}  {'ds max_abs':>10}  {'ds verdict':<14}")
    for p in pairs_out:
        m = p.get("metrics")
        if not m:
            print(f"{p['id']:<{wp}}  {p['verdict']:<14}  {p['reason']}")
            continue
        d = p.get("driftsweep", {})
        dma = f"{d['max_abs_diff']:10.3g}" if d.get("max_abs_diff") is not None else f"{'-':>10}"
        print(f"{p['id']:<{wp}}  {str(p['verdict']):<14}  {m['max_abs_diff']:9.3g}  {m['p99_abs_diff']:9.3g}  "
              f"{m['kl_mean']:9.3g}  {m['top1_agreement']:6.3f}  {dma}  {str(d.get('verdict', '-')):<14}")
    if cross:
        print()
        print("peer vs driftsweep logits, same run (driftsweep kept logits):")
        for c in cross:
            print(f"  {c['run']:<{w}}  max|diff| {c['max_abs_diff']:.3g}  (max|logit| {c['max_abs_logit']:.3g}, "
                  f"rel {c['rel_max_abs_diff']:.2g})  mean|diff| {c['mean_abs_diff']:.3g}  top1 agree {c['top1_agreement']:.3f}")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
