//! Projections and where their weights come from: dense tensors by Hugging Face name, or the
//! GGUF blocks of a quantized file (see [`Linear`]).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::gemv::Gemv;

/// A projection `x Wᵀ (+ b)` in the run dtype.
///
/// Dense weights: on the CPU, bf16 weights are held widened to f32. candle's CPU bf16 matmul
/// widens both operands to f32, multiplies in f32 and rounds the product to bf16 on every
/// call; doing the weights' half once at load gives the same bits (checked on SmolLM2's
/// shapes and by `widened_bf16_projection_is_bit_identical`) and a one-row product 5–12 times
/// faster, for twice the weights' memory. The bias is added in the run dtype, after the
/// rounding, as before.
///
/// f16 weights on the CPU are held as loaded: candle's f16 product for one-row products (a
/// decode step), and widened to f32 for the call for products of more rows (prefill, chunks,
/// batched steps). candle's one-row f16 product accumulates in f32 and gives the widened
/// product's bits; its many-row f16 GEMM keeps partial sums in f16 for wide reductions,
/// which put about a quarter more error into every prefill projection than f32 accumulation
/// does (against an f64 reference, `widened_f16_product_is_closer_to_f64`), and runs at half
/// the f32 GEMM's rate. Widening those products changes f16 prefill bits, towards the
/// reference, and keeps the one-row bits. The widened copy was once held next to the f16
/// weight (three times its memory); widening per call gives the same f32 product, and a
/// many-row product's GEMM costs far more than widening its weight.
///
/// Quantized weights (`weights: quantized`): the GGUF blocks as they are, through candle's
/// `QMatMul`, which takes the activations in the run dtype (its CPU kernels quantize each
/// activation row to the blocks' dot-product format and accumulate in f32).
///
/// One-row products of dense CPU weights (a decode step) go through [`Gemv`] where it gives
/// candle's bits (CPUs with AVX2, FMA and F16C; 3 or more inputs): the weight read as
/// loaded, bf16 and f16 at half the bytes of the widened copy, rows split over the pool's
/// threads. There a bf16 or f16 weight is held once, as loaded ([`Product::Narrow`]): the
/// widened copy served one-row speed, which [`Gemv`] now gives, so products of more rows
/// widen the weight for the call (the same f32 product, so the same bits) and the run holds
/// half an f32 model's weight bytes instead of one and a half (bf16) or three halves plus
/// one (f16).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(super) product: Product,
    one_row: Option<Gemv>,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub(super) enum Product {
    /// The weight (maybe widened) without bias: candle-nn's own product.
    Dense(candle_nn::Linear),
    /// An f16 weight on the CPU without [`Gemv`]: candle's f16 product for one row,
    /// widened to f32 for the call for more rows.
    Half(candle_nn::Linear),
    /// A bf16 or f16 weight on the CPU, held as loaded only (one-row products go through
    /// [`Gemv`]): products of more rows widen it to f32 for the call.
    Narrow(Tensor),
    /// GGUF blocks.
    Quantized(QMatMul),
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let one_row = Gemv::new(&weight)?;
        let product = match (weight.device().is_cpu(), weight.dtype()) {
            (true, DType::BF16 | DType::F16) if one_row.is_some() => Product::Narrow(weight),
            (true, DType::BF16) => {
                Product::Dense(candle_nn::Linear::new(weight.to_dtype(DType::F32)?, None))
            }
            (true, DType::F16) => Product::Half(candle_nn::Linear::new(weight, None)),
            _ => Product::Dense(candle_nn::Linear::new(weight, None)),
        };
        Ok(Linear {
            product,
            one_row,
            bias,
        })
    }

    /// The projection of `name` (the weight's full name): kept quantized when the source
    /// holds it so, else the dense `weight`.
    pub(crate) fn from_source(
        src: &Source,
        name: &str,
        weight: impl FnOnce() -> candle_core::Result<Tensor>,
        bias: Option<Tensor>,
    ) -> candle_core::Result<Self> {
        match src.quantized(name) {
            Some(q) => Ok(Linear {
                product: Product::Quantized(QMatMul::from_arc(q)?),
                one_row: None,
                bias,
            }),
            None => Linear::new(weight()?, bias),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let one_row = x.elem_count() == x.dim(candle_core::D::Minus1)?;
        let y = match (&self.product, &self.one_row) {
            (_, Some(g)) if one_row => g.forward(x)?,
            (Product::Dense(p), _) => widened_product(p, x)?,
            (Product::Half(half), _) if one_row => half.forward(x)?,
            (Product::Half(half), _) => narrow_product(half.weight(), x)?,
            (Product::Narrow(w), _) => narrow_product(w, x)?,
            (Product::Quantized(q), _) => q.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x Wᵀ` with `x` cast to the weight's dtype and the product cast back to `x`'s (both casts
/// are no-ops unless the weight was widened).
fn widened_product(p: &candle_nn::Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    p.forward(&x.to_dtype(p.weight().dtype())?)?
        .to_dtype(x.dtype())
}

/// Fewest weight rows widened at a time by [`narrow_product`]. gemm's result for an output
/// depends on how it splits the inputs (`kc`), which it derives from the inputs alone unless
/// both the rows of `x` and the outputs are at most 64 (then `kc` is at most 512), and on its
/// one-row and small kernels (at most 256 outputs); parts of at least this many outputs stay
/// clear of all of them, so every output is summed as in the whole product.
pub(super) const WIDEN_ROWS: usize = 4096;

/// `x Wᵀ` for a bf16 or f16 weight `w` and more than one row of `x`: the weight widened to
/// f32 and multiplied in f32, as candle does. A wide weight (an output head: SmolLM2's is
/// 113 MB in f32) is widened [`WIDEN_ROWS`] or more rows at a time and the parts' products
/// joined, so the f32 copy held is a part's, not the whole weight's; the bits are the whole
/// product's (`narrow_product_in_parts_is_bit_identical`).
fn narrow_product(w: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let widened = |w: &Tensor| -> candle_core::Result<Tensor> {
        widened_product(&candle_nn::Linear::new(w.to_dtype(DType::F32)?, None), x)
    };
    let n = w.dim(0)?;
    let parts = n / WIDEN_ROWS;
    if parts < 2 {
        return widened(w);
    }
    // Equal parts, each at least WIDEN_ROWS rows.
    let ys = (0..parts)
        .map(|i| {
            let (r0, r1) = (i * n / parts, (i + 1) * n / parts);
            widened(&w.narrow(0, r0, r1 - r0)?)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&ys, candle_core::D::Minus1)
}

/// Where a decoder's tensors come from: dense tensors by Hugging Face name, and, for
/// `weights: quantized`, the GGUF blocks of the projections, kept as they are.
#[derive(Clone)]
pub struct Source<'a> {
    vb: VarBuilder<'a>,
    quantized: Option<Arc<HashMap<String, Arc<QTensor>>>>,
}

impl<'a> From<VarBuilder<'a>> for Source<'a> {
    fn from(vb: VarBuilder<'a>) -> Self {
        Source::dense(vb)
    }
}

impl<'a> Source<'a> {
    /// Dense tensors only.
    pub fn dense(vb: VarBuilder<'a>) -> Self {
        Source {
            vb,
            quantized: None,
        }
    }

    /// Dense tensors for norms and embeddings, and these quantized projections (by full
    /// Hugging Face weight name).
    pub fn with_quantized(vb: VarBuilder<'a>, quantized: HashMap<String, Arc<QTensor>>) -> Self {
        Source {
            vb,
            quantized: Some(Arc::new(quantized)),
        }
    }

    pub(crate) fn pp(&self, s: impl ToString) -> Self {
        Source {
            vb: self.vb.pp(s),
            quantized: self.quantized.clone(),
        }
    }

    pub(crate) fn get<S: Into<candle_core::Shape>>(
        &self,
        s: S,
        name: &str,
    ) -> candle_core::Result<Tensor> {
        self.vb.get(s, name)
    }

    fn quantized(&self, name: &str) -> Option<Arc<QTensor>> {
        let full = format!("{}.{name}", self.vb.prefix());
        self.quantized.as_ref()?.get(&full).cloned()
    }

    pub(crate) fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    pub(crate) fn device(&self) -> &Device {
        self.vb.device()
    }
}

pub(crate) fn linear<'a>(
    in_dim: usize,
    out_dim: usize,
    vb: impl Into<Source<'a>>,
) -> candle_core::Result<Linear> {
    let vb: Source = vb.into();
    Linear::from_source(&vb, "weight", || vb.get((out_dim, in_dim), "weight"), None)
}

pub(crate) fn linear_b(
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    vb: Source,
) -> candle_core::Result<Linear> {
    let b = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Linear::from_source(&vb, "weight", || vb.get((out_dim, in_dim), "weight"), b)
}
