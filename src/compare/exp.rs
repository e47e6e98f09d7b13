//! exp(x) for the comparator's softmax sums, four or eight lanes at a time, with the bits of
//! the C library's `exp` (what `f64::exp` calls on Linux).
//!
//! Why: the comparator's KL and Δp sum `exp(x − max)` over every logit of a row, twice (once per
//! run), in f64. One call to the C library per value held the comparator at under 1 GB/s.
//! Result directories store those sums' f32 roundings, and `driftsweep verify` asks for them
//! bit for bit, so a faster exp must give the library's bits, not merely close ones.
//!
//! How: glibc's `exp` (2.28 and later, from ARM's optimized-routines) is table-driven:
//! x = k·ln2/128 + r, exp(x) = 2^(k/128) · exp(r), with 2^(k/128) from a 128-entry table and
//! exp(r) − 1 a degree-5 polynomial. Its x86-64 build for CPUs with FMA fuses the products
//! into the following sums; `exp_model` (tests) is that sequence, one operation at a time, and the
//! AVX2 kernel ([`exp_diffs`]) the same operations in four lanes, the AVX-512 one ([`avx512`])
//! in eight. The constants and the table
//! are the library's own (read out of glibc 2.36's `__exp_data`).
//!
//! Nothing here is trusted blindly: [`Level::available`] compares each kernel with `f64::exp`
//! on a few thousand values, once per process, and the comparator calls the library per value
//! wherever they disagree (another C library, another build) or the CPU lacks AVX2 and FMA.

use std::sync::OnceLock;

/// 128 / ln 2.
const INV_LN2_N: f64 = f64::from_bits(0x4067_1547_652b_82fe);
/// −ln 2 / 128, high part (its low bits zero, so k · it is exact).
const NEG_LN2_HI_N: f64 = f64::from_bits(0xbf76_2e42_fefa_0000);
/// −ln 2 / 128, low part.
const NEG_LN2_LO_N: f64 = f64::from_bits(0xbd0c_f79a_bc9e_3b3a);
/// Polynomial coefficients of exp(r) − 1 − r, r² first.
const C2: f64 = f64::from_bits(0x3fdf_ffff_ffff_fdbd);
const C3: f64 = f64::from_bits(0x3fc5_5555_5555_543c);
const C4: f64 = f64::from_bits(0x3fa5_5555_cf17_2b91);
const C5: f64 = f64::from_bits(0x3f81_1111_67a4_d017);
/// 1.5 · 2^52: adding it rounds to an integer held in the low mantissa bits.
const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);

/// Inputs in (−512, −2^−54] and 0 take the library's main path; others (its special cases:
/// |x| ≥ 512, tiny |x|) go to the library itself.
const MAIN_PATH_LOW: f64 = -512.0;
const TINY: f64 = 5.551_115_123_125_783e-17; // 2^-54

