//! Synthetic checkpoints end to end: a sweep of `model: {synthetic: ...}` under both engines,
//! specs refused with their field named (exit 2), and `driftsweep synth` writing the same
//! bytes twice.

use std::path::Path;
use std::process::Output;

use driftsweep::exit;

mod common;

/// Runs the binary with the synthetic cache under `cache`.
fn run_in(cache: &Path, args: &[&str]) -> Output {
    common::bin()
        .env("DRIFTSWEEP_SYNTH_CACHE", cache)
        .args(args)
        .output()
        .expect("the binary starts")
}

const SWEEP: &str = r#"
name: synth_llama
model:
  synthetic: {architecture: llama, layers: 2, hidden_size: 64, heads: 4, kv_heads: 2}
device: cpu
prompts:
  - {id: r6, random_tokens: 6}
continuation: random
sweep:
  span: [4]
  dtype: [f32]
  kv_aligned: [false, true]
  seed: [0]
  engine: [driftsweep, candle-transformers]
"#;

#[test]
fn a_synthetic_llama_sweeps_under_both_engines_and_its_checkpoint_is_cached_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cfg = common::write(tmp.path(), "s.yaml", SWEEP);
    let out = tmp.path().join("res");
    let o = run_in(
        &cache,
        &["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()],
    );
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    let r = common::read_json(&out.join("report.json"));
    let source = r["model"]["source"].as_str().unwrap();
    assert!(source.starts_with("synthetic:llama:"), "{source}");
    assert_eq!(r["model"]["architecture"], "llama");
    let pairs = r["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 4);
    for engine in ["driftsweep", "candle-transformers"] {
        let compared: Vec<_> = pairs
            .iter()
            .filter(|p| p["engine"] == engine && p["metrics"].is_object())
            .collect();
        assert!(!compared.is_empty(), "no {engine} pair was compared");
        for p in compared {
            let v = p["verdict"].as_str().unwrap();
            assert!(
                ["PASS_EQUIV", "EXPECTED_DRIFT"].contains(&v),
                "{}: {v}",
                p["id"]
            );
        }
    }

    // One checkpoint in the cache, whole, with its manifest; a second sweep re-uses it.
    let dirs: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = dirs[0].path();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "driftsweep-synth.json",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    assert!(source.ends_with(&dir.file_name().unwrap().to_string_lossy()[..12]));
    let written = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    let out2 = tmp.path().join("res2");
    let o = run_in(
        &cache,
        &[
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
        ],
    );
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    let again = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(written, again, "the cached checkpoint was written again");
}

#[test]
fn bad_synthetic_specs_exit_2_naming_the_sweep_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("kv_heads: 3", "model.synthetic.kv_heads", "do not divide"),
        ("kv_head: 2", "model.synthetic", "unknown field `kv_head`"),
        ("experts: 4", "model.synthetic.experts", "no such knob"),
        ("layers: 0", "model.synthetic.layers", "at least 1"),
        (
            "sliding_window: 4096",
            "model.synthetic.sliding_window",
            "wider than the context",
        ),
        (
            "vocab_size: 10000000",
            "model.synthetic.vocab_size",
            "capped at 50000000",
        ),
        (
            "head_dim: 32",
            "model.synthetic.head_dim",
            "must equal hidden_size",
        ),
        (
            "config: {no_such: 1}",
            "model.synthetic.config.no_such",
            "no such config.json field",
        ),
    ];
    for (extra, field, words) in cases {
        let text = SWEEP.replace(
            "{architecture: llama, layers: 2, hidden_size: 64, heads: 4, kv_heads: 2}",
            &format!("{{architecture: llama, {extra}}}"),
        );
        let cfg = common::write(tmp.path(), "bad.yaml", &text);
        let o = run_in(&tmp.path().join("cache"), &["plan", cfg.to_str().unwrap()]);
        let err = common::stderr(&o);
        assert_eq!(
            common::code(&o),
            exit::BAD_INPUT,
            "{extra}: {}",
            common::text(&o)
        );
        assert!(err.contains("bad.yaml"), "{extra}: {err}");
        assert!(err.contains(&format!("`{field}")), "{extra}: {err}");
        assert!(err.contains(words), "{extra}: {err}");
    }
    let unknown = SWEEP.replace("architecture: llama", "architecture: no_such_arch");
    let cfg = common::write(tmp.path(), "bad.yaml", &unknown);
    let o = run_in(&tmp.path().join("cache"), &["plan", cfg.to_str().unwrap()]);
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    assert!(common::stderr(&o).contains("`model.synthetic.architecture`"));
    let both = SWEEP.replace("  synthetic:", "  source: builtin:tiny-llama\n  synthetic:");
    let cfg = common::write(tmp.path(), "bad.yaml", &both);
    let o = run_in(&tmp.path().join("cache"), &["plan", cfg.to_str().unwrap()]);
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    assert!(
        common::stderr(&o).contains("exactly one of `source`"),
        "{}",
        common::text(&o)
    );
    // Nothing was written for a refused spec.
    assert!(!tmp.path().join("cache").exists());
}

#[test]
fn synth_writes_a_checkpoint_and_the_same_spec_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = common::write(
        tmp.path(),
        "spec.yaml",
        "architecture: llama\nlayers: 1\nhidden_size: 32\nheads: 2\nvocab_size: 300\nseed: 3\n",
    );
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        let o = run_in(
            &cache,
            &[
                "synth",
                spec.to_str().unwrap(),
                "--out",
                dir.to_str().unwrap(),
            ],
        );
        assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    }
    let names = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "driftsweep-synth.json",
    ];
    for f in names {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(!x.is_empty(), "{f}");
        assert!(x == y, "{f} differs between two writes of the same spec");
    }
    let manifest = common::read_json(&a.join("driftsweep-synth.json"));
    assert_eq!(manifest["spec"]["seed"], 3);
    assert_eq!(manifest["files"].as_object().unwrap().len(), 3);
    let config = common::read_json(&a.join("config.json"));
    assert_eq!(config["vocab_size"], 300);
    // Writing over it again replaces it; a directory of someone else's is refused.
    let o = run_in(
        &cache,
        &[
            "synth",
            spec.to_str().unwrap(),
            "--out",
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let o = run_in(
        &cache,
        &[
            "synth",
            spec.to_str().unwrap(),
            "--out",
            theirs.to_str().unwrap(),
        ],
    );
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    assert!(theirs.join("notes.txt").is_file());

    let bad = common::write(
        tmp.path(),
        "bad.yaml",
        "architecture: llama\nheads: 4\nkv_heads: 3\n",
    );
    let o = run_in(
        &cache,
        &[
            "synth",
            bad.to_str().unwrap(),
            "--out",
            tmp.path().join("c").to_str().unwrap(),
        ],
    );
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    let err = common::stderr(&o);
    assert!(
        err.contains("bad.yaml") && err.contains("`kv_heads`"),
        "{err}"
    );
    assert!(!tmp.path().join("c").exists());
}
