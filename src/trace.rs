//! Layer traces (docs/design.md, "Layer traces"): record chosen tensors at chosen layers and positions
//! in both runs of a pair, align them by (position, layer, tensor), measure each aligned record,
//! and name the first tensor in forward order where the paths diverge and its root cause.
//!
//! Root-cause rules, applied to the first failing record of a position in forward order:
//! - a record on one side with no partner at the same position → TRACE_OFFSET (the two paths
//!   disagree about where they are);
//! - `embed` → EMBEDDING;
//! - `attn_norm`, `post_attn_norm`, `mlp_norm`, `post_mlp_norm`, `final_norm` → NORM (the two
//!   `post_*` norms exist in Gemma 3 only: its norms after attention and after the MLP);
//! - `q`, `attn_out`, `resid_mid` → ATTENTION (projection, RoPE, the attention product, or
//!   its residual add);
//! - `k`, `v` → KV_CACHE (they are what the cache stores and later steps read back);
//! - `mlp_out`, `resid_out` → MLP;
//! - `logits` → LM_HEAD;
//! - nothing over threshold → NONE;
//! - UNTRACED_GAP instead of the tensor's stage when layers right before the first failure
//!   were not traced and no earlier record of the failing layer passed (a passing record
//!   there shows the layer's input agreed, which clears the untraced layers): the divergence
//!   may start in those layers, and only a trace of them decides.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::dtype::RunDtype;

/// A traced tensor, in forward order within a layer (docs/design.md, "Layer traces").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorName {
    /// Token embeddings (before layer 0).
    Embed,
    /// Input RMSNorm of a layer.
    AttnNorm,
    /// Queries after RoPE.
    Q,
    /// Keys after RoPE.
    K,
    /// Values.
    V,
    /// Attention output after the output projection.
    AttnOut,
    /// RMSNorm of the attention output before the residual add (Gemma 3's
    /// `post_attention_layernorm`).
    PostAttnNorm,
    /// Residual stream after attention.
    ResidMid,
    /// RMSNorm before the MLP (Llama's `post_attention_layernorm`, Gemma 3's
    /// `pre_feedforward_layernorm`).
    MlpNorm,
    /// MLP output.
    MlpOut,
    /// RMSNorm of the MLP output before the residual add (Gemma 3's
    /// `post_feedforward_layernorm`).
    PostMlpNorm,
    /// Residual stream after the MLP (the layer's output).
    ResidOut,
    /// Final RMSNorm.
    FinalNorm,
    /// Output logits.
    Logits,
}

impl TensorName {
    /// Every name, in forward order.
    pub const ALL: [TensorName; 14] = [
        TensorName::Embed,
        TensorName::AttnNorm,
        TensorName::Q,
        TensorName::K,
        TensorName::V,
        TensorName::AttnOut,
        TensorName::PostAttnNorm,
        TensorName::ResidMid,
        TensorName::MlpNorm,
        TensorName::MlpOut,
        TensorName::PostMlpNorm,
        TensorName::ResidOut,
        TensorName::FinalNorm,
        TensorName::Logits,
    ];

    /// Whether the tensor belongs to a decoder layer (the others have no layer).
    pub fn in_layer(self) -> bool {
        !matches!(
            self,
            TensorName::Embed | TensorName::FinalNorm | TensorName::Logits
        )
    }

