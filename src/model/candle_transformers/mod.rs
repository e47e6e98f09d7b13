//! candle-transformers' own implementations as models under test (engine
//! `candle-transformers`), run as that crate ships them: what people who port or serve models
//! in candle actually run.
//!
//! Every one of them keeps its KV cache inside the model and returns the logits of the last
//! position only, so (see [`CAPABILITIES`]) a prefill's span logits come from one fresh
//! forward per prefix, no cache can be cut back to a prefix (so a kv_aligned pair decodes from
//! a prompt-only prefill: cache source `prompt_prefill`) and there are no layer taps or
//! faults. One sequence runs at a time on a loaded model: a sequence holds the model's lock
//! while it lives.
//!
//! The modules are built in group files (`dense_a.rs`, `dense_b.rs`, `recurrent.rs`,
//! `quantized.rs`), each answering for the [`CtModule`]s it knows; a new module is an arm
//! there and a row in the family table (`src/model/family/table.rs`).

mod dense_a;
mod dense_b;
mod dense_b2;
mod quantized;
mod quantized_hf;
mod recurrent;
mod stateful;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, TryLockError};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models as ct;

use super::builtin;
use super::error::ModelError;
use super::family::{Architecture, CtModule, CtWeights, Family};
use super::gguf;
use super::hf_dir;
use super::llama;
use super::source::Weights;
use super::under_test::{Capabilities, ModelUnderTest, Rows, Sequence};
use crate::dtype::RunDtype;
use crate::engine::WeightFormat;
use dense_a::LlamaState;
use stateful::{err, not_for};

pub use stateful::Stateful;

/// What candle-transformers' models can do for a run: the last row only, no cut-back cache,
/// no taps; their forwards take a batch of sequences of equal length (ids of shape (B, t)).
pub const CAPABILITIES: Capabilities = Capabilities {
    every_row: false,
    probes: false,
    cache_prefix: false,
    batch: true,
};

/// What candle-transformers needs to know of a model to run it.
pub struct Target<'a> {
    /// The architecture (which module runs it).
    pub architecture: Architecture,
    /// Where the weights are.
    pub weights: &'a Weights,
    /// The family with its hyper-parameters.
    pub family: &'a Family,
    /// BOS id, if any.
    pub bos_id: Option<u32>,
    /// End-of-sequence id, if any.
    pub eos_id: Option<u32>,
}

/// Architectures each weight format can run here, and why not otherwise: `Ok(module)` names
/// the candle-transformers module that runs it (the family table's cell).
pub fn module_for(
    target: &Target,
    weights: WeightFormat,
    dtype: RunDtype,
) -> Result<CtModule, ModelError> {
    let arch = target.architecture;
    let unsupported = |m: String| Err(ModelError::Unsupported(m));
    let (slot, none) = match (target.weights, weights) {
        (Weights::Gguf(_), WeightFormat::Quantized) => {
            if dtype != RunDtype::F32 {
                return unsupported(format!(
                    "candle-transformers' quantized models compute in f32 whatever the run \
                     dtype; {dtype} with quantized weights does not exist there"
                ));
            }
            (
                CtWeights::QuantizedGguf,
                format!("candle-transformers has no quantized model for architecture `{arch}`"),
            )
        }
        // The dequantized tensors under Hugging Face names, as the own decoder loads them.
        (Weights::Builtin | Weights::Gguf(_), WeightFormat::Dequantized) => (
            CtWeights::Dequantized,
            format!(
                "candle-transformers runs dequantized GGUF weights of `llama` only, not `{arch}`"
            ),
        ),
        (Weights::Safetensors(_), WeightFormat::Dequantized) => (
            CtWeights::Safetensors,
            format!("candle-transformers has no model for architecture `{arch}` here"),
        ),
        (Weights::Builtin | Weights::Safetensors(_), WeightFormat::Quantized) => {
            return unsupported("quantized weights need a GGUF file".into());
        }
    };
    arch.ct_module(slot).ok_or(ModelError::Unsupported(none))
}

