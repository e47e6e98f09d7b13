//! The project's own Llama-family decoder, built from candle-nn parts.
//!
//! candle-transformers' models return only the last position's logits and expose no hidden
//! states (docs/design.md, "Models under test"); driftsweep needs logits at every position and, later, layer
//! traces, so it owns the forward pass. Tensor names follow the Hugging Face layout
//! (`model.layers.N.self_attn.q_proj.weight`, ...), so weights load by name.
//!
//! Numerics, where they differ from "everything in the run dtype":
//! - RoPE cos/sin tables are computed in f32 and cast to the run dtype once, as in
//!   candle-transformers and transformers.
//! - Attention runs in f32 between queries, keys and values in the run dtype and its output,
//!   rounded once, as fused attention kernels do (see [`attend`]).
//! - Dense projections with bf16 or f16 weights on the CPU accumulate in f32 (see [`Linear`]).
//! - RMSNorm goes through `candle_nn::ops::rms_norm`, which accumulates in f32.
//! - Logits leave the model as f32, because every metric is computed in f32.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Embedding, RmsNorm, VarBuilder};
use serde::{Deserialize, Serialize};

use super::gemv::Gemv;
use super::under_test::{Capabilities, Fault, ModelUnderTest, Probes, Rows, Sequence};
use crate::trace::{Hooks, TensorName};

/// Hyper-parameters of a Llama-family decoder (the fields of a Hugging Face `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Rows of the embedding and of the output head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Context length: the largest prompt + span the model accepts.
    pub max_position_embeddings: usize,
    /// Output head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Head width when the config gives it (Qwen3); otherwise hidden / heads.
    #[serde(default)]
    pub explicit_head_dim: Option<usize>,
    /// Q, K and V projections carry a bias (Qwen2).
    #[serde(default)]
    pub attention_bias: bool,
    /// RMSNorm over each query and key head before RoPE (Qwen3).
    #[serde(default)]
    pub qk_norm: bool,
    /// Each position attends only to the last `sliding_window` positions (Mistral), in both
    /// paths alike.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Llama 3 RoPE frequency scaling.
    #[serde(default)]
    pub rope_llama3: Option<Llama3Rope>,
}

/// Llama 3's `rope_scaling` (rope_type "llama3").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Rope {
    /// Scale of the low frequencies.
    pub factor: f64,
    /// Wavelength bound of the low-frequency band (as a factor).
    pub low_freq_factor: f64,
    /// Wavelength bound of the high-frequency band (as a factor).
    pub high_freq_factor: f64,
    /// Context length the frequencies were trained for.
    pub original_max_position_embeddings: usize,
}

impl Llama3Rope {
    /// The scaled inverse frequency, as in transformers' `_compute_llama3_parameters`.
    fn scale(&self, inv_freq: f64) -> f64 {
        let low_wavelen = self.original_max_position_embeddings as f64 / self.low_freq_factor;
        let high_wavelen = self.original_max_position_embeddings as f64 / self.high_freq_factor;
        let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
        if wavelen < high_wavelen {
            inv_freq
        } else if wavelen > low_wavelen {
            inv_freq / self.factor
        } else {
            let smooth = (self.original_max_position_embeddings as f64 / wavelen
                - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * inv_freq / self.factor + smooth * inv_freq
        }
    }
}

impl Config {
    /// Parameters of a Llama-family decoder with these hyper-parameters: the tensors
    /// [`Decoder::new`] loads (embedding, per layer the Q/K/V/O
    /// projections with their optional biases and Q/K norms, the SwiGLU MLP and two RMSNorms, the
    /// final norm, and the output head unless it is tied to the embedding).
    pub fn parameter_count(&self) -> u64 {
        let cfg = self;
        let (h, i, hd) = (
            cfg.hidden_size as u64,
            cfg.intermediate_size as u64,
            cfg.head_dim() as u64,
        );
        let (q, kv) = (
            cfg.num_attention_heads as u64 * hd,
            cfg.num_key_value_heads as u64 * hd,
        );
        let attn = h * q
            + 2 * h * kv
            + q * h
            + if cfg.attention_bias { q + 2 * kv } else { 0 }
            + if cfg.qk_norm { 2 * hd } else { 0 };
        let layer = attn + 3 * h * i + 2 * h;
        let embed = cfg.vocab_size as u64 * h;
        let head = if cfg.tie_word_embeddings { 0 } else { embed };
        embed + cfg.num_hidden_layers as u64 * layer + h + head
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.explicit_head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Structural checks, so that a bad config fails here rather than in a matmul.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return Err("head counts must be positive".into());
        }
        if self.explicit_head_dim.is_none()
            && !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        Ok(())
    }
}

