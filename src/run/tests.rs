//! Unit tests of the runs: prefill against decode on the built-in model, per path.

use super::*;
use crate::config::DeviceSpec;
use crate::dtype::RunDtype;
use crate::model::ModelInfo;
use crate::model::ModelUnderTest;
use crate::path::RunPath;
use crate::trace::Injection;
use candle_core::Device;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn f32_decode_matches_prefill_in_both_kv_modes() {
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
    let p = prefill(&model, &tokens, 24, None).unwrap();
    assert_eq!(p.positions, 16);
    for kv in [true, false] {
        let d = decode(&model, &tokens, 24, kv, Instruments::default()).unwrap();
        let (pl, dl) = (p.host_logits().unwrap(), d.host_logits().unwrap());
        assert_eq!(d.logits.dims(), p.logits.dims());
        let diff = max_abs(&pl, &dl);
        assert!(diff < 1e-4, "kv_aligned={kv}: max |diff| {diff}");
        assert_eq!(d.forwards, if kv { 1 + 16 } else { 40 });
        assert_eq!(d.tokens_fed, if kv { 40 + 16 } else { 40 });
    }
    // Logits have a trained model's spread, not a toy's.
    let pl = p.host_logits().unwrap();
    let row = &pl[..info.sizes().vocab_size];
    let mean = row.iter().sum::<f32>() / row.len() as f32;
    let std = (row.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / row.len() as f32).sqrt();
    assert!(std > 1.0 && std < 20.0, "logit std {std}");
}

#[test]
fn aligned_decode_starts_from_prefills_own_cache() {
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| 5 + i * 11).collect();
    let mut full = model.new_cache(12);
    model.forward(&tokens, &mut full).unwrap();
    let kept = full.truncated(8, 12).unwrap();
    assert_eq!(kept.seq_len(), 8);
    assert!(full.truncated(13, 13).is_err());
    // Decoding token 8 from the kept cache equals prefill's row 8 to f32 rounding.
    let mut c = kept.clone();
    let row = model.forward(&tokens[8..9], &mut c).unwrap();
    let pre = prefill(&model, &tokens, 8, None).unwrap();
    let row: Vec<f32> = row.flatten_all().unwrap().to_vec1().unwrap();
    assert!(max_abs(&row, &pre.host_logits().unwrap()[..row.len()]) < 1e-4);
}

#[test]
fn honest_runs_stay_under_the_default_trace_thresholds_in_every_dtype() {
    use crate::trace::{TensorName, TraceSelection, analyze, default_nmse_threshold};
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let tokens: Vec<u32> = (0..48).map(|i| 3 + (i * 37) % 900).collect();
    let sel = TraceSelection {
        layers: None,
        tensors: TensorName::ALL.into_iter().collect(),
        positions: (0..48).collect(),
    };
    for dtype in [RunDtype::F32, RunDtype::F16, RunDtype::Bf16] {
        let model = info.load(dtype, &Device::Cpu).unwrap();
        let p = prefill(&model, &tokens, 16, Some(&sel)).unwrap();
        for kv in [true, false] {
            let inst = Instruments {
                trace: Some(&sel),
                ..Default::default()
            };
            let d = decode(&model, &tokens, 16, kv, inst).unwrap();
            let threshold = default_nmse_threshold(dtype);
            let t = analyze("x", "x", dtype, &p.trace, &d.trace, &tokens, threshold);
            assert_eq!(t.missing(), 0);
            // embed + 12 layers × 9 tensors + final_norm + logits at each of 48 positions.
            assert_eq!(t.compared(), 48 * (1 + 12 * 9 + 2));
            let worst = t.records.iter().filter_map(|r| r.nmse).fold(0.0, f64::max);
            assert_eq!(
                t.failed(),
                0,
                "{dtype} kv_aligned={kv}: worst nmse {worst:e}"
            );
            // Room to spare: honest drift stays well below the threshold.
            assert!(
                worst < threshold / 4.0,
                "{dtype} kv_aligned={kv}: worst nmse {worst:e}"
            );
        }
    }
}

#[test]
fn kv_cache_grows_one_position_per_decode_step() {
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
    let mut cache = model.new_cache(4);
    model.forward(&[5, 6, 7], &mut cache).unwrap();
    assert_eq!(cache.seq_len(), 3);
    for (i, tok) in [8u32, 9, 10, 11].iter().enumerate() {
        let out = model.forward(&[*tok], &mut cache).unwrap();
        assert_eq!(out.dims(), &[1, info.sizes().vocab_size]);
        assert_eq!(
            cache.seq_len(),
            4 + i,
            "grows past its preallocated capacity too"
        );
    }
}

