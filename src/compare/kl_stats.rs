//! KL statistics as llama.cpp's `llama-perplexity --kl-divergence` prints them, from the
//! per-position series the comparator keeps (`per_pos_kl`, `per_pos_delta_p`, the top-1
//! flips): KL mean ± its standard error, median, p90, p95, p99, p99.9, max; Δp mean, RMS and
//! quantiles; "same top p" with its standard error and a 95% Wilson interval.
//!
//! The definitions follow llama.cpp so that numbers read the same: quantiles interpolate
//! linearly between sorted values at `q · (n − 1)` (the verdict's `kl_p99` is a nearest-rank
//! value instead, so the two can differ in the last digits), and the uncertainty of a mean is
//! √(var / (n − 1)). Two differences, both forced by what a prefill/decode pair is: prefill is
//! the base model, decode the one under test, and Δp is the change in probability of
//! *prefill's top token* (llama.cpp uses the evaluated text's next token, which a pair of
//! paths over the same ids has no better claim to than prefill's own choice).

use serde::{Deserialize, Serialize};

use super::types::Metrics;

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Quantile `q` of ascending `sorted` values, interpolated linearly at `q · (n − 1)` as
/// llama.cpp does; 0 for no values.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted {
        [] => 0.0,
        [only] => *only,
        _ if q <= 0.0 => sorted[0],
        _ if q >= 1.0 => sorted[sorted.len() - 1],
        _ => {
            let p = q * (sorted.len() - 1) as f64;
            let i = p.floor() as usize;
            let frac = p - i as f64;
            let hi = sorted[(i + 1).min(sorted.len() - 1)];
            (1.0 - frac) * sorted[i] + frac * hi
        }
    }
}

/// Mean and its standard error √(var / (n − 1)) (llama.cpp's `mean_and_uncertainty`, with
/// the variance taken around the mean in a second pass); the error is `None` below 2 values.
pub fn mean_and_se(xs: &[f64]) -> (f64, Option<f64>) {
    if xs.is_empty() {
        return (0.0, None);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, None);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, Some((var / (n - 1.0)).sqrt()))
}

/// The 95% Wilson score interval of a proportion `k / n`; stays inside [0, 1] and is not
/// empty at k = n, where the normal approximation llama.cpp prints collapses to ± 0.
pub fn wilson_interval(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// KL(prefill ‖ decode) over positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlSummary {
    /// Mean KL.
    pub mean: f64,
    /// Standard error of the mean (null below two positions).
    pub mean_se: Option<f64>,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

/// Δp = p_decode(t) − p_prefill(t), t prefill's top token, over positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaPSummary {
    /// Positions with a Δp.
    pub positions: usize,
    /// Mean Δp.
    pub mean: f64,
    /// Its standard error.
    pub mean_se: Option<f64>,
    /// √(mean Δp²).
    pub rms: f64,
    /// Its uncertainty, as llama.cpp propagates it: SE(Δp²) / (2 · rms).
    pub rms_se: Option<f64>,
    /// Smallest (most negative: decode least sure of prefill's choice).
    pub min: f64,
    /// 1st percentile.
    pub p1: f64,
    /// 5th percentile.
    pub p5: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 25th percentile.
    pub p25: f64,
    /// Median.
    pub median: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// The share of positions where both paths pick the same top token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SameTopP {
    /// Positions with the same argmax.
    pub same: usize,
    /// Positions compared (rows with finite logits).
    pub positions: usize,
    /// same / positions.
    pub value: f64,
    /// √(p(1 − p) / (n − 1)), the "±" llama.cpp prints (null below two positions).
    pub se: Option<f64>,
    /// Lower end of the 95% Wilson interval.
    pub ci95_low: f64,
    /// Upper end of the 95% Wilson interval.
    pub ci95_high: f64,
}

/// llama.cpp-style statistics of one pair or of a pool of pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlStats {
    /// Positions with finite logits (the population of every statistic below).
    pub positions: usize,
    /// KL divergence statistics.
    pub kl: KlSummary,
    /// Token probability statistics; null for records written before Δp was measured.
    pub delta_p: Option<DeltaPSummary>,
    /// Same top p.
    pub same_top_p: SameTopP,
}

