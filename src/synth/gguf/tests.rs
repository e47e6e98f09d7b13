//! Synthetic GGUF files load into candle-transformers' quantized modules and the own decoder:
//! each module runs a prefill and a decode of the same ids with finite logits of the
//! vocabulary's width (their gap is printed, a finding, not asserted); the llama file read
//! by the own decoder equals the safetensors checkpoint (names and Q/K permutation right).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::*;
use crate::config::SynthSpec;
use crate::model::candle_transformers::{self as ctm, Stateful};
use crate::model::family::{CtModule, CtWeights, Family};
use crate::model::layers::Source;
use crate::model::{Architecture, Rows, gguf as model_gguf};
use crate::synth::weights;

/// A small spec of `architecture`.
fn spec(architecture: &str) -> SynthSpec {
    serde_yaml::from_str(&format!("architecture: {architecture}")).unwrap()
}

/// The checkpoint of `spec` for `arch`, also where `model_type` alone does not resolve the
/// architecture (Gemma 3 is not read from Hugging Face directories by the own decoders).
fn checkpoint_of(arch: Architecture, spec: &SynthSpec) -> Checkpoint {
    let config = crate::synth::arch::config_json(arch, spec).unwrap();
    let module = arch.ct_module(CtWeights::Safetensors).unwrap();
    let text = config.to_string();
    let tied = config["tie_word_embeddings"].as_bool().unwrap_or(false);
    let absent = if tied {
        vec!["lm_head.weight".into()]
    } else {
        vec![]
    };
    let tensors = weights::record(spec.seed, absent, |vb| {
        ctm::build(module, &text, vb)
            .map(|_| ())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    })
    .unwrap();
    Checkpoint {
        architecture: arch,
        config,
        tensors,
    }
}

/// Logits as f32, the last row where a module returns every row.
fn last_row(t: Tensor, vocab: usize) -> Vec<f32> {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[v.len() - vocab..].to_vec()
}

/// (prefill's last-row logits, the last decode step's) of `ids` on `m`.
fn prefill_and_decode(
    m: &mut Box<dyn Stateful>,
    ids: &[u32],
    vocab: usize,
) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let pre = m.forward(&x, 0)?;
    assert!(
        pre.elem_count() == vocab || pre.elem_count() == ids.len() * vocab,
        "{:?}",
        pre.shape()
    );
    let pre = last_row(pre, vocab);
    m.clear();
    let mut dec = vec![];
    for (i, &t) in ids.iter().enumerate() {
        let x = Tensor::new(&[t], &Device::Cpu)?.unsqueeze(0)?;
        dec = last_row(m.forward(&x, i)?, vocab);
    }
    Ok((pre, dec))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Writes `c` as each GGUF format, runs `module` on it over `n` ids twice (prefill, then
/// decode after a clear), asserts finite logits of the vocabulary's width, prints the gap.
/// `Err` carries the module's error text (a finding) for the caller to assert.
fn run_module(c: &Checkpoint, module: CtModule, n: usize) -> Result<(), String> {
    let arch = c.architecture.gguf_name().unwrap();
    run_encoded(arch, &c.config, &c.tensors, module, n)
}

/// [`run_module`] on a checkpoint given as parts, written as llama.cpp's `arch`.
pub(super) fn run_encoded(
    arch: &str,
    config: &serde_json::Value,
    tensors: &BTreeMap<String, Tensor>,
    module: CtModule,
    n: usize,
) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    let ids: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 5) % vocab as u32).collect();
    for format in [SynthFormat::GgufF32, SynthFormat::GgufQ8_0] {
        let path = dir.path().join(format!("{format:?}.gguf"));
        std::fs::write(&path, encode(arch, config, tensors, format).unwrap()).unwrap();
        let mut m = ctm::load_quantized(&path, module, &Device::Cpu).map_err(|e| e.to_string())?;
        let (pre, dec) = prefill_and_decode(&mut m, &ids, vocab).map_err(|e| e.to_string())?;
        assert_eq!((pre.len(), dec.len()), (vocab, vocab));
        assert!(pre.iter().chain(&dec).all(|v| v.is_finite()));
        // A second sequence on the same model must start from an empty cache.
        m.clear();
        let (again, _) = prefill_and_decode(&mut m, &ids, vocab).map_err(|e| e.to_string())?;
        let gap = max_diff(&pre, &again);
        eprintln!(
            "FINDING {} {format:?} {n} tokens: max |prefill - decode| = {:.3e} (repeat \
             prefill gap {gap:.1e})",
            module.as_str(),
            max_diff(&pre, &dec)
        );
        assert!(
            gap < 1e-5,
            "{}: clear() leaves state behind ({gap})",
            module.as_str()
        );
    }
    Ok(())
}

