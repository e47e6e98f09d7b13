//! Verdicts (docs/design.md, "Verdicts"): per pair from its metrics and limits, and the sweep's
//! global verdict from the pairs. The limits themselves, with where each number comes from,
//! are in [`crate::limits`]; this module only applies them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::compare::Metrics;
use crate::compare::metrics::{self, Direction};
use crate::dtype::RunDtype;
use crate::limits::Thresholds;

/// Re-exported where reasons are worded; defined beside the metric table that formats with it.
pub use crate::compare::metrics::fmt_num;

/// A pair's verdict (docs/design.md, "Verdicts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PairVerdict {
    /// kv_aligned=true, within tolerance.
    PassEquiv,
    /// kv_aligned=true, outside tolerance or non-finite.
    FailEquiv,
    /// kv_aligned=false, within the drift budget.
    ExpectedDrift,
    /// kv_aligned=false, outside the drift budget or non-finite.
    FailDrift,
    /// A run failed, is missing, or the runs cover different positions.
    Incomplete,
    /// The pair cannot run here.
    Skipped,
}

impl PairVerdict {
    /// Upper-case name, as in the reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PairVerdict::PassEquiv => "PASS_EQUIV",
            PairVerdict::FailEquiv => "FAIL_EQUIV",
            PairVerdict::ExpectedDrift => "EXPECTED_DRIFT",
            PairVerdict::FailDrift => "FAIL_DRIFT",
            PairVerdict::Incomplete => "INCOMPLETE",
            PairVerdict::Skipped => "SKIPPED",
        }
    }

    /// Whether this verdict is a failure of the numbers.
    pub fn is_fail(self) -> bool {
        matches!(self, PairVerdict::FailEquiv | PairVerdict::FailDrift)
    }

    /// Whether the pair passed: within its tolerance or drift budget.
    pub fn is_pass(self) -> bool {
        matches!(self, PairVerdict::PassEquiv | PairVerdict::ExpectedDrift)
    }

    /// Whether the two runs were actually compared.
    pub fn is_compared(self) -> bool {
        matches!(
            self,
            PairVerdict::PassEquiv
                | PairVerdict::FailEquiv
                | PairVerdict::ExpectedDrift
                | PairVerdict::FailDrift
        )
    }
}

impl fmt::Display for PairVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sweep's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GlobalVerdict {
    /// At least one pair compared, none failed, none incomplete.
    Pass,
    /// Some pair failed.
    Fail,
    /// Anything else, including nothing compared.
    Incomplete,
}

impl GlobalVerdict {
    /// Exit code of `driftsweep run` (docs/design.md, "Results on disk").
    pub fn exit_code(self) -> i32 {
        match self {
            GlobalVerdict::Pass => crate::exit::PASS,
            GlobalVerdict::Fail => crate::exit::FAIL,
            GlobalVerdict::Incomplete => crate::exit::INCOMPLETE,
        }
    }

    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            GlobalVerdict::Pass => "PASS",
            GlobalVerdict::Fail => "FAIL",
            GlobalVerdict::Incomplete => "INCOMPLETE",
        }
    }
}

/// How many top-1 flips `top1_agreement_min` allows over `positions`: the fraction rounded
/// up, so that a short span is not failed by the one near-tie flip the fraction allows in a
/// longer one (at span 32, f16's 0.98 allows one flip, not 0.64). A minimum of 1.0 allows none.
pub fn allowed_flips(top1_agreement_min: f32, positions: usize) -> usize {
    let share = f64::from(1.0 - top1_agreement_min.clamp(0.0, 1.0)) * positions as f64;
    // The tolerance absorbs f32 noise in `1 - min` (1 - 0.98 is 0.0199999...).
    (share - 1e-6).ceil().max(0.0) as usize
}

/// The limit `limits` sets on metric `d` (+∞ for a metric no limit bounds).
pub fn limit_of(d: &metrics::MetricDef, limits: &Thresholds) -> f32 {
    d.limit_key()
        .and_then(|key| limits.get(key))
        .unwrap_or(f32::INFINITY)
}

