//! Synthetic checkpoints: a [`SynthSpec`](crate::config::SynthSpec) checked against its
//! architecture, its `config.json`, and deterministic weights at a trained-like scale, written
//! as a Hugging Face directory or a GGUF file that any loader reads.
//!
//! The tensor names and shapes are the ones the architecture's candle-transformers module
//! asks for when it is built from that `config.json` ([`weights::record`]): they mirror the
//! checkpoint's names there, so no list of names is kept by hand.

pub mod arch;
pub mod gguf;
pub mod weights;

use std::collections::BTreeMap;

use candle_core::Tensor;

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

/// Makes the checkpoint `spec` describes: the architecture's `config.json`, then the tensors
/// its dense candle-transformers module asks for when built from it.
pub fn checkpoint(spec: &SynthSpec) -> Result<Checkpoint, String> {
    let architecture = Architecture::from_config_json(Some(&spec.architecture), None)
        .map_err(|e| e.to_string())?;
    let mut config = arch::config_json(architecture, spec)?;
    for (k, v) in &spec.config {
        let Some(slot) = config.get_mut(k) else {
            return Err(format!(
                "config.{k}: architecture `{architecture}` has no such config.json field"
            ));
        };
        *slot = v.clone();
    }
    let module = architecture
        .ct_module(CtWeights::Safetensors)
        .ok_or_else(|| {
            format!("architecture `{architecture}` has no dense candle-transformers module")
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
    .map_err(|e| format!("building candle-transformers {}: {e}", module.as_str()))?;
    Ok(Checkpoint {
        architecture,
        config,
        tensors,
    })
}

#[cfg(test)]
mod tests;