    /// snake_case name, as in sweep files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TensorName::Embed => "embed",
            TensorName::AttnNorm => "attn_norm",
            TensorName::Q => "q",
            TensorName::K => "k",
            TensorName::V => "v",
            TensorName::AttnOut => "attn_out",
            TensorName::PostAttnNorm => "post_attn_norm",
            TensorName::ResidMid => "resid_mid",
            TensorName::MlpNorm => "mlp_norm",
            TensorName::MlpOut => "mlp_out",
            TensorName::PostMlpNorm => "post_mlp_norm",
            TensorName::ResidOut => "resid_out",
            TensorName::FinalNorm => "final_norm",
            TensorName::Logits => "logits",
        }
    }

    /// The root cause when this tensor is the first to fail (rules in the module notes).
    pub fn root_cause(self) -> RootCause {
        match self {
            TensorName::Embed => RootCause::Embedding,
            TensorName::AttnNorm
            | TensorName::PostAttnNorm
            | TensorName::MlpNorm
            | TensorName::PostMlpNorm
            | TensorName::FinalNorm => RootCause::Norm,
            TensorName::Q | TensorName::AttnOut | TensorName::ResidMid => RootCause::Attention,
            TensorName::K | TensorName::V => RootCause::KvCache,
            TensorName::MlpOut | TensorName::ResidOut => RootCause::Mlp,
            TensorName::Logits => RootCause::LmHead,
        }
    }
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a position's divergence starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RootCause {
    /// Token embeddings differ.
    Embedding,
    /// A normalization differs first.
    Norm,
    /// Queries, the attention product or its residual add differ first.
    Attention,
    /// Keys or values (what the cache holds) differ first.
    KvCache,
    /// The MLP differs first.
    Mlp,
    /// Only the output head differs.
    LmHead,
    /// Nothing over threshold.
    None,
    /// A record has no partner at the same position.
    TraceOffset,
    /// The first failure follows layers that were not traced, so the divergence may start
    /// in them ([`UntracedGap`]).
    UntracedGap,
}

impl RootCause {
    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RootCause::Embedding => "EMBEDDING",
            RootCause::Norm => "NORM",
            RootCause::Attention => "ATTENTION",
            RootCause::KvCache => "KV_CACHE",
            RootCause::Mlp => "MLP",
            RootCause::LmHead => "LM_HEAD",
            RootCause::None => "NONE",
            RootCause::TraceOffset => "TRACE_OFFSET",
            RootCause::UntracedGap => "UNTRACED_GAP",
        }
    }
}

/// Sort key of a record in forward order: embed, layers in order, final norm, logits.
pub fn forward_order(layer: Option<usize>, tensor: TensorName) -> (u8, usize, TensorName) {
    match (tensor, layer) {
        (TensorName::Embed, _) => (0, 0, tensor),
        (_, Some(l)) => (1, l, tensor),
        _ => (2, 0, tensor),
    }
}

/// What to record, resolved for one pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSelection {
    /// Layers to record (`None`: all).
    pub layers: Option<BTreeSet<usize>>,
    /// Tensors to record.
    pub tensors: BTreeSet<TensorName>,
    /// Absolute positions to record.
    pub positions: BTreeSet<usize>,
}

/// One recorded tensor row: the values at one position, as f32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Absolute position the run believes it is at.
    pub pos: usize,
    /// Index in the sequence of the token the record was computed for.
    pub index: usize,
    /// Layer, for layer tensors.
    pub layer: Option<usize>,
    /// Which tensor.
    pub tensor: TensorName,
    /// Its values at that position (all heads concatenated for q/k/v).
    pub values: Vec<f32>,
}

/// Collects records during forwards. Only positions inside `window` are kept, so that a run
/// can make a forward over more positions than it owns (kv_aligned decode's cache forward).
#[derive(Debug, Clone)]
pub struct TraceSink {
    sel: TraceSelection,
    window: std::ops::Range<usize>,
    /// What was recorded.
    pub records: Vec<TraceRecord>,
}

impl TraceSink {
    /// A sink for `sel`, open to every position.
    pub fn new(sel: TraceSelection) -> Self {
        TraceSink {
            sel,
            window: 0..usize::MAX,
            records: Vec::new(),
        }
    }

    /// Restricts the positions later forwards may record.
    pub fn set_window(&mut self, window: std::ops::Range<usize>) {
        self.window = window;
    }

    fn wants(&self, layer: Option<usize>, tensor: TensorName) -> bool {
        self.sel.tensors.contains(&tensor)
            && match (layer, &self.sel.layers) {
                (Some(l), Some(ls)) => ls.contains(&l),
                _ => true,
            }
    }