/// For i < 128: `TAB[2i]` the tail of 2^(i/128) and `TAB[2i + 1]` its bits minus i << 45.
#[rustfmt::skip]
static TAB: [u64; 256] = [
    0x0000000000000000, 0x3ff0000000000000, 0x3c9b3b4f1a88bf6e, 0x3feff63da9fb3335,
    0xbc7160139cd8dc5d, 0x3fefec9a3e778061, 0xbc905e7a108766d1, 0x3fefe315e86e7f85,
    0x3c8cd2523567f613, 0x3fefd9b0d3158574, 0xbc8bce8023f98efa, 0x3fefd06b29ddf6de,
    0x3c60f74e61e6c861, 0x3fefc74518759bc8, 0x3c90a3e45b33d399, 0x3fefbe3ecac6f383,
    0x3c979aa65d837b6d, 0x3fefb5586cf9890f, 0x3c8eb51a92fdeffc, 0x3fefac922b7247f7,
    0x3c3ebe3d702f9cd1, 0x3fefa3ec32d3d1a2, 0xbc6a033489906e0b, 0x3fef9b66affed31b,
    0xbc9556522a2fbd0e, 0x3fef9301d0125b51, 0xbc5080ef8c4eea55, 0x3fef8abdc06c31cc,
    0xbc91c923b9d5f416, 0x3fef829aaea92de0, 0x3c80d3e3e95c55af, 0x3fef7a98c8a58e51,
    0xbc801b15eaa59348, 0x3fef72b83c7d517b, 0xbc8f1ff055de323d, 0x3fef6af9388c8dea,
    0x3c8b898c3f1353bf, 0x3fef635beb6fcb75, 0xbc96d99c7611eb26, 0x3fef5be084045cd4,
    0x3c9aecf73e3a2f60, 0x3fef54873168b9aa, 0xbc8fe782cb86389d, 0x3fef4d5022fcd91d,
    0x3c8a6f4144a6c38d, 0x3fef463b88628cd6, 0x3c807a05b0e4047d, 0x3fef3f49917ddc96,
    0x3c968efde3a8a894, 0x3fef387a6e756238, 0x3c875e18f274487d, 0x3fef31ce4fb2a63f,
    0x3c80472b981fe7f2, 0x3fef2b4565e27cdd, 0xbc96b87b3f71085e, 0x3fef24dfe1f56381,
    0x3c82f7e16d09ab31, 0x3fef1e9df51fdee1, 0xbc3d219b1a6fbffa, 0x3fef187fd0dad990,
    0x3c8b3782720c0ab4, 0x3fef1285a6e4030b, 0x3c6e149289cecb8f, 0x3fef0cafa93e2f56,
    0x3c834d754db0abb6, 0x3fef06fe0a31b715, 0x3c864201e2ac744c, 0x3fef0170fc4cd831,
    0x3c8fdd395dd3f84a, 0x3feefc08b26416ff, 0xbc86a3803b8e5b04, 0x3feef6c55f929ff1,
    0xbc924aedcc4b5068, 0x3feef1a7373aa9cb, 0xbc9907f81b512d8e, 0x3feeecae6d05d866,
    0xbc71d1e83e9436d2, 0x3feee7db34e59ff7, 0xbc991919b3ce1b15, 0x3feee32dc313a8e5,
    0x3c859f48a72a4c6d, 0x3feedea64c123422, 0xbc9312607a28698a, 0x3feeda4504ac801c,
    0xbc58a78f4817895b, 0x3feed60a21f72e2a, 0xbc7c2c9b67499a1b, 0x3feed1f5d950a897,
    0x3c4363ed60c2ac11, 0x3feece086061892d, 0x3c9666093b0664ef, 0x3feeca41ed1d0057,
    0x3c6ecce1daa10379, 0x3feec6a2b5c13cd0, 0x3c93ff8e3f0f1230, 0x3feec32af0d7d3de,
    0x3c7690cebb7aafb0, 0x3feebfdad5362a27, 0x3c931dbdeb54e077, 0x3feebcb299fddd0d,
    0xbc8f94340071a38e, 0x3feeb9b2769d2ca7, 0xbc87deccdc93a349, 0x3feeb6daa2cf6642,
    0xbc78dec6bd0f385f, 0x3feeb42b569d4f82, 0xbc861246ec7b5cf6, 0x3feeb1a4ca5d920f,
    0x3c93350518fdd78e, 0x3feeaf4736b527da, 0x3c7b98b72f8a9b05, 0x3feead12d497c7fd,
    0x3c9063e1e21c5409, 0x3feeab07dd485429, 0x3c34c7855019c6ea, 0x3feea9268a5946b7,
    0x3c9432e62b64c035, 0x3feea76f15ad2148, 0xbc8ce44a6199769f, 0x3feea5e1b976dc09,
    0xbc8c33c53bef4da8, 0x3feea47eb03a5585, 0xbc845378892be9ae, 0x3feea34634ccc320,
    0xbc93cedd78565858, 0x3feea23882552225, 0x3c5710aa807e1964, 0x3feea155d44ca973,
    0xbc93b3efbf5e2228, 0x3feea09e667f3bcd, 0xbc6a12ad8734b982, 0x3feea012750bdabf,
    0xbc6367efb86da9ee, 0x3fee9fb23c651a2f, 0xbc80dc3d54e08851, 0x3fee9f7df9519484,
    0xbc781f647e5a3ecf, 0x3fee9f75e8ec5f74, 0xbc86ee4ac08b7db0, 0x3fee9f9a48a58174,
    0xbc8619321e55e68a, 0x3fee9feb564267c9, 0x3c909ccb5e09d4d3, 0x3feea0694fde5d3f,
    0xbc7b32dcb94da51d, 0x3feea11473eb0187, 0x3c94ecfd5467c06b, 0x3feea1ed0130c132,
    0x3c65ebe1abd66c55, 0x3feea2f336cf4e62, 0xbc88a1c52fb3cf42, 0x3feea427543e1a12,
    0xbc9369b6f13b3734, 0x3feea589994cce13, 0xbc805e843a19ff1e, 0x3feea71a4623c7ad,
    0xbc94d450d872576e, 0x3feea8d99b4492ed, 0x3c90ad675b0e8a00, 0x3feeaac7d98a6699,
    0x3c8db72fc1f0eab4, 0x3feeace5422aa0db, 0xbc65b6609cc5e7ff, 0x3feeaf3216b5448c,
    0x3c7bf68359f35f44, 0x3feeb1ae99157736, 0xbc93091fa71e3d83, 0x3feeb45b0b91ffc6,
    0xbc5da9b88b6c1e29, 0x3feeb737b0cdc5e5, 0xbc6c23f97c90b959, 0x3feeba44cbc8520f,
    0xbc92434322f4f9aa, 0x3feebd829fde4e50, 0xbc85ca6cd7668e4b, 0x3feec0f170ca07ba,
    0x3c71affc2b91ce27, 0x3feec49182a3f090, 0x3c6dd235e10a73bb, 0x3feec86319e32323,
    0xbc87c50422622263, 0x3feecc667b5de565, 0x3c8b1c86e3e231d5, 0x3feed09bec4a2d33,
    0xbc91bbd1d3bcbb15, 0x3feed503b23e255d, 0x3c90cc319cee31d2, 0x3feed99e1330b358,
    0x3c8469846e735ab3, 0x3feede6b5579fdbf, 0xbc82dfcd978e9db4, 0x3feee36bbfd3f37a,
    0x3c8c1a7792cb3387, 0x3feee89f995ad3ad, 0xbc907b8f4ad1d9fa, 0x3feeee07298db666,
    0xbc55c3d956dcaeba, 0x3feef3a2b84f15fb, 0xbc90a40e3da6f640, 0x3feef9728de5593a,
    0xbc68d6f438ad9334, 0x3feeff76f2fb5e47, 0xbc91eee26b588a35, 0x3fef05b030a1064a,
    0x3c74ffd70a5fddcd, 0x3fef0c1e904bc1d2, 0xbc91bdfbfa9298ac, 0x3fef12c25bd71e09,
    0x3c736eae30af0cb3, 0x3fef199bdd85529c, 0x3c8ee3325c9ffd94, 0x3fef20ab5fffd07a,
    0x3c84e08fd10959ac, 0x3fef27f12e57d14b, 0x3c63cdaf384e1a67, 0x3fef2f6d9406e7b5,
    0x3c676b2c6c921968, 0x3fef3720dcef9069, 0xbc808a1883ccb5d2, 0x3fef3f0b555dc3fa,
    0xbc8fad5d3ffffa6f, 0x3fef472d4a07897c, 0xbc900dae3875a949, 0x3fef4f87080d89f2,
    0x3c74a385a63d07a7, 0x3fef5818dcfba487, 0xbc82919e2040220f, 0x3fef60e316c98398,
    0x3c8e5a50d5c192ac, 0x3fef69e603db3285, 0x3c843a59ac016b4b, 0x3fef7321f301b460,
    0xbc82d52107b43e1f, 0x3fef7c97337b9b5f, 0xbc892ab93b470dc9, 0x3fef864614f5a129,
    0x3c74b604603a88d3, 0x3fef902ee78b3ff6, 0x3c83c5ec519d7271, 0x3fef9a51fbc74c83,
    0xbc8ff7128fd391f0, 0x3fefa4afa2a490da, 0xbc8dae98e223747d, 0x3fefaf482d8e67f1,
    0x3c8ec3bc41aa2008, 0x3fefba1bee615a27, 0x3c842b94c3a9eb32, 0x3fefc52b376bba97,
    0x3c8a64a931d185ee, 0x3fefd0765b6e4540, 0xbc8e37bae43be3ed, 0x3fefdbfdad9cbe14,
    0x3c77893b4d91cd9d, 0x3fefe7c1819e90d8, 0x3c5305c14160cc89, 0x3feff3c22b8f71f1,
];

