//! The host comparator as it was before [`super::row_kernel`]: one scalar loop per row, every
//! |diff| collected for the percentile, the C library's exp per value. Kept, for tests only,
//! as the reference the fast comparator must match bit for bit (results directories store the
//! metrics it computed, and `driftsweep verify` re-checks them bit for bit).

use rand::{Rng, SeedableRng};

use super::exp::Level;
use super::host::{argmax, compare, compare_at};
use super::rows::{RowStats, delta_p_from_sums, kl_from_sums, percentile};
use super::types::{Metrics, TopFlip};

/// The reference comparator: the same checks' happy path, one thread.
fn reference_compare(prefill: &[f32], decode: &[f32], vocab: usize, span_start: usize) -> Metrics {
    let (stats, mut abs_diffs) = rows(prefill, decode, vocab, span_start);
    let p99_abs_diff = percentile(&mut abs_diffs, 0.99);
    super::metrics::finish(stats, p99_abs_diff, span_start, vocab, 0.01)
}

fn rows(prefill: &[f32], decode: &[f32], vocab: usize, first_pos: usize) -> (RowStats, Vec<f32>) {
    let mut abs_diffs = Vec::new();
    let mut out = RowStats::default();
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
        if !row_finite {
            out.kl.push(None);
            out.delta_p.push(None);
            continue;
        }
        let (ia, ib) = (argmax(a), argmax(b));
        let (weighted, sum_p, sum_q, mp, mq) = kl_sums(a, b);
        out.kl
            .push(Some(kl_from_sums(weighted, sum_p, sum_q, mp, mq)));
        out.delta_p
            .push(Some(delta_p_from_sums(a[ia], b[ia], sum_p, sum_q, mp, mq)));
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

/// Σe_p(p − q), Σe_p, Σe_q and the row maxima, left to right in f64.
fn kl_sums(p: &[f32], q: &[f32]) -> (f64, f64, f64, f64, f64) {
    let max = |xs: &[f32]| xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let (mp, mq) = (max(p), max(q));
    let (mut sum_p, mut sum_q, mut weighted) = (0f64, 0f64, 0f64);
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a as f64, b as f64);
        let ea = (a - mp).exp();
        sum_p += ea;
        sum_q += (b - mq).exp();
        weighted += ea * (a - b);
    }
    (weighted, sum_p, sum_q, mp, mq)
}

/// KL(softmax(p) ‖ softmax(q)) of one row, as the reference computes it.
fn kl(p: &[f32], q: &[f32]) -> f32 {
    let (weighted, sum_p, sum_q, mp, mq) = kl_sums(p, q);
    kl_from_sums(weighted, sum_p, sum_q, mp, mq)
}

/// Logits as runs give them, and the awkward cases: ties (values on a grid of 1/4, so the
/// maximum repeats), rows with −inf or NaN, values near f32's limits, drifts from none to
/// large.
fn logits(rng: &mut impl Rng, positions: usize, vocab: usize) -> (Vec<f32>, Vec<f32>) {
    let n = positions * vocab;
    let a: Vec<f32> = (0..n)
        .map(|i| match rng.random_range(0..100) {
            0 if i % vocab == 7 => f32::NEG_INFINITY,
            1 if i % vocab == 7 => f32::NAN,
            2 => (rng.random::<f32>() - 0.5) * 2.0 * 3.0e38,
            3..20 => (rng.random_range(-40..80) as f32) * 0.25,
            _ => (rng.random::<f32>() - 0.5) * 40.0,
        })
        .collect();
    let scale = [0.0, 1e-6, 1e-3, 0.5][rng.random_range(0..4)];
    let b = a
        .iter()
        .map(|&x| match rng.random_range(0..50) {
            0 => x,
            1 => x + 3.0,
            _ => x + (rng.random::<f32>() - 0.5) * scale * x.abs().max(1.0),
        })
        .collect();
    (a, b)
}

