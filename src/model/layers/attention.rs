//! Grouped-query self-attention with RoPE and a KV cache, shared by the own decoders: the
//! projections, the optional per-head norms before RoPE, the cache, and [`attend`] (in f32
//! between run-dtype operands).

use candle_core::{DType, Device, Tensor};
use candle_nn::kv_cache::KvCache;

use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::trace::{Hooks, TensorName};

/// Where one layer's forward runs: what the layers of a forward share, and which layer this
/// is (taps name it).
#[derive(Clone, Copy)]
pub(crate) struct Step<'a> {
    /// The RoPE tables of this layer.
    pub rope: &'a Rope,
    /// The (believed) position of the forward's first row.
    pub offset: usize,
    /// The additive mask of this layer, when it needs one.
    pub mask: Option<&'a Tensor>,
    /// The layer's index.
    pub layer: usize,
}

/// Grouped-query self-attention: Q/K/V/O projections, optional per-head RMSNorms of queries
/// and keys before RoPE (Qwen3, Gemma 3), scores scaled by `scale`.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
}

impl Attention {
    /// Attends `x` (batch, t, hidden) at `at`, appending its keys and values to `cache`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        at: Step,
        cache: &mut KvCache,
        hooks: &mut Hooks,
    ) -> candle_core::Result<Tensor> {
        let (rope, offset) = (at.rope, at.offset);
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((b, t, n, self.head_dim))?.transpose(1, 2)
        };
        let mut tap = |name, y| tap_heads(hooks, at.layer, name, y, offset);
        // Per-head norms (over head_dim) come before RoPE, as transformers has them.
        let head_norm = |y: Tensor, norm: &Option<RmsNorm>| -> candle_core::Result<Tensor> {
            match norm {
                Some(n) => n.forward(&y),
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
        let y = attend(
            &q,
            k,
            v,
            self.n_heads / self.n_kv_heads,
            self.scale,
            at.mask,
        )?;
        self.o_proj.forward(&y)
    }
}

/// Appends a forward's keys and values (run dtype) to a layer's cache and returns every cached
/// position's. The cache stores them widened to f32, which is exact, so it holds the run
/// dtype's values; [`attend`] computes in f32 and would otherwise widen the whole cache again
/// on every decode step.
pub(crate) fn append_kv(
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
pub(crate) fn read_cache(
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
pub(crate) fn tap_heads(
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
pub(crate) fn attend(
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

/// Additive mask (t, offset + t): row i may see columns ≤ offset + i, and with a sliding
/// window only the last `window` of them. Always f32: [`attend`] adds it to the widened
/// scores.
pub(crate) fn causal_mask(
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
