//! The one interface every candle-transformers model is run through here, in a file of its
//! own so that the files of modules (children of `mod.rs`) import it without a cycle.

use candle_core::Tensor;

/// A candle-transformers model with its cache inside: `forward` at an offset appends to it.
pub trait Stateful: Send {
    /// Feeds `x` (B × t ids) at `offset`; each sequence's last position's logits.
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor>;
    /// Empties the cache.
    fn clear(&mut self);
}
