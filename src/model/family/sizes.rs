//! The sizes every model has, and what driftsweep reads of a model it has no own decoder
//! for (its sizes and window, from `config.json` or GGUF metadata).

use candle_core::quantized::gguf_file::Content;

use crate::model::error::ModelError;
use crate::model::gguf::read::{get, get_u32};

/// The sizes every model has, whatever computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Vocabulary size (logit columns).
    pub vocab_size: usize,
    /// Number of layers.
    pub num_layers: usize,
    /// Context length: the largest prompt + span.
    pub context_len: usize,
}

/// What driftsweep reads of a `config.json` it has no own decoder for: the sizes every model
/// has, under the key names architectures use for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignConfig {
    /// Vocabulary, layers and context.
    pub sizes: Sizes,
    /// `sliding_window`, where the config sets one.
    pub sliding_window: Option<usize>,
}

impl ForeignConfig {
    /// Reads the sizes from `json` (its bytes); `label` names the file in messages.
    pub fn from_config_json(json: &[u8], label: &str) -> Result<Self, ModelError> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("{label}: {e}"))?;
        // The first of the names an architecture uses for each size (transformers' names).
        let first = |keys: &[&str]| keys.iter().find_map(|k| v.get(*k).and_then(|x| x.as_u64()));
        let need = |keys: &[&str]| {
            first(keys).map(|n| n as usize).ok_or_else(|| {
                ModelError::Invalid(format!("{label}: none of {} is set", keys.join(", ")))
            })
        };
        let sizes = Sizes {
            vocab_size: need(&["vocab_size", "padded_vocab_size"])?,
            num_layers: need(&["num_hidden_layers", "n_layers", "n_layer", "num_layers"])?,
            context_len: need(&[
                "max_position_embeddings",
                "max_seq_len",
                "n_positions",
                "seq_length",
                "max_sequence_length",
            ])?,
        };
        Ok(ForeignConfig {
            sizes,
            sliding_window: first(&["sliding_window"]).map(|n| n as usize),
        })
    }
}

impl ForeignConfig {
    /// The sizes from a GGUF file's metadata (`<general.architecture>.block_count`,
    /// `.context_length`, `.attention.sliding_window`) and its embedding's `vocab_size` rows.
    pub fn from_gguf(c: &Content, vocab_size: usize) -> Result<Self, ModelError> {
        let arch = get(c, "general.architecture")?
            .to_string()
            .map_err(|e| format!("general.architecture: {e}"))?
            .clone();
        let key = |s: &str| format!("{arch}.{s}");
        Ok(ForeignConfig {
            sizes: Sizes {
                vocab_size,
                num_layers: get_u32(c, &key("block_count"))? as usize,
                context_len: get_u32(c, &key("context_length"))? as usize,
            },
            sliding_window: get_u32(c, &key("attention.sliding_window"))
                .ok()
                .map(|w| w as usize),
        })
    }
}
