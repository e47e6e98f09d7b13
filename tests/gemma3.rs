//! Gemma 3 270M from its GGUF (fetched by `bash scripts/fetch_gemma3.sh`, the user's own
//! download under the Gemma terms; these tests say why they skip without it, and fail instead
//! when `DRIFTSWEEP_REQUIRE_GEMMA` is set, as `.ci/run` sets it): the tokenizer read from the
//! GGUF metadata (src/model/spm.rs) against reference tokenizations made by transformers'
//! GemmaConverter and by SentencePiece (scripts/reference/ref_tokenize.py), and the CI-sized
//! sweeps across the sliding window (configs/gemma3_window_ci.yaml and its negative control).

use std::path::{Path, PathBuf};
use std::process::Command;

use driftsweep::model::gguf;
use serde_json::Value;

mod common;

fn gemma() -> Option<PathBuf> {
    common::gemma()
}

/// Strings and their ids as transformers' GemmaConverter tokenizes them (no BOS): Unicode,
/// emoji, digits, whitespace runs, tabs, newlines, code, control tokens, bytes outside the
/// vocabulary (scripts/reference/ref_tokenize.py, engine `transformers`).
const CASES: &[(&str, &[u32])] = &[
    ("Hello, world!", &[9259, 236764, 1902, 236888]),
    (
        "The capital of France is Paris.",
        &[818, 5279, 529, 7001, 563, 9079, 236761],
    ),
    (
        "  two  spaces\tand\ttabs\n\nnew lines   ",
        &[
            138, 13498, 138, 35220, 255968, 624, 255968, 39218, 108, 1951, 4463, 139,
        ],
    ),
    (
        "Ünïcödé: 日本語のテキスト, emoji 🤖🚀, Ελληνικά",
        &[
            238194, 236749, 238527, 236755, 55515, 236859, 236787, 33375, 238582, 236945, 95830,
            236764, 64334, 236743, 246143, 242015, 236764, 23883, 109959, 42220,
        ],
    ),
    (
        "digits 1234567890 3.14159 2026-12-01",
        &[
            67161, 236743, 236770, 236778, 236800, 236812, 236810, 236825, 236832, 236828, 236819,
            236771, 236743, 236800, 236761, 236770, 236812, 236770, 236810, 236819, 236743, 236778,
            236771, 236778, 236825, 236772, 236770, 236778, 236772, 236771, 236770,
        ],
    ),
    (
        "fn main() {\n    println!(\"{}\", x + 1);\n}",
        &[
            15059, 1689, 825, 642, 107, 140, 4629, 183228, 1123, 900, 236743, 236770, 626, 107,
            236783,
        ],
    ),
    (
        "<start_of_turn>user\nhi<end_of_turn>",
        &[105, 2364, 107, 2202, 106],
    ),
    (
        "\u{0}\u{1} odd bytes \u{AD}",
        &[238, 249732, 11049, 17234, 181181],
    ),
];

#[test]
fn tokenizer_from_gguf_metadata_matches_transformers() {
    let Some(path) = gemma() else { return };
    let t = gguf::tokenizer(&path).unwrap();
    assert_eq!(t.bos_id, Some(2), "add_bos_token is true, BOS is 2");
    assert_eq!(t.eos_id, Some(1));
    assert!(t.special_ids.contains(&105) && t.special_ids.contains(&106));
    for (text, want) in CASES {
        let got = t.tokenizer.encode(*text, false).unwrap().get_ids().to_vec();
        assert_eq!(&got, want, "{text:?}");
        assert_eq!(t.tokenizer.decode(&got, false).unwrap(), *text, "{text:?}");
    }
}

