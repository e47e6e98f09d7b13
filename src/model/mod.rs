//! Models: where they come from (`model.source`), what they are, and loading them once per
//! (model, dtype, device).

pub mod builtin;
pub mod decoder;
pub mod gemma3;
pub mod gguf;
pub mod hash_cache;
pub mod hf_dir;
pub mod hub;
pub mod spm;
pub mod under_test;

use candle_core::Device;
use tokenizers::Tokenizer;

use crate::dtype::RunDtype;
use crate::error::{Error, Result};
pub use decoder::{Cache, Config, Decoder};
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
    /// Reads config and tokenizer of a model source.
    pub fn inspect(source: &str) -> Result<Self> {
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
                })
            }
        }
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

    /// Loads the weights in `dtype` on `device`.
    pub fn load(&self, dtype: RunDtype, device: &Device) -> Result<Decoder> {
        let built = |vb| {
            Decoder::new(&self.config, vb)
                .map_err(|e| Error::model(&self.source, format!("in {dtype}: {e}")))
        };
        match &self.weights {
            Weights::Builtin => built(builtin::var_builder(&self.config, dtype.candle(), device)),
            Weights::Safetensors(files) => built(
                hf_dir::var_builder(files, dtype.candle(), device)
                    .map_err(|e| Error::model(&self.source, e))?,
            ),
            Weights::Gguf(path) => built(
                gguf::var_builder(path, &self.config, dtype.candle(), device)
                    .map_err(|e| Error::model(&self.source, e))?,
            ),
        }
    }
}