/// Rotary position embedding tables for every position up to the context length.
#[derive(Debug, Clone)]
pub(super) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(cfg: &Config, dtype: DType, dev: &Device) -> candle_core::Result<Self> {
        let scale = cfg
            .rope_llama3
            .map(|r| move |f: f32| r.scale(f as f64) as f32);
        Rope::tables(
            cfg.head_dim(),
            cfg.rope_theta,
            cfg.max_position_embeddings,
            scale,
            dtype,
            dev,
        )
    }

    /// Tables for `positions` positions of heads of width `hd` with RoPE base `base`, each
    /// inverse frequency passed through `scale` when given.
    pub(super) fn tables(
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
    pub(super) fn apply(&self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        let t = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}

/// A projection `x Wᵀ (+ b)` in the run dtype.
///
/// Dense weights: on the CPU, bf16 weights are held widened to f32. candle's CPU bf16 matmul
/// widens both operands to f32, multiplies in f32 and rounds the product to bf16 on every
/// call; doing the weights' half once at load gives the same bits (checked on SmolLM2's
/// shapes and by `widened_bf16_projection_is_bit_identical`) and a one-row product 5–12 times
/// faster, for twice the weights' memory. The bias is added in the run dtype, after the
/// rounding, as before.
///
/// f16 weights on the CPU are held twice: as loaded, for one-row products (a decode step),
/// and widened to f32 for products of more rows (prefill, chunks, batched steps). candle's
/// one-row f16 product accumulates in f32 and gives the widened product's bits; its
/// many-row f16 GEMM keeps partial sums in f16 for wide reductions, which put about a quarter
/// more error into every prefill projection than f32 accumulation does (against an f64
/// reference, `widened_f16_product_is_closer_to_f64`), and runs at half the f32 GEMM's rate.
/// Widening those products changes f16 prefill bits, towards the reference, and keeps the
/// one-row bits; it costs three times the f16 weights' memory.
///
/// Quantized weights (`weights: quantized`): the GGUF blocks as they are, through candle's
/// `QMatMul`, which takes the activations in the run dtype (its CPU kernels quantize each
/// activation row to the blocks' dot-product format and accumulate in f32).
///
/// One-row products of dense CPU weights (a decode step) go through [`Gemv`] where it gives
/// candle's bits (AVX-512 CPUs, more than 256 outputs): the weight read as loaded, bf16 and
/// f16 at half the bytes of the widened copy, rows split over the pool's threads.
#[derive(Debug, Clone)]
pub(super) struct Linear {
    product: Product,
    one_row: Option<Gemv>,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum Product {
    /// The weight (maybe widened) without bias: candle-nn's own product.
    Dense(candle_nn::Linear),
    /// An f16 weight on the CPU: as loaded for one row, widened to f32 for more rows.
    HalfAndWide {
        half: candle_nn::Linear,
        wide: candle_nn::Linear,
    },
    /// GGUF blocks.
    Quantized(QMatMul),
}

impl Linear {
    pub(super) fn new(weight: Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let one_row = Gemv::new(&weight)?;
        let product = match (weight.device().is_cpu(), weight.dtype()) {
            (true, DType::BF16) => {
                Product::Dense(candle_nn::Linear::new(weight.to_dtype(DType::F32)?, None))
            }
            (true, DType::F16) => Product::HalfAndWide {
                wide: candle_nn::Linear::new(weight.to_dtype(DType::F32)?, None),
                half: candle_nn::Linear::new(weight, None),
            },
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
    pub(super) fn from_source(
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

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let one_row = x.elem_count() == x.dim(candle_core::D::Minus1)?;
        let y = match (&self.product, &self.one_row) {
            (_, Some(g)) if one_row => g.forward(x)?,
            (Product::Dense(p), _) => widened_product(p, x)?,
            (Product::HalfAndWide { half, .. }, _) if one_row => half.forward(x)?,
            (Product::HalfAndWide { wide, .. }, _) => widened_product(wide, x)?,
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

    pub(super) fn pp(&self, s: impl ToString) -> Self {
        Source {
            vb: self.vb.pp(s),
            quantized: self.quantized.clone(),
        }
    }

    pub(super) fn get<S: Into<candle_core::Shape>>(
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

    pub(super) fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    pub(super) fn device(&self) -> &Device {
        self.vb.device()
    }
}

pub(super) fn linear<'a>(
    in_dim: usize,
    out_dim: usize,
    vb: impl Into<Source<'a>>,
) -> candle_core::Result<Linear> {
    let vb: Source = vb.into();
    Linear::from_source(&vb, "weight", || vb.get((out_dim, in_dim), "weight"), None)
}

fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: Source) -> candle_core::Result<Linear> {
    let b = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Linear::from_source(&vb, "weight", || vb.get((out_dim, in_dim), "weight"), b)
}

fn rms_norm(dim: usize, eps: f64, vb: Source) -> candle_core::Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(dim, "weight")?, eps))
}

/// Grouped-query self-attention with RoPE and a KV cache.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &Config, vb: Source) -> candle_core::Result<Self> {
        let hd = cfg.head_dim();
        let h = cfg.hidden_size;
        let bias = cfg.attention_bias;
        let norm = |name: &str| -> candle_core::Result<Option<RmsNorm>> {
            if cfg.qk_norm {
                rms_norm(hd, cfg.rms_norm_eps, vb.pp(name)).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Attention {
            q_proj: linear_b(h, cfg.num_attention_heads * hd, bias, vb.pp("q_proj"))?,
            k_proj: linear_b(h, cfg.num_key_value_heads * hd, bias, vb.pp("k_proj"))?,
            v_proj: linear_b(h, cfg.num_key_value_heads * hd, bias, vb.pp("v_proj"))?,
            o_proj: linear(cfg.num_attention_heads * hd, h, vb.pp("o_proj"))?,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        layer: usize,
        hooks: &mut Hooks,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((b, t, n, self.head_dim))?.transpose(1, 2)
        };
        let mut tap = |name, y| tap_heads(hooks, layer, name, y, offset);
        // Qwen3 normalizes each head (over head_dim) before RoPE.
        let head_norm = |y: Tensor, norm: &Option<RmsNorm>| -> candle_core::Result<Tensor> {
            match norm {
                Some(n) => n.forward(&y.contiguous()?),
                None => Ok(y),
            }
        };
        let q = heads(self.q_proj.forward(x)?, self.n_heads)?;
        let q = tap(
            TensorName::Q,
            rope.apply(&head_norm(q, &self.q_norm)?, offset)?,
        )?;
        let k = heads(self.k_proj.forward(x)?, self.n_kv_heads)?;
        let k = tap(
            TensorName::K,
            rope.apply(&head_norm(k, &self.k_norm)?, offset)?,
        )?;
        let v = tap(
            TensorName::V,
            heads(self.v_proj.forward(x)?, self.n_kv_heads)?.contiguous()?,
        )?;
        let (k, v) = append_kv(cache, &k, &v)?;
        let (k, v) = read_cache(k, v, t, hooks.cross_row)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let y = attend(&q, k, v, self.n_heads / self.n_kv_heads, scale, mask)?;
        self.o_proj.forward(&y)
    }
}

/// Appends a forward's keys and values (run dtype) to a layer's cache and returns every cached
/// position's. The cache stores them widened to f32, which is exact, so it holds the run
/// dtype's values; [`attend`] computes in f32 and would otherwise widen the whole cache again
/// on every decode step.
pub(super) fn append_kv(
    cache: &mut KvCache,
    k: &Tensor,
    v: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    cache.append(&k.to_dtype(DType::F32)?, &v.to_dtype(DType::F32)?)
}

/// The cached keys and values (batch, kv_heads, positions, head_dim) an attention layer reads
/// after appending a forward's `t` positions. With the cross-row fault, row 0 reads row 1's
/// K and V at the newest position before this forward's own (position 0 when the cache was
/// empty): the bug of a batch row addressing another row's cache slot. Only a batch of two
/// or more sequences can show it.
pub(super) fn read_cache(
    k: Tensor,
    v: Tensor,
    t: usize,
    cross_row: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (b, _, len, _) = k.dims4()?;
    if !cross_row || b < 2 {
        return Ok((k, v));
    }
    let slot = (len - t).saturating_sub(1);
    let leak = |x: &Tensor| -> candle_core::Result<Tensor> {
        let (_, h, _, d) = x.dims4()?;
        let other = x.narrow(0, 1, 1)?.narrow(2, slot, 1)?.contiguous()?;
        x.contiguous()?
            .slice_assign(&[0..1, 0..h, slot..slot + 1, 0..d], &other)
    };
    Ok((leak(&k)?, leak(&v)?))
}

/// Taps a per-head tensor (batch, heads, t, head_dim): taps see (batch, t, heads × head_dim),
/// one row per position with the heads concatenated.
pub(super) fn tap_heads(
    hooks: &mut Hooks,
    layer: usize,
    name: TensorName,
    y: Tensor,
    offset: usize,
) -> candle_core::Result<Tensor> {
    if !hooks.active() {
        return Ok(y);
    }
    let (b, n, t, hd) = y.dims4()?;
    let rows = y.transpose(1, 2)?.reshape((b, t, n * hd))?;
    let rows = hooks.tap(Some(layer), name, rows, offset)?;
    rows.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
}

/// Attention of queries `q` (batch, heads, t, head_dim) over cached keys and values (batch,
/// kv_heads, positions, head_dim), each kv head serving `n_rep` query heads: scores scaled by
/// `scale`, plus the additive `mask`, softmax, and the value product. Returns (batch, t,
/// heads × head_dim) in the run dtype.
///
/// Queries, keys and values arrive in the run dtype (the cache holds that dtype), and
/// everything between them runs in f32: the scores, the mask, the softmax and the value
/// product's accumulation, rounded once at the output. Fused attention kernels do the same
/// (PyTorch's CPU flash attention behind transformers' default `sdpa`, FlashAttention on
/// GPUs): for bf16 and f16 this is closer to an f64 attention than rounding the scores and
/// probabilities to the run dtype (`f32_attention_is_closer_to_f64`), and it keeps the
/// elementwise work over heads × t² off candle's per-element half-precision loops. In f32
/// the casts are no-ops.
pub(super) fn attend(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    n_rep: usize,
    scale: f64,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, heads, t, hd) = q.dims4()?;
    let run_dtype = q.dtype();
    let repeat = |x: Tensor| -> candle_core::Result<Tensor> {
        candle_transformers::utils::repeat_kv(x.to_dtype(DType::F32)?, n_rep)?.contiguous()
    };
    let scores = (q.to_dtype(DType::F32)?.matmul(&repeat(k)?.t()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    // A one-row forward (a decode step) stacks the `n_rep` query heads of each kv head into
    // one product with that head's values, unrepeated. gemm's one-row path sums the cached
    // positions less accurately than its many-row path: the stacked product lands closer to
    // f64, up to 3× at 5000 positions (`grouped_value_product_is_closer_to_f64`), and the
    // values are not copied per head. Everything else keeps the repeated layout: for the
    // scores (a dot product over head_dim) the one-row path is the closer, and for forwards
    // of more rows gemm's results change with the row count in shape-dependent ways with no
    // measured gain, so their bits stay.
    let y = if t == 1 && n_rep > 1 {
        let positions = probs.dim(3)?;
        probs
            .reshape((b, heads / n_rep, n_rep, positions))?
            .matmul(&v.to_dtype(DType::F32)?)?
            .reshape((b, heads, t, hd))?
    } else {
        probs.matmul(&repeat(v)?)?
    };
    y.to_dtype(run_dtype)?
        .transpose(1, 2)?
        .reshape((b, t, heads * hd))
}

/// The gate's activation of a gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// SwiGLU (Llama family).
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma: gelu_pytorch_tanh; candle's `gelu`).
    GeluTanh,
}

/// Gated MLP: down(act(gate(x)) * up(x)).
#[derive(Debug, Clone)]
pub(super) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    gate: Gate,
}

impl Mlp {
    /// Hidden width `h`, inner width `i`.
    pub(super) fn new<'a>(
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

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.gate_proj.forward(x)?;
        let g = match self.gate {
            Gate::Silu => candle_nn::ops::silu(&g)?,
            Gate::GeluTanh => g.gelu()?,
        };
        self.down_proj.forward(&(g * self.up_proj.forward(x)?)?)
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
struct Layer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Layer {
    fn new(cfg: &Config, vb: Source) -> candle_core::Result<Self> {
        Ok(Layer {
            input_layernorm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: rms_norm(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new(
                cfg.hidden_size,
                cfg.intermediate_size,
                Gate::Silu,
                vb.pp("mlp"),
            )?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        layer: usize,
        hooks: &mut Hooks,
    ) -> candle_core::Result<Tensor> {
        let l = Some(layer);
        let normed = hooks.tap(
            l,
            TensorName::AttnNorm,
            self.input_layernorm.forward(x)?,
            offset,
        )?;
        let attn = self
            .self_attn
            .forward(&normed, rope, offset, mask, cache, layer, hooks)?;
        let attn = hooks.tap(l, TensorName::AttnOut, attn, offset)?;
        let resid_mid = hooks.tap(l, TensorName::ResidMid, (x + attn)?, offset)?;
        let normed = hooks.tap(
            l,
            TensorName::MlpNorm,
            self.post_attention_layernorm.forward(&resid_mid)?,
            offset,
        )?;
        let mlp = hooks.tap(l, TensorName::MlpOut, self.mlp.forward(&normed)?, offset)?;
        hooks.tap(l, TensorName::ResidOut, (resid_mid + mlp)?, offset)
    }
}

/// The KV cache of one run: one [`KvCache`] per layer, over the sequence dimension.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<KvCache>,
}

impl Cache {
    /// An empty cache of `layers` layers preallocated for `capacity` positions (it grows if
    /// exceeded).
    pub(super) fn new(layers: usize, capacity: usize) -> Cache {
        Cache {
            layers: (0..layers)
                .map(|_| KvCache::new(2, capacity.max(1)))
                .collect(),
        }
    }

    /// The per-layer caches.
    pub(super) fn layers_mut(&mut self) -> &mut [KvCache] {
        &mut self.layers
    }

    /// Number of positions cached so far (the offset of the next token).
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, KvCache::current_seq_len)
    }

    /// The caches of single sequences of equal length side by side, as one batch's cache
    /// (copied, bit for bit), with room for `capacity` positions.
    pub(super) fn stack(rows: &[Cache], capacity: usize) -> candle_core::Result<Cache> {
        let Some(first) = rows.first() else {
            candle_core::bail!("a batch needs at least one sequence");
        };
        let mut layers = Vec::with_capacity(first.layers.len());
        for l in 0..first.layers.len() {
            let mut fresh = KvCache::new(2, capacity.max(1));
            let mut ks = Vec::with_capacity(rows.len());
            let mut vs = Vec::with_capacity(rows.len());
            for c in rows {
                if let (Some(k), Some(v)) = (c.layers[l].k()?, c.layers[l].v()?) {
                    ks.push(k);
                    vs.push(v);
                }
            }
            if ks.len() == rows.len() {
                fresh.append(&Tensor::cat(&ks, 0)?, &Tensor::cat(&vs, 0)?)?;
            }
            layers.push(fresh);
        }
        Ok(Cache { layers })
    }

    /// A new cache holding this cache's first `len` positions (copied, bit for bit), with
    /// room for `capacity` positions.
    pub fn truncated(&self, len: usize, capacity: usize) -> candle_core::Result<Cache> {
        if len > self.seq_len() {
            candle_core::bail!(
                "cannot keep {len} positions of a cache holding {}",
                self.seq_len()
            );
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for kv in &self.layers {
            let mut fresh = KvCache::new(2, capacity.max(1));
            if let (Some(k), Some(v)) = (kv.k()?, kv.v()?) {
                fresh.append(
                    &k.narrow(2, 0, len)?.contiguous()?,
                    &v.narrow(2, 0, len)?.contiguous()?,
                )?;
            }
            layers.push(fresh);
        }
        Ok(Cache { layers })
    }
}

/// A loaded decoder: weights in one dtype on one device, shared by every run of its group.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    cfg: Config,
    dtype: DType,
    device: Device,
}

impl Decoder {
    /// Builds the decoder from Hugging Face-named weights in `vb` (dtype and device come
    /// from it).
    pub fn new<'a>(cfg: &Config, vb: impl Into<Source<'a>>) -> candle_core::Result<Self> {
        let vb: Source = vb.into();
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let embed = vb
            .pp("model.embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::from_source(
                &vb.pp("model.embed_tokens"),
                "weight",
                || Ok(embed.clone()),
                None,
            )?
        } else {
            linear(cfg.hidden_size, cfg.vocab_size, vb.pp("lm_head"))?
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, vb.pp(format!("model.layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Decoder {
            embed_tokens: Embedding::new(embed, cfg.hidden_size),
            layers,
            norm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("model.norm"))?,
            lm_head,
            rope: Rope::new(cfg, vb.dtype(), vb.device())?,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The dtype the weights and activations are in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache preallocated for `capacity` positions (it grows if exceeded).
    pub fn new_cache(&self, capacity: usize) -> Cache {
        Cache::new(self.cfg.num_hidden_layers, capacity)
    }

    /// Feeds `tokens` at positions cache.seq_len().. and appends their K/V to the cache.
    /// Returns f32 logits of shape (tokens.len(), vocab): one row per fed position.
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> candle_core::Result<Tensor> {
        self.forward_hooked(
            tokens,
            1,
            cache,
            &mut Hooks::default(),
            Fault::default(),
            Rows::From(0),
        )?
        .ok_or_else(|| candle_core::Error::Msg("forward computed no logits".into()))
    }
}

/// The end of a hooked forward over `x` (batch, t, hidden) whose first row sits at (believed)
/// position `offset`: the final norm and the LM head over the rows asked for, or over every
/// row while tracing (the trace holds every position's logits; the rows asked for are then
/// cut from that). Returns the f32 logits (batch · rows, vocab) asked for, each sequence's
/// rows in turn.
pub(super) fn head_rows(
    x: &Tensor,
    offset: usize,
    rows: Rows,
    hooks: &mut Hooks,
    norm: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    lm_head: &Linear,
) -> candle_core::Result<Option<Tensor>> {
    let t = x.dim(1)?;
    let wanted = match rows {
        Rows::None => t,
        Rows::From(i) => i.min(t),
    };
    let first = if hooks.sink.is_some() { 0 } else { wanted };
    if first == t {
        return Ok(None);
    }
    let x = x.narrow(1, first, t - first)?;
    let offset = offset + first;
    let x = hooks.tap(None, TensorName::FinalNorm, norm(&x)?, offset)?;
    // Upcast once, at the end: the comparator works on f32 whatever the run dtype.
    let logits = lm_head.forward(&x)?.to_dtype(DType::F32)?;
    let logits = hooks.tap(None, TensorName::Logits, logits, offset)?;
    if wanted == t {
        return Ok(None);
    }
    // A view of the rows asked for (no copy when nothing extra was computed and the batch is
    // one sequence).
    let (b, _, vocab) = logits.dims3()?;
    let logits = logits.narrow(1, wanted - first, t - wanted)?;
    if b == 1 {
        return logits.squeeze(0).map(Some);
    }
    logits.reshape((b * (t - wanted), vocab)).map(Some)
}

/// The token ids of a forward as a (batch, t) tensor, checking that `tokens` holds `batch`
/// rows of equal length.
pub(super) fn batch_input(
    tokens: &[u32],
    batch: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    if batch == 0 || !tokens.len().is_multiple_of(batch) {
        candle_core::bail!(
            "{} token ids do not make {batch} sequences of equal length",
            tokens.len()
        );
    }
    Tensor::new(tokens, device)?.reshape((batch, tokens.len() / batch))
}

/// A forward of `t` tokens at `offset` must feed something and stay within the context.
pub(super) fn check_positions(t: usize, offset: usize, context: usize) -> candle_core::Result<()> {
    if t == 0 {
        candle_core::bail!("forward called with no tokens");
    }
    if offset + t > context {
        candle_core::bail!(
            "positions {offset}..{} exceed the context length {context}",
            offset + t
        );
    }
    Ok(())
}

/// Additive mask (t, offset + t): row i may see columns ≤ offset + i, and with a sliding
/// window only the last `window` of them. Always f32: [`attend`] adds it to the widened
/// scores.
pub(super) fn causal_mask(
    t: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let cols = offset + t;
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            let pos = offset + i;
            (0..cols).map(move |j| {
                if j > pos || pos - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, cols), device)
}

impl ModelUnderTest for Decoder {
    fn engine(&self) -> &str {
        "driftsweep"
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn context_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn num_layers(&self) -> usize {
        self.cfg.num_hidden_layers
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn sequence(&self, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        Ok(Box::new(OwnSequence::new(self, capacity)))
    }

    fn batch(&self, rows: usize, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        Ok(Box::new(OwnSequence::batch(self, rows, capacity)))
    }
}

impl OwnForward for Decoder {
    fn new_cache(&self, capacity: usize) -> Cache {
        Decoder::new_cache(self, capacity)
    }

    /// [`Decoder::forward`] over `batch` sequences with trace hooks and `fault` (its scale
    /// and cross-row read through the hooks; RoPE positions shifted by [`Fault::shift`]: the
    /// forward believes it is further along than the cache says; its `window_shift` widens a
    /// sliding window),
    /// computing logits only for `rows`: rows before a span are never compared, and the final
    /// norm and LM head are a fifth of SmolLM2's work per token. While tracing, the final
    /// norm and head run over every row (the trace holds every position's logits) and the
    /// rows asked for are cut from that, so a traced and an untraced forward return rows of
    /// the same computation only when they asked for the same rows.
    fn forward_hooked(
        &self,
        tokens: &[u32],
        batch: usize,
        cache: &mut Cache,
        hooks: &mut Hooks,
        fault: Fault,
        rows: Rows,
    ) -> candle_core::Result<Option<Tensor>> {
        let input = batch_input(tokens, batch, &self.device)?;
        let t = input.dim(1)?;
        let shift = fault.shift(t, cache.seq_len());
        let offset = cache.seq_len() + shift;
        hooks.shift = shift;
        hooks.cross_row = fault.cross_row_cache;
        check_positions(t, offset, self.cfg.max_position_embeddings)?;
        let mut x = hooks.tap(
            None,
            TensorName::Embed,
            self.embed_tokens.forward(&input)?,
            offset,
        )?;
        // A single new token may attend to everything cached (no mask needed) unless a
        // sliding window hides the oldest keys. The mask's columns are the cached positions,
        // so it is built from the cache length.
        let past = cache.seq_len();
        let window = self.cfg.sliding_window.map(|w| w + fault.window_shift);
        let windowed = window.is_some_and(|w| past + t > w);
        let mask = if t > 1 || windowed {
            Some(causal_mask(t, past, window, &self.device)?)
        } else {
            None
        };
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            x = layer.forward(&x, &self.rope, offset, mask.as_ref(), kv, i, hooks)?;
        }
        head_rows(
            &x,
            offset,
            rows,
            hooks,
            &|x| self.norm.forward(x),
            &self.lm_head,
        )
    }
}

/// What a sequence needs from one of driftsweep's own decoders (the Llama-family
/// [`Decoder`], Gemma 3's [`super::gemma3::Model`]): a cache, and a forward with trace/fault
/// hooks and a fault (see [`Decoder::forward_hooked`]), logits for `rows` only.
pub(super) trait OwnForward: Sync {
    /// An empty cache with room for `capacity` positions.
    fn new_cache(&self, capacity: usize) -> Cache;
    /// Feeds `tokens` (`batch` sequences of equal length, one after the other) at the cache's
    /// length and returns the logits of `rows`.
    fn forward_hooked(
        &self,
        tokens: &[u32],
        batch: usize,
        cache: &mut Cache,
        hooks: &mut Hooks,
        fault: Fault,
        rows: Rows,
    ) -> candle_core::Result<Option<Tensor>>;
}

/// A sequence on an own decoder: its cache, and the probes its forwards apply.
pub(super) struct OwnSequence<'a, M> {
    model: &'a M,
    cache: Cache,
    capacity: usize,
    batch: usize,
    probes: Probes,
}

impl<'a, M: OwnForward> OwnSequence<'a, M> {
    /// An empty sequence with room for `capacity` positions.
    pub(super) fn new(model: &'a M, capacity: usize) -> Self {
        Self::batch(model, 1, capacity)
    }

    /// An empty batch of `batch` sequences with room for `capacity` positions each.
    pub(super) fn batch(model: &'a M, batch: usize, capacity: usize) -> Self {
        OwnSequence {
            model,
            cache: model.new_cache(capacity),
            capacity,
            batch: batch.max(1),
            probes: Probes::default(),
        }
    }
}

impl<M: OwnForward> Sequence for OwnSequence<'_, M> {
    fn len(&self) -> usize {
        self.cache.seq_len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn forward(&mut self, tokens: &[u32], rows: Rows) -> candle_core::Result<Option<Tensor>> {
        let fault = self.probes.fault;
        let mut hooks = Hooks::new(self.probes.trace.as_mut(), fault.scale);
        self.model
            .forward_hooked(tokens, self.batch, &mut self.cache, &mut hooks, fault, rows)
    }

    fn forward_each(&mut self, tokens: &[u32]) -> candle_core::Result<()> {
        if self.batch == 1 {
            return self.forward(tokens, Rows::None).map(|_| ());
        }
        if self.len() != 0 {
            candle_core::bail!("a batch's cache is built one sequence at a time only when empty");
        }
        if !tokens.len().is_multiple_of(self.batch) {
            candle_core::bail!(
                "{} token ids do not make {} sequences of equal length",
                tokens.len(),
                self.batch
            );
        }
        let mut caches = Vec::with_capacity(self.batch);
        for row in tokens.chunks(tokens.len() / self.batch) {
            let mut alone = OwnSequence::new(self.model, self.capacity);
            alone.forward(row, Rows::None)?;
            caches.push(alone.cache);
        }
        self.cache = Cache::stack(&caches, self.capacity)?;
        Ok(())
    }

    fn truncate(&mut self, len: usize) -> candle_core::Result<()> {
        self.cache = self.cache.truncated(len, self.capacity)?;
        Ok(())
    }

    fn probes(&mut self) -> Option<&mut Probes> {
        Some(&mut self.probes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widened_bf16_projection_is_bit_identical() {
        let dev = Device::Cpu;
        let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        let w = bf(Tensor::randn(0f32, 0.05, (96, 64), &dev).unwrap());
        let b = bf(Tensor::randn(0f32, 0.5, 96, &dev).unwrap());
        let ours = Linear::new(w.clone(), Some(b.clone())).unwrap();
        assert!(matches!(&ours.product, Product::Dense(p) if p.weight().dtype() == DType::F32));
        let candle = candle_nn::Linear::new(w, Some(b));
        for t in [1, 7, 33] {
            let x = bf(Tensor::randn(0f32, 1.0, (1, t, 64), &dev).unwrap());
            let (a, c) = (ours.forward(&x).unwrap(), candle.forward(&x).unwrap());
            assert_eq!(a.dtype(), DType::BF16);
            // bf16 → f32 is exact, so equal f32 bits are equal bf16 bits.
            let bits = |y: &Tensor| {
                let v = y.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                v.to_vec1::<f32>().unwrap()
            };
            let same = bits(&a)
                .iter()
                .zip(bits(&c))
                .all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(
                same,
                "t = {t}: widened product differs from candle's bf16 matmul"
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
        // SmolLM2's MLP shapes.
        for (out, inp) in [(1536usize, 576usize), (576, 1536)] {
            let w = h(Tensor::randn(0f32, 0.05, (out, inp), &dev).unwrap());
            let ours = Linear::new(w.clone(), None).unwrap();
            assert!(matches!(&ours.product, Product::HalfAndWide { .. }));
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
                if t == 1 {
                    assert_eq!(a, c, "{out}x{inp}: one-row bits changed");
                } else {
                    assert_differs_and_closer(&a, &c, &reference, &format!("{out}x{inp}, t = {t}"));
                }
            }
        }
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
}
