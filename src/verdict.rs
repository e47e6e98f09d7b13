//! Verdicts (DESIGN.md section 4): per pair from its metrics and thresholds, and the sweep's
//! global verdict from the pairs. The default tolerances and drift budgets live here, and only
//! here, each with where its number comes from.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::compare::Metrics;
use crate::config::RunDtype;

/// Limits a pair's metrics must stay within. Used both as the kv_aligned=true tolerance and
/// as the kv_aligned=false drift budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Largest allowed |prefill − decode| over the span × vocab.
    pub max_abs_diff: f32,
    /// Largest allowed 99th percentile of |prefill − decode|.
    pub p99_abs_diff: f32,
    /// Largest allowed mean |prefill − decode|.
    pub mean_abs_diff: f32,
    /// Largest allowed mean over positions of KL(prefill ‖ decode).
    pub kl_mean: f32,
    /// Largest allowed 99th percentile of the per-position KL.
    pub kl_p99: f32,
    /// Largest allowed KL at any one position.
    pub kl_max: f32,
    /// Smallest allowed fraction of positions with the same argmax.
    pub top1_agreement_min: f32,
    /// Absolute floor of the near-tie margin (see [`Thresholds::tie_margin_at`]).
    pub tie_margin: f32,
    /// Near-tie margin in rounding steps of the dtype at the size of prefill's top logit.
    pub tie_ulps: f32,
}

/// A partial [`Thresholds`] from the sweep file; absent keys keep the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsOverride {
    /// See [`Thresholds::max_abs_diff`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f32>,
    /// See [`Thresholds::p99_abs_diff`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_abs_diff: Option<f32>,
    /// See [`Thresholds::mean_abs_diff`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_abs_diff: Option<f32>,
    /// See [`Thresholds::kl_mean`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_mean: Option<f32>,
    /// See [`Thresholds::kl_p99`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_p99: Option<f32>,
    /// See [`Thresholds::kl_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_max: Option<f32>,
    /// See [`Thresholds::top1_agreement_min`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_agreement_min: Option<f32>,
    /// See [`Thresholds::tie_margin`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_margin: Option<f32>,
    /// See [`Thresholds::tie_ulps`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_ulps: Option<f32>,
}

impl ThresholdsOverride {
    /// Every given value must be finite and non-negative; agreement must be in [0, 1].
    /// On error returns (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let fields = [
            ("max_abs_diff", self.max_abs_diff),
            ("p99_abs_diff", self.p99_abs_diff),
            ("mean_abs_diff", self.mean_abs_diff),
            ("kl_mean", self.kl_mean),
            ("kl_p99", self.kl_p99),
            ("kl_max", self.kl_max),
            ("top1_agreement_min", self.top1_agreement_min),
            ("tie_margin", self.tie_margin),
            ("tie_ulps", self.tie_ulps),
        ];
        for (k, v) in fields {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err((k, format!("{v} must be a finite number ≥ 0")));
            }
        }
        if let Some(a) = self.top1_agreement_min
            && a > 1.0
        {
            return Err((
                "top1_agreement_min",
                format!("{a} is a fraction and must be ≤ 1"),
            ));
        }
        Ok(())
    }
}

