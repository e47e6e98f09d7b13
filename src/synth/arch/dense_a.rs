//! Llama and its close kin (candle-transformers' dense modules of group A): each writer
//! gives transformers' `XxxConfig` fields under their own names, with transformers' defaults
//! where the spec leaves a knob unset (a window or an expert count the conformance sweeps
//! set small themselves).

use serde_json::{Map, Value, json};

use super::knobs::only_knobs;
use crate::config::SynthSpec;

/// Experts per layer when a mixture-of-experts spec leaves `experts` unset (small: the
/// real counts, 8 to 128, would only make the checkpoint big).
const EXPERTS: usize = 4;
/// Experts each token goes to when unset.
const EXPERTS_PER_TOKEN: usize = 2;

/// The fields every architecture here shares: its class, its `model_type`, the sizes.
fn base(s: &SynthSpec, class: &str, model_type: &str) -> Map<String, Value> {
    let v = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads(),
        "vocab_size": s.vocab_size,
        "max_position_embeddings": s.context,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    with(Map::new(), v)
}

/// `m` with the fields of `more` laid over it.
fn with(mut m: Map<String, Value>, more: Value) -> Map<String, Value> {
    if let Value::Object(more) = more {
        m.extend(more);
    }
    m
}

/// `llama` (transformers' `LlamaConfig`).
pub fn llama(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "llama", &["rope_theta", "tie_embeddings", "bias"])?;
    Ok(Value::Object(with(
        base(s, "LlamaForCausalLM", "llama"),
        json!({
            "head_dim": s.head_dim(),
            "rms_norm_eps": 1e-5,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "attention_bias": s.bias.unwrap_or(false),
            "mlp_bias": false,
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "bos_token_id": 1,
            "eos_token_id": 2,
        }),
    )))
}

/// `mistral` (`MistralConfig`: a window of 4096 by default).
pub fn mistral(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "mistral",
        &["sliding_window", "rope_theta", "tie_embeddings"],
    )?;
    Ok(Value::Object(with(
        base(s, "MistralForCausalLM", "mistral"),
        json!({
            "head_dim": s.head_dim(),
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "sliding_window": s.sliding_window.unwrap_or(4096),
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "bos_token_id": 1,
            "eos_token_id": 2,
        }),
    )))
}

/// `mixtral` (`MixtralConfig`: no window by default, `null` as transformers writes it;
/// experts of `intermediate_size`).
pub fn mixtral(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "mixtral",
        &[
            "sliding_window",
            "rope_theta",
            "experts",
            "experts_per_token",
            "tie_embeddings",
        ],
    )?;
    Ok(Value::Object(with(
        base(s, "MixtralForCausalLM", "mixtral"),
        json!({
            "head_dim": s.head_dim(),
            "rms_norm_eps": 1e-5,
            "rope_theta": s.rope_theta.unwrap_or(1e6),
            "sliding_window": s.sliding_window,
            "num_local_experts": s.experts.unwrap_or(EXPERTS),
            "num_experts_per_tok": s.experts_per_token.unwrap_or(EXPERTS_PER_TOKEN),
            "router_aux_loss_coef": 0.001,
            "router_jitter_noise": 0.0,
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "bos_token_id": 1,
            "eos_token_id": 2,
        }),
    )))
}

/// `gemma` (`GemmaConfig`: GELU (tanh), head and embedding tied, the embedding scaled).
pub fn gemma(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "gemma", &["bias", "rope_theta"])?;
    Ok(Value::Object(with(
        base(s, "GemmaForCausalLM", "gemma"),
        json!({
            "head_dim": s.head_dim(),
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": null,
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "attention_bias": s.bias.unwrap_or(false),
            "tie_word_embeddings": true,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 0,
        }),
    )))
}

/// `gemma2` (`Gemma2Config`: soft-caps 50 and 30, a window of 4096 on every other layer,
/// queries scaled by `query_pre_attn_scalar`, the head width).
pub fn gemma2(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "gemma2",
        &[
            "sliding_window",
            "attn_logit_softcapping",
            "final_logit_softcapping",
            "bias",
            "rope_theta",
        ],
    )?;
    let mut m = base(s, "Gemma2ForCausalLM", "gemma2");
    m.remove("hidden_act");
    Ok(Value::Object(with(
        m,
        json!({
            "head_dim": s.head_dim(),
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "attention_bias": s.bias.unwrap_or(false),
            "query_pre_attn_scalar": s.head_dim(),
            "sliding_window": s.sliding_window.unwrap_or(4096),
            "attn_logit_softcapping": s.attn_logit_softcapping.unwrap_or(50.0),
            "final_logit_softcapping": s.final_logit_softcapping.unwrap_or(30.0),
            "tie_word_embeddings": true,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 0,
        }),
    )))
}

