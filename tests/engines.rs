//! Engines and weight formats as sweep axes: candle-transformers' implementations next to the
//! own decoder on the same token ids, GGUF weights kept quantized, what an engine cannot do
//! coming out SKIPPED with its reason, the yardstick against the f32 prefill, and a user's
//! own model run from Rust (`examples/own_model.rs`).

use std::path::{Path, PathBuf};

use driftsweep::exit;
use serde_json::Value;

mod common;

fn pairs(r: &Value) -> &Vec<Value> {
    r["pairs"].as_array().expect("pairs")
}

fn find<'a>(r: &'a Value, engine: &str, weights: &str, kv: bool) -> Vec<&'a Value> {
    pairs(r)
        .iter()
        .filter(|p| p["engine"] == engine && p["weights"] == weights && p["kv_aligned"] == kv)
        .collect()
}

const BUILTIN_BOTH_ENGINES: &str = r#"
name: engines_builtin
model: builtin:tiny-llama
device: cpu
prompts:
  - {id: r6, random_tokens: 6}
continuation: random
sweep:
  span: [5]
  dtype: [f32, bf16]
  kv_aligned: [false, true]
  seed: [0]
  engine: [driftsweep, candle-transformers]
"#;

#[test]
fn candle_transformers_runs_next_to_the_own_decoder_on_the_builtin_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::write(tmp.path(), "s.yaml", BUILTIN_BOTH_ENGINES);
    let out = tmp.path().join("res");

    // The plan states what the per-prefix prefill costs.
    let o = common::run(&["plan", cfg.to_str().unwrap()]);
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    // Own decoder: 4 prefills of 6 + 5 tokens; candle-transformers: 4 of 5·6 + 15 (its
    // kv_aligned pairs run too, on a prompt-only prefill's cache).
    assert!(
        plan.contains("forward tokens: 224 in prefill runs (88 if every prefill were one pass"),
        "{plan}"
    );
    assert!(
        plan.contains("r6.s5.f32.kv0.seed0.candle-transformers.prefill"),
        "{plan}"
    );

    let o = common::run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    let r = common::read_json(&out.join("report.json"));
    assert_eq!(r["counts"]["pairs"], 8);

    // candle-transformers cannot cut its cache back to a prefix: its kv_aligned pairs run
    // the prompt alone in one forward and decode the span from that cache, and say so.
    for p in find(&r, "candle-transformers", "dequantized", true) {
        assert_eq!(p["verdict"], "PASS_EQUIV", "{}: {}", p["id"], p["reason"]);
        assert_eq!(p["cache_source"], "prompt_prefill", "{}", p["id"]);
        // The prompt once (6) and the 5 span steps.
        assert_eq!(p["decode"]["tokens_fed"], 11, "{}", p["id"]);
    }
    for p in find(&r, "driftsweep", "dequantized", true) {
        assert_eq!(p["cache_source"], "cut_back", "{}", p["id"]);
    }
    for p in find(&r, "driftsweep", "dequantized", false) {
        assert!(p.get("cache_source").is_none(), "{}", p["id"]);
    }
    for p in find(&r, "candle-transformers", "dequantized", false) {
        assert!(p["metrics"].is_object(), "{} was not compared", p["id"]);
        // One fresh forward per prefix: 7 + 8 + 9 + 10 + 11 tokens.
        assert_eq!(p["prefill"]["tokens_fed"], 45, "{}", p["id"]);
        // The yardstick: candle-transformers' llama against the own decoder's f32 prefill
        // on the same weights and tokens. Two f32 implementations agree to rounding; bf16
        // carries its own rounding.
        let y = &p["yardstick"];
        let max = y["max_abs_diff"].as_f64().unwrap();
        match p["dtype"].as_str().unwrap() {
            "f32" => assert!(max < 1e-4, "{}: {max}", p["id"]),
            _ => assert!(max > 1e-4 && max < 0.5, "{}: {max}", p["id"]),
        }
        assert_eq!(y["top1_agreement"], 1.0, "{}", p["id"]);
    }
    // The reference setting has no yardstick (it is the reference); the rest have one.
    for p in pairs(&r) {
        let reference = p["engine"] == "driftsweep" && p["dtype"] == "f32";
        let compared = p["metrics"].is_object();
        assert_eq!(
            p["yardstick"].is_object(),
            compared && !reference,
            "{}",
            p["id"]
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| 1 (prompt_prefill) |"), "{md}");
    // 2 prefill runs of 45 tokens against 11 for one pass each.
    assert!(
        md.contains("candle-transformers returns only the last row's logits, so its 2 prefill run(s) made one forward per prefix: 90 forward tokens against 22 for one pass each (4.1×)."),
        "{md}"
    );
    assert!(
        md.contains(
            "| candle-transformers | candle_transformers::models::llama | dequantized | f32 |"
        ),
        "the load table names the implementation"
    );
}

#[test]
fn faults_are_refused_with_an_engine_that_has_no_probes() {
    // Faults exist only on the own decoder (candle-transformers has no probes): asking for
    // one with candle-transformers in the sweep is refused before any work.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::write(
        tmp.path(),
        "s.yaml",
        &format!("{BUILTIN_BOTH_ENGINES}inject: {{position_shift: 1}}\n"),
    );
    let o = common::run(&["run", cfg.to_str().unwrap(), "--out", "unused"]);
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    assert!(
        common::stderr(&o).contains("`inject`"),
        "{}",
        common::text(&o)
    );
}