impl Thresholds {
    /// Default kv_aligned=true tolerance for a dtype.
    ///
    /// Each limit is about twice the worst honest drift measured on SmolLM2-135M-Instruct in
    /// the B3.70 sweep (ChatML prompt, spans 32–512, seeds 0–2, both kv_aligned modes, CPU), by
    /// two implementations: PyTorch + transformers (DESIGN.md section 4) and driftsweep's own
    /// candle decoder (`configs/smollm2_b3_70.yaml`, whose f32 matmuls accumulate in another
    /// order and drift about twice as far). An honest kernel passes; a defect (wrong mask,
    /// stale cache slot, position off by one: KL orders of magnitude higher, top-1 flips on wide
    /// margins) does not. A flip is a near-tie within two rounding steps of the dtype at the top
    /// logit's size (`tie_ulps`), and never less than the absolute `tie_margin`.
    pub fn default_tolerance(dtype: RunDtype) -> Self {
        match dtype {
            // f32, worst seen (PyTorch / candle): max 1.2e-4 / 1.9e-4, p99 2.5e-5 / 6.7e-5,
            // mean — / 1.7e-5, mean KL 1.5e-11 / 5e-11, KL max — / 3.8e-10, no flips. The KL
            // limits sit far above that because f32 log-softmax itself rounds near 1e-7.
            RunDtype::F32 => Thresholds {
                max_abs_diff: 4e-4,
                p99_abs_diff: 1.5e-4,
                mean_abs_diff: 4e-5,
                kl_mean: 1e-8,
                kl_p99: 1e-7,
                kl_max: 1e-6,
                top1_agreement_min: 1.0,
                // f32 flips only happen on exact ties: the max_abs scale.
                tie_margin: 4e-4,
                tie_ulps: 2.0,
            },
            // bf16, worst seen: max 1.14 / 1.75, p99 0.37 / 0.72, mean — / 0.22, mean KL
            // 1.9e-3 / 5.7e-3, KL p99 — / 0.049, KL max — / 0.076, top-1 ≥ 0.961 in both.
            // Every flip sat on a tie or a one-step gap (0.125 for logits in [16, 32)); the
            // widest was 0.25.
            RunDtype::Bf16 => Thresholds {
                max_abs_diff: 3.5,
                p99_abs_diff: 1.5,
                mean_abs_diff: 0.45,
                kl_mean: 1.2e-2,
                kl_p99: 0.1,
                kl_max: 0.15,
                top1_agreement_min: 0.9,
                tie_margin: 0.25,
                tie_ulps: 2.0,
            },
            // f16, worst seen: max 0.19 / 0.52, p99 0.05 / 0.13, mean — / 0.034, mean KL 3e-5 /
            // 9.5e-5, KL p99 — / 1e-3, KL max 4e-4 / 0.0108, top-1 ≥ 0.996 / 0.992. Flips on
            // gaps up to 1/64 in PyTorch and 0.0547 in candle (span 128, seed 0, position 156:
            // f32 prefill and decode agree on a 0.021 near-tie that f16 prefill's own rounding
            // widened; f16 decode sides with f32). The KL max (span 512, seed 1, position 377)
            // is one top logit of 29 that f16 decode put 0.23 off f32, a quarter of
            // `max_abs_diff`'s limit: such a shift δ at probability p costs p(1 − p)δ²/2 ≈ 0.008.
            RunDtype::F16 => Thresholds {
                max_abs_diff: 1.0,
                p99_abs_diff: 0.25,
                mean_abs_diff: 0.07,
                kl_mean: 2e-4,
                kl_p99: 2e-3,
                kl_max: 2e-2,
                top1_agreement_min: 0.98,
                tie_margin: 1.0 / 8.0,
                tie_ulps: 2.0,
            },
        }
    }

    /// Default kv_aligned=false drift budget for a dtype.
    ///
    /// DESIGN.md section 4 saw no systematic difference between kv_aligned true and false, so
    /// the budget is the tolerance with twice the room on every magnitude (and the same tie
    /// margin: a wide-margin flip is a defect in either mode).
    pub fn default_drift_budget(dtype: RunDtype) -> Self {
        let t = Self::default_tolerance(dtype);
        Thresholds {
            max_abs_diff: 2.0 * t.max_abs_diff,
            p99_abs_diff: 2.0 * t.p99_abs_diff,
            mean_abs_diff: 2.0 * t.mean_abs_diff,
            kl_mean: 2.0 * t.kl_mean,
            kl_p99: 2.0 * t.kl_p99,
            kl_max: 2.0 * t.kl_max,
            top1_agreement_min: 1.0 - 2.0 * (1.0 - t.top1_agreement_min),
            tie_margin: t.tie_margin,
            tie_ulps: t.tie_ulps,
        }
    }