#[test]
fn a_masked_future_token_does_not_change_earlier_logits() {
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
    let a = prefill(&model, &[1, 2, 3, 4, 5], 0, None).unwrap();
    let b = prefill(&model, &[1, 2, 3, 4, 99], 0, None).unwrap();
    let v = info.sizes().vocab_size;
    let (a, b) = (a.host_logits().unwrap(), b.host_logits().unwrap());
    assert!(max_abs(&a[..4 * v], &b[..4 * v]) < 1e-5);
    assert!(max_abs(&a[4 * v..], &b[4 * v..]) > 1e-3);
}

fn bits(out: &RunOutput) -> Vec<u32> {
    out.host_logits()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn path_run(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    kv: bool,
    path: RunPath,
    fault: Injection,
) -> RunOutput {
    let others: Vec<Vec<u32>> = (1..path.batch())
        .map(|r| {
            tokens
                .iter()
                .map(|t| (t * 7 + r as u32 * 13) % 900 + 3)
                .collect()
        })
        .collect();
    let inst = Instruments { trace: None, fault };
    under_test(model, tokens, 24, kv, path, &others, inst, None).unwrap()
}

#[test]
fn the_serving_paths_reduce_to_decode_and_prefill_at_their_ends() {
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
    for dtype in [RunDtype::F32, RunDtype::Bf16] {
        let model = info.load(dtype, &Device::Cpu).unwrap();
        let pre = bits(&prefill(&model, &tokens, 24, None).unwrap());
        let none = Injection::default();
        for kv in [false, true] {
            let dec = path_run(&model, &tokens, kv, RunPath::Decode, none);
            // Chunks of one token and a batch of one are decode, bit for bit.
            for p in [RunPath::Chunked(1), RunPath::Batched(1)] {
                let out = path_run(&model, &tokens, kv, p, none);
                assert_eq!(bits(&out), bits(&dec), "{dtype} kv={kv} {p}");
                assert_eq!(out.positions, 16);
            }
        }
        // One chunk holding the whole sequence, and a batch of one prefilled, are prefill.
        for p in [
            RunPath::Chunked(40),
            RunPath::Chunked(64),
            RunPath::BatchedPrefill(1),
        ] {
            let out = path_run(&model, &tokens, false, p, none);
            assert_eq!(bits(&out), pre, "{dtype} {p}");
        }
        // Chunks of 5 from position 0: 8 forwards, the span's rows from the last 4.
        let c5 = path_run(&model, &tokens, false, RunPath::Chunked(5), none);
        assert_eq!((c5.forwards, c5.tokens_fed), (8, 40));
        let b4 = path_run(&model, &tokens, true, RunPath::Batched(4), none);
        assert_eq!((b4.forwards, b4.tokens_fed), (4 + 16, 4 * 40 + 4 * 16));
        assert_eq!(b4.logits.dims(), &[16, info.sizes().vocab_size]);
    }
}

#[test]
fn a_batch_row_sees_only_its_own_sequence() {
    // Row 0's logits in a batch of 4 equal the sequence alone to f32 rounding: another
    // row's ids leak nowhere. With the cross-row fault they do, and only in a batch.
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
    let alone = path_run(
        &model,
        &tokens,
        false,
        RunPath::Decode,
        Injection::default(),
    );
    let leak = Injection {
        cross_row_cache: true,
        ..Default::default()
    };
    for p in [RunPath::Batched(4), RunPath::BatchedPrefill(4)] {
        let honest = path_run(&model, &tokens, false, p, Injection::default());
        let d = max_abs(
            &honest.host_logits().unwrap(),
            &alone.host_logits().unwrap(),
        );
        assert!(d < 1e-4, "{p}: {d}");
        let faulty = path_run(&model, &tokens, false, p, leak);
        let d = max_abs(
            &faulty.host_logits().unwrap(),
            &alone.host_logits().unwrap(),
        );
        assert!(d > 1e-2, "{p} with the cross-row fault: {d}");
    }
    for p in [RunPath::Batched(1), RunPath::BatchedPrefill(1)] {
        let one = path_run(&model, &tokens, false, p, leak);
        let honest = path_run(&model, &tokens, false, p, Injection::default());
        assert_eq!(
            bits(&one),
            bits(&honest),
            "{p}: a batch of one has no other row"
        );
    }
}

#[test]
fn the_chunk_fault_acts_on_later_chunks_only() {
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let model = info
        .sized_for(41)
        .load(RunDtype::F32, &Device::Cpu)
        .unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
    let shift = Injection {
        chunk_position_shift: 1,
        ..Default::default()
    };
    let none = Injection::default();
    // Decode (single tokens) and a single chunk from position 0 cannot show it.
    for p in [RunPath::Decode, RunPath::Chunked(1), RunPath::Chunked(64)] {
        let a = path_run(&model, &tokens, false, p, shift);
        let b = path_run(&model, &tokens, false, p, none);
        assert_eq!(bits(&a), bits(&b), "{p}");
    }
    let a = path_run(&model, &tokens, false, RunPath::Chunked(8), shift);
    let b = path_run(&model, &tokens, false, RunPath::Chunked(8), none);
    let d = max_abs(&a.host_logits().unwrap(), &b.host_logits().unwrap());
    assert!(d > 1e-2, "chunk 8 with the fault: {d}");
}

#[test]
fn unbuilt_devices_say_why() {
    if !candle_core::utils::cuda_is_available() {
        let e = open_device(DeviceSpec::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("without the `cuda` feature"), "{e}");
        assert_eq!(open_device(DeviceSpec::Auto).unwrap().id, "cpu");
    }
    let cpu = open_device(DeviceSpec::Cpu).unwrap();
    assert_eq!(cpu.id, "cpu");
    assert!(cpu.name.contains("threads"), "{}", cpu.name);
}

#[test]
fn a_kv_aligned_run_starts_from_prefills_kept_cache_with_the_same_bits() {
    // The prefill run keeps its prompt cache; a kv_aligned decode or chunked run that starts
    // from it skips its own prompt + span forward and gives the bits of the run that makes it.
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
    let none = Instruments::default();
    for dtype in [RunDtype::F32, RunDtype::Bf16] {
        let model = info.load(dtype, &Device::Cpu).unwrap();
        let pre = prefill(&model, &tokens, 24, None).unwrap();
        let kept = pre
            .kept
            .as_ref()
            .expect("an untraced prefill keeps its prompt cache");
        assert_eq!(kept.tokens(), &tokens[..24]);
        for path in [RunPath::Decode, RunPath::Chunked(5)] {
            let computed = under_test(&model, &tokens, 24, true, path, &[], none, None).unwrap();
            let resumed =
                under_test(&model, &tokens, 24, true, path, &[], none, Some(kept)).unwrap();
            assert_eq!(bits(&resumed), bits(&computed), "{dtype} {path}");
            // Only the span is fed: the prompt + span forward is not made again.
            assert_eq!(
                computed.tokens_fed - resumed.tokens_fed,
                40,
                "{dtype} {path}"
            );
            // kv_aligned = false starts from position 0 whatever is kept.
            let from_zero =
                under_test(&model, &tokens, 24, false, path, &[], none, Some(kept)).unwrap();
            assert_eq!(from_zero.tokens_fed, 40, "{dtype} {path}");
        }
    }
}

#[test]
fn a_kept_cache_of_other_tokens_or_another_model_is_not_used() {
    let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
    let mut other = tokens.clone();
    other[3] += 1;
    let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
    let twin = info.load(RunDtype::F32, &Device::Cpu).unwrap();
    let none = Instruments::default();
    let computed = decode(&model, &tokens, 24, true, none).unwrap();
    // Another prompt's cache: the run computes its own (it feeds prompt + span, then the span).
    let foreign = prefill(&model, &other, 24, None).unwrap();
    let run = |m: &dyn ModelUnderTest, kept| {
        under_test(m, &tokens, 24, true, RunPath::Decode, &[], none, kept).unwrap()
    };
    let out = run(&model, foreign.kept.as_ref());
    assert_eq!(out.tokens_fed, 40 + 16);
    assert_eq!(bits(&out), bits(&computed));
    // Another loaded model's cache of the same tokens: not resumed either.
    let twin_pre = prefill(&twin, &tokens, 24, None).unwrap();
    assert_eq!(run(&model, twin_pre.kept.as_ref()).tokens_fed, 40 + 16);
    // Negative control: the right cache is used, and a traced prefill keeps none.
    let own = prefill(&model, &tokens, 24, None).unwrap();
    assert_eq!(run(&model, own.kept.as_ref()).tokens_fed, 16);
    let sel = crate::trace::TraceSelection::default();
    assert!(
        prefill(&model, &tokens, 24, Some(&sel))
            .unwrap()
            .kept
            .is_none()
    );
}
