//! report.json's and trace.json's schema (docs/design.md, "Results on disk"): the typed view
//! every renderer reads. Field names and order are the files' contract; aggregation fills
//! them in (`aggregate.rs`, `kl.rs`, `paths.rs`, `trace.rs`). The types live here, apart from
//! the code that fills them, so that those files read each other's types without importing
//! each other.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::compare::Metrics;
use crate::compare::kl_stats::KlStats;
use crate::config::TraceOn;
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::limits::{DtypeLimits, Thresholds};
use crate::path::RunPath;
use crate::plan::{Mode, PairSpec};
use crate::store::{ModelLoad, ToolInfo};
use crate::trace::PairTrace;
use crate::verdict::{GlobalVerdict, PairVerdict};

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReportJson {
    /// Tool identity.
    pub tool: ToolInfo,
    /// Sweep identity.
    pub sweep: SweepIdentity,
    /// Device asked for.
    pub device: String,
    /// Device used.
    pub device_name: String,
    /// Model identity.
    pub model: crate::store::ModelIdentity,
    /// Global verdict.
    pub verdict: GlobalVerdict,
    /// Its reason.
    pub verdict_reason: String,
    /// Counts of runs, pairs and verdicts.
    pub counts: Counts,
    /// How many times weights were loaded.
    pub model_loads: usize,
    /// How many (model, dtype, device) groups the sweep needs: equal to `model_loads` when
    /// every group was loaded exactly once.
    pub model_load_groups: usize,
    /// Each load, with its time.
    pub model_load_details: Vec<ModelLoad>,
    /// Whole sweep wall time, seconds (null while unfinished).
    pub wall_s: Option<f64>,
    /// Start time.
    pub started_at: String,
    /// End time.
    pub finished_at: Option<String>,
    /// Continuation mode.
    pub continuation: String,
    /// Thresholds per dtype.
    pub limits: BTreeMap<String, DtypeLimits>,
    /// Observations derived from the data.
    pub observations: Vec<String>,
    /// Per pair.
    pub pairs: Vec<PairJson>,
    /// kv_aligned=false drift per (span, dtype).
    pub drift_characterization: Vec<DriftGroup>,
    /// Timings per (span, dtype, mode).
    pub performance: Vec<PerfGroup>,
    /// The fault injected into decode runs, when one was (the numbers are then not the
    /// model's own drift).
    pub inject: Option<crate::config::InjectConfig>,
    /// The trace result, when the sweep traced.
    pub trace: Option<TraceSummary>,
    /// The last session was stopped by a signal before its work was done.
    pub interrupted: bool,
    /// Every invocation that worked on the results directory (first run, then resumes).
    pub sessions: Vec<crate::store::Session>,
    /// The shard these results are (`run --shard K/N`): index, count and estimated costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::store::shards::ShardSummary>,
    /// The shards these results were merged from, and what was missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<crate::store::shards::MergeInfo>,
    /// llama.cpp-style KL statistics pooled over each dtype's compared pairs.
    pub kl_statistics: Vec<KlGroup>,
    /// The serving paths (chunked, batched), when the sweep took any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving_paths: Option<ServingPaths>,
}

/// `sweep` in report.json.
#[derive(Debug, Clone, Serialize)]
pub struct SweepIdentity {
    /// Name.
    pub name: String,
    /// sha256 of the sweep file.
    pub config_sha256: String,
}

/// `counts` in report.json.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Runs planned (2 × pairs).
    pub runs: usize,
    /// Runs that finished.
    pub runs_ok: usize,
    /// Runs that failed.
    pub runs_failed: usize,
    /// Runs skipped.
    pub runs_skipped: usize,
    /// Finished runs that reused another run's computation (shared prefills).
    pub runs_reused: usize,
    /// Pairs planned.
    pub pairs: usize,
    /// PASS_EQUIV pairs.
    pub pass_equiv: usize,
    /// FAIL_EQUIV pairs.
    pub fail_equiv: usize,
    /// EXPECTED_DRIFT pairs.
    pub expected_drift: usize,
    /// FAIL_DRIFT pairs.
    pub fail_drift: usize,
    /// INCOMPLETE pairs (including pairs with no record yet).
    pub incomplete: usize,
    /// SKIPPED pairs.
    pub skipped: usize,
}

