//! The conformance sweep (`configs/conformance.yaml`, docs/results/conformance.md) runs in CI:
//! every candle-transformers module it lists runs on its synthetic checkpoint and ends with a
//! verdict or a recorded error, the own decoders agree with themselves (positive control), and
//! the own decoder with faults fails on every path (negative control) in the same sweep.
//! What each module's verdict is, is the finding, not something this test pins.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

mod common;

/// Model id → its summary entry.
fn models(summary: &Value) -> BTreeMap<String, Value> {
    summary["models"]
        .as_array()
        .expect("summary.json lists the models")
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m.clone()))
        .collect()
}

/// The verdicts of one model's pairs, by pair id.
fn verdicts(out: &Path, id: &str) -> BTreeMap<String, String> {
    let r = common::read_json(&out.join("models").join(id).join("report.json"));
    r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_module_runs_and_the_negative_control_fails_in_the_same_sweep() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("conformance");
    let config = root.join("configs/conformance.yaml");
    let o = common::bin()
        .current_dir(root)
        .env("DRIFTSWEEP_SYNTH_CACHE", tmp.path().join("synth"))
        .args([
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let summary = common::read_json(&out.join("summary.json"));
    // The exit code is the summary's, and a sweep with failing modules fails.
    assert_eq!(
        common::code(&o),
        summary["exit_code"].as_i64().unwrap() as i32,
        "{}",
        common::stderr(&o)
    );
    let models = models(&summary);
    let listed = std::fs::read_to_string(&config).unwrap();
    let ids: Vec<&str> = listed
        .lines()
        .skip_while(|l| *l != "models:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    assert!(ids.len() >= 40, "{ids:?}");
    for id in &ids {
        let m = &models[*id];
        // Every model was made, loaded and planned: a module that errors does so per pair.
        assert_eq!(m["status"], "ran", "{id}: {m}");
        let v = verdicts(&out, id);
        assert!(!v.is_empty(), "{id} ran no pair");
        assert!(
            v.values().all(|v| v != "SKIPPED"),
            "{id}: every pair of the sweep can run: {v:?}"
        );
    }
    // Positive controls: the own decoders agree with themselves on every path.
    for id in ["llama", "mistral", "qwen2", "qwen3", "q_llama", "q_gemma3"] {
        for (pair, v) in verdicts(&out, id) {
            if !pair.contains("candle-transformers") {
                assert!(
                    v == "PASS_EQUIV" || v == "EXPECTED_DRIFT",
                    "{id} {pair}: {v}"
                );
            }
        }
    }
    // The negative control: faults on every path, every pair fails.
    let neg = verdicts(&out, "neg_mistral");
    assert_eq!(neg.len(), 12);
    for (pair, v) in &neg {
        assert!(v.starts_with("FAIL"), "neg_mistral {pair}: {v}");
    }
    assert_eq!(models["neg_mistral"]["verdict"], "FAIL");
    assert_eq!(summary["verdict"], "FAIL");
}
