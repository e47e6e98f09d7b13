//! The parts every own decoder is built from, in candle-transformers' style: projections
//! over dense or quantized weights ([`Linear`], [`Source`]), RMSNorm, RoPE tables, attention
//! (with the small [`Step`] context each layer's forward gets), the gated MLP kinds, the KV
//! cache, the causal mask, the final norm and head, and the sequence that runs a decoder.
//!
//! Numerics, where they differ from "everything in the run dtype":
//! - RoPE cos/sin tables are computed in f32 and cast to the run dtype once, as in
//!   candle-transformers and transformers.
//! - Attention runs in f32 between queries, keys and values in the run dtype and its output,
//!   rounded once, as fused attention kernels do (see `attention::attend`).
//! - Dense projections with bf16 or f16 weights on the CPU accumulate in f32 (see [`Linear`]).
//! - RMSNorm goes through `candle_nn::ops::rms_norm`, which accumulates in f32.
//! - Logits leave the model as f32, because every metric is computed in f32.

mod attention;
mod cache;
mod gemv;
mod linear;
mod mlp;
mod norm;
mod rope;
pub(crate) mod sequence;
#[cfg(test)]
mod tests;

pub use cache::Cache;
pub use linear::Source;

pub(crate) use attention::{Attention, Step, causal_mask};
pub(crate) use linear::{Linear, linear, linear_b};
pub(crate) use mlp::{Gate, Mlp};
pub(crate) use norm::RmsNorm;
pub(crate) use rope::Rope;
pub(crate) use sequence::{
    OwnForward, batch_input, check_positions, forward_every_row, head_rows, own_model_under_test,
};