/// `gemma3` as a text-only checkpoint (`Gemma3TextConfig`, `model_type` `gemma3_text`):
/// every 6th layer global, the others local with a window of 4096 and their own RoPE base.
pub fn gemma3(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "gemma3",
        &[
            "sliding_window",
            "sliding_window_pattern",
            "attn_logit_softcapping",
            "final_logit_softcapping",
            "bias",
            "rope_theta",
        ],
    )?;
    let mut m = base(s, "Gemma3ForCausalLM", "gemma3_text");
    m.remove("hidden_act");
    Ok(Value::Object(with(
        m,
        json!({
            "head_dim": s.head_dim(),
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(1e6),
            "rope_local_base_freq": 10000.0,
            "rope_scaling": null,
            "attention_bias": s.bias.unwrap_or(false),
            "query_pre_attn_scalar": s.head_dim(),
            "sliding_window": s.sliding_window.unwrap_or(4096),
            "sliding_window_pattern": s.sliding_window_pattern.unwrap_or(6),
            "attn_logit_softcapping": s.attn_logit_softcapping,
            "final_logit_softcapping": s.final_logit_softcapping,
            "tie_word_embeddings": true,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 0,
        }),
    )))
}

/// The window fields of the Qwen configs: off by default (`use_sliding_window` false,
/// `sliding_window` at transformers' 4096, or `off` where the config writes none); a window
/// set by the spec slides on every layer (`max_window_layers` 0: Qwen2's and Qwen3's configs
/// slide the layers from that index on; Qwen2-MoE reads it otherwise, see [`qwen2_moe`]).
fn qwen_window(s: &SynthSpec, off: Value) -> Value {
    match s.sliding_window {
        Some(w) => json!({
            "use_sliding_window": true,
            "sliding_window": w,
            "max_window_layers": 0,
        }),
        None => json!({
            "use_sliding_window": false,
            "sliding_window": off,
            "max_window_layers": 28,
        }),
    }
}

/// `qwen2` (`Qwen2Config`: Q/K/V biases always).
pub fn qwen2(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "qwen2",
        &["sliding_window", "rope_theta", "tie_embeddings"],
    )?;
    let m = base(s, "Qwen2ForCausalLM", "qwen2");
    let m = with(m, qwen_window(s, json!(4096)));
    Ok(Value::Object(with(
        m,
        json!({
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "attention_dropout": 0.0,
        }),
    )))
}

/// `qwen2_moe` (`Qwen2MoeConfig`: experts of `moe_intermediate_size` on every layer, plus a
/// shared expert behind a sigmoid gate).
pub fn qwen2_moe(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "qwen2_moe",
        &[
            "sliding_window",
            "rope_theta",
            "experts",
            "experts_per_token",
            "tie_embeddings",
        ],
    )?;
    let m = base(s, "Qwen2MoeForCausalLM", "qwen2_moe");
    let m = with(m, qwen_window(s, json!(4096)));
    // transformers' Qwen2MoeConfig derives a sliding layer only where `(i + 1) % 2 == 1` and
    // `i < max_window_layers` (configuration_qwen2_moe.py:115-120): with the 0 above no layer
    // slides and its reference has no window at all, while candle's qwen2_moe windows every
    // layer. Naming the layers says "every layer slides" in words both read alike.
    let m = match s.sliding_window {
        Some(_) => with(
            m,
            json!({ "layer_types": vec!["sliding_attention"; s.layers] }),
        ),
        None => m,
    };
    Ok(Value::Object(with(
        m,
        json!({
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "decoder_sparse_step": 1,
            "moe_intermediate_size": (s.intermediate_size / 2).max(1),
            "shared_expert_intermediate_size": s.intermediate_size,
            "num_experts": s.experts.unwrap_or(EXPERTS),
            "num_experts_per_tok": s.experts_per_token.unwrap_or(EXPERTS_PER_TOKEN),
            "norm_topk_prob": false,
            "mlp_only_layers": [],
            "attention_dropout": 0.0,
        }),
    )))
}

/// `qwen3` (`Qwen3Config`: per-head Q/K norms always, an explicit head width, no window
/// (`null`) unless set).
pub fn qwen3(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "qwen3",
        &["sliding_window", "bias", "rope_theta", "tie_embeddings"],
    )?;
    let m = base(s, "Qwen3ForCausalLM", "qwen3");
    let m = with(m, qwen_window(s, Value::Null));
    Ok(Value::Object(with(
        m,
        json!({
            "head_dim": s.head_dim(),
            "attention_bias": s.bias.unwrap_or(false),
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "attention_dropout": 0.0,
        }),
    )))
}

