//! Compared positions (`positions:`), the first-divergence search, and kv_aligned on an
//! engine that cannot cut its cache back (docs/design.md, "Compared positions" and
//! "kv_aligned").

use driftsweep::exit;
use serde_json::Value;

mod common;

const BOTH_ENGINES: &str = r#"
name: positions_builtin
model: builtin:tiny-llama
device: cpu
prompts:
  - {id: r6, random_tokens: 6}
continuation: random
sweep:
  span: [12]
  dtype: [f32]
  kv_aligned: [false, true]
  seed: [0]
  engine: [driftsweep, candle-transformers]
"#;

fn sweep(yaml: &str, want: i32) -> (Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::write(tmp.path(), "s.yaml", yaml);
    let out = tmp.path().join("res");
    let o = common::run(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(common::code(&o), want, "{}", common::text(&o));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    (common::read_json(&out.join("report.json")), md)
}

fn pairs(r: &Value) -> &Vec<Value> {
    r["pairs"].as_array().expect("pairs")
}

#[test]
fn only_the_compared_positions_are_compared_and_last_row_prefills_pay_for_them_only() {
    let yaml = format!("{BOTH_ENGINES}positions: {{at: [9, 15], every: 4}}\n");
    let (r, md) = sweep(&yaml, exit::PASS);
    assert_eq!(pairs(&r).len(), 4);
    for p in pairs(&r) {
        let id = p["id"].as_str().unwrap();
        // Span 6..18: every 4th from 6, and 9 and 15.
        assert_eq!(
            p["positions"],
            serde_json::json!([6, 9, 10, 14, 15]),
            "{id}"
        );
        assert_eq!(p["metrics"]["positions"], 5, "{id}");
        assert!(p["verdict"] == "PASS_EQUIV" || p["verdict"] == "EXPECTED_DRIFT");
        // Decode still runs every step.
        let decode_fed = p["decode"]["tokens_fed"].as_u64().unwrap();
        if p["engine"] == "candle-transformers" {
            // One prefix per compared position: 7 + 10 + 11 + 15 + 16.
            assert_eq!(p["prefill"]["tokens_fed"], 59, "{id}");
            assert_eq!(decode_fed, 18, "{id}");
            // The yardstick is held against the same rows.
            assert!(p["yardstick"].is_object(), "{id}");
        } else {
            assert_eq!(p["prefill"]["tokens_fed"], 18, "{id}");
        }
        let source = match (p["kv_aligned"].as_bool().unwrap(), p["engine"].as_str()) {
            (false, _) => Value::Null,
            (true, Some("candle-transformers")) => "prompt_prefill".into(),
            (true, _) => "cut_back".into(),
        };
        assert_eq!(
            p.get("cache_source").cloned().unwrap_or(Value::Null),
            source
        );
    }
    assert!(md.contains("| 12 (5 compared: 6, 9, 10, 14, 15) |"), "{md}");
}

#[test]
fn without_positions_every_span_position_is_compared_and_nothing_is_recorded() {
    let (r, _) = sweep(BOTH_ENGINES, exit::PASS);
    for p in pairs(&r) {
        assert!(p.get("positions").is_none(), "{}", p["id"]);
        assert!(p.get("divergence_search").is_none(), "{}", p["id"]);
        assert_eq!(p["metrics"]["positions"], 12);
    }
}

#[test]
fn the_search_makes_the_first_divergent_position_exact() {
    // The fault shifts every decode step's position: the paths part at the span's first
    // position (6), which the compared positions miss; the search finds it.
    let yaml = BOTH_ENGINES
        .replace("engine: [driftsweep, candle-transformers]", "")
        .replace("kv_aligned: [false, true]", "kv_aligned: [true]");
    let yaml = format!(
        "{yaml}positions: {{at: [9, 13, 17], first_divergence: search}}\n\
         inject: {{position_shift: 1}}\n"
    );
    let (r, md) = sweep(&yaml, exit::FAIL);
    let p = &pairs(&r)[0];
    assert_eq!(p["verdict"], "FAIL_EQUIV", "{}", p["reason"]);
    let s = &p["divergence_search"];
    assert_eq!(s["coarse_first"], 9, "{s}");
    assert_eq!(s["first_divergent_pos"], 6, "{s}");
    assert_eq!(p["metrics"]["first_divergent_pos"], 6);
    // 6..=9 in two probes; the own decoder's one prefill holds every row already.
    assert_eq!(s["probes"], 2, "{s}");
    assert_eq!(s["prefills"], 0, "{s}");
    assert!(md.contains("6 (searched: 2 probes, 0 prefills)"), "{md}");
}

#[test]
fn positions_outside_the_span_or_edges_without_a_window_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    for (section, field) in [
        ("{at: [9, 18]}", "positions.at[1]"),
        ("{every: 0}", "positions.every"),
        ("{window_edges: 2}", "positions.window_edges"),
        ("{evry: 2}", "evry"),
    ] {
        let cfg = common::write(
            tmp.path(),
            "bad.yaml",
            &format!("{BOTH_ENGINES}positions: {section}\n"),
        );
        let o = common::run(&["plan", cfg.to_str().unwrap()]);
        assert_eq!(common::code(&o), exit::BAD_INPUT, "{}", common::text(&o));
        let e = common::stderr(&o);
        assert!(
            e.contains("bad.yaml") && e.contains(field),
            "{section}: {e}"
        );
    }
}
