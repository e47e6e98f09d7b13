//! What every own decoder's forward shares around its layers: the input ids, the position
//! checks, the final norm and head over the rows asked for, and the sequence that holds a
//! cache and the probes ([`OwnSequence`]).

use candle_core::{DType, Device, Tensor};

use std::any::Any;
use std::sync::Arc;

use super::cache::Cache;
use super::linear::Linear;
use crate::model::under_test::{Fault, KeptCache, Probes, Rows, Sequence};
use crate::trace::{Hooks, TensorName};

/// The end of a hooked forward over `x` (batch, t, hidden) whose first row sits at (believed)
/// position `offset`: the final norm and the LM head over the rows asked for, or over every
/// row while tracing (the trace holds every position's logits; the rows asked for are then
/// cut from that). Returns the f32 logits (batch · rows, vocab) asked for, each sequence's
/// rows in turn.
pub(crate) fn head_rows(
    x: &Tensor,
    offset: usize,
    rows: Rows,
    hooks: &mut Hooks,
    norm: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    lm_head: &Linear,
) -> candle_core::Result<Option<Tensor>> {
    let t = x.dim(1)?;
    let wanted = match rows {
        Rows::None => t,
        Rows::From(i) => i.min(t),
    };
    let first = if hooks.sink.is_some() { 0 } else { wanted };
    if first == t {
        return Ok(None);
    }
    let x = x.narrow(1, first, t - first)?;
    let offset = offset + first;
    let x = hooks.tap(None, TensorName::FinalNorm, norm(&x)?, offset)?;
    // Upcast once, at the end: the comparator works on f32 whatever the run dtype.
    let logits = lm_head.forward(&x)?.to_dtype(DType::F32)?;
    let logits = hooks.tap(None, TensorName::Logits, logits, offset)?;
    if wanted == t {
        return Ok(None);
    }
    // A view of the rows asked for (no copy when nothing extra was computed and the batch is
    // one sequence).
    let (b, _, vocab) = logits.dims3()?;
    let logits = logits.narrow(1, wanted - first, t - wanted)?;
    if b == 1 {
        return logits.squeeze(0).map(Some);
    }
    logits.reshape((b * (t - wanted), vocab)).map(Some)
}

/// The token ids of a forward as a (batch, t) tensor, checking that `tokens` holds `batch`
/// rows of equal length.
pub(crate) fn batch_input(
    tokens: &[u32],
    batch: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    if batch == 0 || !tokens.len().is_multiple_of(batch) {
        candle_core::bail!(
            "{} token ids do not make {batch} sequences of equal length",
            tokens.len()
        );
    }
    Tensor::new(tokens, device)?.reshape((batch, tokens.len() / batch))
}

/// A forward of `t` tokens at `offset` must feed something and stay within the context.
pub(crate) fn check_positions(t: usize, offset: usize, context: usize) -> candle_core::Result<()> {
    if t == 0 {
        candle_core::bail!("forward called with no tokens");
    }
    if offset + t > context {
        candle_core::bail!(
            "positions {offset}..{} exceed the context length {context}",
            offset + t
        );
    }
    Ok(())
}

/// What a sequence needs from one of driftsweep's own decoders (the Llama family's
/// `Decoder`, Gemma 3's `Model`): a cache, and a forward with trace/fault hooks and a fault
/// (see the Llama family's `Decoder::forward_hooked`), logits for `rows` only.
pub(crate) trait OwnForward: Sync {
    /// An empty cache with room for `capacity` positions.
    fn new_cache(&self, capacity: usize) -> Cache;
    /// Feeds `tokens` (`batch` sequences of equal length, one after the other) at the cache's
    /// length and returns the logits of `rows`.
    fn forward_hooked(
        &self,
        tokens: &[u32],
        batch: usize,
        cache: &mut Cache,
        hooks: &mut Hooks,
        fault: Fault,
        rows: Rows,
    ) -> candle_core::Result<Option<Tensor>>;
}

/// A plain forward of `model`: `tokens` at positions cache.seq_len().., no hooks or fault,
/// f32 logits (tokens.len(), vocab), one row per fed position.
pub(crate) fn forward_every_row<M: OwnForward>(
    model: &M,
    tokens: &[u32],
    cache: &mut Cache,
) -> candle_core::Result<Tensor> {
    model
        .forward_hooked(
            tokens,
            1,
            cache,
            &mut Hooks::default(),
            Fault::default(),
            Rows::From(0),
        )?
        .ok_or_else(|| candle_core::Error::Msg("forward computed no logits".into()))
}

