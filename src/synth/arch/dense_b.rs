//! Group B of candle-transformers' dense modules (issue 32): Phi, Phi-3, StarCoder2,
//! StableLM, OLMo, OLMo 2, Falcon, GLM-4, ChatGLM, DeepSeek-V2, MPT, Persimmon and LFM2.
//! Each `config.json` has the fields of the architecture's transformers config (or, for the
//! remote-code ChatGLM, of its published checkpoints) with their real defaults; token ids
//! are small so that they fit a synthetic vocabulary.

use serde_json::{Value, json};

use super::knobs::only_knobs;
use crate::config::SynthSpec;

/// Refuses a `head_dim` other than `hidden_size / heads` where the architecture derives it.
fn derived_head_dim(s: &SynthSpec, arch: &str) -> Result<(), String> {
    match s.head_dim {
        Some(d) if d * s.heads != s.hidden_size => Err(format!(
            "`head_dim`: architecture `{arch}` derives it as hidden_size / heads ({})",
            s.hidden_size / s.heads.max(1)
        )),
        _ => Ok(()),
    }
}

/// Refuses `kv_heads` other than `heads` where the architecture has no grouped attention.
fn all_heads_kv(s: &SynthSpec, arch: &str) -> Result<(), String> {
    match s.kv_heads {
        Some(k) if k != s.heads => Err(format!(
            "`kv_heads`: architecture `{arch}` has as many key/value heads as heads"
        )),
        _ => Ok(()),
    }
}

/// `phi` (transformers' `PhiConfig`).
pub fn phi(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "phi",
        &["rope_theta", "partial_rotary_factor", "qk_norm"],
    )?;
    derived_head_dim(s, "phi")?;
    Ok(json!({
        "architectures": ["PhiForCausalLM"],
        "model_type": "phi",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attention_dropout": 0.0,
        "hidden_act": "gelu_new",
        "max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "use_cache": true,
        "tie_word_embeddings": false,
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "rope_scaling": null,
        "partial_rotary_factor": s.partial_rotary_factor.unwrap_or(0.5),
        "qk_layernorm": s.qk_norm.unwrap_or(false),
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }))
}

/// `phi3` (transformers' `Phi3Config`). Its `sliding_window` is written as set; candle's
/// phi3 module does not read it (phi3.rs has no window), which a sweep then shows.
pub fn phi3(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "phi3",
        &[
            "rope_theta",
            "partial_rotary_factor",
            "sliding_window",
            "tie_embeddings",
        ],
    )?;
    derived_head_dim(s, "phi3")?;
    Ok(json!({
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "max_position_embeddings": s.context,
        "original_max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-5,
        "use_cache": true,
        "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "rope_scaling": null,
        "partial_rotary_factor": s.partial_rotary_factor.unwrap_or(1.0),
        "sliding_window": s.sliding_window,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "torch_dtype": "float32",
    }))
}

/// `starcoder2` (transformers' `Starcoder2Config`); the head is always the embedding
/// (candle's module ties it whatever the config says, as StarCoder2's checkpoints do).
pub fn starcoder2(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "starcoder2", &["sliding_window", "bias", "rope_theta"])?;
    derived_head_dim(s, "starcoder2")?;
    Ok(json!({
        "architectures": ["Starcoder2ForCausalLM"],
        "model_type": "starcoder2",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "hidden_act": "gelu_pytorch_tanh",
        "max_position_embeddings": s.context,
        "initializer_range": 0.018042,
        "norm_epsilon": 1e-5,
        "use_cache": true,
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "sliding_window": s.sliding_window,
        "attention_dropout": 0.0,
        "residual_dropout": 0.0,
        "embedding_dropout": 0.0,
        "use_bias": s.bias.unwrap_or(true),
        "tie_word_embeddings": true,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float32",
    }))
}

