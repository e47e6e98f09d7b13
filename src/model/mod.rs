//! Models: where they come from (`model.source`), what they are, and loading them once per
//! (model, dtype, device).

pub mod builtin;
pub mod candle_transformers;
pub mod decoder;
pub mod gemma3;
mod gemv;
pub mod gguf;
pub mod hash_cache;
pub mod header;
pub mod hf_dir;
pub mod hub;
pub mod spm;
pub mod under_test;

use candle_core::Device;
use tokenizers::Tokenizer;

use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::{Error, Result};
pub use decoder::{Cache, Config, Decoder, Source};
pub use under_test::{Capabilities, Fault, ModelUnderTest, Probes, Rows, Sequence};

/// A parsed `model.source` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `builtin:<name>`.
    Builtin(String),
    /// A `.gguf` file (relative paths are relative to the working directory).
    Gguf(std::path::PathBuf),
    /// A directory in Hugging Face layout.
    HfDir(std::path::PathBuf),
}

impl ModelSource {
    /// Parses a `model.source` string.
    pub fn parse(source: &str) -> Result<Self> {
        if let Some(name) = source.strip_prefix("builtin:") {
            if builtin::NAMES.contains(&name) {
                return Ok(ModelSource::Builtin(name.to_string()));
            }
            return Err(Error::model(
                source,
                format!(
                    "no built-in model `{name}`; built-in models: {}",
                    builtin::NAMES.join(", ")
                ),
            ));
        }
        if let Some(id) = source.strip_prefix("hf:") {
            let id = hub::HubId::parse(id).map_err(|e| Error::model(source, e))?;
            let dir = hub::snapshot_dir(&id).map_err(|e| Error::model(source, e))?;
            return Ok(ModelSource::HfDir(dir));
        }
        if std::path::Path::new(source).is_dir() {
            return Ok(ModelSource::HfDir(source.into()));
        }
        if source.ends_with(".gguf") {
            let path = std::path::PathBuf::from(source);
            if !path.is_file() {
                return Err(Error::model(
                    source,
                    "no such GGUF file (relative paths are taken from the working directory; \
                     scripts/fetch_smollm2.sh fetches SmolLM2-135M)",
                ));
            }
            return Ok(ModelSource::Gguf(path));
        }
        Err(Error::model(
            source,
            "unsupported source; use `builtin:<name>` (built-in models: tiny-llama), a `.gguf` file \
             or a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)",
        ))
    }
}

/// What is known about a model without loading its weights: enough to plan a sweep and
/// tokenize its prompts.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The `model.source` string.
    pub source: String,
    /// Architecture name, as in report.json.
    pub architecture: String,
    /// Hyper-parameters.
    pub config: Config,
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
    /// The user's own model, when it came from Rust ([`ModelInfo::custom`]).
    pub custom: Option<CustomLoader>,
    /// Gemma 3's hyper-parameters, when the model is Gemma 3: the own decoder is then
    /// [`gemma3::Model`], and `config` holds the sizes every model has.
    pub gemma3: Option<gemma3::Config>,
}

/// A model the user brings from Rust: it loads itself in a dtype on a device. See
/// `examples/own_model.rs`.
pub trait CustomModel: Send + Sync {
    /// What its loaded models can do (pairs needing more are SKIPPED or refused at plan
    /// time, as for any engine).
    fn capabilities(&self) -> Capabilities;
    /// Loads it in `dtype` on `device`; `Err` says why not (its pairs are then INCOMPLETE
    /// with the reason).
    fn load(
        &self,
        dtype: RunDtype,
        device: &Device,
    ) -> std::result::Result<Box<dyn ModelUnderTest>, String>;
}

/// A shared [`CustomModel`] (a newtype so that [`ModelInfo`] stays `Debug` and `Clone`).
#[derive(Clone)]
pub struct CustomLoader(pub std::sync::Arc<dyn CustomModel>);

impl std::fmt::Debug for CustomLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomLoader")
    }
}

/// The resolved location of a model's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weights {
    /// Generated from the built-in seed.
    Builtin,
    /// A GGUF file.
    Gguf(std::path::PathBuf),
    /// Safetensors files (memory-mapped).
    Safetensors(Vec<std::path::PathBuf>),
}