#[test]
fn quantized_llama_runs_on_a_synthetic_llama_gguf() {
    let c = crate::synth::checkpoint(&spec("llama")).unwrap();
    run_module(&c, CtModule::QuantizedLlama, 12).unwrap();
}

#[test]
fn a_mistral_gguf_runs_in_quantized_llama_and_quantized_mistral() {
    let c = crate::synth::checkpoint(&spec("mistral")).unwrap();
    run_module(&c, CtModule::QuantizedLlama, 12).unwrap();
    run_module(&c, CtModule::QuantizedMistral, 12).unwrap();
    let mut s = spec("mistral");
    s.sliding_window = Some(8);
    let c = crate::synth::checkpoint(&s).unwrap();
    run_module(&c, CtModule::QuantizedLlama, 24).unwrap();
    run_module(&c, CtModule::QuantizedMistral, 24).unwrap();
}

#[test]
fn quantized_qwen2_runs_on_a_synthetic_qwen2_gguf() {
    let c = crate::synth::checkpoint(&spec("qwen2")).unwrap();
    assert!(
        c.tensors
            .contains_key("model.layers.0.self_attn.q_proj.bias")
    );
    run_module(&c, CtModule::QuantizedQwen2, 12).unwrap();
    let mut s = spec("qwen2");
    s.sliding_window = Some(8);
    let c = crate::synth::checkpoint(&s).unwrap();
    run_module(&c, CtModule::QuantizedQwen2, 24).unwrap();
}

#[test]
fn quantized_qwen3_runs_on_a_synthetic_qwen3_gguf() {
    let c = crate::synth::checkpoint(&spec("qwen3")).unwrap();
    assert!(
        c.tensors
            .contains_key("model.layers.0.self_attn.q_norm.weight")
    );
    run_module(&c, CtModule::QuantizedQwen3, 12).unwrap();
}

#[test]
fn quantized_gemma3_runs_on_a_synthetic_gemma3_gguf() {
    let c = checkpoint_of(Architecture::Gemma3, &spec("gemma3"));
    assert!(!c.tensors.is_empty());
    run_module(&c, CtModule::QuantizedGemma3, 12).unwrap();
    let mut s = spec("gemma3");
    s.sliding_window = Some(8);
    let c = checkpoint_of(Architecture::Gemma3, &s);
    run_module(&c, CtModule::QuantizedGemma3, 24).unwrap();
}

