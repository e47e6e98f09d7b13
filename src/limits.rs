//! Limits a pair's metrics must stay within: the default tolerances (kv_aligned = true) and
//! drift budgets (kv_aligned = false) per dtype, each with where its number comes from, and
//! the sweep file's partial overrides. Vocabulary shared by the sweep file (which overrides
//! them), the verdicts (which apply them) and the reports (which print them).

use serde::{Deserialize, Serialize};

use crate::dtype::{RunDtype, ulp};
use crate::engine::WeightFormat;

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

/// One field of [`Thresholds`]: its key (in the sweep file, report.json and the metric
/// table of `crate::compare::metrics`, which names each metric's limit by it), its value and
/// its override.
#[derive(Debug, Clone, Copy)]
pub struct LimitField {
    /// The key.
    pub key: &'static str,
    /// Its value in a [`Thresholds`].
    pub get: fn(&Thresholds) -> f32,
    /// Its value in a [`ThresholdsOverride`], if given.
    pub get_override: fn(&ThresholdsOverride) -> Option<f32>,
}

/// The [`LimitField`] of the field `$f`, which [`Thresholds`] and [`ThresholdsOverride`] name
/// alike.
macro_rules! limit_field {
    ($f:ident) => {
        LimitField {
            key: stringify!($f),
            get: |t| t.$f,
            get_override: |o| o.$f,
        }
    };
}

/// Every field of [`Thresholds`], in its order.
pub const LIMIT_FIELDS: &[LimitField] = &[
    limit_field!(max_abs_diff),
    limit_field!(p99_abs_diff),
    limit_field!(mean_abs_diff),
    limit_field!(kl_mean),
    limit_field!(kl_p99),
    limit_field!(kl_max),
    limit_field!(top1_agreement_min),
    limit_field!(tie_margin),
    limit_field!(tie_ulps),
];

impl ThresholdsOverride {
    /// Every given value must be finite and non-negative; agreement must be in [0, 1].
    /// On error returns (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for f in LIMIT_FIELDS {
            let (k, v) = (f.key, (f.get_override)(self));
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
    /// two implementations: PyTorch + transformers (docs/design.md, "Verdicts") and driftsweep's own
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
    /// docs/design.md, "Verdicts" saw no systematic difference between kv_aligned true and false, so
    /// the budget is the tolerance with twice the room on every magnitude (and the same tie
    /// margin: a wide-margin flip is a defect in either mode).
    pub fn default_drift_budget(dtype: RunDtype) -> Self {
        Self::budget_from(Self::default_tolerance(dtype))
    }

