//! Gemma 3 (text), driftsweep's own decoder for it, in the style of candle-transformers: a
//! [`Config`], small layer structs with `forward`, tensor names mirroring the Hugging Face
//! checkpoint's (`model.layers.N.pre_feedforward_layernorm.weight`, ...). It follows
//! transformers' Gemma3ForCausalLM; scripts/reference/gemma3.py is the independent float64
//! reference it is checked against (tests/gemma3.rs), and its module notes give each
//! convention with its source. In short:
//!
//! - embeddings times sqrt(hidden_size), the normalizer rounded to f32 and then to the run
//!   dtype, as transformers rounds it (25.298222 in f32, 25.25 in bf16 for 640);
//! - RMSNorm times (1 + w); a GGUF file already holds 1 + w (llama.cpp's converter adds the 1),
//!   so a GGUF weight is used as it is, under the checkpoint's name;
//! - norms before and after attention and MLP, per-head q/k RMSNorm before RoPE, GeGLU MLP with
//!   tanh GELU, scores scaled by query_pre_attn_scalar^-1/2;
//! - layer i global when (i + 1) % 6 == 0 (RoPE base from the file, full causal attention),
//!   otherwise local (RoPE base 10000, a query at position p sees keys p - window < j <= p).
//!
//! Numerics as in the Llama decoder (decoder.rs): RoPE tables in f32, attention in f32, RMSNorm
//! through `candle_nn::ops::rms_norm` (f32 accumulation), logits returned as f32.

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Embedding;
use candle_nn::kv_cache::KvCache;

pub use super::decoder::Cache;
use super::decoder::{
    Gate, Linear, Mlp, OwnForward, OwnSequence, Rope, Source, append_kv, attend, batch_input,
    causal_mask, check_positions, head_rows, linear, read_cache, tap_heads,
};
use super::under_test::{Capabilities, Fault, ModelUnderTest, Rows, Sequence};
use crate::trace::{Hooks, TensorName};

/// RoPE base of the local (sliding-window) layers: transformers' `rope_local_base_freq`.
pub const LOCAL_ROPE_BASE: f64 = 10_000.0;
/// Every `SLIDING_WINDOW_PATTERN`-th layer is global.
pub const SLIDING_WINDOW_PATTERN: usize = 6;
/// The per-block norms Gemma 3 has beyond a Llama block's two (checkpoint names after
/// `model.layers.N.`), which a header check requires.
pub const EXTRA_NORMS: [&str; 2] = [
    "pre_feedforward_layernorm.weight",
    "post_feedforward_layernorm.weight",
];

/// Hyper-parameters (the fields of a Gemma 3 text `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Rows of the embedding (and of the tied output head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the GeGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base of the global layers.
    pub rope_theta: f64,
    /// RoPE base of the local layers.
    pub rope_local_base_freq: f64,
    /// Keys a local layer's query sees, its own included.
    pub sliding_window: usize,
    /// Scores are scaled by its inverse square root.
    pub query_pre_attn_scalar: f64,
    /// Context length.
    pub max_position_embeddings: usize,
}

impl Config {
    /// Whether layer `i` attends globally.
    pub fn is_global(&self, i: usize) -> bool {
        (i + 1).is_multiple_of(SLIDING_WINDOW_PATTERN)
    }

