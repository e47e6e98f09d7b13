//! The quantized modules of architectures whose dense config writers other files own (Phi-2,
//! Phi-3, GLM-4, StableLM, Qwen3-MoE, LFM2): each checkpoint is recorded from the dense
//! candle-transformers module on a `config.json` with transformers' defaults written here,
//! then written as llama.cpp's architecture and run like the others
//! ([`super::tests::run_encoded`]).

use std::collections::BTreeMap;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use candle_transformers::models as ct;
use serde_json::{Value, json};

use super::tests::run_encoded;
use crate::model::family::CtModule;
use crate::synth::weights;

/// The sizes every test checkpoint shares (the synthetic defaults).
fn base() -> Value {
    json!({
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
    })
}

/// `base()` with `extra`'s fields set.
fn with(extra: Value) -> Value {
    let mut v = base();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// The tensors the dense module that `build` makes asks for.
fn record(
    absent: &[&str],
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> BTreeMap<String, Tensor> {
    weights::record(0, absent.iter().map(|s| s.to_string()).collect(), build).unwrap()
}

#[test]
fn quantized_phi_runs_on_a_synthetic_phi2_gguf() {
    let cfg = with(json!({"model_type": "phi", "hidden_act": "gelu_new",
        "layer_norm_eps": 1e-5, "partial_rotary_factor": 0.5, "qk_layernorm": false,
        "num_key_value_heads": 4}));
    let c: ct::phi::Config = serde_json::from_value(cfg.clone()).unwrap();
    let t = record(&[], |vb| ct::phi::Model::new(&c, vb).map(|_| ()));
    assert!(t.contains_key("model.layers.0.mlp.fc1.bias"));
    run_encoded("phi2", &cfg, &t, CtModule::QuantizedPhi, 12).unwrap();
}

#[test]
fn quantized_phi3_runs_on_a_synthetic_phi3_gguf() {
    let cfg = with(
        json!({"model_type": "phi3", "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "rope_scaling": null, "original_max_position_embeddings": 512,
        "partial_rotary_factor": null}),
    );
    let c: ct::phi3::Config = serde_json::from_value(cfg.clone()).unwrap();
    let t = record(&[], |vb| ct::phi3::Model::new(&c, vb).map(|_| ()));
    assert!(t.contains_key("model.layers.0.self_attn.qkv_proj.weight"));
    run_encoded("phi3", &cfg, &t, CtModule::QuantizedPhi3, 12).unwrap();
}

#[test]
fn quantized_glm4_runs_on_a_synthetic_glm4_gguf() {
    let cfg = with(json!({"model_type": "glm4", "hidden_act": "silu",
        "rms_norm_eps": 1.5625e-7, "head_dim": 16, "partial_rotary_factor": 0.5,
        "attention_bias": true, "sliding_window": null, "eos_token_id": null}));
    let c: ct::glm4_new::Config = serde_json::from_value(cfg.clone()).unwrap();
    let t = record(&[], |vb| {
        ct::glm4_new::ModelForCausalLM::new(&c, vb).map(|_| ())
    });
    assert!(t.contains_key("model.layers.0.post_mlp_layernorm.weight"));
    run_encoded("glm4", &cfg, &t, CtModule::QuantizedGlm4, 12).unwrap();
}

#[test]
fn quantized_stable_lm_runs_on_a_synthetic_stablelm_gguf() {
    let cfg = with(json!({"model_type": "stablelm", "hidden_act": "silu",
        "layer_norm_eps": 1e-5, "partial_rotary_factor": 0.25, "use_qkv_bias": false,
        "use_cache": true}));
    let c: ct::stable_lm::Config = serde_json::from_value(cfg.clone()).unwrap();
    let t = record(&[], |vb| ct::stable_lm::Model::new(&c, vb).map(|_| ()));
    assert!(t.contains_key("model.norm.bias"));
    run_encoded("stablelm", &cfg, &t, CtModule::QuantizedStableLm, 12).unwrap();
}

#[test]
fn quantized_qwen3_moe_runs_on_a_synthetic_qwen3moe_gguf() {
    let cfg = with(json!({"model_type": "qwen3_moe", "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "head_dim": 16, "attention_bias": false,
        "sliding_window": null, "max_window_layers": 2, "use_sliding_window": false,
        "decoder_sparse_step": 1, "moe_intermediate_size": 32, "num_experts_per_tok": 2,
        "num_experts": 4, "norm_topk_prob": false}));
    let c: ct::qwen3_moe::Config = serde_json::from_value(cfg.clone()).unwrap();
    let t = record(&[], |vb| {
        ct::qwen3_moe::ModelForCausalLM::new(&c, vb).map(|_| ())
    });
    assert!(t.contains_key("model.layers.0.mlp.experts.3.down_proj.weight"));
    // FINDING: the file loads, but every forward (prefill and decode) multiplies the experts
    // with candle-nn's `moe_gemm_gguf`, which has a CUDA kernel only: on the CPU it errs.
    let e = run_encoded("qwen3moe", &cfg, &t, CtModule::QuantizedQwen3Moe, 12).unwrap_err();
    assert!(
        e.contains("moe_gemm_gguf is only implemented for the cuda backend"),
        "{e}"
    );
}

#[test]
fn quantized_lfm2_runs_on_a_synthetic_lfm2_gguf() {
    let cfg = with(
        json!({"model_type": "lfm2", "norm_eps": 1e-5, "rope_theta": 1e6,
        "conv_L_cache": 3, "conv_bias": false, "layer_types": ["conv", "full_attention"],
        "tie_embedding": true, "tie_word_embeddings": true, "intermediate_size": 256,
        "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256}),
    );
    let c: ct::lfm2::Lfm2Config = serde_json::from_value(cfg.clone()).unwrap();
    let c = c.into_config(false);
    let t = record(&["lm_head.weight"], |vb| {
        ct::lfm2::Model::new(&c, vb).map(|_| ())
    });
    assert!(t.contains_key("model.layers.0.conv.conv.weight"));
    run_encoded("lfm2", &cfg, &t, CtModule::QuantizedLfm2, 12).unwrap();
}
