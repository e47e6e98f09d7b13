//! `quantized_mistral` and `quantized_stable_lm` read candle's own GGUF layout: Hugging Face
//! tensor names through candle's quantized `VarBuilder`, and a config given from outside the
//! file (candle's examples hard-code it). llama.cpp files of these architectures
//! (`general.architecture` `llama` for Mistral, `stablelm`) carry the config in their
//! metadata and the tensors under llama.cpp's names, so driftsweep renames the blocks (undoing
//! the Q/K row permutation of `llama` files, moving whole rows of blocks, changing no value),
//! writes them as a GGUF in memory, and builds the module on that, as shipped.

use std::io::{Cursor, Read, Seek};

use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::models as ct;
use candle_transformers::quantized_var_builder::VarBuilder;
use serde_json::json;

use super::stateful::{Forward, Fresh, Stateful};
use crate::model::error::ModelError;
use crate::model::gguf::read::{get, get_f32, get_u32};
use crate::model::gguf::tensors::unpermute_rows;

/// llama.cpp block names (after `blk.N.`, before `.weight`/`.bias`) → Hugging Face names
/// (after `model.layers.N.`), for Llama and StableLM files.
const BLOCK: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Names outside the blocks.
const TOP: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// The Hugging Face name of llama.cpp tensor `name`, if the modules read it.
fn hf_name(name: &str) -> Option<String> {
    let (stem, kind) = name.rsplit_once('.')?;
    if let Some((_, h)) = TOP.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{h}.{kind}"));
    }
    let (layer, t) = stem.strip_prefix("blk.")?.split_once('.')?;
    let (_, h) = BLOCK.iter().find(|(g, _)| *g == t)?;
    Some(format!("model.layers.{layer}.{h}.{kind}"))
}

/// The file's tensors under Hugging Face names as a GGUF in memory, for candle's quantized
/// `VarBuilder`; `permuted` gives the query and key/value head counts of a `llama` file.
fn renamed<R: Read + Seek>(
    c: &gguf_file::Content,
    r: &mut R,
    permuted: Option<(usize, usize)>,
    device: &Device,
) -> Result<VarBuilder, ModelError> {
    let load = |e: candle_core::Error| ModelError::Load(format!("renaming GGUF tensors: {e}"));
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = vec![];
    for name in names {
        let Some(hf) = hf_name(name) else { continue };
        let mut q = c.tensor(r, name, &Device::Cpu).map_err(load)?;
        if let Some((heads, kv_heads)) = permuted {
            if name.ends_with("attn_q.weight") {
                q = unpermute_rows(&q, heads, &Device::Cpu).map_err(load)?;
            } else if name.ends_with("attn_k.weight") {
                q = unpermute_rows(&q, kv_heads, &Device::Cpu).map_err(load)?;
            }
        }
        tensors.push((hf, q));
    }
    // A tied head is the embedding (the modules always read `lm_head`).
    if !c.tensor_infos.contains_key("output.weight") {
        let q = c
            .tensor(r, "token_embd.weight", &Device::Cpu)
            .map_err(load)?;
        tensors.push(("lm_head.weight".into(), q));
    }
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut buf = Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &[], &refs).map_err(load)?;
    VarBuilder::from_gguf_buffer(buf.get_ref(), device).map_err(load)
}

/// The sizes every Llama-like file has under `<arch>.*`, as `config.json` fields.
fn sizes(c: &gguf_file::Content, arch: &str) -> Result<serde_json::Value, ModelError> {
    let k = |s: &str| format!("{arch}.{s}");
    let heads = get_u32(c, &k("attention.head_count"))?;
    let embd = c
        .tensor_infos
        .get("token_embd.weight")
        .ok_or("tensor `token_embd.weight` is missing")?;
    Ok(json!({
        "vocab_size": embd.shape.dims()[0],
        "hidden_size": get_u32(c, &k("embedding_length"))?,
        "intermediate_size": get_u32(c, &k("feed_forward_length"))?,
        "num_hidden_layers": get_u32(c, &k("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": get_u32(c, &k("attention.head_count_kv")).unwrap_or(heads),
        "max_position_embeddings": get_u32(c, &k("context_length"))?,
        "rope_theta": get_f32(c, &k("rope.freq_base")).unwrap_or(10_000.0),
    }))
}

/// `quantized_mistral` on a llama.cpp file of architecture `llama`.
pub(super) fn mistral<R: Read + Seek>(
    c: &gguf_file::Content,
    r: &mut R,
    device: &Device,
) -> Result<Box<dyn Stateful>, ModelError> {
    let mut cfg = sizes(c, "llama")?;
    cfg["rms_norm_eps"] = json!(get_f32(c, "llama.attention.layer_norm_rms_epsilon")?);
    cfg["head_dim"] = json!(get_u32(c, "llama.attention.key_length").ok());
    cfg["sliding_window"] = json!(get_u32(c, "llama.attention.sliding_window").ok());
    let cfg: ct::mistral::Config = serde_json::from_value(cfg)
        .map_err(|e| ModelError::Invalid(format!("Mistral config from GGUF metadata: {e}")))?;
    let permuted = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let vb = renamed(c, r, Some(permuted), device)?;
    let m = ct::quantized_mistral::Model::new(&cfg, vb)
        .map_err(|e| ModelError::Load(format!("candle-transformers quantized_mistral: {e}")))?;
    Ok(Box::new(m))
}

/// `quantized_stable_lm` on a llama.cpp file of architecture `stablelm`. It has no way to
/// empty its cache, which a forward at offset 0 appends to: [`Fresh`] replaces it.
pub(super) fn stable_lm<R: Read + Seek>(
    c: &gguf_file::Content,
    r: &mut R,
    device: &Device,
) -> Result<Box<dyn Stateful>, ModelError> {
    let arch = get(c, "general.architecture")?
        .to_string()
        .map_err(|e| format!("general.architecture: {e}"))?
        .clone();
    let mut cfg = sizes(c, &arch)?;
    let head_dim = cfg["hidden_size"].as_f64().unwrap_or(1.0)
        / cfg["num_attention_heads"].as_f64().unwrap_or(1.0);
    let rotary = get_u32(c, &format!("{arch}.rope.dimension_count"))? as f64 / head_dim;
    cfg["partial_rotary_factor"] = json!(rotary);
    cfg["layer_norm_eps"] = json!(get_f32(c, &format!("{arch}.attention.layer_norm_epsilon"))?);
    cfg["hidden_act"] = json!("silu");
    cfg["use_cache"] = json!(true);
    cfg["use_qkv_bias"] = json!(c.tensor_infos.contains_key("blk.0.attn_q.bias"));
    let cfg: ct::stable_lm::Config = serde_json::from_value(cfg)
        .map_err(|e| ModelError::Invalid(format!("StableLM config from GGUF metadata: {e}")))?;
    let vb = renamed(c, r, None, device)?;
    let m = ct::quantized_stable_lm::Model::new(&cfg, vb)
        .map_err(|e| ModelError::Load(format!("candle-transformers quantized_stable_lm: {e}")))?;
    Ok(Box::new(Fresh::new(m)))
}

impl Forward for ct::quantized_stable_lm::Model {
    fn forward_at(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.forward(x, offset)
    }
}
