//! The comparator (docs/design.md, "Metrics"): prefill logits are the reference, decode logits are
//! under test; both arrive as f32 `[positions × vocab]` tensors on the device that produced
//! them, and are compared there ([`compare_tensors`]): in place on the CPU, with candle ops on
//! a GPU ([`device`]).
//!
//! Logits are f32 whatever the run dtype (the runs upcast before handing them over). Sums and
//! the log-softmax behind KL are accumulated in f64 so that an f32-level KL of 1e-11 measures
//! the logits, not the comparator's own rounding. p99 is found by selection, never a sort.

mod device;
pub mod kl_stats;
pub mod metrics;

use candle_core::{Storage, Tensor};
use serde::{Deserialize, Serialize};

/// A position where the argmax differs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopFlip {
    /// Absolute position in the sequence (prompt + span).
    pub pos: usize,
    /// Prefill logit of its own best token minus its logit of decode's best token: a near-tie
    /// is rounding, a wide margin is a defect.
    pub prefill_margin: f32,
    /// Prefill's best logit there: the rounding step of the dtype scales with it.
    pub prefill_top: f32,
}

/// What the comparator measures for one pair. Its summary metrics are listed, with their
/// limits and formats, in [`metrics::METRICS`]. `Default` is all zeros and empty (for tests
/// that set a few fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// max |prefill − decode| over span × vocab.
    pub max_abs_diff: f32,
    /// 99th percentile (nearest rank) of |prefill − decode| over span × vocab.
    pub p99_abs_diff: f32,
    /// mean |prefill − decode|.
    pub mean_abs_diff: f32,
    /// Fraction of positions with the same argmax.
    pub top1_agreement: f32,
    /// Mean over positions of KL(softmax(prefill) ‖ softmax(decode)).
    pub kl_mean: f32,
    /// 99th percentile (nearest rank) of the per-position KL.
    pub kl_p99: f32,
    /// Largest per-position KL.
    pub kl_max: f32,
    /// First absolute position whose max |diff| exceeds the pair's max_abs_diff limit.
    pub first_divergent_pos: Option<usize>,
    /// First position whose argmax differs.
    pub first_top1_flip: Option<TopFlip>,
    /// Every argmax flip, in position order.
    pub top1_flips: Vec<TopFlip>,
    /// NaN or ±inf values in either run; any makes the pair fail. Other metrics are computed
    /// over finite values only.
    pub non_finite: usize,
    /// Number of positions compared.
    pub positions: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Per position max |diff|, for plots.
    pub per_pos_max_abs: Vec<f32>,
    /// Per position KL, for plots; `None` where a row holds non-finite values.
    pub per_pos_kl: Vec<Option<f32>>,
    /// Per position Δp: decode's probability of prefill's top token minus prefill's own, for
    /// the llama.cpp-style statistics ([`kl_stats`]); `None` where a row holds non-finite
    /// values. Empty in records written before it was measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_pos_delta_p: Vec<Option<f32>>,
}

/// Why two runs' logits could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// The runs hold different numbers of values, so different positions.
    #[error(
        "the runs cover different positions: prefill has {prefill} values, decode {decode} (vocab {vocab})"
    )]
    ShapeMismatch {
        /// Prefill value count.
        prefill: usize,
        /// Decode value count.
        decode: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Nothing to compare.
    #[error("no positions to compare")]
    Empty,
    /// The device failed while reducing the logits.
    #[error("comparing on the device: {0}")]
    Device(String),
}

/// Compares two runs' span logits where they are: `[positions × vocab]` f32 tensors on the
/// device that produced them. `span_start` is the absolute position of the first row;
/// `divergence_limit` is the max |diff| above which a position counts as divergent.
///
/// On the CPU the comparator reads the tensors' storage in place (no copy). On a GPU the
/// metrics are reduced there with candle ops ([`device`]) and only per-row summaries, a few
/// numbers per position, come to the host.
pub fn compare_tensors(
    prefill: &Tensor,
    decode: &Tensor,
    span_start: usize,
    divergence_limit: f32,
) -> Result<Metrics, CompareError> {
    let (pd, dd) = (prefill.dims(), decode.dims());
    if pd.len() != 2 || pd != dd {
        return Err(CompareError::ShapeMismatch {
            prefill: prefill.elem_count(),
            decode: decode.elem_count(),
            vocab: pd.last().copied().unwrap_or(0),
        });
    }
    if pd[0] == 0 || pd[1] == 0 {
        return Err(CompareError::Empty);
    }
    if prefill.device().is_cpu() && decode.device().is_cpu() {
        with_host_slice(prefill, |a| {
            with_host_slice(decode, |b| {
                compare(a, b, pd[1], span_start, divergence_limit)
            })
        })
        .and_then(|r| r)
        .and_then(|r| r)
    } else {
        device::compare(prefill, decode, span_start, divergence_limit)
    }
}

