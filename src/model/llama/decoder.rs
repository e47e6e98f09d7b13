//! The Llama family's own decoder (Llama, Mistral, Qwen2, Qwen3, the built-in model), built
//! from the shared layers ([`crate::model::layers`]).
//!
//! candle-transformers' models return only the last position's logits and expose no hidden
//! states (docs/design.md, "Models under test"); driftsweep needs logits at every position and
//! layer traces, so it owns the forward pass. Tensor names follow the Hugging Face layout
//! (`model.layers.N.self_attn.q_proj.weight`, ...), so weights load by name.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Embedding, RmsNorm};

use super::config::Config;
use crate::model::layers::{
    Attention, Cache, Gate, Linear, Mlp, OwnForward, RmsNorm as HeadNorm, Rope, Source, Step,
    batch_input, causal_mask, check_positions, forward_every_row, head_rows, linear, linear_b,
    own_model_under_test,
};
use crate::model::under_test::{Fault, Rows};
use crate::trace::{Hooks, TensorName};

fn rms_norm(dim: usize, eps: f64, vb: Source) -> candle_core::Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(dim, "weight")?, eps))
}

/// The Llama family's attention: biases on Q/K/V when the config asks (Qwen2), per-head
/// Q/K norms when it asks (Qwen3), scores scaled by head_dim^-1/2.
fn attention(cfg: &Config, vb: Source) -> candle_core::Result<Attention> {
    let hd = cfg.head_dim();
    let h = cfg.hidden_size;
    let bias = cfg.attention_bias;
    let norm = |name: &str| -> candle_core::Result<Option<HeadNorm>> {
        if cfg.qk_norm {
            HeadNorm::new(hd, cfg.rms_norm_eps, vb.pp(name)).map(Some)
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
        scale: 1.0 / (hd as f64).sqrt(),
    })
}

/// The RoPE tables of `cfg`, with Llama 3's frequency scaling when it has one.
fn rope(cfg: &Config, dtype: DType, dev: &Device) -> candle_core::Result<Rope> {
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
            self_attn: attention(cfg, vb.pp("self_attn"))?,
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

    fn forward(
        &self,
        x: &Tensor,
        at: Step,
        cache: &mut KvCache,
        hooks: &mut Hooks,
    ) -> candle_core::Result<Tensor> {
        let (l, offset) = (Some(at.layer), at.offset);
        let normed = hooks.tap(
            l,
            TensorName::AttnNorm,
            self.input_layernorm.forward(x)?,
            offset,
        )?;
        let attn = self.self_attn.forward(&normed, at, cache, hooks)?;
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
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
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
            rope: rope(cfg, vb.dtype(), vb.device())?,
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
        forward_every_row(self, tokens, cache)
    }
}

own_model_under_test!(Decoder, "driftsweep");

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
        for (i, (layer, kv)) in self
            .layers
            .iter()
            .zip(cache.layers_mut().iter_mut())
            .enumerate()
        {
            let at = Step {
                rope: &self.rope,
                offset,
                mask: mask.as_ref(),
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
