"""Llama-architecture forward pass (SmolLM2, TinyLlama, Llama 2/3 without rope scaling) in
float64, on a GGUF file's tensors as llama.cpp stores them.

llama.cpp's converter permutes the rows of attn_q and attn_k within each head so that RoPE
rotates adjacent pairs (x[2j], x[2j+1]) by angle pos * base^(-2j/d), where Hugging Face's
Llama rotates (x[j], x[j + d/2]). This forward keeps the file's layout and rotates adjacent
pairs: the same function of the weights, reached without undoing the permutation.
"""

import numpy as np

from common import attention, linear, rms_norm


def rope_pairs(ar, x, positions, base):
    """Rotates adjacent pairs of x: (heads, T, d)."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = ar.angles(positions, inv_freq)  # (T, d/2)
    cos, sin = np.cos(ang)[None], np.sin(ang)[None]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = ar.store(x0 * cos - x1 * sin)
    out[..., 1::2] = ar.store(x1 * cos + x0 * sin)
    return out


def forward(m, ids, ar):
    """Logits (T, vocab) of every position."""
    a = m.arch
    hidden = int(m.meta(f"{a}.embedding_length"))
    layers = int(m.meta(f"{a}.block_count"))
    heads = int(m.meta(f"{a}.attention.head_count"))
    kv_heads = int(m.meta(f"{a}.attention.head_count_kv", heads))
    eps = float(m.meta(f"{a}.attention.layer_norm_rms_epsilon"))
    base = float(m.meta(f"{a}.rope.freq_base", 10000.0))
    if m.has("rope_freqs.weight") or m.meta(f"{a}.rope.scaling.type", "none") != "none":
        raise SystemExit("rope scaling is not implemented in this reference")
    d = hidden // heads
    t = len(ids)
    pos = np.arange(t)
    x = m.w("token_embd.weight")[ids]
    for i in range(layers):
        p = f"blk.{i}."
        h = rms_norm(ar, x, m.w(p + "attn_norm.weight"), eps)
        q = linear(ar, h, m.w(p + "attn_q.weight")).reshape(t, heads, d).transpose(1, 0, 2)
        k = linear(ar, h, m.w(p + "attn_k.weight")).reshape(t, kv_heads, d).transpose(1, 0, 2)
        v = linear(ar, h, m.w(p + "attn_v.weight")).reshape(t, kv_heads, d).transpose(1, 0, 2)
        q = rope_pairs(ar, q, pos, base)
        k = rope_pairs(ar, k, pos, base)
        y = attention(ar, q, k, v, 1.0 / np.sqrt(d))
        x = ar.store(x + linear(ar, y, m.w(p + "attn_output.weight")))
        h = rms_norm(ar, x, m.w(p + "ffn_norm.weight"), eps)
        g = linear(ar, h, m.w(p + "ffn_gate.weight"))
        g = ar.store(g / (1.0 + np.exp(-g)))  # SiLU
        u = linear(ar, h, m.w(p + "ffn_up.weight"))
        x = ar.store(x + linear(ar, ar.store(g * u), m.w(p + "ffn_down.weight")))
    x = rms_norm(ar, x, m.w("output_norm.weight"), eps)
    head = m.w("output.weight") if m.has("output.weight") else m.w("token_embd.weight")
    return linear(ar, x, head)