/// Both comparators' metrics, every bit (Debug prints every f32 digit, NaN and inf alike):
/// the fast one at its own choice of kernels and forced to each level this CPU has.
fn assert_same(a: &[f32], b: &[f32], vocab: usize, what: &str) {
    let want = format!("{:?}", reference_compare(a, b, vocab, 5));
    let fast = compare(a, b, vocab, 5, 0.01).unwrap();
    assert_eq!(format!("{fast:?}"), want, "{what}");
    for &level in Level::available() {
        let at = compare_at(a, b, vocab, 5, 0.01, level).unwrap();
        assert_eq!(format!("{at:?}"), want, "{what}, {level:?}");
    }
}

#[test]
fn fast_comparator_is_bit_identical_to_the_reference() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(35);
    // Eight-row groups with a vocabulary below, at and above one vector's 8 columns, and
    // thread chunks that end inside a group.
    let shapes = [
        (1, 1),
        (3, 5),
        (2, 17),
        (16, 5),
        (24, 1),
        (9, 8),
        (37, 515),
        (9, 4099),
        (37, 20_000),
    ];
    for (positions, vocab) in shapes {
        for round in 0..3 {
            let (a, b) = logits(&mut rng, positions, vocab);
            assert_same(
                &a,
                &b,
                vocab,
                &format!("{positions}×{vocab}, round {round}"),
            );
        }
    }
}

#[test]
fn the_percentile_is_exact_where_the_sample_misjudges_the_spread() {
    // The sampled rows (0, 5, 10, ...) drift by 1e-3, the others by 1: the threshold the sample
    // gives lies far below the 99th percentile. And a pair with no drift at all: threshold 0.
    let (positions, vocab) = (40, 8192);
    let a: Vec<f32> = (0..positions * vocab)
        .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 20.0)
        .collect();
    let b: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, x)| x + if (i / vocab) % 5 == 0 { 1.0 } else { 1e-3 } * (i % 7) as f32)
        .collect();
    assert_same(&a, &b, vocab, "sampled rows drift most");
    let c: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, x)| x + if (i / vocab) % 5 == 0 { 1e-3 } else { 1.0 } * (i % 7) as f32)
        .collect();
    assert_same(&a, &c, vocab, "sampled rows drift least");
    assert_same(&a, &a, vocab, "no drift");
}

#[test]
fn a_changed_sum_order_is_caught() {
    // Negative control: summing the same rows in another order (two interleaved halves, as
    // a vector unit would) changes KL bits, so the identity above is a claim about order, not
    // luck.
    let changed = (0..8u64)
        .filter(|&seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let p: Vec<f32> = (0..4096)
                .map(|_| (rng.random::<f32>() - 0.5) * 30.0)
                .collect();
            let q: Vec<f32> = p.iter().map(|x| x + rng.random::<f32>() * 1e-6).collect();
            let (w, sp, sq, mp, mq) = kl_sums(&p, &q);
            let pairwise = |f: &dyn Fn(usize) -> f64| {
                let (mut even, mut odd) = (0f64, 0f64);
                for i in (0..p.len()).step_by(2) {
                    even += f(i);
                    odd += f(i + 1);
                }
                even + odd
            };
            let ea = |i: usize| (f64::from(p[i]) - mp).exp();
            let sp2 = pairwise(&ea);
            let sq2 = pairwise(&|i| (f64::from(q[i]) - mq).exp());
            let w2 = pairwise(&|i| ea(i) * (f64::from(p[i]) - f64::from(q[i])));
            kl_from_sums(w, sp, sq, mp, mq).to_bits()
                != kl_from_sums(w2, sp2, sq2, mp, mq).to_bits()
        })
        .count();
    assert!(changed > 0, "no seed's KL moved with the order");
}

// The old scalar KL keeps its own test here (host.rs no longer has one: importing this
// file from host.rs's tests made a file cycle).
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