/// One run inside a pair.
#[derive(Debug, Clone, Serialize)]
pub struct RunJson {
    /// ok, failed, skipped or missing.
    pub status: String,
    /// Wall time, seconds.
    pub wall_s: Option<f64>,
    /// Kept logits file.
    pub logits_file: Option<String>,
    /// Error text.
    pub error: Option<String>,
    /// Tokens fed.
    pub tokens_fed: usize,
    /// Absolute position of the first span position (the prompt length).
    pub span_start: usize,
    /// f32 span logits size, bytes.
    pub logits_bytes: u64,
    /// The run whose computation this one reused (a prefill shared by kv_aligned 0 and 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

/// One pair in report.json.
#[derive(Debug, Clone, Serialize)]
pub struct PairJson {
    /// The pair.
    #[serde(flatten)]
    pub spec: PairSpec,
    /// Verdict.
    pub verdict: PairVerdict,
    /// Reason.
    pub reason: String,
    /// Metrics (null unless compared).
    pub metrics: Option<Metrics>,
    /// The thresholds applied.
    pub limits: Option<Thresholds>,
    /// Prefill run.
    pub prefill: RunJson,
    /// Decode run.
    pub decode: RunJson,
    /// llama.cpp-style KL statistics of this pair (null unless compared).
    pub kl_stats: Option<KlStats>,
    /// This pair's prefill against the own decoder's dequantized f32 prefill of the same
    /// tokens (null for that setting itself, or when there was none).
    pub yardstick: Option<crate::store::Yardstick>,
    /// What `first_divergence: search` found and cost (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence_search: Option<crate::plan::DivergenceSearch>,
    /// Prefill and decode against the reference (absent when the pair was not held to one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<crate::store::ReferenceCheck>,
}

impl RunJson {
    /// A run with no record.
    pub fn missing() -> RunJson {
        RunJson {
            status: "missing".into(),
            wall_s: None,
            logits_file: None,
            error: None,
            tokens_fed: 0,
            span_start: 0,
            logits_bytes: 0,
            reused_from: None,
        }
    }
}

/// The pairs that were compared, with their metrics.
pub(crate) fn compared(pairs: &[PairJson]) -> impl Iterator<Item = (&PairJson, &Metrics)> {
    pairs
        .iter()
        .filter(|p| p.verdict.is_compared())
        .filter_map(|p| p.metrics.as_ref().map(|m| (p, m)))
}

/// kv_aligned=false drift of one (engine, weights, span, dtype).
#[derive(Debug, Clone, Serialize)]
pub struct DriftGroup {
    /// Implementation.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Span.
    pub span: usize,
    /// Dtype.
    pub dtype: RunDtype,
    /// Largest max_abs_diff.
    pub max_abs_max: f32,
    /// Mean max_abs_diff.
    pub max_abs_mean: f32,
    /// Mean p99_abs_diff.
    pub p99_mean: f32,
    /// Smallest top-1 agreement.
    pub top1_min: f32,
    /// Mean top-1 agreement.
    pub top1_mean: f32,
    /// Mean of kl_mean.
    pub kl_mean_mean: f32,
    /// Largest kl_max.
    pub kl_max_max: f32,
    /// Pairs with bit-identical logits.
    pub identical: usize,
    /// Same for the kv_aligned=true pairs of this (span, dtype), for contrast.
    pub aligned_max_abs_mean: Option<f32>,
    /// Pairs compared.
    pub samples: usize,
}

/// Timing of one (engine, weights, span, dtype, mode).
#[derive(Debug, Clone, Serialize)]
pub struct PerfGroup {
    /// Implementation.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Span.
    pub span: usize,
    /// Dtype.
    pub dtype: RunDtype,
    /// Mode.
    pub mode: Mode,
    /// The path of the run under test (decode unless the sweep has a `path` axis; prefill
    /// runs are the same computation whatever their pair's path).
    #[serde(skip_serializing_if = "RunPath::is_default")]
    pub path: RunPath,
    /// Mean wall time, seconds.
    pub wall_mean_s: f64,
    /// 95th percentile wall time (nearest rank), seconds.
    pub wall_p95_s: f64,
    /// Mean tokens fed per second.
    pub tokens_per_s: f64,
    /// Mean f32 logits bytes.
    pub logits_bytes_mean: u64,
    /// Runs measured.
    pub samples: usize,
}

/// The pooled statistics of one dtype (and one kv_aligned mode, or both).
#[derive(Debug, Clone, Serialize)]
pub struct KlGroup {
    /// Implementation.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Dtype.
    pub dtype: RunDtype,
    /// kv_aligned, or null for both modes pooled.
    pub kv_aligned: Option<bool>,
    /// Compared pairs pooled.
    pub pairs: usize,
    /// The statistics.
    pub stats: KlStats,
}

/// One path of one setting.
#[derive(Debug, Clone, Serialize)]
pub struct PathGroup {
    /// Implementation.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Dtype.
    pub dtype: RunDtype,
    /// kv_aligned.
    pub kv_aligned: bool,
    /// The path.
    pub path: RunPath,
    /// Pairs compared.
    pub pairs: usize,
    /// Of those, failed.
    pub failed: usize,
    /// Largest max_abs_diff against prefill.
    pub max_abs_max: f32,
    /// Largest kl_max.
    pub kl_max_max: f32,
    /// Smallest top-1 agreement.
    pub top1_min: f32,
    /// Pairs whose logits are bit-identical to prefill's (max_abs_diff = 0).
    pub identical_to_prefill: usize,
    /// Mean wall time of the path's run, seconds (reused runs excluded: there are none on
    /// this side).
    pub wall_mean_s: Option<f64>,
    /// Mean tokens fed per run (every row of a batch counted).
    pub tokens_fed_mean: f64,
}

/// Two paths of one setting over the same (prompt, span, seed).
#[derive(Debug, Clone, Serialize)]
pub struct PathComparison {
    /// Implementation.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Dtype.
    pub dtype: RunDtype,
    /// kv_aligned.
    pub kv_aligned: bool,
    /// The path compared.
    pub path: RunPath,
    /// The path it is compared with (batch 1, or the next smaller chunk).
    pub against: RunPath,
    /// Pairs with both runs' digests.
    pub pairs: usize,
    /// Of those, bit-identical at every span position.
    pub identical: usize,
    /// The earliest absolute position where the two differ, and the pair it is in.
    pub first_difference: Option<(usize, String)>,
}

/// The serving-path sections of a report.
#[derive(Debug, Clone, Serialize)]
pub struct ServingPaths {
    /// Per path of each setting.
    pub groups: Vec<PathGroup>,
    /// Between paths.
    pub comparisons: Vec<PathComparison>,
}

/// What report.json says of the traces.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// PASS only when records were compared and none failed and none is missing.
    pub result: GlobalVerdict,
    /// Why.
    pub reason: String,
    /// Pairs with a trace.
    pub traced_pairs: usize,
    /// The Markdown report, relative to the results directory.
    pub report: String,
    /// The JSON with every number.
    pub json: String,
}

