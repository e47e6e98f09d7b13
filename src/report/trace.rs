//! The trace report (the B3.66 report, done right): `trace.json` with every number and
//! `trace_report.md` through `templates/trace_report.md.tera`, built from the results
//! directory's `traces/` files.

use std::collections::BTreeMap;

use super::files::{Inputs, TRACE_JSON, TRACE_MD, pretty_json, write_text};
use super::markdown::describe_injection;
use super::schema::{ReportJson, TraceJson, TraceRow, TraceSummary};
use super::template::{CUSTOM_TRACE_TEMPLATE, render_template, template_for};
use crate::config::TraceOn;
use crate::error::Result;
use crate::store::{Store, TraceFile};
use crate::trace::{PairTrace, RecordResult, RootCause, label};
use crate::verdict::{self, GlobalVerdict, TraceTally};

/// The trace report template, compiled in.
pub const TRACE_TEMPLATE: &str = include_str!("../../templates/trace_report.md.tera");

/// Test-renders a custom trace template on a sample trace.json of this sweep (one row per
/// planned traced pair, up to 8, nothing measured yet), before the first run: a template
/// that parses but cannot render fails the sweep at setup, not after every run is done.
pub fn check_render(
    text: &str,
    sweep: &str,
    on: TraceOn,
    inject: Option<String>,
    pair_ids: &[String],
) -> std::result::Result<(), String> {
    render_template("custom", text, &sample(sweep, on, inject, pair_ids))
        .map(|_| ())
        .map_err(|e| match e {
            crate::error::Error::Template { message, .. } => message,
            other => other.to_string(),
        })
}

/// The sample trace.json [`check_render`] renders on.
fn sample(sweep: &str, on: TraceOn, inject: Option<String>, pair_ids: &[String]) -> TraceJson {
    let rows = pair_ids
        .iter()
        .take(8)
        .map(|id| TraceRow {
            pair: id.clone(),
            prompt: "prompt".into(),
            token_id: "0".into(),
            pos: 0,
            layer: "0".into(),
            tensor: "attn_norm".into(),
            first_fail: "none".into(),
            root_cause: RootCause::None.as_str().to_string(),
            details: "not run yet".into(),
        })
        .collect();
    TraceJson {
        date: String::new(),
        sweep: sweep.to_string(),
        on,
        inject,
        result: GlobalVerdict::Incomplete,
        reason: "not run yet".into(),
        expected_pairs: pair_ids.len(),
        traced_pairs: 0,
        pass: 0,
        fail: 0,
        not_traced: Vec::new(),
        compared_records: 0,
        failed_records: 0,
        missing_partners: 0,
        failure_summary: BTreeMap::new(),
        untraced_gaps: BTreeMap::new(),
        rows,
        pairs: Vec::new(),
    }
}

fn group_label(r: &RecordResult) -> (u8, usize, String) {
    match r.layer {
        Some(l) => (1, l, l.to_string()),
        None if r.tensor == crate::trace::TensorName::Embed => (0, 0, "embed".into()),
        None => (2, 0, "final".into()),
    }
}

fn rows_of(t: &PairTrace) -> Vec<TraceRow> {
    let mut rows = Vec::new();
    for p in &t.positions {
        let at: Vec<&RecordResult> = t.records.iter().filter(|r| r.pos == p.pos).collect();
        let mut groups: BTreeMap<(u8, usize, String), Vec<&RecordResult>> = BTreeMap::new();
        for r in at {
            groups.entry(group_label(r)).or_default().push(r);
        }
        let first_fail = p
            .first_fail
            .map_or("none".to_string(), |(l, t)| label(l, t));
        for ((_, _, layer), rs) in groups {
            let failing = rs.iter().find(|r| r.failed);
            let (tensor, details) = match failing {
                Some(r) => (
                    r.tensor.to_string(),
                    match &r.misaligned {
                        Some(why) => why.clone(),
                        None => format!(
                            "nmse {:.3e} > {:.1e}, max|diff| {:.3e}",
                            r.nmse.unwrap_or(f64::NAN),
                            t.nmse_threshold,
                            r.max_abs.unwrap_or(f32::NAN)
                        ),
                    },
                ),
                // A passing layer names no tensor: its worst one is in the details, marked.
                None => {
                    let worst = rs
                        .iter()
                        .max_by(|a, b| a.nmse.unwrap_or(0.0).total_cmp(&b.nmse.unwrap_or(0.0)));
                    (
                        String::new(),
                        format!(
                            "pass: {} tensors within {:.1e}; worst: {} at nmse {:.3e}",
                            rs.len(),
                            t.nmse_threshold,
                            worst.map_or("—".into(), |w| w.tensor.to_string()),
                            worst.and_then(|w| w.nmse).unwrap_or(0.0)
                        ),
                    )
                }
            };
            rows.push(TraceRow {
                pair: t.pair_id.clone(),
                prompt: t.prompt.clone(),
                token_id: p.token_id.map_or("—".into(), |id| id.to_string()),
                pos: p.pos,
                layer,
                tensor,
                first_fail: first_fail.clone(),
                root_cause: p.root_cause.as_str().to_string(),
                details,
            });
        }
    }
    rows
}

