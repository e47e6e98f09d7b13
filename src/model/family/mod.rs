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

mod sizes;
mod table;

pub use sizes::{ForeignConfig, Sizes};
pub use table::{Architecture, CtModule, CtWeights, Family, FamilyKind};
use table::{Row, TABLE};

use super::error::ModelError;
use super::llama;

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
