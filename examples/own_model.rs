//! Your own candle model under test: a sweep of prefill against decode on a small causal
//! attention model written here, run from Rust.
//!
//! `cargo run --release --example own_model -- [RESULTS_DIR]` writes the usual results
//! directory (report.md, report.json, …) and prints the verdict. The model is a one-layer,
//! one-head causal attention block with a KV cache; its weights are seeded random numbers.
//! What driftsweep needs from a model is the `ModelUnderTest` trait: a vocabulary, a context
//! length, and sequences that take token ids at their offset and return f32 logits.

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use driftsweep::dtype::RunDtype;
use driftsweep::model::{Capabilities, CustomModel, ModelInfo, ModelUnderTest, Rows, Sequence};
use driftsweep::sweep::{self, Silent, SweepOptions};

const VOCAB: usize = 96;
const DIM: usize = 32;
const CONTEXT: usize = 256;

/// The model's hyper-parameters: one attention head over a `dim`-wide residual stream.
struct Config {
    vocab_size: usize,
    dim: usize,
    context: usize,
}

/// Embedding → one causal attention head (with its KV cache) → residual → output head.
struct TinyAttention {
    embed: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    head: Tensor,
    cfg: Config,
    device: Device,
}

impl TinyAttention {
    /// Seeded random weights in `dtype` (drawn in f32, then rounded once).
    fn new(cfg: Config, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let scale = 1.0 / (cfg.dim as f64).sqrt();
        let w = |rows: usize, cols: usize, seed: u64| -> candle_core::Result<Tensor> {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0f32..1.0) * scale as f32)
                .collect();
            Tensor::from_vec(v, (rows, cols), device)?.to_dtype(dtype)
        };
        Ok(TinyAttention {
            embed: w(cfg.vocab_size, cfg.dim, 1)?,
            wq: w(cfg.dim, cfg.dim, 2)?,
            wk: w(cfg.dim, cfg.dim, 3)?,
            wv: w(cfg.dim, cfg.dim, 4)?,
            wo: w(cfg.dim, cfg.dim, 5)?,
            head: w(cfg.vocab_size, cfg.dim, 6)?,
            cfg,
            device: device.clone(),
        })
    }

    /// Logits of `tokens` fed at position `cache.len`, appending their keys and values.
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let t = tokens.len();
        let ids = Tensor::new(tokens, &self.device)?;
        let x = self.embed.index_select(&ids, 0)?; // (t, dim)
        let q = x.matmul(&self.wq.t()?)?;
        let k = x.matmul(&self.wk.t()?)?;
        let v = x.matmul(&self.wv.t()?)?;
        cache.append(&k, &v)?;
        let (ks, vs) = (cache.k.as_ref().unwrap(), cache.v.as_ref().unwrap());
        let n = cache.len;
        let scores = (q.matmul(&ks.t()?)? / (self.cfg.dim as f64).sqrt())?; // (t, n)
        // Causal: the query at position n − t + i sees keys 0..=n − t + i.
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..n).map(move |j| {
                    if j + t > n + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, n), &self.device)?.to_dtype(scores.dtype())?;
        // Softmax in f32 whatever the dtype, as most implementations do.
        let p = candle_nn::ops::softmax(&(scores + mask)?.to_dtype(DType::F32)?, D::Minus1)?;
        let att = p.to_dtype(vs.dtype())?.matmul(vs)?.matmul(&self.wo.t()?)?;
        let h = (x + att)?;
        h.matmul(&self.head.t()?)?.to_dtype(DType::F32)
    }
}

/// Keys and values of the positions fed so far, (len, dim) each.
#[derive(Default)]
struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl KvCache {
    fn append(&mut self, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let join = |old: &Option<Tensor>, new: &Tensor| match old {
            Some(o) => Tensor::cat(&[o, new], 0),
            None => Ok(new.clone()),
        };
        self.k = Some(join(&self.k, k)?);
        self.v = Some(join(&self.v, v)?);
        self.len += k.dim(0)?;
        Ok(())
    }
}

// ---- What driftsweep needs: the two traits. ----

impl ModelUnderTest for TinyAttention {
    fn engine(&self) -> &str {
        "custom"
    }
    fn implementation(&self) -> String {
        "examples/own_model.rs TinyAttention".into()
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn context_len(&self) -> usize {
        self.cfg.context
    }
    fn num_layers(&self) -> usize {
        1
    }
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn sequence(&self, _capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        Ok(Box::new(TinySequence {
            model: self,
            cache: KvCache::default(),
        }))
    }
}

/// Every row's logits and a cache that can be cut back; no layer taps.
const CAPABILITIES: Capabilities = Capabilities {
    every_row: true,
    probes: false,
    cache_prefix: true,
    batch: false,
};

struct TinySequence<'a> {
    model: &'a TinyAttention,
    cache: KvCache,
}

impl Sequence for TinySequence<'_> {
    fn len(&self) -> usize {
        self.cache.len
    }
    fn forward(&mut self, tokens: &[u32], rows: Rows) -> candle_core::Result<Option<Tensor>> {
        let logits = self.model.forward(tokens, &mut self.cache)?;
        match rows {
            Rows::None => Ok(None),
            Rows::From(i) => Ok(Some(logits.narrow(0, i, tokens.len() - i)?)),
        }
    }
    fn truncate(&mut self, len: usize) -> candle_core::Result<()> {
        let cut = |t: &Option<Tensor>| t.as_ref().map(|t| t.narrow(0, 0, len)).transpose();
        self.cache.k = cut(&self.cache.k)?;
        self.cache.v = cut(&self.cache.v)?;
        self.cache.len = len;
        Ok(())
    }
}

/// Loads the model in a run dtype.
struct Loader;

impl CustomModel for Loader {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }
    fn load(&self, dtype: RunDtype, device: &Device) -> Result<Box<dyn ModelUnderTest>, String> {
        let cfg = Config {
            vocab_size: VOCAB,
            dim: DIM,
            context: CONTEXT,
        };
        TinyAttention::new(cfg, dtype.candle(), device)
            .map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
            .map_err(|e| e.to_string())
    }
}

const SWEEP: &str = r#"
name: own_model
model: {source: "custom:tiny-attention"}
prompts:
  - {id: r12, random_tokens: 12}
continuation: greedy
sweep:
  span: [4, 16]
  dtype: [f32, bf16]
  kv_aligned: [false, true]
  seed: [0, 1]
  engine: [custom]
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "results/own_model".into());
    // Random-token prompts only: the tokenizer is never asked to encode text.
    let tokenizer = tokenizers::Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default());
    let info = ModelInfo::custom(
        "custom:tiny-attention",
        "seeded-random-v1",
        VOCAB,
        1,
        CONTEXT,
        tokenizer,
        Arc::new(Loader),
    );
    let cfg = driftsweep::config::parse(std::path::Path::new("own_model.yaml"), SWEEP)?;
    let opts = SweepOptions {
        out: Some(out.into()),
        start_over: true,
        ..Default::default()
    };
    let outcome = sweep::run_sweep_with_model(&cfg, info, &opts, &mut Silent)?;
    let r = &outcome.rendered.report;
    println!(
        "{}: {:?} — {} ({})",
        r.sweep.name,
        r.verdict,
        r.verdict_reason,
        outcome.rendered.dir.join("report.md").display()
    );
    Ok(())
}
