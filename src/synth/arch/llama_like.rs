//! Llama and the architectures that change little in its recipe.

use serde_json::{Value, json};

use super::knobs::only_knobs;
use crate::config::SynthSpec;

/// `llama` (transformers' `LlamaConfig`).
pub fn llama(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "llama", &["rope_theta", "tie_embeddings", "bias"])?;
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "head_dim": s.head_dim(),
        "vocab_size": s.vocab_size,
        "max_position_embeddings": s.context,
        "rms_norm_eps": 1e-5,
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "attention_bias": s.bias.unwrap_or(false),
        "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }))
}
