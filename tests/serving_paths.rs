//! The serving paths as a sweep axis, run by the binary on the repository's configs: chunked
//! prefill, batched decode and batched prefill on both engines, the row digests that make
//! bit-identity statements, the report's section per path, and the negative controls that
//! only these paths can catch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driftsweep::exit;
use serde_json::Value;

mod common;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `config` into a fresh directory; returns its report.json, report.md and the directory.
fn sweep(config: &str, expect_code: i32) -> (Value, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("res");
    let cfg = repo(config);
    let o = common::run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(
        common::code(&o),
        expect_code,
        "{config}: {}",
        common::text(&o)
    );
    let report = common::read_json(&out.join("report.json"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    (report, md, tmp)
}

fn pairs(r: &Value) -> &Vec<Value> {
    r["pairs"].as_array().expect("pairs")
}

fn path_of(p: &Value) -> &str {
    p["path"].as_str().unwrap_or("decode")
}

/// The row digests of a pair's run under test.
fn digests(dir: &Path, p: &Value) -> Vec<String> {
    let id = p["id"].as_str().unwrap();
    // The run under test is named for its path's kind (`….decode`, `….chunked`).
    let name = path_of(p).split(':').next().unwrap();
    let run = common::read_json(&dir.join(format!("res/runs/{id}.{name}.json")));
    run["row_digests"]
        .as_array()
        .unwrap_or_else(|| panic!("{id}: no row digests"))
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

/// Everything of a pair but its path: the pairs one path is held against another over.
fn setting(p: &Value) -> String {
    format!(
        "{}/{}/{}/{}/{}/{}/{}",
        p["engine"], p["weights"], p["prompt"], p["span"], p["dtype"], p["kv_aligned"], p["seed"]
    )
}

#[test]
fn every_path_runs_on_both_engines_and_reduces_to_decode_and_prefill_at_its_ends() {
    let (r, md, dir) = sweep("configs/serving_paths_ci.yaml", exit::PASS);
    let ps = pairs(&r);
    // 2 prompts × 2 dtypes × 2 kv × 16 paths × 2 engines.
    assert_eq!(ps.len(), 256);
    let mut by_setting: BTreeMap<String, BTreeMap<String, &Value>> = BTreeMap::new();
    for p in ps {
        by_setting
            .entry(setting(p))
            .or_default()
            .insert(path_of(p).to_string(), p);
        let v = p["verdict"].as_str().unwrap();
        let reason = p["reason"].as_str().unwrap();
        match v {
            "SKIPPED" => assert!(
                reason.contains("kv_aligned does not apply"),
                "{}: {reason}",
                p["id"]
            ),
            // Every serving path is judged by the equivalence tolerance, kv_aligned or not.
            _ if path_of(p) != "decode" => {
                assert_eq!(v, "PASS_EQUIV", "{}: {reason}", p["id"])
            }
            _ => assert!(v == "PASS_EQUIV" || v == "EXPECTED_DRIFT", "{}", p["id"]),
        }
    }
    let mut checked = 0;
    for (key, paths) in &by_setting {
        let decode = paths["decode"];
        if decode["verdict"] == "SKIPPED" {
            continue;
        }
        // Chunks of 1 and a batch of 1 are decode, bit for bit, on both engines.
        let d = digests(dir.path(), decode);
        assert_eq!(d.len(), 16, "{key}");
        for same in ["chunked:1", "batched:1"] {
            assert_eq!(
                digests(dir.path(), paths[same]),
                d,
                "{key}: {same} vs decode"
            );
        }
        // One chunk holding the whole sequence, and a batched prefill of one, are prefill
        // (not after a prompt-only prefill's cache: that one is the span's chunk alone).
        for whole in ["chunked:64", "batched_prefill:1"] {
            let p = paths[whole];
            if p["verdict"] != "SKIPPED" && p["cache_source"] != "prompt_prefill" {
                assert_eq!(p["metrics"]["max_abs_diff"], 0.0, "{key}: {whole}");
            }
        }
        // A batch of 9 really fed 9 sequences: its run counts their tokens. Each row of the
        // batch makes its own cut-back cache (prefill's forward), where decode starts from
        // the one the prefill run kept and feeds the span alone.
        let b9 = paths["batched:9"];
        let fed = |p: &Value, run: &str| p[run]["tokens_fed"].as_u64().unwrap();
        let mut per_row = fed(decode, "decode");
        if decode["cache_source"] == "cut_back" {
            assert_eq!(per_row, 16, "{key}: the span alone");
            per_row += fed(decode, "prefill");
        }
        assert_eq!(fed(b9, "decode"), 9 * per_row, "{key}");
        checked += 1;
    }
    // 2 prompts × 2 dtypes × 2 kv on both engines (candle-transformers' kv_aligned=1 pairs
    // on a prompt-only prefill's cache).
    assert_eq!(checked, 8 + 8);
    let engines: Vec<&str> = ps
        .iter()
        .filter(|p| path_of(p) == "chunked:5" && p["verdict"] == "PASS_EQUIV")
        .map(|p| p["engine"].as_str().unwrap())
        .collect();
    assert!(engines.contains(&"candle-transformers") && engines.contains(&"driftsweep"));

    // A section per path, each with its comparisons of sizes, and statements from the data.
    for title in [
        "## Serving Path: Chunked prefill",
        "## Serving Path: Batched decode",
        "## Serving Path: Batched prefill",
    ] {
        assert!(md.contains(title), "{title} missing");
    }
    assert!(md.contains("| chunk 9 vs chunk 8 |"), "{md}");
    assert!(md.contains("| batch 9 vs batch 1 |"), "{md}");
    let obs: Vec<&str> = r["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        obs.iter()
            .any(|o| o.starts_with("chunk 1 gave bit-identical logits to decode in 16/16 pairs")),
        "{obs:#?}"
    );
    assert!(
        obs.iter()
            .any(|o| o.starts_with("batch 9 gave bit-identical logits to batch 1 in ")),
        "{obs:#?}"
    );
    let sp = &r["serving_paths"];
    assert!(sp["groups"].as_array().unwrap().len() > 20);
    // The cost of each path is in the report: the path's own run time.
    assert!(sp["groups"][0]["wall_mean_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn chunk_and_cross_row_faults_fail_exactly_the_paths_that_can_show_them() {
    let (r, md, _dir) = sweep("configs/serving_paths_inject_ci.yaml", exit::FAIL);
    assert!(md.contains("Fault injection is on"), "{md}");
    let mut caught = 0;
    for p in pairs(&r) {
        let (path, v) = (path_of(p), p["verdict"].as_str().unwrap());
        let id = p["id"].as_str().unwrap();
        let (kind, size) = match path.split_once(':') {
            Some((k, n)) => (k, n.parse::<usize>().unwrap()),
            None => (path, 0),
        };
        // A chunk as long as the sequence is one forward at offset 0 (kv_aligned=0), which
        // the chunk fault cannot touch; with kv_aligned=1 the span is a chunk at offset P.
        let kv = p["kv_aligned"] == true;
        let len = p["decode"]["span_start"].as_u64().unwrap() as usize + 16;
        let exposed = match kind {
            "chunked" => size > 1 && (kv || size < len),
            "batched" | "batched_prefill" => size > 1,
            _ => false,
        };
        if v == "SKIPPED" {
            assert_eq!(kind, "batched_prefill", "{id}");
            continue;
        }
        if exposed {
            assert_eq!(v, "FAIL_EQUIV", "{id}: {}", p["reason"]);
            // The first divergent position is the span's first: the fault acts from there.
            let first = p["metrics"]["first_divergent_pos"].as_u64().unwrap();
            assert_eq!(first, p["decode"]["span_start"].as_u64().unwrap(), "{id}");
            caught += 1;
        } else {
            assert!(
                v == "PASS_EQUIV" || v == "EXPECTED_DRIFT",
                "{id}: a path that cannot show the faults failed: {}",
                p["reason"]
            );
        }
    }
    // chunked 4 and 9 (both kv), 64 with kv=1, batched 2 and 9 (both kv), batched_prefill 4
    // (kv=0), for 2 prompts.
    assert_eq!(caught, 2 * (2 + 2 + 1 + 2 + 2 + 1));
}

#[test]
fn smollm2_serving_paths_on_both_engines_and_both_weight_formats() {
    let model = repo("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.is_file(),
        "{} is missing: run `bash scripts/fetch_smollm2.sh` (`.ci/run` does)",
        model.display()
    );
    let (r, md, dir) = sweep("configs/serving_paths_smollm2_ci.yaml", exit::PASS);
    let ps = pairs(&r);
    let compared = |engine: &str, weights: &str, path: &str| {
        ps.iter()
            .filter(|p| {
                p["engine"] == engine
                    && p["weights"] == weights
                    && path_of(p) == path
                    && p["metrics"].is_object()
            })
            .count()
    };
    for engine in ["driftsweep", "candle-transformers"] {
        for weights in ["dequantized", "quantized"] {
            for path in ["chunked:5", "chunked:9", "batched:9"] {
                assert!(
                    compared(engine, weights, path) > 0,
                    "{engine} {weights} {path}: nothing compared"
                );
            }
        }
    }
    // Chunks of 1 and batches of 1 are decode there too, bit for bit.
    for p in ps
        .iter()
        .filter(|p| path_of(p) == "decode" && p["metrics"].is_object())
    {
        let d = digests(dir.path(), p);
        for q in ps.iter().filter(|q| {
            setting(q) == setting(p) && ["chunked:1", "batched:1"].contains(&path_of(q))
        }) {
            assert_eq!(digests(dir.path(), q), d, "{} vs {}", q["id"], p["id"]);
        }
    }
    assert!(md.contains("## Serving Path: Batched decode"));
}