/// `qwen3_moe` (`Qwen3MoeConfig`: Qwen3 with experts of `moe_intermediate_size` on every
/// layer, no shared expert).
pub fn qwen3_moe(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "qwen3_moe",
        &[
            "sliding_window",
            "bias",
            "rope_theta",
            "experts",
            "experts_per_token",
            "tie_embeddings",
        ],
    )?;
    let m = base(s, "Qwen3MoeForCausalLM", "qwen3_moe");
    let m = with(m, qwen_window(s, Value::Null));
    Ok(Value::Object(with(
        m,
        json!({
            "head_dim": s.head_dim(),
            "attention_bias": s.bias.unwrap_or(false),
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "decoder_sparse_step": 1,
            "moe_intermediate_size": (s.intermediate_size / 2).max(1),
            "num_experts": s.experts.unwrap_or(EXPERTS),
            "num_experts_per_tok": s.experts_per_token.unwrap_or(EXPERTS_PER_TOKEN),
            "norm_topk_prob": false,
            "mlp_only_layers": [],
            "attention_dropout": 0.0,
        }),
    )))
}

/// `yi` (01.AI's `YiConfig` as its checkpoints ship it, `model_type` `Yi`: Llama's recipe
/// with a RoPE base of 5e6).
pub fn yi(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "yi", &["rope_theta"])?;
    Ok(Value::Object(with(
        base(s, "YiForCausalLM", "Yi"),
        json!({
            "rms_norm_eps": 1e-5,
            "rope_theta": s.rope_theta.unwrap_or(5e6),
            "tie_word_embeddings": false,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }),
    )))
}

/// `helium` (`HeliumConfig`: RMS norm eps 1e-8, RoPE base 1e5).
pub fn helium(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "helium", &["bias", "rope_theta", "tie_embeddings"])?;
    Ok(Value::Object(with(
        base(s, "HeliumForCausalLM", "helium"),
        json!({
            "head_dim": s.head_dim(),
            "rms_norm_eps": 1e-8,
            "rope_theta": s.rope_theta.unwrap_or(100000.0),
            "attention_bias": s.bias.unwrap_or(false),
            "mlp_bias": false,
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 3,
        }),
    )))
}

/// `smollm3` (`SmolLM3Config`: RoPE skipped on every 4th layer (`no_rope_layers` 0 there),
/// head tied, RoPE base 2e6).
pub fn smollm3(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(
        s,
        "smollm3",
        &["sliding_window", "bias", "rope_theta", "tie_embeddings"],
    )?;
    let interval = 4;
    let no_rope: Vec<usize> = (0..s.layers)
        .map(|i| usize::from(!(i + 1).is_multiple_of(interval)))
        .collect();
    let m = base(s, "SmolLM3ForCausalLM", "smollm3");
    let m = with(m, qwen_window(s, Value::Null));
    Ok(Value::Object(with(
        m,
        json!({
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(2e6),
            "rope_scaling": null,
            "attention_bias": s.bias.unwrap_or(false),
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "no_rope_layers": no_rope,
            "no_rope_layer_interval": interval,
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(true),
            // SmolLM3Config's defaults (128000..128004) lie outside a small vocabulary, and
            // transformers refuses a padding id outside the embedding table.
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": null,
        }),
    )))
}

/// `granite` (`GraniteConfig`: Llama with four multipliers, 1.0 by default: the embedding,
/// the residual branches, the attention scores (instead of 1/√head_dim) and the logits
/// (divided)).
pub fn granite(s: &SynthSpec) -> Result<Value, String> {
    only_knobs(s, "granite", &["bias", "rope_theta", "tie_embeddings"])?;
    Ok(Value::Object(with(
        base(s, "GraniteForCausalLM", "granite"),
        json!({
            "rms_norm_eps": 1e-6,
            "rope_theta": s.rope_theta.unwrap_or(10000.0),
            "rope_scaling": null,
            "attention_bias": s.bias.unwrap_or(false),
            "mlp_bias": false,
            "embedding_multiplier": 1.0,
            "residual_multiplier": 1.0,
            "attention_multiplier": 1.0,
            "logits_scaling": 1.0,
            "tie_word_embeddings": s.tie_embeddings.unwrap_or(false),
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        }),
    )))
}

#[cfg(test)]
mod tests;
