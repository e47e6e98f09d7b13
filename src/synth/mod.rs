//! Synthetic checkpoints: a [`SynthSpec`](crate::config::SynthSpec) checked against its
//! architecture, its `config.json`, and deterministic weights at a trained-like scale, written
//! as a Hugging Face directory or a GGUF file that any loader reads.
//!
//! The tensor names and shapes are the ones the architecture's candle-transformers module
//! asks for when it is built from that `config.json` ([`weights::record`]): they mirror the
//! checkpoint's names there, so no list of names is kept by hand.

pub mod weights;
