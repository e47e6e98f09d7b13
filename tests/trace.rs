//! Layer traces end to end: the binary on `configs/b3_66_trace.yaml` and variants with faults
//! injected into the decode path (the tool's negative controls).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use driftsweep::exit;
use serde_json::Value;

const BASE: &str = include_str!("../configs/b3_66_trace.yaml");

/// Runs a sweep file's `text`; returns (exit code, trace.json, trace_report.md, report.json).
fn run_traced(name: &str, text: &str, tmp: &Path) -> (i32, Value, String, Value) {
    let cfg: PathBuf = tmp.join(format!("{name}.yaml"));
    std::fs::write(&cfg, text).unwrap();
    let out = tmp.join(name);
    let o = Command::new(env!("CARGO_BIN_EXE_driftsweep"))
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let code = o.status.code().unwrap();
    assert!(
        code != exit::BAD_INPUT,
        "{name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let read = |f: &str| {
        std::fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{name}/{f}: {e}"))
    };
    let trace: Value = serde_json::from_str(&read("trace.json")).unwrap();
    let report: Value = serde_json::from_str(&read("report.json")).unwrap();
    (code, trace, read("trace_report.md"), report)
}

fn rows(t: &Value) -> &Vec<Value> {
    t["rows"].as_array().unwrap()
}

fn assert_unique_rows(md: &str) {
    let table: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| PAIR"))
        .collect();
    let unique: HashSet<&&str> = table.iter().collect();
    assert_eq!(
        unique.len(),
        table.len(),
        "duplicate rows in the trace report"
    );
    assert!(!md.contains("None"), "every known field is filled");
}

#[test]
fn honest_f32_runs_pass_with_no_record_over_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, t, md, report) = run_traced("honest", BASE, tmp.path());
    assert_eq!(code, exit::PASS);
    assert_eq!(t["result"], "PASS", "{}", t["reason"]);
    assert_eq!(t["traced_pairs"], 6);
    assert_eq!(t["failed_records"], 0);
    assert_eq!(t["missing_partners"], 0);
    // 3 prompts × 2 kv modes, last position, layers 0 1 2 4 8 × 9 tensors + embed, final, logits.
    assert_eq!(t["compared_records"], 6 * (5 * 9 + 3));
    assert!(rows(&t).iter().all(|r| r["root_cause"] == "NONE"));
    // Rows: 6 pairs × 1 position × (embed + 5 layers + final).
    assert_eq!(rows(&t).len(), 6 * 7);
    assert!(md.contains("**RESULT**: PASS"));
    assert!(
        rows(&t).iter().all(|r| r["token_id"] != "—"),
        "token ids are known"
    );
    assert_unique_rows(&md);
    assert_eq!(report["trace"]["result"], "PASS");
    let report_md = std::fs::read_to_string(tmp.path().join("honest/report.md")).unwrap();
    assert!(
        report_md.contains("[trace_report.md](trace_report.md)"),
        "report.md links the trace report"
    );
}

#[test]
fn a_scaled_mlp_out_is_found_at_its_layer_with_root_cause_mlp() {
    let tmp = tempfile::tempdir().unwrap();
    let inject = "inject:\n  tensor: mlp_out\n  layer: 2\n  epsilon: 0.01\n";
    let (code, t, md, report) = run_traced("mlp", &format!("{BASE}{inject}"), tmp.path());
    assert_eq!(code, 1, "the logits verdicts fail too");
    assert_eq!(t["result"], "FAIL");
    assert_eq!(t["fail"], 6);
    for r in rows(&t) {
        assert_eq!(r["first_fail"], "layer 2 mlp_out", "{r}");
        assert_eq!(r["root_cause"], "MLP", "{r}");
    }
    // Layers before 2 are clean; layer 2's first failing tensor is mlp_out, with NMSE = ε².
    let l2 = rows(&t).iter().find(|r| r["layer"] == "2").unwrap();
    assert_eq!(l2["tensor"], "mlp_out");
    assert!(
        l2["details"].as_str().unwrap().starts_with("nmse 1.000e-4"),
        "{l2}"
    );
    assert!(
        rows(&t)
            .iter()
            .filter(|r| r["layer"] == "1")
            .all(|r| r["details"].as_str().unwrap().contains("within"))
    );
    assert!(md.contains("- MLP at layer 2 mlp_out: 6"), "{md}");
    assert!(md.contains("**Fault injection**: `mlp_out` at layer 2 scaled by (1 + 0.01)"));
    assert_unique_rows(&md);
    assert!(report["inject"].is_object());
}