/// Positions by root cause and first failing record (`MLP at layer 2 mlp_out`), and by
/// untraced gap before their first failure (the caveat with the `trace:` that decides).
fn summarize_failures(traces: &[PairTrace]) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    let mut gaps: BTreeMap<String, usize> = BTreeMap::new();
    for p in traces.iter().flat_map(|t| &t.positions) {
        if p.root_cause == RootCause::None {
            continue;
        }
        let at = p
            .first_fail
            .map_or(String::new(), |(l, t)| format!(" at {}", label(l, t)));
        *causes
            .entry(format!("{}{at}", p.root_cause.as_str()))
            .or_default() += 1;
        if let Some(g) = &p.untraced {
            let before = format!(
                "{} untraced before the first failure{at} ({} by its own tensor); trace `{}` to decide",
                g.layers(),
                g.stage.as_str(),
                g.suggestion()
            );
            *gaps.entry(before).or_default() += 1;
        }
    }
    (causes, gaps)
}

/// trace.json's content when the sweep traces, from the results directory's `traces/`.
pub fn analyse(store: &Store, report: &ReportJson) -> Result<Option<TraceJson>> {
    let m = store.manifest()?;
    let Some(trace_cfg) = &m.resolved.config.trace else {
        return Ok(None);
    };
    let on = trace_cfg.on;
    // Which pairs should have a trace: all, or those whose logits verdict failed.
    let expected: Vec<&str> = report
        .pairs
        .iter()
        .filter(|p| on == TraceOn::Always || p.verdict.is_fail())
        .map(|p| p.spec.id.as_str())
        .collect();
    let mut traces: Vec<PairTrace> = Vec::new();
    let mut not_traced = Vec::new();
    for spec in &m.pairs {
        let file: Option<TraceFile> = store.trace(spec)?;
        match file {
            Some(TraceFile { trace: Some(t), .. }) => traces.push(t),
            Some(TraceFile { error: Some(e), .. }) => not_traced.push(format!("{}: {e}", spec.id)),
            _ if expected.contains(&spec.id.as_str()) => {
                not_traced.push(format!("{}: no trace (its runs did not finish)", spec.id))
            }
            _ => {}
        }
    }
    traces.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
    let compared: usize = traces.iter().map(PairTrace::compared).sum();
    let failed_records: usize = traces.iter().map(PairTrace::failed).sum();
    let missing: usize = traces.iter().map(PairTrace::missing).sum();
    let fail = traces
        .iter()
        .filter(|t| t.failed() + t.missing() > 0)
        .count();
    let pass = traces
        .iter()
        .filter(|t| t.compared() > 0 && t.failed() + t.missing() == 0)
        .count();
    let (failure_summary, untraced_gaps) = summarize_failures(&traces);
    let (result, reason) = verdict::judge_traces(&TraceTally {
        traced_pairs: traces.len(),
        failing_pairs: fail,
        compared_records: compared,
        failed_records,
        missing_partners: missing,
        not_traced: not_traced.len(),
        nothing_failed_to_trace: on == TraceOn::Failing && expected.is_empty(),
    });
    let rows: Vec<TraceRow> = traces.iter().flat_map(rows_of).collect();
    let json = TraceJson {
        date: report
            .finished_at
            .clone()
            .unwrap_or_else(|| report.started_at.clone()),
        sweep: report.sweep.name.clone(),
        on,
        inject: report.inject.as_ref().map(describe_injection),
        result,
        reason,
        expected_pairs: expected.len(),
        traced_pairs: traces.len(),
        pass,
        fail,
        not_traced,
        compared_records: compared,
        failed_records,
        missing_partners: missing,
        failure_summary,
        untraced_gaps,
        rows,
        pairs: traces,
    };
    Ok(Some(json))
}

