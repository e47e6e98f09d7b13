//! The Llama family's hyper-parameters (Llama, Mistral, Qwen2, Qwen3, the built-in model).

use serde::{Deserialize, Serialize};

use crate::model::error::ModelError;
use crate::model::header::{self, Expected};

/// Hyper-parameters of a Llama-family decoder (the fields of a Hugging Face `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Rows of the embedding and of the output head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Context length: the largest prompt + span the model accepts.
    pub max_position_embeddings: usize,
    /// Output head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Head width when the config gives it (Qwen3); otherwise hidden / heads.
    #[serde(default)]
    pub explicit_head_dim: Option<usize>,
    /// Q, K and V projections carry a bias (Qwen2).
    #[serde(default)]
    pub attention_bias: bool,
    /// RMSNorm over each query and key head before RoPE (Qwen3).
    #[serde(default)]
    pub qk_norm: bool,
    /// Each position attends only to the last `sliding_window` positions (Mistral), in both
    /// paths alike.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Llama 3 RoPE frequency scaling.
    #[serde(default)]
    pub rope_llama3: Option<Llama3Rope>,
}

/// What an architecture of the Llama family changes in the Llama recipe when its
/// `config.json` is read (the family table in `src/model/family.rs` gives it per
/// architecture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Variant {
    /// The window always applies (Mistral).
    pub always_slides: bool,
    /// The window applies when `use_sliding_window` is true (Qwen2, Qwen3).
    pub slides_when_enabled: bool,
    /// Q/K/V projections have biases whatever `attention_bias` says (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMS norms on queries and keys (Qwen3).
    pub qk_norm: bool,
}

/// Llama 3's `rope_scaling` (rope_type "llama3").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Rope {
    /// Scale of the low frequencies.
    pub factor: f64,
    /// Wavelength bound of the low-frequency band (as a factor).
    pub low_freq_factor: f64,
    /// Wavelength bound of the high-frequency band (as a factor).
    pub high_freq_factor: f64,
    /// Context length the frequencies were trained for.
    pub original_max_position_embeddings: usize,
}

impl Llama3Rope {
    /// The scaled inverse frequency, as in transformers' `_compute_llama3_parameters`.
    pub(super) fn scale(&self, inv_freq: f64) -> f64 {
        let low_wavelen = self.original_max_position_embeddings as f64 / self.low_freq_factor;
        let high_wavelen = self.original_max_position_embeddings as f64 / self.high_freq_factor;
        let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
        if wavelen < high_wavelen {
            inv_freq
        } else if wavelen > low_wavelen {
            inv_freq / self.factor
        } else {
            let smooth = (self.original_max_position_embeddings as f64 / wavelen
                - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * inv_freq / self.factor + smooth * inv_freq
        }
    }
}

impl Config {
    /// Parameters of a Llama-family decoder with these hyper-parameters: the tensors
    /// `Decoder::new` loads (embedding, per layer the Q/K/V/O
    /// projections with their optional biases and Q/K norms, the SwiGLU MLP and two RMSNorms, the
    /// final norm, and the output head unless it is tied to the embedding).
    pub fn parameter_count(&self) -> u64 {
        let cfg = self;
        let (h, i, hd) = (
            cfg.hidden_size as u64,
            cfg.intermediate_size as u64,
            cfg.head_dim() as u64,
        );
        let (q, kv) = (
            cfg.num_attention_heads as u64 * hd,
            cfg.num_key_value_heads as u64 * hd,
        );
        let attn = h * q
            + 2 * h * kv
            + q * h
            + if cfg.attention_bias { q + 2 * kv } else { 0 }
            + if cfg.qk_norm { 2 * hd } else { 0 };
        let layer = attn + 3 * h * i + 2 * h;
        let embed = cfg.vocab_size as u64 * h;
        let head = if cfg.tie_word_embeddings { 0 } else { embed };
        embed + cfg.num_hidden_layers as u64 * layer + h + head
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.explicit_head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Structural checks, so that a bad config fails here rather than in a matmul.
    pub fn validate(&self) -> Result<(), ModelError> {
        let hidden = self.explicit_head_dim.is_none().then_some(self.hidden_size);
        header::check_heads(
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim(),
            hidden,
        )
    }

    /// What a file of this config must hold, for the header check.
    pub fn expected(&self) -> Expected {
        Expected {
            vocab: self.vocab_size,
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            context: self.max_position_embeddings,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim(),
            tied: self.tie_word_embeddings,
            qk_norm: self.qk_norm,
            extra_norms: &[],
        }
    }
}