/// Judges a compared pair. `equivalence` ([`crate::plan::PairSpec::equivalence`]) picks
/// between tolerance (PASS_EQUIV/FAIL_EQUIV) and drift budget (EXPECTED_DRIFT/FAIL_DRIFT); `limits` is the one that applies. Returns the
/// verdict and its reason in words.
pub fn judge_pair(
    m: &Metrics,
    dtype: RunDtype,
    equivalence: bool,
    limits: &Thresholds,
) -> (PairVerdict, String) {
    let (pass, fail, what) = if equivalence {
        (PairVerdict::PassEquiv, PairVerdict::FailEquiv, "tolerance")
    } else {
        (
            PairVerdict::ExpectedDrift,
            PairVerdict::FailDrift,
            "drift budget",
        )
    };
    let breaches = breaches(m, dtype, limits);
    if !breaches.is_empty() {
        return (fail, format!("outside the {what}: {}", breaches.join("; ")));
    }
    let mut reason = format!("within the {what}");
    if m.max_abs_diff() == 0.0 {
        reason.push_str("; no drift observed: the logits are bit-identical");
    } else {
        reason.push_str(&format!(
            " (max_abs_diff {} of {}, kl_mean {})",
            fmt_num(m.max_abs_diff()),
            fmt_num(limits.max_abs_diff()),
            fmt_num(m.kl_mean())
        ));
        let ties = m.top1_flips.len();
        if ties > 0 {
            reason.push_str(&format!("; {ties} top-1 flip(s), all on near-ties"));
        }
    }
    (pass, reason)
}

/// Every way `m` lies outside `limits`, in words (empty: within them).
fn breaches(m: &Metrics, dtype: RunDtype, limits: &Thresholds) -> Vec<String> {
    let mut breaches = Vec::new();
    if m.non_finite > 0 {
        breaches.push(format!("{} non-finite logits", m.non_finite));
    }
    // The upper bounds of the metric table; agreement, the lower bound, counts flips below.
    for d in metrics::limited().filter(|d| d.direction == Direction::AtMost) {
        let (value, limit) = (d.value(m), limit_of(d, limits));
        // NaN metrics come with non-finite logits, already counted above.
        if value > limit {
            breaches.push(format!(
                "{} {} > {}",
                d.name,
                fmt_num(value),
                fmt_num(limit)
            ));
        }
    }
    let flips_allowed = allowed_flips(limits.top1_agreement_min(), m.positions);
    if m.top1_flips.len() > flips_allowed {
        breaches.push(format!(
            "top1_agreement {:.4} < {:.4} ({} flips in {} positions, {} allowed)",
            m.top1_agreement(),
            limits.top1_agreement_min(),
            m.top1_flips.len(),
            m.positions,
            flips_allowed
        ));
    }
    let wide: Vec<_> = m
        .top1_flips
        .iter()
        .filter(|f| f.prefill_margin > limits.tie_margin_at(dtype, f.prefill_top))
        .collect();
    if let Some(f) = wide.first() {
        breaches.push(format!(
            "{} top-1 flip(s) on a wide margin, first at position {} (prefill margin {} > tie margin {})",
            wide.len(),
            f.pos,
            fmt_num(f.prefill_margin),
            fmt_num(limits.tie_margin_at(dtype, f.prefill_top))
        ));
    }
    breaches
}

/// Judges one engine path against the reference: within `limits` or not, and why in words.
pub fn judge_reference(m: &Metrics, dtype: RunDtype, limits: &Thresholds) -> (bool, String) {
    let breaches = breaches(m, dtype, limits);
    if !breaches.is_empty() {
        let from = m
            .first_divergent_pos
            .map_or(String::new(), |p| format!(" from position {p}"));
        return (
            false,
            format!(
                "outside its reference limits{from}: {}",
                breaches.join("; ")
            ),
        );
    }
    (
        true,
        format!(
            "within its reference limits (max_abs_diff {} of {}, kl_max {})",
            fmt_num(m.max_abs_diff()),
            fmt_num(limits.max_abs_diff()),
            fmt_num(m.kl_max())
        ),
    )
}

