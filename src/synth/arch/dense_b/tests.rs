//! Group B's synthetic checkpoints run in their candle-transformers modules: tensors are
//! made, a prefill and a token-by-token decode both give finite logits of the vocabulary's
//! width. How far the two differ is printed, not asserted: it is a finding for the
//! conformance table. Modules that cannot run say why.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::model::candle_transformers;
use crate::model::family::CtWeights;
use crate::synth::checkpoint;
use crate::synth::tests::{ids, runs, spec};

/// `architecture`'s default spec runs on 12 tokens.
fn default_runs(architecture: &str) {
    runs(&spec(architecture), 12);
}

#[test]
fn phi_runs() {
    default_runs("phi");
}

#[test]
fn phi3_runs() {
    default_runs("phi3");
}

#[test]
fn starcoder2_runs() {
    default_runs("starcoder2");
}

#[test]
fn stablelm_runs() {
    default_runs("stablelm");
}

#[test]
fn olmo_runs() {
    default_runs("olmo");
}

#[test]
fn olmo2_runs() {
    default_runs("olmo2");
}

#[test]
fn falcon_runs() {
    default_runs("falcon");
}

#[test]
fn glm4_runs() {
    default_runs("glm4");
}

#[test]
fn chatglm_runs_in_the_glm4_module() {
    default_runs("chatglm");
}

#[test]
fn chatglm3_runs_in_the_chatglm_module() {
    default_runs("chatglm3");
}

#[test]
fn deepseek_v2_runs() {
    default_runs("deepseek_v2");
}

#[test]
fn lfm2_runs() {
    default_runs("lfm2");
}

#[test]
fn windowed_modules_run_past_their_window() {
    for arch in ["starcoder2", "phi3"] {
        let mut s = spec(arch);
        s.sliding_window = Some(8);
        let c = checkpoint(&s).unwrap();
        assert_eq!(c.config["sliding_window"], 8, "{arch}");
        runs(&s, 24);
    }
}

#[test]
fn knobs_reach_their_config_fields() {
    let mut s = spec("deepseek_v2");
    s.experts = Some(3);
    s.experts_per_token = Some(1);
    let c = checkpoint(&s).unwrap();
    assert_eq!(c.config["n_routed_experts"], 3);
    assert_eq!(c.config["num_experts_per_tok"], 1);
    assert!(
        c.tensors
            .contains_key("model.layers.1.mlp.experts.2.down_proj.weight")
    );
    let mut s = spec("phi");
    s.qk_norm = Some(true);
    s.partial_rotary_factor = Some(0.25);
    let c = checkpoint(&s).unwrap();
    assert!(
        c.tensors
            .contains_key("model.layers.0.self_attn.q_layernorm.weight")
    );
    let mut s = spec("chatglm");
    s.rope_theta = Some(50000.0);
    assert_eq!(checkpoint(&s).unwrap().config["rope_ratio"], 5);
    let mut s = spec("starcoder2");
    s.bias = Some(false);
    let c = checkpoint(&s).unwrap();
    assert!(
        !c.tensors
            .contains_key("model.layers.0.self_attn.q_proj.bias")
    );
}

#[test]
fn knobs_an_architecture_lacks_are_refused() {
    let refused = |arch: &str, set: fn(&mut crate::config::SynthSpec), knob: &str| {
        let mut s = spec(arch);
        set(&mut s);
        let e = checkpoint(&s).unwrap_err();
        assert!(e.contains(knob), "{arch}: {e}");
    };
    refused("phi", |s| s.sliding_window = Some(8), "`sliding_window`");
    refused("olmo", |s| s.experts = Some(4), "`experts`");
    refused("chatglm3", |s| s.rope_theta = Some(5e5), "`rope_theta`");
    refused("chatglm", |s| s.rope_theta = Some(15000.0), "`rope_theta`");
    refused("falcon", |s| s.kv_heads = Some(2), "`kv_heads`");
    refused("stablelm", |s| s.qk_norm = Some(true), "`qk_norm`");
    refused("mpt", |s| s.intermediate_size = 100, "`intermediate_size`");
}

/// `c`'s module, built on its own tensors.
fn built(c: &crate::synth::Checkpoint) -> Box<dyn candle_transformers::Stateful> {
    let module = c.architecture.ct_module(CtWeights::Safetensors).unwrap();
    let vb = VarBuilder::from_tensors(
        c.tensors.clone().into_iter().collect(),
        DType::F32,
        &Device::Cpu,
    );
    candle_transformers::build(module, &c.config.to_string(), vb).unwrap()
}

#[test]
fn stable_lm_is_rebuilt_empty_by_clear() {
    let mut m = built(&checkpoint(&spec("stablelm")).unwrap());
    let x = Tensor::new(ids(6).as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let first = m.forward(&x, 0).unwrap().flatten_all().unwrap();
    m.clear();
    let again = m.forward(&x, 0).unwrap().flatten_all().unwrap();
    let d = (first - again).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn chatglm_modules_refuse_ungrouped_attention_at_the_first_forward() {
    // A finding: both modules build, then fail the first forward when every head has its
    // own key/value head (chatglm.rs and glm4.rs support multi_query_attention only).
    for arch in ["chatglm", "chatglm3"] {
        let mut s = spec(arch);
        s.kv_heads = Some(s.heads);
        let c = checkpoint(&s).unwrap();
        assert_eq!(c.config["multi_query_attention"], false);
        let x = Tensor::new(ids(4).as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let e = built(&c).forward(&x, 0).unwrap_err().to_string();
        assert!(
            e.contains("only multi_query_attention=true is supported"),
            "{arch}: {e}"
        );
    }
}

#[test]
fn mpt_and_persimmon_cannot_be_built_and_say_why() {
    let e = checkpoint(&spec("mpt")).unwrap_err();
    assert!(e.contains("mpt::Config's fields are pub(crate)"), "{e}");
    let e = checkpoint(&spec("persimmon")).unwrap_err();
    assert!(e.contains("no Persimmon model"), "{e}");
    // The config written is still one candle's persimmon Config reads.
    let v = super::persimmon(&spec("persimmon")).unwrap();
    let c: ::candle_transformers::models::persimmon::Config = serde_json::from_value(v).unwrap();
    assert!(c.qk_layernorm);
}
