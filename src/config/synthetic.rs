//! `model: {synthetic: ...}`: a checkpoint driftsweep makes itself, as the sweep file (or
//! `driftsweep synth SPEC`) describes it. Plain data here; `src/synth/` checks it against the
//! architecture and writes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A synthetic checkpoint's recipe. `None` means the architecture's real default (its
/// `config.json` default in transformers); sizes default to a small model that runs in
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthSpec {
    /// The architecture's `model_type` (`mistral`, `phi3`, ...).
    pub architecture: String,
    /// Decoder layers.
    #[serde(default = "d_layers")]
    pub layers: usize,
    /// Hidden width.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Attention heads.
    #[serde(default = "d_heads")]
    pub heads: usize,
    /// Key/value heads (`None`: as many as `heads`, or the architecture's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    /// Width of one head (`None`: `hidden_size / heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// MLP width.
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    /// Vocabulary size (byte-level tokenizer: at least 256 for text prompts).
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Context length (`max_position_embeddings`).
    #[serde(default = "d_context")]
    pub context: usize,
    /// Sliding window of attention, where the architecture has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Every n-th layer attends globally (Gemma 2/3's pattern), where the architecture has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window_pattern: Option<usize>,
    /// Q/K/V (attention) biases, where the architecture can have them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
    /// Per-head Q/K norms, where the architecture can have them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qk_norm: Option<bool>,
    /// Soft-cap of attention logits (Gemma 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
    /// Soft-cap of the final logits (Gemma 2/3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    /// RoPE base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Share of a head's width that rotates (Phi, Persimmon, StableLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
    /// Mixture of experts: experts per layer (only on MoE architectures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts: Option<usize>,
    /// Mixture of experts: experts each token goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts_per_token: Option<usize>,
    /// The output head shares the embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_embeddings: Option<bool>,
    /// Any other field of the architecture's `config.json`, written as given (it must be one
    /// the architecture has): `rope_scaling`, `layer_types`, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Seed of the weights: the same spec always gives the same bytes.
    #[serde(default)]
    pub seed: u64,
    /// What is written.
    #[serde(default)]
    pub format: SynthFormat,
}

/// The files a synthetic checkpoint is written as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SynthFormat {
    /// A Hugging Face directory: `config.json`, `model.safetensors` (f32), `tokenizer.json`.
    #[default]
    #[serde(rename = "safetensors")]
    Safetensors,
    /// A GGUF file with llama.cpp's names and metadata, tensors in f32.
    #[serde(rename = "gguf:f32")]
    GgufF32,
    /// A GGUF file, the 2-D projections in Q8_0.
    #[serde(rename = "gguf:q8_0")]
    GgufQ8_0,
    /// A GGUF file, the 2-D projections in Q4_K.
    #[serde(rename = "gguf:q4_k")]
    GgufQ4K,
}

fn d_layers() -> usize {
    2
}
fn d_hidden() -> usize {
    64
}
fn d_heads() -> usize {
    4
}
fn d_intermediate() -> usize {
    128
}
fn d_vocab() -> usize {
    256
}
fn d_context() -> usize {
    512
}

impl SynthSpec {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.heads.max(1))
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads.unwrap_or(self.heads)
    }
}
