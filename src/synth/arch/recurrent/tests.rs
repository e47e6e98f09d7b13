//! The recurrent architectures' synthetic checkpoints run in their candle-transformers
//! modules: finite logits of the vocabulary's width from a prefill and from a token-by-token
//! decode. How far the two differ is printed (a finding), not asserted.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::model::candle_transformers;
use crate::model::family::CtWeights;
use crate::synth::checkpoint;
use crate::synth::tests::{ids, runs, spec};

#[test]
fn mamba_runs() {
    runs(&spec("mamba"), 12);
}

#[test]
fn mamba2_runs() {
    runs(&spec("mamba2"), 12);
}

/// A finding: rwkv_v5's and rwkv_v6's forward takes (B, t) ids but computes only t = 1
/// (the token shift combines the block with the last token's state without broadcasting,
/// rwkv_v5.rs:167, rwkv_v6.rs:126): a prefill of several tokens fails, while a
/// token-by-token decode runs.
#[test]
fn rwkv5_and_rwkv6_decode_but_cannot_prefill() {
    for arch in ["rwkv5", "rwkv6"] {
        let c = checkpoint(&spec(arch)).unwrap();
        assert!(!c.tensors.is_empty());
        let module = c.architecture.ct_module(CtWeights::Safetensors).unwrap();
        let vb = VarBuilder::from_tensors(
            c.tensors.clone().into_iter().collect(),
            DType::F32,
            &Device::Cpu,
        );
        let mut m = candle_transformers::build(module, &c.config.to_string(), vb).unwrap();
        let row = |t: &[u32]| Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let e = m.forward(&row(&ids(12)), 0).unwrap_err().to_string();
        assert!(e.contains("shape mismatch"), "{arch}: {e}");
        m.clear();
        let mut last = vec![];
        for (i, t) in ids(12).into_iter().enumerate() {
            last = m
                .forward(&row(&[t]), i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        }
        assert_eq!(last.len(), 256, "{arch}");
        assert!(last.iter().all(|v| v.is_finite()), "{arch}");
    }
}

#[test]
fn recurrent_gemma_runs_also_past_its_window() {
    let mut s = spec("recurrent_gemma");
    s.layers = 3;
    runs(&s, 12);
    s.sliding_window = Some(8);
    assert_eq!(checkpoint(&s).unwrap().config["attention_window_size"], 8);
    runs(&s, 24);
}

#[test]
fn rwkv7_cannot_be_synthesized_by_the_recorder() {
    // candle's rwkv_v7 reads its LoRA widths off the checkpoint's tensors (get_unchecked,
    // rwkv_v7.rs:83-90) before asking for them with a shape: the recorder cannot answer.
    let e = checkpoint(&spec("rwkv7")).unwrap_err();
    assert!(e.contains("without a shape"), "{e}");
}

#[test]
fn knobs_recurrent_architectures_lack_are_refused() {
    let mut s = spec("mamba");
    s.sliding_window = Some(8);
    assert!(checkpoint(&s).unwrap_err().contains("`sliding_window`"));
    let mut s = spec("rwkv6");
    s.rope_theta = Some(1e4);
    assert!(checkpoint(&s).unwrap_err().contains("`rope_theta`"));
}
