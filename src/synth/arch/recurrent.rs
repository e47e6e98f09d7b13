//! The recurrent architectures candle-transformers runs (issue 32's stretch): Mamba,
//! Mamba-2, RWKV v5/v6/v7 and RecurrentGemma. Their `config.json` holds the fields candle's
//! modules read, under the names of the checkpoints they load (mamba_ssm's for Mamba, the
//! `-HF` RWKV checkpoints', transformers' for Mamba-2 and RecurrentGemma).

use serde_json::{Value, json};

use super::knobs::only_knobs;
use crate::config::SynthSpec;

/// `mamba` (mamba_ssm's `config.json`: candle's module reads its layout; the state width 16
/// and the convolution width 4 are constants there).
pub fn mamba(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "mamba", &[])?;
    Ok(json!({
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "d_model": s.hidden_size,
        "n_layer": s.layers,
        "vocab_size": s.vocab_size,
        "ssm_cfg": {},
        "rms_norm": true,
        "residual_in_fp32": true,
        "fused_add_norm": true,
        "pad_vocab_size_multiple": 8,
        "tie_word_embeddings": true,
        "max_position_embeddings": s.context,
        "torch_dtype": "float32",
        // The same sizes under transformers' `MambaConfig` names (candle reads the ones of
        // the original state-spaces checkpoints above; its d_state, d_conv, expand and dt_rank
        // are fixed to these values).
        "hidden_size": s.hidden_size,
        "num_hidden_layers": s.layers,
        "state_size": 16,
        "conv_kernel": 4,
        "expand": 2,
        "time_step_rank": s.hidden_size.div_ceil(16),
        "layer_norm_epsilon": 1e-5,
        "use_bias": false,
        "use_conv_bias": true,
    }))
}

/// `mamba2` (transformers' `Mamba2Config`): heads of `head_dim` over 2 × hidden_size, one
/// group, a state of 16 per head.
pub fn mamba2(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "mamba2", &[])?;
    let hd = s.head_dim();
    if hd == 0 || !(2 * s.hidden_size).is_multiple_of(hd) {
        return Err(format!(
            "`head_dim`: architecture `mamba2` splits 2 × hidden_size into heads of it, and {hd} \
             does not divide {}",
            2 * s.hidden_size
        ));
    }
    Ok(json!({
        "architectures": ["Mamba2ForCausalLM"],
        "model_type": "mamba2",
        "num_heads": 2 * s.hidden_size / hd,
        "head_dim": hd,
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "state_size": 16,
        "num_hidden_layers": s.layers,
        "layer_norm_epsilon": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "expand": 2,
        "conv_kernel": 4,
        "n_groups": 1,
        "use_bias": false,
        "use_conv_bias": true,
        "hidden_act": "silu",
        "residual_in_fp32": true,
        "rms_norm": true,
        "chunk_size": 256,
        "tie_word_embeddings": true,
        "max_position_embeddings": s.context,
        "torch_dtype": "float32",
    }))
}

/// `rwkv5` and `rwkv6` (the `-HF` checkpoints' `Rwkv5Config`/`Rwkv6Config`): heads of
/// `head_dim`; `num_attention_heads` is the head size there, as in Eagle 7B's config.
pub fn rwkv(s: &SynthSpec, arch: &str) -> Result<Value, String> {
    only_knobs(s, arch, &[])?;
    let hd = s.head_dim();
    let class = if arch == "rwkv5" {
        "Rwkv5ForCausalLM"
    } else {
        "Rwkv6ForCausalLM"
    };
    Ok(json!({
        "architectures": [class],
        "model_type": arch,
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "num_hidden_layers": s.layers,
        "attention_hidden_size": s.hidden_size,
        "num_attention_heads": hd,
        "head_size": hd,
        "head_size_divisor": 8,
        "intermediate_size": s.intermediate_size,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "rescale_every": 6,
        "tie_word_embeddings": false,
        "use_cache": true,
        "context_length": s.context,
        "max_position_embeddings": s.context,
        "torch_dtype": "float32",
    }))
}

/// `rwkv7` (candle's rwkv_v7 `Config`: `version` V7, heads of `head_dim`).
pub fn rwkv7(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "rwkv7", &[])?;
    Ok(json!({
        "architectures": ["RWKV7ForCausalLM"],
        "model_type": "rwkv7",
        "version": "V7",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "num_hidden_layers": s.layers,
        "head_size": s.head_dim(),
        "intermediate_size": s.intermediate_size,
        "rescale_every": 0,
        "max_position_embeddings": s.context,
        "torch_dtype": "float32",
    }))
}

/// `recurrent_gemma` (transformers' `RecurrentGemmaConfig`): two recurrent blocks then an
/// attention block, repeated; the local attention window is `sliding_window`
/// (`attention_window_size`, 2048 by default).
pub fn recurrent_gemma(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "recurrent_gemma",
        &[
            "sliding_window",
            "rope_theta",
            "partial_rotary_factor",
            "final_logit_softcapping",
        ],
    )?;
    Ok(json!({
        "architectures": ["RecurrentGemmaForCausalLM"],
        "model_type": "recurrent_gemma",
        "num_hidden_layers": s.layers,
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "head_dim": s.head_dim(),
        "lru_width": s.hidden_size,
        "attention_window_size": s.sliding_window.unwrap_or(2048),
        "conv1d_width": 4,
        "logits_soft_cap": s.final_logit_softcapping.unwrap_or(30.0),
        "rms_norm_eps": 1e-6,
        "use_cache": true,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "hidden_activation": "gelu_pytorch_tanh",
        "partial_rotary_factor": s.partial_rotary_factor.unwrap_or(0.5),
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "block_types": ["recurrent", "recurrent", "attention"],
        "attention_bias": false,
        "max_position_embeddings": s.context,
        "torch_dtype": "float32",
    }))
}

#[cfg(test)]
mod tests;
