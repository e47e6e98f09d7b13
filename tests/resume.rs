//! Results that survive: a hard kill and a stop request part-way through a sweep (at a chosen
//! run, through the binary's testing aids, so no test races a timer), resume, failed runs as
//! data, bit-identical repeats and `verify`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driftsweep::exit;
use serde_json::Value;

mod common;
use common::{code, read_json, run, text};

/// 24 pairs on the built-in model: long enough to be stopped part-way, short enough for CI.
const SWEEP: &str = r#"
name: resume
model: builtin:tiny-llama
device: cpu
prompts:
  - id: p0
    text: "What is the capital of France?"
  - id: r8
    random_tokens: 8
continuation: sample
sweep:
  span: [24, 48, 96]
  dtype: [f32, f16]
  kv_aligned: [false, true]
  seed: [0]
"#;

fn setup(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("sweep.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    (tmp, cfg)
}

/// `driftsweep run` with `extra` flags, waited for.
fn run_with(cfg: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

fn count_json(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Every run record's `finished_at`, by file name.
fn run_stamps(out: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(out.join("runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| {
            let v = read_json(&e.path());
            (
                e.file_name().to_string_lossy().into_owned(),
                v["finished_at"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Pair id → metrics, from report.json.
fn metrics(out: &Path) -> BTreeMap<String, Value> {
    let r = read_json(&out.join("report.json"));
    r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["metrics"].clone()))
        .collect()
}

/// Every JSON file under `out` parses: nothing half-written.
fn all_files_whole(out: &Path) {
    for sub in ["", "runs", "pairs"] {
        for e in std::fs::read_dir(out.join(sub)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp"), "stale temporary {name} in {sub}");
            if name.ends_with(".json") {
                read_json(&e.path());
            }
        }
    }
}

#[test]
fn a_hard_kill_part_way_then_resume_recomputes_nothing_finished_and_matches_an_uninterrupted_sweep()
{
    let (tmp, cfg) = setup(SWEEP);
    let reference = tmp.path().join("reference");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        reference.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));

    let out = tmp.path().join("killed");
    // A hard stop after the 13th run record, as SIGKILL would: mid-pair, nothing finalized.
    let o = run_with(&cfg, &out, &["--exit-after-runs", "13"]);
    assert_eq!(code(&o), exit::KILLED, "{}", text(&o));
    assert!(
        !out.join("report.json").exists(),
        "a killed sweep writes no report"
    );
    let finished = count_json(&out.join("pairs"));
    assert_eq!(finished, 6, "pairs recorded before the kill");
    // A finished pair's runs keep their records (and timestamps) through the resume. (A pair
    // record and its run records are separate files: a kill can fall between them, and such a
    // pair is computed again; every pair with all three files must be kept.)
    let before = run_stamps(&out);
    let whole: Vec<[String; 2]> = std::fs::read_dir(out.join("pairs"))
        .unwrap()
        .flatten()
        .map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .map(|pair| ["prefill", "decode"].map(|m| format!("{pair}.{m}.json")))
        .filter(|keys| keys.iter().all(|k| before.contains_key(k)))
        .collect();
    assert_eq!(whole.len(), 6, "whole pairs before the resume");
    assert_eq!(
        count_json(&out.join("runs")),
        13,
        "the 7th pair's prefill is recorded"
    );

    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("resumed: {} pair(s) reused", whole.len())),
        "{}",
        text(&o)
    );
    all_files_whole(&out);
    let after = run_stamps(&out);
    for k in whole.iter().flatten() {
        assert_eq!(before.get(k), after.get(k), "{k} was recomputed");
    }
    assert_eq!(metrics(&out), metrics(&reference));
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "PASS");
    assert_eq!(r["sessions"].as_array().unwrap().len(), 2);
    // Loads add up over the sessions, and report.md says why there are more than groups.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("over 2 sessions"), "{md}");
}

#[test]
fn a_stop_request_ends_after_the_current_run_reports_incomplete_and_exits_130_then_resumes() {
    let (tmp, cfg) = setup(SWEEP);
    let out = tmp.path().join("res");
    // The stop flag raised once 7 runs have started: the path Ctrl-C and SIGTERM take.
    let o = run_with(&cfg, &out, &["--stop-after-runs", "7"]);
    assert_eq!(code(&o), exit::INTERRUPTED, "{}", text(&o));
    assert_eq!(
        count_json(&out.join("pairs")),
        3,
        "three whole pairs, then the stop"
    );
    all_files_whole(&out);

    let r = read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "INCOMPLETE", "{}", r["verdict_reason"]);
    assert_eq!(r["interrupted"], true);
    let missing: Vec<&Value> = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["verdict"] == "INCOMPLETE")
        .collect();
    assert!(!missing.is_empty());
    assert!(
        missing
            .iter()
            .all(|p| p["reason"].as_str().unwrap().contains("interrupted")),
        "{missing:?}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("INTERRUPTED"), "{md}");

    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "PASS");
    assert_eq!(r["interrupted"], false);
    assert_eq!(r["counts"]["pass_equiv"], 12);
    assert_eq!(r["counts"]["expected_drift"], 12);
}

