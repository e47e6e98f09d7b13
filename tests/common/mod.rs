//! Helpers shared by the integration tests: the binary, its output, JSON files, and tiny
//! Hugging Face model directories made from the built-in model's recipe.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use driftsweep::model::builtin;
use driftsweep::model::llama::Config;
use serde_json::{Value, json};

/// The driftsweep binary this test build made.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftsweep"))
}

/// Runs the binary to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary starts")
}

/// Exit code (the process exited, it was not killed).
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    )
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The `.yaml` files of `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Reads and parses a JSON file, naming it on failure.
pub fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A tiny decoder config of architecture `arch` (1024-token vocabulary).
pub fn tiny(arch: &str) -> Config {
    let mut c = Config {
        vocab_size: 1024,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        max_position_embeddings: 256,
        tie_word_embeddings: arch != "mistral",
        explicit_head_dim: None,
        attention_bias: false,
        qk_norm: false,
        sliding_window: None,
        rope_llama3: None,
    };
    match arch {
        "mistral" => c.sliding_window = Some(5),
        "qwen2" => c.attention_bias = true,
        "qwen3" => {
            c.qk_norm = true;
            c.explicit_head_dim = Some(32);
        }
        _ => {}
    }
    c
}

/// Writes a Hugging Face model directory (config.json, safetensors, tokenizer.json) holding
/// the built-in recipe's weights for `cfg`; `split` shards the weights over two files.
pub fn write_hf_dir(dir: &Path, arch: &str, cfg: &Config, split: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut j = json!({
        "model_type": arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "eos_token_id": 1,
    });
    if let Some(w) = cfg.sliding_window {
        j["sliding_window"] = json!(w);
    }
    if let Some(h) = cfg.explicit_head_dim {
        j["head_dim"] = json!(h);
    }
    std::fs::write(dir.join("config.json"), j.to_string()).unwrap();
    let w = builtin::weights(cfg);
    if split {
        let (a, b): (Vec<_>, Vec<_>) = w.into_iter().partition(|(k, _)| k.contains("layers.0."));
        let mut map = serde_json::Map::new();
        for (file, part) in [
            ("model-00001-of-00002.safetensors", a),
            ("model-00002-of-00002.safetensors", b),
        ] {
            for (k, _) in &part {
                map.insert(k.clone(), json!(file));
            }
            let part: std::collections::HashMap<_, _> = part.into_iter().collect();
            candle_core::safetensors::save(&part, dir.join(file)).unwrap();
        }
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            json!({"weight_map": map}).to_string(),
        )
        .unwrap();
    } else {
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
    }
    builtin::tokenizer(cfg.vocab_size)
        .unwrap()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
}

/// Every `.rs` file below `dir`, sorted.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// The Gemma 3 270M file (models/, fetched by `bash scripts/fetch_gemma3.sh`), or `None`
/// after saying why the test skips (a failure when DRIFTSWEEP_REQUIRE_GEMMA is set).
pub fn gemma() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gemma-3-270m-q4_k_m.gguf");
    if p.is_file() {
        return Some(p);
    }
    let why = format!(
        "{} is missing (run `bash scripts/fetch_gemma3.sh`; the weights are under the Gemma \
         terms)",
        p.display()
    );
    assert!(
        std::env::var_os("DRIFTSWEEP_REQUIRE_GEMMA").is_none(),
        "DRIFTSWEEP_REQUIRE_GEMMA is set but {why}"
    );
    println!("SKIPPED: {why}");
    None
}

/// A started transformers reference worker, or `None` after saying why the test skips (a
/// failure when DRIFTSWEEP_REQUIRE_TRANSFORMERS is set).
pub fn transformers_worker_or_skip(
    test: &str,
) -> Option<driftsweep::reference::TransformersWorker> {
    use driftsweep::reference::{ReferenceError, TransformersWorker};
    match TransformersWorker::start() {
        Ok(w) => Some(w),
        Err(e @ ReferenceError::NotInstalled { .. }) => {
            assert!(
                std::env::var_os("DRIFTSWEEP_REQUIRE_TRANSFORMERS").is_none(),
                "DRIFTSWEEP_REQUIRE_TRANSFORMERS is set but {e}"
            );
            println!("SKIPPED {test}: {e}");
            None
        }
        Err(e) => panic!("the worker did not start: {e}"),
    }
}

/// A small sweep on the built-in model: two prompts, spans 4 and 9, f32 and f16, kv_aligned
/// both, logits kept.
pub const SMALL: &str = r#"
name: small
model:
  source: builtin:tiny-llama
device: cpu
prompts:
  - id: p0_short
    text: "What is the capital of France?"
  - id: r6
    random_tokens: 6
continuation: sample
sweep:
  span: [4, 9]
  dtype: [f32, f16]
  kv_aligned: [false, true]
  seed: [0]
keep_logits: true
"#;

/// The sweep file `SMALL` on a model `source`, one dtype, one span.
pub fn small_on(source: &str) -> String {
    SMALL
        .replace("builtin:tiny-llama", source)
        .replace("span: [4, 9]", "span: [4]")
        .replace("dtype: [f32, f16]", "dtype: [f32]")
}
