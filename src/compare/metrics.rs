//! The metric table (docs/design.md, "Metrics"): every summary metric of a compared pair,
//! defined once, with its name, how to read it off [`Metrics`], the limit that judges it,
//! which way it gets worse, how it is printed and what it means. The verdicts, the limits'
//! validation, `driftsweep diff`, report.md and docs/metrics.md all read this table, so a new
//! metric is a row here and its computation in the comparator.
//!
//! The comparator is a leaf module, so a metric names its limit by key: the key of the
//! field of [`crate::limits::Thresholds`] (and of the sweep file's overrides) that bounds it.

use super::types::Metrics;

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
    /// Its value for a pair.
    pub value: fn(&Metrics) -> f32,
    /// The key of the limit that judges it, if one does.
    pub limit: Option<&'static str>,
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

impl MetricDef {
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
        value: |m| m.max_abs_diff,
        limit: Some("max_abs_diff"),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "largest |prefill − decode| over the span × vocabulary",
        short: "max_abs",
        in_pair_table: true,
    },
    MetricDef {
        name: "p99_abs_diff",
        value: |m| m.p99_abs_diff,
        limit: Some("p99_abs_diff"),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "99th percentile (nearest rank) of |prefill − decode| over the span × vocabulary",
        short: "p99_abs",
        in_pair_table: true,
    },
    MetricDef {
        name: "mean_abs_diff",
        value: |m| m.mean_abs_diff,
        limit: Some("mean_abs_diff"),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "mean |prefill − decode| over the span × vocabulary",
        short: "mean_abs",
        in_pair_table: true,
    },
    MetricDef {
        name: "top1_agreement",
        value: |m| m.top1_agreement,
        limit: Some("top1_agreement_min"),
        direction: Direction::AtLeast,
        format: Format::Fraction,
        description: "share of positions where both runs pick the same top token",
        short: "top1",
        in_pair_table: true,
    },
    MetricDef {
        name: "kl_mean",
        value: |m| m.kl_mean,
        limit: Some("kl_mean"),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "mean over positions of KL(softmax(prefill) ‖ softmax(decode))",
        short: "kl_mean",
        in_pair_table: true,
    },
    MetricDef {
        name: "kl_p99",
        value: |m| m.kl_p99,
        limit: Some("kl_p99"),
        direction: Direction::AtMost,
        format: Format::Compact,
        description: "99th percentile (nearest rank) of the per-position KL",
        short: "kl_p99",
        in_pair_table: false,
    },
    MetricDef {
        name: "kl_max",
        value: |m| m.kl_max,
        limit: Some("kl_max"),
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
