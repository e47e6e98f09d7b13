//! Models: where they come from (`model.source`), what they are, and loading them once per
//! (model, dtype, device). Each family has its folder (`llama/`, `gemma3/`); the parts their
//! decoders share are in `layers/`; [`family`] is the one table of architectures.

pub mod builtin;
pub mod candle_transformers;
pub mod custom;
pub mod error;
pub mod family;
pub mod gemma3;
pub mod gguf;
pub mod hash_cache;
pub mod header;
pub mod hf_dir;
pub mod hub;
pub mod layers;
pub mod llama;
pub mod source;
pub mod spm;
pub mod under_test;

use candle_core::Device;
use tokenizers::Tokenizer;

use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::{Error, Result};
pub use custom::{CustomInfo, CustomLoader, CustomModel};
pub use error::ModelError;
pub use family::{Architecture, Family, Sizes};
pub use layers::{Cache, Source};
pub use llama::{Config, Decoder};
pub use source::{ModelSource, Weights};
pub use under_test::{Capabilities, Fault, KeptCache, ModelUnderTest, Probes, Rows, Sequence};

/// What is known about a model without loading its weights: enough to plan a sweep and
/// tokenize its prompts.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The `model.source` string.
    pub source: String,
    /// The architecture (its name is report.json's).
    pub architecture: Architecture,
    /// The family with its hyper-parameters (for a custom model: its loader and sizes).
    pub family: Family,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Id prepended to every text prompt, if the model uses one.
    pub bos_id: Option<u32>,
    /// Ids never drawn for random prompts or continuations (special tokens).
    pub special_ids: Vec<u32>,
    /// End-of-sequence id (where `generate` stops).
    pub eos_id: Option<u32>,
    /// Let the tokenizer's own post-processor add its special tokens (tokenizer.json files
    /// know whether their model wants BOS); otherwise `bos_id` is prepended by hand.
    pub tokenizer_adds_specials: bool,
    /// sha256 identity of the weights (for generated weights: of the recipe).
    pub sha256: String,
    /// Where the weights are, resolved once (an `hf:` id is looked up in the cache once, a
    /// directory's files listed and their headers checked once), so each load only loads.
    pub weights: Weights,
}

