//! Each architecture's `config.json` from a [`SynthSpec`], in that architecture's own format
//! (the field names transformers and candle-transformers read), and which knobs it has.
//!
//! A new architecture adds its arm to [`config_json`] and a function in the file of its group.

mod dense_a;
mod knobs;

pub use knobs::{OPTIONAL_KNOBS, knobs_set, only_knobs};

use serde_json::Value;

use crate::config::SynthSpec;
use crate::model::Architecture;

/// The `config.json` of `arch` that `spec` describes (before `spec.config`'s extra fields).
pub fn config_json(arch: Architecture, spec: &SynthSpec) -> Result<Value, String> {
    match arch {
        Architecture::Llama => dense_a::llama(spec),
        Architecture::Mistral => dense_a::mistral(spec),
        Architecture::Mixtral => dense_a::mixtral(spec),
        Architecture::Gemma => dense_a::gemma(spec),
        Architecture::Gemma2 => dense_a::gemma2(spec),
        Architecture::Gemma3 => dense_a::gemma3(spec),
        Architecture::Qwen2 => dense_a::qwen2(spec),
        Architecture::Qwen2Moe => dense_a::qwen2_moe(spec),
        Architecture::Qwen3 => dense_a::qwen3(spec),
        Architecture::Qwen3Moe => dense_a::qwen3_moe(spec),
        Architecture::Yi => dense_a::yi(spec),
        Architecture::Helium => dense_a::helium(spec),
        Architecture::Smollm3 => dense_a::smollm3(spec),
        Architecture::Granite => dense_a::granite(spec),
        _ => Err(format!(
            "architecture `{arch}` has no synthetic checkpoints yet"
        )),
    }
}