/// glibc's exp(x) for x on its main path, as its FMA build evaluates it: the scalar model of
/// the vector kernel, operation for operation (tests hold both to `f64::exp`).
#[cfg(test)]
fn exp_model(x: f64) -> f64 {
    if !on_main_path(x) {
        return x.exp();
    }
    let kd = INV_LN2_N.mul_add(x, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = kd.mul_add(NEG_LN2_LO_N, kd.mul_add(NEG_LN2_HI_N, x));
    let idx = 2 * (ki % 128) as usize;
    let tail = f64::from_bits(TAB[idx]);
    let scale = f64::from_bits(TAB[idx + 1].wrapping_add(ki << 45));
    let r2 = r * r;
    let low = r2.mul_add(r.mul_add(C3, C2), tail + r);
    let tmp = (r2 * r2).mul_add(r.mul_add(C5, C4), low);
    scale.mul_add(tmp, scale)
}

/// Whether the library computes exp(x) on its main path (the only one the kernel follows).
#[cfg(test)]
fn on_main_path(x: f64) -> bool {
    x == 0.0 || (x > MAIN_PATH_LOW && x.abs() >= TINY && x < 512.0)
}

/// Whether exp(f64(x) − m) takes the library's main path for every f32 `x` of `row`, whose
/// minimum is `min` and whose maximum, widened, is `m`: then the kernel needs no per-lane
/// check. Below: f64(x) − m ≥ f64(min) − m (rounding is monotone) > −512. Tiny: for x ≠ m,
/// where |m| ≥ 2^−29 either |x| < |m|/2 and |x − m| > 2^−30, or both are f32 normals of
/// exponent ≥ −30, whose difference is a nonzero multiple of 2^−53 ≥ 2^−54; x = m gives 0, on
/// the path. A maximum of 0 (rows of a few distinct values have one) gives x itself: the row
/// is read once more to see that no x is tiny. Other small maxima: checked per lane.
pub(super) fn all_on_main_path(row: &[f32], min: f32, m: f64) -> bool {
    if f64::from(min) - m <= MAIN_PATH_LOW {
        return false;
    }
    if m.abs() >= 2f64.powi(-29) {
        return true;
    }
    // |f64(x)| ≥ 2^−54 exactly when |x| ≥ 2^−54 in f32 (a normal there); no early exit, so
    // that the loop runs in vector lanes.
    let tiny = TINY as f32;
    m == 0.0
        && row.chunks(256).all(|c| {
            c.iter()
                .fold(true, |ok, &x| ok & ((x == 0.0) | (x.abs() >= tiny)))
        })
}

/// The kernels the comparator may run, slowest first. Every level gives the same bits (the C
/// library's exp, every sum in the same order); they differ in speed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    /// The library's exp value by value, one row at a time.
    Scalar,
    /// glibc's exp in four AVX2 + FMA lanes, one row at a time.
    Avx2,
    /// glibc's exp in eight AVX-512 lanes, and eight rows at a time, one lane per row
    /// (`row_group`); the rows that fill no eight as at [`Level::Avx2`].
    Avx512,
}

