//! The comparator on a GPU: the same metrics as the host path, reduced with candle ops on the
//! device that holds the logits. Only per-row summaries (a dozen numbers per position) and one
//! count per row for each step of the p99 search come to the host; the logits never do.
//!
//! Numerics: differences are taken in f32, exactly as on the host. Row sums and the KL terms
//! are accumulated in f64 where the device has it (CUDA, CPU) and in f32 on Metal, which has
//! no f64; the KL is then finished on the host with [`super::rows::kl_from_sums`], so both paths use
//! one formula. Argmax ties are broken by the device's reduction: first index on CPU, whatever
//! the kernel does elsewhere (exact ties between two different tokens are rare in f32 logits
//! and both runs of a pair use the same kernel).

use candle_core::{D, DType, Device, Tensor};

use super::rows::{RowStats, delta_p_from_sums, kl_from_sums, nearest_rank};
use super::types::{CompareError, Metrics, TopFlip};

/// Compares `[positions × vocab]` f32 tensors on their device.
pub(super) fn compare(
    prefill: &Tensor,
    decode: &Tensor,
    span_start: usize,
    divergence_limit: f32,
) -> Result<Metrics, CompareError> {
    let vocab = prefill.dims().last().copied().unwrap_or(0);
    let (stats, p99) =
        summaries(prefill, decode, span_start).map_err(|e| CompareError::Device(e.to_string()))?;
    Ok(super::metrics::finish(
        stats,
        p99,
        span_start,
        vocab,
        divergence_limit,
    ))
}

/// The accumulation dtype for sums: f64 unless the device lacks it.
fn accumulator(device: &Device) -> DType {
    if device.is_metal() {
        DType::F32
    } else {
        DType::F64
    }
}

/// Per-row statistics and the p99 of |diff|, computed on the device.
fn summaries(a: &Tensor, b: &Tensor, span_start: usize) -> candle_core::Result<(RowStats, f32)> {
    let (positions, vocab) = a.dims2()?;
    let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
    // |x| < inf is false for ±inf and NaN alike.
    let finite_a = a.abs()?.lt(f32::INFINITY)?.to_dtype(DType::F32)?;
    let finite_b = b.abs()?.lt(f32::INFINITY)?.to_dtype(DType::F32)?;
    // Per-row counts stay below 2^24, so f32 holds them exactly.
    let finite_per_row: Vec<f32> = (&finite_a + &finite_b)?.sum(1)?.to_vec1()?;
    let both = (&finite_a * &finite_b)?.ne(0f32)?;
    let zeros = a.zeros_like()?;
    // Non-finite cells become 0 in both runs: they add nothing to the |diff| statistics, and
    // their rows are excluded from KL and argmax below, as on the host.
    let a0 = both.where_cond(&a, &zeros)?;
    let b0 = both.where_cond(&b, &zeros)?;
    let diff = (&a0 - &b0)?.abs()?;
    let acc = accumulator(a.device());
    let max_abs: Vec<f32> = diff.max(1)?.to_vec1()?;
    let sum_abs: Vec<f64> = diff
        .to_dtype(acc)?
        .sum(1)?
        .to_dtype(DType::F64)?
        .to_vec1()?;

    // KL terms, as `kl_sums` in host.rs: with e = exp(x − max), Σe_p, Σe_q and Σe_p(p − q).
    let (pa, qa) = (a0.to_dtype(acc)?, b0.to_dtype(acc)?);
    let (mp, mq) = (pa.max_keepdim(1)?, qa.max_keepdim(1)?);
    let ep = pa.broadcast_sub(&mp)?.exp()?;
    let sum_p = ep.sum(1)?;
    let sum_q = qa.broadcast_sub(&mq)?.exp()?.sum(1)?;
    let weighted = (&ep * (&pa - &qa)?)?.sum(1)?;
    let host = |t: Tensor| -> candle_core::Result<Vec<f64>> {
        t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()
    };
    let (mp, mq) = (host(mp)?, host(mq)?);
    let (sum_p, sum_q, weighted) = (host(sum_p)?, host(sum_q)?, host(weighted)?);

    // Argmax of each run and prefill's logits at both winners, for the flip margins.
    let ia = a0.argmax_keepdim(D::Minus1)?;
    let ib = b0.argmax_keepdim(D::Minus1)?;
    let top_a: Vec<f32> = a0.gather(&ia, 1)?.flatten_all()?.to_vec1()?;
    let at_b: Vec<f32> = a0.gather(&ib, 1)?.flatten_all()?.to_vec1()?;
    // Decode's logit of prefill's top token, for Δp.
    let b_at_a: Vec<f32> = b0.gather(&ia, 1)?.flatten_all()?.to_vec1()?;
    let (ia, ib): (Vec<u32>, Vec<u32>) =
        (ia.flatten_all()?.to_vec1()?, ib.flatten_all()?.to_vec1()?);

    let mut stats = RowStats {
        sum_abs,
        max_abs,
        ..RowStats::default()
    };
    for i in 0..positions {
        let finite_cells = finite_per_row[i] as usize;
        let row_finite = finite_cells == 2 * vocab;
        stats.non_finite += 2 * vocab - finite_cells;
        stats
            .kl
            .push(row_finite.then(|| kl_from_sums(weighted[i], sum_p[i], sum_q[i], mp[i], mq[i])));
        stats.delta_p.push(
            row_finite
                .then(|| delta_p_from_sums(top_a[i], b_at_a[i], sum_p[i], sum_q[i], mp[i], mq[i])),
        );
        if row_finite && ia[i] != ib[i] {
            stats.flips.push(TopFlip {
                pos: span_start + i,
                prefill_margin: top_a[i] - at_b[i],
                prefill_top: top_a[i],
            });
        }
    }
    // Cells where both runs are finite: all cells minus those where either is not.
    let both_per_row: Vec<f32> = both.to_dtype(DType::F32)?.sum(1)?.to_vec1()?;
    stats.finite_values = both_per_row.iter().map(|&c| c as usize).sum();
    let max = stats.max_abs.iter().copied().fold(0f32, f32::max);
    let p99 = p99_by_bisection(&diff, &both, stats.finite_values, max)?;
    Ok((stats, p99))
}

