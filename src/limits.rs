//! Limits a pair's metrics must stay within: the default tolerances (kv_aligned = true) and
//! drift budgets (kv_aligned = false) per dtype, each with where its number comes from, and
//! the sweep file's partial overrides. Vocabulary shared by the sweep file (which overrides
//! them), the verdicts (which apply them) and the reports (which print them).

use std::collections::BTreeMap;

use serde::de::{Error as _, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compare::metrics::{self, Direction, METRICS};
use crate::dtype::{RunDtype, ulp};
use crate::engine::WeightFormat;

/// Limits a pair's metrics must stay within. Used both as the kv_aligned=true tolerance and
/// as the kv_aligned=false drift budget. One bound per limited metric of the metric table
/// (`crate::compare::metrics::METRICS`, which holds each bound's key and defaults), and the
/// near-tie rule that decides which top-1 flips count.
///
/// In report.json, the records and the sweep file, the bounds are keyed by their limit keys,
/// upper bounds first (`metrics::limited`), then `tie_margin` and `tie_ulps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Each metric's bound, at its index of the metric table (0 where no limit judges one).
    pub bounds: [f32; METRICS.len()],
    /// Absolute floor of the near-tie margin (see [`Thresholds::tie_margin_at`]).
    pub tie_margin: f32,
    /// Near-tie margin in rounding steps of the dtype at the size of prefill's top logit.
    pub tie_ulps: f32,
}

/// A partial [`Thresholds`] from the sweep file; absent keys keep the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThresholdsOverride {
    /// Each metric's bound, if given, at its index of the metric table.
    pub bounds: [Option<f32>; METRICS.len()],
    /// See [`Thresholds::tie_margin`].
    pub tie_margin: Option<f32>,
    /// See [`Thresholds::tie_ulps`].
    pub tie_ulps: Option<f32>,
}

/// The near-tie rule's keys, after the bounds.
const TIE_KEYS: [&str; 2] = ["tie_margin", "tie_ulps"];

/// How many metrics a limit judges.
const LIMITED: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < METRICS.len() {
        if METRICS[i].limit.is_some() {
            n += 1;
        }
        i += 1;
    }
    n
};

/// Every key of a [`Thresholds`], in its order: the bounds (upper bounds first, as
/// `metrics::limited` orders them), then the near-tie rule's.
pub const LIMIT_KEYS: [&str; LIMITED + TIE_KEYS.len()] = {
    let mut out = [""; LIMITED + TIE_KEYS.len()];
    let mut n = 0;
    let mut pass = 0;
    while pass < 2 {
        let mut i = 0;
        while i < METRICS.len() {
            let upper = matches!(METRICS[i].direction, Direction::AtMost);
            if let Some(l) = METRICS[i].limit
                && upper == (pass == 0)
            {
                out[n] = l.key;
                n += 1;
            }
            i += 1;
        }
        pass += 1;
    }
    out[n] = TIE_KEYS[0];
    out[n + 1] = TIE_KEYS[1];
    out
};

/// Where a key of [`LIMIT_KEYS`] lives in a [`Thresholds`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    /// `bounds[i]`.
    Bound(usize),
    /// `tie_margin`.
    TieMargin,
    /// `tie_ulps`.
    TieUlps,
}

/// The slot of `key`, if it is a key of [`LIMIT_KEYS`].
fn slot(key: &str) -> Option<Slot> {
    match key {
        "tie_margin" => Some(Slot::TieMargin),
        "tie_ulps" => Some(Slot::TieUlps),
        _ => METRICS
            .iter()
            .position(|m| m.limit_key() == Some(key))
            .map(Slot::Bound),
    }
}

/// The slots of [`LIMIT_KEYS`], in its order.
fn slots() -> impl Iterator<Item = (&'static str, Slot)> {
    LIMIT_KEYS.iter().filter_map(|&k| slot(k).map(|s| (k, s)))
}

impl Serialize for Thresholds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(LIMIT_KEYS.len()))?;
        for (k, slot) in slots() {
            map.serialize_entry(k, &self.at(slot))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Thresholds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given = BTreeMap::<String, f32>::deserialize(d)?;
        let mut t = Thresholds {
            bounds: [0.0; METRICS.len()],
            tie_margin: 0.0,
            tie_ulps: 0.0,
        };
        for (k, slot) in slots() {
            *t.at_mut(slot) = *given.get(k).ok_or_else(|| D::Error::missing_field(k))?;
        }
        Ok(t)
    }
}