    /// The drift budget that goes with tolerance `t`.
    fn budget_from(t: Thresholds) -> Self {
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

    /// Default kv_aligned=true tolerance for a dtype on dequantized or quantized weights.
    pub fn default_tolerance_for(dtype: RunDtype, weights: WeightFormat) -> Self {
        match weights {
            WeightFormat::Dequantized => Self::default_tolerance(dtype),
            // One set for every dtype: the activations' quantization dominates.
            WeightFormat::Quantized => Self::quantized_tolerance(),
        }
    }

    /// Default kv_aligned=false drift budget for a dtype on dequantized or quantized weights.
    pub fn default_drift_budget_for(dtype: RunDtype, weights: WeightFormat) -> Self {
        Self::budget_from(Self::default_tolerance_for(dtype, weights))
    }

    /// Default kv_aligned=true tolerance on GGUF weights kept quantized (candle's `QMatMul`).
    ///
    /// Measured on SmolLM2-135M-Instruct Q4_1 (`configs/engines_smollm2.yaml`: ChatML prompt,
    /// span 32, seeds 0–2, both kv_aligned modes, CPU, the own decoder; candle-transformers'
    /// `quantized_llama` drifts alike). candle's CPU kernels quantize every activation row
    /// to 8 bits before each projection, so the f32-level differences between a decode step
    /// and prefill's batched rows (attention's order of sums) cross rounding boundaries of
    /// that quantization and come out 10⁴ times larger than with dequantized f32 weights. The
    /// dtype hardly matters against that. Worst seen over f32, bf16 and f16 with
    /// kv_aligned=1 (kv_aligned=0): max 2.4 (2.23), p99 0.97 (1.0), mean 0.28 (0.25), mean
    /// KL 7.0e-3 (1.1e-2), KL p99 and max 0.054 (0.099), top-1 ≥ 0.906 (0.906); flips on
    /// prefill margins up to 0.34. Each limit is about twice that, as for the dense ones.
    fn quantized_tolerance() -> Self {
        Thresholds {
            max_abs_diff: 5.0,
            p99_abs_diff: 2.0,
            mean_abs_diff: 0.6,
            kl_mean: 1.5e-2,
            kl_p99: 0.12,
            kl_max: 0.15,
            top1_agreement_min: 0.8,
            tie_margin: 0.75,
            tie_ulps: 2.0,
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

    /// The field whose key ([`LimitField::key`]) is `key`.
    pub fn get(&self, key: &str) -> Option<f32> {
        LIMIT_FIELDS
            .iter()
            .find(|f| f.key == key)
            .map(|f| (f.get)(self))
    }

    /// The near-tie margin for a flip whose prefill top logit is `top`: `tie_ulps` rounding
    /// steps of `dtype` at |top|, and at least `tie_margin`.
    pub fn tie_margin_at(&self, dtype: RunDtype, top: f32) -> f32 {
        self.tie_margin.max(self.tie_ulps * ulp(dtype, top))
    }
}

/// The key of a (dtype, weights) in a sweep file's `tolerances` and `drift_budget` and in
/// report.json's `limits`: the dtype alone for dequantized weights (as before weight formats
/// existed), `DTYPE/quantized` for quantized ones.
pub fn limits_key(dtype: RunDtype, weights: WeightFormat) -> String {
    match weights {
        WeightFormat::Dequantized => dtype.to_string(),
        WeightFormat::Quantized => format!("{dtype}/quantized"),
    }
}

/// Every valid key of [`limits_key`].
pub fn limits_keys() -> Vec<String> {
    WeightFormat::ALL
        .into_iter()
        .flat_map(|w| RunDtype::ALL.map(|d| limits_key(d, w)))
        .collect()
}

/// Tolerance and budget of one dtype.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DtypeLimits {
    /// kv_aligned=true.
    pub tolerance: Thresholds,
    /// kv_aligned=false.
    pub drift_budget: Thresholds,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tie_margin_has_its_floor() {
        // Two bf16 steps at 100 (0.5 each) are wider than the floor.
        let t = Thresholds::default_tolerance(RunDtype::Bf16);
        assert_eq!(t.tie_margin_at(RunDtype::Bf16, 100.0), 1.0);
        assert_eq!(t.tie_margin_at(RunDtype::Bf16, 1.0), t.tie_margin);
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
    fn every_default_is_a_valid_override() {
        // The defaults must pass the checks a sweep file's values pass (a negative budget
        // agreement, say, would make every flip count allowed).
        for (d, w) in RunDtype::ALL
            .into_iter()
            .flat_map(|d| WeightFormat::ALL.map(|w| (d, w)))
        {
            for t in [
                Thresholds::default_tolerance_for(d, w),
                Thresholds::default_drift_budget_for(d, w),
            ] {
                let o = ThresholdsOverride {
                    max_abs_diff: Some(t.max_abs_diff),
                    p99_abs_diff: Some(t.p99_abs_diff),
                    mean_abs_diff: Some(t.mean_abs_diff),
                    kl_mean: Some(t.kl_mean),
                    kl_p99: Some(t.kl_p99),
                    kl_max: Some(t.kl_max),
                    top1_agreement_min: Some(t.top1_agreement_min),
                    tie_margin: Some(t.tie_margin),
                    tie_ulps: Some(t.tie_ulps),
                };
                assert_eq!(o.validate(), Ok(()), "{d}: {t:?}");
                assert!(t.top1_agreement_min > 0.0, "{d}: {t:?}");
            }
        }
    }
}
