//! One activation row times a CPU weight matrix (`x Wᵀ`, a decode step's projections), with
//! the weight read in the dtype it was loaded in and the exact bits of candle's product.
//!
//! Why: a decode step reads every weight once and does two flops per weight, so its time is
//! the weight bytes over the memory bandwidth. candle's CPU product of bf16 weights widens
//! them to f32 (the decoder holds them widened, see `Linear` in [`super::linear`]), so a bf16
//! decode step read as many bytes as an f32 one; and gemm's one-row path runs on one thread
//! whatever the pool holds. Here bf16 and f16 weights are widened to f32 in registers, so a
//! step reads half the bytes, and the rows are split over the threads a lane has.
//!
//! Bits: for a one-row product with more than 256 outputs and more than 2 inputs, candle (gemm
//! 0.19 on an AVX-512 CPU, its `x86-v4` kernels) computes each output as a dot product of the
//! weight row and `x` in a fixed order: eight 16-lane fused multiply-add accumulators over
//! blocks of 128, summed pairwise, then the remaining 16-lane blocks, then the 16 lanes summed
//! left to right, then the last elements one fused multiply-add at a time. [`Gemv`] follows
//! that order exactly, so its outputs are bit-identical to the widened product
//! (`one_row_product_is_bit_identical_to_candle`). On a CPU with AVX2 and FMA but no AVX-512,
//! gemm runs the same code on 8-lane vectors (its `V3` type): eight 8-lane accumulators over
//! blocks of 64, then blocks of 8, then 8 lanes left to right, then the tail; the 8-lane
//! kernel follows that. What is proven where: both kernels give their scalar emulation's bits
//! (`each_kernel_follows_its_emulation_bit_for_bit`, run on any AVX-512 CPU, which runs both),
//! and the emulation of the lanes gemm takes gives candle's bits: 16 on an AVX-512 CPU, 8 on
//! an AVX2-only one (`the_emulation_of_this_cpus_lanes_is_candles_product`; the AVX2 level is
//! also run on AVX-512 machines under qemu-user by `scripts/feature_levels.sh`, where
//! gemm takes `V3` as it does on such a CPU). Rows are independent: how they are split over
//! threads never changes a bit. A product of at most 256 outputs (SmolLM2's K/V projections,
//! 192) goes through gemm's horizontal kernels instead, in another order: per block of 1024
//! inputs one accumulator of 16 (8) lanes, its last short vector zero-filled, the lanes
//! reduced by halves; [`Gemv`] follows that too, for f32 and bf16 weights. candle hands f16
//! products to gemm's own f16 code (gemm-f16), which has no horizontal kernels: its one-row
//! products of any size take the one-row order above (f16 widened to f32 exactly, f32 sums,
//! one rounding to f16 at the end), so small f16 weights go through the one-row kernel.
//! Elsewhere (≤ 2 inputs, where gemm uses its outer-product kernel; CPUs without
//! AVX2/FMA/F16C; other devices) the caller keeps candle's product.

use candle_core::{DType, Device, Tensor};

/// Fewest outputs for which gemm takes its one-row (gemv) path: with `m · n ≤ 16 · 16` it uses
/// its small horizontal kernels instead, which sum in another order.
const GEMM_GEMV_MIN_OUTPUTS: usize = 16 * 16 + 1;

/// Fewest inputs for which gemm takes its one-row path (`k ≤ 2` goes to its outer-product
/// kernel).
const GEMM_GEMV_MIN_INPUTS: usize = 3;

/// Fewest weight elements for which a product is split over the pool's threads: below it
/// (a built-in model's 128 × 128 projection) waking a worker costs more than it saves.
/// Threads never change a bit (rows are independent).
const SPLIT_MIN_WEIGHTS: usize = 32 * 1024;

/// A weight matrix (outputs, inputs) on the CPU in f32, bf16 or f16, for one-row products.
#[derive(Debug, Clone)]
pub(super) struct Gemv {
    weight: Tensor,
    order: kernel::Order,
}