impl Serialize for ThresholdsOverride {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let given: Vec<(&str, f32)> = slots()
            .filter_map(|(k, slot)| self.at(slot).map(|v| (k, v)))
            .collect();
        let mut map = s.serialize_map(Some(given.len()))?;
        for (k, v) in given {
            map.serialize_entry(k, &v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ThresholdsOverride {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OverrideVisitor)
    }
}

/// Reads a [`ThresholdsOverride`] as a derived struct with `deny_unknown_fields` would: the
/// same words for an unknown or repeated key, so the sweep file's errors do not change.
struct OverrideVisitor;

impl<'de> Visitor<'de> for OverrideVisitor {
    type Value = ThresholdsOverride;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("struct ThresholdsOverride")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut o = ThresholdsOverride::default();
        let mut seen = Vec::new();
        while let Some(Key(k, slot)) = map.next_key::<Key>()? {
            if seen.contains(&k) {
                return Err(A::Error::duplicate_field(k));
            }
            seen.push(k);
            *o.at_mut(slot) = map.next_value::<Option<f32>>()?;
        }
        Ok(o)
    }
}

/// A key of [`LIMIT_KEYS`] read as a struct's field name is: an unknown key fails while the
/// key is read, so the error's path names it (`tolerances.bf16.max_abs`).
struct Key(&'static str, Slot);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("field identifier")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                slots()
                    .find(|(k, _)| *k == v)
                    .map(|(k, slot)| Key(k, slot))
                    .ok_or_else(|| E::unknown_field(v, &LIMIT_KEYS))
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl ThresholdsOverride {
    fn at(&self, slot: Slot) -> Option<f32> {
        match slot {
            Slot::Bound(i) => self.bounds[i],
            Slot::TieMargin => self.tie_margin,
            Slot::TieUlps => self.tie_ulps,
        }
    }

    fn at_mut(&mut self, slot: Slot) -> &mut Option<f32> {
        match slot {
            Slot::Bound(i) => &mut self.bounds[i],
            Slot::TieMargin => &mut self.tie_margin,
            Slot::TieUlps => &mut self.tie_ulps,
        }
    }

    /// The value given for `key`, if any.
    pub fn get(&self, key: &str) -> Option<f32> {
        slot(key).and_then(|s| self.at(s))
    }

    /// Sets the value of `key` (a key of [`LIMIT_KEYS`]; others are ignored).
    pub fn set(&mut self, key: &str, value: f32) {
        if let Some(s) = slot(key) {
            *self.at_mut(s) = Some(value);
        }
    }

    /// Every given value must be finite and non-negative; a fraction's bound must be at most
    /// 1. On error returns (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (k, slot) in slots() {
            if let Some(v) = self.at(slot)
                && !(v.is_finite() && v >= 0.0)
            {
                return Err((k, format!("{v} must be a finite number ≥ 0")));
            }
        }
        for (k, slot) in slots() {
            let fraction =
                matches!(slot, Slot::Bound(i) if METRICS[i].format == metrics::Format::Fraction);
            if let Some(a) = self.at(slot)
                && fraction
                && a > 1.0
            {
                return Err((k, format!("{a} is a fraction and must be ≤ 1")));
            }
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
    ///
    /// The bounds are the metric table's rows (`Limit::dense`); where they come from, per
    /// dtype (worst seen by PyTorch / candle):
    /// - f32: max 1.2e-4 / 1.9e-4, p99 2.5e-5 / 6.7e-5, mean — / 1.7e-5, mean KL 1.5e-11 /
    ///   5e-11, KL max — / 3.8e-10, no flips. The KL limits sit far above that because f32
    ///   log-softmax itself rounds near 1e-7; f32 flips only happen on exact ties, so the tie
    ///   margin is the max_abs scale.
    /// - bf16: max 1.14 / 1.75, p99 0.37 / 0.72, mean — / 0.22, mean KL 1.9e-3 / 5.7e-3, KL
    ///   p99 — / 0.049, KL max — / 0.076, top-1 ≥ 0.961 in both. Every flip sat on a tie or a
    ///   one-step gap (0.125 for logits in [16, 32)); the widest was 0.25.
    /// - f16: max 0.19 / 0.52, p99 0.05 / 0.13, mean — / 0.034, mean KL 3e-5 / 9.5e-5, KL p99
    ///   — / 1e-3, KL max 4e-4 / 0.0108, top-1 ≥ 0.996 / 0.992. Flips on gaps up to 1/64 in
    ///   PyTorch and 0.0547 in candle (span 128, seed 0, position 156: f32 prefill and decode
    ///   agree on a 0.021 near-tie that f16 prefill's own rounding widened; f16 decode sides
    ///   with f32). The KL max (span 512, seed 1, position 377) is one top logit of 29 that f16
    ///   decode put 0.23 off f32, a quarter of `max_abs_diff`'s limit: such a shift δ at
    ///   probability p costs p(1 − p)δ²/2 ≈ 0.008.
    pub fn default_tolerance(dtype: RunDtype) -> Self {
        let (column, tie_margin) = match dtype {
            RunDtype::F32 => (0, 4e-4),
            RunDtype::Bf16 => (1, 0.25),
            RunDtype::F16 => (2, 1.0 / 8.0),
        };
        Self::from_table(|l| l.dense[column], tie_margin)
    }

    /// The bounds `bound` picks from each limited metric's row, with the near-tie rule.
    fn from_table(bound: impl Fn(&metrics::Limit) -> f32, tie_margin: f32) -> Self {
        let mut bounds = [0.0; METRICS.len()];
        for (b, m) in bounds.iter_mut().zip(METRICS) {
            *b = m.limit.as_ref().map_or(0.0, &bound);
        }
        Thresholds {
            bounds,
            tie_margin,
            tie_ulps: 2.0,
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

    /// The drift budget that goes with tolerance `t`: twice the room on every bound (an
    /// upper bound doubles, a lower bound's distance from 1 doubles), the same tie rule.
    fn budget_from(t: Thresholds) -> Self {
        let mut bounds = t.bounds;
        for (b, m) in bounds.iter_mut().zip(METRICS) {
            *b = match m.direction {
                Direction::AtMost => 2.0 * *b,
                Direction::AtLeast => 1.0 - 2.0 * (1.0 - *b),
            };
        }
        Thresholds { bounds, ..t }
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

    /// Default limits of an engine path against the reference (docs/design.md, "Three
    /// comparisons"): the drift budget, whose bounds hold the arithmetic of two different
    /// orders of operations, with four times its tie margin. Against a reference on f32
    /// weights, a bf16, f16 or quantized setting also carries its weights' own rounding,
    /// which moves logits further than arithmetic alone and flips the top token on wider
    /// margins: on the built-in model (`configs/b3_70_sweep.yaml`, spans 32–512, seeds 0–2,
    /// CPU) bf16 prefill and decode against the own f32 prefill flipped on reference margins
    /// up to 0.57 (the budget's tie margin is 0.25) while max |diff| stayed at 1.23 of 7.0,
    /// KL max 0.05 of 0.3 and top-1 agreement at least 0.875 of 0.8; f16 flipped on margins up
    /// to 0.048 with max |diff| 0.15 of 2.0.
    pub fn default_reference_for(dtype: RunDtype, weights: WeightFormat) -> Self {
        let budget = Self::default_drift_budget_for(dtype, weights);
        Thresholds {
            tie_margin: 4.0 * budget.tie_margin,
            ..budget
        }
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
    /// The bounds are the metric table's rows (`Limit::quantized`); the tie margin 0.75.
    fn quantized_tolerance() -> Self {
        Self::from_table(|l| l.quantized, 0.75)
    }

    /// These thresholds with the given overrides applied.
    pub fn merged(&self, o: &ThresholdsOverride) -> Self {
        let mut t = *self;
        for (_, slot) in slots() {
            if let Some(v) = o.at(slot) {
                *t.at_mut(slot) = v;
            }
        }
        t
    }

    fn at(&self, slot: Slot) -> f32 {
        match slot {
            Slot::Bound(i) => self.bounds[i],
            Slot::TieMargin => self.tie_margin,
            Slot::TieUlps => self.tie_ulps,
        }
    }

    fn at_mut(&mut self, slot: Slot) -> &mut f32 {
        match slot {
            Slot::Bound(i) => &mut self.bounds[i],
            Slot::TieMargin => &mut self.tie_margin,
            Slot::TieUlps => &mut self.tie_ulps,
        }
    }

    /// Sets the value of `key` (a key of [`LIMIT_KEYS`]; others are ignored).
    pub fn set(&mut self, key: &str, value: f32) {
        if let Some(s) = slot(key) {
            *self.at_mut(s) = value;
        }
    }

    /// The bound of `max_abs_diff` (also the comparator's divergence limit).
    pub fn max_abs_diff(&self) -> f32 {
        self.bounds[metrics::MAX_ABS_DIFF]
    }

    /// The bound of `kl_max`.
    pub fn kl_max(&self) -> f32 {
        self.bounds[metrics::KL_MAX]
    }

    /// The bound of `top1_agreement` (its key is `top1_agreement_min`).
    pub fn top1_agreement_min(&self) -> f32 {
        self.bounds[metrics::TOP1_AGREEMENT]
    }

    /// The value of `key` (a key of [`LIMIT_KEYS`]).
    pub fn get(&self, key: &str) -> Option<f32> {
        slot(key).map(|s| self.at(s))
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
        let mut o = ThresholdsOverride::default();
        o.set("max_abs_diff", 0.1);
        let t = Thresholds::default_tolerance(RunDtype::Bf16).merged(&o);
        assert_eq!(t.max_abs_diff(), 0.1);
        assert_eq!(
            t.get("p99_abs_diff"),
            Thresholds::default_tolerance(RunDtype::Bf16).get("p99_abs_diff")
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
                let mut o = ThresholdsOverride::default();
                for k in LIMIT_KEYS {
                    o.set(k, t.get(k).unwrap());
                }
                assert_eq!(o.validate(), Ok(()), "{d}: {t:?}");
                assert!(t.top1_agreement_min() > 0.0, "{d}: {t:?}");
            }
        }
    }

    #[test]
    fn the_table_gives_the_measured_defaults_in_the_files_key_order() {
        // The numbers as they stood before the metric table held them, in report.json's order.
        let json = |t: Thresholds| serde_json::to_string(&t).unwrap();
        assert_eq!(
            json(Thresholds::default_tolerance(RunDtype::F16)),
            r#"{"max_abs_diff":1.0,"p99_abs_diff":0.25,"mean_abs_diff":0.07,"kl_mean":0.0002,"kl_p99":0.002,"kl_max":0.02,"top1_agreement_min":0.98,"tie_margin":0.125,"tie_ulps":2.0}"#
        );
        let q = Thresholds::default_drift_budget_for(RunDtype::Bf16, WeightFormat::Quantized);
        assert_eq!(
            json(q),
            r#"{"max_abs_diff":10.0,"p99_abs_diff":4.0,"mean_abs_diff":1.2,"kl_mean":0.03,"kl_p99":0.24,"kl_max":0.3,"top1_agreement_min":0.6,"tie_margin":0.75,"tie_ulps":2.0}"#
        );
        let back: Thresholds = serde_json::from_str(&json(q)).unwrap();
        assert_eq!(back, q);
        let f32_t = Thresholds::default_tolerance(RunDtype::F32);
        assert_eq!((f32_t.max_abs_diff(), f32_t.kl_max()), (4e-4, 1e-6));
        assert_eq!((f32_t.top1_agreement_min(), f32_t.tie_margin), (1.0, 4e-4));
    }

    #[test]
    fn an_override_reads_and_writes_only_the_keys_given() {
        let o: ThresholdsOverride = serde_yaml::from_str("kl_max: 0.5\ntie_ulps: 3\n").unwrap();
        assert_eq!((o.get("kl_max"), o.get("tie_ulps")), (Some(0.5), Some(3.0)));
        assert_eq!(o.get("max_abs_diff"), None);
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"kl_max":0.5,"tie_ulps":3.0}"#
        );
        let e = serde_yaml::from_str::<ThresholdsOverride>("max_diff: 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `max_diff`"), "{e}");
        let e = serde_yaml::from_str::<ThresholdsOverride>("kl_max: 1\nkl_max: 2\n");
        assert!(e.is_err());
    }
}
