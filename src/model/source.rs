//! Where a model comes from: the `model.source` string parsed, and where its weights are once
//! resolved.

use super::builtin;
use super::hub;
use crate::error::{Error, Result};

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
