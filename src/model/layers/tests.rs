//! Bit-identity and accuracy checks of the shared layers against candle's own products.

use candle_core::{DType, Device, Module, Tensor};

use super::attention::{attend, causal_mask};
use super::linear::{Linear, Product, WIDEN_ROWS};

/// A tensor's values widened to f32 (exact from every float dtype), as bits.
fn bits(y: &Tensor) -> Vec<u32> {
    let v = y.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    v.to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn widened_bf16_projection_is_bit_identical() {
    let dev = Device::Cpu;
    let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
    let w = bf(Tensor::randn(0f32, 0.05, (96, 64), &dev).unwrap());
    let b = bf(Tensor::randn(0f32, 0.5, 96, &dev).unwrap());
    let ours = Linear::new(w.clone(), Some(b.clone())).unwrap();
    // Held widened where no one-row kernel follows candle's order here; else as loaded (one
    // row through `Gemv`'s horizontal order, more rows widened for the call).
    let widened = matches!(&ours.product, Product::Dense(p) if p.weight().dtype() == DType::F32);
    let narrow = matches!(&ours.product, Product::Narrow(w) if w.dtype() == DType::BF16);
    assert!(widened || narrow, "{:?}", ours.product);
    let candle = candle_nn::Linear::new(w, Some(b));
    for t in [1, 7, 33] {
        let x = bf(Tensor::randn(0f32, 1.0, (1, t, 64), &dev).unwrap());
        let (a, c) = (ours.forward(&x).unwrap(), candle.forward(&x).unwrap());
        assert_eq!(a.dtype(), DType::BF16);
        // bf16 → f32 is exact, so equal f32 bits are equal bf16 bits.
        let same = bits(&a) == bits(&c);
        assert!(
            same,
            "t = {t}: widened product differs from candle's bf16 matmul"
        );
    }
}

#[test]
fn narrow_product_in_parts_is_bit_identical() {
    let dev = Device::Cpu;
    // An output head's shape: more outputs than two parts, SmolLM2's inputs.
    let (n, k) = (2 * WIDEN_ROWS + 300, 576);
    for dt in [DType::BF16, DType::F16] {
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let ours = Linear::new(w.clone(), None).unwrap();
        if !matches!(ours.product, Product::Narrow(_)) {
            return; // no one-row kernel on this CPU: the weight is held widened, whole
        }
        let whole = candle_nn::Linear::new(w.to_dtype(DType::F32).unwrap(), None);
        for t in [2, 40, 65, 300] {
            let x = Tensor::randn(0f32, 1.0, (1, t, k), &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            let a = ours.forward(&x).unwrap();
            let c = whole
                .forward(&x.to_dtype(DType::F32).unwrap())
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            assert_eq!(a.dims(), c.dims());
            assert!(
                bits(&a) == bits(&c),
                "{dt:?}, {t} rows: parts differ from the whole"
            );
        }
        // Negative control: parts of 64 outputs or fewer with few rows sum the inputs in
        // two blocks (gemm's small-size `kc` of 512), and that changes bits.
        let x = Tensor::randn(0f32, 1.0, (40, k), &dev).unwrap();
        let wf = w.to_dtype(DType::F32).unwrap();
        let small = wf.narrow(0, 0, 64).unwrap();
        let part = x.matmul(&small.t().unwrap()).unwrap();
        let full = x
            .matmul(&wf.t().unwrap())
            .unwrap()
            .narrow(1, 0, 64)
            .unwrap();
        assert_ne!(
            bits(&part),
            bits(&full),
            "{dt:?}: small parts no longer change the sum"
        );
    }
}

/// A tensor's values as f64 (exact from every float dtype).
fn f64_values(y: &Tensor) -> Vec<f64> {
    let v = y.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    v.to_vec1::<f64>().unwrap()
}

/// `new` differs from `old` (so the comparison has something to find) and lands closer to
/// `reference` in mean absolute error.
fn assert_differs_and_closer(new: &[f64], old: &[f64], reference: &[f64], what: &str) {
    assert_ne!(new, old, "{what}: the two computations no longer differ");
    let err = |v: &[f64]| {
        v.iter()
            .zip(reference)
            .map(|(p, q)| (p - q).abs())
            .sum::<f64>()
            / reference.len() as f64
    };
    let (e_new, e_old) = (err(new), err(old));
    assert!(
        e_new < e_old,
        "{what}: new {e_new:.3e} not closer to f64 than old {e_old:.3e}"
    );
}

/// f16: one row keeps candle's bits; more rows get f32 accumulation, closer to an f64
/// product of the same f16 operands than candle's f16 GEMM (which the test also shows to
/// differ, so the comparison has something to find).
#[test]
fn widened_f16_product_is_closer_to_f64() {
    let dev = Device::Cpu;
    let h = |t: Tensor| t.to_dtype(DType::F16).unwrap();
    let vals = f64_values;
    let mut differing = 0;
    // SmolLM2's MLP shapes.
    for (out, inp) in [(1536usize, 576usize), (576, 1536)] {
        let w = h(Tensor::randn(0f32, 0.05, (out, inp), &dev).unwrap());
        let ours = Linear::new(w.clone(), None).unwrap();
        // Held once, as loaded: widened for the call for more rows than one.
        assert!(matches!(
            &ours.product,
            Product::Half(_) | Product::Narrow(_)
        ));
        let candle = candle_nn::Linear::new(w.clone(), None);
        let w64 = w.to_dtype(DType::F64).unwrap();
        for t in [1, 63] {
            let x = h(Tensor::randn(0f32, 1.0, (1, t, inp), &dev).unwrap());
            let (a, c) = (ours.forward(&x).unwrap(), candle.forward(&x).unwrap());
            assert_eq!(a.dtype(), DType::F16);
            let reference = vals(
                &x.to_dtype(DType::F64)
                    .unwrap()
                    .broadcast_matmul(&w64.t().unwrap())
                    .unwrap(),
            );
            let (a, c) = (vals(&a), vals(&c));
            let what = format!("{out}x{inp}, t = {t}");
            if t == 1 {
                assert_eq!(a, c, "{what}: one-row bits changed");
            } else if a != c || f16_gemm_splits(inp) {
                assert_differs_and_closer(&a, &c, &reference, &what);
                differing += 1;
            }
        }
    }
    // Negative control: the comparison has something to find on every CPU.
    assert!(differing > 0, "the f16 and widened products never differed");
}

/// Whether candle's many-row f16 product of `inputs`-long sums rounds a partial sum to f16
/// on this CPU: gemm-f16's SIMD kernels (F16C) do for SmolLM2's shapes; on an x86-64 CPU
/// without F16C its scalar code sums 576 inputs at once and rounds only 1536-input sums
/// (seen under `scripts/feature_levels.sh`'s x86-64-v2 level).
fn f16_gemm_splits(inputs: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("f16c") || inputs > 576;
    #[cfg(not(target_arch = "x86_64"))]
    return inputs > 0;
}

/// The attention before it ran in f32: scores and probabilities rounded to the run dtype.
fn attend_rounded(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Tensor {
    let k = candle_transformers::utils::repeat_kv(k.clone(), 2).unwrap();
    let v = candle_transformers::utils::repeat_kv(v.clone(), 2).unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() * 0.125).unwrap();
    // The softmax widens to f32, or stays in f64 for the reference.
    let acc = if q.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let scores = scores.to_dtype(acc).unwrap().broadcast_add(mask).unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    let y = probs.to_dtype(q.dtype()).unwrap().matmul(&v).unwrap();
    let (b, h, t, d) = y.dims4().unwrap();
    y.transpose(1, 2).unwrap().reshape((b, t, h * d)).unwrap()
}

/// A decode step's value product over many cached positions, with the query heads of a
/// kv head stacked, lands closer to f64 than one row per head with the values repeated.
#[test]
fn grouped_value_product_is_closer_to_f64() {
    let dev = Device::Cpu;
    let positions = 2000;
    let r = |h: usize, t: usize| Tensor::randn(0f32, 1.0, (1, h, t, 64), &dev).unwrap();
    let (q, k, v) = (r(4, 1), r(2, positions), r(2, positions));
    let mask = Tensor::zeros((1, positions), DType::F32, &dev).unwrap();
    let ours = attend(&q, k.clone(), v.clone(), 2, 0.125, None).unwrap();
    let old = attend_rounded(&q, &k, &v, &mask);
    let f64s = |x: &Tensor| x.to_dtype(DType::F64).unwrap();
    let reference = attend_rounded(&f64s(&q), &f64s(&k), &f64s(&v), &f64s(&mask));
    let vals = f64_values;
    assert_differs_and_closer(&vals(&ours), &vals(&old), &vals(&reference), "decode");
}

/// f32 keeps its bits; in bf16 and f16 the attention in f32 lands closer to an f64
/// attention of the same operands than rounding scores and probabilities does.
#[test]
fn f32_attention_is_closer_to_f64() {
    let dev = Device::Cpu;
    let t = 48;
    let mask = causal_mask(t, 0, None, &dev).unwrap();
    let vals = f64_values;
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let r = |h: usize| {
            Tensor::randn(0f32, 1.0, (1, h, t, 64), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let (q, k, v) = (r(4), (r(2) * 2.0).unwrap(), r(2));
        let ours = attend(&q, k.clone(), v.clone(), 2, 0.125, Some(&mask)).unwrap();
        assert_eq!(ours.dtype(), dtype);
        let old = attend_rounded(&q, &k, &v, &mask);
        let f64s = |x: &Tensor| x.to_dtype(DType::F64).unwrap();
        let reference = attend_rounded(
            &f64s(&q),
            &f64s(&k),
            &f64s(&v),
            &mask.to_dtype(DType::F64).unwrap(),
        );
        let (ours, old, reference) = (vals(&ours), vals(&old), vals(&reference));
        if dtype == DType::F32 {
            assert_eq!(ours, old, "f32 attention bits changed");
        } else {
            assert_differs_and_closer(&ours, &old, &reference, &format!("{dtype:?}"));
        }
    }
}

/// Where the one-row kernel serves a bf16 or f16 weight, the projection holds that weight
/// alone (no widened f32 copy) and keeps the bits of the products that held one: candle's
/// bf16 product in bf16, the widened f32 product in f16, for one row and for more.
#[test]
fn narrow_weights_hold_no_f32_copy_and_keep_the_bits() {
    let dev = Device::Cpu;
    let w32 = Tensor::randn(0f32, 0.05, (300, 64), &dev).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let w = w32.to_dtype(dtype).unwrap();
        let ours = Linear::new(w.clone(), None).unwrap();
        if !matches!(&ours.product, Product::Narrow(n) if n.dtype() == dtype) {
            // No one-row kernel on this CPU: the widened copy stays (checked above).
            assert!(!matches!(&ours.product, Product::Narrow(_)));
            continue;
        }
        let wide = candle_nn::Linear::new(w.to_dtype(DType::F32).unwrap(), None);
        for t in [1, 7, 33] {
            let x = Tensor::randn(0f32, 1.0, (1, t, 64), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let want = wide
                .forward(&x.to_dtype(DType::F32).unwrap())
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(
                bits(&ours.forward(&x).unwrap()),
                bits(&want),
                "{dtype:?} t = {t}"
            );
        }
    }
}
