//! What both comparator paths share: the per-row results they produce ([`RowStats`]), the
//! formulas that finish a row's KL and Δp from its softmax sums, and the nearest-rank
//! percentile. The host path ([`super::host`]) and the device path ([`super::device`]) both
//! end here, so the two give the same metrics by construction.

use super::types::TopFlip;

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
