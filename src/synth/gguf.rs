//! A synthetic checkpoint as a GGUF file, the way llama.cpp's `convert_hf_to_gguf.py` writes
//! the architecture: its `general.architecture`, its tensor names (`token_embd`,
//! `blk.N.attn_q`, ..., `output_norm`, `output`), its metadata keys, its conversions of the
//! weights (Q/K rows permuted for Llama-architecture files, Gemma's norms stored as `1 + w`,
//! Phi-2's Q/K/V fused, MoE experts stacked), and a byte-level tokenizer of the vocabulary's
//! size. The same checkpoint and format always give the same bytes.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, Tensor};
use serde_json::Value as Json;

use super::make::Checkpoint;
use crate::config::SynthFormat;

/// Writes checkpoint `c` to `path` as a GGUF file of `format` (one of the `gguf:` formats).
pub fn write(c: &Checkpoint, format: SynthFormat, path: &Path) -> Result<(), String> {
    let b = bytes(c, format)?;
    std::fs::write(path, b).map_err(|e| format!("{}: {e}", path.display()))
}

/// The GGUF file's bytes.
pub fn bytes(c: &Checkpoint, format: SynthFormat) -> Result<Vec<u8>, String> {
    let arch = c.architecture.gguf_name().ok_or_else(|| {
        format!(
            "architecture `{}` has no GGUF files (llama.cpp has no such architecture)",
            c.architecture
        )
    })?;
    encode(arch, &c.config, &c.tensors, format)
}

/// The GGUF bytes of a checkpoint (`config`, Hugging Face-named `tensors`) whose llama.cpp
/// `general.architecture` is `arch`.
pub fn encode(
    arch: &str,
    config: &Json,
    tensors: &BTreeMap<String, Tensor>,
    format: SynthFormat,
) -> Result<Vec<u8>, String> {
    let dtype = match format {
        SynthFormat::GgufF32 => GgmlDType::F32,
        SynthFormat::GgufQ8_0 => GgmlDType::Q8_0,
        SynthFormat::GgufQ4K => GgmlDType::Q4K,
        SynthFormat::Safetensors => {
            return Err("format `safetensors` is not a GGUF format".into());
        }
    };
    let cfg = Cfg(config);
    let tensors = convert(arch, &cfg, tensors)?;
    let mut qs = Vec::with_capacity(tensors.len());
    for (name, t) in &tensors {
        qs.push((name.clone(), quantize(name, t, dtype, &cfg)?));
    }
    let metadata = metadata(arch, &cfg)?;
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = qs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts).map_err(|e| format!("writing GGUF: {e}"))?;
    Ok(out.into_inner())
}

/// Reads of `config.json`.
struct Cfg<'a>(&'a Json);

impl Cfg<'_> {
    fn u(&self, keys: &[&str]) -> Option<usize> {
        keys.iter()
            .find_map(|k| self.0.get(*k).and_then(|v| v.as_u64()))
            .map(|v| v as usize)
    }
    fn need(&self, keys: &[&str]) -> Result<usize, String> {
        self.u(keys)
            .ok_or_else(|| format!("config.json: none of {} is set", keys.join(", ")))
    }
    fn f(&self, keys: &[&str]) -> Option<f64> {
        keys.iter()
            .find_map(|k| self.0.get(*k).and_then(|v| v.as_f64()))
    }
    fn b(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(|v| v.as_bool())
    }
    fn heads(&self) -> Result<usize, String> {
        self.need(&["num_attention_heads", "n_head"])
    }
    fn kv_heads(&self) -> Result<usize, String> {
        Ok(self
            .u(&["num_key_value_heads", "multi_query_group_num"])
            .unwrap_or(self.heads()?))
    }
    fn head_dim(&self) -> Result<usize, String> {
        match self.u(&["head_dim"]) {
            Some(d) => Ok(d),
            None => Ok(self.need(&["hidden_size"])? / self.heads()?.max(1)),
        }
    }
}