    /// From a GGUF file's `gemma3.*` metadata. The file does not carry query_pre_attn_scalar:
    /// Gemma 3 270M to 12B use head_dim (256), as llama.cpp does for every size but 27B.
    pub fn from_gguf(c: &Content) -> Result<Self, String> {
        let u = |k: &str| -> Result<usize, String> {
            c.metadata
                .get(&format!("gemma3.{k}"))
                .ok_or_else(|| format!("metadata key `gemma3.{k}` is missing"))?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| format!("gemma3.{k}: {e}"))
        };
        let f = |k: &str| -> Result<f64, String> {
            c.metadata
                .get(&format!("gemma3.{k}"))
                .ok_or_else(|| format!("metadata key `gemma3.{k}` is missing"))?
                .to_f32()
                .map(f64::from)
                .map_err(|e| format!("gemma3.{k}: {e}"))
        };
        let embd = c
            .tensor_infos
            .get("token_embd.weight")
            .ok_or("tensor `token_embd.weight` is missing")?;
        let head_dim = u("attention.key_length")?;
        Ok(Config {
            vocab_size: embd.shape.dims()[0],
            hidden_size: u("embedding_length")?,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: u("attention.head_count")?,
            num_key_value_heads: u("attention.head_count_kv")?,
            head_dim,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon")?,
            rope_theta: f("rope.freq_base")?,
            rope_local_base_freq: LOCAL_ROPE_BASE,
            sliding_window: u("attention.sliding_window")?,
            query_pre_attn_scalar: head_dim as f64,
            max_position_embeddings: u("context_length")?,
        })
    }
}

/// RMSNorm by a stored weight that already holds 1 + w.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: Source) -> candle_core::Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(dim, "weight")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// Grouped-query attention with q/k norms, RoPE and a KV cache.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn new(cfg: &Config, vb: Source) -> candle_core::Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        Ok(Attention {
            q_proj: linear(h, cfg.num_attention_heads * d, vb.pp("q_proj"))?,
            k_proj: linear(h, cfg.num_key_value_heads * d, vb.pp("k_proj"))?,
            v_proj: linear(h, cfg.num_key_value_heads * d, vb.pp("v_proj"))?,
            o_proj: linear(cfg.num_attention_heads * d, h, vb.pp("o_proj"))?,
            q_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("k_norm"))?,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
            scale: cfg.query_pre_attn_scalar.powf(-0.5),
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
        // q/k norms per head (over head_dim), before RoPE, as transformers does.
        let q = heads(self.q_proj.forward(x)?, self.n_heads)?;
        let q = tap(
            TensorName::Q,
            rope.apply(&self.q_norm.forward(&q)?, offset)?,
        )?;
        let k = heads(self.k_proj.forward(x)?, self.n_kv_heads)?;
        let k = tap(
            TensorName::K,
            rope.apply(&self.k_norm.forward(&k)?, offset)?,
        )?;
        let v = tap(
            TensorName::V,
            heads(self.v_proj.forward(x)?, self.n_kv_heads)?.contiguous()?,
        )?;
        let (k, v) = append_kv(cache, &k, &v)?;
        let (k, v) = read_cache(k, v, t, hooks.cross_row)?;
        let y = attend(&q, k, v, self.n_heads / self.n_kv_heads, self.scale, mask)?;
        self.o_proj.forward(&y)
    }
}

/// One block: norms before and after both attention and MLP. Trace names: `attn_norm`
/// (input_layernorm), `attn_out`, `post_attn_norm`, `resid_mid`, `mlp_norm`
/// (pre_feedforward_layernorm), `mlp_out`, `post_mlp_norm`, `resid_out`.
#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: Mlp,
    post_feedforward_layernorm: RmsNorm,
    global: bool,
}

