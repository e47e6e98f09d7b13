//! Each architecture's `config.json` from a [`SynthSpec`], in that architecture's own format
//! (the field names transformers and candle-transformers read), and which knobs it has.
//!
//! A new architecture adds its arm to [`config_json`] and a function in the file of its group.

mod dense_a;
mod dense_b;
mod knobs;
mod recurrent;

use serde_json::Value;

use crate::config::SynthSpec;
use crate::model::Architecture;
pub use knobs::{OPTIONAL_KNOBS, knobs_set, only_knobs};

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
        Architecture::Phi => dense_b::phi(spec),
        Architecture::Phi3 => dense_b::phi3(spec),
        Architecture::Starcoder2 => dense_b::starcoder2(spec),
        Architecture::StableLm => dense_b::stablelm(spec),
        Architecture::Olmo => dense_b::olmo(spec),
        Architecture::Olmo2 => dense_b::olmo2(spec),
        Architecture::Falcon => dense_b::falcon(spec),
        Architecture::Glm4 => dense_b::glm4(spec),
        Architecture::Chatglm => dense_b::chatglm(spec),
        Architecture::Chatglm3 => dense_b::chatglm3(spec),
        Architecture::DeepseekV2 => dense_b::deepseek_v2(spec),
        Architecture::Mpt => dense_b::mpt(spec),
        Architecture::Persimmon => dense_b::persimmon(spec),
        Architecture::Lfm2 => dense_b::lfm2(spec),
        Architecture::Mamba => recurrent::mamba(spec),
        Architecture::Mamba2 => recurrent::mamba2(spec),
        Architecture::Rwkv5 => recurrent::rwkv(spec, "rwkv5"),
        Architecture::Rwkv6 => recurrent::rwkv(spec, "rwkv6"),
        Architecture::Rwkv7 => recurrent::rwkv7(spec),
        Architecture::RecurrentGemma => recurrent::recurrent_gemma(spec),
        _ => Err(format!(
            "architecture `{arch}` has no synthetic checkpoints yet"
        )),
    }
}