/// A python with sentencepiece, protobuf, transformers and gguf, or why there is none.
fn python() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = std::env::var_os("DRIFTSWEEP_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".reference-venv/bin/python"));
    let ok = Command::new(&p)
        .args([
            "-c",
            "import sentencepiece, google.protobuf, transformers, gguf",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(p)
    } else {
        Err(format!(
            "{} lacks sentencepiece, protobuf, transformers or gguf (install \
             scripts/reference/requirements-tokenize.txt into .reference-venv)",
            p.display()
        ))
    }
}

fn reference(py: &Path, path: &Path, texts: &[String], engine: &str) -> Vec<Vec<u32>> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.json");
    let out = tmp.path().join("out.json");
    std::fs::write(&input, serde_json::to_string(texts).unwrap()).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(py)
        .arg(root.join("scripts/reference/ref_tokenize.py"))
        .args([path.as_os_str(), input.as_os_str(), out.as_os_str()])
        .arg(engine)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

#[test]
fn tokenizer_matches_both_references_on_the_readme() {
    let Some(path) = gemma() else { return };
    let py = match python() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let t = gguf::tokenizer(&path).unwrap();
    // Every line of the README and of this file: prose, tables, code, Unicode, indentation.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut texts: Vec<String> = Vec::new();
    for f in ["README.md", "tests/gemma3.rs", "src/model/spm.rs"] {
        let s = std::fs::read_to_string(root.join(f)).unwrap();
        texts.extend(s.lines().map(str::to_string));
        texts.push(s);
    }
    texts.extend(CASES.iter().map(|(s, _)| s.to_string()));
    let ours: Vec<Vec<u32>> = texts
        .iter()
        .map(|s| {
            t.tokenizer
                .encode(s.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec()
        })
        .collect();
    let hf = reference(&py, &path, &texts, "transformers");
    let mut checked = 0;
    for ((s, o), r) in texts.iter().zip(&ours).zip(&hf) {
        assert_eq!(o, r, "transformers tokenizes {s:?} otherwise");
        checked += o.len();
    }
    // SentencePiece itself never emits the whitespace-run tokens and reads control tokens as
    // text (see ref_tokenize.py): compare where neither occurs.
    let sp_texts: Vec<String> = texts
        .iter()
        .filter(|s| !s.contains("  ") && !s.contains('<'))
        .cloned()
        .collect();
    let sp = reference(&py, &path, &sp_texts, "sentencepiece");
    for (s, r) in sp_texts.iter().zip(&sp) {
        let o = t
            .tokenizer
            .encode(s.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(&o, r, "SentencePiece tokenizes {s:?} otherwise");
    }
    println!(
        "Gemma 3 tokenizer: {} strings ({checked} tokens) as transformers, {} as SentencePiece",
        texts.len(),
        sp_texts.len()
    );
}

/// Runs a sweep file of `configs/` into a temporary directory and returns its report.json.
fn sweep(config: &str, out: &Path) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = root.join("configs").join(config);
    let o = common::bin()
        .current_dir(&root)
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let r = common::read_json(&out.join("report.json"));
    println!(
        "{config}: exit {:?}, verdict {}",
        o.status.code(),
        r["verdict"]
    );
    r
}

fn pair<'a>(r: &'a Value, engine: &str, weights: &str, prompt: &str, kv: bool) -> &'a Value {
    r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["engine"] == engine
                && p["weights"] == weights
                && p["prompt"] == prompt
                && p["kv_aligned"] == kv
        })
        .unwrap_or_else(|| panic!("no pair {engine} {weights} {prompt} kv {kv}"))
}

/// Per-position max |diff| of a pair, by absolute position.
fn per_position(p: &Value, first: usize) -> Vec<(usize, f64)> {
    p["metrics"]["per_pos_max_abs"]
        .as_array()
        .unwrap_or_else(|| panic!("{} was not compared", p["id"]))
        .iter()
        .enumerate()
        .map(|(i, v)| (first + i, v.as_f64().unwrap()))
        .collect()
}