/// Runs `f` on a CPU tensor's f32 values, borrowed from its storage when the tensor is
/// contiguous (a narrowed prefill or a concatenated decode is) and copied otherwise.
fn with_host_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, CompareError> {
    let device_error = |e: candle_core::Error| CompareError::Device(e.to_string());
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let all = cpu.as_slice::<f32>().map_err(device_error)?;
            return Ok(f(&all[start..end]));
        }
    }
    let owned: Vec<f32> = t
        .flatten_all()
        .and_then(|x| x.to_vec1())
        .map_err(device_error)?;
    Ok(f(&owned))
}

/// Compares span logits held in host memory as row-major `[positions × vocab]` f32 slices.
/// `span_start` is the absolute position of the first row; `divergence_limit` is the max
/// |diff| above which a position counts as divergent.
pub fn compare(
    prefill: &[f32],
    decode: &[f32],
    vocab: usize,
    span_start: usize,
    divergence_limit: f32,
) -> Result<Metrics, CompareError> {
    if prefill.len() != decode.len() || vocab == 0 || !prefill.len().is_multiple_of(vocab) {
        return Err(CompareError::ShapeMismatch {
            prefill: prefill.len(),
            decode: decode.len(),
            vocab,
        });
    }
    let positions = prefill.len() / vocab;
    if positions == 0 {
        return Err(CompareError::Empty);
    }
    // Rows are independent: split them over the cores, then merge the per-row results in row
    // order, so the metrics do not depend on the number of threads.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(positions);
    let rows_per = positions.div_ceil(threads);
    let chunk = rows_per * vocab;
    let parts: Vec<(RowStats, Vec<f32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = prefill
            .chunks(chunk)
            .zip(decode.chunks(chunk))
            .enumerate()
            .map(|(t, (a, b))| scope.spawn(move || rows(a, b, vocab, span_start + t * rows_per)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a comparator thread panicked"))
            .collect()
    });
    let mut stats = RowStats::default();
    let mut abs_diffs = Vec::with_capacity(prefill.len());
    for (part, diffs) in parts {
        stats.append(part);
        abs_diffs.extend_from_slice(&diffs);
    }
    let p99_abs_diff = percentile(&mut abs_diffs, 0.99);
    Ok(stats.into_metrics(p99_abs_diff, span_start, vocab, divergence_limit))
}

/// Per-row results, in row order, from either comparator path.
#[derive(Debug, Default)]
struct RowStats {
    /// NaN/±inf values in either run.
    non_finite: usize,
    /// Values where both runs are finite: the population of the |diff| statistics.
    finite_values: usize,
    /// Σ|diff| of each row, in f64.
    sum_abs: Vec<f64>,
    /// max |diff| of each row.
    max_abs: Vec<f32>,
    /// KL of each row; `None` for a row with non-finite values.
    kl: Vec<Option<f32>>,
    /// Δp of each row; `None` for a row with non-finite values.
    delta_p: Vec<Option<f32>>,
    /// Argmax flips, in position order.
    flips: Vec<TopFlip>,
}

impl RowStats {
    /// Appends the rows that follow `self`'s.
    fn append(&mut self, next: RowStats) {
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
    fn into_metrics(
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

/// Compares consecutive rows of both runs; `first_pos` is the first row's absolute position.
/// Returns the rows' results and their finite |diff| values.
fn rows(prefill: &[f32], decode: &[f32], vocab: usize, first_pos: usize) -> (RowStats, Vec<f32>) {
    let n = prefill.len() / vocab;
    let mut abs_diffs = Vec::with_capacity(prefill.len());
    let mut out = RowStats {
        sum_abs: Vec::with_capacity(n),
        max_abs: Vec::with_capacity(n),
        kl: Vec::with_capacity(n),
        delta_p: Vec::with_capacity(n),
        ..RowStats::default()
    };
    for (i, (a, b)) in prefill
        .chunks_exact(vocab)
        .zip(decode.chunks_exact(vocab))
        .enumerate()
    {
        let mut row_max = 0f32;
        let mut row_sum = 0f64;
        let mut row_finite = true;
        for (&x, &y) in a.iter().zip(b) {
            let bad = usize::from(!x.is_finite()) + usize::from(!y.is_finite());
            if bad > 0 {
                out.non_finite += bad;
                row_finite = false;
                continue;
            }
            let d = (x - y).abs();
            abs_diffs.push(d);
            row_sum += d as f64;
            row_max = row_max.max(d);
        }
        out.max_abs.push(row_max);
        out.sum_abs.push(row_sum);
        // A row with non-finite values has no distribution to compare and no meaningful
        // argmax.
        if !row_finite {
            out.kl.push(None);
            out.delta_p.push(None);
            continue;
        }
        let (ia, ib) = (argmax(a), argmax(b));
        let sums = kl_sums(a, b);
        out.kl.push(Some(sums.kl()));
        out.delta_p.push(Some(sums.delta_p(a[ia], b[ia])));
        if ia != ib {
            out.flips.push(TopFlip {
                pos: first_pos + i,
                prefill_margin: a[ia] - a[ib],
                prefill_top: a[ia],
            });
        }
    }
    out.finite_values = abs_diffs.len();
    (out, abs_diffs)
}

/// One digest per row of `logits` (row-major, rows of `vocab`): the first 16 hex digits of
/// the sha256 of the row's f32 bits. Two runs whose digests agree row for row gave
/// bit-identical logits there (a batch-invariance or chunk-invariance statement needs no
/// kept logits); the first row whose digests differ is where two paths part.
pub fn row_digests(logits: &[f32], vocab: usize) -> Vec<String> {
    use sha2::{Digest, Sha256};
    logits
        .chunks(vocab.max(1))
        .map(|row| {
            let mut h = Sha256::new();
            for x in row {
                h.update(x.to_bits().to_le_bytes());
            }
            // Hex by hand: the comparator stays a leaf module.
            h.finalize()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect()
}

/// Index of the largest finite value; the first one on exact ties (both runs break ties
/// alike); 0 when no value is finite.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best: Option<usize> = None;
    for (i, &x) in xs.iter().enumerate() {
        if x.is_finite() && best.is_none_or(|b| x > xs[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}

/// KL(softmax(p) ‖ softmax(q)) of one row, as the comparator computes it.
#[cfg(test)]
fn kl(p: &[f32], q: &[f32]) -> f32 {
    kl_sums(p, q).kl()
}

/// One row's softmax sums, from which both its KL and its Δp follow.
struct RowSums {
    weighted: f64,
    sum_p: f64,
    sum_q: f64,
    mp: f64,
    mq: f64,
}

impl RowSums {
    fn kl(&self) -> f32 {
        kl_from_sums(self.weighted, self.sum_p, self.sum_q, self.mp, self.mq)
    }

    /// Δp of the token whose logits are `p_top` in prefill and `q_at_top` in decode.
    fn delta_p(&self, p_top: f32, q_at_top: f32) -> f32 {
        delta_p_from_sums(p_top, q_at_top, self.sum_p, self.sum_q, self.mp, self.mq)
    }
}

/// Σe_p(p − q), Σe_p, Σe_q and the row maxima, in one pass over the row, in f64. With m the
/// row maximum and e_i = exp(x_i − m): log softmax(x)_i = x_i − lse(x) and softmax(p)_i =
/// e_i / Σe, so each element costs two exponentials (one per run) and no temporary vector.
/// The KL is clamped at 0 since rounding can make it slightly negative.
fn kl_sums(p: &[f32], q: &[f32]) -> RowSums {
    let max = |xs: &[f32]| xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let (mp, mq) = (max(p), max(q));
    let mut sum_p = 0f64;
    let mut sum_q = 0f64;
    // Σ e_i (p_i − q_i), normalized once the sums are known.
    let mut weighted = 0f64;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a as f64, b as f64);
        let ea = (a - mp).exp();
        sum_p += ea;
        sum_q += (b - mq).exp();
        weighted += ea * (a - b);
    }
    RowSums {
        weighted,
        sum_p,
        sum_q,
        mp,
        mq,
    }
}

/// Δp = softmax(q)_t − softmax(p)_t for prefill's top token t, from its logits in both runs,
/// the softmax sums Σe_p, Σe_q and the row maxima (both comparator paths end here).
fn delta_p_from_sums(p_top: f32, q_at_top: f32, sum_p: f64, sum_q: f64, mp: f64, mq: f64) -> f32 {
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
fn kl_from_sums(weighted: f64, sum_p: f64, sum_q: f64, mp: f64, mq: f64) -> f32 {
    let k = weighted / sum_p + (mq - mp) + ((sum_q - sum_p) / sum_p).ln_1p();
    k.max(0.0) as f32
}

/// The 0-based index of the nearest-rank q-quantile among `n` > 0 sorted values.
fn nearest_rank(n: usize, q: f64) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn kl_is_exact_for_a_shift_and_keeps_digits_for_tiny_drift() {
        // softmax is shift-invariant: a constant offset is no drift at all.
        let p: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32) * 0.25 - 12.0)
            .collect();
        let q: Vec<f32> = p.iter().map(|x| x + 3.0).collect();
        assert_eq!(kl(&p, &q), 0.0);
        // A perturbation of 1e-5 on logits of size ~12: KL ~ 1e-11, computed to a few parts
        // in 1e3 of the second-order estimate ½ Var_p(p − q).
        let q: Vec<f32> = p
            .iter()
            .enumerate()
            .map(|(i, x)| x + if i % 2 == 0 { 1e-5 } else { -1e-5 })
            .collect();
        let k = kl(&p, &q) as f64;
        let m = p.iter().copied().fold(f32::MIN, f32::max) as f64;
        let w: Vec<f64> = p.iter().map(|&x| (x as f64 - m).exp()).collect();
        let z: f64 = w.iter().sum();
        let d: Vec<f64> = p
            .iter()
            .zip(&q)
            .map(|(&a, &b)| a as f64 - b as f64)
            .collect();
        let mean: f64 = w.iter().zip(&d).map(|(w, d)| w * d).sum::<f64>() / z;
        let var: f64 = w
            .iter()
            .zip(&d)
            .map(|(w, d)| w * (d - mean).powi(2))
            .sum::<f64>()
            / z;
        assert!(
            (k - var / 2.0).abs() < 1e-2 * var / 2.0,
            "kl {k} vs {}",
            var / 2.0
        );
    }

    #[test]
    fn identical_logits_have_zero_drift() {
        let a = vec![1.0, 2.0, 3.0, 0.5, -1.0, 4.0];
        let m = compare(&a, &a, 3, 10, 0.0).unwrap();
        assert_eq!(m.max_abs_diff, 0.0);
        assert_eq!(m.p99_abs_diff, 0.0);
        assert_eq!(m.kl_max, 0.0);
        assert_eq!(m.top1_agreement, 1.0);
        assert_eq!(m.first_divergent_pos, None);
        assert_eq!(m.first_top1_flip, None);
        assert_eq!(m.positions, 2);
    }

    #[test]
    fn max_mean_and_first_divergent_position() {
        // 2 positions × 2 vocab; diffs: [0, 0.1] then [0.5, 0].
        let a = vec![1.0, 0.0, 2.0, 0.0];
        let b = vec![1.0, 0.1, 2.5, 0.0];
        let m = compare(&a, &b, 2, 5, 0.2).unwrap();
        assert!(close(m.max_abs_diff, 0.5, 1e-6));
        assert!(close(m.mean_abs_diff, 0.15, 1e-6));
        assert_eq!(m.first_divergent_pos, Some(6));
        assert!(close(m.per_pos_max_abs[0], 0.1, 1e-6));
        assert_eq!(m.top1_agreement, 1.0);
    }

    #[test]
    fn p99_is_nearest_rank() {
        let mut xs: Vec<f32> = (1..=200).map(|i| i as f32).collect();
        assert_eq!(percentile(&mut xs, 0.99), 198.0);
        let mut one = vec![3.0];
        assert_eq!(percentile(&mut one, 0.99), 3.0);
        // 100 positions × 1 vocab with diffs 1..=100: p99 is the 99th smallest.
        let a: Vec<f32> = vec![0.0; 100];
        let b: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let m = compare(&a, &b, 1, 0, 1e9).unwrap();
        assert_eq!(m.p99_abs_diff, 99.0);
        assert_eq!(m.max_abs_diff, 100.0);
    }

    #[test]
    fn top1_flip_with_prefill_margin() {
        // position 0 agrees, position 1 flips: prefill prefers token 0 by 0.25 over token 1.
        let a = vec![3.0, 1.0, 0.0, 2.0, 1.75, 0.0];
        let b = vec![3.0, 1.0, 0.0, 1.5, 1.8, 0.0];
        let m = compare(&a, &b, 3, 40, 10.0).unwrap();
        assert_eq!(m.top1_agreement, 0.5);
        let f = m.first_top1_flip.unwrap();
        assert_eq!(f.pos, 41);
        assert!(close(f.prefill_margin, 0.25, 1e-6));
        assert_eq!(f.prefill_top, 2.0);
    }

    #[test]
    fn kl_matches_closed_form() {
        // softmax([0, ln 3]) = [0.25, 0.75]; softmax([0, 0]) = [0.5, 0.5].
        let a = vec![0.0, 3f32.ln()];
        let b = vec![0.0, 0.0];
        let m = compare(&a, &b, 2, 0, 1e9).unwrap();
        let want = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
        assert!(close(m.kl_max, want as f32, 1e-6), "{} vs {want}", m.kl_max);
        assert!(close(m.kl_mean, want as f32, 1e-6));
        // KL is invariant to a constant shift of the logits.
        let shifted: Vec<f32> = b.iter().map(|x| x + 7.0).collect();
        let m2 = compare(&a, &shifted, 2, 0, 1e9).unwrap();
        assert!(close(m2.kl_max, m.kl_max, 1e-6));
    }

    #[test]
    fn non_finite_values_are_counted_and_the_metrics_stay_storable() {
        // Position 0 has a NaN in prefill, position 1 an inf in decode, position 2 is clean.
        let a = vec![f32::NAN, 0.0, 1.0, 2.0, 5.0, 1.0];
        let b = vec![0.0, 1.0, f32::INFINITY, 2.0, 5.0, 1.0];
        let m = compare(&a, &b, 2, 10, 1.0).unwrap();
        assert_eq!(m.non_finite, 2);
        assert_eq!(m.first_divergent_pos, Some(10), "a non-finite row diverges");
        assert!(m.max_abs_diff.is_finite());
        assert!(m.top1_flips.iter().all(|f| f.prefill_margin.is_finite()));
        assert_eq!(m.per_pos_kl[0], None);
        assert!(m.per_pos_kl[2].is_some());
        // JSON has no NaN: the record must read back as written.
        let json = serde_json::to_string(&m).unwrap();
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back.non_finite, 2);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::INFINITY, 3.0]), 3);
    }

    #[test]
    fn delta_p_is_the_change_in_probability_of_prefills_top_token() {
        // softmax([0, ln 3]) = [0.25, 0.75]: prefill's top token 1 at 0.75; decode's [0, 0]
        // gives it 0.5. Row 2 is identical: Δp 0.
        let a = vec![0.0, 3f32.ln(), 1.0, 2.0];
        let b = vec![0.0, 0.0, 1.0, 2.0];
        let m = compare(&a, &b, 2, 0, 1e9).unwrap();
        assert!(close(m.per_pos_delta_p[0].unwrap(), -0.25, 1e-6));
        assert_eq!(m.per_pos_delta_p[1], Some(0.0));
        // A non-finite row has none.
        let m = compare(&[f32::NAN, 0.0], &[0.0, 0.0], 2, 0, 1e9).unwrap();
        assert_eq!(m.per_pos_delta_p, vec![None]);
    }

    #[test]
    fn mismatched_positions_are_an_error() {
        let e = compare(&[0.0; 6], &[0.0; 4], 2, 0, 1.0).unwrap_err();
        assert!(matches!(e, CompareError::ShapeMismatch { .. }));
        assert_eq!(
            compare(&[], &[], 2, 0, 1.0).unwrap_err(),
            CompareError::Empty
        );
    }
}
