//! Your own candle model under test: a sweep of prefill against decode on a small causal
//! attention model written here, run from Rust, with layer taps and a fault that show at
//! which layer the two paths part (docs/own_model.md walks through it).
//!
//! `cargo run --release --example own_model -- [RESULTS_DIR] [--inject LAYER]` writes the
//! usual results directory (report.md, report.json, trace_report.md, …), prints the verdict
//! and the first failing layer, and exits with the sweep's exit code (0 pass, 1 fail, …), so
//! CI can gate on it. `--inject LAYER` scales that layer's attention output by 1 + 0.01 in
//! decode only: the trace then names the layer. The model is `LAYERS` causal attention
//! blocks with a KV cache each; its weights are seeded random numbers.

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use driftsweep::dtype::RunDtype;
use driftsweep::model::{
    Capabilities, CustomInfo, CustomModel, ModelInfo, ModelUnderTest, Probes, Rows, Sequence,
};
use driftsweep::sweep::{self, Silent, SweepOptions};
use driftsweep::trace::{Hooks, TensorName};

const VOCAB: usize = 96;
const DIM: usize = 32;
const CONTEXT: usize = 256;
const LAYERS: usize = 4;

/// The model's hyper-parameters: one attention head over a `dim`-wide residual stream.
struct Config {
    vocab_size: usize,
    dim: usize,
    context: usize,
}

/// One causal attention head's projections.
struct Block {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
}

/// Embedding → `LAYERS` × (one causal attention head with its KV cache, residual) → output
/// head.
struct TinyAttention {
    embed: Tensor,
    blocks: Vec<Block>,
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
        let blocks = (0..LAYERS as u64)
            .map(|l| {
                Ok(Block {
                    wq: w(cfg.dim, cfg.dim, 10 * l + 2)?,
                    wk: w(cfg.dim, cfg.dim, 10 * l + 3)?,
                    wv: w(cfg.dim, cfg.dim, 10 * l + 4)?,
                    wo: w(cfg.dim, cfg.dim, 10 * l + 5)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(TinyAttention {
            embed: w(cfg.vocab_size, cfg.dim, 1)?,
            blocks,
            head: w(cfg.vocab_size, cfg.dim, 6)?,
            cfg,
            device: device.clone(),
        })
    }

    /// Logits of `tokens` fed at position `caches[0].len`, appending their keys and values.
    /// `hooks` is driftsweep's tap: each layer's attention output and residual stream go
    /// through it, so a trace records them and a fault can scale them.
    fn forward(
        &self,
        tokens: &[u32],
        caches: &mut [KvCache],
        hooks: &mut Hooks,
    ) -> candle_core::Result<Tensor> {
        let offset = caches[0].len;
        let ids = Tensor::new(tokens, &self.device)?;
        let x = self.embed.index_select(&ids, 0)?; // (t, dim)
        let mut h = x;
        for (l, (block, cache)) in self.blocks.iter().zip(caches.iter_mut()).enumerate() {
            let att = self.attention(block, &h, cache)?;
            let att = tap(hooks, l, TensorName::AttnOut, att, offset)?;
            h = tap(hooks, l, TensorName::ResidOut, (h + att)?, offset)?;
        }
        h.matmul(&self.head.t()?)?.to_dtype(DType::F32)
    }

    /// One block's causal attention over its cache, after appending this forward's keys
    /// and values.
    fn attention(&self, b: &Block, x: &Tensor, cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let t = x.dim(0)?;
        let q = x.matmul(&b.wq.t()?)?;
        let k = x.matmul(&b.wk.t()?)?;
        let v = x.matmul(&b.wv.t()?)?;
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
        p.to_dtype(vs.dtype())?.matmul(vs)?.matmul(&b.wo.t()?)
    }
}

/// Hands a (t, d) tensor of layer `l` to driftsweep's tap, which takes (1, t, d) with the
/// first row at `offset`: it records it when traced and scales it when a fault targets it.
fn tap(
    hooks: &mut Hooks,
    l: usize,
    name: TensorName,
    x: Tensor,
    offset: usize,
) -> candle_core::Result<Tensor> {
    hooks
        .tap(Some(l), name, x.unsqueeze(0)?, offset)?
        .squeeze(0)
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
        LAYERS
    }
    // No `capabilities` here: the loader declares them once (below).
    fn device(&self) -> &Device {
        &self.device
    }
    fn sequence(&self, _capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        Ok(Box::new(TinySequence {
            model: self,
            caches: (0..LAYERS).map(|_| KvCache::default()).collect(),
            probes: Probes::default(),
        }))
    }
}

/// One sequence: a KV cache per layer, and the taps and fault driftsweep sets between
/// forwards.
struct TinySequence<'a> {
    model: &'a TinyAttention,
    caches: Vec<KvCache>,
    probes: Probes,
}

impl Sequence for TinySequence<'_> {
    fn len(&self) -> usize {
        self.caches[0].len
    }
    fn forward(&mut self, tokens: &[u32], rows: Rows) -> candle_core::Result<Option<Tensor>> {
        let fault = self.probes.fault.scale;
        let mut hooks = Hooks::new(self.probes.trace.as_mut(), fault);
        let logits = self.model.forward(tokens, &mut self.caches, &mut hooks)?;
        match rows {
            Rows::None => Ok(None),
            Rows::From(i) => Ok(Some(logits.narrow(0, i, tokens.len() - i)?)),
        }
    }
    fn truncate(&mut self, len: usize) -> candle_core::Result<()> {
        let cut = |t: &Option<Tensor>| t.as_ref().map(|t| t.narrow(0, 0, len)).transpose();
        for c in &mut self.caches {
            c.k = cut(&c.k)?;
            c.v = cut(&c.v)?;
            c.len = len;
        }
        Ok(())
    }
    fn probes(&mut self) -> Option<&mut Probes> {
        Some(&mut self.probes)
    }
}

