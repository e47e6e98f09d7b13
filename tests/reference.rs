//! driftsweep's own decoder against an independent float64 reference (scripts/reference/,
//! numpy and the `gguf` package, no code shared with the Rust decoder): the f32 prefill logits
//! at 640 positions of SmolLM2-135M (the Llama decoder) and, when its file is there, of Gemma 3
//! 270M (src/model/gemma3/; past the sliding window of 512).
//!
//! The bounds come from float32 rounding, not from this decoder's own results: the reference
//! also runs its float32 rounding-error model (scripts/reference/common.py, `F32Noise`: every
//! stored activation rounded to f32, every length-n dot product or sum off by a uniform
//! [-1, 1] · √n · u · Σ|aᵢbᵢ|, u = 2⁻²⁴) with two seeds, and the decoder may drift from the
//! exact logits at most twice as far as that model does (the project's "twice the worst
//! honest drift" rule, docs/design.md, "Verdicts"), in max |diff| and in p99 |diff|; a top-1
//! disagreement is allowed only where the reference's two best logits are closer than twice
//! that max bound (a near-tie either side of the rounding can flip).
//!
//! Needs python3 with numpy and gguf (`bash scripts/reference/setup.sh` makes
//! `.reference-venv/`, which this test uses first; `DRIFTSWEEP_REFERENCE_PYTHON` names another
//! interpreter). Without them the test prints why and passes; `DRIFTSWEEP_REQUIRE_REFERENCE=1`
//! (CI) makes that a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use driftsweep::dtype::RunDtype;
use driftsweep::model::{ModelInfo, ModelUnderTest, Rows};
use sha2::{Digest, Sha256};

const POSITIONS: usize = 640;
const SEED: u64 = 16;
const NOISE_SEEDS: [u64; 2] = [1, 2];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A python3 that imports numpy and gguf, or why there is none.
fn python() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = match std::env::var_os("DRIFTSWEEP_REFERENCE_PYTHON") {
        Some(p) => vec![p.into()],
        None => vec![root().join(".reference-venv/bin/python"), "python3".into()],
    };
    for p in candidates {
        let ok = Command::new(&p)
            .args(["-c", "import numpy, gguf"])
            .output()
            .map(|o| o.status.success());
        match ok {
            Ok(true) => return Ok(p),
            Ok(false) => tried.push(format!("{} lacks numpy or gguf", p.display())),
            Err(e) => tried.push(format!("{}: {e}", p.display())),
        }
    }
    Err(format!(
        "no python with numpy and gguf ({}); run `bash scripts/reference/setup.sh`",
        tried.join("; ")
    ))
}

fn smollm2() -> PathBuf {
    let p = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run `bash scripts/fetch_smollm2.sh` from the repository root",
        p.display()
    );
    p
}

/// Uniform token ids from a fixed seed (splitmix64), the same on every machine.
fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z % vocab as u64) as u32
        })
        .collect()
}

/// Runs scripts/reference/forward.py; returns its (positions, vocab) logits.
fn reference(py: &Path, model: &Path, ids: &Path, out: &Path, extra: &[&str]) -> Tensor {
    let o = Command::new(py)
        .arg(root().join("scripts/reference/forward.py"))
        .arg(model)
        .arg(ids)
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the reference failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Tensor::read_npy(out).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

/// |a - b| for every entry.
fn abs_diffs(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .collect()
}

/// (max, p99) of non-negative values.
fn max_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).min(v.len()) - 1];
    (*v.last().unwrap(), p99)
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// The gap between the two largest values.
fn margin(v: &[f64]) -> f64 {
    let top = argmax(v);
    let second = (0..v.len())
        .filter(|&i| i != top)
        .map(|i| v[i])
        .fold(f64::NEG_INFINITY, f64::max);
    v[top] - second
}

