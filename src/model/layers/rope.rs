//! Rotary position embedding tables, computed in f32 and cast to the run dtype once, as in
//! candle-transformers and transformers.

use candle_core::{DType, Device, Tensor};

/// Rotary position embedding tables for every position up to the context length.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for `positions` positions of heads of width `hd` with RoPE base `base`, each
    /// inverse frequency passed through `scale` when given.
    pub(crate) fn tables(
        hd: usize,
        base: f64,
        positions: usize,
        scale: Option<impl Fn(f32) -> f32>,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let inv_freq: Vec<f32> = (0..hd)
            .step_by(2)
            // In f32 like transformers' `1.0 / base ** (arange(0, dim, 2).float() / dim)`.
            .map(|i| {
                let f = 1f32 / (base as f32).powf(i as f32 / hd as f32);
                scale.as_ref().map_or(f, |s| s(f))
            })
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, hd / 2), dev)?;
        let t = Tensor::arange(0u32, positions as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.matmul(&inv_freq)?;
        Ok(Rope {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
        })
    }

    /// Rotates `x` of shape (batch, heads, t, head_dim) for positions offset..offset+t.
    pub(crate) fn apply(&self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        let t = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}