impl KlStats {
    /// The statistics of one pair; `None` when no position had finite logits.
    pub fn of(m: &Metrics) -> Option<KlStats> {
        Self::pooled(std::iter::once(m))
    }

    /// The statistics of every position of every pair in `ms`, pooled (as llama.cpp pools
    /// the tokens of its chunks); `None` when no position had finite logits.
    pub fn pooled<'a>(ms: impl IntoIterator<Item = &'a Metrics>) -> Option<KlStats> {
        let mut kl: Vec<f64> = Vec::new();
        let mut dp: Vec<f64> = Vec::new();
        let mut flips = 0usize;
        for m in ms {
            kl.extend(m.per_pos_kl.iter().flatten().map(|&k| f64::from(k)));
            dp.extend(m.per_pos_delta_p.iter().flatten().map(|&d| f64::from(d)));
            // Flips are only recorded on finite rows, the rows that have a KL.
            flips += m.top1_flips.len();
        }
        Self::of_values(kl, dp, flips)
    }

    /// The statistics of the finite positions' KL and Δp values (in pooling order) with
    /// `flips` top-1 flips among them; `None` when there is no KL value.
    pub fn of_values(kl: Vec<f64>, dp: Vec<f64>, flips: usize) -> Option<KlStats> {
        if kl.is_empty() {
            return None;
        }
        let n = kl.len();
        let same = n.saturating_sub(flips);
        let p = same as f64 / n as f64;
        let (ci95_low, ci95_high) = wilson_interval(same, n);
        Some(KlStats {
            positions: n,
            kl: kl_summary(kl),
            delta_p: delta_p_summary(dp),
            same_top_p: SameTopP {
                same,
                positions: n,
                value: p,
                se: (n >= 2).then(|| (p * (1.0 - p) / (n - 1) as f64).sqrt()),
                ci95_low,
                ci95_high,
            },
        })
    }
}

fn sorted(mut xs: Vec<f64>) -> Vec<f64> {
    xs.sort_by(f64::total_cmp);
    xs
}

fn kl_summary(kl: Vec<f64>) -> KlSummary {
    let (mean, mean_se) = mean_and_se(&kl);
    let s = sorted(kl);
    let q = |f| quantile_sorted(&s, f);
    KlSummary {
        mean,
        mean_se,
        min: s[0],
        median: q(0.5),
        p90: q(0.90),
        p95: q(0.95),
        p99: q(0.99),
        p99_9: q(0.999),
        max: s[s.len() - 1],
    }
}