    /// Records `x` of shape (1, t, d), whose rows are the tokens at sequence indices
    /// index..index+t. Selection and window apply to those indices; each record is labelled
    /// with the position the run believes the token is at (index + `shift`), so that a path
    /// that is off by some positions leaves records without partners.
    pub fn record(
        &mut self,
        layer: Option<usize>,
        tensor: TensorName,
        x: &Tensor,
        index: usize,
        shift: usize,
    ) -> candle_core::Result<()> {
        if !self.wants(layer, tensor) {
            return Ok(());
        }
        let t = x.dim(1)?;
        let lo = index.max(self.window.start);
        let hi = (index + t).min(self.window.end);
        let wanted: Vec<usize> = self.sel.positions.range(lo..hi.max(lo)).copied().collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // Upcast for the comparison: records are measured in f32 whatever the run dtype.
        let rows = x.squeeze(0)?.to_dtype(DType::F32)?;
        for i in wanted {
            let values = rows.get(i - index)?.flatten_all()?.to_vec1()?;
            self.records.push(TraceRecord {
                pos: i + shift,
                index: i,
                layer,
                tensor,
                values,
            });
        }
        Ok(())
    }
}

/// A deliberate perturbation of the decode path (the tool's negative control).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Injection {
    /// Scale `tensor` at `layer` by (1 + epsilon) in every single-token decode forward.
    pub scale: Option<ScaleFault>,
    /// Shift the positions decode steps believe they are at by this many.
    pub position_shift: usize,
    /// Widen decode steps' sliding window by this many keys.
    #[serde(default)]
    pub window_shift: usize,
    /// Chunks after the first believe they start this many positions further along.
    #[serde(default)]
    pub chunk_position_shift: usize,
    /// In batched forwards, row 0 reads row 1's newest cached K/V before its own.
    #[serde(default)]
    pub cross_row_cache: bool,
    /// Decode runs over this many span tokens fail with an error (failure-handling control).
    pub fail_span: Option<usize>,
}

/// Scale one tensor at one layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleFault {
    /// Layer (ignored for embed, final_norm and logits).
    pub layer: usize,
    /// Tensor.
    pub tensor: TensorName,
    /// Relative perturbation.
    pub epsilon: f64,
}

/// What a forward pass does besides computing: record into a sink, and perturb on purpose.
#[derive(Debug, Default)]
pub struct Hooks<'a> {
    /// Where records go; `None` costs one branch per tap.
    pub sink: Option<&'a mut TraceSink>,
    /// An active fault, if any.
    pub fault: Option<ScaleFault>,
    /// Position shift of the current forward (set by the decoder), so records carry the
    /// position the path believes in.
    pub shift: usize,
    /// The cross-row fault ([`crate::model::Fault::cross_row_cache`]): attention layers
    /// apply it to the K/V they read.
    pub cross_row: bool,
}

impl<'a> Hooks<'a> {
    /// Hooks that record into `sink` (if any) and apply `fault` (if any).
    pub fn new(sink: Option<&'a mut TraceSink>, fault: Option<ScaleFault>) -> Self {
        Hooks {
            sink,
            fault,
            shift: 0,
            cross_row: false,
        }
    }

    /// Applies the fault if it targets this point, then records. `x` is (1, t, d) and its
    /// first row sits at (believed) position `offset`.
    pub fn tap(
        &mut self,
        layer: Option<usize>,
        tensor: TensorName,
        x: Tensor,
        offset: usize,
    ) -> candle_core::Result<Tensor> {
        let x = match self.fault {
            Some(f) if f.tensor == tensor && (!tensor.in_layer() || Some(f.layer) == layer) => {
                (x * (1.0 + f.epsilon))?
            }
            _ => x,
        };
        if let Some(sink) = self.sink.as_deref_mut() {
            sink.record(layer, tensor, &x, offset - self.shift, self.shift)?;
        }
        Ok(x)
    }

    /// Whether any tap can do anything (lets callers skip layout work).
    pub fn active(&self) -> bool {
        self.sink.is_some() || self.fault.is_some()
    }
}

/// Default threshold on the normalized MSE Σ(a−b)²/Σa² of one record, per dtype.
///
/// Set about ten times above the worst NMSE of any tensor between honest prefill and decode
/// runs of the built-in model (12 layers, 64 span positions after a 16-token prompt, both
/// kv_aligned modes, every tensor): f32 1.1e-10, f16 1.3e-4, bf16 2.1e-3. In units of the
/// dtype's eps² these are 7.7e3, 130 and 35: accumulated rounding does not scale with eps²
/// alone, so each dtype has its own measured number rather than one multiplier. A relative
/// perturbation ε of one tensor gives an NMSE of ε²: ε = 1e-2 (1e-4) is caught in f32 and
/// lies within f16/bf16 rounding noise, where ε = 0.1 is needed.
pub fn default_nmse_threshold(dtype: RunDtype) -> f64 {
    match dtype {
        RunDtype::F32 => 1e-8,
        RunDtype::F16 => 1e-3,
        RunDtype::Bf16 => 2e-2,
    }
}