/// Names of a block's tensors, Hugging Face (after `model.layers.N.`, before `.weight` or
/// `.bias`) → llama.cpp (after `blk.N.`), as llama.cpp's `tensor_mapping.py` has them for
/// these architectures. Where an architecture means something else by a name, [`OVERRIDES`]
/// says so.
const BLOCK: [(&str, &str); 29] = [
    ("input_layernorm", "attn_norm"),
    ("operator_norm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.dense", "attn_output"),
    ("self_attn.out_proj", "attn_output"),
    ("self_attn.qkv_proj", "attn_qkv"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("self_attn.q_layernorm", "attn_q_norm"),
    ("self_attn.k_layernorm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("ffn_norm", "ffn_norm"),
    ("post_self_attn_layernorm", "post_attention_norm"),
    ("post_mlp_layernorm", "post_ffw_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("mlp.gate_up_proj", "ffn_up"),
    ("mlp.fc1", "ffn_up"),
    ("mlp.fc2", "ffn_down"),
    ("mlp.gate", "ffn_gate_inp"),
    ("feed_forward.w1", "ffn_gate"),
    ("feed_forward.w3", "ffn_up"),
    ("feed_forward.w2", "ffn_down"),
    ("conv.in_proj", "shortconv.in_proj"),
    ("conv.out_proj", "shortconv.out_proj"),
];

/// Per architecture (`general.architecture`), block names that differ from [`BLOCK`]:
/// Gemma 3 norms after attention and after its MLP, and its norm before the MLP.
const OVERRIDES: [(&str, &str, &str); 4] = [
    ("gemma3", "post_attention_layernorm", "post_attention_norm"),
    ("gemma3", "pre_feedforward_layernorm", "ffn_norm"),
    ("gemma3", "post_feedforward_layernorm", "post_ffw_norm"),
    ("lfm2", "conv.conv", "shortconv.conv"),
];

/// Names outside the blocks.
const TOP: [(&str, &str); 5] = [
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("model.final_layernorm", "output_norm"),
    ("model.embedding_norm", "token_embd_norm"),
    ("lm_head", "output"),
];

/// llama.cpp's name of Hugging Face tensor `hf` in a file of `arch`; `None` for the experts
/// of a MoE block, which [`convert`] stacks.
fn gguf_name(arch: &str, hf: &str) -> Result<Option<String>, String> {
    let unknown = || format!("tensor `{hf}`: no llama.cpp name for it in architecture `{arch}`");
    let (stem, kind) = hf.rsplit_once('.').ok_or_else(unknown)?;
    if let Some((_, g)) = TOP.iter().find(|(h, _)| *h == stem) {
        return Ok(Some(format!("{g}.{kind}")));
    }
    let rest = stem.strip_prefix("model.layers.").ok_or_else(unknown)?;
    let (layer, t) = rest.split_once('.').ok_or_else(unknown)?;
    if t.starts_with("mlp.experts.") {
        return Ok(None);
    }
    let g = OVERRIDES
        .iter()
        .find(|(a, h, _)| *a == arch && *h == t)
        .map(|(_, _, g)| *g)
        .or_else(|| BLOCK.iter().find(|(h, _)| *h == t).map(|(_, g)| *g))
        .ok_or_else(unknown)?;
    Ok(Some(format!("blk.{layer}.{g}.{kind}")))
}

/// Orders GGUF names as llama.cpp writes them: the embedding, the blocks in order, the rest.
fn order(name: &str) -> (usize, usize, String) {
    match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((n, t)) => (1, n.parse().unwrap_or(usize::MAX), t.to_string()),
        None if name.starts_with("token_embd") => (0, 0, name.to_string()),
        None => (2, 0, name.to_string()),
    }
}

/// The checkpoint's tensors under llama.cpp's names, converted as llama.cpp converts them.
fn convert(
    arch: &str,
    cfg: &Cfg,
    hf: &BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, String> {
    let mut out: BTreeMap<(usize, usize, String), (String, Tensor)> = BTreeMap::new();
    let mut experts: BTreeMap<(usize, String), BTreeMap<usize, Tensor>> = BTreeMap::new();
    let llama_rope = arch == "llama";
    for (name, t) in hf {
        let mut t = t.clone();
        let Some(g) = gguf_name(arch, name)? else {
            // model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight
            let parts: Vec<&str> = name.split('.').collect();
            let (Some(layer), Some(e), Some(proj)) = (
                parts.get(2).and_then(|s| s.parse().ok()),
                parts.get(5).and_then(|s| s.parse().ok()),
                parts.get(6),
            ) else {
                return Err(format!("tensor `{name}`: not an expert's projection"));
            };
            let key = (layer, proj.trim_end_matches("_proj").to_string());
            experts.entry(key).or_default().insert(e, t);
            continue;
        };
        // convert_hf_to_gguf's LlamaModel permutes Q and K so that RoPE rotates adjacent
        // pairs (its `permute`); K by the key/value heads.
        if llama_rope && g.ends_with("attn_q.weight") {
            t = permute(&t, cfg.heads()?)?;
        } else if llama_rope && g.ends_with("attn_k.weight") {
            t = permute(&t, cfg.kv_heads()?)?;
        }
        // Gemma's checkpoints hold norms as w of `x * (1 + w)`; llama.cpp stores 1 + w.
        if arch == "gemma3" && g.ends_with("norm.weight") {
            t = (t + 1.0).map_err(|e| e.to_string())?;
        }
        // LFM2's convolution kernels are (hidden, 1, L) in the checkpoint, (hidden, L) in
        // llama.cpp's files.
        if g.ends_with("shortconv.conv.weight") && t.rank() == 3 {
            t = t.squeeze(1).map_err(|e| e.to_string())?;
        }
        out.insert(order(&g), (g, t));
    }
    for ((layer, proj), by_expert) in experts {
        let list: Vec<Tensor> = by_expert.into_values().collect();
        let t = Tensor::stack(&list, 0).map_err(|e| e.to_string())?;
        let g = format!("blk.{layer}.ffn_{proj}_exps.weight");
        out.insert(order(&g), (g, t));
    }
    let mut out: Vec<(String, Tensor)> = out.into_values().collect();
    if arch == "phi2" {
        out = fuse_qkv(out)?;
    }
    Ok(out)
}

/// llama.cpp's `permute(w, n_head)`: the rows of each head, (2, head_dim/2) halves, stored
/// as (head_dim/2, 2) pairs.
fn permute(w: &Tensor, heads: usize) -> Result<Tensor, String> {
    let go = || -> candle_core::Result<Tensor> {
        let (rows, cols) = w.dims2()?;
        w.reshape((heads, 2, rows / heads / 2, cols))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((rows, cols))
    };
    go().map_err(|e| format!("permuting Q/K rows: {e}"))
}

/// Phi-2's llama.cpp files hold Q, K and V of a block as one `attn_qkv` (rows of Q, then K,
/// then V), weights and biases.
fn fuse_qkv(ts: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, String> {
    let mut out = Vec::with_capacity(ts.len());
    let find = |n: &str| ts.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone());
    for (name, t) in &ts {
        let Some((prefix, kind)) = name
            .strip_suffix(".weight")
            .map(|p| (p, "weight"))
            .or_else(|| name.strip_suffix(".bias").map(|p| (p, "bias")))
        else {
            out.push((name.clone(), t.clone()));
            continue;
        };
        if let Some(block) = prefix.strip_suffix(".attn_q") {
            let k = find(&format!("{block}.attn_k.{kind}"));
            let v = find(&format!("{block}.attn_v.{kind}"));
            let (Some(k), Some(v)) = (k, v) else {
                return Err(format!("{block}: Q without K and V"));
            };
            let qkv = Tensor::cat(&[t, &k, &v], 0).map_err(|e| e.to_string())?;
            out.push((format!("{block}.attn_qkv.{kind}"), qkv));
        } else if !(prefix.ends_with(".attn_k") || prefix.ends_with(".attn_v")) {
            out.push((name.clone(), t.clone()));
        }
    }
    Ok(out)
}

/// Tensor `name` in `dtype`: norms, biases, routers and convolutions stay f32, as llama.cpp
/// keeps them; every other matrix is quantized. Q4_K's blocks are 256 values wide, so a
/// matrix whose rows are not a multiple of 256 is refused.
fn quantize(name: &str, t: &Tensor, dtype: GgmlDType, cfg: &Cfg) -> Result<QTensor, String> {
    let keep = t.rank() < 2
        || name.contains("norm")
        || name.contains("ffn_gate_inp")
        || name.contains("shortconv.conv");
    let dtype = if keep { GgmlDType::F32 } else { dtype };
    let width = t.dim(D::Minus1).map_err(|e| e.to_string())?;
    if !width.is_multiple_of(dtype.block_size()) {
        return Err(format!(
            "{dtype:?} needs rows of a multiple of {} values, but tensor `{name}` has rows of \
             {width} (hidden_size = {}, intermediate_size = {}): choose sizes that are \
             multiples of {}",
            dtype.block_size(),
            cfg.u(&["hidden_size"]).unwrap_or(0),
            cfg.u(&["intermediate_size"]).unwrap_or(0),
            dtype.block_size(),
        ));
    }
    QTensor::quantize(t, dtype).map_err(|e| format!("quantizing `{name}`: {e}"))
}

/// The metadata: the hyper-parameters under `<arch>.*` as llama.cpp names them, then the
/// tokenizer.
fn metadata(arch: &str, cfg: &Cfg) -> Result<Vec<(String, Value)>, String> {
    let u32v = |n: usize| Value::U32(n as u32);
    let k = |s: &str| format!("{arch}.{s}");
    let heads = cfg.heads()?;
    let head_dim = cfg.head_dim()?;
    let rotary = cfg.f(&["partial_rotary_factor"]).unwrap_or(1.0);
    let eps = cfg
        .f(&[
            "rms_norm_eps",
            "layer_norm_eps",
            "layer_norm_epsilon",
            "norm_eps",
        ])
        .unwrap_or(1e-5);
    // Phi-2 and StableLM use LayerNorm, whose epsilon llama.cpp keys differently.
    let eps_key = if matches!(arch, "phi2" | "stablelm") {
        "attention.layer_norm_epsilon"
    } else {
        "attention.layer_norm_rms_epsilon"
    };
    let mut md = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (
            "general.name".to_string(),
            Value::String(format!("driftsweep synthetic {arch}")),
        ),
        (
            k("context_length"),
            u32v(cfg.need(&["max_position_embeddings"])?),
        ),
        (k("embedding_length"), u32v(cfg.need(&["hidden_size"])?)),
        (k("block_count"), u32v(cfg.need(&["num_hidden_layers"])?)),
        (
            k("feed_forward_length"),
            u32v(cfg.need(&["intermediate_size", "block_ff_dim"])?),
        ),
        (k("attention.head_count"), u32v(heads)),
        (k("attention.head_count_kv"), u32v(cfg.kv_heads()?)),
        (k("attention.key_length"), u32v(head_dim)),
        (k("attention.value_length"), u32v(head_dim)),
        (k(eps_key), Value::F32(eps as f32)),
        (
            k("rope.freq_base"),
            Value::F32(cfg.f(&["rope_theta"]).unwrap_or(10_000.0) as f32),
        ),
        (
            k("rope.dimension_count"),
            // transformers' int(partial_rotary_factor * head_dim): rounded down.
            u32v((head_dim as f64 * rotary + 1e-9) as usize),
        ),
    ];
    // An architecture's own entries replace the shared ones of the same key.
    for (key, v) in arch_metadata(arch, cfg)? {
        match md.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = v,
            None => md.push((key, v)),
        }
    }
    md.extend(tokenizer(cfg)?);
    Ok(md)
}

/// What only some architectures write: a sliding window where the config turns one on,
/// Gemma 3's window pattern and local RoPE base, MoE sizes, LFM2's convolution length.
fn arch_metadata(arch: &str, cfg: &Cfg) -> Result<Vec<(String, Value)>, String> {
    let u32v = |n: usize| Value::U32(n as u32);
    let k = |s: &str| format!("{arch}.{s}");
    let mut md = vec![];
    if let Some(w) = cfg.u(&["sliding_window"])
        && cfg.b("use_sliding_window") != Some(false)
    {
        md.push((k("attention.sliding_window"), u32v(w)));
    }
    if arch == "gemma3" {
        if let Some(p) = cfg.u(&["sliding_window_pattern"]) {
            md.push((k("attention.sliding_window_type"), u32v(p)));
        }
        if let Some(b) = cfg.f(&["rope_local_base_freq"]) {
            md.push((k("rope.local_freq_base"), Value::F32(b as f32)));
        }
    }
    if arch == "qwen3moe" {
        md.push((k("expert_count"), u32v(cfg.need(&["num_experts"])?)));
        md.push((
            k("expert_used_count"),
            u32v(cfg.need(&["num_experts_per_tok"])?),
        ));
        md.push((
            k("expert_feed_forward_length"),
            u32v(cfg.need(&["moe_intermediate_size"])?),
        ));
    }
    if arch == "lfm2" {
        md.push((k("shortconv.l_cache"), u32v(cfg.need(&["conv_L_cache"])?)));
        // Per layer: the key/value heads of attention layers, 0 for convolution layers.
        let kv = cfg.kv_heads()?;
        let types = cfg.0.get("layer_types").and_then(|v| v.as_array());
        let per_layer: Vec<Value> = types
            .ok_or("config.json: lfm2 needs `layer_types`")?
            .iter()
            .map(|t| u32v(if t.as_str() == Some("conv") { 0 } else { kv }))
            .collect();
        md.push((k("attention.head_count_kv"), Value::Array(per_layer)));
    }
    Ok(md)
}

/// GPT-2's printable stand-ins for bytes (`bytes_to_unicode`), which byte-level BPE
/// vocabularies spell their byte tokens with.
fn byte_token(b: u8) -> char {
    let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable {
        return b as char;
    }
    // The others, in byte order, take the code points from 256 on.
    let shifted = (0..b)
        .filter(|&x| !((b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE))
        .count() as u32;
    char::from_u32(256 + shifted).expect("a valid code point")
}

/// A byte-level BPE tokenizer (`gpt2`, no merges) of the vocabulary's size: ids below 256
/// are the bytes, the rest are tokens no text makes. BOS and EOS ids as `config.json` has
/// them; no BOS in front of prompts.
fn tokenizer(cfg: &Cfg) -> Result<Vec<(String, Value)>, String> {
    let vocab = cfg.need(&["vocab_size", "padded_vocab_size"])?;
    let tokens: Vec<Value> = (0..vocab)
        .map(|i| match u8::try_from(i) {
            Ok(b) => Value::String(byte_token(b).to_string()),
            Err(_) => Value::String(format!("<unused{i}>")),
        })
        .collect();
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::String("default".into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(vec![Value::I32(1); vocab]),
        ),
        ("tokenizer.ggml.merges".to_string(), Value::Array(vec![])),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(false),
        ),
    ];
    for key in ["bos", "eos"] {
        if let Some(id) = cfg.u(&[&format!("{key}_token_id")])
            && id < vocab
        {
            md.push((
                format!("tokenizer.ggml.{key}_token_id"),
                Value::U32(id as u32),
            ));
        }
    }
    Ok(md)
}

#[cfg(test)]
mod foreign_tests;
#[cfg(test)]
mod tests;
