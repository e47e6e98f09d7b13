//! Report building and rendering from a results directory written by hand: every verdict
//! kind, a pair with no record, fixed timestamps, so that report.md can be snapshotted.

use std::collections::BTreeMap;

use super::template::render_within;
use super::*;
use crate::compare;
use crate::dtype::RunDtype;
use crate::engine::WeightFormat;
use crate::limits::{DtypeLimits, Thresholds};
use crate::plan::{LoadGroup, Mode, PairSpec};
use crate::store::{
    Manifest, ModelLoad, PairRecord, ResolvedSettings, RunRecord, RunStatus, SequenceRecord,
    Session, ToolInfo,
};
use crate::verdict::{self, GlobalVerdict, PairVerdict};

const SWEEP: &str = r#"
name: snap
model: builtin:tiny-llama
prompts:
  - id: p0
    text: "hello"
sweep:
  span: [2]
  dtype: [f32, f16]
  kv_aligned: [false, true]
  seed: [0]
"#;

const T0: &str = "2026-01-01T00:00:00.000Z";

fn spec(dtype: RunDtype, kv: bool) -> PairSpec {
    PairSpec::new("p0", 2, dtype, kv, 0)
}

fn run(spec: &PairSpec, mode: Mode, status: RunStatus, wall_s: f64) -> RunRecord {
    RunRecord {
        id: spec.run_id(mode),
        pair_id: spec.id.clone(),
        mode,
        status,
        error: (status != RunStatus::Ok).then(|| "not on this device".to_string()),
        wall_s: (status == RunStatus::Ok).then_some(wall_s),
        span_start: 3,
        positions: 2,
        forwards: if mode == Mode::Prefill { 1 } else { 5 },
        tokens_fed: 5,
        logits_bytes: 2 * 4 * 4,
        logits_file: None,
        finished_at: T0.into(),
        reused_from: None,
        row_digests: Vec::new(),
    }
}

/// A pair compared from hand-made logits (two positions, vocabulary 4).
fn compared(spec: &PairSpec, pre: [f32; 8], dec: [f32; 8], limits: Thresholds) -> PairRecord {
    let m = compare::compare(&pre, &dec, 4, 3, limits.max_abs_diff()).unwrap();
    let (verdict, reason) = verdict::judge_pair(&m, spec.dtype, spec.equivalence(), &limits);
    PairRecord {
        spec: spec.clone(),
        verdict,
        reason,
        metrics: Some(m),
        limits,
        yardstick: None,
        divergence_search: None,
        reference: None,
    }
}