/// `stablelm` (transformers' `StableLmConfig`). Q/K LayerNorms and the parallel residual
/// (StableLM 2 12B) are not knobs: candle's stable_lm module has neither.
pub fn stablelm(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "stablelm",
        &["bias", "rope_theta", "partial_rotary_factor"],
    )?;
    derived_head_dim(s, "stablelm")?;
    Ok(json!({
        "architectures": ["StableLmForCausalLM"],
        "model_type": "stablelm",
        "vocab_size": s.vocab_size,
        "intermediate_size": s.intermediate_size,
        "hidden_size": s.hidden_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "hidden_act": "silu",
        "max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "use_cache": true,
        "tie_word_embeddings": false,
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "rope_scaling": null,
        "use_qkv_bias": s.bias.unwrap_or(false),
        "qk_layernorm": false,
        "use_parallel_residual": false,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "partial_rotary_factor": s.partial_rotary_factor.unwrap_or(0.25),
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float32",
    }))
}

/// `olmo` (transformers' `OlmoConfig`) and `olmo2` (`Olmo2Config`, which adds
/// `rms_norm_eps`): the same fields otherwise.
fn olmo_like(s: &SynthSpec, arch: &str, class: &str) -> Result<Value, String> {
    only_knobs(s, arch, &["bias", "rope_theta", "tie_embeddings"])?;
    derived_head_dim(s, arch)?;
    Ok(json!({
        "architectures": [class],
        "model_type": arch,
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "hidden_act": "silu",
        "max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "use_cache": true,
        "pad_token_id": 1,
        "bos_token_id": null,
        "eos_token_id": 2,
        "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "rope_scaling": null,
        "attention_bias": s.bias.unwrap_or(false),
        "attention_dropout": 0.0,
        "clip_qkv": null,
        "torch_dtype": "float32",
    }))
}

/// `olmo` (transformers' `OlmoConfig`).
pub fn olmo(s: &SynthSpec) -> Result<Value, String> {
    olmo_like(s, "olmo", "OlmoForCausalLM")
}

/// `olmo2` (transformers' `Olmo2Config`).
pub fn olmo2(s: &SynthSpec) -> Result<Value, String> {
    let mut v = olmo_like(s, "olmo2", "Olmo2ForCausalLM")?;
    v["rms_norm_eps"] = json!(1e-5);
    Ok(v)
}

