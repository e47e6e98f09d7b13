//! The model axis (docs/sweep-file.md, "Several models"): a sweep file with `models:` runs
//! one sub-sweep per model into `<out>/models/<id>/`, each exactly as its single-model file
//! would run, and writes `summary.json` / `summary.md` with the worst exit code.

use std::collections::BTreeMap;
use std::path::Path;

use driftsweep::exit;
use serde_json::Value;

mod common;

/// Two ids for the built-in model. `tiny` leaves span 8 out, so the fault at span 8 (a decode
/// run that raises) reaches only `tiny2`: PASS for one, INCOMPLETE for the other.
const TWO: &str = r#"
name: axis
models:
  tiny: builtin:tiny-llama
  tiny2: {source: "builtin:tiny-llama"}
prompts:
  - {id: p0, text: "What is the capital of France?"}
  - {id: r8, random_tokens: 8}
sweep:
  span: [4, 8]
  dtype: [f32]
  kv_aligned: [false, true]
  seed: [0]
exclude:
  - {model: tiny, span: 8}
inject: {fail_span: 8}
"#;

/// The single-model files the two sub-sweeps mean.
fn single(model_exclude: &str) -> String {
    TWO.replace(
        "models:\n  tiny: builtin:tiny-llama\n  tiny2: {source: \"builtin:tiny-llama\"}",
        "model: builtin:tiny-llama",
    )
    .replace("  - {model: tiny, span: 8}\n", model_exclude)
}

fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    common::bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary starts")
}

/// Pair id → (verdict, metrics) of a results directory's report.json.
fn pairs(dir: &Path) -> BTreeMap<String, (Value, Value)> {
    let r = common::read_json(&dir.join("report.json"));
    r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                (p["verdict"].clone(), p["metrics"].clone()),
            )
        })
        .collect()
}

#[test]
fn each_model_runs_as_its_single_model_sweep_and_the_worst_exit_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::write(d, "two.yaml", TWO);
    let o = run_in(d, &["run", "two.yaml", "--out", "out", "--no-progress"]);
    assert_eq!(common::code(&o), exit::INCOMPLETE, "{}", common::text(&o));
    for f in ["summary.json", "summary.md", "models/tiny/report.md"] {
        assert!(d.join("out").join(f).is_file(), "{f}");
    }
    let s = common::read_json(&d.join("out/summary.json"));
    assert_eq!(s["exit_code"], exit::INCOMPLETE);
    assert_eq!(s["verdict"], "INCOMPLETE");
    let m = s["models"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (&m[0]["id"], &m[0]["verdict"]),
        (&"tiny".into(), &"PASS".into())
    );
    assert_eq!(m[0]["source"], "builtin:tiny-llama");
    assert_eq!(m[0]["architecture"], "llama");
    assert_eq!(m[0]["dir"], "models/tiny");
    assert_eq!(
        (&m[1]["id"], &m[1]["verdict"]),
        (&"tiny2".into(), &"INCOMPLETE".into())
    );
    assert_eq!(m[1]["worst_pair_verdict"], "INCOMPLETE");
    assert!(!m[1]["errors"].as_array().unwrap().is_empty(), "{s}");
    // Counts per path × dtype × engine × weights × kv_aligned: tiny2 has 2 PASS_EQUIV or
    // EXPECTED_DRIFT pairs at span 4 and 2 INCOMPLETE at span 8 in each kv row.
    let rows = m[1]["counts"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{s}");
    assert_eq!(rows[0]["verdicts"]["INCOMPLETE"], 2, "{s}");
    // summary.md puts the worse model first.
    let md = std::fs::read_to_string(d.join("out/summary.md")).unwrap();
    assert!(
        md.find("`tiny2`").unwrap() < md.find("| `tiny` ").unwrap(),
        "{md}"
    );

    // The same sweeps as single-model files: the same pair ids, verdicts and metrics.
    common::write(d, "tiny.yaml", &single("  - {span: 8}\n"));
    common::write(d, "tiny2.yaml", &single(""));
    for (id, file) in [("tiny", "tiny.yaml"), ("tiny2", "tiny2.yaml")] {
        let out = format!("single_{id}");
        let o = run_in(d, &["run", file, "--out", &out, "--no-progress"]);
        assert_eq!(
            common::code(&o),
            m[if id == "tiny" { 0 } else { 1 }]["exit_code"],
            "{}",
            common::text(&o)
        );
        let sub = pairs(&d.join("out/models").join(id));
        assert!(!sub.is_empty());
        assert_eq!(sub, pairs(&d.join(&out)), "{id}");
    }

    // Run again: every sub-sweep resumes.
    let o = run_in(d, &["run", "two.yaml", "--out", "out", "--no-progress"]);
    assert_eq!(common::code(&o), exit::INCOMPLETE, "{}", common::text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("resumed: 4 pair(s)"), "{stdout}");

    // Commands that read one sweep's results point at models/<id>; a sub-directory works.
    let o = run_in(d, &["report", "out"]);
    assert_eq!(common::code(&o), exit::BAD_INPUT);
    assert!(
        common::stderr(&o).contains("models/<id>"),
        "{}",
        common::text(&o)
    );
    let o = run_in(d, &["diff", "out", "single_tiny"]);
    assert_eq!(common::code(&o), exit::BAD_INPUT);
    assert!(
        common::stderr(&o).contains("ids: tiny, tiny2"),
        "{}",
        common::text(&o)
    );
    let o = run_in(d, &["verify", "out/models/tiny"]);
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    let o = run_in(d, &["report", "out/models/tiny2"]);
    assert_eq!(common::code(&o), exit::INCOMPLETE, "{}", common::text(&o));
}