/// A pair's verdict once its paths were held against the reference: a path outside its
/// reference limits fails the pair however well prefill and decode agree (an engine whose
/// prefill is not the model's function is wrong), and a reference that failed to compute
/// leaves a passing pair INCOMPLETE, since part of what was asked was not compared.
/// `failures` are (path, reason) of the paths that failed; `error` why the reference failed.
pub fn with_reference(
    verdict: PairVerdict,
    reason: &str,
    failures: &[(&str, &str)],
    error: Option<&str>,
) -> (PairVerdict, String) {
    let against: Vec<String> = failures
        .iter()
        .map(|(path, why)| format!("{path} against the reference: {why}"))
        .collect();
    match (verdict, against.is_empty(), error) {
        (PairVerdict::PassEquiv, false, _) => (PairVerdict::FailEquiv, against.join("; ")),
        (PairVerdict::ExpectedDrift, false, _) => (PairVerdict::FailDrift, against.join("; ")),
        (v, false, _) if v.is_fail() => (v, format!("{reason}; {}", against.join("; "))),
        (PairVerdict::PassEquiv | PairVerdict::ExpectedDrift, true, Some(e)) => (
            PairVerdict::Incomplete,
            format!("{reason}; but the reference did not compute: {e}"),
        ),
        _ => (verdict, reason.to_string()),
    }
}

/// The global verdict and its reason from all pair verdicts.
pub fn judge_sweep(verdicts: &[PairVerdict]) -> (GlobalVerdict, String) {
    let n = verdicts.len();
    let count = |f: fn(PairVerdict) -> bool| verdicts.iter().filter(|v| f(**v)).count();
    let failed = count(PairVerdict::is_fail);
    let compared = count(PairVerdict::is_compared);
    let incomplete = count(|v| v == PairVerdict::Incomplete);
    let skipped = count(|v| v == PairVerdict::Skipped);
    if failed > 0 {
        return (
            GlobalVerdict::Fail,
            format!("{failed} of {n} pairs failed ({compared} compared)"),
        );
    }
    if compared == 0 {
        let why = if n == 0 {
            "the sweep has no pairs".to_string()
        } else {
            format!("no pair was compared ({incomplete} incomplete, {skipped} skipped of {n})")
        };
        return (GlobalVerdict::Incomplete, why);
    }
    if incomplete > 0 {
        return (
            GlobalVerdict::Incomplete,
            format!(
                "{incomplete} of {n} pairs are incomplete; {compared} compared without failure"
            ),
        );
    }
    let mut reason = format!("all {compared} compared pairs are within their limits");
    if skipped > 0 {
        reason.push_str(&format!("; {skipped} skipped"));
    }
    (GlobalVerdict::Pass, reason)
}

/// What a sweep's layer traces add up to: the counts the trace RESULT is judged from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceTally {
    /// Pairs with a trace.
    pub traced_pairs: usize,
    /// Traced pairs with a record over threshold or without a partner.
    pub failing_pairs: usize,
    /// Records compared, over every trace.
    pub compared_records: usize,
    /// Records over threshold.
    pub failed_records: usize,
    /// Records without a partner at their position (or with one for another token).
    pub missing_partners: usize,
    /// Pairs that should have a trace and have none.
    pub not_traced: usize,
    /// The sweep traces failing pairs only, and no pair failed.
    pub nothing_failed_to_trace: bool,
}

