//! Model families and architectures, in one table: what `general.architecture` (GGUF) and
//! `model_type` / `architectures` (Hugging Face `config.json`) resolve to, which family's own
//! decoder computes it, and which candle-transformers module runs it per weight format. Every
//! other file matches on [`Architecture`] or [`Family`], never on a name.
//!
//! A new family adds a row here, a [`Family`] variant with its arms, and its folder
//! (`src/model/<family>/`, declared in `src/model/mod.rs`); a new candle-transformers module
//! adds a [`CtModule`] variant, its cell in the table, and its arm in the `build` of its
//! group's file under `src/model/candle_transformers/` (which takes the `Stateful` trait from
//! `stateful.rs` there, never from that folder's `mod.rs`: no import cycle).

use std::fmt;

use candle_core::quantized::gguf_file::Content;

mod table;

pub use table::{Architecture, CtModule, CtWeights, FamilyKind};
use table::{Row, TABLE};

use super::custom::CustomLoader;
use super::error::ModelError;
use super::gemma3;
use super::gguf::layout::Layout;
use super::gguf::read::{get, get_u32};
use super::header::Expected;
use super::layers::Source;
use super::llama;
use super::under_test::ModelUnderTest;

impl Architecture {
    fn row(self) -> &'static Row {
        TABLE
            .iter()
            .find(|r| r.arch == self)
            .expect("every architecture has a row")
    }

    /// The name in report.json, in `general.architecture` and in `model_type`.
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Which own decoder computes it.
    pub fn family(self) -> FamilyKind {
        self.row().family
    }

    /// What it changes in the Llama recipe, for the Llama family's `config.json` reader.
    pub fn llama_variant(self) -> llama::Variant {
        self.row().llama
    }

    /// The candle-transformers module that runs it on `weights`, if there is one.
    pub fn ct_module(self, weights: CtWeights) -> Option<CtModule> {
        let i = match weights {
            CtWeights::QuantizedGguf => 0,
            CtWeights::Dequantized => 1,
            CtWeights::Safetensors => 2,
        };
        self.row().ct[i]
    }

    /// llama.cpp's `general.architecture` for it, if llama.cpp converts it.
    pub fn gguf_name(self) -> Option<&'static str> {
        self.row().gguf_name
    }

    /// Whether an own decoder reads its GGUF files (others run in candle-transformers only).
    pub fn own_gguf(self) -> bool {
        self.row().gguf
    }

    /// The architecture of a GGUF file's `general.architecture`: one the own decoders read,
    /// else one a quantized candle-transformers module runs.
    pub fn from_gguf(name: &str) -> Result<Self, ModelError> {
        if let Some(r) = TABLE.iter().find(|r| r.gguf && r.name == name) {
            return Ok(r.arch);
        }
        let quantized = || {
            TABLE
                .iter()
                .filter(|r| r.ct[0].is_some() && r.gguf_name.is_some())
        };
        if let Some(r) = quantized().find(|r| r.gguf_name == Some(name)) {
            return Ok(r.arch);
        }
        let mut names: Vec<&str> = TABLE
            .iter()
            .filter(|r| r.gguf)
            .map(|r| r.name)
            .chain(quantized().filter_map(|r| r.gguf_name))
            .collect();
        names.dedup();
        Err(ModelError::Unsupported(format!(
            "architecture `{name}` is not supported from GGUF; supported: {}",
            names.join(", ")
        )))
    }

    /// The architecture of a `config.json`: its `model_type` when the own decoders read
    /// that from directories, else the first `architectures` class they know.
    pub fn from_config_json(
        model_type: Option<&str>,
        architectures: Option<&[String]>,
    ) -> Result<Self, ModelError> {
        let supported = || TABLE.iter().filter(|r| r.hf_class.is_some());
        if let Some(r) = model_type.and_then(|t| supported().find(|r| r.name == t)) {
            return Ok(r.arch);
        }
        for a in architectures.into_iter().flatten() {
            if let Some(r) = supported().find(|r| r.hf_class == Some(a.as_str())) {
                return Ok(r.arch);
            }
        }
        let names: Vec<&str> = supported().map(|r| r.name).collect();
        let classes: Vec<&str> = supported().filter_map(|r| r.hf_class).collect();
        Err(ModelError::Unsupported(format!(
            "config.json: architecture `{}` is not supported; supported: {} (model_type), or \
             {}",
            model_type
                .map(str::to_string)
                .or_else(|| architectures.and_then(|a| a.first().cloned()))
                .unwrap_or_default(),
            names.join(", "),
            classes.join(", ")
        )))
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// An architecture without an own decoder (engine `candle-transformers` only): its sizes
    /// and sliding window, read from its `config.json` ([`ForeignConfig::from_config_json`]).
    Foreign(ForeignConfig),
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

impl Family {
    /// The config of a GGUF file of architecture `arch` whose embedding has `vocab_size`
    /// rows, with the layout of its tensors and the tensors its header must list (`None`
    /// for an architecture no own decoder reads from GGUF: its sizes come from the metadata,
    /// [`ForeignConfig::from_gguf`]).
    pub fn from_gguf(
        arch: Architecture,
        c: &Content,
        vocab_size: usize,
    ) -> Result<(Family, Option<Layout>), ModelError> {
        if !arch.own_gguf() {
            return Ok((
                Family::Foreign(ForeignConfig::from_gguf(c, vocab_size)?),
                None,
            ));
        }
        Ok(match arch.family() {
            FamilyKind::Llama => {
                let cfg = llama::from_gguf(c, arch.name(), vocab_size)?;
                let layout = llama::gguf_layout(&cfg);
                (Family::Llama(cfg), Some(layout))
            }
            FamilyKind::Gemma3 => (
                Family::Gemma3(gemma3::Config::from_gguf_checked(c)?),
                Some(gemma3::GGUF_LAYOUT),
            ),
            FamilyKind::Custom | FamilyKind::Foreign => {
                return Err(ModelError::Unsupported(format!(
                    "architecture `{arch}` has no GGUF files the own decoders read"
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
            FamilyKind::Llama => Ok(Family::Llama(llama::from_config_json(
                arch.llama_variant(),
                json,
                label,
            )?)),
            // Gemma 3's own decoder reads GGUF files only: its directories are foreign.
            FamilyKind::Foreign | FamilyKind::Gemma3 => Ok(Family::Foreign(
                ForeignConfig::from_config_json(json, label)?,
            )),
            FamilyKind::Custom => Err(ModelError::Unsupported(format!(
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
            Family::Foreign(_) => "an architecture without an own decoder",
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
            Family::Foreign(c) => c.sizes,
        }
    }

    /// The context cut to at most `positions`.
    pub fn cap_context(&mut self, positions: usize) {
        let context = match self {
            Family::Llama(c) => &mut c.max_position_embeddings,
            Family::Gemma3(c) => &mut c.max_position_embeddings,
            Family::Custom(_, s) => &mut s.context_len,
            Family::Foreign(c) => &mut c.sizes.context_len,
        };
        *context = (*context).min(positions);
    }

    /// Parameters of the own decoder (0 for a custom model, whose weights driftsweep does
    /// not see: it counts as small).
    pub fn parameter_count(&self) -> u64 {
        match self {
            Family::Llama(c) => c.parameter_count(),
            Family::Gemma3(c) => c.parameter_count(),
            Family::Custom(..) | Family::Foreign(_) => 0,
        }
    }

    /// The sliding window of its attention, if it has one (Gemma 3's local layers').
    pub fn sliding_window(&self) -> Option<usize> {
        match self {
            Family::Llama(c) => c.sliding_window,
            Family::Gemma3(c) => Some(c.sliding_window),
            Family::Custom(..) => None,
            Family::Foreign(c) => c.sliding_window,
        }
    }

    /// What a file of this family must hold, for the header check.
    pub fn expected(&self) -> Option<Expected> {
        match self {
            Family::Llama(c) => Some(c.expected()),
            Family::Gemma3(c) => Some(c.expected()),
            Family::Custom(..) | Family::Foreign(_) => None,
        }
    }

    /// The GGUF layout of its tensors.
    pub fn gguf_layout(&self) -> Option<Layout> {
        match self {
            Family::Llama(c) => Some(llama::gguf_layout(c)),
            Family::Gemma3(_) => Some(gemma3::GGUF_LAYOUT),
            Family::Custom(..) | Family::Foreign(_) => None,
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
            Family::Foreign(_) => {
                return Err(ModelError::Unsupported(
                    "driftsweep has no own decoder for this architecture: engine \
                     `candle-transformers` runs it"
                        .into(),
                ));
            }
        };
        loaded.map_err(|e| ModelError::Load(e.to_string()))
    }
}