/// A results directory: f32 pairs compared (one drifts within budget, one flips on a wide
/// margin), one f16 pair skipped and one f16 pair with no record at all.
fn results(dir: &std::path::Path) -> Store {
    let cfg = crate::config::parse(std::path::Path::new("snap.yaml"), SWEEP).unwrap();
    let lock = crate::store::owner::DirLock::for_results(dir).unwrap();
    let marker = crate::store::owner::Marker::new("snap", "x");
    let store = Store::create(dir, lock, &marker).unwrap();
    let pairs = vec![
        spec(RunDtype::F32, false),
        spec(RunDtype::F32, true),
        spec(RunDtype::F16, false),
        spec(RunDtype::F16, true),
    ];
    let limits = |d| DtypeLimits {
        tolerance: cfg.tolerance(d, WeightFormat::Dequantized),
        drift_budget: cfg.drift_budget(d, WeightFormat::Dequantized),
    };
    let manifest = Manifest {
        tool: ToolInfo {
            name: "driftsweep".into(),
            version: "0.0.0".into(),
            candle_version: "0.0.0".into(),
            git_commit: "snapshot".into(),
        },
        sweep_name: "snap".into(),
        config_path: "snap.yaml".into(),
        config_sha256: "0".repeat(64),
        config_text: SWEEP.into(),
        resolved: ResolvedSettings {
            config: cfg.config.clone(),
            limits: [RunDtype::F32, RunDtype::F16]
                .into_iter()
                .map(|d| (d.to_string(), limits(d)))
                .collect(),
        },
        device: "cpu".into(),
        device_name: "a test CPU (2 threads)".into(),
        model: crate::store::ModelIdentity {
            source: "builtin:tiny-llama".into(),
            architecture: "llama".into(),
            sha256: "1".repeat(64),
            context_len: 2048,
            vocab_size: 4,
            sliding_window: None,
        },
        continuation: "sample".into(),
        pairs: pairs.clone(),
        tokens: BTreeMap::from([(
            "p0/seed0".to_string(),
            SequenceRecord {
                prompt: vec![1, 2, 3],
                continuation: vec![3, 1],
            },
        )]),
        load_groups: vec![LoadGroup {
            engine: Default::default(),
            weights: Default::default(),
            dtype: RunDtype::F32,
            runs: true,
            reference: true,
            yardstick: true,
        }],
        model_loads: vec![ModelLoad {
            engine: Default::default(),
            weights: Default::default(),
            implementation: "driftsweep".into(),
            dtype: RunDtype::F32,
            device: "cpu".into(),
            load_s: 0.25,
            purpose: "continuation+runs".into(),
            lanes: 1,
            threads_per_lane: 2,
        }],
        started_at: T0.into(),
        finished_at: Some(T0.into()),
        wall_s: Some(1.5),
        sessions: vec![Session {
            started_at: T0.into(),
            finished_at: Some(T0.into()),
            wall_s: Some(1.5),
            reused_pairs: 0,
            planned_pairs: 4,
            interrupted: false,
            tool: None,
        }],
        shard: None,
        merged: None,
    };
    store.write_manifest(&manifest).unwrap();
    let base = [1.0, 2.0, 3.0, 0.5, 4.0, 1.0, 0.0, 0.0];
    let drifted = [1.0, 2.0, 3.0, 0.5, 4.0, 1.0, 0.0, 1e-4];
    // Position 4's top logit moves from index 0 (margin 3) to index 1: a wide-margin flip.
    let flipped = [1.0, 2.0, 3.0, 0.5, 0.0, 5.0, 0.0, 0.0];
    let b32 = cfg.drift_budget(RunDtype::F32, WeightFormat::Dequantized);
    let t32 = cfg.tolerance(RunDtype::F32, WeightFormat::Dequantized);
    for (spec, rec) in [
        (&pairs[0], compared(&pairs[0], base, drifted, b32)),
        (&pairs[1], compared(&pairs[1], base, flipped, t32)),
    ] {
        store.write_pair(&rec).unwrap();
        for (mode, wall) in [(Mode::Prefill, 0.125), (Mode::Decode, 0.5)] {
            store
                .write_run(&run(spec, mode, RunStatus::Ok, wall))
                .unwrap();
        }
    }
    store
        .write_pair(&PairRecord {
            spec: pairs[2].clone(),
            verdict: PairVerdict::Skipped,
            reason: "f16 is not supported on this device".into(),
            metrics: None,
            limits: cfg.drift_budget(RunDtype::F16, WeightFormat::Dequantized),
            yardstick: None,
            divergence_search: None,
            reference: None,
        })
        .unwrap();
    for mode in [Mode::Prefill, Mode::Decode] {
        store
            .write_run(&run(&pairs[2], mode, RunStatus::Skipped, 0.0))
            .unwrap();
    }
    store
}

#[test]
fn the_report_judges_from_the_records_and_counts_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let r = build(&results(dir.path())).unwrap();
    assert_eq!(r.verdict, GlobalVerdict::Fail, "{}", r.verdict_reason);
    let c = &r.counts;
    assert_eq!(
        (
            c.pairs,
            c.expected_drift,
            c.fail_equiv,
            c.skipped,
            c.incomplete
        ),
        (4, 1, 1, 1, 1)
    );
    assert_eq!((c.runs, c.runs_ok, c.runs_skipped), (8, 4, 2));
    let missing = r
        .pairs
        .iter()
        .find(|p| p.spec.dtype == RunDtype::F16 && p.spec.kv_aligned);
    let missing = missing.unwrap();
    assert_eq!(missing.verdict, PairVerdict::Incomplete);
    assert_eq!(missing.prefill.status, "missing");
    // The limits come from the typed manifest, per dtype.
    assert_eq!(r.limits.len(), 2);
    assert_eq!(r.limits["f32"].tolerance.max_abs_diff(), 4e-4);
    let drift = &r.drift_characterization;
    assert_eq!(drift.len(), 1, "only f32 kv_aligned=false was compared");
    assert_eq!(drift[0].max_abs_max, 1e-4);
}