/// Implements `ModelUnderTest` for an own decoder type `$model` (with fields `cfg`, holding
/// `vocab_size`, `max_position_embeddings` and `num_hidden_layers`, and `device`) whose
/// manifest name is `$implementation`: every capability, sequences on [`OwnSequence`].
macro_rules! own_model_under_test {
    ($model:ty, $implementation:expr) => {
        impl $crate::model::under_test::ModelUnderTest for $model {
            fn engine(&self) -> &str {
                "driftsweep"
            }

            fn implementation(&self) -> String {
                $implementation.into()
            }

            fn vocab_size(&self) -> usize {
                self.cfg.vocab_size
            }

            fn context_len(&self) -> usize {
                self.cfg.max_position_embeddings
            }

            fn num_layers(&self) -> usize {
                self.cfg.num_hidden_layers
            }

            fn capabilities(&self) -> $crate::model::under_test::Capabilities {
                $crate::model::under_test::Capabilities::ALL
            }

            fn device(&self) -> &candle_core::Device {
                &self.device
            }

            fn sequence(
                &self,
                capacity: usize,
            ) -> candle_core::Result<Box<dyn $crate::model::under_test::Sequence + '_>> {
                Ok(Box::new($crate::model::layers::sequence::OwnSequence::new(
                    self, capacity,
                )))
            }

            fn batch(
                &self,
                rows: usize,
                capacity: usize,
            ) -> candle_core::Result<Box<dyn $crate::model::under_test::Sequence + '_>> {
                Ok(Box::new(
                    $crate::model::layers::sequence::OwnSequence::batch(self, rows, capacity),
                ))
            }

            fn resume(
                &self,
                kept: &$crate::model::under_test::KeptCache,
                capacity: usize,
            ) -> candle_core::Result<Option<Box<dyn $crate::model::under_test::Sequence + '_>>>
            {
                Ok(
                    $crate::model::layers::sequence::OwnSequence::resume(self, kept, capacity)?
                        .map(|s| Box::new(s) as Box<dyn $crate::model::under_test::Sequence>),
                )
            }
        }
    };
}
pub(crate) use own_model_under_test;

/// A sequence on an own decoder: its cache, and the probes its forwards apply.
pub(crate) struct OwnSequence<'a, M> {
    model: &'a M,
    cache: Cache,
    capacity: usize,
    batch: usize,
    probes: Probes,
}

impl<'a, M: OwnForward> OwnSequence<'a, M> {
    /// An empty sequence with room for `capacity` positions.
    pub(crate) fn new(model: &'a M, capacity: usize) -> Self {
        Self::batch(model, 1, capacity)
    }

    /// An empty batch of `batch` sequences with room for `capacity` positions each.
    pub(crate) fn batch(model: &'a M, batch: usize, capacity: usize) -> Self {
        OwnSequence {
            model,
            cache: model.new_cache(capacity),
            capacity,
            batch: batch.max(1),
            probes: Probes::default(),
        }
    }

    /// A sequence holding a copy of `kept`, when this model kept it (see [`OwnKept`]).
    pub(crate) fn resume(
        model: &'a M,
        kept: &KeptCache,
        capacity: usize,
    ) -> candle_core::Result<Option<Self>> {
        let Some(own) = kept.state::<OwnKept>() else {
            return Ok(None);
        };
        if own.model != model_id(model) {
            return Ok(None);
        }
        let mut seq = Self::new(model, capacity);
        seq.cache = own.cache.truncated(own.cache.seq_len(), capacity)?;
        Ok(Some(seq))
    }
}

/// What an own sequence keeps ([`Sequence::keep`]): a copy of its cache's first positions,
/// and which loaded model computed them, so that only that model resumes from it (another
/// model of the same type would read foreign K/V without an error).
struct OwnKept {
    model: usize,
    cache: Cache,
}

/// A loaded model's identity while it lives: its address.
fn model_id<M>(model: &M) -> usize {
    std::ptr::from_ref(model) as usize
}

impl<M: OwnForward> Sequence for OwnSequence<'_, M> {
    fn len(&self) -> usize {
        self.cache.seq_len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn forward(&mut self, tokens: &[u32], rows: Rows) -> candle_core::Result<Option<Tensor>> {
        let fault = self.probes.fault;
        let mut hooks = Hooks::new(self.probes.trace.as_mut(), fault.scale);
        self.model
            .forward_hooked(tokens, self.batch, &mut self.cache, &mut hooks, fault, rows)
    }

    fn forward_each(&mut self, tokens: &[u32]) -> candle_core::Result<()> {
        if self.batch == 1 {
            return self.forward(tokens, Rows::None).map(|_| ());
        }
        if self.len() != 0 {
            candle_core::bail!("a batch's cache is built one sequence at a time only when empty");
        }
        if !tokens.len().is_multiple_of(self.batch) {
            candle_core::bail!(
                "{} token ids do not make {} sequences of equal length",
                tokens.len(),
                self.batch
            );
        }
        let mut caches = Vec::with_capacity(self.batch);
        for row in tokens.chunks(tokens.len() / self.batch) {
            let mut alone = OwnSequence::new(self.model, self.capacity);
            alone.forward(row, Rows::None)?;
            caches.push(alone.cache);
        }
        self.cache = Cache::stack(&caches, self.capacity)?;
        Ok(())
    }

    fn truncate(&mut self, len: usize) -> candle_core::Result<()> {
        self.cache = self.cache.truncated(len, self.capacity)?;
        Ok(())
    }

    fn keep(&self, len: usize) -> candle_core::Result<Option<Arc<dyn Any + Send + Sync>>> {
        // A batch's rows are other sequences: only a single sequence's cache is kept.
        if self.batch != 1 {
            return Ok(None);
        }
        Ok(Some(Arc::new(OwnKept {
            model: model_id(self.model),
            cache: self.cache.truncated(len, len)?,
        })))
    }

    fn probes(&mut self) -> Option<&mut Probes> {
        Some(&mut self.probes)
    }
}
