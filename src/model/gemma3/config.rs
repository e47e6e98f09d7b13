//! Gemma 3's hyper-parameters, its GGUF metadata and tensor names.

use candle_core::quantized::gguf_file::Content;

use crate::model::error::ModelError;
use crate::model::gguf::layout::Layout;
use crate::model::gguf::read::get_u32;
use crate::model::header::{self, Expected};

/// RoPE base of the local (sliding-window) layers: transformers' `rope_local_base_freq`.
pub const LOCAL_ROPE_BASE: f64 = 10_000.0;
/// Every `SLIDING_WINDOW_PATTERN`-th layer is global.
pub const SLIDING_WINDOW_PATTERN: usize = 6;
/// The per-block norms Gemma 3 has beyond a Llama block's two (checkpoint names after
/// `model.layers.N.`), which a header check requires.
pub const EXTRA_NORMS: [&str; 2] = [
    "pre_feedforward_layernorm.weight",
    "post_feedforward_layernorm.weight",
];

/// Hyper-parameters (the fields of a Gemma 3 text `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Rows of the embedding (and of the tied output head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the GeGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base of the global layers.
    pub rope_theta: f64,
    /// RoPE base of the local layers.
    pub rope_local_base_freq: f64,
    /// Keys a local layer's query sees, its own included.
    pub sliding_window: usize,
    /// Scores are scaled by its inverse square root.
    pub query_pre_attn_scalar: f64,
    /// Context length.
    pub max_position_embeddings: usize,
}

impl Config {
    /// Whether layer `i` attends globally.
    pub fn is_global(&self, i: usize) -> bool {
        (i + 1).is_multiple_of(SLIDING_WINDOW_PATTERN)
    }

    /// From a GGUF file's `gemma3.*` metadata. The file does not carry query_pre_attn_scalar:
    /// Gemma 3 270M to 12B use head_dim (256), as llama.cpp does for every size but 27B.
    pub fn from_gguf(c: &Content) -> Result<Self, ModelError> {
        let u = |k: &str| -> Result<usize, String> {
            c.metadata
                .get(&format!("gemma3.{k}"))
                .ok_or_else(|| format!("metadata key `gemma3.{k}` is missing"))?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| format!("gemma3.{k}: {e}"))
        };
        let f = |k: &str| -> Result<f64, String> {
            c.metadata
                .get(&format!("gemma3.{k}"))
                .ok_or_else(|| format!("metadata key `gemma3.{k}` is missing"))?
                .to_f32()
                .map(f64::from)
                .map_err(|e| format!("gemma3.{k}: {e}"))
        };
        let embd = c
            .tensor_infos
            .get("token_embd.weight")
            .ok_or(ModelError::from("tensor `token_embd.weight` is missing"))?;
        let head_dim = u("attention.key_length")?;
        Ok(Config {
            vocab_size: embd.shape.dims()[0],
            hidden_size: u("embedding_length")?,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: u("attention.head_count")?,
            num_key_value_heads: u("attention.head_count_kv")?,
            head_dim,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon")?,
            rope_theta: f("rope.freq_base")?,
            rope_local_base_freq: LOCAL_ROPE_BASE,
            sliding_window: u("attention.sliding_window")?,
            query_pre_attn_scalar: head_dim as f64,
            max_position_embeddings: u("context_length")?,
        })
    }

    /// [`Config::from_gguf`] as the GGUF loader runs it, checked: the head count read first
    /// under the generic key's message, then the structural checks.
    pub fn from_gguf_checked(c: &Content) -> Result<Self, ModelError> {
        get_u32(c, "gemma3.attention.head_count")?;
        let cfg = Config::from_gguf(c)?;
        header::check_heads(
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            None,
        )?;
        Ok(cfg)
    }

    /// Parameters of the model: every tensor [`Config::expected`] lists.
    pub fn parameter_count(&self) -> u64 {
        self.expected().parameter_count()
    }

    /// What a file of this config must hold, for the header check: the head tied to the
    /// embedding, per-head q/k norms and the extra norms.
    pub fn expected(&self) -> Expected {
        Expected {
            vocab: self.vocab_size,
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            context: self.max_position_embeddings,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            tied: true,
            qk_norm: true,
            extra_norms: &EXTRA_NORMS,
        }
    }
}

/// GGUF names of a Gemma 3 block's tensors with their Hugging Face names. Unlike Llama's, `ffn_norm` is the norm before the MLP there, and the norms
/// after attention and MLP and the per-head q/k norms come on top.
pub(super) const GEMMA3_LAYER_NAMES: [(&str, &str); 13] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    (
        "post_attention_norm.weight",
        "post_attention_layernorm.weight",
    ),
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// llama.cpp's Gemma 3 conversion: Gemma's extra norms, Q/K rows as they are
/// (convert_hf_to_gguf.py permutes in LlamaModel only).
pub const GGUF_LAYOUT: Layout = Layout {
    layer_names: &GEMMA3_LAYER_NAMES,
    permuted: None,
};