impl Level {
    /// Every level this CPU runs with the library's bits, slowest first: a kernel whose
    /// self-check against `f64::exp` fails here (another C library, another build) is not
    /// offered. Checked once per process.
    pub(super) fn available() -> &'static [Level] {
        static LEVELS: OnceLock<Vec<Level>> = OnceLock::new();
        LEVELS.get_or_init(|| {
            let mut levels = vec![Level::Scalar];
            if avx2_available() && kernel_matches_library(Level::Avx2) {
                levels.push(Level::Avx2);
                if avx512_available() && kernel_matches_library(Level::Avx512) {
                    levels.push(Level::Avx512);
                }
            }
            levels
        })
    }

    /// The fastest available level, or the available one that `DRIFTSWEEP_COMPARE` names
    /// (`scalar`, `avx2`, `avx512`: to time one against another with the same binary).
    pub(super) fn best() -> Level {
        static BEST: OnceLock<Level> = OnceLock::new();
        *BEST.get_or_init(|| {
            let levels = Level::available();
            let named = std::env::var("DRIFTSWEEP_COMPARE").ok().and_then(|v| {
                levels
                    .iter()
                    .copied()
                    .find(|l| format!("{l:?}").eq_ignore_ascii_case(&v))
            });
            named.unwrap_or(levels[levels.len() - 1])
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    // VL: the group kernel's eight-lane f32 compares and compress (`row_group`).
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_available() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_available() -> bool {
    false
}

/// The kernel of `level` against the library on values spread over the range the
/// comparator feeds it (logit minus row maximum: 0 down to a few hundred below), and a few
/// of the library's special cases.
fn kernel_matches_library(level: Level) -> bool {
    let mut xs: Vec<f32> = (0..4096u32)
        .map(|i| -((i.wrapping_mul(2_654_435_761) >> 8) as f32) / (1u32 << 24) as f32 * 80.0)
        .collect();
    xs.extend([0.0, -0.0, -1e-30, -600.0, -745.5, -1e30, f32::MIN]);
    let mut out = vec![0.0; xs.len()];
    exp_diffs_with(&xs, 0.0, &mut out, level);
    xs.iter()
        .zip(&out)
        .all(|(&x, &e)| e.to_bits() == f64::from(x).exp().to_bits())
}

/// `out[i] = exp(xs[i] − m)` in f64, with `f64::exp`'s bits: the kernel of `level`, which
/// must be one of [`Level::available`]. `out` is at least as long as `xs`.
pub(super) fn exp_diffs(xs: &[f32], m: f64, out: &mut [f64], level: Level) {
    debug_assert!(Level::available().contains(&level));
    exp_diffs_with(xs, m, out, level);
}

/// [`exp_diffs`] at `level` whether or not its self-check passed (the self-check itself).
fn exp_diffs_with(xs: &[f32], m: f64, out: &mut [f64], level: Level) {
    let out = &mut out[..xs.len()];
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: a level above Scalar is asked for only where its features were detected.
        Level::Avx512 if avx2_available() && avx512_available() => {
            return unsafe { avx512::exp_diffs(xs, m, out) };
        }
        Level::Avx2 | Level::Avx512 if avx2_available() => {
            return unsafe { kernel::exp_diffs(xs, m, out) };
        }
        _ => {}
    }
    let _ = level;
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = (f64::from(x) - m).exp();
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::*;

    /// [`super::exp_diffs`] in four lanes; lanes off the library's main path, and the last
    /// values that fill no four, go to the library.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp_diffs(xs: &[f32], m: f64, out: &mut [f64]) {
        let quads = xs.len() / 4;
        let mv = _mm256_set1_pd(m);
        for q in 0..quads {
            let i = 4 * q;
            // SAFETY: i + 4 ≤ xs.len() = out.len(); unaligned loads and stores.
            unsafe {
                let x = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(xs.as_ptr().add(i))), mv);
                _mm256_storeu_pd(out.as_mut_ptr().add(i), exp4(x));
                let off = off_main_path(x);
                if off != 0 {
                    for l in 0..4 {
                        if off & (1 << l) != 0 {
                            out[i + l] = (f64::from(xs[i + l]) - m).exp();
                        }
                    }
                }
            }
        }
        for i in 4 * quads..xs.len() {
            out[i] = (f64::from(xs[i]) - m).exp();
        }
    }

    /// A bit per lane whose value is off the library's main path (see `on_main_path`).
    #[target_feature(enable = "avx2,fma")]
    fn off_main_path(x: __m256d) -> i32 {
        let low = _mm256_cmp_pd::<_CMP_LE_OQ>(x, _mm256_set1_pd(MAIN_PATH_LOW));
        let high = _mm256_cmp_pd::<_CMP_GE_OQ>(x, _mm256_set1_pd(512.0));
        let abs = _mm256_andnot_pd(_mm256_set1_pd(-0.0), x);
        let tiny = _mm256_and_pd(
            _mm256_cmp_pd::<_CMP_LT_OQ>(abs, _mm256_set1_pd(TINY)),
            _mm256_cmp_pd::<_CMP_NEQ_UQ>(x, _mm256_setzero_pd()),
        );
        // NaN compares false everywhere above: flag it too.
        let nan = _mm256_cmp_pd::<_CMP_UNORD_Q>(x, x);
        _mm256_movemask_pd(_mm256_or_pd(
            _mm256_or_pd(low, high),
            _mm256_or_pd(tiny, nan),
        ))
    }

    /// `exp_model`'s operations in four lanes.
    #[target_feature(enable = "avx2,fma")]
    fn exp4(x: __m256d) -> __m256d {
        let kd = _mm256_fmadd_pd(_mm256_set1_pd(INV_LN2_N), x, _mm256_set1_pd(SHIFT));
        let ki = _mm256_castpd_si256(kd);
        let kd = _mm256_sub_pd(kd, _mm256_set1_pd(SHIFT));
        let r = _mm256_fmadd_pd(kd, _mm256_set1_pd(NEG_LN2_HI_N), x);
        let r = _mm256_fmadd_pd(kd, _mm256_set1_pd(NEG_LN2_LO_N), r);
        // 2 · (ki mod 128): the index of the tail; the scale's bits follow it.
        let idx = _mm256_slli_epi64::<1>(_mm256_and_si256(ki, _mm256_set1_epi64x(127)));
        // SAFETY: idx + 1 ≤ 255 < TAB.len().
        let (tail, sbits) = unsafe {
            (
                _mm256_i64gather_pd::<8>(TAB.as_ptr().cast::<f64>(), idx),
                _mm256_i64gather_epi64::<8>(TAB.as_ptr().add(1).cast::<i64>(), idx),
            )
        };
        let scale = _mm256_castsi256_pd(_mm256_add_epi64(sbits, _mm256_slli_epi64::<45>(ki)));
        let r2 = _mm256_mul_pd(r, r);
        let p23 = _mm256_fmadd_pd(r, _mm256_set1_pd(C3), _mm256_set1_pd(C2));
        let p45 = _mm256_fmadd_pd(r, _mm256_set1_pd(C5), _mm256_set1_pd(C4));
        let low = _mm256_fmadd_pd(r2, p23, _mm256_add_pd(tail, r));
        let tmp = _mm256_fmadd_pd(_mm256_mul_pd(r2, r2), p45, low);
        _mm256_fmadd_pd(scale, tmp, scale)
    }
}

