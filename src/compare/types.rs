//! What the comparator returns: the metrics of one pair, its argmax flips and why two runs
//! could not be compared. Kept apart from the code that computes them so that the metric
//! tables ([`super::metrics`], [`super::kl_stats`]) and both comparator paths depend on the
//! data alone, not on the module that re-exports it.

use serde::{Deserialize, Serialize};

/// A position where the argmax differs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopFlip {
    /// Absolute position in the sequence (prompt + span).
    pub pos: usize,
    /// Prefill logit of its own best token minus its logit of decode's best token: a near-tie
    /// is rounding, a wide margin is a defect.
    pub prefill_margin: f32,
    /// Prefill's best logit there: the rounding step of the dtype scales with it.
    pub prefill_top: f32,
}

/// What the comparator measures for one pair. Its summary metrics are the rows of
/// [`super::metrics::METRICS`], which compute them, name them in report.json and judge them;
/// the table's file also holds this type's (de)serialization and `Default` (all zeros and
/// empty, for tests that set a few values).
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// The table's metrics, in table order ([`super::metrics::index_of`]).
    pub values: Vec<f32>,
    /// First absolute position whose max |diff| exceeds the pair's max_abs_diff limit.
    pub first_divergent_pos: Option<usize>,
    /// First position whose argmax differs.
    pub first_top1_flip: Option<TopFlip>,
    /// Every argmax flip, in position order.
    pub top1_flips: Vec<TopFlip>,
    /// NaN or ±inf values in either run; any makes the pair fail. Other metrics are computed
    /// over finite values only.
    pub non_finite: usize,
    /// Number of positions compared.
    pub positions: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Per position max |diff|, for plots.
    pub per_pos_max_abs: Vec<f32>,
    /// Per position KL, for plots; `None` where a row holds non-finite values.
    pub per_pos_kl: Vec<Option<f32>>,
    /// Per position Δp: decode's probability of prefill's top token minus prefill's own, for
    /// the llama.cpp-style statistics ([`super::kl_stats`]); `None` where a row holds non-finite
    /// values. Empty in records written before it was measured.
    pub per_pos_delta_p: Vec<Option<f32>>,
}

/// Why two runs' logits could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// The runs hold different numbers of values, so different positions.
    #[error(
        "the runs cover different positions: prefill has {prefill} values, decode {decode} (vocab {vocab})"
    )]
    ShapeMismatch {
        /// Prefill value count.
        prefill: usize,
        /// Decode value count.
        decode: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Nothing to compare.
    #[error("no positions to compare")]
    Empty,
    /// The device failed while reducing the logits.
    #[error("comparing on the device: {0}")]
    Device(String),
}
