//! The Llama family in files: its GGUF tensor names and metadata (llama.cpp's conversion),
//! and the fields of its Hugging Face `config.json`.

use candle_core::quantized::gguf_file::Content;
use serde::Deserialize;

use super::config::{Config, Llama3Rope, Variant};
use crate::model::error::ModelError;
use crate::model::gguf::layout::Layout;
use crate::model::gguf::read::{get_f32, get_u32};

/// GGUF names of a block's tensors (after `blk.N.`), with their Hugging Face names (after
/// `model.layers.N.`).
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// The GGUF layout of a Llama-family file with these head counts: llama.cpp permuted its Q/K
/// rows so that RoPE rotates adjacent pairs; the decoder rotates halves, as the original model
/// does, so the loader undoes the permutation.
pub fn gguf_layout(cfg: &Config) -> Layout {
    Layout {
        layer_names: &LAYER_NAMES,
        permuted: Some((cfg.num_attention_heads, cfg.num_key_value_heads)),
    }
}

/// The config of a GGUF file of architecture `arch` (its metadata keys' prefix) whose
/// embedding has `vocab_size` rows, validated.
pub fn from_gguf(c: &Content, arch: &str, vocab_size: usize) -> Result<Config, ModelError> {
    let k = |s: &str| format!("{arch}.{s}");
    let heads = get_u32(c, &k("attention.head_count"))? as usize;
    let config = Config {
        vocab_size,
        hidden_size: get_u32(c, &k("embedding_length"))? as usize,
        intermediate_size: get_u32(c, &k("feed_forward_length"))? as usize,
        num_hidden_layers: get_u32(c, &k("block_count"))? as usize,
        num_attention_heads: heads,
        num_key_value_heads: get_u32(c, &k("attention.head_count_kv"))
            .map_or(heads, |v| v as usize),
        rms_norm_eps: get_f32(c, &k("attention.layer_norm_rms_epsilon"))? as f64,
        rope_theta: get_f32(c, &k("rope.freq_base")).unwrap_or(10_000.0) as f64,
        max_position_embeddings: get_u32(c, &k("context_length"))? as usize,
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        explicit_head_dim: None,
        attention_bias: false,
        qk_norm: false,
        sliding_window: None,
        rope_llama3: None,
    };
    config.validate()?;
    Ok(config)
}

/// The fields of a Llama-family `config.json` the decoder uses (others are ignored; the
/// architecture and end-of-sequence id are read by the directory loader).
#[derive(Debug, Deserialize)]
struct ConfigJson {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    head_dim: Option<usize>,
    attention_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    rope_scaling: Option<serde_json::Value>,
}

/// The decoder config a `config.json` (its bytes) of an architecture `variant` describes, checked
/// for consistency (not yet against the weights); `label` names the file in messages about
/// its fields.
pub fn from_config_json(variant: Variant, json: &[u8], label: &str) -> Result<Config, ModelError> {
    let c: ConfigJson = serde_json::from_slice(json).map_err(|e| format!("{label}: {e}"))?;
    let rope_llama3 = match &c.rope_scaling {
        Some(v) if v.get("rope_type").and_then(|t| t.as_str()) == Some("llama3") => Some(
            serde_json::from_value::<Llama3Rope>(v.clone())
                .map_err(|e| format!("config.json rope_scaling: {e}"))?,
        ),
        Some(v)
            if !v.is_null() && v.get("rope_type").and_then(|t| t.as_str()) != Some("default") =>
        {
            return Err(ModelError::Unsupported(format!(
                "config.json: rope_scaling {v} is not supported (llama3 is)"
            )));
        }
        _ => None,
    };
    // Mistral always slides; Qwen2 and Qwen3 when the config turns it on.
    let sliding_window = if variant.always_slides
        || (variant.slides_when_enabled && c.use_sliding_window == Some(true))
    {
        c.sliding_window
    } else {
        None
    };
    let config = Config {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta.unwrap_or(10_000.0),
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
        explicit_head_dim: c.head_dim,
        attention_bias: variant.qkv_bias || c.attention_bias.unwrap_or(false),
        qk_norm: variant.qk_norm,
        sliding_window,
        rope_llama3,
    };
    config.validate().map_err(|e| format!("config.json: {e}"))?;
    Ok(config)
}
