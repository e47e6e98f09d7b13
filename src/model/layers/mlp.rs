//! The gated MLP of the own decoders, with the gate's activation per family.

use candle_core::Tensor;

use super::linear::{Linear, Source, linear};

/// The gate's activation of a gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// SwiGLU (Llama family).
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma: gelu_pytorch_tanh; candle's `gelu`).
    GeluTanh,
}

/// Gated MLP: down(act(gate(x)) * up(x)).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    gate: Gate,
}

impl Mlp {
    /// Hidden width `h`, inner width `i`.
    pub(crate) fn new<'a>(
        h: usize,
        i: usize,
        gate: Gate,
        vb: impl Into<Source<'a>>,
    ) -> candle_core::Result<Self> {
        let vb: Source = vb.into();
        Ok(Mlp {
            gate_proj: linear(h, i, vb.pp("gate_proj"))?,
            up_proj: linear(h, i, vb.pp("up_proj"))?,
            down_proj: linear(i, h, vb.pp("down_proj"))?,
            gate,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.gate_proj.forward(x)?;
        let g = match self.gate {
            Gate::Silu => candle_nn::ops::silu(&g)?,
            Gate::GeluTanh => g.gelu()?,
        };
        self.down_proj.forward(&(g * self.up_proj.forward(x)?)?)
    }
}
