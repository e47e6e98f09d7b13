//! Gemma 3 (text), driftsweep's own decoder for it, in the style of candle-transformers: a
//! [`Config`], small layer structs with `forward`, tensor names mirroring the Hugging Face
//! checkpoint's (`model.layers.N.pre_feedforward_layernorm.weight`, ...). It follows
//! transformers' Gemma3ForCausalLM; scripts/reference/gemma3.py is the independent float64
//! reference it is checked against (tests/gemma3.rs), and its module notes give each
//! convention with its source. In short:
//!
//! - embeddings times sqrt(hidden_size), the normalizer rounded to f32 and then to the run
//!   dtype, as transformers rounds it (25.298222 in f32, 25.25 in bf16 for 640);
//! - RMSNorm times (1 + w); a GGUF file already holds 1 + w (llama.cpp's converter adds the 1),
//!   so a GGUF weight is used as it is, under the checkpoint's name;
//! - norms before and after attention and MLP, per-head q/k RMSNorm before RoPE, GeGLU MLP with
//!   tanh GELU, scores scaled by query_pre_attn_scalar^-1/2;
//! - layer i global when (i + 1) % 6 == 0 (RoPE base from the file, full causal attention),
//!   otherwise local (RoPE base 10000, a query at position p sees keys p - window < j <= p).
//!
//! Numerics as in the Llama decoder (the shared layers): RoPE tables in f32, attention in f32, RMSNorm
//! through `candle_nn::ops::rms_norm` (f32 accumulation), logits returned as f32.

mod config;
mod model;
#[cfg(test)]
mod tests;

pub use crate::model::layers::Cache;
pub use config::{Config, EXTRA_NORMS, GGUF_LAYOUT, LOCAL_ROPE_BASE, SLIDING_WINDOW_PATTERN};
pub use model::Model;