/// One aligned record, measured; or a record with no partner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordResult {
    /// Position.
    pub pos: usize,
    /// Layer.
    pub layer: Option<usize>,
    /// Tensor.
    pub tensor: TensorName,
    /// Σ(a−b)²/Σa² (prefill is a); `None` for an unpaired record.
    pub nmse: Option<f64>,
    /// max |a−b|; `None` for an unpaired record.
    pub max_abs: Option<f32>,
    /// Over its threshold, or misaligned.
    pub failed: bool,
    /// Why the record is a TRACE_OFFSET: it has no partner at its position (and which side
    /// has it), or its partner holds a different token of the sequence.
    pub misaligned: Option<String>,
}

/// A traced pair's verdict at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionResult {
    /// Absolute position.
    pub pos: usize,
    /// Token id fed at that position.
    pub token_id: Option<u32>,
    /// First failing record in forward order: (layer, tensor).
    pub first_fail: Option<(Option<usize>, TensorName)>,
    /// Root cause.
    pub root_cause: RootCause,
    /// In words.
    pub details: String,
    /// The untraced layers right before the first failure, when they may hold its cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untraced: Option<UntracedGap>,
}

/// Layers `first..=last` were not traced and come right before a position's first failure,
/// whose own layer shows no passing record before it: the divergence may start in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntracedGap {
    /// First untraced layer.
    pub first: usize,
    /// Last untraced layer.
    pub last: usize,
    /// The failing tensor's own stage, which the gap may or may not confirm.
    pub stage: RootCause,
}

impl UntracedGap {
    /// `layers 5–7` (or `layer 5`).
    pub fn layers(&self) -> String {
        if self.first == self.last {
            format!("layer {}", self.first)
        } else {
            format!("layers {}–{}", self.first, self.last)
        }
    }

    /// The `trace:` setting that decides: `layers: [5, 6, 7]`.
    pub fn suggestion(&self) -> String {
        let list: Vec<String> = (self.first..=self.last).map(|l| l.to_string()).collect();
        format!("layers: [{}]", list.join(", "))
    }

    /// The caveat in words.
    pub fn caveat(&self) -> String {
        format!(
            "{} not traced; the cause may lie there (trace `{}` to decide)",
            self.layers(),
            self.suggestion()
        )
    }
}

/// The trace analysis of one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairTrace {
    /// Pair id.
    pub pair_id: String,
    /// Prompt id.
    pub prompt: String,
    /// Dtype.
    pub dtype: RunDtype,
    /// NMSE threshold used.
    pub nmse_threshold: f64,
    /// Every record, aligned and measured, in forward order per position.
    pub records: Vec<RecordResult>,
    /// Per position.
    pub positions: Vec<PositionResult>,
}

impl PairTrace {
    /// Records compared (both sides present, same token).
    pub fn compared(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.misaligned.is_none())
            .count()
    }

    /// Records with no partner, or whose partner holds another token: alignment failures.
    pub fn missing(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.misaligned.is_some())
            .count()
    }

    /// Compared records over threshold.
    pub fn failed(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.failed && r.misaligned.is_none())
            .count()
    }

    /// Knowing the model's layer count, a first failure at `final_norm` or `logits` after
    /// untraced last layers becomes UNTRACED_GAP too.
    pub fn with_layer_count(mut self, n_layers: usize) -> Self {
        let records = &self.records;
        self.positions = std::mem::take(&mut self.positions)
            .into_iter()
            .map(|p| {
                let at: Vec<&RecordResult> = records.iter().filter(|r| r.pos == p.pos).collect();
                p.with_gap(&at, Some(n_layers))
            })
            .collect();
        self
    }
}