/// Loads the candle-transformers model for `target` in `dtype` on `device` (the combination
/// was checked by [`module_for`] when the sweep was planned).
pub fn load(
    target: &Target,
    weights: WeightFormat,
    dtype: RunDtype,
    device: &Device,
) -> Result<CandleTransformersModel, ModelError> {
    let module = module_for(target, weights, dtype)?;
    let dt = dtype.candle();
    let model: Box<dyn Stateful> = match (target.weights, weights) {
        (Weights::Gguf(path), WeightFormat::Quantized) => {
            quantized::quantized(path, module, device)?
        }
        (Weights::Builtin, _) => {
            let cfg = llama_of(target)?;
            let vb = builtin::var_builder(cfg, dt, device);
            Box::new(
                LlamaState::new(vb, llama_config(target, cfg), dt, device).map_err(err(module))?,
            )
        }
        (Weights::Gguf(path), _) => {
            let cfg = llama_of(target)?;
            let vb = gguf::var_builder(path, llama::gguf_layout(cfg), dt, device)?;
            Box::new(
                LlamaState::new(vb, llama_config(target, cfg), dt, device).map_err(err(module))?,
            )
        }
        (Weights::Safetensors(files), _) => safetensors(files, module, dt, device)?,
    };
    let sizes = target.family.sizes();
    Ok(CandleTransformersModel {
        module: module.as_str(),
        inner: Mutex::new(model),
        vocab: sizes.vocab_size,
        context: sizes.context_len,
        layers: sizes.num_layers,
        device: device.clone(),
    })
}

/// The Llama config the dense `llama` module runs on.
fn llama_of<'a>(target: &Target<'a>) -> Result<&'a llama::Config, ModelError> {
    match target.family {
        Family::Llama(c) => Ok(c),
        Family::Gemma3(_) | Family::Custom(..) | Family::Foreign(_) => {
            Err(ModelError::Unsupported(format!(
                "candle-transformers runs dequantized GGUF weights of `llama` only, not `{}`",
                target.architecture
            )))
        }
    }
}

/// Quantized `module` on the GGUF file at `path` as it ships (what a sweep's quantized
/// candle-transformers load runs, without the family table's choice of module).
pub fn load_quantized(
    path: &std::path::Path,
    module: CtModule,
    device: &Device,
) -> Result<Box<dyn Stateful>, ModelError> {
    quantized::quantized(path, module, device)
}

/// A dense module on a Hugging Face directory's safetensors, configured by its config.json.
fn safetensors(
    files: &[std::path::PathBuf],
    module: CtModule,
    dt: DType,
    device: &Device,
) -> Result<Box<dyn Stateful>, ModelError> {
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .ok_or(ModelError::Io("no weight files".into()))?;
    let text = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| ModelError::Io(format!("config.json: {e}")))?;
    let vb = hf_dir::var_builder(files, dt, device)?;
    build(module, &text, vb)
}

/// Builds dense `module` from the text of its `config.json` on the weights of `vb` (a
/// checkpoint's, or [`crate::synth`]'s recorder, which learns the tensor names this way). A
/// module that panics while it builds (granite unwraps each layer's load, granite.rs:451)
/// gives an error naming it, not a crash.
pub fn build(
    module: CtModule,
    config_json: &str,
    vb: VarBuilder<'_>,
) -> Result<Box<dyn Stateful>, ModelError> {
    catch_unwind(AssertUnwindSafe(|| build_module(module, config_json, vb))).unwrap_or_else(
        |payload| {
            Err(ModelError::Load(format!(
                "candle-transformers {} panicked while building: {}",
                module.as_str(),
                panic_text(payload.as_ref())
            )))
        },
    )
}

/// [`build`]: each module file's `build` in turn, the first that knows `module` builds it.
fn build_module(
    module: CtModule,
    text: &str,
    vb: VarBuilder<'_>,
) -> Result<Box<dyn Stateful>, ModelError> {
    if let Some(r) = dense_a::build(module, text, vb.clone()) {
        return r;
    }
    if let Some(r) = dense_b::build(module, text, vb.clone()) {
        return r;
    }
    if let Some(r) = recurrent::build(module, text, vb.clone()) {
        return r;
    }
    Err(not_for(module, "safetensors"))
}