impl ModelInfo {
    /// A user's own model, run from Rust under the engine `custom` (docs/own_model.md).
    pub fn from_custom(c: custom::CustomInfo) -> Self {
        let tokenizer = c
            .tokenizer
            .unwrap_or_else(|| Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default()));
        let sizes = Sizes {
            vocab_size: c.vocab_size,
            num_layers: c.num_layers,
            context_len: c.context_len,
        };
        let special_ids = tokenizer
            .get_added_tokens_decoder()
            .keys()
            .copied()
            .collect();
        ModelInfo {
            source: c.source,
            architecture: Architecture::Custom,
            family: Family::Custom(CustomLoader(c.model), sizes),
            tokenizer,
            bos_id: None,
            special_ids,
            eos_id: None,
            tokenizer_adds_specials: false,
            sha256: c.identity,
            weights: Weights::Builtin,
        }
    }

    /// A user's own model, run from Rust under the engine `custom`: `source` names it in
    /// reports (and `identity` stands for its weights' sha256 there), `tokenizer` tokenizes
    /// text prompts (random-token prompts need none of it), and `model` loads it.
    #[deprecated(note = "use `ModelInfo::from_custom(CustomInfo { .. })`: named sizes")]
    pub fn custom(
        source: &str,
        identity: &str,
        vocab_size: usize,
        num_layers: usize,
        context_len: usize,
        tokenizer: Tokenizer,
        model: std::sync::Arc<dyn CustomModel>,
    ) -> Self {
        Self::from_custom(custom::CustomInfo {
            source: source.to_string(),
            identity: identity.to_string(),
            vocab_size,
            num_layers,
            context_len,
            tokenizer: Some(tokenizer),
            model,
        })
    }

    /// Reads config and tokenizer of a model source, checked against its weights (see
    /// [`header`]).
    pub fn inspect(source: &str) -> Result<Self> {
        let info = Self::read(source)?;
        header::check_drawable(info.sizes().vocab_size, &info.special_ids, "the vocabulary")
            .map_err(|e| Error::model(source, e))?;
        Ok(info)
    }

    fn read(source: &str) -> Result<Self> {
        match ModelSource::parse(source)? {
            ModelSource::Builtin(name) => Self::read_builtin(source, &name),
            ModelSource::Gguf(path) => {
                let g = gguf::inspect(&path).map_err(|e| Error::model(source, e))?;
                Ok(ModelInfo {
                    source: source.to_string(),
                    architecture: g.architecture,
                    family: g.family,
                    tokenizer: g.tokenizer,
                    bos_id: g.bos_id,
                    special_ids: g.special_ids,
                    eos_id: g.eos_id,
                    tokenizer_adds_specials: false,
                    sha256: hash_cache::sha256(&path)
                        .map_err(|e| Error::model(source, format!("hashing: {e}")))?,
                    weights: Weights::Gguf(path),
                })
            }
            ModelSource::HfDir(dir) => Self::read_hf_dir(source, &dir),
        }
    }

    fn read_builtin(source: &str, name: &str) -> Result<Self> {
        let config = builtin::config();
        let tokenizer = builtin::tokenizer(config.vocab_size)
            .map_err(|e| Error::model(source, format!("building the tokenizer: {e}")))?;
        let special_ids: Vec<u32> = tokenizer
            .get_added_tokens_decoder()
            .keys()
            .copied()
            .collect();
        let bos_id = tokenizer.token_to_id(builtin::BOS);
        Ok(ModelInfo {
            source: source.to_string(),
            architecture: Architecture::Llama,
            sha256: builtin::recipe_sha256(name, &config),
            eos_id: tokenizer.token_to_id(builtin::EOS),
            tokenizer_adds_specials: false,
            family: Family::Llama(config),
            tokenizer,
            bos_id,
            special_ids,
            weights: Weights::Builtin,
        })
    }

    fn read_hf_dir(source: &str, dir: &std::path::Path) -> Result<Self> {
        let h = hf_dir::inspect(dir).map_err(|e| Error::model(source, e))?;
        let mut hashes = String::new();
        for f in &h.files {
            let one = hash_cache::sha256(f)
                .map_err(|e| Error::model(source, format!("hashing {}: {e}", f.display())))?;
            hashes.push_str(&one);
        }
        let special_ids = h
            .tokenizer
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        Ok(ModelInfo {
            source: source.to_string(),
            architecture: h.architecture,
            family: h.family,
            tokenizer: h.tokenizer,
            bos_id: None,
            special_ids,
            eos_id: h.eos_id,
            tokenizer_adds_specials: true,
            // One file: its own hash; several: the hash of their hashes in name order.
            sha256: if h.files.len() == 1 {
                hashes
            } else {
                use sha2::{Digest, Sha256};
                crate::fsutil::hex(&Sha256::digest(hashes.as_bytes()))
            },
            weights: Weights::Safetensors(h.files),
        })
    }

    /// This model with its context cut to `positions` where it claims more: the own
    /// decoders size their rotary tables by the context, and a sweep never feeds more than
    /// its longest sequence, so a file that merely claims a huge context costs nothing.
    pub fn sized_for(&self, positions: usize) -> ModelInfo {
        let mut m = self.clone();
        m.family.cap_context(positions.max(1));
        m
    }

    /// The implementation and weight format of this model's f32 reference (the
    /// continuations' model and every other load's yardstick): the own decoder on dequantized
    /// weights; for a model given from Rust its own engine; for an architecture without an own
    /// decoder, candle-transformers on the weights as the files hold them (a GGUF file's
    /// blocks, or the safetensors), so its yardstick is its own f32 prefill.
    pub fn reference_load(&self) -> (Engine, WeightFormat) {
        match (&self.family, &self.weights) {
            (Family::Custom(..), _) => (Engine::Custom, WeightFormat::Dequantized),
            (Family::Foreign(_), Weights::Gguf(_)) => {
                (Engine::CandleTransformers, WeightFormat::Quantized)
            }
            (Family::Foreign(_), _) => (Engine::CandleTransformers, WeightFormat::Dequantized),
            _ => (Engine::Driftsweep, WeightFormat::Dequantized),
        }
    }

    /// Whether this is a model given from Rust ([`ModelInfo::custom`]).
    pub fn is_custom(&self) -> bool {
        matches!(self.family, Family::Custom(..))
    }

    /// The sizes every model has (vocabulary, layers, context).
    pub fn sizes(&self) -> Sizes {
        self.family.sizes()
    }

    /// Context length: the largest prompt + span.
    pub fn context_len(&self) -> usize {
        self.sizes().context_len
    }

    /// Tokenizes a text prompt, with BOS in front when the model has one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, self.tokenizer_adds_specials)
            .map_err(|e| Error::model(&self.source, format!("tokenizing the prompt: {e}")))?;
        let mut ids: Vec<u32> = self.bos_id.into_iter().collect();
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Loads the own decoder's dequantized weights in `dtype` on `device`.
    pub fn load(&self, dtype: RunDtype, device: &Device) -> Result<Decoder> {
        self.load_decoder(WeightFormat::Dequantized, dtype, device)
    }

    /// Loads the own Llama-family decoder with `weights` in `dtype` on `device` (other
    /// families load through [`ModelInfo::load_own`]).
    pub fn load_decoder(
        &self,
        weights: WeightFormat,
        dtype: RunDtype,
        device: &Device,
    ) -> Result<Decoder> {
        let Family::Llama(config) = &self.family else {
            return Err(Error::model(
                &self.source,
                format!(
                    "{} is not a Llama-family decoder; load it with `load_own`",
                    self.family.name()
                ),
            ));
        };
        let src = self.own_source(weights, dtype, device)?;
        Decoder::new(config, src)
            .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}")))
    }

    /// Loads the own decoder of this model's family (the Llama-family [`Decoder`] or
    /// [`gemma3::Model`]) with `weights` in `dtype` on `device`.
    pub fn load_own(
        &self,
        weights: WeightFormat,
        dtype: RunDtype,
        device: &Device,
    ) -> Result<Box<dyn ModelUnderTest>> {
        if let Family::Llama(_) = self.family {
            return Ok(Box::new(self.load_decoder(weights, dtype, device)?));
        }
        let src = self.own_source(weights, dtype, device)?;
        self.family
            .load_own(src)
            .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}")))
    }

    /// The own decoders' weights: dense in `dtype`, plus the GGUF blocks of the projections
    /// for quantized weights.
    fn own_source(
        &self,
        weights: WeightFormat,
        dtype: RunDtype,
        device: &Device,
    ) -> Result<Source<'static>> {
        let model_err = |e: ModelError| Error::model(&self.source, e);
        match (&self.weights, weights, &self.family) {
            (Weights::Builtin, WeightFormat::Dequantized, Family::Llama(config)) => Ok(
                Source::dense(builtin::var_builder(config, dtype.candle(), device)),
            ),
            (Weights::Safetensors(files), WeightFormat::Dequantized, _) => Ok(Source::dense(
                hf_dir::var_builder(files, dtype.candle(), device).map_err(model_err)?,
            )),
            (Weights::Gguf(path), _, family) => {
                let Some(layout) = family.gguf_layout() else {
                    return Err(model_err(ModelError::Unsupported(format!(
                        "{} has no GGUF layout",
                        self.family.name()
                    ))));
                };
                let vb =
                    gguf::var_builder(path, layout, dtype.candle(), device).map_err(model_err)?;
                if weights == WeightFormat::Quantized {
                    let q = gguf::quantized_projections(path, layout, device).map_err(model_err)?;
                    Ok(Source::with_quantized(vb, q))
                } else {
                    Ok(Source::dense(vb))
                }
            }
            (Weights::Builtin, WeightFormat::Dequantized, _) => Err(model_err(
                ModelError::Unsupported("the built-in weights are Llama's".into()),
            )),
            (_, WeightFormat::Quantized, _) => Err(model_err(ModelError::Unsupported(
                "quantized weights need a GGUF file".into(),
            ))),
        }
    }

    /// What candle-transformers needs of this model.
    fn ct_target(&self) -> candle_transformers::Target<'_> {
        candle_transformers::Target {
            architecture: self.architecture,
            weights: &self.weights,
            family: &self.family,
            bos_id: self.bos_id,
            eos_id: self.eos_id,
        }
    }

    /// Whether `engine` can run this model with `weights` in `dtype`, and what it can do
    /// then; `Err` says why the combination does not exist.
    pub fn support(
        &self,
        engine: Engine,
        weights: WeightFormat,
        dtype: RunDtype,
    ) -> std::result::Result<Capabilities, ModelError> {
        let unsupported = |m: String| Err(ModelError::Unsupported(m));
        if let Family::Custom(c, _) = &self.family {
            return match (engine, weights) {
                (Engine::Custom, WeightFormat::Dequantized) => Ok(c.0.capabilities()),
                (Engine::Custom, WeightFormat::Quantized) => unsupported(
                    "a custom model holds its weights as it loads them: use `dequantized`".into(),
                ),
                _ => unsupported(format!(
                    "`{}` is a model given from Rust: its engine is `custom`",
                    self.source
                )),
            };
        }
        match engine {
            Engine::Custom => unsupported(
                "engine `custom` is a model given from Rust through `ModelInfo::from_custom` \
                 (examples/own_model.rs); the command line runs `driftsweep` and \
                 `candle-transformers`"
                    .into(),
            ),
            Engine::Driftsweep if matches!(self.family, Family::Foreign(_)) => {
                unsupported(format!(
                    "driftsweep has no own decoder for architecture `{}`: engine \
                 `candle-transformers` runs it",
                    self.architecture
                ))
            }
            Engine::Driftsweep => match (&self.weights, weights) {
                (Weights::Gguf(_), _) | (_, WeightFormat::Dequantized) => Ok(Capabilities::ALL),
                (_, WeightFormat::Quantized) => unsupported(format!(
                    "quantized weights need a GGUF file, and `{}` is not one",
                    self.source
                )),
            },
            Engine::CandleTransformers => {
                candle_transformers::module_for(&self.ct_target(), weights, dtype)
                    .map(|_| candle_transformers::CAPABILITIES)
            }
        }
    }

    /// Loads the model under test for one (engine, weights, dtype) group.
    pub fn load_under_test(
        &self,
        engine: Engine,
        weights: WeightFormat,
        dtype: RunDtype,
        device: &Device,
    ) -> Result<Box<dyn ModelUnderTest>> {
        match engine {
            Engine::Custom => match &self.family {
                Family::Custom(c, _) => {
                    c.0.load(dtype, device)
                        .map(|inner| {
                            Box::new(custom::Declared {
                                inner,
                                capabilities: c.0.capabilities(),
                            }) as Box<dyn ModelUnderTest>
                        })
                        .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}")))
                }
                _ => Err(Error::model(&self.source, "not a custom model".to_string())),
            },
            Engine::Driftsweep => self.load_own(weights, dtype, device),
            Engine::CandleTransformers => {
                candle_transformers::load(&self.ct_target(), weights, dtype, device)
                    .map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
                    .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_sizes_the_tables_by_what_it_feeds_never_above_the_claim() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let claimed = info.context_len();
        assert_eq!(info.sized_for(40).context_len(), 40);
        assert_eq!(info.sized_for(claimed * 4).context_len(), claimed);
        assert_eq!(info.sized_for(0).context_len(), 1);
        // A model sized for 40 positions runs 40 and refuses the 41st.
        let m = info
            .sized_for(40)
            .load_own(WeightFormat::Dequantized, RunDtype::F32, &Device::Cpu)
            .unwrap();
        let mut seq = m.sequence(41).unwrap();
        seq.forward(&[5; 40], Rows::None).unwrap();
        assert!(seq.forward(&[5], Rows::From(0)).is_err());
    }
}
