//! Gemma 3's own decoder, built from the shared layers ([`crate::model::layers`]).

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Embedding;
use candle_nn::kv_cache::KvCache;

use super::config::{Config, GGUF_LAYOUT};
use crate::model::error::ModelError;
use crate::model::gguf::tensors::var_builder;
use crate::model::layers::{
    Attention, Cache, Gate, Linear, Mlp, OwnForward, RmsNorm, Rope, Source, Step, batch_input,
    causal_mask, check_positions, forward_every_row, head_rows, linear, own_model_under_test,
};
use crate::model::under_test::{Fault, Rows};
use crate::trace::{Hooks, TensorName};

/// Gemma 3's attention: per-head q/k norms, no biases, scores scaled by
/// query_pre_attn_scalar^-1/2.
fn attention(cfg: &Config, vb: Source) -> candle_core::Result<Attention> {
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    Ok(Attention {
        q_proj: linear(h, cfg.num_attention_heads * d, vb.pp("q_proj"))?,
        k_proj: linear(h, cfg.num_key_value_heads * d, vb.pp("k_proj"))?,
        v_proj: linear(h, cfg.num_key_value_heads * d, vb.pp("v_proj"))?,
        o_proj: linear(cfg.num_attention_heads * d, h, vb.pp("o_proj"))?,
        q_norm: Some(RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("q_norm"))?),
        k_norm: Some(RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("k_norm"))?),
        n_heads: cfg.num_attention_heads,
        n_kv_heads: cfg.num_key_value_heads,
        head_dim: d,
        scale: cfg.query_pre_attn_scalar.powf(-0.5),
    })
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
            self_attn: attention(cfg, vb.pp("self_attn"))?,
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

    fn forward(
        &self,
        x: &Tensor,
        at: Step,
        cache: &mut KvCache,
        hooks: &mut Hooks,
    ) -> candle_core::Result<Tensor> {
        let (l, offset) = (Some(at.layer), at.offset);
        let mut tap = |name, y| hooks.tap(l, name, y, offset);
        let normed = tap(TensorName::AttnNorm, self.input_layernorm.forward(x)?)?;
        let attn = self.self_attn.forward(&normed, at, cache, hooks)?;
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
    pub(super) cfg: Config,
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
    pub fn from_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let mut f =
            std::fs::File::open(path).map_err(|e| ModelError::Io(format!("cannot open: {e}")))?;
        let c = Content::read(&mut f).map_err(|e| format!("not a readable GGUF file: {e}"))?;
        let cfg = Config::from_gguf(&c)?;
        let vb = var_builder(path, GGUF_LAYOUT, dtype, device)?;
        Model::new(&cfg, vb).map_err(|e| ModelError::Load(e.to_string()))
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
        forward_every_row(self, tokens, cache)
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
            let at = Step {
                rope,
                offset,
                mask,
                layer: i,
            };
            x = layer.forward(&x, at, kv, hooks)?;
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

own_model_under_test!(Model, "driftsweep::model::gemma3");

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