#[test]
fn a_report_with_nothing_compared_never_says_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = results(dir.path());
    for spec in [spec(RunDtype::F32, false), spec(RunDtype::F32, true)] {
        std::fs::remove_file(dir.path().join("pairs").join(format!("{}.json", spec.id))).unwrap();
    }
    let r = render(&store).unwrap();
    assert_eq!(r.verdict(), GlobalVerdict::Incomplete);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(!md.contains("**PASS**"), "{md}");
    assert!(md.contains("**INCOMPLETE** — no pair was compared"), "{md}");
}

#[test]
fn report_md_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let r = build(&results(dir.path())).unwrap();
    insta::assert_snapshot!(render_markdown(&r).unwrap());
}

#[test]
fn report_json_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = results(dir.path());
    // report.json's pairs are whole (`report_json_streamed_is_the_whole_report_serialized`).
    insta::assert_json_snapshot!(whole(&store));
}

#[test]
fn a_pair_whose_run_record_was_deleted_is_incomplete_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = results(dir.path());
    let before = build(&store).unwrap();
    let drifted = spec(RunDtype::F32, false);
    let p = |r: &ReportJson| {
        r.pairs
            .iter()
            .find(|p| p.spec.id == drifted.id)
            .map(|p| (p.verdict, p.reason.clone()))
            .unwrap()
    };
    // The control: with both records the pair is compared.
    assert!(p(&before).0.is_compared(), "{:?}", p(&before));
    let run = format!("runs/{}.json", drifted.run_id(Mode::Decode));
    std::fs::remove_file(dir.path().join(&run)).unwrap();
    let after = build(&store).unwrap();
    let (verdict, reason) = p(&after);
    assert_eq!(verdict, PairVerdict::Incomplete, "{reason}");
    assert!(reason.contains(&run), "{reason}");
    assert_ne!(after.verdict, GlobalVerdict::Pass);
}

#[test]
fn every_file_a_report_writes_is_one_start_over_knows() {
    let dir = tempfile::tempdir().unwrap();
    let store = results(dir.path());
    render(&store).unwrap();
    let known = |n: &str| {
        FILES.contains(&n)
            || crate::store::owner::OTHER_FILES.contains(&n)
            || [
                crate::store::MANIFEST,
                crate::store::owner::MARKER,
                crate::store::owner::LOCK,
            ]
            .contains(&n)
            || crate::store::owner::SUBDIRS.contains(&n)
    };
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            known(&name),
            "`{name}` is written but --start-over would not remove it"
        );
    }
}

