//! The model under test, as runs see it: a seam between driftsweep's runs and whatever
//! implementation computes the logits (driftsweep's own [`Decoder`](super::Decoder) first;
//! other implementations plug in here).
//!
//! A run needs little from a model: its vocabulary and context size, a *sequence* that takes
//! token ids at its current offset and returns f32 logits for the rows asked for, and a few
//! optional abilities ([`Capabilities`]). Pairs that need an ability the model lacks are
//! SKIPPED with the reason when the sweep is planned, never failed at run time.

use std::any::Any;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::trace::{ScaleFault, TraceSink};

/// What a model under test can do beyond feeding tokens and returning the last row's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// A multi-token forward returns logits for any rows asked for. Without it, only the last
    /// row's logits exist, and a prefill's span logits need one fresh forward per prefix.
    pub every_row: bool,
    /// Layer taps (traces) and injected faults ([`Sequence::probes`]).
    pub probes: bool,
    /// A sequence's cache can be cut back to a prefix ([`Sequence::truncate`]), which a
    /// kv_aligned = true decode needs: it continues from prefill's own cache.
    pub cache_prefix: bool,
    /// Several sequences of the same length in one forward ([`ModelUnderTest::batch`]), which
    /// the batched paths need.
    pub batch: bool,
}

impl Capabilities {
    /// Everything: what driftsweep's own decoder can do.
    pub const ALL: Capabilities = Capabilities {
        every_row: true,
        probes: true,
        cache_prefix: true,
        batch: true,
    };
}

/// Which rows of a forward's tokens to return logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// None: the forward is made for its cache alone.
    None,
    /// Rows `i..` of this forward's tokens (`From(0)`: every row; `From(t - 1)`: the last).
    From(usize),
}

impl Rows {
    /// The last row of a `t`-token forward.
    pub fn last(t: usize) -> Rows {
        Rows::From(t.saturating_sub(1))
    }
}

/// A deliberate perturbation active on a sequence's forwards (the tool's negative control).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Fault {
    /// Scale one tensor at one layer by (1 + ε).
    pub scale: Option<ScaleFault>,
    /// The forward believes it is this many positions further along than its cache says.
    pub position_shift: usize,
    /// Sliding-window layers see this many keys more than the window (a window one key too
    /// wide in one path); only for models with a sliding window.
    pub window_shift: usize,
    /// A multi-token forward at an offset > 0 (a chunk after the first) believes it is this
    /// many positions further along: invisible to one-shot prefill (offset 0) and to
    /// single-token decode.
    pub chunk_position_shift: usize,
    /// In a forward of two or more sequences, row 0 reads row 1's cached K/V at the newest
    /// position before the forward's own: invisible to a batch of one.
    pub cross_row_cache: bool,
}

impl Fault {
    /// Whether this fault changes anything.
    pub fn is_active(&self) -> bool {
        self.scale.is_some()
            || self.position_shift != 0
            || self.window_shift != 0
            || self.chunk_position_shift != 0
            || self.cross_row_cache
    }

    /// Positions a forward of `t` tokens on a cache of `past` believes it is further along
    /// than the cache says.
    pub fn shift(&self, t: usize, past: usize) -> usize {
        let chunk = if t > 1 && past > 0 {
            self.chunk_position_shift
        } else {
            0
        };
        self.position_shift + chunk
    }
}

/// What a sequence does besides computing: record layer taps, and perturb on purpose. Runs
/// set these between forwards (a kv_aligned decode records its cache forward's prompt
/// positions, then turns the fault on for its decode steps).
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// Where tap records go; `None` records nothing.
    pub trace: Option<TraceSink>,
    /// The fault applied to the following forwards.
    pub fault: Fault,
}

/// A sequence's cache cut back to a prompt, kept by the prefill run that computed it for the
/// kv_aligned runs of the same tokens: their cache is prefill's own forward over prompt +
/// span, cut back to the prompt, which they would otherwise compute again (docs/design.md,
/// "kv_aligned"). Immutable and shared: each run that starts from it copies it
/// ([`ModelUnderTest::resume`]).
#[derive(Clone)]
pub struct KeptCache {
    tokens: Arc<[u32]>,
    state: Arc<dyn Any + Send + Sync>,
}

impl KeptCache {
    /// The cache of the positions holding `tokens`, in the model's own form (`state`, which
    /// only the model that made it reads).
    pub fn new(tokens: &[u32], state: Arc<dyn Any + Send + Sync>) -> KeptCache {
        KeptCache {
            tokens: tokens.into(),
            state,
        }
    }