#[test]
fn a_model_that_cannot_load_is_an_error_row_and_the_others_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = TWO
        .replace(
            "  tiny2: {source: \"builtin:tiny-llama\"}",
            "  gone: missing.gguf",
        )
        .replace("inject: {fail_span: 8}\n", "");
    common::write(d, "s.yaml", &text);
    let o = run_in(d, &["plan", "s.yaml"]);
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("p0.s4.f32.kv0.seed0.prefill"), "{stdout}");
    assert!(
        stdout.contains("total over 2 model(s): 4 pairs"),
        "{stdout}"
    );
    assert!(
        common::stderr(&o).contains("`models.gone.source`"),
        "{}",
        common::text(&o)
    );

    let o = run_in(d, &["run", "s.yaml", "--no-progress"]);
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    // The default directory is results/<name>, as for one model.
    let top = d.join("results/axis");
    assert!(top.join("models/tiny/report.json").is_file());
    assert!(!top.join("models/gone").exists());
    let s = common::read_json(&top.join("summary.json"));
    let gone = &s["models"][1];
    assert_eq!(
        (&gone["status"], &gone["verdict"]),
        (&"error".into(), &"ERROR".into())
    );
    assert!(
        gone["errors"][0]
            .as_str()
            .unwrap()
            .contains("models.gone.source"),
        "{s}"
    );
    assert_eq!(s["models"][0]["verdict"], "PASS");
    assert_eq!(s["exit_code"], exit::BAD_INPUT);
}

#[test]
fn a_stop_leaves_the_later_models_not_run_and_the_next_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::write(d, "two.yaml", &TWO.replace("inject: {fail_span: 8}\n", ""));
    let args = ["run", "two.yaml", "--out", "out", "--no-progress"];
    let mut first = args.to_vec();
    first.extend(["--stop-after-runs", "3"]);
    let o = run_in(d, &first);
    assert_eq!(common::code(&o), exit::INTERRUPTED, "{}", common::text(&o));
    let s = common::read_json(&d.join("out/summary.json"));
    assert_eq!(s["interrupted"], true);
    assert_eq!(s["models"][1]["status"], "not_run", "{s}");
    let o = run_in(d, &args);
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
    let s = common::read_json(&d.join("out/summary.json"));
    assert_eq!(s["verdict"], "PASS", "{s}");
}

#[test]
fn the_model_axis_is_refused_where_it_cannot_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cases = [
        (
            TWO.replace("name: axis\n", "name: axis\nmodel: builtin:tiny-llama\n"),
            "`models`: `model:` and `models:` are both given",
        ),
        (
            TWO.replace("{model: tiny, span: 8}", "{model: tiny3, span: 8}"),
            "`exclude[0].model`: no model has id `tiny3`",
        ),
        (
            single("").replace("  seed: [0]", "  seed: [0]\n  model: [tiny]"),
            "`sweep.model`",
        ),
        (single("  - {model: tiny, span: 8}\n"), "`exclude[0].model`"),
    ];
    for (text, expect) in cases {
        let f = common::write(d, "bad.yaml", &text);
        let o = common::run(&["run", f.to_str().unwrap(), "--out", "unused"]);
        assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
        let e = common::stderr(&o);
        assert!(
            e.contains("bad.yaml") && e.contains(expect),
            "{expect}: {e}"
        );
    }
    let f = common::write(d, "two.yaml", TWO);
    let o = common::run(&["run", f.to_str().unwrap(), "--shard", "0/2"]);
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    assert!(
        common::stderr(&o).contains("--shard"),
        "{}",
        common::text(&o)
    );
    // A command that takes one model refuses a file with several.
    let o = common::run(&["slurm", f.to_str().unwrap(), "--shards", "2"]);
    assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
    assert!(
        common::stderr(&o).contains("`models`"),
        "{}",
        common::text(&o)
    );
    assert!(!d.join("unused").exists());
}
