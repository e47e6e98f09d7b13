//! Model families: what computes an architecture (the Llama family's own decoder, Gemma 3's,
//! or the user's model), with its hyper-parameters, and the sizes every model has.
//!
//! A new family adds a [`Family`] variant with its arms here, a [`FamilyKind`] variant and its
//! rows in `architecture.rs`, and its folder (`src/model/<family>/`, declared in
//! `src/model/mod.rs`).

use candle_core::quantized::gguf_file::Content;

use super::architecture::{Architecture, FamilyKind};
use super::custom::CustomLoader;
use super::error::ModelError;
use super::gemma3;
use super::gguf::layout::Layout;
use super::header::Expected;
use super::layers::Source;
use super::llama;
use super::under_test::ModelUnderTest;

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

/// A model's family with its hyper-parameters: what computes it.
#[derive(Debug, Clone)]
pub enum Family {
    /// The Llama family's own decoder.
    Llama(llama::Config),
    /// Gemma 3's own decoder.
    Gemma3(gemma3::Config),
    /// A model given from Rust, which loads itself; driftsweep knows only its sizes.
    Custom(CustomLoader, Sizes),
}

impl Family {
    /// The config of a GGUF file of architecture `arch` whose embedding has `vocab_size`
    /// rows, with the layout of its tensors and the tensors its header must list.
    pub fn from_gguf(
        arch: Architecture,
        c: &Content,
        vocab_size: usize,
    ) -> Result<(Family, Layout), ModelError> {
        Ok(match arch.family() {
            FamilyKind::Llama => {
                let cfg = llama::from_gguf(c, arch.name(), vocab_size)?;
                let layout = llama::gguf_layout(&cfg);
                (Family::Llama(cfg), layout)
            }
            FamilyKind::Gemma3 => (
                Family::Gemma3(gemma3::Config::from_gguf_checked(c)?),
                gemma3::GGUF_LAYOUT,
            ),
            FamilyKind::Custom => {
                return Err(ModelError::Unsupported(format!(
                    "architecture `{arch}` has no GGUF files"
                )));
            }
        })
    }

    /// The config a Hugging Face `config.json` (its bytes) of architecture `arch` describes;
    /// `label` names the file in messages about its fields.
    pub fn from_config_json(
        arch: Architecture,
        json: &[u8],
        label: &str,
    ) -> Result<Family, ModelError> {
        match arch.family() {
            FamilyKind::Llama => Ok(Family::Llama(llama::from_config_json(arch, json, label)?)),
            FamilyKind::Gemma3 | FamilyKind::Custom => Err(ModelError::Unsupported(format!(
                "architecture `{arch}` is not read from Hugging Face directories"
            ))),
        }
    }

    /// The family's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Family::Llama(_) => "the Llama family",
            Family::Gemma3(_) => "Gemma 3",
            Family::Custom(..) => "a custom model",
        }
    }

    /// The sizes.
    pub fn sizes(&self) -> Sizes {
        match self {
            Family::Llama(c) => Sizes {
                vocab_size: c.vocab_size,
                num_layers: c.num_hidden_layers,
                context_len: c.max_position_embeddings,
            },
            Family::Gemma3(c) => Sizes {
                vocab_size: c.vocab_size,
                num_layers: c.num_hidden_layers,
                context_len: c.max_position_embeddings,
            },
            Family::Custom(_, s) => *s,
        }
    }

    /// The context cut to at most `positions`.
    pub fn cap_context(&mut self, positions: usize) {
        let context = match self {
            Family::Llama(c) => &mut c.max_position_embeddings,
            Family::Gemma3(c) => &mut c.max_position_embeddings,
            Family::Custom(_, s) => &mut s.context_len,
        };
        *context = (*context).min(positions);
    }

    /// Parameters of the own decoder (0 for a custom model, whose weights driftsweep does
    /// not see: it counts as small).
    pub fn parameter_count(&self) -> u64 {
        match self {
            Family::Llama(c) => c.parameter_count(),
            Family::Gemma3(c) => c.parameter_count(),
            Family::Custom(..) => 0,
        }
    }

    /// The sliding window of its attention, if it has one (Gemma 3's local layers').
    pub fn sliding_window(&self) -> Option<usize> {
        match self {
            Family::Llama(c) => c.sliding_window,
            Family::Gemma3(c) => Some(c.sliding_window),
            Family::Custom(..) => None,
        }
    }

    /// What a file of this family must hold, for the header check.
    pub fn expected(&self) -> Option<Expected> {
        match self {
            Family::Llama(c) => Some(c.expected()),
            Family::Gemma3(c) => Some(c.expected()),
            Family::Custom(..) => None,
        }
    }

    /// The GGUF layout of its tensors.
    pub fn gguf_layout(&self) -> Option<Layout> {
        match self {
            Family::Llama(c) => Some(llama::gguf_layout(c)),
            Family::Gemma3(_) => Some(gemma3::GGUF_LAYOUT),
            Family::Custom(..) => None,
        }
    }

    /// Its own decoder over the weights in `src`.
    pub fn load_own(&self, src: Source<'static>) -> Result<Box<dyn ModelUnderTest>, ModelError> {
        let loaded = match self {
            Family::Llama(c) => {
                llama::Decoder::new(c, src).map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
            }
            Family::Gemma3(c) => {
                gemma3::Model::new(c, src).map(|m| Box::new(m) as Box<dyn ModelUnderTest>)
            }
            Family::Custom(..) => {
                return Err(ModelError::Unsupported(
                    "a custom model has no own decoder".into(),
                ));
            }
        };
        loaded.map_err(|e| ModelError::Load(e.to_string()))
    }
}