    /// The token ids of the kept positions.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The model's own form of the cache, if it is a `T`.
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.state.downcast_ref()
    }
}

impl std::fmt::Debug for KeptCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeptCache({} positions)", self.tokens.len())
    }
}

/// A model loaded in one dtype on one device, ready to run sequences.
pub trait ModelUnderTest: Send + Sync {
    /// The implementation's name, as in run ids and reports (`driftsweep` for the own
    /// decoder).
    fn engine(&self) -> &str;
    /// Which code inside the engine runs (for example
    /// `candle_transformers::models::quantized_llama`), as in the manifest's load records.
    fn implementation(&self) -> String {
        self.engine().to_string()
    }
    /// Width of a logits row.
    fn vocab_size(&self) -> usize;
    /// Largest number of positions a sequence may hold.
    fn context_len(&self) -> usize;
    /// Number of transformer blocks (the layers a trace or fault may name).
    fn num_layers(&self) -> usize;
    /// What it can do. A model given from Rust need not say: its loader's
    /// `CustomModel::capabilities` is the one declaration, and this default (last row only,
    /// nothing else) is never asked of it.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            every_row: false,
            probes: false,
            cache_prefix: false,
            batch: false,
        }
    }
    /// The device its weights and logits are on.
    fn device(&self) -> &Device;
    /// A new, empty sequence with room for `capacity` positions.
    fn sequence(&self, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>>;

    /// A new, empty batch of `rows` sequences fed in lockstep, each with room for `capacity`
    /// positions; only for models with [`Capabilities::batch`] when `rows` > 1.
    fn batch(&self, rows: usize, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        if rows != 1 {
            candle_core::bail!("this model runs one sequence at a time");
        }
        self.sequence(capacity)
    }

    /// A new sequence holding a copy of `kept` (made by [`Sequence::keep`] on a sequence of
    /// this model), with room for `capacity` positions; `None` when this model cannot start
    /// from a kept cache (or `kept` is another model's), and the run computes its cache.
    fn resume(
        &self,
        kept: &KeptCache,
        capacity: usize,
    ) -> candle_core::Result<Option<Box<dyn Sequence + '_>>> {
        let _ = (kept, capacity);
        Ok(None)
    }
}

/// One sequence's state (its KV cache) on a [`ModelUnderTest`].
pub trait Sequence {
    /// Positions fed so far: the position of the next token.
    fn len(&self) -> usize;

    /// Whether nothing was fed yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequences fed in lockstep (1 unless made by [`ModelUnderTest::batch`]).
    fn batch_size(&self) -> usize {
        1
    }

    /// Feeds `tokens` at positions `len()..` and appends them to the cache. Returns f32 logits
    /// of shape (rows, vocab) for the rows asked for, or `None` for [`Rows::None`]. A batch
    /// takes `batch_size()` rows of t ids each, one after the other, and returns each
    /// sequence's rows in turn: (batch · rows, vocab).
    fn forward(&mut self, tokens: &[u32], rows: Rows) -> candle_core::Result<Option<Tensor>>;

    /// Feeds each sequence of a batch alone (the one-sequence computation, exactly as
    /// [`ModelUnderTest::sequence`] would) into an empty batch, whose cache then holds those
    /// caches side by side: how a kv_aligned batched decode gets prefill's own cache for
    /// every row. `tokens` is laid out as for [`Sequence::forward`].
    fn forward_each(&mut self, tokens: &[u32]) -> candle_core::Result<()> {
        if self.batch_size() != 1 {
            candle_core::bail!("this model cannot build a batch's cache one sequence at a time");
        }
        self.forward(tokens, Rows::None).map(|_| ())
    }

    /// Keeps the first `len` positions of the cache, bit for bit, and drops the rest. Only
    /// for models with [`Capabilities::cache_prefix`].
    fn truncate(&mut self, len: usize) -> candle_core::Result<()> {
        let _ = len;
        candle_core::bail!("this model cannot cut its cache back to a prefix")
    }

    /// A copy of the cache's first `len` positions, bit for bit, in the form this model's
    /// [`ModelUnderTest::resume`] starts from; `None` for models that cannot.
    fn keep(&self, len: usize) -> candle_core::Result<Option<Arc<dyn Any + Send + Sync>>> {
        let _ = len;
        Ok(None)
    }

    /// The sequence's taps and fault, for models with [`Capabilities::probes`]; `None`
    /// otherwise.
    fn probes(&mut self) -> Option<&mut Probes> {
        None
    }
}
