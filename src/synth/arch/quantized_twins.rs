//! INTEGRATOR: config writers for the dense twins of the quantized modules that main lacked
//! when the GGUF writer was written (Mistral, Qwen2, Qwen3, Gemma 3). Drop this file and its
//! arms in `config_json` if another helper's writers for these architectures landed.

use serde_json::{Value, json};

use super::only_knobs;
use crate::config::SynthSpec;

/// `mistral` (transformers' `MistralConfig`: window 4096, eps 1e-6, base 10000).
pub fn mistral(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "mistral", &["sliding_window", "rope_theta"])?;
    Ok(json!({
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "head_dim": s.head_dim(),
        "vocab_size": s.vocab_size,
        "max_position_embeddings": s.context,
        "rms_norm_eps": 1e-6,
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "sliding_window": s.sliding_window.unwrap_or(4096),
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }))
}

/// Qwen2 and Qwen3's shared fields (transformers' `Qwen2Config` / `Qwen3Config`): the window
/// is off unless set, and then on every layer (`max_window_layers` 0).
fn qwen(s: &SynthSpec, model_type: &str, class: &str) -> Value {
    json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "vocab_size": s.vocab_size,
        "max_position_embeddings": s.context,
        "rms_norm_eps": 1e-6,
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "use_sliding_window": s.sliding_window.is_some(),
        "sliding_window": s.sliding_window.unwrap_or(4096),
        "max_window_layers": if s.sliding_window.is_some() { 0 } else { s.layers },
        "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    })
}

/// `qwen2` (Q/K/V biases always).
pub fn qwen2(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "qwen2",
        &["sliding_window", "rope_theta", "tie_embeddings"],
    )?;
    Ok(qwen(s, "qwen2", "Qwen2ForCausalLM"))
}

/// `qwen3` (per-head Q/K norms always, an explicit head width, optional biases).
pub fn qwen3(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "qwen3",
        &["sliding_window", "rope_theta", "tie_embeddings", "bias"],
    )?;
    let mut v = qwen(s, "qwen3", "Qwen3ForCausalLM");
    v["head_dim"] = json!(s.head_dim());
    v["attention_bias"] = json!(s.bias.unwrap_or(false));
    Ok(v)
}

/// `gemma3_text` fields under `gemma3` (transformers' `Gemma3TextConfig`: window 4096, every
/// 6th layer global, base 1e6 global and 10000 local, eps 1e-6, tied head).
pub fn gemma3(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "gemma3",
        &[
            "sliding_window",
            "sliding_window_pattern",
            "rope_theta",
            "attn_logit_softcapping",
            "final_logit_softcapping",
        ],
    )?;
    Ok(json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3",
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "head_dim": s.head_dim(),
        "query_pre_attn_scalar": s.head_dim(),
        "vocab_size": s.vocab_size,
        "max_position_embeddings": s.context,
        "rms_norm_eps": 1e-6,
        "rope_theta": s.rope_theta.unwrap_or(1_000_000.0),
        "rope_local_base_freq": 10000.0,
        "sliding_window": s.sliding_window.unwrap_or(4096),
        "sliding_window_pattern": s.sliding_window_pattern.unwrap_or(6),
        "attn_logit_softcapping": s.attn_logit_softcapping,
        "final_logit_softcapping": s.final_logit_softcapping,
        "attention_bias": false,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": true,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "torch_dtype": "float32",
    }))
}
