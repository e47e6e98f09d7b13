//! Integration tests of issue 19's outputs: report.html, report.junit.xml, the llama.cpp-style
//! KL statistics in report.json, and `driftsweep diff` / `run --baseline`, on real sweeps of
//! the built-in model.

use std::path::Path;

use driftsweep::exit;
use serde_json::Value;

mod common;
use common::{code, read_json, run, text, write};

/// A small sweep; `extra` is appended (an `inject:` section, a device).
fn sweep(name: &str, extra: &str) -> String {
    format!(
        r#"
name: {name}
model: builtin:tiny-llama
prompts:
  - id: p0
    text: "What is the capital of France?"
  - id: r8
    random_tokens: 8
continuation: sample
sweep:
  span: [6, 12]
  dtype: [f32, f16]
  kv_aligned: [false, true]
  seed: [0]
{extra}
"#
    )
}

/// Runs `driftsweep run` on `yaml` into `dir/out`; returns the exit code and the directory.
fn run_sweep(dir: &Path, file: &str, yaml: &str, out: &str, args: &[&str]) -> (i32, String) {
    let cfg = write(dir, file, yaml);
    let out = dir.join(out);
    let mut all = vec![
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    all.extend_from_slice(args);
    let o = run(&all);
    (code(&o), out.to_str().unwrap().to_string())
}

fn junit(dir: &str) -> String {
    std::fs::read_to_string(Path::new(dir).join("report.junit.xml")).unwrap()
}

#[test]
fn quickstart_writes_a_self_contained_html_report_and_junit_that_parses_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("qs");
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/quickstart.yaml");
    let o = run(&["run", cfg, "--out", out.to_str().unwrap(), "--no-progress"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let r = read_json(&out.join("report.json"));
    let pairs = r["pairs"].as_array().unwrap();

    // report.html: verdict first, one plot per compared pair plus the dtype plots, nothing
    // fetched from anywhere, no script.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let verdict_at = html.find("id=\"verdict\"").expect("a verdict section");
    let first_plot = html.find("<figure class=\"plot").expect("plots");
    assert!(verdict_at < first_plot);
    assert!(html.contains("<p class=\"big\" id=\"verdict-value\">PASS</p>"));
    assert!(!html.contains("<script"), "no JavaScript needed or wanted");
    assert!(!html.contains("<link"), "no external stylesheet");
    for attr in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(
            !html.contains(attr),
            "{attr}: the page must not reach the network"
        );
    }
    let figures = html.matches("<figure class=\"plot").count();
    let dtypes = 3;
    // The pairs held to the reference get a figure each, at most 24 (worst first).
    let held = pairs.iter().filter(|p| !p["reference"].is_null()).count();
    let reference = html.matches("data-plot=\"reference:").count();
    assert_eq!(reference, held.min(24));
    assert_eq!(figures, pairs.len() + dtypes + reference);
    assert!(html.contains(&format!("data-plot-count=\"{figures}\"")));
    // Each figure holds an SVG that plotters drew (a polyline series at least).
    for part in html.split("<figure class=\"plot").skip(1) {
        let fig = &part[..part.find("</figure>").unwrap()];
        assert!(fig.contains("<svg") && (fig.contains("<polyline") || fig.contains("<circle")));
    }
    for p in pairs {
        assert!(html.contains(&format!("data-plot=\"pair:{}\"", p["id"].as_str().unwrap())));
    }

    // KL statistics: per pair, and pooled per dtype (both modes, then each).
    for p in pairs {
        let s = &p["kl_stats"];
        let m = &p["metrics"];
        assert_eq!(s["positions"], m["positions"], "{}", p["id"]);
        assert_eq!(
            s["kl"]["max"].as_f64().unwrap() as f32,
            m["kl_max"].as_f64().unwrap() as f32
        );
        let same = s["same_top_p"]["value"].as_f64().unwrap();
        assert!((same - m["top1_agreement"].as_f64().unwrap()).abs() < 1e-6);
        let (lo, hi) = (
            s["same_top_p"]["ci95_low"].as_f64().unwrap(),
            s["same_top_p"]["ci95_high"].as_f64().unwrap(),
        );
        assert!(lo <= same && same <= hi && lo < hi);
        let dp = &s["delta_p"];
        assert!(dp["rms"].as_f64().unwrap() >= dp["mean"].as_f64().unwrap().abs());
        assert_eq!(
            m["per_pos_delta_p"].as_array().unwrap().len(),
            m["positions"].as_u64().unwrap() as usize
        );
    }
    let groups = r["kl_statistics"].as_array().unwrap();
    assert_eq!(groups.len(), 3 * 3);
    let f16_both = groups
        .iter()
        .find(|g| g["dtype"] == "f16" && g["kv_aligned"].is_null())
        .unwrap();
    assert_eq!(f16_both["pairs"], 16);
    let positions: u64 = pairs
        .iter()
        .filter(|p| p["dtype"] == "f16")
        .map(|p| p["metrics"]["positions"].as_u64().unwrap())
        .sum();
    assert_eq!(f16_both["stats"]["positions"].as_u64().unwrap(), positions);
    for k in ["median", "p90", "p95", "p99", "p99_9", "max"] {
        assert!(f16_both["stats"]["kl"][k].as_f64().unwrap() > 0.0, "{k}");
    }

    // report.junit.xml, read back with another parser: a suite per dtype and one for the
    // global verdict, a case per pair, all passing.
    let xml = junit(out.to_str().unwrap());
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("failures"), Some("0"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    let names: Vec<&str> = suites.iter().filter_map(|s| s.attribute("name")).collect();
    assert_eq!(names, ["bf16", "f16", "f32", "sweep"]);
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), pairs.len() + 1);
    for p in pairs {
        let id = p["id"].as_str().unwrap();
        let c = cases
            .iter()
            .find(|c| c.attribute("name") == Some(id))
            .unwrap();
        let suite = c.parent().unwrap().attribute("name").unwrap();
        assert_eq!(suite, p["dtype"].as_str().unwrap());
        assert!(!c.children().any(|n| n.has_tag_name("failure")));
    }
}

