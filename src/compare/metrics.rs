//! The metric table (docs/design.md, "Metrics"): every summary metric of a compared pair,
//! defined once, with its name, how it is computed from the pair's rows, the limit that judges
//! it and that limit's defaults, which way it gets worse, how it is printed and what it means.
//! The comparator's output ([`Metrics::values`] and its report.json fields), the limits
//! (`crate::limits::Thresholds`, their sweep-file keys and validation), the verdicts,
//! `driftsweep diff`, report.md and docs/metrics.md all read this table, so a new metric is a
//! row here (and its line in docs/metrics.md) as long as it is computed from the per-row
//! statistics both comparator paths already produce ([`Rows`]).
//!
//! The comparator is a leaf module, so the limits module reads this table, never the
//! reverse: a metric names its limit by key, the sweep file's and report.json's key.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::rows::{RowStats, percentile};
use super::types::{Metrics, TopFlip};

/// Which way a metric gets worse, and so what kind of bound its limit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Larger is worse: the limit is a maximum.
    AtMost,
    /// Smaller is worse: the limit is a minimum.
    AtLeast,
}

/// How a metric's value is printed in reports and reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`fmt_num`]: scientific below 1e-3, else four significant digits.
    Compact,
    /// Four decimals, for a fraction.
    Fraction,
}

/// One metric of the table.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Its name: the field of report.json's `metrics`, and the word reasons and docs use.
    pub name: &'static str,
    /// Its value for a pair, from the pair's rows.
    pub compute: fn(&Rows) -> f32,
    /// The limit that judges it, if one does.
    pub limit: Option<Limit>,
    /// Which way it gets worse.
    pub direction: Direction,
    /// How it is printed.
    pub format: Format,
    /// What it measures, in a sentence.
    pub description: &'static str,
    /// Its key in report.md's row maps (templates written for earlier versions use it).
    pub short: &'static str,
    /// Whether report.md's table of pairs shows it (a column each: the table stays readable).
    pub in_pair_table: bool,
}

/// The limit of one metric: its key and its default kv_aligned=true tolerances. The
/// kv_aligned=false drift budget is the tolerance with twice the room (`crate::limits`).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Its key in the sweep file's `tolerances` and `drift_budget`, in report.json's limits
    /// and in reasons.
    pub key: &'static str,
    /// Default tolerance on dequantized weights in f32, bf16 and f16 (`crate::limits` says
    /// where each number comes from).
    pub dense: [f32; 3],
    /// Default tolerance on quantized weights, every dtype.
    pub quantized: f32,
}

/// What a metric is computed from: one pair's rows as both comparator paths finish them,
/// and the 99th percentile of |diff|, which needs every value and so is found where the
/// values are.
pub struct Rows<'a> {
    stats: &'a RowStats,
    p99_abs_diff: f32,
}

impl Rows<'_> {
    /// The KL of every row with finite values, in row order.
    fn finite_kl(&self) -> Vec<f32> {
        self.stats.kl.iter().flatten().copied().collect()
    }
}

impl MetricDef {
    /// This metric's value in `m`.
    pub fn value(&self, m: &Metrics) -> f32 {
        m.values[index_of(self.name)]
    }

    /// The key of the limit that judges it, if one does.
    pub fn limit_key(&self) -> Option<&'static str> {
        self.limit.map(|l| l.key)
    }

    /// `value` as reports print this metric.
    pub fn format(&self, value: f32) -> String {
        match self.format {
            Format::Compact => fmt_num(value),
            Format::Fraction => format!("{value:.4}"),
        }
    }
}