impl ModelInfo {
    /// A user's own model, run from Rust under the engine `custom`: `source` names it in
    /// reports (and `identity` stands for its weights' sha256 there), `tokenizer` tokenizes
    /// text prompts (random-token prompts need none of it), and `model` loads it.
    pub fn custom(
        source: &str,
        identity: &str,
        vocab_size: usize,
        num_layers: usize,
        context_len: usize,
        tokenizer: Tokenizer,
        model: std::sync::Arc<dyn CustomModel>,
    ) -> Self {
        let config = Config {
            vocab_size,
            num_hidden_layers: num_layers,
            max_position_embeddings: context_len,
            // Not the own decoder's: nothing reads the rest for a custom model.
            hidden_size: 1,
            intermediate_size: 1,
            num_attention_heads: 1,
            num_key_value_heads: 1,
            rms_norm_eps: 0.0,
            rope_theta: 0.0,
            tie_word_embeddings: false,
            explicit_head_dim: None,
            attention_bias: false,
            qk_norm: false,
            sliding_window: None,
            rope_llama3: None,
        };
        let special_ids = tokenizer
            .get_added_tokens_decoder()
            .keys()
            .copied()
            .collect();
        ModelInfo {
            source: source.to_string(),
            architecture: "custom".into(),
            config,
            tokenizer,
            bos_id: None,
            special_ids,
            eos_id: None,
            tokenizer_adds_specials: false,
            sha256: identity.to_string(),
            weights: Weights::Builtin,
            custom: Some(CustomLoader(model)),
            gemma3: None,
        }
    }

    /// Reads config and tokenizer of a model source, checked against its weights (see
    /// [`header`]).
    pub fn inspect(source: &str) -> Result<Self> {
        let info = Self::read(source)?;
        header::check_drawable(info.config.vocab_size, &info.special_ids, "the vocabulary")
            .map_err(|e| Error::model(source, e))?;
        Ok(info)
    }