#[test]
fn failures_and_skips_reach_junit_and_html_and_nothing_compared_is_not_green() {
    let tmp = tempfile::tempdir().unwrap();
    // A fault in decode's layer 2 MLP: the f32 pairs fail.
    let (c, dir) = run_sweep(
        tmp.path(),
        "inject.yaml",
        &sweep(
            "small",
            "inject:\n  tensor: mlp_out\n  layer: 2\n  epsilon: 0.05\n",
        ),
        "inject",
        &[],
    );
    assert_eq!(c, exit::FAIL);
    let r = read_json(&Path::new(&dir).join("report.json"));
    let failed: Vec<&Value> = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["verdict"].as_str().unwrap().starts_with("FAIL"))
        .collect();
    assert!(!failed.is_empty());
    let xml = junit(&dir);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    for p in &failed {
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == p["id"].as_str())
            .unwrap();
        let f = case
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("a failure element");
        assert_eq!(f.attribute("type"), p["verdict"].as_str());
        assert_eq!(f.attribute("message"), p["reason"].as_str());
    }
    let html = std::fs::read_to_string(Path::new(&dir).join("report.html")).unwrap();
    assert!(html.contains("id=\"verdict-value\">FAIL<"));
    assert!(html.contains("Fault injection is on"));

    // A device this build lacks: every pair SKIPPED, nothing compared.
    if cfg!(feature = "cuda") {
        return;
    }
    let (c, dir) = run_sweep(
        tmp.path(),
        "skip.yaml",
        &sweep("small", "device: cuda"),
        "skip",
        &[],
    );
    assert_eq!(c, exit::INCOMPLETE);
    let xml = junit(&dir);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let skipped = doc
        .descendants()
        .filter(|n| n.has_tag_name("skipped"))
        .count();
    assert_eq!(skipped, 16);
    let global = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("global verdict"))
        .unwrap();
    let f = global
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("nothing compared is a failure");
    assert_eq!(f.attribute("type"), Some("INCOMPLETE"));
    let html = std::fs::read_to_string(Path::new(&dir).join("report.html")).unwrap();
    assert!(html.contains("id=\"verdict-value\">INCOMPLETE<"));
    assert!(!html.contains(">PASS<"));
    assert!(html.contains("No pair was compared"));
}

