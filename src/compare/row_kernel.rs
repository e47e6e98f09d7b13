//! The comparator's work on one row whose logits are finite in both runs (nearly every row),
//! at memory speed and with the bits of the straightforward loop it replaced (kept in the tests
//! as the reference).
//!
//! Why the bits are the old ones: result directories store the metrics' f32 values and
//! `driftsweep verify` re-runs pairs and asks for them bit for bit. So every f64 sum keeps its
//! order, left to right over the row, and every exp is the C library's (see [`super::exp`]);
//! what changed is where the time went. Order-free work (finiteness, maxima, argmax, the
//! |diff| counts) runs in vector lanes in one pass; the exponentials run four lanes at a time
//! into a block buffer; and the sums, which are sequential by definition, run as four
//! independent chains in one loop over the block while it is in cache. The 99th percentile of
//! |diff| no longer collects every value: a threshold estimated from a sample of rows splits
//! the values into a count (at or below it) and the few above it ([`Tail`]), from which the
//! same nearest-rank value follows exactly.

use super::exp::{Level, exp_diffs};
use super::rows::{nearest_rank, percentile};

/// Values per exponential block: both runs' f64 exponentials of a block stay in L1.
const BLOCK: usize = 512;

/// Lanes of the order-free scan (a multiple of every vector width it may compile to).
const LANES: usize = 16;

/// The |diff| values of a pair split at a threshold: how many are at or below it, and those
/// above it. Enough to find a high percentile exactly without keeping every value.
#[derive(Debug)]
pub(super) struct Tail {
    threshold: f32,
    at_or_below: usize,
    above: Vec<f32>,
}

impl Tail {
    /// An empty split at `threshold` (0 keeps every nonzero value: exact for any input).
    pub(super) fn new(threshold: f32) -> Tail {
        Tail {
            threshold,
            at_or_below: 0,
            above: Vec::new(),
        }
    }

    /// Adds one |diff| value.
    #[inline]
    pub(super) fn add(&mut self, d: f32) {
        if d > self.threshold {
            self.above.push(d);
        } else {
            self.at_or_below += 1;
        }
    }

    /// The threshold the values are split at.
    pub(super) fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Counts `n` values at or below the threshold (a [`Scan`] counted them).
    pub(super) fn count_at_or_below(&mut self, n: usize) {
        self.at_or_below += n;
    }

    /// Keeps one value above the threshold.
    #[inline]
    pub(super) fn push_above(&mut self, d: f32) {
        debug_assert!(d > self.threshold);
        self.above.push(d);
    }

    /// Keeps values above the threshold, in any order.
    pub(super) fn extend_above(&mut self, ds: &[f32]) {
        debug_assert!(ds.iter().all(|&d| d > self.threshold));
        self.above.extend_from_slice(ds);
    }

    /// How many values were added.
    pub(super) fn len(&self) -> usize {
        self.at_or_below + self.above.len()
    }

    /// Adds the values of `other`, split at the same threshold.
    pub(super) fn merge(&mut self, other: Tail) {
        debug_assert_eq!(self.threshold.to_bits(), other.threshold.to_bits());
        self.at_or_below += other.at_or_below;
        self.above.extend_from_slice(&other.above);
    }

    /// The nearest-rank `q`-quantile of every value added ([`percentile`]'s value), or `None`
    /// when it lies at or below the threshold and so was not kept.
    pub(super) fn quantile(mut self, q: f64) -> Option<f32> {
        let n = self.len();
        if n == 0 {
            return Some(0.0);
        }
        let rank = nearest_rank(n, q);
        if rank >= self.at_or_below {
            let k = rank - self.at_or_below;
            let (_, v, _) = self.above.select_nth_unstable_by(k, f32::total_cmp);
            Some(*v)
        } else if self.threshold == 0.0 {
            // |diff| ≥ 0: every value at or below a threshold of 0 is 0.
            Some(0.0)
        } else {
            None
        }
    }
}

/// A threshold for [`Tail`] such that about 3 % of the |diff| values lie above it, from a
/// sample (up to 8 whole rows spread over the span: a stride within rows can alias with
/// periodic logits and misjudge the spread, which costs the exact second pass). The quantile it serves
/// is the 99th: a sample that misjudges the spread costs a second pass, never a wrong value.
pub(super) fn tail_threshold(prefill: &[f32], decode: &[f32], vocab: usize) -> f32 {
    let positions = prefill.len() / vocab;
    let step = positions.div_ceil(8).max(1);
    let mut sample: Vec<f32> = (0..positions)
        .step_by(step)
        .flat_map(|r| {
            let row = r * vocab..(r + 1) * vocab;
            prefill[row.clone()].iter().zip(&decode[row])
        })
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y).abs())
        .collect();
    // Too few values to judge the spread by: keep them all.
    if sample.len() < 4096 {
        return 0.0;
    }
    percentile(&mut sample, 0.97)
}

/// What one finite row gives the comparator.
#[derive(Debug, PartialEq)]
pub(super) struct FiniteRow {
    /// max |diff|.
    pub(super) max_abs: f32,
    /// Σ|diff| in f64, left to right.
    pub(super) sum_abs: f64,
    /// Index of the largest logit in each run, the first one on ties.
    pub(super) argmax: (usize, usize),
    /// Σe_p(p − q), Σe_p, Σe_q, each left to right in f64, and the row maxima.
    pub(super) weighted: f64,
    pub(super) sum_p: f64,
    pub(super) sum_q: f64,
    pub(super) mp: f64,
    pub(super) mq: f64,
}

