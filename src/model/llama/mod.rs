//! The Llama family: Llama, Mistral, Qwen2, Qwen3 and the built-in model. Its hyper-parameters
//! ([`Config`]), its own decoder ([`Decoder`]), its GGUF names and metadata and its
//! `config.json` fields ([`gguf_layout`], [`from_gguf`], [`from_config_json`]).

mod config;
mod decoder;
mod files;

pub use config::{Config, Llama3Rope, Variant};
pub use decoder::Decoder;
pub use files::{from_config_json, from_gguf, gguf_layout};