impl DecoderLayer {
    fn new(cfg: &Config, layer: usize, vb: Source) -> candle_core::Result<Self> {
        let norm = |name: &str| RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp(name));
        Ok(DecoderLayer {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            mlp: Mlp::new(
                cfg.hidden_size,
                cfg.intermediate_size,
                Gate::GeluTanh,
                vb.pp("mlp"),
            )?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
            global: cfg.is_global(layer),
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
        let mut tap = |name, y| hooks.tap(l, name, y, offset);
        let normed = tap(TensorName::AttnNorm, self.input_layernorm.forward(x)?)?;
        let attn = self
            .self_attn
            .forward(&normed, rope, offset, mask, cache, layer, hooks)?;
        let mut tap = |name, y| hooks.tap(l, name, y, offset);
        let attn = tap(TensorName::AttnOut, attn)?;
        let attn = tap(
            TensorName::PostAttnNorm,
            self.post_attention_layernorm.forward(&attn)?,
        )?;
        let x = tap(TensorName::ResidMid, (x + attn)?)?;
        let normed = tap(
            TensorName::MlpNorm,
            self.pre_feedforward_layernorm.forward(&x)?,
        )?;
        let mlp = tap(TensorName::MlpOut, self.mlp.forward(&normed)?)?;
        let mlp = tap(
            TensorName::PostMlpNorm,
            self.post_feedforward_layernorm.forward(&mlp)?,
        )?;
        tap(TensorName::ResidOut, (x + mlp)?)
    }
}

/// A loaded Gemma 3 model.
#[derive(Debug, Clone)]
pub struct Model {
    embed_tokens: Embedding,
    embed_scale: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope_global: Rope,
    rope_local: Rope,
    cfg: Config,
    device: Device,
}

impl Model {
    /// Builds the model from checkpoint-named weights in `vb` (dense, or with the
    /// projections and the tied head kept quantized).
    pub fn new<'a>(cfg: &Config, vb: impl Into<Source<'a>>) -> candle_core::Result<Self> {
        let vb: Source = vb.into();
        let (dtype, dev) = (vb.dtype(), vb.device().clone());
        let embed = vb
            .pp("model.embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        // The head is tied to the embedding (Gemma 3 has no lm_head tensor).
        let lm_head = Linear::from_source(
            &vb.pp("model.embed_tokens"),
            "weight",
            || Ok(embed.clone()),
            None,
        )?;
        // transformers: float32 buffer of hidden_size ** 0.5, cast to the weights' dtype.
        let embed_scale =
            Tensor::new(&[(cfg.hidden_size as f64).sqrt() as f32], &dev)?.to_dtype(dtype)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, i, vb.pp(format!("model.layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Model {
            embed_tokens: Embedding::new(embed, cfg.hidden_size),
            embed_scale,
            layers,
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("model.norm"))?,
            lm_head,
            rope_global: rope(cfg.rope_theta, cfg, dtype, &dev)?,
            rope_local: rope(cfg.rope_local_base_freq, cfg, dtype, &dev)?,
            cfg: cfg.clone(),
            device: dev,
        })
    }