impl TraceJson {
    /// What report.json says of the traces.
    pub fn summary(&self) -> TraceSummary {
        TraceSummary {
            result: self.result,
            reason: self.reason.clone(),
            traced_pairs: self.traced_pairs,
            report: TRACE_MD.into(),
            json: TRACE_JSON.into(),
        }
    }
}

/// trace.json, when the sweep traces.
pub(crate) fn render_json(i: &Inputs, w: &mut dyn std::io::Write) -> Result<bool> {
    match i.trace {
        Some(t) => pretty_json(i.store, TRACE_JSON, t, w),
        None => Ok(false),
    }
}

/// trace_report.md through the sweep's custom template or the built-in one, when the sweep
/// traces.
pub(crate) fn render_markdown(i: &Inputs, w: &mut dyn std::io::Write) -> Result<bool> {
    let Some(t) = i.trace else {
        return Ok(false);
    };
    let template = template_for(i.store, CUSTOM_TRACE_TEMPLATE, TRACE_TEMPLATE)?;
    let md = render_template("trace_report.md.tera", &template, t)?;
    write_text(i.store, TRACE_MD, &md, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::trace::{PositionResult, TensorName};

    fn record(layer: Option<usize>, tensor: TensorName, nmse: f64, failed: bool) -> RecordResult {
        RecordResult {
            pos: 3,
            layer,
            tensor,
            nmse: Some(nmse),
            max_abs: Some(nmse as f32 * 10.0),
            failed,
            misaligned: None,
        }
    }

    /// trace_report.md of one traced pair that fails in layer 0's attention, one pair that
    /// was not traced.
    #[test]
    fn trace_report_md_snapshot() {
        let ids = vec!["p0.s4.f16.kv1.seed0".to_string()];
        let inject = Some("`q` at layer 0 scaled by (1 + 0.01)".to_string());
        let mut json = sample("snap", TraceOn::Always, inject, &ids);
        let t = PairTrace {
            pair_id: ids[0].clone(),
            prompt: "p0".into(),
            dtype: crate::dtype::RunDtype::F16,
            nmse_threshold: 1e-4,
            records: vec![
                record(None, TensorName::Embed, 0.0, false),
                record(Some(0), TensorName::AttnNorm, 1e-7, false),
                record(Some(0), TensorName::Q, 2e-2, true),
                record(Some(0), TensorName::ResidOut, 5e-3, true),
            ],
            positions: vec![PositionResult {
                pos: 3,
                token_id: Some(7),
                first_fail: Some((Some(0), TensorName::Q)),
                root_cause: RootCause::Attention,
                details: "q at layer 0".into(),
                untraced: None,
            }],
        };
        json.date = "2026-01-01T00:00:00.000Z".into();
        json.result = GlobalVerdict::Fail;
        json.reason = "1 of 1 traced pairs diverge".into();
        json.rows = rows_of(&t);
        json.traced_pairs = 1;
        json.fail = 1;
        json.compared_records = t.compared();
        json.failed_records = t.failed();
        json.failure_summary = BTreeMap::from([("ATTENTION at layer 0 q".to_string(), 1)]);
        json.untraced_gaps = BTreeMap::from([(
            "layers 5–7 untraced before the first failure at layer 8 attn_norm (NORM by its own tensor); trace `layers: [5, 6, 7]` to decide".to_string(),
            1,
        )]);
        json.not_traced = vec!["p0.s4.f16.kv0.seed0: no trace (its runs did not finish)".into()];
        json.pairs = vec![t];
        insta::assert_snapshot!(render_template("t", TRACE_TEMPLATE, &json).unwrap());
    }
}
