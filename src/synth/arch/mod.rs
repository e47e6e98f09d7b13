//! Each architecture's `config.json` from a [`SynthSpec`], in that architecture's own format
//! (the field names transformers and candle-transformers read), and which knobs it has.
//!
//! A new architecture adds its arm to [`config_json`] and a function in the file of its group.

mod llama_like;
mod quantized_twins;

use serde_json::Value;

use crate::config::SynthSpec;
use crate::model::Architecture;

/// Knobs of [`SynthSpec`] that only some architectures have (the sizes every model has are
/// always allowed).
pub const OPTIONAL_KNOBS: [&str; 11] = [
    "sliding_window",
    "sliding_window_pattern",
    "bias",
    "qk_norm",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "rope_theta",
    "partial_rotary_factor",
    "experts",
    "experts_per_token",
    "tie_embeddings",
];

/// The knobs `spec` sets, by [`OPTIONAL_KNOBS`] name.
pub fn knobs_set(spec: &SynthSpec) -> Vec<&'static str> {
    let set = [
        spec.sliding_window.is_some(),
        spec.sliding_window_pattern.is_some(),
        spec.bias.is_some(),
        spec.qk_norm.is_some(),
        spec.attn_logit_softcapping.is_some(),
        spec.final_logit_softcapping.is_some(),
        spec.rope_theta.is_some(),
        spec.partial_rotary_factor.is_some(),
        spec.experts.is_some(),
        spec.experts_per_token.is_some(),
        spec.tie_embeddings.is_some(),
    ];
    OPTIONAL_KNOBS
        .iter()
        .zip(set)
        .filter(|(_, s)| *s)
        .map(|(k, _)| *k)
        .collect()
}

/// Refuses every knob `spec` sets that is not in `allowed` (`arch` names the architecture in
/// the message).
pub fn only_knobs(spec: &SynthSpec, arch: &str, allowed: &[&str]) -> Result<(), String> {
    match knobs_set(spec).into_iter().find(|k| !allowed.contains(k)) {
        None => Ok(()),
        Some(k) => Err(format!(
            "`{k}`: architecture `{arch}` has no such knob (it has: {})",
            if allowed.is_empty() {
                "none beyond the sizes".to_string()
            } else {
                allowed.join(", ")
            }
        )),
    }
}

/// The `config.json` of `arch` that `spec` describes (before `spec.config`'s extra fields).
pub fn config_json(arch: Architecture, spec: &SynthSpec) -> Result<Value, String> {
    match arch {
        Architecture::Llama => llama_like::llama(spec),
        Architecture::Mistral => quantized_twins::mistral(spec),
        Architecture::Qwen2 => quantized_twins::qwen2(spec),
        Architecture::Qwen3 => quantized_twins::qwen3(spec),
        Architecture::Gemma3 => quantized_twins::gemma3(spec),
        _ => Err(format!(
            "architecture `{arch}` has no synthetic checkpoints yet"
        )),
    }
}
