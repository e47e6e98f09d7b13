//! What every candle-transformers module file shares, kept apart from `mod.rs` so that the
//! module files (which `mod.rs` calls) import nothing from it: the [`Stateful`] trait the
//! models are driven through, and the texts of their errors.

use candle_core::Tensor;
use serde::de::DeserializeOwned;

use crate::model::error::ModelError;
use crate::model::family::CtModule;

/// A candle-transformers model with its cache inside: `forward` at an offset appends to it.
pub trait Stateful: Send {
    /// Feeds `x` (B × t ids) at `offset`; each sequence's last position's logits.
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor>;
    /// Empties the cache.
    fn clear(&mut self);
}

/// How a candle error of `module` reads.
pub fn err(module: CtModule) -> impl Fn(candle_core::Error) -> ModelError {
    move |e| ModelError::Load(format!("candle-transformers {}: {e}", module.as_str()))
}

/// `module`'s own config type, read from the text of its `config.json`.
pub fn parse<C: DeserializeOwned>(module: CtModule, text: &str) -> Result<C, ModelError> {
    serde_json::from_str(text).map_err(|e| {
        ModelError::Invalid(format!(
            "config.json for candle-transformers {}: {e}",
            module.as_str()
        ))
    })
}

/// `module` does not read `what` (the family table never pairs them).
pub fn not_for(module: CtModule, what: &str) -> ModelError {
    ModelError::Unsupported(format!(
        "candle-transformers {} does not read {what}",
        module.as_str()
    ))
}
/// A module without a way to empty its cache that can be cloned: a copy taken before any
/// forward replaces it on [`Stateful::clear`] (the weights are shared, not copied).
pub(super) struct Fresh<M> {
    empty: M,
    live: M,
}

impl<M: Clone> Fresh<M> {
    pub(super) fn new(m: M) -> Self {
        Fresh {
            live: m.clone(),
            empty: m,
        }
    }
}

/// The forward of each module that [`Fresh`] wraps.
pub(super) trait Forward {
    /// The module's own `forward(x, offset)`.
    fn forward_at(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor>;
}

impl<M: Clone + Forward + Send> Stateful for Fresh<M> {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.live.forward_at(x, offset)
    }
    fn clear(&mut self) {
        self.live = self.empty.clone();
    }
}