/// Loads the model in a run dtype.
struct Loader;

impl CustomModel for Loader {
    /// The one declaration: every row's logits, a cache that can be cut back, and probes
    /// (layer taps and faults, through `Hooks` in `forward`); no batches.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            every_row: true,
            probes: true,
            cache_prefix: true,
            batch: false,
        }
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
trace: {layers: all, tensors: all, positions: last, on: failing}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inject: Option<usize> = match args.iter().position(|a| a == "--inject") {
        Some(i) => Some(args.get(i + 1).ok_or("--inject needs a layer")?.parse()?),
        None => None,
    };
    let out = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "results/own_model".into());
    let info = ModelInfo::from_custom(CustomInfo {
        source: "custom:tiny-attention".into(),
        identity: "seeded-random-v2".into(),
        vocab_size: VOCAB,
        num_layers: LAYERS,
        context_len: CONTEXT,
        // Random-token prompts only: no tokenizer needed.
        tokenizer: None,
        model: Arc::new(Loader),
    });
    // A fault is a line of the sweep file, as for the built-in models.
    let text = match inject {
        Some(l) => format!("{SWEEP}inject: {{tensor: attn_out, layer: {l}, epsilon: 0.01}}\n"),
        None => SWEEP.to_string(),
    };
    let cfg = driftsweep::config::parse(std::path::Path::new("own_model.yaml"), &text)?;
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
    // Where the paths part: the traced pairs' first failing records.
    let trace = outcome.rendered.dir.join("trace.json");
    if let Ok(t) = std::fs::read_to_string(&trace) {
        let t: serde_json::Value = serde_json::from_str(&t)?;
        let mut firsts: Vec<&str> = t["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["first_fail"].as_str())
            .filter(|f| *f != "none")
            .collect();
        firsts.dedup();
        println!("first failing record: {}", firsts.join(", "));
    }
    std::process::exit(r.verdict.exit_code());
}