/// One row's results when both runs' logits are finite there; `None` (nothing added to
/// `tail`) when some value is not.
pub(super) fn finite_row(a: &[f32], b: &[f32], tail: &mut Tail, level: Level) -> Option<FiniteRow> {
    let scan = scan(a, b, tail.threshold, level);
    if !scan.finite {
        return None;
    }
    tail.at_or_below += scan.at_or_below;
    let (mp, mq) = (f64::from(scan.max_a), f64::from(scan.max_b));
    let mut ea = [0f64; BLOCK];
    let mut eb = [0f64; BLOCK];
    let (mut sum_abs, mut sum_p, mut sum_q, mut weighted) = (0f64, 0f64, 0f64, 0f64);
    for (ca, cb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        exp_diffs(ca, mp, &mut ea, level);
        exp_diffs(cb, mq, &mut eb, level);
        for (((&x, &y), &ex), &ey) in ca.iter().zip(cb).zip(&ea).zip(&eb) {
            let d = (x - y).abs();
            sum_abs += f64::from(d);
            sum_p += ex;
            sum_q += ey;
            weighted += ex * (f64::from(x) - f64::from(y));
            if d > tail.threshold {
                tail.above.push(d);
            }
        }
    }
    Some(FiniteRow {
        max_abs: scan.max_abs,
        sum_abs,
        argmax: (first_index_of(a, scan.max_a), first_index_of(b, scan.max_b)),
        weighted,
        sum_p,
        sum_q,
        mp,
        mq,
    })
}

/// The order-free facts of a row pair, from one pass.
pub(super) struct Scan {
    /// Whether every value of both rows is finite.
    pub(super) finite: bool,
    /// The rows' maxima and minima.
    pub(super) max_a: f32,
    pub(super) max_b: f32,
    pub(super) min_a: f32,
    pub(super) min_b: f32,
    /// max |diff|.
    pub(super) max_abs: f32,
    /// How many |diff| values lie at or below the threshold.
    pub(super) at_or_below: usize,
}

/// [`Scan`] of a row pair, `threshold` being the [`Tail`]'s, with the vector width of `level`.
pub(super) fn scan(a: &[f32], b: &[f32], threshold: f32, level: Level) -> Scan {
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: a level is only used where its features were detected (`Level::available`).
        Level::Avx512 => return unsafe { scan_avx512(a, b, threshold) },
        Level::Avx2 => return unsafe { scan_avx2(a, b, threshold) },
        Level::Scalar => {}
    }
    let _ = level;
    scan_lanes(a, b, threshold)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
fn scan_avx512(a: &[f32], b: &[f32], threshold: f32) -> Scan {
    scan_lanes(a, b, threshold)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_avx2(a: &[f32], b: &[f32], threshold: f32) -> Scan {
    scan_lanes(a, b, threshold)
}

/// [`scan`] in `LANES` independent lanes (the compiler makes them vector lanes), then the
/// lanes combined: maxima and counts do not depend on the order. Finite values only matter:
/// a row with any other is not used.
#[inline(always)]
fn scan_lanes(a: &[f32], b: &[f32], threshold: f32) -> Scan {
    let mut ok = [1u32; LANES];
    let mut ma = [f32::NEG_INFINITY; LANES];
    let mut mb = [f32::NEG_INFINITY; LANES];
    let mut na = [f32::INFINITY; LANES];
    let mut nb = [f32::INFINITY; LANES];
    let mut md = [0f32; LANES];
    let mut le = [0u32; LANES];
    let mut step = |l: usize, x: f32, y: f32| {
        let d = (x - y).abs();
        ok[l] &= u32::from(x.is_finite() & y.is_finite());
        ma[l] = if x > ma[l] { x } else { ma[l] };
        mb[l] = if y > mb[l] { y } else { mb[l] };
        na[l] = if x < na[l] { x } else { na[l] };
        nb[l] = if y < nb[l] { y } else { nb[l] };
        md[l] = if d > md[l] { d } else { md[l] };
        le[l] += u32::from(d <= threshold);
    };
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            step(l, xa[l], xb[l]);
        }
    }
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        step(l, x, y);
    }
    let max = |m: [f32; LANES]| m.into_iter().fold(f32::NEG_INFINITY, f32::max);
    let min = |m: [f32; LANES]| m.into_iter().fold(f32::INFINITY, f32::min);
    Scan {
        finite: ok.iter().all(|&o| o == 1),
        max_a: max(ma),
        max_b: max(mb),
        min_a: min(na),
        min_b: min(nb),
        max_abs: max(md).max(0.0),
        at_or_below: le.iter().map(|&c| c as usize).sum(),
    }
}

/// The first index of `m` in `xs` (0 if absent), a vector's worth of comparisons at a time.
pub(super) fn first_index_of(xs: &[f32], m: f32) -> usize {
    let mut base = 0;
    for chunk in xs.chunks(LANES) {
        if chunk.iter().fold(false, |hit, &x| hit | (x == m)) {
            return base + chunk.iter().position(|&x| x == m).unwrap_or(0);
        }
        base += chunk.len();
    }
    0
}