#[test]
fn a_scaled_attention_output_is_root_cause_attention() {
    let tmp = tempfile::tempdir().unwrap();
    let inject = "inject:\n  tensor: attn_out\n  layer: 4\n  epsilon: 0.01\n";
    let (_, t, md, _) = run_traced("attn", &format!("{BASE}{inject}"), tmp.path());
    assert_eq!(t["result"], "FAIL");
    for r in rows(&t) {
        assert_eq!(r["first_fail"], "layer 4 attn_out", "{r}");
        assert_eq!(r["root_cause"], "ATTENTION", "{r}");
    }
    assert_unique_rows(&md);
}

#[test]
fn a_position_shift_is_a_trace_offset_never_a_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, t, md, _) = run_traced(
        "shift",
        &format!("{BASE}inject:\n  position_shift: 1\n"),
        tmp.path(),
    );
    assert_ne!(code, exit::PASS);
    assert_eq!(t["result"], "FAIL", "{}", t["reason"]);
    assert!(t["missing_partners"].as_u64().unwrap() > 0);
    assert!(md.contains("TRACE_OFFSET"));
    assert!(!md.contains("**RESULT**: PASS"));
    // At the last position each side has a record the other lacks.
    let details: Vec<&str> = rows(&t)
        .iter()
        .map(|r| r["details"].as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("only in prefill; decode has positions")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("only in decode; prefill has positions")),
        "{details:?}"
    );
    assert_unique_rows(&md);
}

#[test]
fn tracing_only_failing_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let failing = BASE.replace("  on: always", "  on: failing");
    assert_ne!(failing, BASE);
    // Nothing fails: nothing is traced, and that is not a pass.
    let (code, t, md, _) = run_traced("failing_none", &failing, tmp.path());
    assert_eq!(code, exit::PASS);
    assert_eq!(t["result"], "INCOMPLETE");
    assert_eq!(t["traced_pairs"], 0);
    assert!(md.contains("no pair failed its logits verdict"), "{md}");
    // With a fault every pair fails and is re-run with tracing, without another model load.
    let inject = "inject:\n  tensor: q\n  layer: 1\n  epsilon: 0.05\n";
    let (code, t, md, r) = run_traced("failing_all", &format!("{failing}{inject}"), tmp.path());
    assert_eq!(code, exit::FAIL);
    assert_eq!(t["traced_pairs"], 6);
    assert_eq!(t["result"], "FAIL");
    assert_eq!(r["model_loads"], 1);
    assert!(
        rows(&t)
            .iter()
            .all(|x| x["root_cause"] == "ATTENTION" && x["first_fail"] == "layer 1 q")
    );
    assert_unique_rows(&md);
}

const INJECT: &str = include_str!("../configs/b3_66_trace_inject.yaml");

/// The failure summary and coverage lines of a trace report.
fn summary_lines(md: &str) -> String {
    md.lines()
        .filter(|l| l.starts_with("- ") || l.starts_with("**Not looked at**"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_fault_in_untraced_layers_is_an_untraced_gap_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let at5 = INJECT.replace("  layer: 2\n", "  layer: 5\n");
    assert_ne!(at5, INJECT);
    assert!(at5.contains("layers: [0, 1, 2, 4, 8]"));
    let (code, t, md, _) = run_traced("gap", &at5, tmp.path());
    assert_eq!(code, exit::FAIL);
    for r in rows(&t) {
        assert_eq!(r["first_fail"], "layer 8 attn_norm", "{r}");
        assert_eq!(r["root_cause"], "UNTRACED_GAP", "{r}");
    }
    for p in t["pairs"].as_array().unwrap() {
        let gap = &p["positions"][0]["untraced"];
        assert_eq!(
            (gap["first"].as_u64(), gap["last"].as_u64()),
            (Some(5), Some(7))
        );
    }
    // Passing layers name no tensor.
    assert!(
        rows(&t)
            .iter()
            .filter(|r| r["layer"] == "4")
            .all(|r| r["tensor"] == "" && r["details"].as_str().unwrap().starts_with("pass: "))
    );
    assert_unique_rows(&md);
    insta::assert_snapshot!(summary_lines(&md), @r"
    - UNTRACED_GAP at layer 8 attn_norm: 6
    **Not looked at**: layers that were not traced come right before a first failure, so the divergence may start in them (UNTRACED_GAP):
    - layers 5–7 untraced before the first failure at layer 8 attn_norm (NORM by its own tensor); trace `layers: [5, 6, 7]` to decide — 6 positions
    ");

    // Every layer traced: the fault's own layer and tensor, and no caveat.
    let all = at5.replace("layers: [0, 1, 2, 4, 8]", "layers: all");
    let (code, t, md, _) = run_traced("all", &all, tmp.path());
    assert_eq!(code, exit::FAIL);
    for r in rows(&t) {
        assert_eq!(r["first_fail"], "layer 5 mlp_out", "{r}");
        assert_eq!(r["root_cause"], "MLP", "{r}");
    }
    assert!(!md.contains("UNTRACED_GAP |"), "{md}");
    insta::assert_snapshot!(summary_lines(&md), @"- MLP at layer 5 mlp_out: 6");
}