    /// These thresholds with the given overrides applied.
    pub fn merged(&self, o: &ThresholdsOverride) -> Self {
        Thresholds {
            max_abs_diff: o.max_abs_diff.unwrap_or(self.max_abs_diff),
            p99_abs_diff: o.p99_abs_diff.unwrap_or(self.p99_abs_diff),
            mean_abs_diff: o.mean_abs_diff.unwrap_or(self.mean_abs_diff),
            kl_mean: o.kl_mean.unwrap_or(self.kl_mean),
            kl_p99: o.kl_p99.unwrap_or(self.kl_p99),
            kl_max: o.kl_max.unwrap_or(self.kl_max),
            top1_agreement_min: o.top1_agreement_min.unwrap_or(self.top1_agreement_min),
            tie_margin: o.tie_margin.unwrap_or(self.tie_margin),
            tie_ulps: o.tie_ulps.unwrap_or(self.tie_ulps),
        }
    }

    /// The near-tie margin for a flip whose prefill top logit is `top`: `tie_ulps` rounding
    /// steps of `dtype` at |top|, and at least `tie_margin`.
    pub fn tie_margin_at(&self, dtype: RunDtype, top: f32) -> f32 {
        self.tie_margin.max(self.tie_ulps * ulp(dtype, top))
    }
}

/// The spacing of `dtype` values near `x` (one unit in the last place).
pub fn ulp(dtype: RunDtype, x: f32) -> f32 {
    let mantissa_bits = match dtype {
        RunDtype::F32 => 23,
        RunDtype::Bf16 => 7,
        RunDtype::F16 => 10,
    };
    let exponent = x.abs().max(f32::MIN_POSITIVE).log2().floor();
    2f32.powf(exponent - mantissa_bits as f32)
}

