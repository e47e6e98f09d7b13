//! What both comparator paths share: the per-row results they produce ([`RowStats`]), the
//! formulas that finish a row's KL and Δp from its softmax sums, and the nearest-rank
//! percentile. The host path ([`super::host`]) and the device path ([`super::device`]) both
//! end here, so the two give the same metrics by construction.

use super::types::{Metrics, TopFlip};

/// Per-row results, in row order, from either comparator path.
#[derive(Debug, Default)]
pub(super) struct RowStats {
    /// NaN/±inf values in either run.
    pub(super) non_finite: usize,
    /// Values where both runs are finite: the population of the |diff| statistics.
    pub(super) finite_values: usize,
    /// Σ|diff| of each row, in f64.
    pub(super) sum_abs: Vec<f64>,
    /// max |diff| of each row.
    pub(super) max_abs: Vec<f32>,
    /// KL of each row; `None` for a row with non-finite values.
    pub(super) kl: Vec<Option<f32>>,
    /// Δp of each row; `None` for a row with non-finite values.
    pub(super) delta_p: Vec<Option<f32>>,
    /// Argmax flips, in position order.
    pub(super) flips: Vec<TopFlip>,
}

impl RowStats {
    /// Appends the rows that follow `self`'s.
    pub(super) fn append(&mut self, next: RowStats) {
        self.non_finite += next.non_finite;
        self.finite_values += next.finite_values;
        self.sum_abs.extend(next.sum_abs);
        self.max_abs.extend(next.max_abs);
        self.kl.extend(next.kl);
        self.delta_p.extend(next.delta_p);
        self.flips.extend(next.flips);
    }

    /// The pair's metrics from its rows and the p99 of |diff| (which needs every value, so
    /// each path computes it where the values are).
    pub(super) fn into_metrics(
        self,
        p99_abs_diff: f32,
        span_start: usize,
        vocab: usize,
        divergence_limit: f32,
    ) -> Metrics {
        let positions = self.max_abs.len();
        // A row with non-finite values diverges: it fails the pair through `non_finite`.
        let first_divergent_pos = self
            .max_abs
            .iter()
            .zip(&self.kl)
            .position(|(&m, kl)| kl.is_none() || m > divergence_limit)
            .map(|i| span_start + i);
        let max_abs_diff = self.max_abs.iter().copied().fold(0f32, f32::max);
        // Row by row, in row order: the same sum however the rows were computed.
        let sum_abs = self.sum_abs.iter().fold(0f64, |acc, r| acc + r);
        let mean_abs_diff = if self.finite_values == 0 {
            0.0
        } else {
            (sum_abs / self.finite_values as f64) as f32
        };
        let mut finite_kl: Vec<f32> = self.kl.iter().flatten().copied().collect();
        let kl_mean = if finite_kl.is_empty() {
            0.0
        } else {
            (finite_kl.iter().map(|&k| k as f64).sum::<f64>() / finite_kl.len() as f64) as f32
        };
        let kl_max = finite_kl.iter().copied().fold(0f32, f32::max);
        let kl_p99 = percentile(&mut finite_kl, 0.99);
        Metrics {
            max_abs_diff,
            p99_abs_diff,
            mean_abs_diff,
            top1_agreement: (positions - self.flips.len()) as f32 / positions as f32,
            kl_mean,
            kl_p99,
            kl_max,
            first_divergent_pos,
            first_top1_flip: self.flips.first().copied(),
            top1_flips: self.flips,
            non_finite: self.non_finite,
            positions,
            vocab,
            per_pos_max_abs: self.max_abs,
            per_pos_kl: self.kl,
            per_pos_delta_p: self.delta_p,
        }
    }
}

/// Δp = softmax(q)_t − softmax(p)_t for prefill's top token t, from its logits in both runs,
/// the softmax sums Σe_p, Σe_q and the row maxima (both comparator paths end here).
pub(super) fn delta_p_from_sums(
    p_top: f32,
    q_at_top: f32,
    sum_p: f64,
    sum_q: f64,
    mp: f64,
    mq: f64,
) -> f32 {
    let pp = (f64::from(p_top) - mp).exp() / sum_p;
    let pq = (f64::from(q_at_top) - mq).exp() / sum_q;
    (pq - pp) as f32
}

/// Finishes a row's KL from Σe_p(p − q), Σe_p, Σe_q and the row maxima m_p, m_q (both
/// comparator paths end here).
///
/// KL = Σ softmax(p)_i ((p_i − lse_p) − (q_i − lse_q)) = weighted / Σe_p + lse_q − lse_p, and
/// lse_q − lse_p = (m_q − m_p) + ln(Σe_q / Σe_p): every term is of the size of the drift,
/// never of the logits, so a KL of 1e-12 keeps its digits.
pub(super) fn kl_from_sums(weighted: f64, sum_p: f64, sum_q: f64, mp: f64, mq: f64) -> f32 {
    let k = weighted / sum_p + (mq - mp) + ((sum_q - sum_p) / sum_p).ln_1p();
    k.max(0.0) as f32
}

/// The 0-based index of the nearest-rank q-quantile among `n` > 0 sorted values.
pub(super) fn nearest_rank(n: usize, q: f64) -> usize {
    ((q * n as f64).ceil() as usize).clamp(1, n) - 1
}

/// Nearest-rank percentile by selection (no full sort); 0 for an empty slice. Reorders `xs`.
pub fn percentile(xs: &mut [f32], q: f64) -> f32 {
    if xs.is_empty() {
        return 0.0;
    }
    let rank = nearest_rank(xs.len(), q);
    let (_, v, _) = xs.select_nth_unstable_by(rank, f32::total_cmp);
    *v
}
