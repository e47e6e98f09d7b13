"""Gemma 3 (text) forward pass in float64, as Hugging Face transformers defines it
(src/transformers/models/gemma3/modeling_gemma3.py, Gemma3ForCausalLM), on a GGUF file's
tensors as llama.cpp stores them.

What the definition says, and how this file meets it:
- Embeddings are multiplied by the normalizer sqrt(hidden_size). transformers computes
  `hidden_size**0.5` in Python (float64) and keeps it as a tensor buffer
  (`torch.tensor(embed_scale)`, Gemma3TextScaledWordEmbedding), cast to the weights' dtype
  before multiplying. `from_pretrained` builds the model under `torch.set_default_dtype` of the
  asked dtype (modeling_utils.py, `local_torch_dtype`), so the buffer is made in that dtype:
  sqrt(640) = 25.298221281347036 stays exact in a float64 model, becomes 25.298221588134766 in
  a float32 one and 25.25 with bfloat16 weights. `--embed-scale` picks the dtype (default f32:
  the model a float32 decoder should match; f64: transformers' float64 model).
- RMSNorm is x / sqrt(mean(x^2) + eps) * (1 + w) (Gemma3RMSNorm). llama.cpp's converter already
  adds the 1 to every tensor whose name ends in `norm.weight` (Gemma3Model.norm_shift in
  convert_hf_to_gguf.py: "Gemma3RMSNorm adds 1.0 to the norm value"), so the file holds 1 + w
  and this forward multiplies by the stored value as it is. The file agrees: several
  post-attention norm weights are exactly 0.0 (w = -1 in the checkpoint), none of the 18
  layers' norms is centred on 0.
- Each block: h = x + post_attention_norm(attn(attn_norm(x))),
  out = h + post_ffw_norm(mlp(ffn_norm(h))) (input_layernorm, post_attention_layernorm,
  pre_feedforward_layernorm, post_feedforward_layernorm in transformers' names).
- Queries and keys get a per-head RMSNorm (attn_q_norm, attn_k_norm, over head_dim) before
  RoPE. RoPE rotates halves (rotate_half): Gemma's converter does not permute Q/K rows.
- MLP: down(gelu_tanh(gate(x)) * up(x)) (hidden_activation gelu_pytorch_tanh).
- Attention scores are scaled by query_pre_attn_scalar**-0.5. The GGUF file does not carry
  query_pre_attn_scalar; it is taken as the file's key_length (head_dim), as llama.cpp scales
  by 1/sqrt(head_dim) for every size but 27B (Gemma 3 270M/1B/4B/12B: 256).
  `--query-pre-attn-scalar` overrides it.
- Layer types: layer i is global (full attention) when (i + 1) % 6 == 0, else local
  (sliding); transformers' Gemma3TextConfig.layer_types with sliding_window_pattern 6.
  Local layers use RoPE base rope_local_base_freq = 10000 and the sliding window
  (`gemma3.attention.sliding_window`, 512); global layers use the file's rope.freq_base (1e6)
  and see every earlier position.
- Window convention: a query at position i sees keys j with i - window < j <= i, that is
  min(i + 1, window) keys, itself included (transformers' masking_utils:
  `sliding_window_overlay`: kv_idx > q_idx - sliding_window, and-ed with
  `causal_mask_function`: kv_idx <= q_idx).
- No attention or final logit soft-capping (Gemma 3 has none; the file has no
  final_logit_softcapping key). The output head is the embedding (tied).
"""

import math

import numpy as np

from common import attention, linear, rms_norm

LOCAL_BASE = 10000.0
PATTERN = 6
EMBED_SCALE = {
    "f32": np.float32,
    "f16": np.float16,
}


