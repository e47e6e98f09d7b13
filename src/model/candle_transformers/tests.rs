//! A module that panics inside candle fails its pair with an error naming it, and the
//! model runs the next pair.

use std::sync::Mutex;

use candle_core::{Device, Tensor};

use super::{CandleTransformersModel, Stateful};
use crate::model::under_test::{ModelUnderTest, Rows};

/// Panics on a forward while `panics` is set (on the forward itself, or on the clear that
/// every new sequence makes, with `in_clear`); else returns logits of 1.0.
struct Panicky {
    panics: bool,
    in_clear: bool,
    clears: usize,
}

impl Stateful for Panicky {
    fn forward(&mut self, x: &Tensor, _offset: usize) -> candle_core::Result<Tensor> {
        if self.panics && !self.in_clear {
            self.panics = false;
            panic!("index out of bounds: the len is 3 but the index is 7");
        }
        Tensor::ones((x.dim(0)?, 1, 4), candle_core::DType::F32, &Device::Cpu)
    }
    fn clear(&mut self) {
        self.clears += 1;
        if self.panics && self.in_clear {
            self.panics = false;
            panic!("cleared while broken");
        }
    }
}

fn model(in_clear: bool) -> CandleTransformersModel {
    CandleTransformersModel {
        module: "panicky",
        inner: Mutex::new(Box::new(Panicky {
            panics: true,
            in_clear,
            clears: 0,
        })),
        vocab: 4,
        context: 16,
        layers: 1,
        device: Device::Cpu,
    }
}

#[test]
fn a_panic_in_forward_is_an_error_naming_the_module_and_the_next_pair_runs() {
    let m = model(false);
    {
        let mut seq = m.sequence(8).unwrap();
        let e = seq.forward(&[1, 2, 3], Rows::From(2)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("candle-transformers panicky panicked: index out of bounds"),
            "{text}"
        );
    }
    let mut seq = m.sequence(8).unwrap();
    let logits = seq.forward(&[1, 2, 3], Rows::From(2)).unwrap().unwrap();
    assert_eq!(logits.dims(), [1, 4]);
}

#[test]
fn a_poisoned_lock_is_recovered_and_the_model_cleared() {
    let m = model(true);
    // The clear of the first sequence panics with the lock held: the lock is poisoned.
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.sequence(8).is_ok()));
    assert!(first.is_err());
    assert!(m.inner.is_poisoned());
    let mut seq = m.sequence(8).unwrap();
    let logits = seq.forward(&[5], Rows::From(0)).unwrap().unwrap();
    assert_eq!(logits.dims(), [1, 4]);
    drop(seq);
    // A second live sequence is still refused (it would share the first one's cache).
    let _a = m.sequence(8).unwrap();
    assert!(m.sequence(8).is_err());
}

#[test]
fn a_panic_while_building_is_an_error() {
    // granite loads each layer with `.unwrap()` (granite.rs:451): a missing layer tensor
    // panics inside candle; it must come back as an error naming the module.
    let dt = candle_core::DType::F32;
    let t = |dims: &[usize]| Tensor::zeros(dims, dt, &Device::Cpu).unwrap();
    let tensors = [
        ("model.embed_tokens.weight", t(&[4, 8])),
        ("lm_head.weight", t(&[4, 8])),
        ("model.norm.weight", t(&[8])),
    ]
    .map(|(n, t)| (n.to_string(), t));
    let vb = candle_nn::VarBuilder::from_tensors(tensors.into_iter().collect(), dt, &Device::Cpu);
    let text = r#"{"hidden_size": 8, "intermediate_size": 16, "vocab_size": 4,
        "num_hidden_layers": 1, "num_attention_heads": 2, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 16}"#;
    let e = super::build(crate::model::family::CtModule::Granite, text, vb)
        .err()
        .expect("no tensors, no model");
    eprintln!("{e}");
    assert!(
        e.to_string()
            .contains("candle-transformers granite panicked while building"),
        "{e}"
    );
}
