//! The sweep file's `positions:` section: which span positions a pair compares, and how its
//! first divergent position is found (docs/design.md, "Compared positions").
//!
//! ```yaml
//! positions:
//!   at: [506, 510]          # absolute positions (as in trace.positions); each in every span
//!   every: 8                # every 8th span position, from the span's first
//!   window_edges: 3         # positions within ±3 of each multiple of the sliding window
//!   first_divergence: search  # or `compared` (the default)
//! ```
//!
//! The compared positions are the union of the selectors given; without any, every span
//! position. Decode still runs every step: only the comparison (and, on an engine that returns
//! the last row only, the prefill's per-prefix forwards) is limited to them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `positions:` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionsConfig {
    /// Absolute positions to compare; each must lie in every pair's span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Vec<usize>>,
    /// Every k-th span position from the span's first (k ≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<usize>,
    /// Positions within ±k of every multiple of the model's sliding window inside the span
    /// (the model must have a window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_edges: Option<usize>,
    /// How `first_divergent_pos` is found.
    #[serde(default)]
    pub first_divergence: FirstDivergence,
}

/// How a pair's first divergent position is found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstDivergence {
    /// The first compared position over the limit.
    #[default]
    Compared,
    /// The compared positions first, then bisection between the last agreeing and the first
    /// disagreeing one, so that the position is exact (assuming that once the paths part they
    /// stay apart between those two), at O(log N) extra prefill rows.
    Search,
}

impl PositionsConfig {
    /// Whether any selector narrows the compared positions.
    pub fn selects(&self) -> bool {
        self.at.is_some() || self.every.is_some() || self.window_edges.is_some()
    }

    /// The compared positions of a span `start..end` (absolute, sorted, distinct) for a model
    /// whose sliding window is `window`; every span position when no selector is given.
    /// `path` names the sweep file in errors: a position of `at` outside the span, an `every`
    /// of 0, a `window_edges` on a model without a window, or a selection that leaves no
    /// position, are bad input naming the field.
    pub fn positions(
        &self,
        path: &Path,
        start: usize,
        end: usize,
        window: Option<usize>,
        pair: &str,
    ) -> Result<Vec<usize>> {
        if !self.selects() {
            return Ok((start..end).collect());
        }
        let mut out = Vec::new();
        if let Some(at) = &self.at {
            if at.is_empty() {
                return Err(Error::config(path, "positions.at", "the list is empty"));
            }
            for (i, &p) in at.iter().enumerate() {
                if !(start..end).contains(&p) {
                    return Err(Error::config(
                        path,
                        format!("positions.at[{i}]"),
                        format!(
                            "position {p} lies outside the span of pair `{pair}` (positions \
                             {start}–{}); leave that pair out with `exclude`, or pick a \
                             position inside every span",
                            end - 1
                        ),
                    ));
                }
            }
            out.extend_from_slice(at);
        }
        if let Some(k) = self.every {
            if k == 0 {
                return Err(Error::config(path, "positions.every", "must be 1 or more"));
            }
            out.extend((start..end).step_by(k));
        }
        if let Some(k) = self.window_edges {
            let Some(w) = window.filter(|&w| w > 0) else {
                return Err(Error::config(
                    path,
                    "positions.window_edges",
                    "the model has no sliding window, so there are no window edges",
                ));
            };
            out.extend(window_edges(start, end, w, k));
        }
        out.sort_unstable();
        out.dedup();
        if out.is_empty() {
            return Err(Error::config(
                path,
                "positions",
                format!(
                    "no position of pair `{pair}`'s span ({start}–{}) is selected",
                    end - 1
                ),
            ));
        }
        Ok(out)
    }
}

/// Positions of `start..end` within ±k of a multiple m·w (m ≥ 1) of the window `w`.
pub fn window_edges(start: usize, end: usize, w: usize, k: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let first = (start.saturating_sub(k) / w).max(1);
    let mut m = first;
    while let Some(edge) = m.checked_mul(w) {
        if edge.saturating_sub(k) >= end {
            break;
        }
        let lo = edge.saturating_sub(k).max(start);
        let hi = edge.saturating_add(k).min(end - 1);
        out.extend(lo..=hi);
        m += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> PositionsConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn selectors_combine_sorted_and_distinct() {
        let c = cfg("{at: [506, 510], every: 8, window_edges: 1}");
        let p = c
            .positions(Path::new("s.yaml"), 500, 520, Some(512), "x")
            .unwrap();
        assert_eq!(p, vec![500, 506, 508, 510, 511, 512, 513, 516]);
        let all = PositionsConfig::default()
            .positions(Path::new("s.yaml"), 3, 6, None, "x")
            .unwrap();
        assert_eq!(all, vec![3, 4, 5]);
    }

    #[test]
    fn window_edges_lie_inside_the_span() {
        assert_eq!(window_edges(0, 10, 4, 0), vec![4, 8]);
        assert_eq!(window_edges(5, 10, 4, 1), vec![5, 7, 8, 9]);
        assert_eq!(window_edges(0, 3, 4, 0), Vec::<usize>::new());
        assert_eq!(window_edges(0, 2, 4, 0), Vec::<usize>::new());
    }

    #[test]
    fn bad_selections_name_the_file_and_field() {
        let p = Path::new("s.yaml");
        let e = cfg("{at: [4, 99]}")
            .positions(p, 3, 10, None, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.yaml") && e.contains("positions.at[1]"), "{e}");
        let e = cfg("{every: 0}")
            .positions(p, 3, 10, None, "x")
            .unwrap_err();
        assert!(e.to_string().contains("positions.every"), "{e}");
        let e = cfg("{window_edges: 2}").positions(p, 3, 10, None, "x");
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("positions.window_edges")
        );
        let e = cfg("{window_edges: 0}").positions(p, 0, 3, Some(4), "x");
        assert!(e.unwrap_err().to_string().contains("no position"));
        assert!(serde_yaml::from_str::<PositionsConfig>("{evry: 2}").is_err());
    }
}