fn fmt_positions(ps: &BTreeSet<usize>) -> String {
    if ps.is_empty() {
        return "none".into();
    }
    // Runs of consecutive positions as a–b.
    let mut parts = Vec::new();
    let mut it = ps.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}–{end}")
        });
    }
    parts.join(", ")
}

/// Aligns and measures the records of one pair's two runs.
pub fn analyze(
    pair_id: &str,
    prompt: &str,
    dtype: RunDtype,
    prefill: &[TraceRecord],
    decode: &[TraceRecord],
    token_ids: &[u32],
    nmse_threshold: f64,
) -> PairTrace {
    let records = compare_records(prefill, decode, nmse_threshold);
    let all_pos: BTreeSet<usize> = records.iter().map(|r| r.pos).collect();
    let positions = all_pos
        .into_iter()
        .map(|pos| {
            let at: Vec<&RecordResult> = records.iter().filter(|r| r.pos == pos).collect();
            position_result(pos, &at, token_ids.get(pos).copied(), nmse_threshold)
        })
        .collect();
    PairTrace {
        pair_id: pair_id.to_string(),
        prompt: prompt.to_string(),
        dtype,
        nmse_threshold,
        records,
        positions,
    }
}

/// Every (position, tensor) record of either path, measured where both have it and failed
/// where only one does.
fn compare_records(
    prefill: &[TraceRecord],
    decode: &[TraceRecord],
    nmse_threshold: f64,
) -> Vec<RecordResult> {
    type Key = (usize, (u8, usize, TensorName), Option<usize>);
    let key = |r: &TraceRecord| -> Key { (r.pos, forward_order(r.layer, r.tensor), r.layer) };
    let pre: BTreeMap<Key, &TraceRecord> = prefill.iter().map(|r| (key(r), r)).collect();
    let dec: BTreeMap<Key, &TraceRecord> = decode.iter().map(|r| (key(r), r)).collect();
    // Positions each side has, per (layer, tensor), for TRACE_OFFSET details.
    let positions_of = |m: &BTreeMap<Key, &TraceRecord>, layer: Option<usize>, t: TensorName| {
        m.values()
            .filter(|r| r.layer == layer && r.tensor == t)
            .map(|r| r.pos)
            .collect::<BTreeSet<usize>>()
    };
    let keys: BTreeSet<Key> = pre.keys().chain(dec.keys()).copied().collect();
    let mut records = Vec::with_capacity(keys.len());
    for k in keys {
        let (pos, (_, _, tensor), layer) = k;
        let r = match (pre.get(&k), dec.get(&k)) {
            (Some(a), Some(b)) => {
                let (nmse, max_abs) = measure(&a.values, &b.values);
                // Both paths say "position pos" but computed different tokens there.
                let misaligned = (a.index != b.index).then(|| {
                    format!(
                        "position {pos} holds token {} of the sequence in prefill but token {} in decode",
                        a.index, b.index
                    )
                });
                RecordResult {
                    pos,
                    layer,
                    tensor,
                    nmse: Some(nmse),
                    max_abs: Some(max_abs),
                    // NaN (non-finite values) fails too.
                    failed: misaligned.is_some() || nmse.is_nan() || nmse > nmse_threshold,
                    misaligned,
                }
            }
            (a, _) => {
                let (side, other, other_map) = if a.is_some() {
                    ("prefill", "decode", &dec)
                } else {
                    ("decode", "prefill", &pre)
                };
                RecordResult {
                    pos,
                    layer,
                    tensor,
                    nmse: None,
                    max_abs: None,
                    failed: true,
                    misaligned: Some(format!(
                        "only in {side}; {other} has positions {} for this tensor",
                        fmt_positions(&positions_of(other_map, layer, tensor))
                    )),
                }
            }
        };
        records.push(r);
    }
    records
}

