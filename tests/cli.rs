//! Integration tests: run the binary on real sweep files and read what it writes.

use driftsweep::exit;
use serde_json::Value;

mod common;
use common::{SMALL, bin, code, read_json, run, small_on, stderr, text, write};

#[test]
fn run_writes_a_complete_results_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "small.yaml", SMALL);
    let out = tmp.path().join("res");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::PASS, "stderr: {}", stderr(&o));

    let r = read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "PASS", "{}", r["verdict_reason"]);
    assert_eq!(r["tool"]["name"], "driftsweep");
    assert!(
        r["tool"]["candle_version"]
            .as_str()
            .unwrap()
            .starts_with("0.")
    );
    assert_eq!(r["sweep"]["name"], "small");
    assert_eq!(r["sweep"]["config_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["model"]["source"], "builtin:tiny-llama");
    assert_eq!(r["model"]["architecture"], "llama");
    let c = &r["counts"];
    assert_eq!(c["pairs"], 2 * 2 * 2 * 2);
    assert_eq!(c["runs"], 32);
    assert_eq!(c["pass_equiv"], 8);
    assert_eq!(c["expected_drift"], 8);
    // f32 reference (also used by the f32 runs) + f16: one load per group.
    assert_eq!(r["model_loads"], 2);
    assert_eq!(r["model_loads"], r["model_load_groups"]);
    assert!(r["wall_s"].as_f64().unwrap() > 0.0);

    let pairs = r["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 16);
    // kv_aligned 0 and 1 share one prefill per (prompt, span, dtype, seed): the second pair's
    // prefill names the first's, and their kept logits are the same bytes.
    assert_eq!(c["runs_reused"], 8);
    for p in pairs.iter().filter(|p| p["kv_aligned"] == true) {
        let twin = p["id"].as_str().unwrap().replace(".kv1.", ".kv0.");
        assert_eq!(
            p["prefill"]["reused_from"],
            format!("{twin}.prefill"),
            "{p}"
        );
        let mine = std::fs::read(out.join(p["prefill"]["logits_file"].as_str().unwrap())).unwrap();
        let theirs = std::fs::read(out.join(format!("logits/{twin}.prefill.safetensors"))).unwrap();
        assert_eq!(mine, theirs);
    }
    assert!(
        pairs
            .iter()
            .filter(|p| p["kv_aligned"] == false)
            .all(|p| p["prefill"].get("reused_from").is_none())
    );
    for p in pairs {
        let m = &p["metrics"];
        for k in [
            "max_abs_diff",
            "p99_abs_diff",
            "mean_abs_diff",
            "top1_agreement",
            "kl_mean",
            "kl_p99",
            "kl_max",
            "first_divergent_pos",
            "first_top1_flip",
            "non_finite",
        ] {
            assert!(m.get(k).is_some(), "metric {k} missing in {}", p["id"]);
        }
        let span = p["span"].as_u64().unwrap() as usize;
        assert_eq!(m["per_pos_max_abs"].as_array().unwrap().len(), span);
        if p["dtype"] == "f32" {
            assert!(m["max_abs_diff"].as_f64().unwrap() < 1e-4, "{}", p["id"]);
        }
        for mode in ["prefill", "decode"] {
            assert_eq!(p[mode]["status"], "ok");
            assert!(p[mode]["wall_s"].as_f64().unwrap() > 0.0);
            // keep_logits: a safetensors file of span × vocab f32 values.
            let f = out.join(p[mode]["logits_file"].as_str().unwrap());
            let len = std::fs::metadata(&f).unwrap().len() as usize;
            assert!(len > span * 1024 * 4, "{}: {len} bytes", f.display());
            let run_id = format!("{}.{mode}", p["id"].as_str().unwrap());
            let rec = read_json(&out.join("runs").join(format!("{run_id}.json")));
            assert_eq!(rec["status"], "ok");
        }
    }
    // Text prompt p0_short: BOS + tokens, same prompt ids for every seed.
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(
        m["tokens"]["r6/seed0"]["prompt"].as_array().unwrap().len(),
        6
    );
    assert_eq!(
        m["tokens"]["r6/seed0"]["continuation"]
            .as_array()
            .unwrap()
            .len(),
        9
    );

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "## Global Verdict",
        "**PASS**",
        "## Counting Semantics: Runs vs Pairs",
        "**Total runs:** 32",
        "**Total pairs:** 16",
        "## Observations",
        "kv_aligned=0 produced bit-identical logits",
        "## Comparison Results",
        "## Drift Characterization (kv_aligned=0)",
        "## Tolerances and Drift Budgets",
        "## Performance Profiling",
        "| driftsweep | dequantized | 9 | f16 | decode |",
    ] {
        assert!(md.contains(section), "report.md lacks `{section}`:\n{md}");
    }
    // One row per pair in the main table (`| # | prompt | ...`), one section per pair.
    assert_eq!(
        md.lines()
            .filter(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                cells.len() > 3
                    && cells[1].parse::<usize>().is_ok()
                    && ["p0_short", "r6"].contains(&cells[2])
            })
            .count(),
        16
    );
    assert_eq!(
        md.matches("\n| engine / weights | driftsweep / dequantized |")
            .count(),
        16
    );

    // `report` re-renders the same content from the directory alone.
    std::fs::remove_file(out.join("report.md")).unwrap();
    let o = run(&["report", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::PASS, "{}", stderr(&o));
    let again = read_json(&out.join("report.json"));
    assert_eq!(again["pairs"], r["pairs"]);
    assert_eq!(again["counts"], r["counts"]);
    assert!(out.join("report.md").is_file());

    // A second sweep of the same config gives bit-identical metrics on the same device.
    let out2 = tmp.path().join("res2");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), exit::PASS, "{}", stderr(&o));
    let r2 = read_json(&out2.join("report.json"));
    for (a, b) in pairs.iter().zip(r2["pairs"].as_array().unwrap()) {
        assert_eq!(a["metrics"], b["metrics"], "{}", a["id"]);
    }
}

