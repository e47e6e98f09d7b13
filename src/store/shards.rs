//! What a shard's and a merge's manifests record (`shard`, `merged`): plain data, kept beside
//! the other records so that the store needs nothing of the partition or merge logic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::plan::{LoadGroup, PairSpec};

/// Shard K of N (K counts from 0, as Slurm's `SLURM_ARRAY_TASK_ID` and Kubernetes'
/// `JOB_COMPLETION_INDEX` do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// K, in 0..N.
    pub index: usize,
    /// N, at least 1.
    pub count: usize,
}

/// Why a `K/N` shard does not parse; its text says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseShardError(String);

impl FromStr for Shard {
    type Err = ParseShardError;

    fn from_str(s: &str) -> std::result::Result<Self, ParseShardError> {
        let bad = |why: &str| {
            ParseShardError(format!(
                "`{s}`: {why}; write K/N with 0 <= K < N, for example 0/4"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let index: usize = k
            .trim()
            .parse()
            .map_err(|_| bad("K is not a whole number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        if count == 0 {
            return Err(bad("N (the number of shards) must be at least 1"));
        }
        if index >= count {
            return Err(bad(&format!(
                "K = {index} is not below N = {count} (shards count from 0)"
            )));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One pair of the whole plan and the shard that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardedPair {
    /// The pair.
    #[serde(flatten)]
    pub spec: PairSpec,
    /// Index of its shard.
    pub shard: usize,
}

/// What a shard's manifest records (`shard` in manifest.json): which shard it is, and the
/// whole plan, so that `driftsweep merge` can name the pairs no given shard holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// K.
    pub index: usize,
    /// N.
    pub count: usize,
    /// This shard's estimated cost, forward tokens.
    pub cost_tokens: u64,
    /// Every shard's estimated cost, forward tokens, by index.
    pub shard_costs: Vec<u64>,
    /// Every pair of the whole plan in plan order, with its shard.
    pub plan: Vec<ShardedPair>,
    /// The weight loads the whole plan needs.
    pub plan_load_groups: Vec<LoadGroup>,
}

impl ShardInfo {
    /// "K/N".
    pub fn shard(&self) -> Shard {
        Shard {
            index: self.index,
            count: self.count,
        }
    }
}

/// `shard` in a shard's report.json: which part of the sweep it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardSummary {
    /// K.
    pub index: usize,
    /// N.
    pub count: usize,
    /// Pairs of this shard.
    pub pairs: usize,
    /// Pairs of the whole plan.
    pub plan_pairs: usize,
    /// Estimated cost of this shard, forward tokens.
    pub cost_tokens: u64,
    /// Estimated cost of the whole plan split this way, forward tokens.
    pub plan_cost_tokens: u64,
}

impl ShardSummary {
    /// The summary of a manifest's shard record.
    pub fn of(s: &ShardInfo) -> Self {
        ShardSummary {
            index: s.index,
            count: s.count,
            pairs: s.plan.iter().filter(|p| p.shard == s.index).count(),
            plan_pairs: s.plan.len(),
            cost_tokens: s.cost_tokens,
            plan_cost_tokens: s.shard_costs.iter().sum(),
        }
    }
}

/// One shard that went into a merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedShard {
    /// K.
    pub index: usize,
    /// Its results directory, as given.
    pub dir: String,
    /// Pairs the partition gave it.
    pub pairs: usize,
    /// Of those, pairs with no record in its directory.
    pub missing_pairs: usize,
    /// Its wall time, seconds (the sum over its sessions), once finished.
    pub wall_s: Option<f64>,
    /// The device it ran on.
    pub device_name: String,
}

/// `merged` in manifest.json and report.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeInfo {
    /// N, the number of shards the sweep was split into.
    pub count: usize,
    /// The shards given, by index.
    pub shards: Vec<MergedShard>,
    /// Indices of the shards not given.
    pub missing_shards: Vec<usize>,
    /// Ids of the pairs without a record (in a missing shard, or unfinished in a given one).
    pub missing_pairs: Vec<String>,
    /// Seconds from the first shard's start to the last one's end (the sweep's elapsed time
    /// when the shards ran side by side); `wall_s` is the sum of the shards' wall times.
    pub elapsed_s: Option<f64>,
    /// RFC 3339 time of the merge.
    pub merged_at: String,
}
