//! report.json's schema (docs/design.md, "Results on disk"): the typed view every renderer
//! reads. Field names and order are the file's contract; aggregation fills them in
//! ([`super::aggregate`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{kl, paths, trace};
use crate::compare::Metrics;
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::limits::{DtypeLimits, Thresholds};
use crate::path::RunPath;
use crate::plan::{Mode, PairSpec};
use crate::store::{ModelLoad, ToolInfo};
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
    pub trace: Option<trace::TraceSummary>,
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
    pub kl_statistics: Vec<kl::KlGroup>,
    /// The serving paths (chunked, batched), when the sweep took any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving_paths: Option<paths::ServingPaths>,
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
    pub kl_stats: Option<crate::compare::kl_stats::KlStats>,
    /// This pair's prefill against the own decoder's dequantized f32 prefill of the same
    /// tokens (null for that setting itself, or when there was none).
    pub yardstick: Option<crate::store::Yardstick>,
    /// What `first_divergence: search` found and cost (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence_search: Option<crate::plan::DivergenceSearch>,
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
