//! The Llama family: Llama, Mistral, Qwen2, Qwen3 and the built-in model. Its hyper-parameters
//! ([`Config`]), its own decoder ([`Decoder`]), its GGUF names and metadata and its
//! `config.json` fields ([`gguf_layout`], [`from_gguf`], [`ConfigJson`]).

mod config;
mod decoder;
mod files;

pub use config::{Config, Llama3Rope};
pub use decoder::Decoder;
pub(crate) use files::{ConfigJson, from_config_json};
pub use files::{from_gguf, gguf_layout};