/// The message of a panic's payload (a `&str` or a `String`, as `panic!` makes them).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// candle-transformers' Llama configuration from the hyper-parameters driftsweep read.
fn llama_config(target: &Target, c: &llama::Config) -> ct::llama::Config {
    ct::llama::Config {
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        vocab_size: c.vocab_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads,
        use_flash_attn: false,
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta as f32,
        bos_token_id: target.bos_id,
        eos_token_id: target.eos_id.map(ct::llama::LlamaEosToks::Single),
        rope_scaling: c.rope_llama3.map(|r| ct::llama::Llama3RopeConfig {
            factor: r.factor as f32,
            low_freq_factor: r.low_freq_factor as f32,
            high_freq_factor: r.high_freq_factor as f32,
            original_max_position_embeddings: r.original_max_position_embeddings,
            rope_type: ct::llama::Llama3RopeType::Llama3,
        }),
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
    }
}

/// A loaded candle-transformers model.
pub struct CandleTransformersModel {
    module: &'static str,
    inner: Mutex<Box<dyn Stateful>>,
    vocab: usize,
    context: usize,
    layers: usize,
    device: Device,
}

impl ModelUnderTest for CandleTransformersModel {
    fn engine(&self) -> &str {
        "candle-transformers"
    }
    fn implementation(&self) -> String {
        format!("candle_transformers::models::{}", self.module)
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn context_len(&self) -> usize {
        self.context
    }
    fn num_layers(&self) -> usize {
        self.layers
    }
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn sequence(&self, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        self.batch(1, capacity)
    }

    fn batch(&self, rows: usize, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        if capacity > self.context {
            candle_core::bail!(
                "{capacity} positions exceed the model's context of {}",
                self.context
            );
        }
        // Never blocks in driftsweep's runs, which hold one sequence at a time; a second
        // live sequence would silently share the first one's cache, so it is an error.
        let mut model = match self.inner.try_lock() {
            Ok(m) => m,
            // A sequence that panicked with the lock held leaves it poisoned; the model
            // itself is whole (a panic mid-forward leaves at worst a half-filled cache), and
            // the clear below empties that, so the next pair runs.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => candle_core::bail!(
                "candle-transformers models run one sequence at a time (their cache lives \
                 inside the model)"
            ),
        };
        model.clear();
        Ok(Box::new(StatefulSequence {
            module: self.module,
            model,
            len: 0,
            batch: rows.max(1),
            vocab: self.vocab,
            device: &self.device,
        }))
    }
}

/// A sequence (or a batch of them) on a candle-transformers model: the model itself, locked.
struct StatefulSequence<'a> {
    /// The module's name, for messages.
    module: &'static str,
    model: MutexGuard<'a, Box<dyn Stateful>>,
    len: usize,
    batch: usize,
    vocab: usize,
    device: &'a Device,
}

impl Sequence for StatefulSequence<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn forward(&mut self, tokens: &[u32], rows: Rows) -> candle_core::Result<Option<Tensor>> {
        if tokens.is_empty() || !tokens.len().is_multiple_of(self.batch) {
            candle_core::bail!(
                "{} token ids do not make {} non-empty sequences of equal length",
                tokens.len(),
                self.batch
            );
        }
        let t = tokens.len() / self.batch;
        if let Rows::From(i) = rows
            && i + 1 != t
        {
            candle_core::bail!("candle-transformers models return the last row's logits only");
        }
        let x = Tensor::new(tokens, self.device)?.reshape((self.batch, t))?;
        // A module that panics inside candle fails this pair, not the sweep.
        let model = &mut self.model;
        let len = self.len;
        let logits = catch_unwind(AssertUnwindSafe(|| model.forward(&x, len))).map_err(|p| {
            candle_core::Error::Msg(format!(
                "candle-transformers {} panicked: {}",
                self.module,
                panic_text(p.as_ref())
            ))
        })??;
        self.len += t;
        match rows {
            Rows::None => Ok(None),
            // Whatever the model's output rank ((B, vocab) or (B, 1, vocab)), one f32 row per
            // sequence.
            Rows::From(_) => Ok(Some(
                logits
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .reshape((self.batch, self.vocab))?,
            )),
        }
    }
}

#[cfg(test)]
mod tests;