impl Gemv {
    /// The fast product for `weight` (outputs, inputs), when this CPU and shape allow one with
    /// candle's bits; `None` otherwise (keep candle's product).
    pub(super) fn new(weight: &Tensor) -> candle_core::Result<Option<Gemv>> {
        let (n, k) = weight.dims2()?;
        let order = match weight.dtype() {
            _ if !weight.device().is_cpu() || !kernel::available() || n == 0 || k == 0 => None,
            // gemm's horizontal kernels come before its outer product (f32 only).
            DType::F32 | DType::BF16 if n < GEMM_GEMV_MIN_OUTPUTS => {
                Some(kernel::Order::Horizontal)
            }
            _ if k < GEMM_GEMV_MIN_INPUTS => None,
            // gemm's f16 code (gemm-f16 0.19) has no horizontal kernels: every one-row f16
            // product of 3 or more inputs takes its one-row path, whatever the outputs.
            DType::F32 | DType::BF16 | DType::F16 => Some(kernel::Order::OneRow),
            _ => None,
        };
        let Some(order) = order else {
            return Ok(None);
        };
        Ok(Some(Gemv {
            weight: weight.contiguous()?,
            order,
        }))
    }

    /// `x Wᵀ` for `x` holding one row (any leading dims of size 1, last dim the inputs), in
    /// `x`'s dtype: `x` is widened to f32 (exact), the dot products accumulate in f32 and the
    /// result is rounded to `x`'s dtype once, as candle's widened product does.
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, k) = self.weight.dims2()?;
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&k) || x.elem_count() != k {
            candle_core::bail!(
                "one-row product of a {:?} input with a {n}×{k} weight",
                x.dims()
            );
        }
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; n];
        let (storage, layout) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("one-row product of a weight that is not on the CPU");
        };
        let start = layout.start_offset();
        let order = self.order;
        match self.weight.dtype() {
            DType::F32 => rows(
                order,
                &cpu.as_slice::<f32>()?[start..start + n * k],
                &xs,
                &mut out,
            ),
            DType::BF16 => rows(
                order,
                &cpu.as_slice::<half::bf16>()?[start..start + n * k],
                &xs,
                &mut out,
            ),
            DType::F16 => rows(
                order,
                &cpu.as_slice::<half::f16>()?[start..start + n * k],
                &xs,
                &mut out,
            ),
            d => candle_core::bail!("one-row product of a {d:?} weight"),
        }
        drop(storage);
        *dims.last_mut().expect("checked above") = n;
        Tensor::from_vec(out, dims, &Device::Cpu)?.to_dtype(x.dtype())
    }
}

/// Every output row of `w` (out.len() rows of x.len() weights) dotted with `x`. When the
/// current rayon pool has more than one thread (one lane, or no lanes), the rows are split
/// over candle's barrier pool, the spinning workers candle's own CPU ops use: waking a rayon
/// thread for each product cost more than it gained (SmolLM2 bf16 decode step on 2 threads:
/// 14.3–15.9 ms splitting only its 113 MB output head through rayon, 11.4–13.7 ms splitting
/// every product through the barrier pool; `driftsweep bench`). Within a one-thread lane
/// the rows run on the calling thread, and so do the rows of a small weight
/// ([`SPLIT_MIN_WEIGHTS`]).
fn rows<W: kernel::Widen>(order: kernel::Order, w: &[W], x: &[f32], out: &mut [f32]) {
    let k = x.len();
    if rayon::current_num_threads() <= 1 || w.len() < SPLIT_MIN_WEIGHTS {
        kernel::dot_rows(order, w, x, out);
        return;
    }
    let dst = Disjoint(out.as_mut_ptr());
    let n = out.len();
    candle_core::utils::barrier_pool().execute_chunked(n, |r: std::ops::Range<usize>| {
        // SAFETY: the pool hands out disjoint ranges within 0..n, so each call writes rows
        // no other call touches, and `out` is not used otherwise until the pool returns.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.at(r.start), r.len()) };
        kernel::dot_rows(order, &w[r.start * k..r.end * k], x, o);
    });
}

