//! Synthetic checkpoints: a [`SynthSpec`](crate::config::SynthSpec) checked against its
//! architecture ([`check`]), its `config.json`, and deterministic weights at a trained-like
//! scale, written as a Hugging Face directory or a GGUF file that any loader reads
//! ([`files`]), once per spec into a cache ([`cache`]).
//!
//! The tensor names and shapes are the ones the architecture's candle-transformers module
//! asks for when it is built from that `config.json` ([`weights::record`]): they mirror the
//! checkpoint's names there, so no list of names is kept by hand.

pub mod arch;
pub mod cache;
pub mod check;
pub mod files;
pub mod gguf;
mod make;
pub mod tokenizer;
pub mod weights;

pub use check::SpecError;
pub use make::{Checkpoint, SynthError, build, checkpoint};

use crate::config::SynthSpec;
use crate::model::ModelInfo;

/// How reports name a synthetic model: `synthetic:<architecture>:<first 12 hex of its key>`.
pub fn label(spec: &SynthSpec) -> String {
    format!(
        "synthetic:{}:{}",
        spec.architecture,
        &cache::key(spec)[..12]
    )
}

/// The model `spec` describes, ready to sweep: checked, written once into the cache
/// ([`cache::root`]) or found there, and read back through [`ModelInfo::inspect`] like any
/// Hugging Face directory or GGUF file; its `source` is [`label`].
pub fn resolve(spec: &SynthSpec) -> Result<ModelInfo, SynthError> {
    check::check(spec)?;
    let made = cache::materialize(spec, &cache::root())?;
    let path = made.model_path.to_string_lossy().into_owned();
    let mut info = ModelInfo::inspect(&path).map_err(|e| {
        SynthError::Build(format!(
            "the synthetic checkpoint at {path} does not load: {e}"
        ))
    })?;
    info.source = label(spec);
    Ok(info)
}

#[cfg(test)]
mod tests;