#[test]
fn diff_finds_an_injected_regression_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, honest) = run_sweep(tmp.path(), "a.yaml", &sweep("small", ""), "honest", &[]);
    assert_eq!(c, exit::PASS);
    let (c, again) = run_sweep(tmp.path(), "a.yaml", &sweep("small", ""), "again", &[]);
    assert_eq!(c, exit::PASS);
    // The same sweep file with a fault injected: same sweep name and model, so comparable.
    let (_, inject) = run_sweep(
        tmp.path(),
        "b.yaml",
        &sweep(
            "small",
            "inject:\n  tensor: mlp_out\n  layer: 2\n  epsilon: 0.05\n",
        ),
        "inject",
        &[],
    );

    // Honest against honest: bit-identical, every ratio 1.
    let o = run(&["diff", &honest, &again, "--json"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["verdict"], "PASS");
    assert_eq!(d["compared"], 16);
    assert!(
        d["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["ratios"]["max_abs_diff"]["ratio"] == 1.0 && p["status"] == "unchanged")
    );

    // Negative control: the injected fault is a regression, named per pair.
    let o = run(&["diff", &honest, &inject]);
    assert_eq!(code(&o), exit::FAIL, "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("**REGRESSED**"), "{md}");
    assert!(
        md.contains("p0.s6.f32.kv1.seed0 | PASS_EQUIV | FAIL_EQUIV"),
        "{md}"
    );
    assert!(md.contains("verdict PASS_EQUIV → FAIL_EQUIV"), "{md}");
    // Reversed, the fault's removal is an improvement, not a regression.
    let o = run(&["diff", &inject, &honest, "--json"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(d["improved"].as_u64().unwrap() > 0);

    // Another sweep is refused unless matched by id.
    let (_, other) = run_sweep(tmp.path(), "c.yaml", &sweep("other", ""), "other", &[]);
    let o = run(&["diff", &honest, &other]);
    assert_eq!(code(&o), exit::BAD_INPUT);
    assert!(common::stderr(&o).contains("--by-id"), "{}", text(&o));
    let o = run(&["diff", &honest, &other, "--by-id"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));

    // Bad input: exit 2 naming what is wrong.
    let missing = tmp.path().join("missing");
    let o = run(&["diff", &honest, missing.to_str().unwrap()]);
    assert_eq!(code(&o), exit::BAD_INPUT);
    assert!(common::stderr(&o).contains("missing"), "{}", text(&o));
    let o = run(&["diff", &honest, &again, "--fail-on", "0.9"]);
    assert_eq!(code(&o), exit::BAD_INPUT);
    assert!(common::stderr(&o).contains("--fail-on"), "{}", text(&o));
    let o = run(&["diff", &honest, &again, "--fail-on", "x"]);
    assert_eq!(code(&o), exit::BAD_INPUT);
    let no_report = tmp.path().join("empty");
    std::fs::create_dir_all(&no_report).unwrap();
    let o = run(&["diff", no_report.to_str().unwrap(), &honest]);
    assert_eq!(code(&o), exit::BAD_INPUT);
    assert!(common::stderr(&o).contains("report.json"), "{}", text(&o));
}

#[test]
fn run_with_a_baseline_gates_on_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, honest) = run_sweep(tmp.path(), "a.yaml", &sweep("small", ""), "honest", &[]);
    assert_eq!(c, exit::PASS);
    let (c, again) = run_sweep(
        tmp.path(),
        "a.yaml",
        &sweep("small", ""),
        "again",
        &["--baseline", &honest],
    );
    assert_eq!(c, exit::PASS);
    let d = read_json(&Path::new(&again).join("diff.json"));
    assert_eq!(d["verdict"], "PASS");
    assert!(Path::new(&again).join("diff.md").is_file());

    let (c, inject) = run_sweep(
        tmp.path(),
        "b.yaml",
        &sweep(
            "small",
            "inject:\n  tensor: mlp_out\n  layer: 2\n  epsilon: 0.05\n",
        ),
        "inject",
        &["--baseline", &honest],
    );
    assert_eq!(c, exit::FAIL);
    let d = read_json(&Path::new(&inject).join("diff.json"));
    assert_eq!(d["verdict"], "REGRESSED");

    // A baseline that is not one is refused before any work.
    let (c, never) = run_sweep(
        tmp.path(),
        "a.yaml",
        &sweep("small", ""),
        "never",
        &["--baseline", tmp.path().join("nope").to_str().unwrap()],
    );
    assert_eq!(c, exit::BAD_INPUT);
    assert!(!Path::new(&never).exists());
}

/// The pair ids of report.html's headroom table, in page order.
fn headroom_ids(html: &str) -> Vec<String> {
    let start = html.find("id=\"headroom\"").expect("a headroom section");
    let end = start + html[start..].find("</section>").unwrap();
    html[start..end]
        .split("<tr data-pair=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

/// A pair's worst share of its limits (max_abs_diff, kl_max), from report.json.
fn worst_share(p: &Value) -> f64 {
    ["max_abs_diff", "kl_max"]
        .iter()
        .map(|k| p["metrics"][k].as_f64().unwrap_or(0.0) / p["limits"][k].as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max)
}

#[test]
fn report_html_leads_with_the_verdict_then_the_least_headroom() {
    let tmp = tempfile::tempdir().unwrap();
    // A fault small enough that only the tight f32 tolerance fails: failures and passes mix.
    let (c, dir) = run_sweep(
        tmp.path(),
        "f.yaml",
        &sweep(
            "headroom",
            "inject:\n  tensor: mlp_out\n  layer: 1\n  epsilon: 0.001\n",
        ),
        "f",
        &[],
    );
    assert_eq!(c, exit::FAIL);
    let r = read_json(&Path::new(&dir).join("report.json"));
    let html = std::fs::read_to_string(Path::new(&dir).join("report.html")).unwrap();
    let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(at("id=\"verdict\"") < at("id=\"headroom\""));
    assert!(at("id=\"headroom\"") < at("id=\"drift\""));
    assert!(
        at("id=\"drift\"") < at("id=\"pairs\""),
        "small multiples come after"
    );
    let ids = headroom_ids(&html);
    let pairs = r["pairs"].as_array().unwrap();
    assert_eq!(ids.len(), pairs.len(), "every pair, once");
    let by_id = |id: &str| pairs.iter().find(|p| p["id"] == id).unwrap();
    let failed = |p: &Value| p["verdict"].as_str().unwrap().starts_with("FAIL");
    let n_fail = pairs.iter().filter(|p| failed(p)).count();
    assert!(
        n_fail > 0 && n_fail < pairs.len(),
        "the fault must split the pairs"
    );
    // Failures on top; within each block the worst share of a limit first.
    assert!(ids[..n_fail].iter().all(|id| failed(by_id(id))), "{ids:?}");
    for block in [&ids[..n_fail], &ids[n_fail..]] {
        let shares: Vec<f64> = block.iter().map(|id| worst_share(by_id(id))).collect();
        assert!(
            shares.windows(2).all(|w| w[0] >= w[1]),
            "{block:?}: {shares:?}"
        );
    }
    let worst = pairs
        .iter()
        .filter(|p| failed(p))
        .max_by(|a, b| worst_share(a).total_cmp(&worst_share(b)))
        .unwrap();
    assert_eq!(
        ids[0],
        worst["id"].as_str().unwrap(),
        "the worst pair comes first"
    );
    // Numbers never wrap.
    assert!(html.contains("white-space: nowrap"));

    // report.md: its main table fits 100 columns; every pair has its details section.
    let md = std::fs::read_to_string(Path::new(&dir).join("report.md")).unwrap();
    let start = md.find("## Comparison Results").unwrap();
    let table: Vec<&str> = md[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), pairs.len() + 2);
    for l in &table {
        assert!(
            l.chars().count() <= 100,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    for p in pairs {
        assert!(
            md.contains(&format!(". {} — ", p["id"].as_str().unwrap())),
            "{}",
            p["id"]
        );
    }
}