#[test]
fn a_template_that_never_finishes_is_stopped() {
    let endless = "{% for a in range(end=100000) %}{% for b in range(end=100000) %}\
                   {% endfor %}{% endfor %}";
    let ctx = serde_json::json!({});
    let e = render_within("t", endless, &ctx, std::time::Duration::from_millis(200)).unwrap_err();
    assert!(e.to_string().contains("took longer"), "{e}");
    // The control: a template that ends renders within the same limit.
    let ok = render_within("t", "{{ 1 + 1 }}", &ctx, std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(ok, "2");
}

#[test]
fn a_template_that_writes_without_end_is_stopped_at_the_output_cap() {
    // 10^10 lines of output: the cap ends it long before memory runs out (the time limit
    // here is far beyond what writing 64 MiB takes).
    let endless = "{% for a in range(end=100000) %}{% for b in range(end=100000) %}\
                   a line of output that repeats\n{% endfor %}{% endfor %}";
    let ctx = serde_json::json!({});
    let e = render_within("t", endless, &ctx, std::time::Duration::from_secs(120)).unwrap_err();
    assert!(e.to_string().contains("grew past 64 MiB"), "{e}");
    // The control: output just under the cap renders whole.
    let big = "{% for a in range(end=1000) %}{% for b in range(end=1000) %}\
               0123456789{% endfor %}{% endfor %}";
    let ok = render_within("t", big, &ctx, std::time::Duration::from_secs(120)).unwrap();
    assert_eq!(ok.len(), 10_000_000);
}

#[test]
fn the_sample_renders_the_built_in_template_and_catches_a_render_failure() {
    let dir = tempfile::tempdir().unwrap();
    let r = build(&results(dir.path())).unwrap();
    let pairs: Vec<PairSpec> = r.pairs.iter().map(|p| p.spec.clone()).collect();
    let s = sample(r.sweep.clone(), r.model.clone(), "cpu", "sample", &pairs);
    check_render(REPORT_TEMPLATE, &s).unwrap();
    // Parses, but names a variable the report does not have.
    let e = check_render("{{ nowhere.at_all }}", &s).unwrap_err();
    assert!(e.contains("nowhere"), "{e}");
}

#[test]
fn the_trace_sample_renders_the_built_in_trace_template_and_catches_a_render_failure() {
    let ids = vec!["p0.s4.f32.kv1.seed0".to_string()];
    let on = crate::config::TraceOn::default();
    trace::check_render(trace::TRACE_TEMPLATE, "s", on, None, &ids).unwrap();
    let e = trace::check_render("{{ nowhere.at_all }}", "s", on, None, &ids).unwrap_err();
    assert!(e.contains("nowhere"), "{e}");
}

/// report.html's structure: its title, headings, table headers, element ids and plots, in
/// document order; the SVGs' contents (pixels, not structure) are left out.
fn html_outline(html: &str) -> String {
    let attr = |tag: &str, name: &str| {
        let key = format!(" {name}=\"");
        tag.find(&key).map(|i| {
            let v = &tag[i + key.len()..];
            v[..v.find('"').unwrap_or(v.len())].to_string()
        })
    };
    let strip = |s: &str| {
        let mut out = String::new();
        let mut in_tag = false;
        for c in s.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let mut lines = Vec::new();
    let mut headers: Vec<String> = Vec::new();
    let mut pos = 0;
    while let Some(off) = html[pos..].find('<') {
        let start = pos + off;
        let end = start + html[start..].find('>').expect("a closed tag");
        let tag = &html[start + 1..end];
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
            .collect();
        for a in ["id", "data-plot", "data-plot-count"] {
            if let Some(v) = attr(tag, a) {
                lines.push(format!("{name} {a}={v}"));
            }
        }
        pos = end + 1;
        match name.as_str() {
            "svg" => {
                lines.push("svg …".into());
                pos += html[pos..].find("</svg>").expect("a closed svg");
            }
            "title" | "h1" | "h2" | "h3" | "th" => {
                let close = pos + html[pos..].find(&format!("</{name}>")).unwrap();
                let text = strip(&html[pos..close]);
                if name == "th" {
                    headers.push(text);
                } else {
                    lines.push(format!("{name}: {text}"));
                }
            }
            "/tr" if !headers.is_empty() => {
                lines.push(format!("| {} |", headers.join(" | ")));
                headers.clear();
            }
            _ => {}
        }
    }
    lines.join("\n")
}

#[test]
fn report_html_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = results(dir.path());
    let r = build(&store).unwrap();
    let html = html::render_html(&store, &r).unwrap();
    insta::assert_snapshot!(html_outline(&html));
}

#[test]
fn report_junit_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let r = build(&results(dir.path())).unwrap();
    insta::assert_snapshot!(junit::build(&r).to_string().unwrap());
}

