//! Making a checkpoint in memory: the architecture's `config.json` from a checked spec, then
//! the tensors its dense candle-transformers module asks for when built from it.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::check::{self, SpecError};
use super::{arch, weights};
use crate::config::SynthSpec;
use crate::model::candle_transformers;
use crate::model::family::{Architecture, CtWeights};

/// A synthetic checkpoint in memory: its `config.json` and its tensors (f32) by name.
#[derive(Debug)]
pub struct Checkpoint {
    /// The architecture.
    pub architecture: Architecture,
    /// `config.json`, `spec.config`'s extra fields included.
    pub config: serde_json::Value,
    /// Every tensor its candle-transformers module reads.
    pub tensors: BTreeMap<String, Tensor>,
}

/// Why a synthetic checkpoint could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SynthError {
    /// The spec is refused (bad input: the field is named).
    Spec(SpecError),
    /// The spec is sound but its checkpoint could not be made or read back (the module
    /// failed to build from its own `config.json`, or the loader refused the files): a
    /// finding about a module or about driftsweep, never the user's input.
    Build(String),
    /// The files could not be written or read (`path: error`).
    Io(String),
}

impl std::fmt::Display for SynthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SynthError::Spec(e) => e.fmt(f),
            SynthError::Build(m) | SynthError::Io(m) => f.write_str(m),
        }
    }
}

impl From<SpecError> for SynthError {
    fn from(e: SpecError) -> Self {
        SynthError::Spec(e)
    }
}

/// Makes the checkpoint `spec` describes: the architecture's `config.json`, then the tensors
/// its dense candle-transformers module asks for when built from it.
pub fn checkpoint(spec: &SynthSpec) -> Result<Checkpoint, String> {
    build(spec).map_err(|e| e.to_string())
}

/// [`checkpoint`] with a typed error: the spec is checked first ([`check::check`]).
pub fn build(spec: &SynthSpec) -> Result<Checkpoint, SynthError> {
    let architecture = check::check(spec)?;
    let mut config = arch::config_json(architecture, spec).map_err(SpecError::from_arch)?;
    for (k, v) in &spec.config {
        if let Some(slot) = config.get_mut(k) {
            *slot = v.clone();
        }
    }
    let module = architecture
        .ct_module(CtWeights::Safetensors)
        .ok_or_else(|| {
            SpecError::from_arch(format!(
                "`architecture`: `{architecture}` has no dense candle-transformers module"
            ))
        })?;
    let text = config.to_string();
    let tied = config
        .get("tie_word_embeddings")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let absent = if tied {
        vec!["lm_head.weight".to_string()]
    } else {
        vec![]
    };
    let tensors = weights::record(spec.seed, absent, |vb| {
        candle_transformers::build(module, &text, vb)
            .map(|_| ())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    })
    .map_err(|e| {
        SynthError::Build(format!(
            "building candle-transformers {} from its config.json: {e}",
            module.as_str()
        ))
    })?;
    Ok(Checkpoint {
        architecture,
        config,
        tensors,
    })
}