/// Every summary metric of a compared pair, in report order.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "max_abs_diff",
        compute: |r| r.stats.max_abs.iter().copied().fold(0f32, f32::max),
        limit: Some(Limit {
            key: "max_abs_diff",
            dense: [4e-4, 3.5, 1.0],
            quantized: 5.0,
        }),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "largest |prefill − decode| over the span × vocabulary",
        short: "max_abs",
        in_pair_table: true,
    },
    MetricDef {
        name: "p99_abs_diff",
        compute: |r| r.p99_abs_diff,
        limit: Some(Limit {
            key: "p99_abs_diff",
            dense: [1.5e-4, 1.5, 0.25],
            quantized: 2.0,
        }),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "99th percentile (nearest rank) of |prefill − decode| over the span × vocabulary",
        short: "p99_abs",
        in_pair_table: true,
    },
    MetricDef {
        name: "mean_abs_diff",
        compute: |r| {
            // Row by row, in row order: the same sum however the rows were computed.
            let sum_abs = r.stats.sum_abs.iter().fold(0f64, |acc, x| acc + x);
            if r.stats.finite_values == 0 {
                0.0
            } else {
                (sum_abs / r.stats.finite_values as f64) as f32
            }
        },
        limit: Some(Limit {
            key: "mean_abs_diff",
            dense: [4e-5, 0.45, 0.07],
            quantized: 0.6,
        }),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "mean |prefill − decode| over the span × vocabulary",
        short: "mean_abs",
        in_pair_table: true,
    },
    MetricDef {
        name: "top1_agreement",
        compute: |r| {
            let positions = r.stats.max_abs.len();
            (positions - r.stats.flips.len()) as f32 / positions as f32
        },
        limit: Some(Limit {
            key: "top1_agreement_min",
            dense: [1.0, 0.9, 0.98],
            quantized: 0.8,
        }),
        direction: Direction::AtLeast,
        format: Format::Fraction,
        description: "share of positions where both runs pick the same top token",
        short: "top1",
        in_pair_table: true,
    },
    MetricDef {
        name: "kl_mean",
        compute: |r| {
            let kl = r.finite_kl();
            if kl.is_empty() {
                0.0
            } else {
                (kl.iter().map(|&k| k as f64).sum::<f64>() / kl.len() as f64) as f32
            }
        },
        limit: Some(Limit {
            key: "kl_mean",
            dense: [1e-8, 1.2e-2, 2e-4],
            quantized: 1.5e-2,
        }),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "mean over positions of KL(softmax(prefill) ‖ softmax(decode))",
        short: "kl_mean",
        in_pair_table: true,
    },
    MetricDef {
        name: "kl_p99",
        compute: |r| percentile(&mut r.finite_kl(), 0.99),
        limit: Some(Limit {
            key: "kl_p99",
            dense: [1e-7, 0.1, 2e-3],
            quantized: 0.12,
        }),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "99th percentile (nearest rank) of the per-position KL",
        short: "kl_p99",
        in_pair_table: false,
    },
    MetricDef {
        name: "kl_max",
        compute: |r| r.finite_kl().into_iter().fold(0f32, f32::max),
        limit: Some(Limit {
            key: "kl_max",
            dense: [1e-6, 0.15, 2e-2],
            quantized: 0.15,
        }),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "largest per-position KL",
        short: "kl_max",
        in_pair_table: true,
    },
];

/// The metrics a limit bounds, upper bounds first (the order in which verdicts list
/// breaches and report.md lists limits).
pub fn limited() -> impl Iterator<Item = &'static MetricDef> {
    let bounded = |d: Direction| {
        METRICS
            .iter()
            .filter(move |m| m.limit.is_some() && m.direction == d)
    };
    bounded(Direction::AtMost).chain(bounded(Direction::AtLeast))
}