#[test]
fn your_own_model_runs_a_sweep_from_rust() {
    // Integration tests and examples are built into the same target directory.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let example = dir
        .join("examples")
        .join(format!("own_model{}", std::env::consts::EXE_SUFFIX));
    assert!(
        example.is_file(),
        "{} is missing: `cargo test` builds the examples",
        example.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("own");
    let o = std::process::Command::new(&example)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(exit::PASS), "{}", common::text(&o));
    let r = common::read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "PASS", "{}", r["verdict_reason"]);
    assert_eq!(r["counts"]["pairs"], 16);
    assert_eq!(r["counts"]["skipped"], 0);
    for p in pairs(&r) {
        assert_eq!(p["engine"], "custom");
        let m = &p["metrics"];
        let max = m["max_abs_diff"].as_f64().unwrap();
        // A one-layer model in f32 drifts by rounding alone.
        if p["dtype"] == "f32" {
            assert!(max < 1e-5, "{}: {max}", p["id"]);
        }
    }
    assert_eq!(
        r["model_load_details"][0]["implementation"],
        "examples/own_model.rs TinyAttention"
    );
}

fn smollm2() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run `bash scripts/fetch_smollm2.sh` (`.ci/run` does)",
        p.display()
    );
    p
}

/// The safetensors logits a run kept.
fn logits(dir: &Path, run: &str) -> (Vec<f32>, usize) {
    let t = candle_core::safetensors::load(
        dir.join("logits").join(format!("{run}.safetensors")),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let t = t.values().next().unwrap();
    let vocab = t.dims()[1];
    (t.flatten_all().unwrap().to_vec1().unwrap(), vocab)
}

#[test]
fn smollm2_through_both_engines_on_dequantized_and_quantized_weights() {
    smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("res");
    let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/engines_smollm2_ci.yaml");
    let o = common::bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    // Quantized pairs may fail their limits: the exit code is 0 or 1, never bad input.
    assert!(
        matches!(o.status.code(), Some(exit::PASS | exit::FAIL)),
        "{}",
        common::text(&o)
    );
    let r = common::read_json(&out.join("report.json"));
    assert_eq!(r["counts"]["pairs"], 8);
    assert_eq!(r["counts"]["incomplete"], 0, "{}", r["verdict_reason"]);
    // kv_aligned on quantized_llama: a prompt-only prefill's cache (it cannot cut its own
    // back); the verdict is data.
    for p in find(&r, "candle-transformers", "quantized", true) {
        assert_ne!(p["verdict"], "SKIPPED", "{}: {}", p["id"], p["reason"]);
        assert_eq!(p["cache_source"], "prompt_prefill", "{}", p["id"]);
    }
    let loads: Vec<String> = r["model_load_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["implementation"].as_str().unwrap().to_string())
        .collect();
    assert!(
        loads.contains(&"candle_transformers::models::quantized_llama".to_string()),
        "{loads:?}"
    );
    // The limits of quantized weights are their own.
    assert!(r["limits"]["f32/quantized"].is_object(), "{}", r["limits"]);

    // The own decoder on quantized weights and quantized_llama: the same Q4_1 blocks through
    // the same candle kernels, two implementations around them. Measured on
    // configs/engines_smollm2.yaml (span 32, seeds 0–2): prefill max |diff| 1.23–2.37, top-1
    // 0.94–1.0, the scale of either one's distance from the dequantized prefill (1.21–2.07),
    // because candle quantizes every activation row to 8 bits and small f32 differences
    // cross its rounding steps. A wrong weight layout (a Q/K permutation left in, say) gives
    // differences of the logits' own size and a different argmax at most positions.
    let (own, vocab) = logits(&out, "chatml_france.s8.f32.kv0.seed0.quantized.prefill");
    let (ct, _) = logits(
        &out,
        "chatml_france.s8.f32.kv0.seed0.candle-transformers.quantized.prefill",
    );
    assert_eq!(own.len(), ct.len());
    let max = own
        .iter()
        .zip(&ct)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let rows = own.len() / vocab;
    let am = driftsweep::compare::argmax;
    let same = (0..rows)
        .filter(|i| am(&own[i * vocab..(i + 1) * vocab]) == am(&ct[i * vocab..(i + 1) * vocab]))
        .count();
    eprintln!("own quantized vs quantized_llama prefill: max |diff| {max}, top-1 {same}/{rows}");
    assert!(max < 4.0, "max |diff| {max}");
    assert!(same as f64 >= 0.85 * rows as f64, "top-1 {same}/{rows}");
    // The dequantized pair agrees to f32 rounding.
    let (own, _) = logits(&out, "chatml_france.s8.f32.kv0.seed0.prefill");
    let (ct, _) = logits(
        &out,
        "chatml_france.s8.f32.kv0.seed0.candle-transformers.prefill",
    );
    let max = own
        .iter()
        .zip(&ct)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 4e-4, "dequantized: max |diff| {max}");
}