/// trace.json.
#[derive(Debug, Clone, Serialize)]
pub struct TraceJson {
    pub(super) date: String,
    pub(super) sweep: String,
    pub(super) on: TraceOn,
    pub(super) inject: Option<String>,
    pub(super) result: GlobalVerdict,
    pub(super) reason: String,
    pub(super) expected_pairs: usize,
    pub(super) traced_pairs: usize,
    pub(super) pass: usize,
    pub(super) fail: usize,
    pub(super) not_traced: Vec<String>,
    pub(super) compared_records: usize,
    pub(super) failed_records: usize,
    pub(super) missing_partners: usize,
    pub(super) failure_summary: BTreeMap<String, usize>,
    /// Untraced layers before a first failure, where its cause may lie: the caveat with the
    /// `trace:` setting that decides → positions.
    pub(super) untraced_gaps: BTreeMap<String, usize>,
    pub(super) rows: Vec<TraceRow>,
    pub(super) pairs: Vec<PairTrace>,
}

/// One row of the detailed table: one (pair, position, layer) group of records.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TraceRow {
    pub(super) pair: String,
    pub(super) prompt: String,
    pub(super) token_id: String,
    pub(super) pos: usize,
    pub(super) layer: String,
    pub(super) tensor: String,
    pub(super) first_fail: String,
    pub(super) root_cause: String,
    pub(super) details: String,
}