    /// Loads a GGUF file: every tensor dequantized to f32, cast to `dtype` on `device`.
    pub fn from_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Self, String> {
        let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let c = Content::read(&mut f).map_err(|e| format!("not a readable GGUF file: {e}"))?;
        let cfg = Config::from_gguf(&c)?;
        let vb = super::gguf::var_builder(path, super::gguf::Layout::Gemma3, dtype, device)?;
        Model::new(&cfg, vb).map_err(|e| e.to_string())
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// An empty cache with room for `capacity` positions (it grows if exceeded).
    pub fn new_cache(&self, capacity: usize) -> Cache {
        Cache::new(self.cfg.num_hidden_layers, capacity)
    }

    /// Feeds `tokens` at positions cache.seq_len().. and returns f32 logits (t, vocab), one
    /// row per fed position.
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

impl OwnForward for Model {
    fn new_cache(&self, capacity: usize) -> Cache {
        Model::new_cache(self, capacity)
    }

    /// [`Model::forward`] with trace hooks and `fault` (its scale through the hooks, RoPE
    /// positions shifted by its `position_shift` while the masks stay where the cache is,
    /// the local layers' window widened by its `window_shift`), logits for `rows` only.
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
        let past = cache.seq_len();
        let shift = fault.shift(t, past);
        let offset = past + shift;
        hooks.shift = shift;
        hooks.cross_row = fault.cross_row_cache;
        check_positions(t, offset, self.cfg.max_position_embeddings)?;
        let x = self
            .embed_tokens
            .forward(&input)?
            .broadcast_mul(&self.embed_scale)?;
        let mut x = hooks.tap(None, TensorName::Embed, x, offset)?;
        // Masks have one column per cached key, so they are built from the cache length.
        // Global layers: a single new token sees every cached key, no mask needed. Local
        // layers: the same window in every path (a query at p sees keys p - window < j <= p),
        // so a single decode step gets a mask too once the cache holds more than the window.
        let global = (t > 1)
            .then(|| causal_mask(t, past, None, &self.device))
            .transpose()?;
        let window = self.cfg.sliding_window + fault.window_shift;
        let local = (t > 1 || past + t > window)
            .then(|| causal_mask(t, past, Some(window), &self.device))
            .transpose()?;
        for (i, (layer, kv)) in self
            .layers
            .iter()
            .zip(cache.layers_mut().iter_mut())
            .enumerate()
        {
            let (rope, mask) = if layer.global {
                (&self.rope_global, global.as_ref())
            } else {
                (&self.rope_local, local.as_ref())
            };
            x = layer.forward(&x, rope, offset, mask, kv, i, hooks)?;
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

impl ModelUnderTest for Model {
    fn engine(&self) -> &str {
        "driftsweep"
    }

    fn implementation(&self) -> String {
        "driftsweep::model::gemma3".into()
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

/// RoPE tables of one base, up to the context length.
fn rope(base: f64, cfg: &Config, dtype: DType, dev: &Device) -> candle_core::Result<Rope> {
    Rope::tables(
        cfg.head_dim,
        base,
        cfg.max_position_embeddings,
        None::<fn(f32) -> f32>,
        dtype,
        dev,
    )
}

#[cfg(test)]
mod tests {
    //! The window convention (a query at p sees keys p - window < j <= p, so min(p + 1,
    //! window) keys; transformers' `sliding_window_overlay` with `causal_mask_function`) on a
    //! tiny random Gemma 3 with a window of 8, at window - 1, window and window + 1.
    use std::collections::HashMap;

    use candle_nn::VarBuilder;

    use super::*;
    use crate::model::under_test::Probes;

    const W: usize = 8;

    fn tiny(window: usize) -> Config {
        Config {
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 48,
            // Six layers: 0-4 local, 5 global.
            num_hidden_layers: 6,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 16,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            rope_local_base_freq: LOCAL_ROPE_BASE,
            sliding_window: window,
            query_pre_attn_scalar: 16.0,
            max_position_embeddings: 64,
        }
    }

    fn model(window: usize) -> Model {
        let cfg = tiny(window);
        let dev = Device::Cpu;
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let mut t = HashMap::new();
        let mut put = |name: String, shape: &[usize], std: f32| {
            let x = if std == 0.0 {
                // Norm weights (already 1 + w): near 1.
                (Tensor::randn(0f32, 0.1, shape, &dev).unwrap() + 1.0).unwrap()
            } else {
                Tensor::randn(0f32, std, shape, &dev).unwrap()
            };
            t.insert(name, x);
        };
        put(
            "model.embed_tokens.weight".into(),
            &[cfg.vocab_size, h],
            0.5,
        );
        put("model.norm.weight".into(), &[h], 0.0);
        for l in 0..cfg.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            for n in [
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            ] {
                put(p(&format!("{n}.weight")), &[h], 0.0);
            }
            put(p("self_attn.q_norm.weight"), &[d], 0.0);
            put(p("self_attn.k_norm.weight"), &[d], 0.0);
            put(p("self_attn.q_proj.weight"), &[2 * d, h], 0.3);
            put(p("self_attn.k_proj.weight"), &[d, h], 0.3);
            put(p("self_attn.v_proj.weight"), &[d, h], 0.3);
            put(p("self_attn.o_proj.weight"), &[h, 2 * d], 0.3);
            put(p("mlp.gate_proj.weight"), &[i, h], 0.3);
            put(p("mlp.up_proj.weight"), &[i, h], 0.3);
            put(p("mlp.down_proj.weight"), &[h, i], 0.3);
        }
        Model::new(&cfg, VarBuilder::from_tensors(t, DType::F32, &dev)).unwrap()
    }

    const TOKENS: [u32; 12] = [3, 17, 42, 5, 9, 61, 22, 8, 30, 11, 57, 2];

    fn prefill(m: &Model) -> Vec<Vec<f32>> {
        let mut c = m.new_cache(TOKENS.len());
        m.forward(&TOKENS, &mut c).unwrap().to_vec2().unwrap()
    }

    fn decode(m: &Model, fault: Fault) -> Vec<Vec<f32>> {
        let mut seq = OwnSequence::new(m, TOKENS.len());
        *seq.probes().unwrap() = Probes { trace: None, fault };
        TOKENS
            .iter()
            .map(|&t| {
                let row = seq.forward(&[t], Rows::From(0)).unwrap().unwrap();
                row.squeeze(0).unwrap().to_vec1().unwrap()
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn a_query_sees_min_of_p_plus_one_and_window_keys() {
        let mask = causal_mask(12, 0, Some(W), &Device::Cpu).unwrap();
        let mask: Vec<Vec<f32>> = mask.to_vec2().unwrap();
        for p in [W - 1, W, W + 1] {
            let seen: Vec<usize> = (0..12).filter(|&j| mask[p][j] == 0.0).collect();
            let first = (p + 1).saturating_sub(W);
            assert_eq!(seen, (first..=p).collect::<Vec<_>>(), "query at {p}");
            assert_eq!(seen.len(), (p + 1).min(W));
        }
        // A decode step at p (one row, cache of p keys before it) sees the same keys.
        for p in [W - 1, W, W + 1] {
            let row = causal_mask(1, p, Some(W), &Device::Cpu).unwrap();
            let row: Vec<f32> = row.squeeze(0).unwrap().to_vec1().unwrap();
            assert_eq!(row, mask[p][..=p], "decode step at {p}");
        }
    }

    #[test]
    fn prefill_and_decode_agree_across_the_window_edge() {
        let m = model(W);
        let (pre, dec) = (prefill(&m), decode(&m, Fault::default()));
        for p in 0..TOKENS.len() {
            let d = max_diff(&pre[p], &dec[p]);
            assert!(d < 1e-5, "position {p}: prefill and decode differ by {d}");
        }
        // The window is applied at all: beyond it, a full-attention model (the same weights
        // with a window as long as the sequence) gives other logits, before it the same.
        let mut wide = m.clone();
        wide.cfg.sliding_window = TOKENS.len();
        let full = prefill(&wide);
        for p in 0..TOKENS.len() {
            let d = max_diff(&pre[p], &full[p]);
            if p < W {
                assert!(
                    d < 1e-6,
                    "position {p} is inside the window but differs by {d}"
                );
            } else {
                assert!(
                    d > 1e-3,
                    "position {p} is past the window but differs by only {d}"
                );
            }
        }
    }

    #[test]
    fn a_window_one_key_too_wide_in_decode_diverges_exactly_from_the_edge() {
        // The negative control: decode's local layers see window + 1 keys. Up to position
        // window - 1 every query sees all its keys either way; from the edge on decode sees
        // one key more than prefill.
        let m = model(W);
        let pre = prefill(&m);
        let wide = decode(
            &m,
            Fault {
                window_shift: 1,
                ..Fault::default()
            },
        );
        for p in 0..TOKENS.len() {
            let d = max_diff(&pre[p], &wide[p]);
            if p < W {
                assert!(d < 1e-5, "position {p} differs by {d} before the edge");
            } else {
                assert!(
                    d > 1e-3,
                    "position {p}: the too-wide window went unseen ({d})"
                );
            }
        }
    }
}