/// `falcon` (transformers' `FalconConfig`, Falcon-7B's recipe). Multi-query attention unless
/// `kv_heads` equals `heads`; the MLP is 4 × hidden_size (transformers' default without
/// `ffn_hidden_size`, and all candle's module knows), so `intermediate_size` is not read.
pub fn falcon(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "falcon", &["bias"])?;
    derived_head_dim(s, "falcon")?;
    let multi_query = match s.kv_heads {
        None | Some(1) => true,
        Some(k) if k == s.heads => false,
        Some(_) => {
            return Err(
                "`kv_heads`: architecture `falcon` (7B recipe) has 1 key/value head \
                 (multi-query) or as many as heads"
                    .into(),
            );
        }
    };
    Ok(json!({
        "architectures": ["FalconForCausalLM"],
        "model_type": "falcon",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "use_cache": true,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "alibi": false,
        "new_decoder_architecture": false,
        "multi_query": multi_query,
        "parallel_attn": true,
        "bias": s.bias.unwrap_or(false),
        "apply_residual_connection_post_layernorm": false,
        "max_position_embeddings": s.context,
        "rope_theta": 10000.0,
        "activation": "gelu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }))
}

/// `glm4` (transformers' `Glm4Config`, GLM-4-0414).
pub fn glm4(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "glm4",
        &[
            "bias",
            "partial_rotary_factor",
            "rope_theta",
            "tie_embeddings",
        ],
    )?;
    Ok(json!({
        "architectures": ["Glm4ForCausalLM"],
        "model_type": "glm4",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "head_dim": s.head_dim(),
        "partial_rotary_factor": s.partial_rotary_factor.unwrap_or(0.5),
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "rms_norm_eps": 1.5625e-07,
        "use_cache": true,
        "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "attention_bias": s.bias.unwrap_or(true),
        "pad_token_id": 0,
        "eos_token_id": [2],
        "torch_dtype": "float32",
    }))
}

/// The remote-code ChatGLM config (chatglm3-6b's and glm-4-9b's `config.json`), for
/// architecture `arch`: 2 key/value groups unless `kv_heads` says otherwise (as many as
/// heads turns `multi_query_attention` off); `rope_ratio` (glm-4-9b's, a multiple of RoPE's base 10000 there)
/// is written only where `rope_theta` is set.
fn chatglm_like(s: &SynthSpec, arch: &str) -> Result<Value, String> {
    let rope = if arch == "chatglm" {
        &["bias", "rope_theta"][..]
    } else {
        &["bias"][..]
    };
    only_knobs(s, arch, rope)?;
    // ChatGLM's checkpoints group their key/value heads in 2 (`multi_query_group_num`).
    let kv = s.kv_heads.unwrap_or(2);
    let mut v = json!({
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "num_layers": s.layers,
        "padded_vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "ffn_hidden_size": s.intermediate_size,
        "kv_channels": s.head_dim(),
        "num_attention_heads": s.heads,
        "seq_length": s.context,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "layernorm_epsilon": 1e-5,
        "rmsnorm": true,
        "apply_residual_connection_post_layernorm": false,
        "post_layer_norm": true,
        "add_bias_linear": false,
        "add_qkv_bias": s.bias.unwrap_or(true),
        "bias_dropout_fusion": true,
        "multi_query_attention": kv != s.heads,
        "multi_query_group_num": kv,
        "apply_query_key_layer_scaling": true,
        "attention_softmax_in_fp32": true,
        "fp32_residual_connection": false,
        "original_rope": true,
        "use_cache": true,
        "tie_word_embeddings": false,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    });
    if let Some(theta) = s.rope_theta {
        let ratio = theta / 10000.0;
        if ratio < 1.0 || ratio.fract() != 0.0 {
            return Err(format!(
                "`rope_theta`: architecture `{arch}` writes it as rope_ratio × 10000 with a \
                 whole rope_ratio (candle's glm4 reads an integer), not {theta}"
            ));
        }
        v["rope_ratio"] = json!(ratio as u64);
    }
    Ok(v)
}

/// `chatglm` (ChatGLM2/3, GLM-4-9B), run by candle's glm4 module.
pub fn chatglm(s: &SynthSpec) -> Result<Value, String> {
    chatglm_like(s, "chatglm")
}

/// `chatglm3`: the same `config.json`, run by candle's chatglm module (no `rope_ratio`).
pub fn chatglm3(s: &SynthSpec) -> Result<Value, String> {
    chatglm_like(s, "chatglm3")
}

/// `deepseek_v2` (transformers' `DeepseekV2Config`, V2-Lite's layout: a first dense layer,
/// then MoE layers with one shared expert). The attention's latent dims are small:
/// `kv_lora_rank` 16, `q_lora_rank` 32, a no-RoPE part of `head_dim` and a RoPE part of
/// half of it.
pub fn deepseek_v2(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "deepseek_v2",
        &[
            "experts",
            "experts_per_token",
            "rope_theta",
            "tie_embeddings",
            "bias",
        ],
    )?;
    let hd = s.head_dim();
    Ok(json!({
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "moe_intermediate_size": (s.intermediate_size / 4).max(8),
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.heads,
        "n_shared_experts": 1,
        "n_routed_experts": s.experts.unwrap_or(4),
        "routed_scaling_factor": 1.0,
        "kv_lora_rank": 16,
        "q_lora_rank": 32,
        "qk_rope_head_dim": (hd / 2).max(2),
        "v_head_dim": hd,
        "qk_nope_head_dim": hd,
        "topk_method": "greedy",
        "n_group": 1,
        "topk_group": 1,
        "num_experts_per_tok": s.experts_per_token.unwrap_or(2),
        "moe_layer_freq": 1,
        "first_k_dense_replace": 1,
        "norm_topk_prob": false,
        "scoring_func": "softmax",
        "aux_loss_alpha": 0.001,
        "seq_aux": true,
        "hidden_act": "silu",
        "max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-6,
        "use_cache": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
        "rope_theta": s.rope_theta.unwrap_or(10000.0),
        "rope_scaling": null,
        "attention_bias": s.bias.unwrap_or(false),
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
    }))
}