/// A pair's verdict (DESIGN.md section 4).
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
    /// Exit code of `driftsweep run` (DESIGN.md section 7).
    pub fn exit_code(self) -> i32 {
        match self {
            GlobalVerdict::Pass => 0,
            GlobalVerdict::Fail => 1,
            GlobalVerdict::Incomplete => 3,
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

/// Judges a compared pair. `kv_aligned` picks between tolerance (PASS_EQUIV/FAIL_EQUIV) and
/// drift budget (EXPECTED_DRIFT/FAIL_DRIFT); `limits` is the one that applies. Returns the
/// verdict and its reason in words.
pub fn judge_pair(
    m: &Metrics,
    dtype: RunDtype,
    kv_aligned: bool,
    limits: &Thresholds,
) -> (PairVerdict, String) {
    let (pass, fail, what) = if kv_aligned {
        (PairVerdict::PassEquiv, PairVerdict::FailEquiv, "tolerance")
    } else {
        (
            PairVerdict::ExpectedDrift,
            PairVerdict::FailDrift,
            "drift budget",
        )
    };
    let mut breaches = Vec::new();
    if m.non_finite > 0 {
        breaches.push(format!("{} non-finite logits", m.non_finite));
    }
    let mut over = |name: &str, value: f32, limit: f32| {
        // NaN metrics come with non-finite logits, already counted above.
        if value > limit {
            breaches.push(format!("{name} {} > {}", fmt_num(value), fmt_num(limit)));
        }
    };
    over("max_abs_diff", m.max_abs_diff, limits.max_abs_diff);
    over("p99_abs_diff", m.p99_abs_diff, limits.p99_abs_diff);
    over("mean_abs_diff", m.mean_abs_diff, limits.mean_abs_diff);
    over("kl_mean", m.kl_mean, limits.kl_mean);
    over("kl_p99", m.kl_p99, limits.kl_p99);
    over("kl_max", m.kl_max, limits.kl_max);
    let flips_allowed = allowed_flips(limits.top1_agreement_min, m.positions);
    if m.top1_flips.len() > flips_allowed {
        breaches.push(format!(
            "top1_agreement {:.4} < {:.4} ({} flips in {} positions, {} allowed)",
            m.top1_agreement,
            limits.top1_agreement_min,
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
    if !breaches.is_empty() {
        return (fail, format!("outside the {what}: {}", breaches.join("; ")));
    }
    let mut reason = format!("within the {what}");
    if m.max_abs_diff == 0.0 {
        reason.push_str("; no drift observed: the logits are bit-identical");
    } else {
        reason.push_str(&format!(
            " (max_abs_diff {} of {}, kl_mean {})",
            fmt_num(m.max_abs_diff),
            fmt_num(limits.max_abs_diff),
            fmt_num(m.kl_mean)
        ));
        let ties = m.top1_flips.len();
        if ties > 0 {
            reason.push_str(&format!("; {ties} top-1 flip(s), all on near-ties"));
        }
    }
    (pass, reason)
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

/// Compact number formatting for reasons: scientific below 1e-3, otherwise 4 significant digits.
pub fn fmt_num(x: f32) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() < 1e-3 || x.abs() >= 1e5 {
        format!("{x:.2e}")
    } else {
        format!("{}", (x as f64 * 1e4).round() / 1e4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::TopFlip;

    fn metrics(max_abs: f32) -> Metrics {
        Metrics {
            max_abs_diff: max_abs,
            p99_abs_diff: max_abs / 2.0,
            mean_abs_diff: max_abs / 4.0,
            top1_agreement: 1.0,
            kl_mean: 0.0,
            kl_p99: 0.0,
            kl_max: 0.0,
            first_divergent_pos: None,
            first_top1_flip: None,
            top1_flips: vec![],
            non_finite: 0,
            positions: 4,
            vocab: 8,
            per_pos_max_abs: vec![max_abs; 4],
            per_pos_kl: vec![Some(0.0); 4],
            per_pos_delta_p: vec![],
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
        m.max_abs_diff = f32::NAN;
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
        m.top1_agreement = 0.95;
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
    fn ulp_matches_the_formats() {
        assert_eq!(ulp(RunDtype::Bf16, 20.0), 0.125);
        assert_eq!(ulp(RunDtype::Bf16, -80.0), 0.5);
        assert_eq!(ulp(RunDtype::F16, 20.0), 1.0 / 64.0);
        assert_eq!(ulp(RunDtype::F32, 1.0), f32::EPSILON);
        let t = Thresholds::default_tolerance(RunDtype::Bf16);
        assert_eq!(t.tie_margin_at(RunDtype::Bf16, 1.0), t.tie_margin);
    }

    #[test]
    fn mean_abs_and_kl_p99_are_judged_too() {
        let t = Thresholds::default_tolerance(RunDtype::F16);
        let mut m = metrics(0.1);
        assert_eq!(
            judge_pair(&m, RunDtype::F16, true, &t).0,
            PairVerdict::PassEquiv
        );
        m.mean_abs_diff = 0.09;
        let (v, r) = judge_pair(&m, RunDtype::F16, true, &t);
        assert_eq!(v, PairVerdict::FailEquiv);
        assert!(r.contains("mean_abs_diff"), "{r}");
        let mut m = metrics(0.1);
        m.kl_p99 = 3e-3;
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
        m.top1_agreement = 31.0 / 32.0;
        // One near-tie flip in 32 positions: 0.969 < 0.98, but 0.02 × 32 rounds up to 1.
        assert_eq!(
            judge_pair(&m, RunDtype::F16, true, &t).0,
            PairVerdict::PassEquiv
        );
        m.top1_flips = vec![tie; 2];
        m.top1_agreement = 30.0 / 32.0;
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
    fn overrides_merge() {
        let t = Thresholds::default_tolerance(RunDtype::Bf16).merged(&ThresholdsOverride {
            max_abs_diff: Some(0.1),
            ..Default::default()
        });
        assert_eq!(t.max_abs_diff, 0.1);
        assert_eq!(
            t.p99_abs_diff,
            Thresholds::default_tolerance(RunDtype::Bf16).p99_abs_diff
        );
    }

    #[test]
    fn budget_is_looser_than_tolerance() {
        for d in [RunDtype::F32, RunDtype::Bf16, RunDtype::F16] {
            let t = Thresholds::default_tolerance(d);
            let b = Thresholds::default_drift_budget(d);
            assert!(b.max_abs_diff > t.max_abs_diff && b.kl_mean > t.kl_mean);
            assert!(b.top1_agreement_min <= t.top1_agreement_min);
        }
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
        assert_eq!(GlobalVerdict::Pass.exit_code(), 0);
        assert_eq!(GlobalVerdict::Fail.exit_code(), 1);
        assert_eq!(GlobalVerdict::Incomplete.exit_code(), 3);
    }
}