#[test]
fn plan_prints_runs_and_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(
        tmp.path(),
        "s.yaml",
        &format!("{SMALL}exclude:\n  - {{dtype: f16, span: 9}}\n"),
    );
    let o = run(&["plan", cfg.to_str().unwrap(), "--json"]);
    assert_eq!(code(&o), exit::PASS, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["counts"]["pairs"], 12);
    assert_eq!(v["counts"]["runs"], 24);
    assert_eq!(v["counts"]["excluded"], 4);
    assert_eq!(v["runs"][0]["id"], "p0_short.s4.f32.kv0.seed0.prefill");
    let o = run(&["plan", cfg.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("12 pairs, 24 runs (4 pairs excluded)"),
        "{table}"
    );
    assert!(table.contains("r6.s9.f32.kv1.seed0.decode"), "{table}");
    assert!(!tmp.path().join("results").exists(), "plan writes nothing");
}

#[test]
fn bad_input_exits_2_naming_file_and_field_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown_key",
            SMALL.replace("keep_logits: true", "keep_logits: true\nkeep_logit: 1"),
            "unknown field `keep_logit`",
        ),
        (
            "wrong_type",
            SMALL.replace("seed: [0]", "seed: [zero]"),
            "sweep.seed[0]",
        ),
        (
            "span_too_long",
            SMALL.replace("span: [4, 9]", "span: [4, 2040]"),
            "context of 2048",
        ),
        (
            "duplicate_prompt",
            SMALL.replace("id: r6", "id: p0_short"),
            "duplicate prompt id",
        ),
        (
            "empty_list",
            SMALL.replace("dtype: [f32, f16]", "dtype: []"),
            "sweep.dtype",
        ),
        (
            "zero_span",
            SMALL.replace("span: [4, 9]", "span: [0]"),
            "sweep.span[0]",
        ),
        (
            "bad_dtype",
            SMALL.replace("dtype: [f32, f16]", "dtype: [f8]"),
            "unknown variant `f8`",
        ),
        (
            "unknown_model",
            SMALL.replace("builtin:tiny-llama", "builtin:huge"),
            "no built-in model `huge`",
        ),
        (
            "yaml_syntax",
            SMALL.replace("seed: [0]", "seed: [0"),
            "line",
        ),
        (
            "bad_kv",
            SMALL.replace("kv_aligned: [false, true]", "kv_aligned: [yes please]"),
            "sweep.kv_aligned",
        ),
    ];
    for (name, text, words) in cases {
        let cfg = write(tmp.path(), &format!("{name}.yaml"), &text);
        let out = tmp.path().join(format!("out_{name}"));
        let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(code(&o), exit::BAD_INPUT, "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.yaml")) || name == "unknown_model",
            "{name}: {err}"
        );
        assert!(err.contains(words), "{name}: expected `{words}` in: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(
            !out.exists(),
            "{name}: no results before the input is valid"
        );
    }
    let o = run(&["run", tmp.path().join("missing.yaml").to_str().unwrap()]);
    assert_eq!(code(&o), exit::BAD_INPUT);
    assert!(stderr(&o).contains("missing.yaml"), "{}", stderr(&o));
    // An output directory that cannot be created.
    let cfg = write(tmp.path(), "ok.yaml", SMALL);
    let blocker = write(tmp.path(), "a_file", "x");
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        blocker.join("res").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot create the results directory"),
        "{}",
        stderr(&o)
    );
    // A results directory of a different sweep file is refused, and left as it was.
    let res = tmp.path().join("res_other");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", res.to_str().unwrap()]);
    assert_eq!(code(&o), exit::PASS, "{}", stderr(&o));
    let before = std::fs::read(res.join("report.json")).unwrap();
    let other = write(
        tmp.path(),
        "other.yaml",
        &SMALL.replace("seed: [0]", "seed: [1]"),
    );
    let o = run(&[
        "run",
        other.to_str().unwrap(),
        "--out",
        res.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("different sweep file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(res.join("report.json")).unwrap(), before);
    // `report` on a directory that holds no results.
    let o = run(&["report", tmp.path().to_str().unwrap()]);
    assert_eq!(code(&o), exit::BAD_INPUT);
    assert!(stderr(&o).contains("no manifest.json"), "{}", stderr(&o));
}

#[test]
fn an_unbuilt_device_skips_every_pair_and_never_passes() {
    if cfg!(any(feature = "cuda", feature = "metal")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(
        tmp.path(),
        "gpu.yaml",
        &SMALL.replace("device: cpu", "device: cuda:0"),
    );
    let out = tmp.path().join("res");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::INCOMPLETE, "{}", stderr(&o));
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "INCOMPLETE");
    assert_eq!(r["counts"]["skipped"], 16);
    assert_eq!(r["model_loads"], 0);
    assert!(
        r["pairs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("without the `cuda` feature")
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("**INCOMPLETE**") && !md.contains("**PASS**"),
        "{md}"
    );
    assert!(md.contains("No pair was compared"), "{md}");

    // `--device` overrides the file: Metal on this build is SKIPPED too, with its own reason,
    // and `auto` falls back to the CPU only because no GPU back-end is built in.
    let on_device = |device: &str| {
        let out = tmp.path().join(format!("res_{device}"));
        let o = run(&[
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            device,
        ]);
        (code(&o), stderr(&o), read_json(&out.join("report.json")))
    };
    let (c, err, r) = on_device("metal");
    assert_eq!(c, 3, "{err}");
    assert_eq!(r["counts"]["skipped"], 16);
    assert!(
        r["pairs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("without the `metal` feature")
    );
    let (c, err, r) = on_device("auto");
    assert_eq!(c, 0, "{err}");
    assert_eq!(r["device"], "cpu");
    let o = run(&["run", cfg.to_str().unwrap(), "--device", "tpu:0"]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", stderr(&o));
    assert!(stderr(&o).contains("--device"), "{}", stderr(&o));
}

#[test]
fn a_pair_outside_its_limits_fails_the_sweep_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    // A zero tolerance in f32: prefill and decode differ by ~1e-5, so kv_aligned=1 fails,
    // while kv_aligned=0 keeps the default budget and stays EXPECTED_DRIFT.
    let text = SMALL.replace("dtype: [f32, f16]", "dtype: [f32]")
        + "tolerances:\n  f32: {max_abs_diff: 0.0}\n";
    let cfg = write(tmp.path(), "strict.yaml", &text);
    let out = tmp.path().join("res");
    let o = run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code(&o), exit::FAIL, "{}", stderr(&o));
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["verdict"], "FAIL");
    assert_eq!(r["counts"]["fail_equiv"], 4);
    assert_eq!(r["counts"]["expected_drift"], 4);
    let failed = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["verdict"] == "FAIL_EQUIV")
        .unwrap();
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("max_abs_diff") && reason.contains("> 0"),
        "{reason}"
    );
    // The first divergent position is the first span position with any difference.
    let m = &failed["metrics"];
    let first = m["first_divergent_pos"].as_u64().unwrap() as usize;
    let start = failed["prefill"]["span_start"].as_u64().unwrap() as usize;
    let span = failed["span"].as_u64().unwrap() as usize;
    assert!(
        (start..start + span).contains(&first),
        "{first} not in the span at {start}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("**FAIL**") && md.contains("## Failures, Incomplete and Skipped Pairs"),
        "{md}"
    );
    assert!(md.contains("4 pairs failed"), "{md}");
}