def embed_scale(hidden, dtype):
    """sqrt(hidden) rounded once, to nearest even, from float64 to `dtype` (f64: not at all), as
    `torch.tensor(hidden**0.5)` makes it under that default dtype."""
    s = float(np.float64(hidden) ** 0.5)
    if dtype == "f64":
        # Not through float32: a float64 model's buffer holds the float64 root itself, and the
        # float32 one is 1.2e-8 relative away (for 640), which every logit inherits.
        return s
    if dtype == "bf16":
        # 8 significant bits: frexp's mantissa lies in [0.5, 1), so m * 256 in [128, 256);
        # Python's round() breaks ties to even.
        m, e = math.frexp(s)
        return math.ldexp(round(m * 256) / 256, e)
    return float(EMBED_SCALE[dtype](s))


def rope_halves(ar, x, positions, base):
    """Rotates (x[j], x[j + d/2]) by pos * base^(-2j/d): x is (heads, T, d)."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = ar.angles(positions, inv_freq)
    cos, sin = np.cos(ang)[None], np.sin(ang)[None]
    x0, x1 = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([ar.store(x0 * cos - x1 * sin), ar.store(x1 * cos + x0 * sin)], axis=-1)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def is_global(layer):
    return (layer + 1) % PATTERN == 0


def forward(m, ids, ar, scale_dtype="f32", query_pre_attn_scalar=None):
    """Logits (T, vocab) of every position."""
    hidden = int(m.meta("gemma3.embedding_length"))
    layers = int(m.meta("gemma3.block_count"))
    heads = int(m.meta("gemma3.attention.head_count"))
    kv_heads = int(m.meta("gemma3.attention.head_count_kv"))
    d = int(m.meta("gemma3.attention.key_length"))
    eps = float(m.meta("gemma3.attention.layer_norm_rms_epsilon"))
    global_base = float(m.meta("gemma3.rope.freq_base"))
    window = int(m.meta("gemma3.attention.sliding_window"))
    if m.reader.fields.get("gemma3.final_logit_softcapping") is not None:
        raise SystemExit("final logit soft-capping is not implemented in this reference")
    t = len(ids)
    pos = np.arange(t)
    # The file carries no query_pre_attn_scalar: key_length, as llama.cpp reads it.
    scale = float(d if query_pre_attn_scalar is None else query_pre_attn_scalar) ** -0.5
    x = ar.store(m.w("token_embd.weight")[ids] * embed_scale(hidden, scale_dtype))
    for i in range(layers):
        p = f"blk.{i}."
        glob = is_global(i)
        base = global_base if glob else LOCAL_BASE
        h = rms_norm(ar, x, m.w(p + "attn_norm.weight"), eps)
        q = linear(ar, h, m.w(p + "attn_q.weight")).reshape(t, heads, d).transpose(1, 0, 2)
        k = linear(ar, h, m.w(p + "attn_k.weight")).reshape(t, kv_heads, d).transpose(1, 0, 2)
        v = linear(ar, h, m.w(p + "attn_v.weight")).reshape(t, kv_heads, d).transpose(1, 0, 2)
        q = rope_halves(ar, rms_norm(ar, q, m.w(p + "attn_q_norm.weight"), eps), pos, base)
        k = rope_halves(ar, rms_norm(ar, k, m.w(p + "attn_k_norm.weight"), eps), pos, base)
        y = attention(ar, q, k, v, scale, None if glob else window)
        y = linear(ar, y, m.w(p + "attn_output.weight"))
        x = ar.store(x + rms_norm(ar, y, m.w(p + "post_attention_norm.weight"), eps))
        h = rms_norm(ar, x, m.w(p + "ffn_norm.weight"), eps)
        g = ar.store(gelu_tanh(linear(ar, h, m.w(p + "ffn_gate.weight"))))
        u = linear(ar, h, m.w(p + "ffn_up.weight"))
        y = linear(ar, ar.store(g * u), m.w(p + "ffn_down.weight"))
        x = ar.store(x + rms_norm(ar, y, m.w(p + "post_ffw_norm.weight"), eps))
    x = rms_norm(ar, x, m.w("output_norm.weight"), eps)
    return linear(ar, x, m.w("token_embd.weight"))