/// The verdict at one position: its first failing record in forward order (a misaligned
/// one says why), or the worst record when all pass.
fn position_result(
    pos: usize,
    at: &[&RecordResult],
    token_id: Option<u32>,
    nmse_threshold: f64,
) -> PositionResult {
    let first = at.iter().find(|r| r.failed);
    let (first_fail, root_cause, details) = match first {
        Some(r) if r.misaligned.is_some() => (
            Some((r.layer, r.tensor)),
            RootCause::TraceOffset,
            r.misaligned.clone().unwrap_or_default(),
        ),
        Some(r) => (
            Some((r.layer, r.tensor)),
            r.tensor.root_cause(),
            format!(
                "nmse {:.3e} > {:.1e}, max|diff| {:.3e}",
                r.nmse.unwrap_or(f64::NAN),
                nmse_threshold,
                r.max_abs.unwrap_or(f32::NAN)
            ),
        ),
        None => {
            let worst = at
                .iter()
                .max_by(|a, b| a.nmse.unwrap_or(0.0).total_cmp(&b.nmse.unwrap_or(0.0)));
            let d = worst.map_or(String::new(), |w| {
                format!(
                    "{} records within {:.1e}; worst nmse {:.3e} at {}",
                    at.len(),
                    nmse_threshold,
                    w.nmse.unwrap_or(0.0),
                    label(w.layer, w.tensor)
                )
            });
            (None, RootCause::None, d)
        }
    };
    PositionResult {
        pos,
        token_id,
        first_fail,
        root_cause,
        details,
        untraced: None,
    }
    .with_gap(at, None)
}

impl PositionResult {
    /// Marks the first failure UNTRACED_GAP when untraced layers right before it may hold
    /// its cause (`n_layers` known: also the layers after the last traced one, before
    /// `final_norm` or `logits`). Misaligned records stay TRACE_OFFSET.
    fn with_gap(mut self, at: &[&RecordResult], n_layers: Option<usize>) -> Self {
        if self.untraced.is_some() || self.root_cause == RootCause::TraceOffset {
            return self;
        }
        if let Some(gap) = self
            .first_fail
            .and_then(|f| untraced_before(at, f, n_layers))
        {
            let stage = self.root_cause;
            self.details = format!(
                "first over threshold: {} ({}), {}; {}",
                self.first_fail.map_or(String::new(), |(l, t)| label(l, t)),
                stage.as_str(),
                self.details,
                gap.caveat()
            );
            self.root_cause = RootCause::UntracedGap;
            self.untraced = Some(UntracedGap { stage, ..gap });
        }
        self
    }
}

/// The untraced layers right before `first` (the first failing record), unless a record of
/// the same stretch before it passed: a passing record of the failing layer (or `final_norm`
/// before a failing `logits`) shows the input from those layers agreed.
fn untraced_before(
    at: &[&RecordResult],
    first: (Option<usize>, TensorName),
    n_layers: Option<usize>,
) -> Option<UntracedGap> {
    let (layer, tensor) = first;
    let key = forward_order(layer, tensor);
    let before = |r: &&&RecordResult| forward_order(r.layer, r.tensor) < key;
    let traced: BTreeSet<usize> = at.iter().filter(before).filter_map(|r| r.layer).collect();
    let end = match (layer, tensor) {
        (_, TensorName::Embed) => return None,
        (Some(l), _) => l,
        (None, _) => n_layers?,
    };
    let cleared = at.iter().filter(before).any(|r| match layer {
        Some(l) => r.layer == Some(l),
        None => r.layer.is_none() && r.tensor != TensorName::Embed,
    });
    let start = traced.range(..end).next_back().map_or(0, |l| l + 1);
    (!cleared && start < end).then_some(UntracedGap {
        first: start,
        last: end - 1,
        stage: RootCause::None,
    })
}

/// `layer 2 mlp_out`, or `final_norm` for tensors outside layers.
pub fn label(layer: Option<usize>, tensor: TensorName) -> String {
    match layer {
        Some(l) => format!("layer {l} {tensor}"),
        None => tensor.to_string(),
    }
}

/// Σ(a−b)²/Σa² and max |a−b|, in f64. A zero reference with a non-zero difference is
/// infinitely far; two zero vectors are equal. Non-finite values give NaN, which fails.
pub fn measure(a: &[f32], b: &[f32]) -> (f64, f32) {
    if a.len() != b.len() {
        return (f64::INFINITY, f32::INFINITY);
    }
    let mut num = 0f64;
    let mut den = 0f64;
    let mut max_abs = 0f32;
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += x as f64 * x as f64;
        max_abs = max_abs.max((x - y).abs());
    }
    let nmse = if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        num / den
    };
    (nmse, max_abs)
}

#[cfg(test)]
mod tests;
