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
//! and the 16-lane emulation gives candle's bits on an AVX-512 CPU; that the 8-lane emulation
//! gives candle's bits is read from gemm's source and is checked only on an AVX2-only CPU
//! (the same tests, where gemm takes `V3`). Rows are independent: how they are split over
//! threads never changes a bit. Elsewhere (fewer outputs, where gemm uses other kernels; CPUs
//! without AVX2/FMA/F16C; other devices) the caller keeps candle's product.

use candle_core::{DType, Device, Tensor};

/// Fewest outputs for which gemm takes its one-row (gemv) path: with `m · n ≤ 16 · 16` it uses
/// its small horizontal kernels instead, which sum in another order.
const GEMM_GEMV_MIN_OUTPUTS: usize = 16 * 16 + 1;

/// Fewest inputs for which gemm takes its one-row path (`k ≤ 2` goes to its outer-product
/// kernel).
const GEMM_GEMV_MIN_INPUTS: usize = 3;

/// A weight matrix (outputs, inputs) on the CPU in f32, bf16 or f16, for one-row products.
#[derive(Debug, Clone)]
pub(super) struct Gemv {
    weight: Tensor,
}

impl Gemv {
    /// The fast product for `weight` (outputs, inputs), when this CPU and shape allow one with
    /// candle's bits; `None` otherwise (keep candle's product).
    pub(super) fn new(weight: &Tensor) -> candle_core::Result<Option<Gemv>> {
        let supported = matches!(weight.dtype(), DType::F32 | DType::BF16 | DType::F16);
        let (n, k) = weight.dims2()?;
        if !weight.device().is_cpu()
            || !supported
            || n < GEMM_GEMV_MIN_OUTPUTS
            || k < GEMM_GEMV_MIN_INPUTS
            || !kernel::available()
        {
            return Ok(None);
        }
        Ok(Some(Gemv {
            weight: weight.contiguous()?,
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
        match self.weight.dtype() {
            DType::F32 => rows(&cpu.as_slice::<f32>()?[start..start + n * k], &xs, &mut out),
            DType::BF16 => rows(
                &cpu.as_slice::<half::bf16>()?[start..start + n * k],
                &xs,
                &mut out,
            ),
            DType::F16 => rows(
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
/// the rows run on the calling thread.
fn rows<W: kernel::Widen>(w: &[W], x: &[f32], out: &mut [f32]) {
    let k = x.len();
    if rayon::current_num_threads() <= 1 {
        kernel::dot_rows(w, x, out);
        return;
    }
    let dst = Disjoint(out.as_mut_ptr());
    let n = out.len();
    candle_core::utils::barrier_pool().execute_chunked(n, |r: std::ops::Range<usize>| {
        // SAFETY: the pool hands out disjoint ranges within 0..n, so each call writes rows
        // no other call touches, and `out` is not used otherwise until the pool returns.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.at(r.start), r.len()) };
        kernel::dot_rows(&w[r.start * k..r.end * k], x, o);
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

    /// `out[r] = w[r·k .. (r+1)·k] · x` for every r, with k = x.len().
    pub(super) fn dot_rows<W: Widen>(w: &[W], x: &[f32], out: &mut [f32]) {
        assert_eq!(
            w.len(),
            out.len() * x.len(),
            "weight rows and outputs disagree"
        );
        // SAFETY: each kernel runs only where its features were detected, and every row lies
        // within `w` (checked above).
        match level() {
            Some(Level::V4) => unsafe { dot_rows_v4(w, x, out) },
            Some(Level::V3) => unsafe { dot_rows_v3(w, x, out) },
            None => panic!("the one-row kernel needs AVX2, FMA and F16C at least"),
        }
    }

    /// [`dot_rows`] with the kernel of `level`, whatever this CPU's own level: for tests that
    /// hold each kernel to its emulation. Panics where the CPU cannot run that kernel.
    #[cfg(test)]
    pub(super) fn dot_rows_at<W: Widen>(level: Level, w: &[W], x: &[f32], out: &mut [f32]) {
        assert_eq!(w.len(), out.len() * x.len());
        let v3 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        match level {
            Level::V4 => {
                assert!(v3 && is_x86_feature_detected!("avx512f"));
                // SAFETY: the features were checked just above.
                unsafe { dot_rows_v4(w, x, out) }
            }
            Level::V3 => {
                assert!(v3);
                // SAFETY: the features were checked just above.
                unsafe { dot_rows_v3(w, x, out) }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dot_rows_v4<W: Widen>(w: &[W], x: &[f32], out: &mut [f32]) {
        let k = x.len();
        for (r, o) in out.iter_mut().enumerate() {
            // SAFETY: row r is w[r·k .. (r+1)·k], within `w` (checked by the caller).
            *o = unsafe { dot(w.as_ptr().add(r * k), x.as_ptr(), k) };
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_rows_v3<W: Widen>(w: &[W], x: &[f32], out: &mut [f32]) {
        let k = x.len();
        for (r, o) in out.iter_mut().enumerate() {
            // SAFETY: row r is w[r·k .. (r+1)·k], within `w` (checked by the caller).
            *o = unsafe { dot_v3(w.as_ptr().add(r * k), x.as_ptr(), k) };
        }
    }

    /// [`dot`] on gemm's `V3` type: the same order with 8 lanes (blocks of 64, then of 8).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_v3<W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: `w` and `x` are valid for `k` reads (the caller's row and input).
        unsafe {
            let k64 = k / 64 * 64;
            let k8 = k / 8 * 8;
            let mut a = [_mm256_setzero_ps(); 8];
            let mut d = 0;
            while d < k64 {
                for (j, acc) in a.iter_mut().enumerate() {
                    let at = d + 8 * j;
                    *acc = _mm256_fmadd_ps(W::load8(w.add(at)), _mm256_loadu_ps(x.add(at)), *acc);
                }
                d += 64;
            }
            let a0 = _mm256_add_ps(a[0], a[1]);
            let a2 = _mm256_add_ps(a[2], a[3]);
            let a4 = _mm256_add_ps(a[4], a[5]);
            let a6 = _mm256_add_ps(a[6], a[7]);
            let mut acc = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a4, a6));
            while d < k8 {
                acc = _mm256_fmadd_ps(W::load8(w.add(d)), _mm256_loadu_ps(x.add(d)), acc);
                d += 8;
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            let mut s = lanes[0];
            for l in &lanes[1..] {
                s += *l;
            }
            while d < k {
                s = (*w.add(d)).widen().mul_add(*x.add(d), s);
                d += 1;
            }
            s
        }
    }

    /// One weight row dotted with `x`, in gemm 0.19's one-row order (`gemv::
    /// mixed_gemv_rowmajor` on its `V4` type): 8 accumulators of 16 lanes over blocks of 128,
    /// combined as ((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7)); then blocks of 16 into that sum;
    /// then its lanes added left to right; then the remaining elements one fused multiply-add
    /// each.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn dot<W: Widen>(w: *const W, x: *const f32, k: usize) -> f32 {
        // SAFETY: `w` and `x` are valid for `k` reads (the caller's row and input).
        unsafe {
            let k128 = k / 128 * 128;
            let k16 = k / 16 * 16;
            let mut a = [_mm512_setzero_ps(); 8];
            let mut d = 0;
            while d < k128 {
                for (j, acc) in a.iter_mut().enumerate() {
                    let at = d + 16 * j;
                    *acc = _mm512_fmadd_ps(W::load16(w.add(at)), _mm512_loadu_ps(x.add(at)), *acc);
                }
                d += 128;
            }
            let a0 = _mm512_add_ps(a[0], a[1]);
            let a2 = _mm512_add_ps(a[2], a[3]);
            let a4 = _mm512_add_ps(a[4], a[5]);
            let a6 = _mm512_add_ps(a[6], a[7]);
            let mut acc = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a4, a6));
            while d < k16 {
                acc = _mm512_fmadd_ps(W::load16(w.add(d)), _mm512_loadu_ps(x.add(d)), acc);
                d += 16;
            }
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
            let mut s = lanes[0];
            for l in &lanes[1..] {
                s += *l;
            }
            while d < k {
                s = (*w.add(d)).widen().mul_add(*x.add(d), s);
                d += 1;
            }
            s
        }
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

    pub(super) fn dot_rows<W: Widen>(_w: &[W], _x: &[f32], _out: &mut [f32]) {
        unreachable!("Gemv::new returns None where the kernel is unavailable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        // A fixed xorshift stream: the same values on every run.
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let n = shape.0 * shape.1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    }

    /// candle's product as the decoder computed it before: f32 and bf16 through the weight
    /// widened to f32 (the result rounded to the run dtype), f16 through candle's f16 product.
    fn candle_product(w: &Tensor, x: &Tensor) -> Tensor {
        if w.dtype() == DType::F16 {
            return candle_nn::Linear::new(w.clone(), None).forward(x).unwrap();
        }
        let wide = candle_nn::Linear::new(w.to_dtype(DType::F32).unwrap(), None);
        wide.forward(&x.to_dtype(DType::F32).unwrap())
            .unwrap()
            .to_dtype(x.dtype())
            .unwrap()
    }

    #[test]
    fn one_row_product_is_bit_identical_to_candle() {
        if !kernel::available() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C (candle's product is used)");
            return;
        }
        if forced_below_this_cpu() {
            eprintln!("skipped: DRIFTSWEEP_GEMV=avx2 on an AVX-512 CPU, where gemm takes V4");
            return;
        }
        // SmolLM2's and the built-in model's shapes, and ones that exercise each tail: no
        // 128-block, 16-blocks only, trailing single elements.
        let shapes = [
            (1536, 576),
            (576, 1536),
            (49152 / 8, 576),
            (352, 128),
            (300, 100),
            (257, 7),
            (1000, 3),
            (513, 129),
        ];
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for (i, &(n, k)) in shapes.iter().enumerate() {
                let w = random((n, k), 2 * i as u64 + 1).to_dtype(dtype).unwrap();
                let x = random((1, k), 2 * i as u64 + 2)
                    .reshape((1, 1, k))
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let fast = Gemv::new(&w).unwrap().expect("a shape gemm's gemv takes");
                let ours = fast.forward(&x).unwrap();
                let theirs = candle_product(&w, &x);
                assert_eq!(ours.dims(), theirs.dims());
                assert_eq!(ours.dtype(), dtype);
                assert_eq!(
                    bits(&ours),
                    bits(&theirs),
                    "{dtype:?} {n}×{k}: one-row product differs from candle's"
                );
            }
        }
    }

    /// Whether `DRIFTSWEEP_GEMV=avx2` put the 8-lane kernel on a CPU whose gemm takes V4.
    #[cfg(target_arch = "x86_64")]
    fn forced_below_this_cpu() -> bool {
        kernel::level() == Some(kernel::Level::V3) && is_x86_feature_detected!("avx512f")
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn forced_below_this_cpu() -> bool {
        false
    }

    /// gemm 0.19's one-row order (`mixed_gemv_rowmajor`) for `lanes`-wide vectors, one scalar
    /// operation at a time: 8 accumulators over blocks of 8·lanes, combined pairwise, then
    /// blocks of `lanes`, then the lanes left to right, then one fused multiply-add per
    /// remaining element. The specification both kernels are held to.
    fn emulate(w: &[f32], x: &[f32], lanes: usize) -> f32 {
        let k = x.len();
        let (k_block, k_lanes) = (k / (8 * lanes) * 8 * lanes, k / lanes * lanes);
        let mut acc = vec![vec![0f32; lanes]; 8];
        let mut d = 0;
        while d < k_block {
            for (j, a) in acc.iter_mut().enumerate() {
                for (l, v) in a.iter_mut().enumerate() {
                    let i = d + j * lanes + l;
                    *v = w[i].mul_add(x[i], *v);
                }
            }
            d += 8 * lanes;
        }
        let add =
            |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(p, q)| p + q).collect() };
        let (a01, a23) = (add(&acc[0], &acc[1]), add(&acc[2], &acc[3]));
        let (a45, a67) = (add(&acc[4], &acc[5]), add(&acc[6], &acc[7]));
        let mut a = add(&add(&a01, &a23), &add(&a45, &a67));
        while d < k_lanes {
            for (l, v) in a.iter_mut().enumerate() {
                *v = w[d + l].mul_add(x[d + l], *v);
            }
            d += lanes;
        }
        let mut s = a[0];
        for v in &a[1..] {
            s += v;
        }
        while d < k {
            s = w[d].mul_add(x[d], s);
            d += 1;
        }
        s
    }

    /// Shapes that exercise every part of the order at both widths: no full block, blocks
    /// of lanes only, trailing single elements.
    const ORDER_SHAPES: [(usize, usize); 6] = [
        (300, 576),
        (257, 7),
        (260, 100),
        (270, 129),
        (258, 1536),
        (259, 63),
    ];

    /// (widened weights, input, the emulated outputs at `lanes`) for a shape and dtype.
    fn emulated(
        dtype: DType,
        (n, k): (usize, usize),
        seed: u64,
        lanes: usize,
    ) -> (Tensor, Vec<f32>, Vec<u32>) {
        let w = random((n, k), seed).to_dtype(dtype).unwrap();
        let x = random((1, k), seed + 1)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let wide = w.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        let out = wide
            .iter()
            .map(|row| emulate(row, &x, lanes).to_bits())
            .collect();
        (w, x, out)
    }

    /// Each SIMD kernel this CPU can run gives its emulation's bits, in every dtype: the
    /// 16-lane one where AVX-512 is present, the 8-lane one wherever AVX2 is (on an AVX-512
    /// CPU too, which runs AVX2 code).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_kernel_follows_its_emulation_bit_for_bit() {
        use kernel::Level;
        let v4 = is_x86_feature_detected!("avx512f") && kernel::available();
        let v3 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        for (level, lanes, here) in [(Level::V4, 16, v4), (Level::V3, 8, v3)] {
            if !here {
                eprintln!("{level:?} not runnable here: not checked");
                continue;
            }
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                for (i, &shape) in ORDER_SHAPES.iter().enumerate() {
                    let (w, x, want) = emulated(dtype, shape, 40 + 2 * i as u64, lanes);
                    let mut out = vec![0f32; shape.0];
                    let (storage, _) = w.storage_and_layout();
                    let candle_core::Storage::Cpu(cpu) = &*storage else {
                        unreachable!()
                    };
                    match dtype {
                        DType::F32 => {
                            kernel::dot_rows_at(level, cpu.as_slice::<f32>().unwrap(), &x, &mut out)
                        }
                        DType::BF16 => kernel::dot_rows_at(
                            level,
                            cpu.as_slice::<half::bf16>().unwrap(),
                            &x,
                            &mut out,
                        ),
                        _ => kernel::dot_rows_at(
                            level,
                            cpu.as_slice::<half::f16>().unwrap(),
                            &x,
                            &mut out,
                        ),
                    }
                    let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "{level:?} {dtype:?} {shape:?}");
                }
            }
        }
    }

    /// The 16-lane emulation is candle's one-row product on this CPU where gemm takes its
    /// AVX-512 kernels; the 8-lane emulation is not (negative control: the two orders are
    /// told apart). The 8-lane one matches candle only where gemm takes V3: an AVX2-only CPU.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_emulation_is_candles_product_here() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: gemm takes V4 only on an AVX-512 CPU");
            return;
        }
        let mut eight_lanes_differ = 0;
        for dtype in [DType::F32, DType::BF16] {
            for (i, &shape) in ORDER_SHAPES.iter().enumerate() {
                let (w, x, want16) = emulated(dtype, shape, 80 + 2 * i as u64, 16);
                let (_, _, want8) = emulated(dtype, shape, 80 + 2 * i as u64, 8);
                let x = Tensor::from_vec(x, (1, 1, shape.1), &Device::Cpu).unwrap();
                // f32 accumulation, read back before the run dtype's rounding.
                let theirs = candle_nn::Linear::new(w.to_dtype(DType::F32).unwrap(), None)
                    .forward(&x)
                    .unwrap();
                let theirs = bits(&theirs);
                assert_eq!(theirs, want16, "{dtype:?} {shape:?}");
                eight_lanes_differ += theirs.iter().zip(&want8).filter(|(a, b)| a != b).count();
            }
        }
        assert!(
            eight_lanes_differ > 0,
            "the 8- and 16-lane orders agreed everywhere"
        );
    }

    #[test]
    fn thread_split_keeps_the_bits() {
        if !kernel::available() {
            return;
        }
        let w = random((1536, 576), 7).to_dtype(DType::BF16).unwrap();
        let x = random((1, 576), 8);
        let fast = Gemv::new(&w).unwrap().unwrap();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let a = one.install(|| fast.forward(&x).unwrap());
        let b = three.install(|| fast.forward(&x).unwrap());
        assert_eq!(bits(&a), bits(&b));
    }

    /// Negative control: the bit comparison above can fail. A dot product summed in plain
    /// left-to-right order (another order than gemm's) differs from candle's in some outputs.
    #[test]
    fn another_summation_order_differs() {
        let (n, k) = (1536, 576);
        let w = random((n, k), 11);
        let x = random((1, k), 12);
        let theirs = bits(&candle_product(&w, &x.reshape((1, 1, k)).unwrap()));
        let wv = w.to_vec2::<f32>().unwrap();
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let naive: Vec<u32> = wv
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&xv)
                    .fold(0f32, |s, (a, b)| a.mul_add(*b, s))
                    .to_bits()
            })
            .collect();
        let differing = naive.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert!(differing > n / 10, "only {differing} of {n} outputs differ");
    }

    #[test]
    fn small_or_narrow_weights_keep_candles_product() {
        // gemm's horizontal kernels (≤ 256 outputs) and outer product (≤ 2 inputs).
        assert!(Gemv::new(&random((256, 576), 1)).unwrap().is_none());
        assert!(Gemv::new(&random((1536, 2), 1)).unwrap().is_none());
        let w = random((512, 64), 3);
        if let Some(g) = Gemv::new(&w).unwrap() {
            let err = g.forward(&random((2, 64), 4)).unwrap_err();
            assert!(err.to_string().contains("one-row product"), "{err}");
        }
    }
}
