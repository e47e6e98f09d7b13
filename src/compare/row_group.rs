//! Eight rows at once, one row per f64 lane of AVX-512: the comparator's softmax sums with
//! the bits of [`super::row_kernel::finite_row`], row by row.
//!
//! Why: every f64 sum of a row is taken left to right (the stored metrics are that order's
//! roundings, and `driftsweep verify` asks for them bit for bit), so within one row each sum is
//! a chain of dependent additions that waits on the adder, value after value. Eight rows are
//! eight independent chains: with row r in lane r, one vector addition advances all eight,
//! each lane still adding its own row's values in column order. The columns come from eight
//! rows' loads transposed in registers (8 × 8 f32), the exponentials from the eight-lane
//! kernel ([`super::exp::avx512`]), without its per-lane check where the rows' extremes put
//! every lane on the library's main path ([`super::exp::all_on_main_path`]); the |diff| values
//! above the percentile's threshold are packed out of the lanes without a branch. What stays
//! outside the lanes is the last columns of a vocabulary that is not a multiple of 8.

use std::arch::x86_64::*;

use super::exp::avx512::{exp8, exp8_main};
use super::exp::{Level, all_on_main_path};
use super::row_kernel::{FiniteRow, Scan, Tail, first_index_of, scan};

/// Rows per group: one per f64 lane.
pub(super) const ROWS: usize = 8;

/// The results of `ROWS` consecutive rows of `vocab` values (`a` and `b` hold them), each as
/// [`super::row_kernel::finite_row`] gives it; `None`, with nothing added to `tail`, when a
/// value of some row is not finite. `level` must be [`Level::Avx512`].
pub(super) fn finite_rows(
    a: &[f32],
    b: &[f32],
    vocab: usize,
    tail: &mut Tail,
    level: Level,
) -> Option<[FiniteRow; ROWS]> {
    assert!(level == Level::Avx512 && Level::available().contains(&level));
    assert!(vocab > 0 && a.len() == ROWS * vocab && b.len() == a.len());
    let rows = |r: usize| {
        (
            &a[r * vocab..(r + 1) * vocab],
            &b[r * vocab..(r + 1) * vocab],
        )
    };
    let scans: [Scan; ROWS] = std::array::from_fn(|r| {
        let (a, b) = rows(r);
        scan(a, b, tail.threshold(), level)
    });
    if !scans.iter().all(|s| s.finite) {
        return None;
    }
    for s in &scans {
        tail.count_at_or_below(s.at_or_below);
    }
    let mp: [f64; ROWS] = std::array::from_fn(|r| f64::from(scans[r].max_a));
    let mq: [f64; ROWS] = std::array::from_fn(|r| f64::from(scans[r].max_b));
    // Where no lane can leave the library's main path, the exponentials skip the check.
    let on_path = (0..ROWS).all(|r| {
        let (a, b) = rows(r);
        all_on_main_path(a, scans[r].min_a, mp[r]) && all_on_main_path(b, scans[r].min_b, mq[r])
    });
    // SAFETY: `Level::Avx512` is available, so AVX-512F/VL, AVX2 and FMA were detected.
    let s = unsafe {
        if on_path {
            sums::<false>(a, b, vocab, &mp, &mq, tail)
        } else {
            sums::<true>(a, b, vocab, &mp, &mq, tail)
        }
    };
    Some(std::array::from_fn(|r| FiniteRow {
        max_abs: scans[r].max_abs,
        sum_abs: s.abs[r],
        argmax: (
            first_index_of(rows(r).0, scans[r].max_a),
            first_index_of(rows(r).1, scans[r].max_b),
        ),
        weighted: s.weighted[r],
        sum_p: s.p[r],
        sum_q: s.q[r],
        mp: mp[r],
        mq: mq[r],
    }))
}

/// Each row's Σ|diff|, Σe_p, Σe_q and Σe_p(p − q), left to right.
struct Sums {
    abs: [f64; ROWS],
    p: [f64; ROWS],
    q: [f64; ROWS],
    weighted: [f64; ROWS],
}

/// Values above the threshold gathered before they go to the tail: the compress stores eight
/// lanes at a time, so the buffer holds `KEPT` and eight more.
const KEPT: usize = 1024;

/// exp of eight lanes: checked per lane (`CHECKED`), or all on the library's main path.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn exp_lanes<const CHECKED: bool>(x: __m512d) -> __m512d {
    if CHECKED { exp8(x) } else { exp8_main(x) }
}

