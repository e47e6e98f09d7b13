//! The comparator in host memory: span logits as row-major f32 slices, rows split over the
//! cores, sums and the log-softmax behind KL accumulated in f64. Also the per-row helpers
//! that need the values themselves: argmax and the rows' digests.

use super::exp::Level;
#[cfg(target_arch = "x86_64")]
use super::row_group::{ROWS, finite_rows};
use super::row_kernel::{FiniteRow, Tail, finite_row, tail_threshold};
use super::rows::{RowStats, delta_p_from_sums, kl_from_sums};
use super::types::{CompareError, Metrics, TopFlip};

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
    compare_at(
        prefill,
        decode,
        vocab,
        span_start,
        divergence_limit,
        Level::best(),
    )
}

/// [`compare`] with the kernels of `level` (one of [`Level::available`]; every one gives the
/// same bits, which the tests check by forcing each).
pub(super) fn compare_at(
    prefill: &[f32],
    decode: &[f32],
    vocab: usize,
    span_start: usize,
    divergence_limit: f32,
    level: Level,
) -> Result<Metrics, CompareError> {
    assert!(
        Level::available().contains(&level),
        "{level:?} is not available"
    );
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
    let threshold = tail_threshold(prefill, decode, vocab);
    // Rows are independent: split them over the cores, then merge the per-row results in row
    // order, so the metrics do not depend on the number of threads.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(positions);
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // widened on x86 only
    let mut rows_per = positions.div_ceil(threads);
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // Whole groups of eight rows per thread where there are enough: fewer rows left
        // over for the one-row path.
        rows_per = rows_per.next_multiple_of(ROWS);
    }
    let chunk = rows_per * vocab;
    let parts: Vec<(RowStats, Tail)> = std::thread::scope(|scope| {
        let handles: Vec<_> = prefill
            .chunks(chunk)
            .zip(decode.chunks(chunk))
            .enumerate()
            .map(|(t, (a, b))| {
                scope.spawn(move || rows(a, b, vocab, span_start + t * rows_per, threshold, level))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a comparator thread panicked"))
            .collect()
    });
    let mut stats = RowStats::default();
    let mut tail = Tail::new(threshold);
    for (part, part_tail) in parts {
        stats.append(part);
        tail.merge(part_tail);
    }
    // The sample misjudged the spread (the 99th percentile lies below the threshold): find
    // it among every value, as before the split.
    let p99_abs_diff = tail.quantile(0.99).unwrap_or_else(|| {
        every_value_tail(prefill, decode)
            .quantile(0.99)
            .unwrap_or(0.0)
    });
    Ok(super::metrics::finish(
        stats,
        p99_abs_diff,
        span_start,
        vocab,
        divergence_limit,
    ))
}

/// Every finite |diff| of both runs, kept (a threshold of −1 keeps all).
fn every_value_tail(prefill: &[f32], decode: &[f32]) -> Tail {
    let mut tail = Tail::new(-1.0);
    for (&x, &y) in prefill.iter().zip(decode) {
        if x.is_finite() && y.is_finite() {
            tail.add((x - y).abs());
        }
    }
    tail
}

/// Compares consecutive rows of both runs; `first_pos` is the first row's absolute position.
/// Returns the rows' results and their finite |diff| values split at `threshold`.
fn rows(
    prefill: &[f32],
    decode: &[f32],
    vocab: usize,
    first_pos: usize,
    threshold: f32,
    level: Level,
) -> (RowStats, Tail) {
    let n = prefill.len() / vocab;
    let mut tail = Tail::new(threshold);
    let mut out = RowStats {
        sum_abs: Vec::with_capacity(n),
        max_abs: Vec::with_capacity(n),
        kl: Vec::with_capacity(n),
        delta_p: Vec::with_capacity(n),
        ..RowStats::default()
    };
    let row = |i: usize| {
        let r = i * vocab..(i + 1) * vocab;
        (&prefill[r.clone()], &decode[r])
    };
    let mut i = 0;
    while i < n {
        // Eight rows at once where the CPU has the lanes; a group with a non-finite value
        // goes row by row.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // widened on x86 only
        let mut group_end = i + 1;
        #[cfg(target_arch = "x86_64")]
        if level == Level::Avx512 && i + ROWS <= n {
            let span = i * vocab..(i + ROWS) * vocab;
            let (a, b) = (&prefill[span.clone()], &decode[span]);
            if let Some(rs) = finite_rows(a, b, vocab, &mut tail, level) {
                for (k, r) in rs.into_iter().enumerate() {
                    let (a, b) = row(i + k);
                    push_finite(&mut out, r, a, b, first_pos + i + k);
                }
                i += ROWS;
                continue;
            }
            group_end = i + ROWS;
        }
        for j in i..group_end {
            let (a, b) = row(j);
            match finite_row(a, b, &mut tail, level) {
                Some(r) => push_finite(&mut out, r, a, b, first_pos + j),
                None => non_finite_row(a, b, &mut out, &mut tail),
            }
        }
        i = group_end;
    }
    out.finite_values = tail.len();
    (out, tail)
}

/// Adds a finite row's results (`a`, `b` its logits, `pos` its absolute position).
fn push_finite(out: &mut RowStats, r: FiniteRow, a: &[f32], b: &[f32], pos: usize) {
    out.max_abs.push(r.max_abs);
    out.sum_abs.push(r.sum_abs);
    let (ia, ib) = r.argmax;
    out.kl
        .push(Some(kl_from_sums(r.weighted, r.sum_p, r.sum_q, r.mp, r.mq)));
    out.delta_p.push(Some(delta_p_from_sums(
        a[ia], b[ia], r.sum_p, r.sum_q, r.mp, r.mq,
    )));
    if ia != ib {
        out.flips.push(TopFlip {
            pos,
            prefill_margin: a[ia] - a[ib],
            prefill_top: a[ia],
        });
    }
}

/// A row with NaN or ±inf values: its |diff| statistics over the finite pairs, and no
/// distribution to compare nor a meaningful argmax.
fn non_finite_row(a: &[f32], b: &[f32], out: &mut RowStats, tail: &mut Tail) {
    let mut row_max = 0f32;
    let mut row_sum = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let bad = usize::from(!x.is_finite()) + usize::from(!y.is_finite());
        if bad > 0 {
            out.non_finite += bad;
            continue;
        }
        let d = (x - y).abs();
        tail.add(d);
        row_sum += d as f64;
        row_max = row_max.max(d);
    }
    out.max_abs.push(row_max);
    out.sum_abs.push(row_sum);
    out.kl.push(None);
    out.delta_p.push(None);
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

#[cfg(test)]
mod tests {
    use super::super::rows::percentile;
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn identical_logits_have_zero_drift() {
        let a = vec![1.0, 2.0, 3.0, 0.5, -1.0, 4.0];
        let m = compare(&a, &a, 3, 10, 0.0).unwrap();
        assert_eq!(m.max_abs_diff(), 0.0);
        assert_eq!(m.p99_abs_diff(), 0.0);
        assert_eq!(m.kl_max(), 0.0);
        assert_eq!(m.top1_agreement(), 1.0);
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
        assert!(close(m.max_abs_diff(), 0.5, 1e-6));
        assert!(close(m.mean_abs_diff(), 0.15, 1e-6));
        assert_eq!(m.first_divergent_pos, Some(6));
        assert!(close(m.per_pos_max_abs[0], 0.1, 1e-6));
        assert_eq!(m.top1_agreement(), 1.0);
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
        assert_eq!(m.p99_abs_diff(), 99.0);
        assert_eq!(m.max_abs_diff(), 100.0);
    }

    #[test]
    fn top1_flip_with_prefill_margin() {
        // position 0 agrees, position 1 flips: prefill prefers token 0 by 0.25 over token 1.
        let a = vec![3.0, 1.0, 0.0, 2.0, 1.75, 0.0];
        let b = vec![3.0, 1.0, 0.0, 1.5, 1.8, 0.0];
        let m = compare(&a, &b, 3, 40, 10.0).unwrap();
        assert_eq!(m.top1_agreement(), 0.5);
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
        assert!(
            close(m.kl_max(), want as f32, 1e-6),
            "{} vs {want}",
            m.kl_max()
        );
        assert!(close(m.kl_mean(), want as f32, 1e-6));
        // KL is invariant to a constant shift of the logits.
        let shifted: Vec<f32> = b.iter().map(|x| x + 7.0).collect();
        let m2 = compare(&a, &shifted, 2, 0, 1e9).unwrap();
        assert!(close(m2.kl_max(), m.kl_max(), 1e-6));
    }

    #[test]
    fn non_finite_values_are_counted_and_the_metrics_stay_storable() {
        // Position 0 has a NaN in prefill, position 1 an inf in decode, position 2 is clean.
        let a = vec![f32::NAN, 0.0, 1.0, 2.0, 5.0, 1.0];
        let b = vec![0.0, 1.0, f32::INFINITY, 2.0, 5.0, 1.0];
        let m = compare(&a, &b, 2, 10, 1.0).unwrap();
        assert_eq!(m.non_finite, 2);
        assert_eq!(m.first_divergent_pos, Some(10), "a non-finite row diverges");
        assert!(m.max_abs_diff().is_finite());
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