#[test]
fn a_write_error_mid_sweep_exits_2_instead_of_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "small.yaml", SMALL);
    let out = tmp.path().join("res");
    // A results directory of this sweep (driftsweep writes only into its own), killed after
    // its first run record; a directory where that record must go makes the resumed
    // session's write fail.
    let first = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--exit-after-runs",
        "1",
    ]);
    assert_eq!(
        first.status.code(),
        Some(exit::KILLED),
        "{}",
        stderr(&first)
    );
    let record = out.join("runs/p0_short.s4.f32.kv0.seed0.prefill.json");
    let _ = std::fs::remove_file(&record);
    std::fs::create_dir_all(&record).unwrap();
    let mut child = bin()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("driftsweep hung after a write error");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let o = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write"), "{}", stderr(&o));
}

/// Applies the `Fix:` of a combination error to sweep-file text, as a person would: the
/// entries it says to remove, the keys it says to drop, the `exclude` entries it says to add.
fn apply_fix(yaml: &str, message: &str) -> String {
    let fix = message
        .lines()
        .find_map(|l| l.strip_prefix("Fix: "))
        .unwrap_or_else(|| panic!("no fix in {message}"));
    let mut v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    for step in fix.trim_end_matches('.').split("; ") {
        if let Some(entries) = step.strip_prefix("add to `exclude:` the entries ") {
            let add: Vec<serde_yaml::Value> = serde_yaml::from_str(entries).unwrap();
            let m = v.as_mapping_mut().unwrap();
            let ex = m
                .entry("exclude".into())
                .or_insert(serde_yaml::Value::Sequence(vec![]));
            ex.as_sequence_mut().unwrap().extend(add);
        } else if let Some(rest) = step.strip_prefix("remove ") {
            let (names, key) = rest.split_once(" from `sweep.").unwrap();
            let key = key.split('`').next().unwrap();
            let gone: Vec<&str> = names.split(", ").map(|n| n.trim_matches('`')).collect();
            let sweep = v["sweep"].as_mapping_mut().unwrap();
            let list = sweep[key].as_sequence_mut().unwrap();
            list.retain(|x| !gone.contains(&x.as_str().unwrap()));
            if list.is_empty() {
                assert!(step.contains(&format!("drop `{key}:`")), "{step}");
                sweep.remove(key);
            }
        } else {
            panic!("a step this test cannot apply: {step}");
        }
    }
    serde_yaml::to_string(&v).unwrap()
}

