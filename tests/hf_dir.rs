//! Hugging Face model directories: for each architecture, a tiny model with seeded weights
//! written to a temporary directory and read back through the directory loader gives the
//! same logits as the in-memory one; bad files are clear errors.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use driftsweep::dtype::RunDtype;
use driftsweep::exit;
use driftsweep::model::{Decoder, Family, ModelInfo, builtin, llama::Config};
use driftsweep::run;

mod common;
use common::{tiny, write_hf_dir};

#[test]
fn every_architecture_reads_back_with_the_same_logits() {
    let ids: Vec<u32> = (0..12).map(|i| 3 + i * 71 % 1000).collect();
    for (arch, split) in [
        ("llama", false),
        ("llama", true),
        ("mistral", false),
        ("qwen2", false),
        ("qwen3", false),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tiny(arch);
        write_hf_dir(tmp.path(), arch, &cfg, split);
        let info = ModelInfo::inspect(tmp.path().to_str().unwrap()).unwrap();
        assert_eq!(info.architecture.name(), arch);
        let Family::Llama(config) = &info.family else {
            panic!("{arch}: not a Llama-family model");
        };
        assert_eq!(
            config, &cfg,
            "{arch}: config.json maps onto the decoder's config"
        );
        let loaded = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let memory = Decoder::new(
            &cfg,
            VarBuilder::from_tensors(builtin::weights(&cfg), DType::F32, &Device::Cpu),
        )
        .unwrap();
        let a = run::prefill(&loaded, &ids, 2, None)
            .unwrap()
            .host_logits()
            .unwrap();
        let b = run::prefill(&memory, &ids, 2, None)
            .unwrap()
            .host_logits()
            .unwrap();
        assert_eq!(
            a, b,
            "{arch} (split={split}): directory and in-memory logits differ"
        );
        // Both paths apply the architecture alike (Mistral: the sliding window of 5 < 12).
        for kv in [true, false] {
            let d = run::decode(&loaded, &ids, 2, kv, run::Instruments::default())
                .unwrap()
                .host_logits()
                .unwrap();
            let diff = a
                .iter()
                .zip(&d)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-4,
                "{arch} kv_aligned={kv}: prefill and decode differ by {diff}"
            );
        }
    }
}

#[test]
fn the_sliding_window_changes_the_logits() {
    let ids: Vec<u32> = (0..12).map(|i| 3 + i * 71 % 1000).collect();
    let windowed = tiny("mistral");
    let mut full = windowed.clone();
    full.sliding_window = None;
    let vb = |c: &Config| VarBuilder::from_tensors(builtin::weights(c), DType::F32, &Device::Cpu);
    let a = run::prefill(
        &Decoder::new(&windowed, vb(&windowed)).unwrap(),
        &ids,
        0,
        None,
    )
    .unwrap()
    .host_logits()
    .unwrap();
    let b = run::prefill(&Decoder::new(&full, vb(&full)).unwrap(), &ids, 0, None)
        .unwrap()
        .host_logits()
        .unwrap();
    let v = windowed.vocab_size;
    // Positions 0–4 see at most 5 tokens either way; later ones lose the oldest.
    assert_eq!(a[..5 * v], b[..5 * v]);
    assert_ne!(a[5 * v..], b[5 * v..]);
}

fn error_of(dir: &Path) -> String {
    match ModelInfo::inspect(dir.to_str().unwrap()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_directories_are_clear_errors() {
    let cfg = tiny("llama");
    // Unknown architecture.
    let tmp = tempfile::tempdir().unwrap();
    write_hf_dir(tmp.path(), "llama", &cfg, false);
    let text = std::fs::read_to_string(tmp.path().join("config.json"))
        .unwrap()
        .replace("\"llama\"", "\"gpt_neox\"");
    std::fs::write(tmp.path().join("config.json"), text).unwrap();
    let e = error_of(tmp.path());
    assert!(
        e.contains("`gpt_neox` is not supported") && e.contains("llama, mistral, qwen2, qwen3"),
        "{e}"
    );

    // A safetensors header that lies about its size.
    let tmp = tempfile::tempdir().unwrap();
    write_hf_dir(tmp.path(), "llama", &cfg, false);
    let mut bytes = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(tmp.path().join("model.safetensors"), &bytes).unwrap();
    let e = error_of(tmp.path());
    assert!(e.contains("safetensors"), "{e}");

    // Tokenizer vocabulary larger, then smaller, than the embedding.
    for vocab in [1000, 2048] {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = cfg.clone();
        c.vocab_size = vocab;
        write_hf_dir(tmp.path(), "llama", &c, false);
        // The tokenizer is the 1024-token one whatever the config says.
        builtin::tokenizer(1024)
            .unwrap()
            .save(tmp.path().join("tokenizer.json"), false)
            .unwrap();
        let e = error_of(tmp.path());
        assert!(
            e.contains(&format!(
                "1024 tokens but the model's embedding has {vocab} rows"
            )),
            "{e}"
        );
    }

    // Through the CLI: exit 2, naming the sweep file and `model.source`.
    let tmp = tempfile::tempdir().unwrap();
    write_hf_dir(tmp.path(), "llama", &cfg, false);
    std::fs::write(
        tmp.path().join("config.json"),
        "{\"model_type\": \"llama\"}",
    )
    .unwrap();
    let sweep = tmp.path().join("s.yaml");
    std::fs::write(
        &sweep,
        format!(
            "name: s\nmodel: '{}'\nprompts: [{{id: a, text: hi}}]\nsweep: {{span: [2], dtype: [f32], kv_aligned: [1], seed: [0]}}\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_driftsweep"))
        .args(["plan", sweep.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit::BAD_INPUT), "{err}");
    assert!(
        err.contains("s.yaml") && err.contains("model.source") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn hf_sources_resolve_from_the_standard_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let repo = hub.join("models--tiny-org--tiny-llama");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    write_hf_dir(&snap, "llama", &tiny("llama"), false);
    let run = |source: &str| {
        let sweep = tmp.path().join("s.yaml");
        std::fs::write(
            &sweep,
            format!("name: s\nmodel: '{source}'\nprompts: [{{id: a, text: hi}}]\nsweep: {{span: [2], dtype: [f32], kv_aligned: [1], seed: [0]}}\n"),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_driftsweep"))
            .env("HF_HUB_CACHE", &hub)
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .args(["plan", sweep.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let o = run("hf:tiny-org/tiny-llama");
    assert_eq!(
        o.status.code(),
        Some(exit::PASS),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run("hf:tiny-org/tiny-llama@main");
    assert_eq!(
        o.status.code(),
        Some(exit::PASS),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run("hf:tiny-org/absent");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit::BAD_INPUT), "{err}");
    assert!(
        err.contains("model.source") && err.contains("not in the Hugging Face cache"),
        "{err}"
    );
    assert!(
        err.contains("huggingface-cli download tiny-org/absent"),
        "{err}"
    );
}
