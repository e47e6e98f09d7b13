//! driftsweep's own decoder against an independent float64 reference (scripts/reference/,
//! numpy and the `gguf` package, no code shared with the Rust decoder): SmolLM2-135M's f32
//! prefill logits at 640 positions.
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

use candle_core::{Device, Tensor};
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
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec2()
        .unwrap()
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

#[test]
fn smollm2_f32_prefill_matches_the_float64_reference() {
    let py = match python() {
        Ok(p) => p,
        Err(why) => {
            assert!(
                std::env::var_os("DRIFTSWEEP_REQUIRE_REFERENCE").is_none(),
                "DRIFTSWEEP_REQUIRE_REFERENCE is set but {why}"
            );
            println!("SKIPPED smollm2_f32_prefill_matches_the_float64_reference: {why}");
            return;
        }
    };
    let path = smollm2();
    let info = ModelInfo::inspect(&path.to_string_lossy()).unwrap();
    let vocab = info.config.vocab_size;
    let ids = random_ids(POSITIONS, vocab, SEED);
    let tmp = tempfile::tempdir().unwrap();
    let ids_file = tmp.path().join("ids.txt");
    let text: Vec<String> = ids.iter().map(u32::to_string).collect();
    std::fs::write(&ids_file, text.join(" ")).unwrap();

    // The exact reference and the rounding model, in parallel with the decoder's own work.
    let digests = tmp.path().join("digests.txt");
    let (exact, noisy, ours, digests_ok) = std::thread::scope(|s| {
        let exact = s.spawn(|| {
            let out = tmp.path().join("exact.npy");
            let d = digests.to_string_lossy().into_owned();
            rows(&reference(&py, &path, &ids_file, &out, &["--digests", &d]))
        });
        let noisy: Vec<_> = NOISE_SEEDS
            .iter()
            .map(|&seed| {
                let (py, path, ids_file) = (&py, &path, &ids_file);
                let out = tmp.path().join(format!("noise{seed}.npy"));
                s.spawn(move || {
                    let seed = seed.to_string();
                    rows(&reference(
                        py,
                        path,
                        ids_file,
                        &out,
                        &["--f32-noise", &seed],
                    ))
                })
            })
            .collect();
        let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let mut seq = model.sequence(ids.len()).unwrap();
        let ours = rows(&seq.forward(&ids, Rows::From(0)).unwrap().unwrap());
        drop(seq);
        let theirs = candle_digests(&path);
        let exact = exact.join().unwrap();
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
        let noisy: Vec<_> = noisy.into_iter().map(|h| h.join().unwrap()).collect();
        (exact, noisy, ours, same == theirs.len())
    });
    assert!(digests_ok, "the reference saw other tensors than candle");
    assert_eq!(ours.len(), POSITIONS);
    assert_eq!(exact.len(), POSITIONS);
    assert_eq!(ours[0].len(), vocab);

    let (max_ours, p99_ours) = max_p99(abs_diffs(&ours, &exact));
    let mut max_model = 0f64;
    let mut p99_model = 0f64;
    for n in &noisy {
        let (m, p) = max_p99(abs_diffs(n, &exact));
        max_model = max_model.max(m);
        p99_model = p99_model.max(p);
    }
    let (max_bound, p99_bound) = (2.0 * max_model, 2.0 * p99_model);
    let mut agree = 0;
    let mut wide_flips = Vec::new();
    for (pos, (o, e)) in ours.iter().zip(&exact).enumerate() {
        if argmax(o) == argmax(e) {
            agree += 1;
        } else if margin(e) > max_bound {
            wide_flips.push((pos, margin(e)));
        }
    }
    let scale = exact.iter().flatten().fold(0f64, |m, x| m.max(x.abs()));
    println!(
        "SmolLM2-135M f32 prefill vs float64 reference, {POSITIONS} random ids (seed {SEED}): \
         max |diff| {max_ours:.3e}, p99 |diff| {p99_ours:.3e}, top-1 agreement {agree}/{POSITIONS} \
         ({:.4}); f32 rounding model: max {max_model:.3e}, p99 {p99_model:.3e}; bounds max \
         {max_bound:.3e}, p99 {p99_bound:.3e}; max |logit| {scale:.2}",
        agree as f64 / POSITIONS as f64
    );
    assert!(
        max_ours <= max_bound,
        "max |diff| {max_ours:e} exceeds twice the f32 rounding model's {max_model:e}"
    );
    assert!(
        p99_ours <= p99_bound,
        "p99 |diff| {p99_ours:e} exceeds twice the f32 rounding model's {p99_model:e}"
    );
    assert!(
        wide_flips.is_empty(),
        "top-1 differs where the reference's margin exceeds {max_bound:e}: {wide_flips:?}"
    );
}
