//! Where a model comes from: the `model.source` string parsed, and where its weights are once
//! resolved.

use super::builtin;
use super::hub;
use crate::error::{Error, Result};

/// Where `scripts/fetch_smollm2.sh` puts SmolLM2-135M, relative to the repository.
const SMOLLM2_DEFAULT: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A parsed `model.source` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `builtin:<name>`.
    Builtin(String),
    /// A `.gguf` file (a sweep file's relative paths were resolved from its directory).
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
                // The fetch script's hint only where it would put this very file.
                let hint = if path.ends_with(SMOLLM2_DEFAULT) {
                    "; `bash scripts/fetch_smollm2.sh` fetches it into models/"
                } else {
                    ""
                };
                return Err(Error::model(
                    source,
                    format!(
                        "no such GGUF file (a sweep file's relative paths are taken from its \
                         own directory){hint}"
                    ),
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