#[test]
fn every_impossible_combination_is_reported_at_once_with_a_fix_that_works() {
    let tmp = tempfile::tempdir().unwrap();
    let quantized = small_on("builtin:tiny-llama")
        .replace("  seed: [0]\n", "  seed: [0]\n  weights: [quantized]\n");
    let wide = SMALL.replace(
        "  seed: [0]\n",
        "  seed: [0]\n  engine: [driftsweep, candle-transformers]\n  weights: [dequantized, quantized]\n",
    );
    assert_ne!(wide, SMALL);
    for (name, yaml) in [("quantized", quantized), ("wide", wide)] {
        let cfg = write(tmp.path(), &format!("{name}.yaml"), &yaml);
        let o = run(&["plan", cfg.to_str().unwrap()]);
        assert_eq!(code(&o), exit::BAD_INPUT, "{name}: {}", text(&o));
        let msg = stderr(&o);
        assert!(msg.contains("combinations cannot run"), "{name}: {msg}");
        assert!(!msg.contains("drop every pair"), "{name}: {msg}");
        if name == "quantized" {
            assert!(
                msg.contains("remove `quantized` from `sweep.weights`"),
                "{msg}"
            );
        } else {
            // Every impossible group is listed, one line each.
            assert!(msg.matches("\n  - engine `").count() >= 2, "{msg}");
        }
        let fixed = write(
            tmp.path(),
            &format!("{name}_fixed.yaml"),
            &apply_fix(&yaml, &msg),
        );
        let o = run(&["plan", fixed.to_str().unwrap()]);
        assert_eq!(code(&o), exit::PASS, "{name} after the fix: {}", text(&o));
    }
}

