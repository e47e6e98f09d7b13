//! The manifest (`manifest.json`): what a results directory says about the sweep that made
//! it, and the JSON reader every record goes through. Kept apart from [`super::Store`] so that
//! the ownership checks ([`super::owner`]), which read a manifest to know what a sweep wrote,
//! need nothing of the store itself.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::shards;
use crate::config::SweepConfig;
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::Result;
use crate::limits::DtypeLimits;
use crate::plan::PairSpec;

/// Name of the manifest file.
pub const MANIFEST: &str = "manifest.json";

/// What a results directory says about the sweep that made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Tool name and version, candle version.
    pub tool: ToolInfo,
    /// Sweep name.
    pub sweep_name: String,
    /// The sweep file's path as given.
    pub config_path: String,
    /// sha256 of the sweep file's bytes.
    pub config_sha256: String,
    /// The sweep file's text.
    pub config_text: String,
    /// The resolved settings (defaults filled in, limits per dtype merged), typed: a change
    /// of their shape is a compile error here, not a silently dropped field in a report.
    pub resolved: ResolvedSettings,
    /// Device asked for.
    pub device: String,
    /// Device actually used, or why none could be.
    pub device_name: String,
    /// Model identity.
    pub model: ModelIdentity,
    /// Continuation mode.
    pub continuation: String,
    /// Every pair in plan order.
    pub pairs: Vec<PairSpec>,
    /// Token ids per `prompt/seedN`: the prompt and the longest continuation.
    pub tokens: BTreeMap<String, SequenceRecord>,
    /// The weight loads the plan needs: one per (model, dtype, device) group.
    pub load_groups: Vec<crate::plan::LoadGroup>,
    /// One entry per weight load made.
    pub model_loads: Vec<ModelLoad>,
    /// RFC 3339 start time of the first session.
    pub started_at: String,
    /// RFC 3339 end time of the last session, when it finished (interrupted or not).
    pub finished_at: Option<String>,
    /// Wall time of the sweep, seconds: the sum over its sessions, once the last finished.
    pub wall_s: Option<f64>,
    /// Each invocation that worked on this directory: the first run, then every resume.
    #[serde(default)]
    pub sessions: Vec<Session>,
    /// The shard this directory holds (`run --shard K/N`), with the whole plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<shards::ShardInfo>,
    /// The shards this directory was merged from (`driftsweep merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<shards::MergeInfo>,
}

/// The settings a sweep ran with: its file with every default filled in, and the limits each
/// dtype's pairs were judged by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedSettings {
    /// The sweep file (prompt files read into their text), with defaults.
    #[serde(flatten)]
    pub config: SweepConfig,
    /// Tolerance and drift budget per dtype name.
    pub limits: BTreeMap<String, DtypeLimits>,
}

/// One invocation of `driftsweep run` on a results directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Session {
    /// RFC 3339 start.
    pub started_at: String,
    /// RFC 3339 end, once finished.
    pub finished_at: Option<String>,
    /// Wall time, seconds, once finished.
    pub wall_s: Option<f64>,
    /// Pairs whose finished results were reused from earlier sessions.
    pub reused_pairs: usize,
    /// Pairs this session set out to compute.
    pub planned_pairs: usize,
    /// Stopped by SIGINT or SIGTERM before its work was done.
    pub interrupted: bool,
    /// Tool that ran it (a resume may use a newer build).
    pub tool: Option<ToolInfo>,
}

impl Manifest {
    /// Whether the last session was interrupted.
    pub fn interrupted(&self) -> bool {
        self.sessions.last().is_some_and(|s| s.interrupted)
    }
}

/// `tool` in report.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolInfo {
    /// "driftsweep".
    pub name: String,
    /// Crate version.
    pub version: String,
    /// candle-core version it was built with.
    pub candle_version: String,
    /// Git commit the binary was built from ("unknown" outside a checkout).
    #[serde(default)]
    pub git_commit: String,
}

impl ToolInfo {
    /// This binary.
    pub fn current() -> Self {
        ToolInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            candle_version: crate::CANDLE_VERSION.into(),
            git_commit: crate::GIT_COMMIT.into(),
        }
    }
}

/// `model` in report.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// `model.source`.
    pub source: String,
    /// Architecture.
    pub architecture: String,
    /// sha256 of the weights (or, for generated weights, of their recipe).
    pub sha256: String,
    /// Context length.
    pub context_len: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Sliding window of the model's windowed layers, if it has one (report.html draws its
    /// edges; absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
}

/// The ids a (prompt, seed) feeds to its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SequenceRecord {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// Continuation ids at the longest span; shorter spans use a prefix.
    pub continuation: Vec<u32>,
}

/// One load of the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelLoad {
    /// Dtype loaded.
    pub dtype: RunDtype,
    /// Implementation (absent in older manifests: the own decoder).
    #[serde(default)]
    pub engine: Engine,
    /// Weight format (absent in older manifests: dequantized).
    #[serde(default)]
    pub weights: WeightFormat,
    /// The code inside the engine that ran, e.g. `candle_transformers::models::quantized_llama`.
    #[serde(default)]
    pub implementation: String,
    /// Device.
    pub device: String,
    /// Seconds it took.
    pub load_s: f64,
    /// Why it was loaded: "runs", "continuation", or both.
    pub purpose: String,
    /// Lanes its pairs ran on, side by side (absent in older manifests: one).
    #[serde(default = "one")]
    pub lanes: usize,
    /// CPU threads each lane's operations used (absent in older manifests: unknown, 0).
    #[serde(default)]
    pub threads_per_lane: usize,
}

fn one() -> usize {
    1
}

/// Reads a JSON record (the manifest or any other) from `path`.
/// Streaming and bounded ([`crate::fsutil::read_json_file`]): a results directory is untrusted.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    crate::fsutil::read_json_file(path)
}
