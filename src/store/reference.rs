//! A pair's two paths against the reference, as records keep them (docs/design.md, "Three
//! comparisons"). Its own file so that the readers that judge records again (`safe`) need
//! not import the store.

use serde::{Deserialize, Serialize};

use crate::compare::Metrics;
use crate::limits::Thresholds;
use crate::verdict::PairVerdict;

/// A pair's prefill and decode each held against the reference (docs/design.md, "Three
/// comparisons"): consistency between the paths cannot see an engine that is wrong the same
/// way in both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceCheck {
    /// The reference in words ("transformers f64", "own decoder f32").
    pub source: String,
    /// The limits both paths were held to.
    pub limits: Thresholds,
    /// Prefill against the reference (absent when the prefill failed or nothing was compared).
    pub prefill: Option<RefComparison>,
    /// Decode against the reference.
    pub decode: Option<RefComparison>,
    /// Why nothing was compared, when nothing was: the reference is not installed (the pair
    /// keeps its consistency verdict, the report says so) or it failed (the pair is
    /// INCOMPLETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_compared: Option<NotCompared>,
    /// In words, when an engine parts from the reference exactly at a window edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convention: Option<String>,
}

/// One path against the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefComparison {
    /// Reference first, this path second (KL(reference ‖ path)).
    pub metrics: Metrics,
    /// Within the limits.
    pub pass: bool,
    /// The judgement in words (the breaches when it failed).
    pub reason: String,
}

/// Why a pair has no reference comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotCompared {
    /// The reference could not run here at all (not installed): SKIPPED, not a failure.
    pub skipped: bool,
    /// The reason, with the command that installs the reference when that is what is missing.
    pub reason: String,
}

impl ReferenceCheck {
    /// The paths that failed against the reference, by name ("prefill", "decode").
    pub fn failures(&self) -> Vec<(&'static str, &RefComparison)> {
        [("prefill", &self.prefill), ("decode", &self.decode)]
            .into_iter()
            .filter_map(|(n, c)| c.as_ref().filter(|c| !c.pass).map(|c| (n, c)))
            .collect()
    }
}

impl ReferenceCheck {
    /// The pair's verdict and reason once this check enters them
    /// ([`crate::verdict::with_reference`]): the one place the sweep and the re-judgement of
    /// stored records combine a pair's consistency verdict with its reference check.
    pub fn enter(&self, verdict: PairVerdict, reason: &str) -> (PairVerdict, String) {
        let failures: Vec<(&str, &str)> = self
            .failures()
            .into_iter()
            .map(|(path, c)| (path, c.reason.as_str()))
            .collect();
        let error = self
            .not_compared
            .as_ref()
            .filter(|n| !n.skipped)
            .map(|n| n.reason.as_str());
        crate::verdict::with_reference(verdict, reason, &failures, error)
    }
}