/// The output buffer, shared with the pool's workers, which write disjoint rows of it.
struct Disjoint(*mut f32);

// SAFETY: only disjoint ranges are written through it, one worker each (see `rows`).
unsafe impl Sync for Disjoint {}

impl Disjoint {
    fn at(&self, i: usize) -> *mut f32 {
        // SAFETY: `i` is within the buffer (a range start the pool handed out).
        unsafe { self.0.add(i) }
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    /// Which of gemm's one-row kernels this CPU gets, and so whose summation order to follow:
    /// pulp's `V4` (AVX-512 F/BW/CD/DQ/VL over `V3`) where gemm's `x86-v4` kernels run, 16
    /// lanes; its `V3` (AVX2, FMA, BMI1/2, LZCNT, POPCNT; F16C for the half types) elsewhere,
    /// 8 lanes. `DRIFTSWEEP_GEMV=avx2` takes the 8-lane kernel on an AVX-512 CPU too, so that
    /// the decode path of an AVX2 machine can be exercised on one (its products then differ
    /// from this CPU's candle product in the last bits: gemm itself takes `V4` here).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Level {
        /// 16 lanes, AVX-512.
        V4,
        /// 8 lanes, AVX2 + FMA.
        V3,
    }

    /// The kernel this CPU takes, if any (cached: the environment is read once).
    pub(super) fn level() -> Option<Level> {
        static LEVEL: std::sync::OnceLock<Option<Level>> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            let v3 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
                && is_x86_feature_detected!("bmi1")
                && is_x86_feature_detected!("bmi2")
                && is_x86_feature_detected!("lzcnt")
                && is_x86_feature_detected!("popcnt");
            let v4 = v3
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512cd")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl");
            let forced_v3 = std::env::var("DRIFTSWEEP_GEMV").is_ok_and(|v| v == "avx2");
            match (v4 && !forced_v3, v3) {
                (true, _) => Some(Level::V4),
                (false, true) => Some(Level::V3),
                (false, false) => None,
            }
        })
    }

    /// Whether this CPU has a kernel that follows gemm's one-row order ([`level`]).
    pub(super) fn available() -> bool {
        level().is_some()
    }

    /// Which of gemm's orders a product follows: its one-row path (more than 256 outputs,
    /// more than 2 inputs; [`dot`]) or its horizontal kernels (at most 256 outputs; [`hdot`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Order {
        /// `gemv::mixed_gemv_rowmajor`.
        OneRow,
        /// `horizontal_kernel!`.
        Horizontal,
    }

    /// A weight element type that widens exactly to f32.
    pub(super) trait Widen: Copy + Send + Sync {
        /// 16 elements from `p`, widened.
        ///
        /// # Safety
        /// `p` must be valid for 16 reads; AVX-512F and F16C must be available.
        unsafe fn load16(p: *const Self) -> __m512;
        /// 8 elements from `p`, widened.
        ///
        /// # Safety
        /// `p` must be valid for 8 reads; AVX2 and F16C must be available.
        unsafe fn load8(p: *const Self) -> __m256;
        /// One element, widened.
        fn widen(self) -> f32;
    }

    impl Widen for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const f32) -> __m512 {
            // SAFETY: as the trait requires.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: as the trait requires.
            unsafe { _mm256_loadu_ps(p) }
        }
        fn widen(self) -> f32 {
            self
        }
    }

    impl Widen for half::bf16 {
        #[inline(always)]
        unsafe fn load16(p: *const half::bf16) -> __m512 {
            // A bf16 is the high half of the f32 with the same value.
            // SAFETY: as the trait requires.
            unsafe {
                let h = _mm256_loadu_si256(p as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
        }
        #[inline(always)]
        unsafe fn load8(p: *const half::bf16) -> __m256 {
            // SAFETY: as the trait requires.
            unsafe {
                let h = _mm_loadu_si128(p as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
        }
        fn widen(self) -> f32 {
            self.to_f32()
        }
    }

    impl Widen for half::f16 {
        #[inline(always)]
        unsafe fn load16(p: *const half::f16) -> __m512 {
            // SAFETY: as the trait requires.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
        }
        #[inline(always)]
        unsafe fn load8(p: *const half::f16) -> __m256 {
            // SAFETY: as the trait requires.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
        }
        fn widen(self) -> f32 {
            self.to_f32()
        }
    }

    /// `out[r] = w[r·k .. (r+1)·k] · x` for every r, with k = x.len(), in `order`.
    pub(super) fn dot_rows<W: Widen>(order: Order, w: &[W], x: &[f32], out: &mut [f32]) {
        assert_eq!(
            w.len(),
            out.len() * x.len(),
            "weight rows and outputs disagree"
        );
        // SAFETY: each kernel runs only where its features were detected, and every row lies
        // within `w` (checked above).
        match level() {
            Some(Level::V4) => unsafe { dot_rows_v4(order, w, x, out) },
            Some(Level::V3) => unsafe { dot_rows_v3(order, w, x, out) },
            None => panic!("the one-row kernel needs AVX2, FMA and F16C at least"),
        }
    }

    /// [`dot_rows`] with the kernel of `level`, whatever this CPU's own level: for tests that
    /// hold each kernel to its emulation. Panics where the CPU cannot run that kernel.
    #[cfg(test)]
    pub(super) fn dot_rows_at<W: Widen>(
        level: Level,
        order: Order,
        w: &[W],
        x: &[f32],
        out: &mut [f32],
    ) {
        assert_eq!(w.len(), out.len() * x.len());
        let v3 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        match level {
            Level::V4 => {
                assert!(v3 && is_x86_feature_detected!("avx512f"));
                // SAFETY: the features were checked just above.
                unsafe { dot_rows_v4(order, w, x, out) }
            }
            Level::V3 => {
                assert!(v3);
                // SAFETY: the features were checked just above.
                unsafe { dot_rows_v3(order, w, x, out) }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dot_rows_v4<W: Widen>(order: Order, w: &[W], x: &[f32], out: &mut [f32]) {
        let k = x.len();
        for (r, o) in out.iter_mut().enumerate() {
            // SAFETY: row r is w[r·k .. (r+1)·k], within `w` (checked by the caller).
            *o = unsafe {
                let row = w.as_ptr().add(r * k);
                match order {
                    Order::OneRow => dot(row, x.as_ptr(), k),
                    Order::Horizontal => hdot(row, x.as_ptr(), k),
                }
            };
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_rows_v3<W: Widen>(order: Order, w: &[W], x: &[f32], out: &mut [f32]) {
        let k = x.len();
        for (r, o) in out.iter_mut().enumerate() {
            // SAFETY: row r is w[r·k .. (r+1)·k], within `w` (checked by the caller).
            *o = unsafe {
                let row = w.as_ptr().add(r * k);
                match order {
                    Order::OneRow => dot_v3(row, x.as_ptr(), k),
                    Order::Horizontal => hdot_v3(row, x.as_ptr(), k),
                }
            };
        }
    }

    /// The inputs gemm's horizontal kernels take per pass (its `kc` there).
    const H_BLOCK: usize = 1024;

    /// `LANES` inputs from `at` (`len` ≤ LANES of them; the rest zero) of `x` and of a
    /// weight row, widened: what gemm's masked, zero-filling `partial_load` reads for a
    /// block's last, short vector.
    ///
    /// # Safety
    /// `w` and `x` must be valid for `len` reads.
    #[inline(always)]
    unsafe fn tail<W: Widen, const LANES: usize>(
        w: *const W,
        x: *const f32,
        len: usize,
    ) -> ([f32; LANES], [f32; LANES]) {
        let (mut xt, mut wt) = ([0f32; LANES], [0f32; LANES]);
        for i in 0..len {
            // SAFETY: i < len, as the caller guarantees.
            unsafe {
                xt[i] = *x.add(i);
                wt[i] = (*w.add(i)).widen();
            }
        }
        (xt, wt)
    }

    /// One gemm vector type, as the horizontal order uses it: `V4`'s 16 lanes or `V3`'s 8.
    trait Lanes {
        /// Lanes per vector.
        const N: usize;
        /// The vector.
        type V: Copy;
        /// Zero in every lane.
        fn zero() -> Self::V;
        /// `N` inputs from `x` and `N` weights from `w`, widened (both valid for N reads).
        unsafe fn load<W: Widen>(x: *const f32, w: *const W) -> (Self::V, Self::V);
        /// `a · b + c` per lane, one rounding.
        fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        /// `a + b` per lane.
        fn add(a: Self::V, b: Self::V) -> Self::V;
        /// The lanes, in order (the first `N` of 16).
        fn lanes(v: Self::V) -> [f32; 16];
        /// gemm's `reduce_sum`: halves added down to 4 lanes, then (l0+l2) + (l1+l3).
        fn reduce(v: Self::V) -> f32;
    }

    /// pulp's `V4`: 16 lanes (call only where AVX-512F, AVX2, FMA and F16C are present).
    struct L16;
    /// pulp's `V3`: 8 lanes (call only where AVX2, FMA and F16C are present).
    struct L8;

    impl Lanes for L16 {
        const N: usize = 16;
        type V = __m512;
        #[inline(always)]
        fn zero() -> __m512 {
            // SAFETY: called from the `V4` kernel only (AVX-512F present).
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load<W: Widen>(x: *const f32, w: *const W) -> (__m512, __m512) {
            // SAFETY: as the trait requires.
            unsafe { (_mm512_loadu_ps(x), W::load16(w)) }
        }
        #[inline(always)]
        fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: as for `zero`.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(a: __m512, b: __m512) -> __m512 {
            // SAFETY: as for `zero`.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn lanes(v: __m512) -> [f32; 16] {
            let mut out = [0f32; 16];
            // SAFETY: as for `zero`; `out` holds 16 lanes.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
            out
        }
        #[inline(always)]
        fn reduce(v: __m512) -> f32 {
            // SAFETY: as for `zero`.
            unsafe {
                let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
                L8::reduce(_mm256_add_ps(_mm512_castps512_ps256(v), upper))
            }
        }
    }

    impl Lanes for L8 {
        const N: usize = 8;
        type V = __m256;
        #[inline(always)]
        fn zero() -> __m256 {
            // SAFETY: called from AVX2 kernels only.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load<W: Widen>(x: *const f32, w: *const W) -> (__m256, __m256) {
            // SAFETY: as the trait requires.
            unsafe { (_mm256_loadu_ps(x), W::load8(w)) }
        }
        #[inline(always)]
        fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: as for `zero` (FMA present).
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(a: __m256, b: __m256) -> __m256 {
            // SAFETY: as for `zero`.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn lanes(v: __m256) -> [f32; 16] {
            let mut out = [0f32; 16];
            // SAFETY: as for `zero`; `out` holds at least 8 lanes.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
            out
        }
        #[inline(always)]
        fn reduce(v: __m256) -> f32 {
            // SAFETY: as for `zero`.
            unsafe {
                let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let hi = _mm_movehl_ps(x, x);
                let r0 = _mm_add_ps(x, hi);
                let r0_shuffled = _mm_shuffle_ps::<0b0001>(r0, r0);
                _mm_cvtss_f32(_mm_add_ss(r0, r0_shuffled))
            }
        }
    }

    /// One weight row dotted with `x` in the order of gemm 0.19's horizontal kernels
    /// (`horizontal_kernel!`, which it takes for products of at most 256 outputs), with
    /// `L::N` lanes: per block of 1024 inputs, one accumulator of fused multiply-adds over the
    /// block's whole vectors, then its last, short vector zero-filled; the lanes reduced as
    /// its `reduce_sum` does; the blocks' sums added left to right (each later pass is
    /// `1 · sum + dst`, one rounding).
    ///
    /// # Safety
    /// `w` and `x` valid for `k` reads; the features of `L` present (inlined into a
    /// `target_feature` kernel).
    #[inline(always)]
    unsafe fn hdot_in<L: Lanes, W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: every read is below `k` (blocks, whole vectors, then `tail`'s `len`).
        unsafe {
            let mut total = 0f32;
            let mut start = 0;
            while start < k {
                let kb = H_BLOCK.min(k - start);
                let (w, x) = (w.add(start), x.add(start));
                let mut acc = L::zero();
                let mut d = 0;
                while d + L::N <= kb {
                    let (xv, wv) = L::load(x.add(d), w.add(d));
                    acc = L::fma(xv, wv, acc);
                    d += L::N;
                }
                if d < kb {
                    let (xt, wt) = tail::<W, 16>(w.add(d), x.add(d), kb - d);
                    let (xv, wv) = L::load(xt.as_ptr(), wt.as_ptr());
                    acc = L::fma(xv, wv, acc);
                }
                let s = L::reduce(acc);
                total = if start == 0 { s } else { total + s };
                start += kb;
            }
            total
        }
    }

    /// [`hdot_in`] with `V4`'s 16 lanes.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn hdot<W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: as `hdot_in` requires; the features are enabled here.
        unsafe { hdot_in::<L16, W>(w, x, k) }
    }

    /// [`hdot_in`] with `V3`'s 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hdot_v3<W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: as `hdot_in` requires; the features are enabled here.
        unsafe { hdot_in::<L8, W>(w, x, k) }
    }

    /// One weight row dotted with `x` in gemm 0.19's one-row order (`gemv::
    /// mixed_gemv_rowmajor`) with `L::N` lanes: 8 accumulators over blocks of 8·N, combined
    /// as ((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7)); then blocks of N into that sum; then its
    /// lanes added left to right; then the remaining elements one fused multiply-add each.
    ///
    /// # Safety
    /// As [`hdot_in`].
    #[inline(always)]
    unsafe fn dot_in<L: Lanes, W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: every read is below `k` (whole blocks, whole vectors, then one by one).
        unsafe {
            let (k_block, k_lanes) = (k / (8 * L::N) * 8 * L::N, k / L::N * L::N);
            let mut a = [L::zero(); 8];
            let mut d = 0;
            while d < k_block {
                for (j, acc) in a.iter_mut().enumerate() {
                    let at = d + L::N * j;
                    let (xv, wv) = L::load(x.add(at), w.add(at));
                    *acc = L::fma(wv, xv, *acc);
                }
                d += 8 * L::N;
            }
            let pair = |i: usize| L::add(a[i], a[i + 1]);
            let mut acc = L::add(L::add(pair(0), pair(2)), L::add(pair(4), pair(6)));
            while d < k_lanes {
                let (xv, wv) = L::load(x.add(d), w.add(d));
                acc = L::fma(wv, xv, acc);
                d += L::N;
            }
            let lanes = L::lanes(acc);
            let mut s = lanes[0];
            for l in &lanes[1..L::N] {
                s += *l;
            }
            while d < k {
                s = (*w.add(d)).widen().mul_add(*x.add(d), s);
                d += 1;
            }
            s
        }
    }

    /// [`dot_in`] with `V4`'s 16 lanes.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dot<W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: as `dot_in` requires; the features are enabled here.
        unsafe { dot_in::<L16, W>(w, x, k) }
    }

    /// [`dot_in`] with `V3`'s 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_v3<W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: as `dot_in` requires; the features are enabled here.
        unsafe { dot_in::<L8, W>(w, x, k) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    /// gemm's 16-lane path is x86-64's: elsewhere candle's product is kept.
    pub(super) fn available() -> bool {
        false
    }

    pub(super) trait Widen: Copy + Send + Sync {}
    impl Widen for f32 {}
    impl Widen for half::bf16 {}
    impl Widen for half::f16 {}

    /// As on x86-64 (never chosen here).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Order {
        /// gemm's one-row path.
        OneRow,
        /// gemm's horizontal kernels.
        Horizontal,
    }

    pub(super) fn dot_rows<W: Widen>(_order: Order, _w: &[W], _x: &[f32], _out: &mut [f32]) {
        unreachable!("Gemv::new returns None where the kernel is unavailable")
    }
}

#[cfg(test)]
mod tests;