/// The four sums of every row, row r in lane r; the |diff| values above the threshold go to
/// `tail`. `mp`, `mq`: the rows' maxima; `CHECKED`: whether a lane may leave the library's
/// main path.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn sums<const CHECKED: bool>(
    a: &[f32],
    b: &[f32],
    vocab: usize,
    mp: &[f64; ROWS],
    mq: &[f64; ROWS],
    tail: &mut Tail,
) -> Sums {
    let full = vocab - vocab % 8;
    // SAFETY: eight values each.
    let (mpv, mqv) = unsafe { (_mm512_loadu_pd(mp.as_ptr()), _mm512_loadu_pd(mq.as_ptr())) };
    let (mut s_abs, mut s_p, mut s_q, mut s_w) = (
        _mm512_setzero_pd(),
        _mm512_setzero_pd(),
        _mm512_setzero_pd(),
        _mm512_setzero_pd(),
    );
    let sign = _mm256_set1_ps(-0.0);
    let threshold = _mm256_set1_ps(tail.threshold());
    let (mut kept, mut n_kept) = ([0f32; KEPT + 8], 0);
    for c in (0..full).step_by(8) {
        // SAFETY: c + 8 ≤ full ≤ vocab: columns c..c + 8 of every row lie in a and b.
        let (ta, tb) = unsafe { (columns(a, vocab, c), columns(b, vocab, c)) };
        for (&xa, &xb) in ta.iter().zip(&tb) {
            // The scalar loop's operations, lane for lane: |x − y| in f32, then f64.
            let d = _mm256_andnot_ps(sign, _mm256_sub_ps(xa, xb));
            s_abs = _mm512_add_pd(s_abs, _mm512_cvtps_pd(d));
            let (x, y) = (_mm512_cvtps_pd(xa), _mm512_cvtps_pd(xb));
            let ex = exp_lanes::<CHECKED>(_mm512_sub_pd(x, mpv));
            let ey = exp_lanes::<CHECKED>(_mm512_sub_pd(y, mqv));
            s_p = _mm512_add_pd(s_p, ex);
            s_q = _mm512_add_pd(s_q, ey);
            // A product, then a sum: no fused multiply-add, as in the scalar loop.
            s_w = _mm512_add_pd(s_w, _mm512_mul_pd(ex, _mm512_sub_pd(x, y)));
            // Without a branch: about one column in five has a value above the threshold,
            // which a branch mispredicts.
            let above = _mm256_cmp_ps_mask::<_CMP_GT_OQ>(d, threshold);
            // SAFETY: n_kept ≤ KEPT − 8 here (flushed above KEPT − 64 before these eight
            // columns, each adding at most eight), so eight values fit.
            unsafe {
                let packed = _mm256_maskz_compress_ps(above, d);
                _mm256_storeu_ps(kept.as_mut_ptr().add(n_kept), packed);
            }
            n_kept += above.count_ones() as usize;
        }
        if n_kept > KEPT - 64 {
            tail.extend_above(&kept[..n_kept]);
            n_kept = 0;
        }
    }
    tail.extend_above(&kept[..n_kept]);
    let lanes = |v: __m512d| {
        let mut out = [0f64; ROWS];
        // SAFETY: eight values.
        unsafe { _mm512_storeu_pd(out.as_mut_ptr(), v) };
        out
    };
    let mut s = Sums {
        abs: lanes(s_abs),
        p: lanes(s_p),
        q: lanes(s_q),
        weighted: lanes(s_w),
    };
    // The columns that fill no eight: each row on its own, its sums carried on in order.
    for r in 0..ROWS {
        for c in full..vocab {
            let (x, y) = (a[r * vocab + c], b[r * vocab + c]);
            let d = (x - y).abs();
            let ex = (f64::from(x) - mp[r]).exp();
            s.abs[r] += f64::from(d);
            s.p[r] += ex;
            s.q[r] += (f64::from(y) - mq[r]).exp();
            s.weighted[r] += ex * (f64::from(x) - f64::from(y));
            if d > tail.threshold() {
                tail.push_above(d);
            }
        }
    }
    s
}

/// Columns c..c + 8 of the eight rows of `vocab` in `x`: element k holds column c + k, row r
/// in lane r.
///
/// # Safety
/// Every row must have the columns: (7 · vocab) + c + 8 ≤ x.len(); AVX2 must be available.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn columns(x: &[f32], vocab: usize, c: usize) -> [__m256; 8] {
    // SAFETY: the caller's bounds; unaligned loads.
    let r: [__m256; 8] =
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(i * vocab + c)) });
    // Pairs of rows interleaved, then pairs of pairs: columns k and k + 4 of four rows in
    // the two halves of each register, then the halves of rows 0–3 and 4–7 joined.
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (lo, hi) = (r[2 * (i / 2) % 8], r[2 * (i / 2) % 8 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(lo, hi)
        } else {
            _mm256_unpackhi_ps(lo, hi)
        }
    });
    // u[2j + h], for the row quad j ∈ {0 (rows 0–3), 1 (rows 4–7)} and h ∈ {0, 1}: from t's
    // low (h = 0) or high (h = 1) interleaves.
    let quad = |j: usize, m: usize| {
        let (p, q) = (t[4 * j + m], t[4 * j + m + 2]);
        [
            _mm256_shuffle_ps::<0x44>(p, q),
            _mm256_shuffle_ps::<0xEE>(p, q),
        ]
    };
    let (q0, q1) = ([quad(0, 0), quad(0, 1)], [quad(1, 0), quad(1, 1)]);
    // Column k ∈ 0..4 from q?[k / 2][k % 2]'s low halves, k + 4 from their high halves.
    std::array::from_fn(|k| {
        let (m, s) = ((k % 4) / 2, k % 2);
        let (lo, hi) = (q0[m][s], q1[m][s]);
        if k < 4 {
            _mm256_permute2f128_ps::<0x20>(lo, hi)
        } else {
            _mm256_permute2f128_ps::<0x31>(lo, hi)
        }
    })
}
