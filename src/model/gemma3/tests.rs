//! The window convention (a query at p sees keys p - window < j <= p, so min(p + 1,
//! window) keys; transformers' `sliding_window_overlay` with `causal_mask_function`) on a
//! tiny random Gemma 3 with a window of 8, at window - 1, window and window + 1.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::{Config, LOCAL_ROPE_BASE};
use super::model::Model;
use crate::model::layers::causal_mask;
use crate::model::layers::sequence::OwnSequence;
use crate::model::under_test::{Fault, Probes, Rows, Sequence};

const W: usize = 8;

fn tiny(window: usize) -> Config {
    Config {
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        // Six layers: 0-4 local, 5 global.
        num_hidden_layers: 6,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 16,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_local_base_freq: LOCAL_ROPE_BASE,
        sliding_window: window,
        query_pre_attn_scalar: 16.0,
        max_position_embeddings: 64,
    }
}

fn model(window: usize) -> Model {
    let cfg = tiny(window);
    let dev = Device::Cpu;
    let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let mut t = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f32| {
        let x = if std == 0.0 {
            // Norm weights (already 1 + w): near 1.
            (Tensor::randn(0f32, 0.1, shape, &dev).unwrap() + 1.0).unwrap()
        } else {
            Tensor::randn(0f32, std, shape, &dev).unwrap()
        };
        t.insert(name, x);
    };
    put(
        "model.embed_tokens.weight".into(),
        &[cfg.vocab_size, h],
        0.5,
    );
    put("model.norm.weight".into(), &[h], 0.0);
    for l in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            put(p(&format!("{n}.weight")), &[h], 0.0);
        }
        put(p("self_attn.q_norm.weight"), &[d], 0.0);
        put(p("self_attn.k_norm.weight"), &[d], 0.0);
        put(p("self_attn.q_proj.weight"), &[2 * d, h], 0.3);
        put(p("self_attn.k_proj.weight"), &[d, h], 0.3);
        put(p("self_attn.v_proj.weight"), &[d, h], 0.3);
        put(p("self_attn.o_proj.weight"), &[h, 2 * d], 0.3);
        put(p("mlp.gate_proj.weight"), &[i, h], 0.3);
        put(p("mlp.up_proj.weight"), &[i, h], 0.3);
        put(p("mlp.down_proj.weight"), &[h, i], 0.3);
    }
    Model::new(&cfg, VarBuilder::from_tensors(t, DType::F32, &dev)).unwrap()
}

const TOKENS: [u32; 12] = [3, 17, 42, 5, 9, 61, 22, 8, 30, 11, 57, 2];

fn prefill(m: &Model) -> Vec<Vec<f32>> {
    let mut c = m.new_cache(TOKENS.len());
    m.forward(&TOKENS, &mut c).unwrap().to_vec2().unwrap()
}

fn decode(m: &Model, fault: Fault) -> Vec<Vec<f32>> {
    let mut seq = OwnSequence::new(m, TOKENS.len());
    *seq.probes().unwrap() = Probes { trace: None, fault };
    TOKENS
        .iter()
        .map(|&t| {
            let row = seq.forward(&[t], Rows::From(0)).unwrap().unwrap();
            row.squeeze(0).unwrap().to_vec1().unwrap()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_query_sees_min_of_p_plus_one_and_window_keys() {
    let mask = causal_mask(12, 0, Some(W), &Device::Cpu).unwrap();
    let mask: Vec<Vec<f32>> = mask.to_vec2().unwrap();
    for p in [W - 1, W, W + 1] {
        let seen: Vec<usize> = (0..12).filter(|&j| mask[p][j] == 0.0).collect();
        let first = (p + 1).saturating_sub(W);
        assert_eq!(seen, (first..=p).collect::<Vec<_>>(), "query at {p}");
        assert_eq!(seen.len(), (p + 1).min(W));
    }
    // A decode step at p (one row, cache of p keys before it) sees the same keys.
    for p in [W - 1, W, W + 1] {
        let row = causal_mask(1, p, Some(W), &Device::Cpu).unwrap();
        let row: Vec<f32> = row.squeeze(0).unwrap().to_vec1().unwrap();
        assert_eq!(row, mask[p][..=p], "decode step at {p}");
    }
}

#[test]
fn prefill_and_decode_agree_across_the_window_edge() {
    let m = model(W);
    let (pre, dec) = (prefill(&m), decode(&m, Fault::default()));
    for p in 0..TOKENS.len() {
        let d = max_diff(&pre[p], &dec[p]);
        assert!(d < 1e-5, "position {p}: prefill and decode differ by {d}");
    }
    // The window is applied at all: beyond it, a full-attention model (the same weights
    // with a window as long as the sequence) gives other logits, before it the same.
    let mut wide = m.clone();
    wide.cfg.sliding_window = TOKENS.len();
    let full = prefill(&wide);
    for p in 0..TOKENS.len() {
        let d = max_diff(&pre[p], &full[p]);
        if p < W {
            assert!(
                d < 1e-6,
                "position {p} is inside the window but differs by {d}"
            );
        } else {
            assert!(
                d > 1e-3,
                "position {p} is past the window but differs by only {d}"
            );
        }
    }
}

#[test]
fn a_window_one_key_too_wide_in_decode_diverges_exactly_from_the_edge() {
    // The negative control: decode's local layers see window + 1 keys. Up to position
    // window - 1 every query sees all its keys either way; from the edge on decode sees
    // one key more than prefill.
    let m = model(W);
    let pre = prefill(&m);
    let wide = decode(
        &m,
        Fault {
            window_shift: 1,
            ..Fault::default()
        },
    );
    for p in 0..TOKENS.len() {
        let d = max_diff(&pre[p], &wide[p]);
        if p < W {
            assert!(d < 1e-5, "position {p} differs by {d} before the edge");
        } else {
            assert!(
                d > 1e-3,
                "position {p}: the too-wide window went unseen ({d})"
            );
        }
    }
}