#[test]
fn a_failing_run_makes_its_pair_incomplete_and_the_sweep_goes_on() {
    let yaml = format!("{SWEEP}inject:\n  fail_span: 48\n");
    let (tmp, cfg) = setup(&yaml);
    let out = tmp.path().join("res");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::INCOMPLETE, "{}", text(&o));
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "INCOMPLETE");
    let pairs = r["pairs"].as_array().unwrap();
    for p in pairs {
        if p["span"] == 48 {
            assert_eq!(p["verdict"], "INCOMPLETE", "{p}");
            assert!(
                p["reason"].as_str().unwrap().contains("injected failure"),
                "{p}"
            );
            assert_eq!(p["decode"]["status"], "failed");
            assert_eq!(p["prefill"]["status"], "ok");
        } else {
            assert!(
                ["PASS_EQUIV", "EXPECTED_DRIFT"].contains(&p["verdict"].as_str().unwrap()),
                "{p}"
            );
        }
    }
    assert_eq!(r["counts"]["incomplete"], 8);

    // A resume retries only the failed pairs (still failing here), and keeps the rest.
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::INCOMPLETE, "{}", text(&o));
    assert!(
        text(&o).contains("resumed: 16 pair(s) reused"),
        "{}",
        text(&o)
    );
}

#[test]
fn repeated_sweeps_are_bit_identical_and_verify_catches_a_tampered_metric() {
    let (tmp, cfg) = setup(SWEEP);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    for out in [&a, &b] {
        let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    }
    assert_eq!(metrics(&a), metrics(&b));

    let o = run(&["verify", a.to_str().unwrap(), "--all"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert!(
        text(&o).contains("24 of 24 re-run pair(s) bit-identical"),
        "{}",
        text(&o)
    );
    let v = read_json(&a.join("verify.json"));
    assert_eq!(v["pairs"].as_array().unwrap().len(), 24);

    // Tamper with one stored metric: verify names the pair and the metric.
    let pair_file = std::fs::read_dir(a.join("pairs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("f16"))
        .unwrap();
    let mut rec = read_json(&pair_file);
    let old = rec["metrics"]["kl_mean"].as_f64().unwrap();
    rec["metrics"]["kl_mean"] = serde_json::json!(old * 1.5 + 1e-9);
    std::fs::write(&pair_file, serde_json::to_vec(&rec).unwrap()).unwrap();
    let o = run(&["verify", a.to_str().unwrap(), "--all"]);
    assert_eq!(code(&o), exit::FAIL, "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("mismatch"), "{t}");
    assert!(t.contains("kl_mean moved"), "{t}");
    assert!(t.contains(rec["id"].as_str().unwrap()), "{t}");

    // The default is a sample.
    let o = run(&["verify", b.to_str().unwrap(), "--sample", "3"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert!(text(&o).contains("3 of 3 re-run"), "{}", text(&o));
}

#[test]
fn a_directory_of_another_sweep_is_refused_unless_start_over() {
    let (tmp, cfg) = setup(SWEEP);
    let out = tmp.path().join("res");
    let small = SWEEP.replace("span: [24, 48, 96]", "span: [8]");
    std::fs::write(&cfg, &small).unwrap();
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));

    std::fs::write(&cfg, small.replace("seed: [0]", "seed: [1]")).unwrap();
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("different sweep file"), "{t}");
    assert!(t.contains("--start-over"), "{t}");

    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--start-over",
    ]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let r = read_json(&out.join("report.json"));
    assert!(
        r["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["seed"] == 1)
    );
}