/// The trace RESULT: FAIL when a traced pair diverges, PASS only when records were compared,
/// none failed and none is missing, INCOMPLETE otherwise (nothing compared, or expected
/// traces missing).
pub fn judge_traces(t: &TraceTally) -> (GlobalVerdict, String) {
    if t.failing_pairs > 0 {
        return (
            GlobalVerdict::Fail,
            format!(
                "{} of {} traced pairs diverge: {} records over threshold, {} misaligned (no partner at their position, or a partner for another token)",
                t.failing_pairs, t.traced_pairs, t.failed_records, t.missing_partners
            ),
        );
    }
    if t.compared_records == 0 {
        let why = if t.nothing_failed_to_trace {
            "no pair failed its logits verdict, so none was traced"
        } else {
            "no trace record was compared"
        };
        return (GlobalVerdict::Incomplete, why.to_string());
    }
    if t.not_traced > 0 {
        return (
            GlobalVerdict::Incomplete,
            format!(
                "{} expected traces are missing; the rest match",
                t.not_traced
            ),
        );
    }
    (
        GlobalVerdict::Pass,
        format!(
            "all {} records of {} traced pairs within threshold, none missing",
            t.compared_records, t.traced_pairs
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::TopFlip;

    #[test]
    fn a_path_outside_its_reference_limits_fails_a_consistent_pair() {
        let fails = [(
            "decode",
            "outside its reference limits from position 8: kl_max 2 > 1",
        )];
        let (v, why) = with_reference(PairVerdict::PassEquiv, "within the tolerance", &fails, None);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(why.starts_with("decode against the reference"), "{why}");
        let (v, _) = with_reference(PairVerdict::ExpectedDrift, "ok", &fails, None);
        assert_eq!(v, PairVerdict::FailDrift);
        // A pair failing on its own keeps its verdict and gains the reference's words.
        let (v, why) = with_reference(PairVerdict::FailDrift, "outside", &fails, None);
        assert_eq!(v, PairVerdict::FailDrift);
        assert!(why.contains("outside; decode against"), "{why}");
    }

    #[test]
    fn a_reference_that_did_not_compute_leaves_a_passing_pair_incomplete() {
        let (v, why) = with_reference(PairVerdict::PassEquiv, "within", &[], Some("worker died"));
        assert_eq!(v, PairVerdict::Incomplete);
        assert!(why.contains("worker died"), "{why}");
        // Within the reference limits, nothing changes.
        let (v, why) = with_reference(PairVerdict::PassEquiv, "within", &[], None);
        assert_eq!((v, why.as_str()), (PairVerdict::PassEquiv, "within"));
    }

    #[test]
    fn judge_reference_names_the_position_it_parts_from() {
        let limits = Thresholds::default_drift_budget_for(
            RunDtype::F32,
            crate::engine::WeightFormat::Dequantized,
        );
        let mut m = metrics(1.0);
        m.first_divergent_pos = Some(12);
        let (pass, why) = judge_reference(&m, RunDtype::F32, &limits);
        assert!(!pass);
        assert!(why.contains("from position 12"), "{why}");
        let (pass, _) = judge_reference(&metrics(1e-6), RunDtype::F32, &limits);
        assert!(pass);
    }

    fn metrics(max_abs: f32) -> Metrics {
        let mut values = Metrics::default().values;
        values[metrics::MAX_ABS_DIFF] = max_abs;
        values[metrics::P99_ABS_DIFF] = max_abs / 2.0;
        values[metrics::MEAN_ABS_DIFF] = max_abs / 4.0;
        values[metrics::TOP1_AGREEMENT] = 1.0;
        Metrics {
            values,
            positions: 4,
            vocab: 8,
            per_pos_max_abs: vec![max_abs; 4],
            per_pos_kl: vec![Some(0.0); 4],
            ..Metrics::default()
        }
    }

    #[test]
    fn every_metric_limit_names_a_threshold() {
        let t = Thresholds::default_tolerance(RunDtype::F32);
        for d in metrics::METRICS {
            if let Some(key) = d.limit_key() {
                assert!(t.get(key).is_some(), "{}: no threshold `{key}`", d.name);
            }
        }
    }

    #[test]
    fn within_tolerance_passes_and_says_so() {
        let t = Thresholds::default_tolerance(RunDtype::Bf16);
        let (v, r) = judge_pair(&metrics(0.5), RunDtype::Bf16, true, &t);
        assert_eq!(v, PairVerdict::PassEquiv);
        assert!(r.contains("within the tolerance"), "{r}");
    }

    #[test]
    fn zero_drift_is_still_expected_drift_but_says_no_drift() {
        let t = Thresholds::default_drift_budget(RunDtype::F16);
        let (v, r) = judge_pair(&metrics(0.0), RunDtype::F16, false, &t);
        assert_eq!(v, PairVerdict::ExpectedDrift);
        assert!(r.contains("no drift observed"), "{r}");
    }

    #[test]
    fn over_limit_fails_in_each_mode() {
        let t = Thresholds::default_tolerance(RunDtype::F32);
        let (v, r) = judge_pair(&metrics(1.0), RunDtype::F32, true, &t);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(r.contains("max_abs_diff 1 > 4.00e-4"), "{r}");
        let b = Thresholds::default_drift_budget(RunDtype::F32);
        assert_eq!(
            judge_pair(&metrics(1.0), RunDtype::F32, false, &b).0,
            PairVerdict::FailDrift
        );
    }

    #[test]
    fn nan_fails_the_pair() {
        let mut m = metrics(0.0);
        m.non_finite = 1;
        m.values[metrics::MAX_ABS_DIFF] = f32::NAN;
        let t = Thresholds::default_tolerance(RunDtype::F32);
        let (v, r) = judge_pair(&m, RunDtype::F32, true, &t);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(r.contains("1 non-finite"), "{r}");
        assert_eq!(
            judge_pair(&m, RunDtype::F32, false, &t).0,
            PairVerdict::FailDrift
        );
    }

    #[test]
    fn near_tie_flip_passes_wide_flip_fails() {
        let t = Thresholds::default_tolerance(RunDtype::Bf16);
        let mut m = metrics(0.2);
        m.values[metrics::TOP1_AGREEMENT] = 0.95;
        let flip = |margin: f32, top: f32| {
            vec![TopFlip {
                pos: 7,
                prefill_margin: margin,
                prefill_top: top,
            }]
        };
        m.top1_flips = flip(0.125, 20.0);
        assert_eq!(
            judge_pair(&m, RunDtype::Bf16, true, &t).0,
            PairVerdict::PassEquiv
        );
        // One bf16 step at logits in [64, 128) is 0.5: a 0.5 gap there is still a near-tie,
        // the same gap at logits near 20 is not.
        m.top1_flips = flip(0.5, 80.0);
        assert_eq!(
            judge_pair(&m, RunDtype::Bf16, true, &t).0,
            PairVerdict::PassEquiv
        );
        m.top1_flips = flip(0.5, 20.0);
        assert_eq!(
            judge_pair(&m, RunDtype::Bf16, true, &t).0,
            PairVerdict::FailEquiv
        );
        m.top1_flips = flip(3.0, 20.0);
        let (v, r) = judge_pair(&m, RunDtype::Bf16, true, &t);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(r.contains("wide margin, first at position 7"), "{r}");
    }

    #[test]
    fn mean_abs_and_kl_p99_are_judged_too() {
        let t = Thresholds::default_tolerance(RunDtype::F16);
        let mut m = metrics(0.1);
        assert_eq!(
            judge_pair(&m, RunDtype::F16, true, &t).0,
            PairVerdict::PassEquiv
        );
        m.values[metrics::MEAN_ABS_DIFF] = 0.09;
        let (v, r) = judge_pair(&m, RunDtype::F16, true, &t);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(r.contains("mean_abs_diff"), "{r}");
        let mut m = metrics(0.1);
        m.values[metrics::KL_P99] = 3e-3;
        let (v, r) = judge_pair(&m, RunDtype::F16, true, &t);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(r.contains("kl_p99"), "{r}");
    }

    #[test]
    fn agreement_allows_the_flips_its_fraction_rounds_up_to() {
        let t = Thresholds::default_tolerance(RunDtype::F16);
        let tie = TopFlip {
            pos: 40,
            prefill_margin: 0.0,
            prefill_top: 10.0,
        };
        let mut m = metrics(0.01);
        m.positions = 32;
        m.top1_flips = vec![tie];
        m.values[metrics::TOP1_AGREEMENT] = 31.0 / 32.0;
        // One near-tie flip in 32 positions: 0.969 < 0.98, but 0.02 × 32 rounds up to 1.
        assert_eq!(
            judge_pair(&m, RunDtype::F16, true, &t).0,
            PairVerdict::PassEquiv
        );
        m.top1_flips = vec![tie; 2];
        m.values[metrics::TOP1_AGREEMENT] = 30.0 / 32.0;
        let (v, r) = judge_pair(&m, RunDtype::F16, true, &t);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(r.contains("2 flips in 32 positions, 1 allowed"), "{r}");
        assert_eq!(allowed_flips(0.98, 50), 1);
        assert_eq!(allowed_flips(0.98, 100), 2);
        assert_eq!(allowed_flips(0.9, 512), 52);
        // f32 allows none, however long the span.
        assert_eq!(allowed_flips(1.0, 512), 0);
        assert_eq!(allowed_flips(1.0, 1), 0);
    }

    #[test]
    fn trace_result_rules() {
        let pass = TraceTally {
            traced_pairs: 2,
            compared_records: 100,
            ..Default::default()
        };
        assert_eq!(judge_traces(&pass).0, GlobalVerdict::Pass);
        let fail = TraceTally {
            failing_pairs: 1,
            failed_records: 3,
            ..pass
        };
        assert_eq!(judge_traces(&fail).0, GlobalVerdict::Fail);
        let missing = TraceTally {
            not_traced: 1,
            ..pass
        };
        assert_eq!(judge_traces(&missing).0, GlobalVerdict::Incomplete);
        // Nothing compared is never a PASS, whatever the reason.
        let (v, why) = judge_traces(&TraceTally {
            nothing_failed_to_trace: true,
            ..Default::default()
        });
        assert_eq!(v, GlobalVerdict::Incomplete);
        assert!(why.contains("no pair failed"), "{why}");
        assert_eq!(
            judge_traces(&TraceTally::default()).0,
            GlobalVerdict::Incomplete
        );
    }

    #[test]
    fn global_verdict_rules() {
        use PairVerdict::*;
        assert_eq!(judge_sweep(&[]).0, GlobalVerdict::Incomplete);
        assert_eq!(
            judge_sweep(&[Skipped, Skipped]).0,
            GlobalVerdict::Incomplete
        );
        assert_eq!(judge_sweep(&[Incomplete]).0, GlobalVerdict::Incomplete);
        assert_eq!(
            judge_sweep(&[PassEquiv, Incomplete]).0,
            GlobalVerdict::Incomplete
        );
        assert_eq!(
            judge_sweep(&[PassEquiv, ExpectedDrift]).0,
            GlobalVerdict::Pass
        );
        assert_eq!(judge_sweep(&[PassEquiv, Skipped]).0, GlobalVerdict::Pass);
        assert_eq!(
            judge_sweep(&[PassEquiv, FailDrift, Incomplete]).0,
            GlobalVerdict::Fail
        );
        assert_eq!(judge_sweep(&[FailEquiv]).0, GlobalVerdict::Fail);
        let (_, r) = judge_sweep(&[Skipped]);
        assert!(r.contains("no pair was compared"), "{r}");
        assert_eq!(GlobalVerdict::Pass.exit_code(), crate::exit::PASS);
        assert_eq!(GlobalVerdict::Fail.exit_code(), crate::exit::FAIL);
        assert_eq!(
            GlobalVerdict::Incomplete.exit_code(),
            crate::exit::INCOMPLETE
        );
    }
}
