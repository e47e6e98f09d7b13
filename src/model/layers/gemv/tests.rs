//! Bit identity of the one-row product with candle's, per kernel and CPU feature level.

use super::kernel::Order;
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
    // Small weights too (gemm's horizontal kernels for f32 and bf16, its one-row f16 path).
    let shapes: Vec<(usize, usize)> = shapes.iter().chain(&H_SHAPES).copied().collect();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (i, &(n, k)) in shapes.iter().enumerate() {
            if dtype == DType::F16 && k < GEMM_GEMV_MIN_INPUTS {
                continue; // gemm-f16's outer product: candle's product is kept
            }
            let w = random((n, k), 2 * i as u64 + 1).to_dtype(dtype).unwrap();
            let x = random((1, k), 2 * i as u64 + 2)
                .reshape((1, 1, k))
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let fast = Gemv::new(&w).unwrap().expect("a shape this kernel follows");
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
    let add = |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(p, q)| p + q).collect() };
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

/// gemm 0.19's horizontal order (`horizontal_kernel!`, products of at most 256 outputs) for
/// `lanes`-wide vectors, one scalar operation at a time: per block of 1024 inputs one
/// accumulator, fused multiply-adds over whole vectors and then the zero-filled short one;
/// the lanes reduced by halves down to four, then (l0+l2) + (l1+l3); the blocks' sums added
/// left to right.
fn emulate_h(w: &[f32], x: &[f32], lanes: usize) -> f32 {
    let mut total = 0f32;
    for (b, (wb, xb)) in w.chunks(1024).zip(x.chunks(1024)).enumerate() {
        let mut acc = vec![0f32; lanes];
        for (wc, xc) in wb.chunks(lanes).zip(xb.chunks(lanes)) {
            for (l, a) in acc.iter_mut().enumerate() {
                let (wv, xv) = (wc.get(l).copied(), xc.get(l).copied());
                *a = xv.unwrap_or(0.0).mul_add(wv.unwrap_or(0.0), *a);
            }
        }
        while acc.len() > 4 {
            let h = acc.len() / 2;
            acc = (0..h).map(|i| acc[i] + acc[i + h]).collect();
        }
        let s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        total = if b == 0 { s } else { total + s };
    }
    total
}

/// Shapes of the horizontal order: SmolLM2's K/V projections (192 × 576), the built-in
/// model's, one output, one input, several 1024-blocks, and short last vectors.
const H_SHAPES: [(usize, usize); 8] = [
    (192, 576),
    (128, 352),
    (256, 1536),
    (1, 3),
    (17, 1),
    (64, 1025),
    (100, 2100),
    (3, 15),
];

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
    order: Order,
) -> (Tensor, Vec<f32>, Vec<u32>) {
    let emulate = match order {
        Order::OneRow => emulate,
        Order::Horizontal => emulate_h,
    };
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
        let cases = ORDER_SHAPES
            .iter()
            .map(|&s| (Order::OneRow, s))
            .chain(H_SHAPES.iter().map(|&s| (Order::Horizontal, s)));
        for (i, (order, shape)) in cases.enumerate() {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let (w, x, want) = emulated(dtype, shape, 40 + 2 * i as u64, lanes, order);
                let mut out = vec![0f32; shape.0];
                let (storage, _) = w.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else {
                    unreachable!()
                };
                match dtype {
                    DType::F32 => kernel::dot_rows_at(
                        level,
                        order,
                        cpu.as_slice::<f32>().unwrap(),
                        &x,
                        &mut out,
                    ),
                    DType::BF16 => kernel::dot_rows_at(
                        level,
                        order,
                        cpu.as_slice::<half::bf16>().unwrap(),
                        &x,
                        &mut out,
                    ),
                    _ => kernel::dot_rows_at(
                        level,
                        order,
                        cpu.as_slice::<half::f16>().unwrap(),
                        &x,
                        &mut out,
                    ),
                }
                let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{level:?} {order:?} {dtype:?} {shape:?}");
            }
        }
    }
}

