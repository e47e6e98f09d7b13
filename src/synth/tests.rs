//! Synthetic checkpoints run: each architecture's checkpoint loads into its module, and a
//! prefill and a decode of the same tokens both give finite logits of the vocabulary's width.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::*;
use crate::model::candle_transformers;
use crate::model::family::CtWeights;

/// A small spec of `architecture` with everything else at its default.
pub(crate) fn spec(architecture: &str) -> SynthSpec {
    serde_yaml::from_str(&format!("architecture: {architecture}")).unwrap()
}

/// Builds `c`'s module on its own tensors and returns (last-row logits of a prefill of
/// `ids`, logits of decoding `ids` one by one, at the last step).
pub(crate) fn prefill_and_decode(c: &Checkpoint, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let module = c.architecture.ct_module(CtWeights::Safetensors).unwrap();
    let vb = VarBuilder::from_tensors(
        c.tensors.clone().into_iter().collect(),
        DType::F32,
        &Device::Cpu,
    );
    let mut m = candle_transformers::build(module, &c.config.to_string(), vb).unwrap();
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let pre = m
        .forward(&x, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    m.clear();
    let mut dec = vec![];
    for (i, &t) in ids.iter().enumerate() {
        let x = Tensor::new(&[t], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        dec = m
            .forward(&x, i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
    }
    (pre, dec)
}

#[test]
fn a_synthetic_llama_runs_in_candle_transformers() {
    let c = checkpoint(&spec("llama")).unwrap();
    assert!(c.tensors.contains_key("model.embed_tokens.weight"));
    assert!(c.tensors.contains_key("lm_head.weight"));
    let (pre, dec) = prefill_and_decode(&c, &[1, 40, 41, 42, 43, 44]);
    assert_eq!(pre.len(), 256);
    assert!(pre.iter().chain(&dec).all(|v| v.is_finite()));
    let max = pre
        .iter()
        .zip(&dec)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max < 1e-3,
        "prefill and decode of a small f32 llama differ by {max}"
    );
}

#[test]
fn the_same_spec_gives_the_same_tensors_and_an_unknown_field_is_refused() {
    let a = checkpoint(&spec("llama")).unwrap();
    let b = checkpoint(&spec("llama")).unwrap();
    for (n, t) in &a.tensors {
        let d = (t - &b.tensors[n])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{n}");
    }
    let mut s = spec("llama");
    s.config
        .insert("no_such_field".into(), serde_json::json!(1));
    assert!(checkpoint(&s).unwrap_err().contains("config.no_such_field"));
    let mut s = spec("llama");
    s.experts = Some(4);
    assert!(checkpoint(&s).unwrap_err().contains("`experts`"));
}

/// Logits' spread at a few positions of `c` on seeded token ids: (std across the vocabulary,
/// softmax probability of the top token), one per position.
pub(crate) fn logit_spread(c: &Checkpoint) -> Vec<(f32, f32)> {
    let vocab = c.config["vocab_size"].as_u64().unwrap() as u32;
    let ids: Vec<u32> = (0..48u32).map(|i| (i * 37 + 11) % vocab).collect();
    [4, 12, 24, 48]
        .iter()
        .map(|&n| {
            let (pre, _) = prefill_and_decode(c, &ids[..n]);
            let mean = pre.iter().sum::<f32>() / pre.len() as f32;
            let var = pre.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / pre.len() as f32;
            let max = pre.iter().copied().fold(f32::MIN, f32::max);
            let z: f32 = pre.iter().map(|v| (v - max).exp()).sum();
            (var.sqrt(), 1.0 / z)
        })
        .collect()
}

#[test]
fn synthetic_logits_spread_like_a_trained_models() {
    let mut tied = spec("llama");
    tied.tie_embeddings = Some(true);
    tied.vocab_size = 2048;
    tied.hidden_size = 128;
    let specs = ["llama", "mistral", "qwen2", "gemma3"]
        .map(spec)
        .into_iter()
        .chain([tied]);
    for s in specs {
        let arch = s.architecture.clone();
        let c = match checkpoint(&s) {
            Ok(c) => c,
            // Architectures this build has no synthetic checkpoints of yet.
            Err(e) if e.contains("no synthetic checkpoints") || e.contains("not supported") => {
                continue;
            }
            Err(e) => panic!("{arch}: {e}"),
        };
        let s = logit_spread(&c);
        eprintln!("{arch}: (std, top-1 p) per position {s:?}");
        let mut p: Vec<f32> = s.iter().map(|x| x.1).collect();
        p.sort_by(f32::total_cmp);
        let median = (p[1] + p[2]) / 2.0;
        assert!(
            s.iter().all(|x| (1.5..=5.0).contains(&x.0)),
            "{arch}: logits std {s:?} outside 1.5–5 (trained models: about 2–4)"
        );
        assert!(
            (0.05..=0.9).contains(&median),
            "{arch}: median top-1 probability {median} outside 0.05–0.9"
        );
    }
}

#[test]
fn the_cache_writes_once_reuses_and_rewrites_a_changed_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let a: SynthSpec = serde_yaml::from_str("architecture: llama\nlayers: 1\nseed: 2").unwrap();
    let b: SynthSpec = serde_yaml::from_str("seed: 2\nlayers: 1\narchitecture: llama").unwrap();
    assert_eq!(
        cache::key(&a),
        cache::key(&b),
        "the key is the spec's, not its text's"
    );
    let first = cache::materialize(&a, tmp.path()).unwrap();
    let weights = first.dir.join("model.safetensors");
    let written = std::fs::metadata(&weights).unwrap().modified().unwrap();
    let again = cache::materialize(&b, tmp.path()).unwrap();
    assert_eq!(again.dir, first.dir);
    assert_eq!(
        std::fs::metadata(&weights).unwrap().modified().unwrap(),
        written
    );
    // A changed file no longer matches its manifest: the checkpoint is made again.
    let good = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, b"garbage").unwrap();
    assert!(
        files::verify(&first.dir, &a)
            .unwrap_err()
            .contains("changed")
    );
    cache::materialize(&a, tmp.path()).unwrap();
    assert_eq!(std::fs::read(&weights).unwrap(), good);
    // Nothing but the checkpoint is left beside it (no temporaries).
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn spec_checks_name_their_field() {
    let field = |yaml: &str| {
        let s: SynthSpec = serde_yaml::from_str(yaml).unwrap();
        check::check(&s).unwrap_err().field
    };
    assert_eq!(
        field("architecture: llama\nheads: 4\nkv_heads: 3"),
        "kv_heads"
    );
    assert_eq!(
        field("architecture: llama\nhidden_size: 30\nheads: 4"),
        "heads"
    );
    assert_eq!(
        field("architecture: llama\nexperts_per_token: 2"),
        "experts_per_token"
    );
    assert_eq!(field("architecture: llama\nlayers: 100000"), "layers");
    assert_eq!(field("architecture: llama\ncontext: 1000000000"), "context");
    assert_eq!(field("architecture: llama\nrope_theta: -1"), "rope_theta");
    assert_eq!(
        field("architecture: llama\nbias: true\nqk_norm: true"),
        "qk_norm"
    );
    assert_eq!(field("architecture: gpt9"), "architecture");
    let ok: SynthSpec = serde_yaml::from_str("architecture: llama\nbias: true").unwrap();
    assert!(check::check(&ok).is_ok());
}

/// `n` token ids spread over a 256-wide vocabulary.
pub(crate) fn ids(n: usize) -> Vec<u32> {
    (0..n).map(|i| 1 + (i as u32 * 37) % 250).collect()
}

/// Runs `s`'s checkpoint on `n` tokens, checks both paths, prints and returns the max
/// |prefill - decode| at the last position.
pub(crate) fn runs(s: &SynthSpec, n: usize) -> f32 {
    let c = checkpoint(s).unwrap_or_else(|e| panic!("{}: {e}", s.architecture));
    assert!(!c.tensors.is_empty(), "{}: no tensors", s.architecture);
    let (pre, dec) = prefill_and_decode(&c, &ids(n));
    assert_eq!(pre.len(), s.vocab_size, "{}: prefill width", s.architecture);
    assert_eq!(dec.len(), s.vocab_size, "{}: decode width", s.architecture);
    assert!(
        pre.iter().chain(&dec).all(|v| v.is_finite()),
        "{}: non-finite logits",
        s.architecture
    );
    let max = pre
        .iter()
        .zip(&dec)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let window = s
        .sliding_window
        .map(|w| format!(" window {w}"))
        .unwrap_or_default();
    eprintln!(
        "ct-drift {}{window} ({} tokens, f32): max |prefill - decode| = {max:e}",
        s.architecture, n
    );
    max
}