/// `mpt` (transformers' `MptConfig`: ALiBi, no biases, multi-head attention; the MLP is
/// `expansion_ratio` × d_model, so `intermediate_size` must be a multiple of it).
pub fn mpt(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "mpt", &[])?;
    derived_head_dim(s, "mpt")?;
    all_heads_kv(s, "mpt")?;
    if s.hidden_size == 0 || !s.intermediate_size.is_multiple_of(s.hidden_size) {
        return Err(format!(
            "`intermediate_size`: architecture `mpt` has an MLP of expansion_ratio × \
             hidden_size, and {} is not a multiple of {}",
            s.intermediate_size, s.hidden_size
        ));
    }
    Ok(json!({
        "architectures": ["MptForCausalLM"],
        "model_type": "mpt",
        "d_model": s.hidden_size,
        "n_heads": s.heads,
        "n_layers": s.layers,
        "expansion_ratio": s.intermediate_size / s.hidden_size,
        "max_seq_len": s.context,
        "vocab_size": s.vocab_size,
        "resid_pdrop": 0.0,
        "layer_norm_epsilon": 1e-5,
        "emb_pdrop": 0.0,
        "learned_pos_emb": true,
        "attn_config": {
            "attn_type": "multihead_attention",
            "attn_pdrop": 0.0,
            "attn_impl": "torch",
            "clip_qkv": null,
            "softmax_scale": null,
            "prefix_lm": false,
            "qk_ln": false,
            "attn_uniform": false,
            "alibi": true,
            "alibi_bias_max": 8,
        },
        "init_device": "cpu",
        "logit_scale": null,
        "no_bias": true,
        "embedding_fraction": 1.0,
        "norm_type": "low_precision_layernorm",
        "use_cache": true,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }))
}

/// `persimmon` (transformers' `PersimmonConfig`, with persimmon-8b-base's extra
/// `num_key_value_heads` and `rms_norm_eps`, which candle's Config requires).
pub fn persimmon(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "persimmon",
        &[
            "rope_theta",
            "partial_rotary_factor",
            "qk_norm",
            "tie_embeddings",
        ],
    )?;
    derived_head_dim(s, "persimmon")?;
    all_heads_kv(s, "persimmon")?;
    Ok(json!({
        "architectures": ["PersimmonForCausalLM"],
        "model_type": "persimmon",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.heads,
        "hidden_act": "relu2",
        "max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "rms_norm_eps": 1e-6,
        "use_cache": true,
        "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
        "rope_theta": s.rope_theta.unwrap_or(25000.0),
        "rope_scaling": null,
        "qk_layernorm": s.qk_norm.unwrap_or(true),
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "partial_rotary_factor": s.partial_rotary_factor.unwrap_or(0.5),
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }))
}

/// `lfm2` (transformers' `Lfm2Config`): every other layer attends (`layer_types`, and the
/// older `full_attn_idxs`), the others are short convolutions. candle's module sizes the MLP
/// from `hidden_size` (4 × hidden × multiplier, rounded up to `block_multiple_of`), so
/// `intermediate_size` is written as 6 × hidden, which transformers' auto-adjustment (2/3 of
/// it) brings to the same width.
pub fn lfm2(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "lfm2", &["rope_theta", "tie_embeddings"])?;
    derived_head_dim(s, "lfm2")?;
    let attends = |i: usize| i % 2 == 1;
    let types: Vec<&str> = (0..s.layers)
        .map(|i| if attends(i) { "full_attention" } else { "conv" })
        .collect();
    let idxs: Vec<usize> = (0..s.layers).filter(|&i| attends(i)).collect();
    let tied = s.tie_embeddings.unwrap_or(true);
    Ok(json!({
        "architectures": ["Lfm2ForCausalLM"],
        "model_type": "lfm2",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": 6 * s.hidden_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "max_position_embeddings": s.context,
        "initializer_range": 0.02,
        "norm_eps": 1e-5,
        "use_cache": true,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": tied,
        "tie_embedding": tied,
        "rope_theta": s.rope_theta.unwrap_or(1000000.0),
        "conv_bias": false,
        "conv_L_cache": 3,
        "block_multiple_of": 256,
        "block_ffn_dim_multiplier": 1.0,
        "block_auto_adjust_ff_dim": true,
        "full_attn_idxs": idxs,
        "layer_types": types,
        "torch_dtype": "float32",
    }))
}

#[cfg(test)]
mod tests;