#[test]
fn the_window_edge_in_ci_sized_sweeps_and_its_negative_control() {
    if gemma().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // Honest runs: f32 prefill and decode agree to rounding at window - 1, window and
    // window + 1 (positions 511, 512, 513) as elsewhere.
    let r = sweep("gemma3_window_ci.yaml", &tmp.path().join("ci"));
    assert_eq!(r["counts"]["incomplete"], 0, "{}", r["verdict_reason"]);
    let tol = r["limits"]["f32"]["tolerance"]["max_abs_diff"]
        .as_f64()
        .unwrap();
    for kv in [false, true] {
        let p = pair(&r, "driftsweep", "dequantized", "r508", kv);
        let rows = per_position(p, 508);
        assert_eq!(rows.len(), 8);
        for (pos, d) in &rows {
            assert!(
                *d < tol,
                "position {pos}, kv_aligned {kv}: {d} against {tol}"
            );
        }
        println!("own f32 dequantized kv_aligned {kv}: per-position max |diff| {rows:?}");
        assert!(p["metrics"]["top1_flips"].as_array().unwrap().is_empty());
        assert!(
            ["PASS_EQUIV", "EXPECTED_DRIFT"].contains(&p["verdict"].as_str().unwrap()),
            "{}: {}",
            p["id"],
            p["reason"]
        );
    }
    // Quantized weights: compared on both sides of the edge. Their verdicts are data, not
    // asserted: activations quantized to 8 bits turn f32 rounding into steps of the
    // quantization grid (docs/results/gemma3_window.md), so a verdict here says how the
    // default quantized limits fit this model.
    for kv in [false, true] {
        let p = pair(&r, "driftsweep", "quantized", "r508", kv);
        let rows = per_position(p, 508);
        assert_eq!(rows.len(), 8);
        println!(
            "own quantized kv_aligned {kv}: {} ({}); per-position max |diff| {rows:?}",
            p["verdict"], p["reason"]
        );
    }
    // candle-transformers' quantized_gemma3 ran next to it on the same ids, inside the
    // window, with its distance to the own decoder's f32 prefill recorded.
    let ct = pair(&r, "candle-transformers", "quantized", "r56", false);
    assert!(ct["metrics"].is_object(), "{}: {}", ct["id"], ct["reason"]);
    let own = pair(&r, "driftsweep", "quantized", "r56", false);
    println!(
        "yardstick against own f32 prefill, r56: candle-transformers quantized {}, own \
         quantized {}",
        ct["yardstick"], own["yardstick"]
    );
    assert!(ct["yardstick"]["kl_mean"].is_number());
    assert!(own["yardstick"]["kl_mean"].is_number());
    let ct_kv = pair(&r, "candle-transformers", "quantized", "r56", true);
    // Its kv_aligned pair runs on a prompt-only prefill's cache (it cannot cut its cache
    // back); the verdict is data.
    assert_ne!(ct_kv["verdict"], "SKIPPED", "{}", ct_kv["reason"]);
    assert_eq!(ct_kv["cache_source"], "prompt_prefill");

    // The negative control: decode's window one key too wide. The pair must fail, and the
    // paths must part exactly at 512, the first query whose window leaves a key out.
    let r = sweep("gemma3_window_inject_ci.yaml", &tmp.path().join("inject"));
    let p = pair(&r, "driftsweep", "dequantized", "r508", true);
    assert_eq!(p["verdict"], "FAIL_EQUIV", "{}", p["reason"]);
    assert_eq!(p["metrics"]["first_divergent_pos"], 512, "{}", p["metrics"]);
    let rows = per_position(p, 508);
    println!("window + 1 in decode: per-position max |diff| {rows:?}");
    for (pos, d) in &rows {
        if *pos < 512 {
            assert!(*d < tol, "position {pos} differs by {d} before the edge");
        } else {
            assert!(
                *d > tol,
                "position {pos}: the too-wide window went unseen ({d})"
            );
        }
    }
}

#[test]
fn layer_traces_name_gemmas_extra_norms_and_catch_a_fault_in_one() {
    if gemma().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let trace = |config: &str, out: &str| -> Value {
        let dir = tmp.path().join(out);
        let r = sweep(config, &dir);
        assert_eq!(r["counts"]["incomplete"], 0, "{}", r["verdict_reason"]);
        common::read_json(&dir.join("trace.json"))
    };
    // Honest: every tensor of all 18 layers at the last position, 11 per layer plus embed,
    // final_norm and logits, none over the f32 threshold.
    let t = trace("gemma3_trace_ci.yaml", "honest");
    assert_eq!(t["result"], "PASS", "{}", t["reason"]);
    assert_eq!(t["compared_records"], 18 * 11 + 3);
    let p = &t["pairs"][0];
    for name in ["post_attn_norm", "post_mlp_norm", "mlp_norm", "attn_norm"] {
        let n = p["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["tensor"] == name)
            .count();
        assert_eq!(n, 18, "{name}");
    }
    // The control: decode's layer 3 post_mlp_norm scaled by 1.01 is named as the first
    // failing record, root cause NORM.
    let t = trace("gemma3_trace_inject_ci.yaml", "inject");
    assert_eq!(t["result"], "FAIL", "{}", t["reason"]);
    let pos = &t["pairs"][0]["positions"][0];
    assert_eq!(
        pos["first_fail"],
        serde_json::json!([3, "post_mlp_norm"]),
        "{pos}"
    );
    assert_eq!(pos["root_cause"], "NORM");
}