#[test]
fn the_same_spec_gives_the_same_gguf_bytes_and_q4_k_needs_wide_rows() {
    let c = crate::synth::checkpoint(&spec("llama")).unwrap();
    let d = crate::synth::checkpoint(&spec("llama")).unwrap();
    for f in [SynthFormat::GgufF32, SynthFormat::GgufQ8_0] {
        assert_eq!(bytes(&c, f).unwrap(), bytes(&d, f).unwrap(), "{f:?}");
    }
    let mut s = spec("llama");
    s.seed = 1;
    let other = crate::synth::checkpoint(&s).unwrap();
    assert_ne!(
        bytes(&c, SynthFormat::GgufF32).unwrap(),
        bytes(&other, SynthFormat::GgufF32).unwrap()
    );
    let e = bytes(&c, SynthFormat::GgufQ4K).unwrap_err();
    assert!(e.contains("hidden_size = 64") && e.contains("256"), "{e}");
    assert!(bytes(&c, SynthFormat::Safetensors).is_err());
    // Rows of 256 quantize to Q4_K, and the file runs.
    let mut s = spec("llama");
    (s.hidden_size, s.intermediate_size) = (256, 512);
    let c = crate::synth::checkpoint(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q4k.gguf");
    write(&c, SynthFormat::GgufQ4K, &path).unwrap();
    let mut m = ctm::load_quantized(&path, CtModule::QuantizedLlama, &Device::Cpu).unwrap();
    let (pre, dec) = prefill_and_decode(&mut m, &[3, 4, 5, 6], 256).unwrap();
    assert!(pre.iter().chain(&dec).all(|v| v.is_finite()));
    eprintln!(
        "FINDING quantized_llama GgufQ4K 4 tokens: max |prefill - decode| = {:.3e}",
        max_diff(&pre, &dec)
    );
}

/// Every row of a prefill of `ids` by the own decoder of `family` over `vb`.
fn own_prefill(family: &Family, vb: VarBuilder<'static>, ids: &[u32]) -> Vec<f32> {
    let m = family.load_own(Source::dense(vb)).unwrap();
    let mut s = m.sequence(ids.len()).unwrap();
    let t = s.forward(ids, Rows::From(0)).unwrap().unwrap();
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn the_own_decoder_reads_the_llama_gguf_as_the_safetensors_checkpoint() {
    let mut s = spec("llama");
    s.kv_heads = Some(2);
    let c = crate::synth::checkpoint(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama.gguf");
    write(&c, SynthFormat::GgufF32, &path).unwrap();
    let info = model_gguf::inspect(&path).unwrap();
    assert_eq!(info.architecture, Architecture::Llama);
    let layout = info.family.gguf_layout().unwrap();
    let from_gguf = model_gguf::var_builder(&path, layout, DType::F32, &Device::Cpu).unwrap();
    let from_st = VarBuilder::from_tensors(
        c.tensors.clone().into_iter().collect(),
        DType::F32,
        &Device::Cpu,
    );
    let ids = [1u32, 40, 41, 42, 43, 44, 45];
    let a = own_prefill(&info.family, from_gguf, &ids);
    let b = own_prefill(&info.family, from_st, &ids);
    assert_eq!(a.len(), ids.len() * 256);
    let d = max_diff(&a, &b);
    assert!(d < 1e-4, "GGUF and safetensors differ by {d}");
}

#[test]
fn gguf_files_without_an_own_decoder_inspect_as_foreign_with_their_sizes() {
    let c = crate::synth::checkpoint(&spec("qwen2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen2.gguf");
    write(&c, SynthFormat::GgufQ8_0, &path).unwrap();
    let info = model_gguf::inspect(&path).unwrap();
    assert_eq!(info.architecture, Architecture::Qwen2);
    let Family::Foreign(f) = &info.family else {
        panic!("{}", info.family.name());
    };
    assert_eq!(
        (f.sizes.vocab_size, f.sizes.num_layers, f.sizes.context_len),
        (256, 2, 512)
    );
    assert_eq!(info.tokenizer.get_vocab_size(true), 256);
    let ids = info.tokenizer.encode("hi!", false).unwrap();
    assert_eq!(ids.get_ids(), &[b'h' as u32, b'i' as u32, b'!' as u32]);
}

#[test]
fn a_sweep_loads_synthetic_gguf_files_into_their_quantized_module() {
    use crate::dtype::RunDtype;
    use crate::engine::WeightFormat;
    use crate::model::{ModelUnderTest, Weights};
    let dir = tempfile::tempdir().unwrap();
    for (arch, module) in [
        ("llama", "quantized_llama"),
        ("qwen2", "quantized_qwen2"),
        ("qwen3", "quantized_qwen3"),
    ] {
        let c = crate::synth::checkpoint(&spec(arch)).unwrap();
        let path = dir.path().join(format!("{arch}.gguf"));
        write(&c, SynthFormat::GgufQ8_0, &path).unwrap();
        let info = model_gguf::inspect(&path).unwrap();
        let weights = Weights::Gguf(path.clone());
        let target = ctm::Target {
            architecture: info.architecture,
            weights: &weights,
            family: &info.family,
            bos_id: info.bos_id,
            eos_id: info.eos_id,
        };
        let m = ctm::load(
            &target,
            WeightFormat::Quantized,
            RunDtype::F32,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            m.implementation(),
            format!("candle_transformers::models::{module}")
        );
        assert_eq!((m.vocab_size(), m.num_layers()), (256, 2));
        let mut s = m.sequence(8).unwrap();
        let t = s.forward(&[5, 6, 7, 8], Rows::From(3)).unwrap().unwrap();
        assert_eq!(t.dims(), &[1, 256]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{arch}");
    }
}