/// The nearest-rank p99 of the finite |diff| values without sorting: since |diff| ≥ 0, the
/// order of the f32 values is the order of their bit patterns, so a bisection over the bits
/// of [0, max] that counts the values ≤ a candidate on the device finds the exact element in
/// at most 32 passes (one compare and one row-sum each).
fn p99_by_bisection(
    diff: &Tensor,
    finite: &Tensor,
    finite_values: usize,
    max: f32,
) -> candle_core::Result<f32> {
    if finite_values == 0 {
        return Ok(0.0);
    }
    // Non-finite cells are set below every |diff|; they are counted and discounted.
    let below = diff.elem_count() - finite_values;
    let keyed = finite.where_cond(diff, &diff.ones_like()?.neg()?)?;
    let need = below + nearest_rank(finite_values, 0.99) + 1;
    let count_le = |t: f32| -> candle_core::Result<usize> {
        let per_row: Vec<f32> = keyed.le(t)?.to_dtype(DType::F32)?.sum(1)?.to_vec1()?;
        Ok(per_row.iter().map(|&c| c as usize).sum())
    };
    // Invariant: count_le(hi) >= need; the answer is the smallest such bit pattern.
    let (mut lo, mut hi) = (0u32, max.to_bits());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count_le(f32::from_bits(mid))? >= need {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(f32::from_bits(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device path run on the CPU backend must agree with the host path: the same
    /// metrics, to the last bit where the arithmetic is the same and to f64 rounding where
    /// only the order of a sum differs.
    #[test]
    fn device_path_agrees_with_the_host_path() {
        let (positions, vocab) = (7, 301);
        let a: Vec<f32> = (0..positions * vocab)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 20.0)
            .collect();
        let mut b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + ((i as f32 * 0.414_213_6).fract() - 0.5) * 1e-3)
            .collect();
        // A flip at row 2 (decode's winner moves), a NaN at row 4, an inf at row 5.
        let row2 = &a[2 * vocab..3 * vocab];
        let top = super::super::host::argmax(row2);
        let other = (top + 1) % vocab;
        b[2 * vocab + other] = row2[top] + 0.5;
        b[4 * vocab + 3] = f32::NAN;
        b[5 * vocab + 10] = f32::NEG_INFINITY;
        let host = super::super::host::compare(&a, &b, vocab, 31, 0.01).unwrap();
        let ta = Tensor::from_vec(a, (positions, vocab), &Device::Cpu).unwrap();
        let tb = Tensor::from_vec(b, (positions, vocab), &Device::Cpu).unwrap();
        let dev = compare(&ta, &tb, 31, 0.01).unwrap();
        assert_eq!(dev.max_abs_diff(), host.max_abs_diff());
        assert_eq!(dev.p99_abs_diff(), host.p99_abs_diff());
        assert_eq!(dev.per_pos_max_abs, host.per_pos_max_abs);
        assert_eq!(dev.non_finite, 2);
        assert_eq!(dev.non_finite, host.non_finite);
        assert_eq!(dev.top1_flips, host.top1_flips);
        assert_eq!(dev.top1_flips.len(), 1);
        assert_eq!(dev.first_divergent_pos, host.first_divergent_pos);
        assert!((dev.mean_abs_diff() - host.mean_abs_diff()).abs() <= 1e-7 * host.mean_abs_diff());
        for (d, h) in dev.per_pos_kl.iter().zip(&host.per_pos_kl) {
            match (d, h) {
                (Some(d), Some(h)) => assert!((d - h).abs() <= 1e-6 * h.max(1e-12), "{d} vs {h}"),
                (None, None) => {}
                _ => panic!("finite rows differ: {d:?} vs {h:?}"),
            }
        }
        assert_eq!(dev.per_pos_delta_p.len(), host.per_pos_delta_p.len());
        for (d, h) in dev.per_pos_delta_p.iter().zip(&host.per_pos_delta_p) {
            match (d, h) {
                (Some(d), Some(h)) => assert!((d - h).abs() <= 1e-6, "{d} vs {h}"),
                (None, None) => {}
                _ => panic!("finite rows differ: {d:?} vs {h:?}"),
            }
        }
        // Row 2's flip moved probability away from prefill's top token.
        assert!(host.per_pos_delta_p[2].unwrap() < 0.0);
        // The dispatcher's own check is in mod.rs: a test here that called it would make this
        // file import the one that imports it.
    }

    #[test]
    fn bisection_finds_the_nearest_rank_element() {
        let xs: Vec<f32> = (1..=1000).rev().map(|i| i as f32 * 0.001).collect();
        let t = Tensor::from_vec(xs.clone(), (10, 100), &Device::Cpu).unwrap();
        let all = t.ones_like().unwrap().ne(0f32).unwrap();
        let p = p99_by_bisection(&t, &all, 1000, 1.0).unwrap();
        let mut sorted = xs;
        assert_eq!(p, super::super::rows::percentile(&mut sorted, 0.99));
        assert_eq!(p, 990.0 * 0.001);
    }
}