/// `plan` on `yaml` with its own cache directory (so the calibration is its own); stdout.
fn plan_text(dir: &std::path::Path, yaml: &str, extra: &[&str]) -> (i32, String) {
    let cfg = write(dir, "plan.yaml", yaml);
    let mut args = vec!["plan", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = bin()
        .args(&args)
        .env("DRIFTSWEEP_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap();
    (code(&o), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `run` of `yaml` (written to `dir/name`) into `dir/out`, without a progress bar.
fn run_into(
    dir: &std::path::Path,
    name: &str,
    yaml: &str,
    out: &str,
) -> (std::process::Output, std::path::PathBuf) {
    let cfg = write(dir, name, yaml);
    let out = dir.join(out);
    let o = run(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    (o, out)
}

#[test]
fn plan_says_the_cost_what_is_skipped_and_the_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, t) = plan_text(tmp.path(), SMALL, &[]);
    assert_eq!(c, exit::PASS, "{t}");
    for want in [
        "driftsweep dequantized f32",
        "driftsweep dequantized f16",
        "total",
        "estimated time: ",
        "calibrated now",
        "SKIPPED: none",
        "trace: none",
        "inject: none",
    ] {
        assert!(t.contains(want), "`{want}` missing:\n{t}");
    }
    // The calibration is cached: a second plan measures nothing.
    let (_, t) = plan_text(tmp.path(), SMALL, &[]);
    assert!(
        t.contains("cached calibration") && !t.contains("calibrated now"),
        "{t}"
    );
    // JSON carries the estimate with its per-group tokens.
    let (_, j) = plan_text(tmp.path(), SMALL, &["--json"]);
    let v: Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["estimate"]["total"]["pairs"], 16);
    assert!(v["estimate"]["total"]["seconds"].as_f64().unwrap() > 0.0);
    // Traces and faults are named.
    let probed = format!(
        "{SMALL}trace:\n  layers: [0, 1]\n  tensors: all\n  positions: last\n\
         inject:\n  tensor: mlp_out\n  layer: 1\n  epsilon: 0.01\n"
    );
    let (c, t) = plan_text(tmp.path(), &probed, &["--no-estimate"]);
    assert_eq!(c, exit::PASS, "{t}");
    assert!(t.contains("trace: layers [0,1]"), "{t}");
    assert!(t.contains("inject: ") && t.contains("mlp_out"), "{t}");
    assert!(!t.contains("estimated time"), "{t}");
}

#[test]
fn plan_skips_with_the_reason_the_run_gives() {
    // This test build has no CUDA: every pair is SKIPPED, and plan says so before the run.
    if driftsweep::run::open_device(driftsweep::config::DeviceSpec::Cuda(0)).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let yaml = SMALL.replace("device: cpu", "device: cuda");
    let (c, t) = plan_text(tmp.path(), &yaml, &[]);
    assert_eq!(c, exit::PASS, "{t}");
    assert!(t.contains("SKIPPED: 16 pair(s)"), "{t}");
    let (o, out) = run_into(tmp.path(), "cuda.yaml", &yaml, "res");
    assert_eq!(code(&o), exit::INCOMPLETE, "{}", stderr(&o));
    let r = read_json(&out.join("report.json"));
    // The same words: both come from the device check the run makes.
    let why = "device `cuda:0`: this binary was built without the `cuda` feature";
    assert!(t.contains(why), "{t}");
    for p in r["pairs"].as_array().unwrap() {
        assert_eq!(p["verdict"], "SKIPPED");
        assert!(p["reason"].as_str().unwrap().contains(why), "{p}");
    }
}

#[test]
fn the_run_summary_lists_every_file_written() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!("{SMALL}trace:\n  layers: [0]\n  tensors: [attn_out]\n  positions: last\n");
    let (o, out) = run_into(tmp.path(), "t.yaml", &yaml, "res");
    assert_eq!(code(&o), exit::PASS, "{}", stderr(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    for f in driftsweep::report::FILES {
        assert!(out.join(f).is_file(), "{f} not written");
        assert!(
            summary.contains(&out.join(f).display().to_string()),
            "{f} not listed:\n{summary}"
        );
    }
}

#[test]
fn diff_shows_only_moved_pairs_past_twenty_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts: String = (0..41)
        .map(|i| format!("  - id: r{i:02}\n    random_tokens: 4\n"))
        .collect();
    let yaml = format!(
        "name: many\nmodel:\n  source: builtin:tiny-llama\ndevice: cpu\nprompts:\n{prompts}\
         continuation: random\nsweep:\n  span: [2]\n  dtype: [f32]\n  kv_aligned: [true]\n  seed: [0]\n"
    );
    let (o, base) = run_into(tmp.path(), "many.yaml", &yaml, "base");
    assert_eq!(code(&o), exit::PASS, "{}", stderr(&o));
    // NEW: the same results with one pair's drift grown a hundredfold past the floor.
    let new = tmp.path().join("new");
    std::fs::create_dir_all(&new).unwrap();
    let mut r = read_json(&base.join("report.json"));
    assert_eq!(r["pairs"].as_array().unwrap().len(), 41);
    let lim = r["pairs"][7]["limits"]["max_abs_diff"].as_f64().unwrap();
    r["pairs"][7]["metrics"]["max_abs_diff"] = Value::from(lim * 0.9);
    let moved = r["pairs"][7]["id"].as_str().unwrap().to_string();
    std::fs::write(new.join("report.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    let (b, n) = (base.to_str().unwrap(), new.to_str().unwrap());

    let o = run(&["diff", b, n]);
    let md = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| r")).collect();
    assert_eq!(rows.len(), 1, "{md}");
    assert!(rows[0].starts_with(&format!("| {moved} ")), "{md}");
    assert!(
        md.contains("40 unchanged pairs not shown; --all to show them"),
        "{md}"
    );
    // --all shows every pair; --changed is the same as the default here.
    let o = run(&["diff", b, n, "--all"]);
    let md = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| r")).count(),
        41,
        "{md}"
    );
    assert!(!md.contains("not shown"), "{md}");
    let o = run(&["diff", b, n, "--changed"]);
    let md = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| r")).count(),
        1,
        "{md}"
    );
}

#[test]
fn help_points_to_the_docs_and_examples() {
    for args in [&["--help"][..], &["run", "--help"], &["plan", "--help"]] {
        let o = run(args);
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(t.contains("docs/sweep-file.md"), "{args:?}: {t}");
        assert!(t.contains("configs/quickstart.yaml"), "{args:?}: {t}");
    }
}

/// A `reference:` section without `engine` settles on transformers in float64 where the
/// worker's python exists, else on the own decoder with a note; `plan` says which and why.
/// No section at all stays the own decoder wherever it runs.
#[test]
fn a_reference_without_an_engine_settles_on_what_is_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = SMALL
        .replace(
            "  source: builtin:tiny-llama",
            "  synthetic: {architecture: llama}",
        )
        .replace("dtype: [f32, f16]", "dtype: [f32]");
    let with = write(
        tmp.path(),
        "with.yaml",
        &format!("{synth}reference: {{}}\n"),
    );
    let without = write(tmp.path(), "without.yaml", &synth);
    let plan = |cfg: &std::path::Path, python: &str| {
        let o = bin()
            .env("DRIFTSWEEP_TRANSFORMERS_PYTHON", python)
            .args(["plan", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(code(&o), exit::PASS, "{}", text(&o));
        (String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o))
    };
    // Any existing file stands for an installed worker: plan starts none.
    let installed = std::env::current_exe().unwrap();
    let (out, err) = plan(&with, installed.to_str().unwrap());
    assert!(
        out.contains(
            "reference: transformers f64 (no engine named: settled on what is installed here)"
        ),
        "{out}"
    );
    assert!(!err.contains("note:"), "{err}");
    let (out, err) = plan(&with, "/nonexistent/python");
    assert!(
        out.contains("reference: own decoder f32 (no engine named"),
        "{out}"
    );
    assert!(
        err.contains("transformers worker is not installed"),
        "{err}"
    );
    for python in [installed.to_str().unwrap(), "/nonexistent/python"] {
        let (out, _) = plan(&without, python);
        assert!(
            out.contains("reference: own decoder f32 (no `reference:` section)"),
            "{out}"
        );
    }
    // Named, it is what it says whatever is installed; f64 for the own decoder is refused.
    let named = write(
        tmp.path(),
        "named.yaml",
        &format!("{synth}reference: {{dtype: f64}}\n"),
    );
    let o = bin()
        .env("DRIFTSWEEP_TRANSFORMERS_PYTHON", "/nonexistent/python")
        .args(["plan", named.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("reference.dtype"), "{}", stderr(&o));
}