/// The position of the metric named `name` in [`METRICS`] (and in [`Metrics::values`]);
/// a name not in the table stops the build where it is a constant.
pub const fn index_of(name: &str) -> usize {
    let mut i = 0;
    while i < METRICS.len() {
        if str_eq(METRICS[i].name, name) {
            return i;
        }
        i += 1;
    }
    panic!("no such metric")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Where code reads one metric by name (the verdict's reasons, the report's groups).
pub const MAX_ABS_DIFF: usize = index_of("max_abs_diff");
/// See [`MAX_ABS_DIFF`].
pub const P99_ABS_DIFF: usize = index_of("p99_abs_diff");
/// See [`MAX_ABS_DIFF`].
pub const MEAN_ABS_DIFF: usize = index_of("mean_abs_diff");
/// See [`MAX_ABS_DIFF`].
pub const TOP1_AGREEMENT: usize = index_of("top1_agreement");
/// See [`MAX_ABS_DIFF`].
pub const KL_MEAN: usize = index_of("kl_mean");
/// See [`MAX_ABS_DIFF`].
pub const KL_P99: usize = index_of("kl_p99");
/// See [`MAX_ABS_DIFF`].
pub const KL_MAX: usize = index_of("kl_max");

impl Metrics {
    /// The metric at `index` of [`METRICS`].
    pub fn get(&self, index: usize) -> f32 {
        self.values[index]
    }
    /// See [`MAX_ABS_DIFF`].
    pub fn max_abs_diff(&self) -> f32 {
        self.values[MAX_ABS_DIFF]
    }
    /// See [`P99_ABS_DIFF`].
    pub fn p99_abs_diff(&self) -> f32 {
        self.values[P99_ABS_DIFF]
    }
    /// See [`MEAN_ABS_DIFF`].
    pub fn mean_abs_diff(&self) -> f32 {
        self.values[MEAN_ABS_DIFF]
    }
    /// See [`TOP1_AGREEMENT`].
    pub fn top1_agreement(&self) -> f32 {
        self.values[TOP1_AGREEMENT]
    }
    /// See [`KL_MEAN`].
    pub fn kl_mean(&self) -> f32 {
        self.values[KL_MEAN]
    }
    /// See [`KL_P99`].
    pub fn kl_p99(&self) -> f32 {
        self.values[KL_P99]
    }
    /// See [`KL_MAX`].
    pub fn kl_max(&self) -> f32 {
        self.values[KL_MAX]
    }
}

impl Default for Metrics {
    /// All zeros and empty, for tests that set a few values.
    fn default() -> Self {
        Metrics {
            values: vec![0.0; METRICS.len()],
            first_divergent_pos: None,
            first_top1_flip: None,
            top1_flips: Vec::new(),
            non_finite: 0,
            positions: 0,
            vocab: 0,
            per_pos_max_abs: Vec::new(),
            per_pos_kl: Vec::new(),
            per_pos_delta_p: Vec::new(),
        }
    }
}

/// The pair's metrics from its rows (both comparator paths end here) and the p99 of |diff|
/// (which needs every value, so each path computes it where the values are).
pub(super) fn finish(
    stats: RowStats,
    p99_abs_diff: f32,
    span_start: usize,
    vocab: usize,
    divergence_limit: f32,
) -> Metrics {
    let rows = Rows {
        stats: &stats,
        p99_abs_diff,
    };
    let values = METRICS.iter().map(|d| (d.compute)(&rows)).collect();
    // A row with non-finite values diverges: it fails the pair through `non_finite`.
    let first_divergent_pos = stats
        .max_abs
        .iter()
        .zip(&stats.kl)
        .position(|(&m, kl)| kl.is_none() || m > divergence_limit)
        .map(|i| span_start + i);
    Metrics {
        values,
        first_divergent_pos,
        first_top1_flip: stats.flips.first().copied(),
        positions: stats.max_abs.len(),
        top1_flips: stats.flips,
        non_finite: stats.non_finite,
        vocab,
        per_pos_max_abs: stats.max_abs,
        per_pos_kl: stats.kl,
        per_pos_delta_p: stats.delta_p,
    }
}

/// The fields of [`Metrics`] outside the table, as report.json and the pair records hold
/// them (after the table's metrics, in this order).
#[derive(Serialize, Deserialize)]
struct Rest<V> {
    #[serde(flatten)]
    values: V,
    first_divergent_pos: Option<usize>,
    first_top1_flip: Option<TopFlip>,
    top1_flips: Vec<TopFlip>,
    non_finite: usize,
    positions: usize,
    vocab: usize,
    per_pos_max_abs: Vec<f32>,
    per_pos_kl: Vec<Option<f32>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    per_pos_delta_p: Vec<Option<f32>>,
}

/// The table's metrics of a [`Metrics`] by name, in table order.
struct Named<'a>(&'a [f32]);

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(METRICS.len()))?;
        for (d, v) in METRICS.iter().zip(self.0) {
            map.serialize_entry(d.name, v)?;
        }
        map.end()
    }
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Rest {
            values: Named(&self.values),
            first_divergent_pos: self.first_divergent_pos,
            first_top1_flip: self.first_top1_flip,
            top1_flips: self.top1_flips.clone(),
            non_finite: self.non_finite,
            positions: self.positions,
            vocab: self.vocab,
            per_pos_max_abs: self.per_pos_max_abs.clone(),
            per_pos_kl: self.per_pos_kl.clone(),
            per_pos_delta_p: self.per_pos_delta_p.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Rest::<BTreeMap<String, f32>>::deserialize(d)?;
        let values = METRICS
            .iter()
            .map(|m| {
                r.values
                    .get(m.name)
                    .copied()
                    .ok_or_else(|| D::Error::missing_field(m.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Metrics {
            values,
            first_divergent_pos: r.first_divergent_pos,
            first_top1_flip: r.first_top1_flip,
            top1_flips: r.top1_flips,
            non_finite: r.non_finite,
            positions: r.positions,
            vocab: r.vocab,
            per_pos_max_abs: r.per_pos_max_abs,
            per_pos_kl: r.per_pos_kl,
            per_pos_delta_p: r.per_pos_delta_p,
        })
    }
}

/// Compact number formatting for reasons: scientific below 1e-3, otherwise 4 significant digits.
pub fn fmt_num(x: f32) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() < 1e-3 || x.abs() >= 1e5 {
        format!("{x:.2e}")
    } else {
        format!("{}", (x as f64 * 1e4).round() / 1e4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_unique() {
        for (i, a) in METRICS.iter().enumerate() {
            for b in &METRICS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.short, b.short);
            }
        }
    }

    #[test]
    fn docs_metrics_md_lists_every_metric() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}: the docs' metric list is missing"));
        // A name counts where it stands as a word: `kl_max` inside `kl_max_max` does not.
        let word = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        for m in METRICS {
            let listed = text.match_indices(m.name).any(|(i, _)| {
                word(text[..i].chars().next_back()) && word(text[i + m.name.len()..].chars().next())
            });
            assert!(
                listed,
                "docs/metrics.md does not list the metric `{}`",
                m.name
            );
        }
    }
}