fn delta_p_summary(dp: Vec<f64>) -> Option<DeltaPSummary> {
    if dp.is_empty() {
        return None;
    }
    let (mean, mean_se) = mean_and_se(&dp);
    let squares: Vec<f64> = dp.iter().map(|d| d * d).collect();
    let (mse, mse_se) = mean_and_se(&squares);
    let rms = mse.sqrt();
    let s = sorted(dp);
    let q = |f| quantile_sorted(&s, f);
    Some(DeltaPSummary {
        positions: s.len(),
        mean,
        mean_se,
        rms,
        // d√x = dx / (2√x); undefined where every Δp is 0.
        rms_se: mse_se.filter(|_| rms > 0.0).map(|se| 0.5 * se / rms),
        min: s[0],
        p1: q(0.01),
        p5: q(0.05),
        p10: q(0.10),
        p25: q(0.25),
        median: q(0.5),
        p75: q(0.75),
        p90: q(0.90),
        p95: q(0.95),
        p99: q(0.99),
        max: s[s.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_llama_cpp() {
        let xs: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(quantile_sorted(&xs, 0.5), 3.0);
        // p = 0.9 · 4 = 3.6: 0.4 · 4 + 0.6 · 5.
        assert!((quantile_sorted(&xs, 0.9) - 4.6).abs() < 1e-12);
        assert_eq!(quantile_sorted(&xs, 0.0), 1.0);
        assert_eq!(quantile_sorted(&xs, 1.0), 5.0);
        // An even count's median is the mean of the middle two, as llama.cpp prints it.
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 10.0], 0.5), 2.5);
        assert_eq!(quantile_sorted(&[7.0], 0.99), 7.0);
        assert_eq!(quantile_sorted(&[], 0.5), 0.0);
    }

    #[test]
    fn mean_and_standard_error() {
        let (m, se) = mean_and_se(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        // Population variance 1.25, over n − 1 = 3, square root.
        assert!((se.unwrap() - (1.25f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_and_se(&[5.0]), (5.0, None));
        assert_eq!(mean_and_se(&[]), (0.0, None));
    }

    #[test]
    fn wilson_interval_is_inside_unit_and_not_empty_at_the_ends() {
        // A textbook value: 81 of 263 → [0.2553, 0.3662].
        let (lo, hi) = wilson_interval(81, 263);
        assert!(
            (lo - 0.2553).abs() < 5e-4 && (hi - 0.3662).abs() < 5e-4,
            "{lo} {hi}"
        );
        // All the same: the interval reaches 1 but says how sure 32 positions can make us.
        let (lo, hi) = wilson_interval(32, 32);
        assert_eq!(hi, 1.0);
        assert!(lo > 0.85 && lo < 0.9, "{lo}");
        let (lo, hi) = wilson_interval(0, 10);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0);
        assert_eq!(wilson_interval(0, 0), (0.0, 1.0));
    }

    fn metrics(kl: Vec<Option<f32>>, dp: Vec<Option<f32>>, flips: usize) -> Metrics {
        let flip = super::super::types::TopFlip {
            pos: 0,
            prefill_margin: 0.0,
            prefill_top: 1.0,
        };
        let mut values = Metrics::default().values;
        values[super::super::metrics::TOP1_AGREEMENT] = 1.0;
        Metrics {
            values,
            top1_flips: vec![flip; flips],
            positions: kl.len(),
            vocab: 2,
            per_pos_max_abs: vec![0.0; kl.len()],
            per_pos_kl: kl,
            per_pos_delta_p: dp,
            ..Metrics::default()
        }
    }

    #[test]
    fn pair_statistics_from_the_series() {
        let m = metrics(
            vec![Some(0.1), Some(0.2), None, Some(0.4)],
            vec![Some(-0.1), Some(0.1), None, Some(-0.2)],
            1,
        );
        let s = KlStats::of(&m).unwrap();
        // The non-finite row is in no statistic.
        assert_eq!(s.positions, 3);
        assert!((s.kl.mean - 0.7 / 3.0).abs() < 1e-7);
        assert!((s.kl.median - 0.2).abs() < 1e-7);
        assert!((s.kl.max - 0.4).abs() < 1e-7);
        let d = s.delta_p.unwrap();
        assert!((d.rms - (0.06f64 / 3.0).sqrt()).abs() < 1e-7);
        assert!((d.min + 0.2).abs() < 1e-7);
        assert_eq!((s.same_top_p.same, s.same_top_p.positions), (2, 3));
        assert!((s.same_top_p.value - 2.0 / 3.0).abs() < 1e-12);
        assert!(s.same_top_p.ci95_low < s.same_top_p.value);
        assert!(s.same_top_p.ci95_high > s.same_top_p.value);
    }

    #[test]
    fn pooling_concatenates_positions_and_old_records_have_no_delta_p() {
        let a = metrics(vec![Some(1.0); 3], vec![], 0);
        let b = metrics(vec![Some(3.0); 1], vec![], 1);
        let s = KlStats::pooled([&a, &b]).unwrap();
        assert_eq!(s.positions, 4);
        assert_eq!(s.kl.mean, 1.5);
        assert_eq!(s.same_top_p.same, 3);
        assert_eq!(s.delta_p, None);
        // Nothing finite, nothing to say.
        assert_eq!(KlStats::of(&metrics(vec![None, None], vec![], 0)), None);
    }
}
