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
//! Numerics as in the Llama decoder (decoder.rs): RoPE tables in f32, softmax in f32, RMSNorm
//! through `candle_nn::ops::rms_norm` (f32 accumulation), logits returned as f32.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{Embedding, VarBuilder};

pub use super::decoder::Cache;
use super::decoder::{Gate, Linear, Mlp, Rope, attend, causal_mask, check_positions, linear};

/// RoPE base of the local (sliding-window) layers: transformers' `rope_local_base_freq`.
pub const LOCAL_ROPE_BASE: f64 = 10_000.0;
/// Every `SLIDING_WINDOW_PATTERN`-th layer is global.
pub const SLIDING_WINDOW_PATTERN: usize = 6;

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
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
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
    fn new(cfg: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
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

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((b, t, n, self.head_dim))?.transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(x)?, self.n_heads)?;
        let q = rope.apply(&self.q_norm.forward(&q)?, offset)?;
        let k = heads(self.k_proj.forward(x)?, self.n_kv_heads)?;
        let k = rope.apply(&self.k_norm.forward(&k)?, offset)?;
        let v = heads(self.v_proj.forward(x)?, self.n_kv_heads)?.contiguous()?;
        let (k, v) = cache.append(&k, &v)?;
        let y = attend(&q, k, v, self.n_heads / self.n_kv_heads, self.scale, mask)?;
        self.o_proj.forward(&y)
    }
}

/// One block: norms before and after both attention and MLP.
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
    fn new(cfg: &Config, layer: usize, vb: VarBuilder) -> candle_core::Result<Self> {
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

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> candle_core::Result<Tensor> {
        let attn =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, rope, offset, mask, cache)?;
        let x = (x + self.post_attention_layernorm.forward(&attn)?)?;
        let mlp = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&x)?)?;
        x + self.post_feedforward_layernorm.forward(&mlp)?
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
    dtype: DType,
    device: Device,
}

impl Model {
    /// Builds the model from checkpoint-named weights in `vb`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let (dtype, dev) = (vb.dtype(), vb.device().clone());
        let embed = vb
            .pp("model.embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        // transformers: float32 buffer of hidden_size ** 0.5, cast to the weights' dtype.
        let embed_scale =
            Tensor::new(&[(cfg.hidden_size as f64).sqrt() as f32], &dev)?.to_dtype(dtype)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, i, vb.pp(format!("model.layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Model {
            embed_tokens: Embedding::new(embed.clone(), cfg.hidden_size),
            embed_scale,
            layers,
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("model.norm"))?,
            lm_head: Linear::new(embed, None)?,
            rope_global: rope(cfg.rope_theta, cfg, dtype, &dev)?,
            rope_local: rope(cfg.rope_local_base_freq, cfg, dtype, &dev)?,
            cfg: cfg.clone(),
            dtype,
            device: dev,
        })
    }

    /// Loads a GGUF file: every tensor dequantized to f32, cast to `dtype` on `device`.
    pub fn from_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Self, String> {
        let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let c = Content::read(&mut f).map_err(|e| format!("not a readable GGUF file: {e}"))?;
        let cfg = Config::from_gguf(&c)?;
        let mut tensors = HashMap::new();
        for name in c.tensor_infos.keys() {
            let Some(hf) = hf_name(name) else { continue };
            let t = c
                .tensor(&mut f, name, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            tensors.insert(hf, t);
        }
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
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
        let t = tokens.len();
        let offset = cache.seq_len();
        check_positions(t, offset, self.cfg.max_position_embeddings)?;
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mut x = self
            .embed_tokens
            .forward(&input)?
            .broadcast_mul(&self.embed_scale)?;
        let global = (t > 1)
            .then(|| causal_mask(t, offset, None, self.dtype, &self.device))
            .transpose()?;
        let window = self.cfg.sliding_window;
        let local = (t > 1 || offset + t > window)
            .then(|| causal_mask(t, offset, Some(window), self.dtype, &self.device))
            .transpose()?;
        for (layer, kv) in self.layers.iter().zip(cache.layers_mut().iter_mut()) {
            let (rope, mask) = if layer.global {
                (&self.rope_global, global.as_ref())
            } else {
                (&self.rope_local, local.as_ref())
            };
            x = layer.forward(&x, rope, offset, mask, kv)?;
        }
        let x = self.norm.forward(&x)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32)?.squeeze(0)
    }
}

/// GGUF tensor name → checkpoint name: Gemma's own norms here, the rest as for Llama.
fn hf_name(name: &str) -> Option<String> {
    let gemma = name
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(layer, t)| {
            let hf = match t {
                "attn_q_norm.weight" => "self_attn.q_norm.weight",
                "attn_k_norm.weight" => "self_attn.k_norm.weight",
                "post_attention_norm.weight" => "post_attention_layernorm.weight",
                "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
                "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
                _ => return None,
            };
            Some(format!("model.layers.{layer}.{hf}"))
        });
    gemma.or_else(|| super::gguf::hf_name(name))
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
