//! What candle-transformers' models are to a run: a [`Stateful`] model with its cache inside,
//! and [`Fresh`], which gives a model without a way to empty its cache a fresh one. A leaf
//! file: the module files import it, and `mod.rs` re-exports it.

use candle_core::Tensor;

use crate::model::error::ModelError;
use crate::model::family::CtModule;

/// A candle-transformers model with its cache inside: `forward` at an offset appends to it.
pub trait Stateful: Send {
    /// Feeds `x` (B × t ids) at `offset`; each sequence's last position's logits.
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor>;
    /// Empties the cache.
    fn clear(&mut self);
}

/// `module` does not read `what` (the family table never pairs them).
pub(super) fn not_for(module: CtModule, what: &str) -> ModelError {
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