/// sha256 of every tensor's f32 values as candle dequantizes them (what the decoder loads).
fn candle_digests(path: &Path) -> HashMap<String, String> {
    let mut f = std::fs::File::open(path).unwrap();
    let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut out = HashMap::new();
    for name in c.tensor_infos.keys() {
        let t = c
            .tensor(&mut f, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let mut h = Sha256::new();
        for x in v {
            h.update(x.to_le_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        out.insert(name.clone(), hex);
    }
    out
}

/// A python with numpy and gguf, or `None` after saying why the test skips (a failure when
/// DRIFTSWEEP_REQUIRE_REFERENCE is set).
fn python_or_skip(test: &str) -> Option<PathBuf> {
    match python() {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                std::env::var_os("DRIFTSWEEP_REQUIRE_REFERENCE").is_none(),
                "DRIFTSWEEP_REQUIRE_REFERENCE is set but {why}"
            );
            println!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// How the decoder's logits compare with the exact reference, and the rounding model's.
struct Figures {
    max: f64,
    p99: f64,
    agree: usize,
    positions: usize,
    max_model: f64,
    p99_model: f64,
    /// Positions whose top-1 differs although the reference's margin exceeds the max bound.
    wide_flips: Vec<(usize, f64)>,
    scale: f64,
}

/// Runs the reference (exact, with digests; then the rounding model for each seed) beside
/// `ours` (named logits of the decoder: prefill, decode, ...), checks that candle and gguf
/// dequantize every tensor to the same f32 bits, and compares each with the exact logits.
fn against_reference(
    py: &Path,
    model: &Path,
    ids: &[u32],
    ours: impl FnOnce() -> Vec<(&'static str, Vec<Vec<f64>>)>,
) -> Vec<(&'static str, Figures)> {
    let tmp = tempfile::tempdir().unwrap();
    let ids_file = tmp.path().join("ids.txt");
    let text: Vec<String> = ids.iter().map(u32::to_string).collect();
    std::fs::write(&ids_file, text.join(" ")).unwrap();
    let digests = tmp.path().join("digests.txt");
    // Two python processes at a time (the exact run, then the rounding models one by one),
    // beside the decoder's own work.
    let (exact, noisy, ours) = std::thread::scope(|s| {
        let exact = s.spawn(|| {
            let out = tmp.path().join("exact.npy");
            let d = digests.to_string_lossy().into_owned();
            rows(&reference(py, model, &ids_file, &out, &["--digests", &d]))
        });
        let noisy = s.spawn(|| {
            NOISE_SEEDS
                .iter()
                .map(|&seed| {
                    let out = tmp.path().join(format!("noise{seed}.npy"));
                    let seed = seed.to_string();
                    rows(&reference(
                        py,
                        model,
                        &ids_file,
                        &out,
                        &["--f32-noise", &seed],
                    ))
                })
                .collect::<Vec<_>>()
        });
        let ours = ours();
        (exact.join().unwrap(), noisy.join().unwrap(), ours)
    });
    let theirs = candle_digests(model);
    let listed = std::fs::read_to_string(&digests).unwrap();
    let mut same = 0;
    for line in listed.lines() {
        let (name, hex) = line.split_once(' ').unwrap();
        assert_eq!(
            theirs.get(name).map(String::as_str),
            Some(hex),
            "tensor {name}: candle and gguf dequantize it to different f32 values"
        );
        same += 1;
    }
    assert_eq!(
        same,
        theirs.len(),
        "the reference saw other tensors than candle"
    );
    assert_eq!(exact.len(), ids.len());
    let mut max_model = 0f64;
    let mut p99_model = 0f64;
    for n in &noisy {
        let (m, p) = max_p99(abs_diffs(n, &exact));
        max_model = max_model.max(m);
        p99_model = p99_model.max(p);
    }
    let scale = exact.iter().flatten().fold(0f64, |m, x| m.max(x.abs()));
    ours.into_iter()
        .map(|(name, ours)| {
            assert_eq!(ours.len(), ids.len(), "{name}");
            assert_eq!(ours[0].len(), exact[0].len(), "{name}");
            let (max, p99) = max_p99(abs_diffs(&ours, &exact));
            let mut agree = 0;
            let mut wide_flips = Vec::new();
            for (pos, (o, e)) in ours.iter().zip(&exact).enumerate() {
                if argmax(o) == argmax(e) {
                    agree += 1;
                } else if margin(e) > 2.0 * max_model {
                    wide_flips.push((pos, margin(e)));
                }
            }
            let f = Figures {
                max,
                p99,
                agree,
                positions: ids.len(),
                max_model,
                p99_model,
                wide_flips,
                scale,
            };
            (name, f)
        })
        .collect()
}

/// Prints the figures and asserts the bounds of the module notes.
fn assert_within_rounding(what: &str, f: &Figures) {
    let (max_bound, p99_bound) = (2.0 * f.max_model, 2.0 * f.p99_model);
    println!(
        "{what}: max |diff| {:.3e}, p99 |diff| {:.3e}, top-1 agreement {}/{} ({:.4}); f32 \
         rounding model: max {:.3e}, p99 {:.3e}; bounds max {max_bound:.3e}, p99 \
         {p99_bound:.3e}; max |logit| {:.2}",
        f.max,
        f.p99,
        f.agree,
        f.positions,
        f.agree as f64 / f.positions as f64,
        f.max_model,
        f.p99_model,
        f.scale
    );
    assert!(
        f.max <= max_bound,
        "max |diff| {:e} exceeds twice the f32 rounding model's {:e}",
        f.max,
        f.max_model
    );
    assert!(
        f.p99 <= p99_bound,
        "p99 |diff| {:e} exceeds twice the f32 rounding model's {:e}",
        f.p99,
        f.p99_model
    );
    assert!(
        f.wide_flips.is_empty(),
        "top-1 differs where the reference's margin exceeds {max_bound:e}: {:?}",
        f.wide_flips
    );
}

#[test]
fn smollm2_f32_prefill_matches_the_float64_reference() {
    let Some(py) = python_or_skip("smollm2_f32_prefill_matches_the_float64_reference") else {
        return;
    };
    let path = smollm2();
    let info = ModelInfo::inspect(&path.to_string_lossy()).unwrap();
    let ids = random_ids(POSITIONS, info.sizes().vocab_size, SEED);
    let figures = against_reference(&py, &path, &ids, || {
        let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let mut seq = model.sequence(ids.len()).unwrap();
        let prefill = rows(&seq.forward(&ids, Rows::From(0)).unwrap().unwrap());
        vec![("prefill", prefill)]
    });
    for (name, f) in &figures {
        assert_within_rounding(
            &format!(
                "SmolLM2-135M f32 {name} vs float64 reference, {POSITIONS} random ids (seed {SEED})"
            ),
            f,
        );
    }
}

#[test]
fn gemma3_f32_prefill_matches_the_float64_reference() {
    let path = root().join("models/gemma-3-270m-q4_k_m.gguf");
    if !path.is_file() {
        assert!(
            std::env::var_os("DRIFTSWEEP_REQUIRE_GEMMA").is_none(),
            "DRIFTSWEEP_REQUIRE_GEMMA is set but {} is missing",
            path.display()
        );
        println!(
            "SKIPPED gemma3_f32_prefill_matches_the_float64_reference: {} is missing (run \
             `bash scripts/fetch_gemma3.sh`; the weights are under the Gemma terms)",
            path.display()
        );
        return;
    }
    let Some(py) = python_or_skip("gemma3_f32_prefill_matches_the_float64_reference") else {
        return;
    };
    // BOS, then random ids: past the sliding window of 512, so local and global layers differ.
    let model =
        driftsweep::model::gemma3::Model::from_gguf(&path, DType::F32, &Device::Cpu).unwrap();
    let cfg = model.config().clone();
    assert!(POSITIONS > cfg.sliding_window);
    let mut ids = vec![2u32];
    ids.extend(random_ids(POSITIONS - 1, cfg.vocab_size, SEED));
    let figures = against_reference(&py, &path, &ids, || {
        let mut cache = model.new_cache(ids.len());
        let prefill = rows(&model.forward(&ids, &mut cache).unwrap());
        // One token at a time through the cache: past position 512 the local layers' window
        // drops the oldest keys in this path too.
        let mut cache = model.new_cache(ids.len());
        let decode = ids
            .iter()
            .flat_map(|&id| rows(&model.forward(&[id], &mut cache).unwrap()))
            .collect();
        vec![("prefill", prefill), ("decode", decode)]
    });
    for (name, f) in &figures {
        assert_within_rounding(
            &format!(
                "Gemma 3 270M f32 {name} vs float64 reference, BOS + {} random ids (seed {SEED})",
                POSITIONS - 1
            ),
            f,
        );
    }
}
