#!/usr/bin/env python3
"""Writes the fuzzers' starting corpora into fuzz/corpus/<target>/: the project's sweep files
and bad-input corpus, a tiny valid GGUF and the first 8 KiB of SmolLM2's (when fetched),
two small safetensors files, and a tiny config.json with matching weights (model_header)."""
import json
import shutil
import struct
from pathlib import Path

fuzz = Path(__file__).resolve().parent
repo = fuzz.parent
corpus = fuzz / "corpus"
for t in ("sweep_file", "gguf_header", "safetensors_header", "model_header"):
    (corpus / t).mkdir(parents=True, exist_ok=True)

for f in [*repo.glob("configs/*.yaml"), *repo.glob("tests/bad_input/*.yaml")]:
    shutil.copy(f, corpus / "sweep_file" / f.name)


def gstr(x: str) -> bytes:
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


kv = []


def add(key: str, typ: int, value: bytes) -> None:
    kv.append(gstr(key) + struct.pack("<I", typ) + value)


add("general.architecture", 8, gstr("llama"))
add("general.alignment", 4, struct.pack("<I", 32))
add("llama.embedding_length", 4, struct.pack("<I", 8))
add("llama.block_count", 4, struct.pack("<I", 1))
add("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 4) + b"".join(gstr(t) for t in "abcd"))
tensor = gstr("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 8, 4)
tensor += struct.pack("<I", 0) + struct.pack("<Q", 0)
head = b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", 1, len(kv)) + b"".join(kv) + tensor
data = head + b"\0" * ((-len(head)) % 32) + struct.pack("<32f", *range(32))
(corpus / "gguf_header" / "tiny_llama.gguf").write_bytes(data)
smollm2 = repo / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
if smollm2.exists():
    (corpus / "gguf_header" / "smollm2_head").write_bytes(smollm2.read_bytes()[:8192])


def safetensors(tensors: dict) -> bytes:
    header, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    h = json.dumps(header).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + blob


st = corpus / "safetensors_header"
(st / "two.safetensors").write_bytes(
    safetensors({"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), "b": ("BF16", [3], b"\0" * 6)})
)
(st / "one.safetensors").write_bytes(safetensors({"w": ("F16", [1], b"\0\0")}))
print(f"seeded {corpus}")

# model_header: config.json, NUL, safetensors whose tensors match it (one block).
cfg = {
    "model_type": "llama", "vocab_size": 4, "hidden_size": 8, "intermediate_size": 12,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 16,
    "tie_word_embeddings": True,
}
shapes = {
    "model.embed_tokens.weight": [4, 8], "model.norm.weight": [8],
    "model.layers.0.input_layernorm.weight": [8],
    "model.layers.0.post_attention_layernorm.weight": [8],
    "model.layers.0.self_attn.q_proj.weight": [8, 8],
    "model.layers.0.self_attn.k_proj.weight": [4, 8],
    "model.layers.0.self_attn.v_proj.weight": [4, 8],
    "model.layers.0.self_attn.o_proj.weight": [8, 8],
    "model.layers.0.mlp.gate_proj.weight": [12, 8],
    "model.layers.0.mlp.up_proj.weight": [12, 8],
    "model.layers.0.mlp.down_proj.weight": [8, 12],
}
tensors = {}
for name, shape in shapes.items():
    n = 1
    for d in shape:
        n *= d
    tensors[name] = ("F32", shape, b"\0" * (4 * n))
mh = corpus / "model_header"
(mh / "tiny_llama").write_bytes(json.dumps(cfg).encode() + b"\0" + safetensors(tensors))
