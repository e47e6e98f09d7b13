"""Float64 reference forward pass of a GGUF model, independent of driftsweep's Rust decoder.

    python scripts/reference/forward.py MODEL.gguf IDS OUT.npy [options]

IDS is a file of token ids (whitespace- or comma-separated) or a comma-separated list. OUT.npy
gets float64 logits of shape (len(IDS), vocab): one row per position, as a prefill computes
them. Architectures: `llama` (llama.py) and `gemma3` (gemma3.py), from general.architecture.

--f32-noise SEED runs the float32 rounding-error model of common.py instead of exact float64
(see there): the difference to the exact run is how far float32 rounding moves the logits.
--digests FILE writes, per tensor, the sha256 of its dequantized float32 bytes (little-endian,
row-major), so a test can check that another loader dequantized the very same values.
"""

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("out")
    ap.add_argument("--f32-noise", type=int, metavar="SEED")
    ap.add_argument("--digests", metavar="FILE")
    ap.add_argument("--embed-scale", choices=["f64", "f32", "bf16", "f16"], default="f32",
                    help="gemma3: dtype the sqrt(hidden) normalizer is rounded to (default f32)")
    ap.add_argument("--query-pre-attn-scalar", type=float, default=None,
                    help="gemma3: attention scores are scaled by its -1/2 power (default: the "
                         "file's key_length, as llama.cpp reads it; 256 on Gemma 3 270M-12B)")
    args = ap.parse_args()
    m = common.Model(args.model)
    ids = common.read_ids(args.ids)
    if args.digests:
        with open(args.digests, "w") as f:
            for name in sorted(m.names()):
                a = m.f32(name).astype("<f4", copy=False)
                f.write(f"{name} {hashlib.sha256(a.tobytes()).hexdigest()}\n")
    vocab = len(m.reader.fields["tokenizer.ggml.tokens"].data)
    if np.max(ids) >= vocab or np.min(ids) < 0:
        sys.exit(f"a token id is outside the vocabulary of {vocab}")
    ar = common.Exact() if args.f32_noise is None else common.F32Noise(args.f32_noise)
    if m.arch == "llama":
        import llama

        logits = llama.forward(m, ids, ar)
    elif m.arch == "gemma3":
        import gemma3

        logits = gemma3.forward(m, ids, ar, args.embed_scale, args.query_pre_attn_scalar)
    else:
        sys.exit(f"architecture {m.arch} is not implemented (llama, gemma3)")
    np.save(args.out, np.ascontiguousarray(logits, dtype=np.float64))


if __name__ == "__main__":
    main()