/// The eight-lane kernel: `exp_model`'s operations again, in AVX-512 (the same instructions,
/// twice the lanes; every operation is correctly rounded or exact in both, so the bits agree).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// [`super::exp_diffs`] in eight lanes; the last values that fill no eight go to the
    /// library.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn exp_diffs(xs: &[f32], m: f64, out: &mut [f64]) {
        let octs = xs.len() / 8;
        let mv = _mm512_set1_pd(m);
        for o in 0..octs {
            let i = 8 * o;
            // SAFETY: i + 8 ≤ xs.len() = out.len(); unaligned loads and stores.
            unsafe {
                let x = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(xs.as_ptr().add(i))), mv);
                _mm512_storeu_pd(out.as_mut_ptr().add(i), exp8(x));
            }
        }
        for i in 8 * octs..xs.len() {
            out[i] = (f64::from(xs[i]) - m).exp();
        }
    }

    /// exp of eight lanes with the library's bits: the kernel on the library's main path,
    /// the library itself for the lanes off it.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    pub(crate) fn exp8(x: __m512d) -> __m512d {
        let e = exp8_main(x);
        let off = off_main_path(x);
        if off == 0 {
            return e;
        }
        let (mut xs, mut es) = ([0f64; 8], [0f64; 8]);
        // SAFETY: both arrays hold eight values.
        unsafe {
            _mm512_storeu_pd(xs.as_mut_ptr(), x);
            _mm512_storeu_pd(es.as_mut_ptr(), e);
        }
        for l in 0..8 {
            if off & (1 << l) != 0 {
                es[l] = xs[l].exp();
            }
        }
        // SAFETY: as above.
        unsafe { _mm512_loadu_pd(es.as_ptr()) }
    }

    /// A bit per lane whose value is off the library's main path (see `on_main_path`): |x| of
    /// 512 or more, tiny but not 0, or NaN (the ordered comparisons are false for it).
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    fn off_main_path(x: __m512d) -> u8 {
        let abs = _mm512_abs_pd(x);
        let in_range = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(abs, _mm512_set1_pd(512.0));
        let not_tiny = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(abs, _mm512_set1_pd(TINY))
            | _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(x, _mm512_setzero_pd());
        !(in_range & not_tiny)
    }

    /// The table's tail and scale bits of eight lanes, from `idx` = 2i for entry i. Both halves
    /// of an entry lie side by side: one 16-byte load per lane, then the halves sorted into
    /// two vectors (on Zen 4 this is about 1.5 times as fast as two eight-lane gathers).
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    fn lookup(idx: __m512i) -> (__m512d, __m512i) {
        let mut at = [0i64; 8];
        // SAFETY: eight values; every index is 2i with i < 128, so the 16-byte load at TAB[2i]
        // ends within TAB (256 entries).
        unsafe {
            _mm512_storeu_si512(at.as_mut_ptr().cast(), idx);
            let entry = |l: usize| _mm_loadu_pd(TAB.as_ptr().add(at[l] as usize).cast::<f64>());
            let pair = |l: usize| {
                _mm256_insertf128_pd::<1>(_mm256_castpd128_pd256(entry(l)), entry(l + 1))
            };
            // Lanes 0–3, then 4–7: tail, bits, tail, bits, ...
            let lo = _mm512_insertf64x4::<1>(_mm512_castpd256_pd512(pair(0)), pair(2));
            let hi = _mm512_insertf64x4::<1>(_mm512_castpd256_pd512(pair(4)), pair(6));
            let tail = _mm512_permutex2var_pd(lo, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), hi);
            let bits = _mm512_permutex2var_pd(lo, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), hi);
            (tail, _mm512_castpd_si512(bits))
        }
    }

    /// `exp_model`'s operations in eight lanes: the library's bits where every lane is on its
    /// main path (see `super::all_on_main_path`), and no check of that.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    pub(crate) fn exp8_main(x: __m512d) -> __m512d {
        let kd = _mm512_fmadd_pd(_mm512_set1_pd(INV_LN2_N), x, _mm512_set1_pd(SHIFT));
        let ki = _mm512_castpd_si512(kd);
        let kd = _mm512_sub_pd(kd, _mm512_set1_pd(SHIFT));
        let r = _mm512_fmadd_pd(kd, _mm512_set1_pd(NEG_LN2_HI_N), x);
        let r = _mm512_fmadd_pd(kd, _mm512_set1_pd(NEG_LN2_LO_N), r);
        // 2 · (ki mod 128): the index of the tail; the scale's bits follow it.
        let idx = _mm512_slli_epi64::<1>(_mm512_and_si512(ki, _mm512_set1_epi64(127)));
        let (tail, sbits) = lookup(idx);
        let scale = _mm512_castsi512_pd(_mm512_add_epi64(sbits, _mm512_slli_epi64::<45>(ki)));
        let r2 = _mm512_mul_pd(r, r);
        let p23 = _mm512_fmadd_pd(r, _mm512_set1_pd(C3), _mm512_set1_pd(C2));
        let p45 = _mm512_fmadd_pd(r, _mm512_set1_pd(C5), _mm512_set1_pd(C4));
        let low = _mm512_fmadd_pd(r2, p23, _mm512_add_pd(tail, r));
        let tmp = _mm512_fmadd_pd(_mm512_mul_pd(r2, r2), p45, low);
        _mm512_fmadd_pd(scale, tmp, scale)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Random inputs as the comparator makes them: f32 logits minus an f32 row maximum, over
    /// the whole main path and past both its ends.
    fn inputs(n: usize) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(35);
        let mut xs: Vec<f32> = (0..n)
            .map(|i| match i % 4 {
                0 => -rng.random::<f32>() * 40.0,
                1 => -rng.random::<f32>() * 700.0,
                2 => -rng.random::<f32>() * 1e-3,
                _ => -f32::from_bits(rng.random::<u32>() >> 1),
            })
            .collect();
        xs.extend([0.0, -0.0, -1e-30, -511.9, -512.0, -745.2, -800.0, f32::MIN]);
        xs
    }

    /// glibc's `exp` without fused products: its generic x86-64 build, which the library
    /// runs on CPUs without FMA (each product and sum rounded on its own).
    fn exp_unfused(x: f64) -> f64 {
        if !on_main_path(x) {
            return x.exp();
        }
        let kd = INV_LN2_N * x + SHIFT;
        let ki = kd.to_bits();
        let kd = kd - SHIFT;
        let r = x + kd * NEG_LN2_HI_N + kd * NEG_LN2_LO_N;
        let idx = 2 * (ki % 128) as usize;
        let tail = f64::from_bits(TAB[idx]);
        let scale = f64::from_bits(TAB[idx + 1].wrapping_add(ki << 45));
        let r2 = r * r;
        let tmp = tail + r + r2 * (C2 + r * C3) + r2 * r2 * (C4 + r * C5);
        scale + scale * tmp
    }

    /// Whether the C library runs its FMA build here (glibc picks it by CPUID).
    fn library_fuses() -> bool {
        #[cfg(target_arch = "x86_64")]
        return is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    #[test]
    fn model_has_the_library_bits() {
        // The scalar model is the specification the kernels follow: where the CPU has FMA
        // (every CPU the kernels run on) it must be glibc's exp. Without FMA the library runs
        // its generic build, which the unfused evaluation is (a CPU like that is tested under
        // `scripts/feature_levels.sh`); the kernels are not used there.
        let model: fn(f64) -> f64 = if library_fuses() {
            exp_model
        } else {
            exp_unfused
        };
        for &x in &inputs(1 << 18) {
            let x = f64::from(x);
            assert_eq!(model(x).to_bits(), x.exp().to_bits(), "exp({x:e})");
        }
    }

    #[test]
    fn every_level_has_the_library_bits_at_every_length() {
        // Every level this CPU offers, forced one by one (the comparator's own choice is the
        // last); a level missing here is named so that a run on a smaller CPU says so.
        let levels = Level::available();
        eprintln!("comparator levels on this CPU: {levels:?}");
        let xs = inputs(1 << 18);
        for &level in levels {
            for (len, m) in [(xs.len(), 0.0), (7, 0.0), (4099, -3.5), (1, 2.0), (17, 0.5)] {
                let mut out = vec![0.0; len];
                exp_diffs(&xs[..len], m, &mut out, level);
                for (&x, e) in xs.iter().zip(&out) {
                    let want = (f64::from(x) - m).exp();
                    assert_eq!(e.to_bits(), want.to_bits(), "{level:?}: exp({x:e} - {m})");
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            // Where the CPU has the features, the self-check must have let the kernel in.
            assert_eq!(levels.contains(&Level::Avx2), avx2_available());
            assert_eq!(
                levels.contains(&Level::Avx512),
                avx2_available() && avx512_available()
            );
        }
        assert_eq!(Level::available()[0], Level::Scalar);
    }

    #[test]
    fn a_row_said_to_be_on_the_main_path_is() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(36);
        let mut covered = 0;
        for i in 0..20_000 {
            // Row maxima from tiny to large, minima up to a little over 512 below them.
            let m = f32::from_bits(rng.random::<u32>() >> 1) * if i % 2 == 0 { 1.0 } else { -1.0 };
            let m = if i % 3 == 0 { m.clamp(-1e3, 1e3) } else { m };
            let min = m - rng.random::<f32>() * 530.0;
            // The row's extremes and the values next to its maximum, where a difference is
            // smallest.
            let mut x = m;
            let mut row = vec![min, m];
            for _ in 0..4 {
                x = f32::from_bits(if x > 0.0 {
                    x.to_bits() - 1
                } else {
                    x.to_bits() + 1
                });
                row.push(x);
            }
            row.retain(|&x| x >= min);
            if !m.is_finite() || !min.is_finite() || !all_on_main_path(&row, min, f64::from(m)) {
                continue;
            }
            covered += 1;
            for x in row {
                let d = f64::from(x) - f64::from(m);
                assert!(on_main_path(d), "x {x:e}, m {m:e}: {d:e} off the main path");
            }
        }
        assert!(covered > 1000, "{covered}");
        // A maximum of 0 with no tiny value, and negative controls: a maximum of 0 with a
        // tiny value (off the path), a tiny maximum, a row 512 deep.
        assert!(all_on_main_path(&[-10.0, 0.0, -1e-10], -10.0, 0.0));
        assert!(!on_main_path(f64::from(-1e-30f32)));
        assert!(!all_on_main_path(&[-1.0, -1e-30, 0.0], -1.0, 0.0));
        assert!(!all_on_main_path(&[0.0, 1e-12], 0.0, 1e-12));
        assert!(!all_on_main_path(&[-600.0, 1.0], -600.0, 1.0));
    }

    #[test]
    fn the_other_evaluation_does_not_have_the_library_bits() {
        // Negative control: the same algorithm with products fused otherwise than the library
        // does here differs somewhere, so the tests above can tell evaluation orders apart.
        let other: fn(f64) -> f64 = if library_fuses() {
            exp_unfused
        } else {
            exp_model
        };
        let differ = inputs(1 << 16)
            .iter()
            .map(|&x| f64::from(x))
            .filter(|&x| on_main_path(x))
            .any(|x| other(x).to_bits() != x.exp().to_bits());
        assert!(differ);
    }
}