/// The emulation with the lanes of the kernels gemm takes on this CPU is candle's one-row
/// product: 16 lanes where gemm takes V4 (AVX-512), 8 where it takes V3 (AVX2 and FMA, no
/// AVX-512: an AVX2-only CPU, or this test under `scripts/feature_levels.sh`). Negative
/// controls: the other lane width and the other order each miss candle's bits somewhere.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_emulation_of_this_cpus_lanes_is_candles_product() {
    let (lanes, other_lanes) = if is_x86_feature_detected!("avx512f") {
        (16, 8)
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        (8, 16)
    } else {
        eprintln!("skipped: gemm takes neither V4 nor V3 on this CPU");
        return;
    };
    let (mut other_lanes_differ, mut other_order_differs) = (0, [0, 0]);
    let cases = ORDER_SHAPES
        .iter()
        .map(|&s| (Order::OneRow, s))
        .chain(H_SHAPES.iter().map(|&s| (Order::Horizontal, s)));
    for (i, (order, shape)) in cases.enumerate() {
        let other = match order {
            Order::OneRow => Order::Horizontal,
            Order::Horizontal => Order::OneRow,
        };
        for dtype in [DType::F32, DType::BF16] {
            let seed = 80 + 2 * i as u64;
            let (w, x, want) = emulated(dtype, shape, seed, lanes, order);
            let (_, _, want_other_lanes) = emulated(dtype, shape, seed, other_lanes, order);
            let (_, _, otherwise) = emulated(dtype, shape, seed, lanes, other);
            let x = Tensor::from_vec(x, (1, 1, shape.1), &Device::Cpu).unwrap();
            // f32 accumulation, read back before the run dtype's rounding.
            let theirs = candle_nn::Linear::new(w.to_dtype(DType::F32).unwrap(), None)
                .forward(&x)
                .unwrap();
            let theirs = bits(&theirs);
            assert_eq!(theirs, want, "{lanes} lanes {order:?} {dtype:?} {shape:?}");
            let differ = |want: &[u32]| theirs.iter().zip(want).filter(|(a, b)| a != b).count();
            other_lanes_differ += differ(&want_other_lanes);
            other_order_differs[usize::from(order == Order::Horizontal)] += differ(&otherwise);
        }
    }
    assert!(
        other_lanes_differ > 0,
        "the 8- and 16-lane orders agreed everywhere"
    );
    // Each order is needed where it is used: the other one misses candle's bits.
    assert!(
        other_order_differs.iter().all(|&d| d > 0),
        "{other_order_differs:?}"
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
fn each_shape_takes_the_order_gemm_takes() {
    // gemm's outer product (≤ 2 inputs) keeps candle's product.
    assert!(Gemv::new(&random((1536, 2), 1)).unwrap().is_none());
    let f16 = |shape| random(shape, 1).to_dtype(DType::F16).unwrap();
    assert!(Gemv::new(&f16((256, 2))).unwrap().is_none());
    if kernel::available() {
        // gemm-f16 has no horizontal kernels.
        for shape in [(256, 576), (192, 576), (1, 3), (257, 576)] {
            let g = Gemv::new(&f16(shape)).unwrap().unwrap();
            assert_eq!(g.order, Order::OneRow, "f16 {shape:?}");
        }
        let g = Gemv::new(&random((256, 576), 1)).unwrap().unwrap();
        assert_eq!(g.order, Order::Horizontal);
        let g = Gemv::new(&random((257, 576), 1)).unwrap().unwrap();
        assert_eq!(g.order, Order::OneRow);
    }
    let w = random((512, 64), 3);
    if let Some(g) = Gemv::new(&w).unwrap() {
        let err = g.forward(&random((2, 64), 4)).unwrap_err();
        assert!(err.to_string().contains("one-row product"), "{err}");
    }
}