#[test]
fn diff_md_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, new) = (tmp.path().join("base"), tmp.path().join("new"));
    for d in [&base, &new] {
        render(&results(d)).unwrap();
    }
    // NEW drifts three times as far in the pair that drifted, and its KL grows with it.
    let path = new.join(REPORT_JSON);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for p in json["pairs"].as_array_mut().unwrap() {
        if p["verdict"] == "EXPECTED_DRIFT" {
            for k in ["max_abs_diff", "mean_abs_diff", "kl_mean", "kl_max"] {
                let v = p["metrics"][k].as_f64().unwrap();
                p["metrics"][k] = serde_json::json!(v * 3.0 + 1e-3);
            }
            // Past its drift budget now, so its verdict says so (`diff` judges stored
            // verdicts again and refuses one its metrics contradict).
            p["verdict"] = serde_json::json!("FAIL_DRIFT");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let d = crate::diff::diff(&base, &new, crate::diff::DiffOptions::default()).unwrap();
    let md = crate::diff::markdown(&d)
        .replace(&base.display().to_string(), "[BASE]")
        .replace(&new.display().to_string(), "[NEW]");
    insta::assert_snapshot!(md);
}

/// The report with its pairs whole, as report.json holds them.
fn whole(store: &Store) -> ReportJson {
    let mut r = build(store).unwrap();
    let m = store.manifest().unwrap();
    r.pairs = r
        .pairs
        .iter()
        .map(|p| aggregate::read_pair(store, &m, &p.spec).unwrap().0)
        .collect();
    r
}

/// `results` grown to `n` pairs: copies of its drifting f32 pair under new seeds, written
/// without the store's fsyncs (thousands of them would make the test slow, not stronger).
fn many(dir: &std::path::Path, n: usize) -> Store {
    let store = results(dir);
    let mut m = store.manifest().unwrap();
    let first = m.pairs[0].clone();
    let rec = store.pair(&first).unwrap().unwrap();
    let write = |rel: String, bytes: Vec<u8>| std::fs::write(dir.join(rel), bytes).unwrap();
    for seed in 1..=(n - m.pairs.len()) as u64 {
        let spec = PairSpec::new("p0", 2, RunDtype::F32, false, seed);
        let pair = PairRecord {
            spec: spec.clone(),
            ..rec.clone()
        };
        let bytes = serde_json::to_vec_pretty(&pair).unwrap();
        write(format!("pairs/{}.json", spec.id), bytes);
        for (mode, wall) in [(Mode::Prefill, 0.125), (Mode::Decode, 0.5)] {
            let r = run(&spec, mode, RunStatus::Ok, wall);
            write(
                format!("runs/{}.json", r.id),
                serde_json::to_vec_pretty(&r).unwrap(),
            );
        }
        m.pairs.push(spec);
    }
    store.write_manifest(&m).unwrap();
    store
}

#[test]
fn report_json_streamed_is_the_whole_report_serialized() {
    let dir = tempfile::tempdir().unwrap();
    let store = results(dir.path());
    render(&store).unwrap();
    let written = std::fs::read_to_string(dir.path().join(REPORT_JSON)).unwrap();
    // The report keeps its pairs without their per-position series; report.json has them.
    let slim = build(&store).unwrap();
    assert!(
        slim.pairs
            .iter()
            .flat_map(|p| &p.metrics)
            .all(|m| m.per_pos_kl.is_empty())
    );
    let r = whole(&store);
    assert!(
        r.pairs
            .iter()
            .flat_map(|p| &p.metrics)
            .any(|m| !m.per_pos_kl.is_empty())
    );
    assert_eq!(written, serde_json::to_string_pretty(&r).unwrap());
}

#[test]
fn a_report_of_many_pairs_lists_the_least_headroom_and_counts_every_pair() {
    let n = 2 * markdown::SHOWN_PAIRS;
    let dir = tempfile::tempdir().unwrap();
    let store = many(dir.path(), n);
    render(&store).unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let (md, html, json) = (read(REPORT_MD), read(REPORT_HTML), read(REPORT_JSON));
    let note = format!(
        "{n} pairs: the tables list the {} with the least headroom",
        markdown::SHOWN_PAIRS
    );
    assert!(md.contains(&note) && html.contains(&note), "{note}");
    // One section per listed pair in report.md, one table row each in report.html.
    assert_eq!(md.matches("\n### ").count(), markdown::SHOWN_PAIRS);
    assert_eq!(
        html.matches("<tr data-pair=").count(),
        markdown::SHOWN_PAIRS
    );
    // The failing and incomplete pairs are among those listed (skipped ones rank last).
    let r = build(&store).unwrap();
    assert_eq!(r.counts.pairs, n);
    let worst = |p: &&PairJson| p.verdict.is_fail() || p.verdict == PairVerdict::Incomplete;
    assert_eq!(r.pairs.iter().filter(worst).count(), 2);
    for p in r.pairs.iter().filter(worst) {
        assert!(md.contains(&format!("| {} |", p.spec.id)), "{}", p.spec.id);
    }
    // report.json and the JUnit report hold every pair.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["pairs"].as_array().unwrap().len(), n);
    assert_eq!(read(REPORT_JUNIT).matches("<testcase ").count(), n + 1);
    // The drift plot draws a bounded number of points, not one per pair.
    let circles = |s: &str| s.matches("<circle").count();
    assert!(
        circles(&html) < 4 * plots::COLUMN_POINTS + markdown::SHOWN_PAIRS,
        "{}",
        circles(&html)
    );
}

#[test]
fn a_report_of_few_pairs_lists_every_pair_and_says_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = results(dir.path());
    render(&store).unwrap();
    let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
    assert!(!md.contains("with the least headroom"), "{md}");
    assert_eq!(md.matches("\n### ").count(), 4);
}
