//! RMSNorm by a weight used as stored (Gemma's files already hold 1 + w).

use candle_core::Tensor;

use super::linear::Source;

/// RMSNorm over the last dimension through `candle_nn::ops::rms_norm` (f32 accumulation), on
/// a contiguous copy of the input when it is not contiguous.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// The norm of width `dim` whose weight is `vb`'s `weight`.
    pub(crate) fn new(dim: usize, eps: f64, vb: Source) -> candle_core::Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(dim, "weight")?,
            eps: eps as f32,
        })
    }

    /// Normalizes `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}