    fn read(source: &str) -> Result<Self> {
        match ModelSource::parse(source)? {
            ModelSource::Builtin(name) => {
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
                    architecture: "llama".into(),
                    sha256: builtin::recipe_sha256(&name, &config),
                    eos_id: tokenizer.token_to_id(builtin::EOS),
                    tokenizer_adds_specials: false,
                    config,
                    tokenizer,
                    bos_id,
                    special_ids,
                    weights: Weights::Builtin,
                    custom: None,
                    gemma3: None,
                })
            }
            ModelSource::Gguf(path) => {
                let g = gguf::inspect(&path).map_err(|e| Error::model(source, e))?;
                Ok(ModelInfo {
                    source: source.to_string(),
                    architecture: g.architecture,
                    config: g.config,
                    tokenizer: g.tokenizer,
                    bos_id: g.bos_id,
                    special_ids: g.special_ids,
                    eos_id: g.eos_id,
                    tokenizer_adds_specials: false,
                    sha256: hash_cache::sha256(&path)
                        .map_err(|e| Error::model(source, format!("hashing: {e}")))?,
                    weights: Weights::Gguf(path),
                    custom: None,
                    gemma3: g.gemma3,
                })
            }
            ModelSource::HfDir(dir) => {
                let h = hf_dir::inspect(&dir).map_err(|e| Error::model(source, e))?;
                let mut hashes = String::new();
                for f in &h.files {
                    let one = hash_cache::sha256(f).map_err(|e| {
                        Error::model(source, format!("hashing {}: {e}", f.display()))
                    })?;
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
                    config: h.config,
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
                    custom: None,
                    gemma3: None,
                })
            }
        }
    }

    /// This model with its context cut to `positions` where it claims more: the own
    /// decoders size their rotary tables by the context, and a sweep never feeds more than
    /// its longest sequence, so a file that merely claims a huge context costs nothing.
    pub fn sized_for(&self, positions: usize) -> ModelInfo {
        let mut m = self.clone();
        let n = positions.max(1);
        m.config.max_position_embeddings = m.config.max_position_embeddings.min(n);
        if let Some(g) = &mut m.gemma3 {
            g.max_position_embeddings = g.max_position_embeddings.min(n);
        }
        m
    }

    /// Context length: the largest prompt + span.
    pub fn context_len(&self) -> usize {
        self.config.max_position_embeddings
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

    /// Loads the own Llama-family decoder with `weights` in `dtype` on `device` (Gemma 3
    /// loads through [`ModelInfo::load_own`]).
    pub fn load_decoder(
        &self,
        weights: WeightFormat,
        dtype: RunDtype,
        device: &Device,
    ) -> Result<Decoder> {
        if self.gemma3.is_some() {
            return Err(Error::model(
                &self.source,
                "Gemma 3 is not a Llama-family decoder; load it with `load_own`".to_string(),
            ));
        }
        let src = self.own_source(weights, dtype, device)?;
        Decoder::new(&self.config, src)
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
        match &self.gemma3 {
            Some(g) => {
                let src = self.own_source(weights, dtype, device)?;
                gemma3::Model::new(g, src)
                    .map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
                    .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}")))
            }
            None => Ok(Box::new(self.load_decoder(weights, dtype, device)?)),
        }
    }

    /// The own decoders' weights: dense in `dtype`, plus the GGUF blocks of the projections
    /// for quantized weights.
    fn own_source(
        &self,
        weights: WeightFormat,
        dtype: RunDtype,
        device: &Device,
    ) -> Result<Source<'static>> {
        let model_err = |e| Error::model(&self.source, e);
        match (&self.weights, weights) {
            (Weights::Builtin, WeightFormat::Dequantized) => Ok(Source::dense(
                builtin::var_builder(&self.config, dtype.candle(), device),
            )),
            (Weights::Safetensors(files), WeightFormat::Dequantized) => Ok(Source::dense(
                hf_dir::var_builder(files, dtype.candle(), device).map_err(model_err)?,
            )),
            (Weights::Gguf(path), _) => {
                let layout = gguf::Layout::of(&self.architecture, &self.config);
                let vb =
                    gguf::var_builder(path, layout, dtype.candle(), device).map_err(model_err)?;
                if weights == WeightFormat::Quantized {
                    let q = gguf::quantized_projections(path, layout, device).map_err(model_err)?;
                    Ok(Source::with_quantized(vb, q))
                } else {
                    Ok(Source::dense(vb))
                }
            }
            (_, WeightFormat::Quantized) => {
                Err(model_err("quantized weights need a GGUF file".to_string()))
            }
        }
    }

    /// Whether `engine` can run this model with `weights` in `dtype`, and what it can do
    /// then; `Err` says why the combination does not exist.
    pub fn support(
        &self,
        engine: Engine,
        weights: WeightFormat,
        dtype: RunDtype,
    ) -> std::result::Result<Capabilities, String> {
        if let Some(c) = &self.custom {
            return match (engine, weights) {
                (Engine::Custom, WeightFormat::Dequantized) => Ok(c.0.capabilities()),
                (Engine::Custom, WeightFormat::Quantized) => Err(
                    "a custom model holds its weights as it loads them: use `dequantized`".into(),
                ),
                _ => Err(format!(
                    "`{}` is a model given from Rust: its engine is `custom`",
                    self.source
                )),
            };
        }
        match engine {
            Engine::Custom => Err(
                "engine `custom` is a model given from Rust through `ModelInfo::custom` \
                 (examples/own_model.rs); the command line runs `driftsweep` and \
                 `candle-transformers`"
                    .into(),
            ),
            Engine::Driftsweep => match (&self.weights, weights) {
                (Weights::Gguf(_), _) | (_, WeightFormat::Dequantized) => Ok(Capabilities::ALL),
                (_, WeightFormat::Quantized) => Err(format!(
                    "quantized weights need a GGUF file, and `{}` is not one",
                    self.source
                )),
            },
            Engine::CandleTransformers => candle_transformers::module_for(self, weights, dtype)
                .map(|_| candle_transformers::CAPABILITIES),
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
            Engine::Custom => match &self.custom {
                Some(c) => {
                    c.0.load(dtype, device)
                        .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}")))
                }
                None => Err(Error::model(&self.source, "not a custom model".to_string())),
            },
            Engine::Driftsweep => self.load_own(weights, dtype, device),
            Engine::CandleTransformers => candle_transformers::load(self, weights, dtype, device)
                .map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
                .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}"))),
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
