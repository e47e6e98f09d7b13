//! report.md: the Markdown view of report.json (rows formatted once here, laid out by
//! `templates/report.md.tera`), and the words both Markdown and HTML use (axes, the
//! injected fault, serving path sections).

use std::collections::BTreeMap;

use serde::Serialize;

use super::files::Inputs;
use super::numbers::secs;
use super::paths;
use super::schema::{PairJson, ReportJson};
use super::template::{CUSTOM_REPORT_TEMPLATE, render_template, template_for};
use crate::compare::Metrics;
use crate::compare::metrics::{self, Direction, METRICS, MetricDef};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::{Error, Result};
use crate::plan::Mode;
use crate::verdict::PairVerdict;
use crate::verdict::{self, fmt_num};

/// The Markdown report template, compiled in so the binary works from any directory.
pub const REPORT_TEMPLATE: &str = include_str!("../../templates/report.md.tera");

/// Markdown-ready rows, numbers formatted once here so the template only lays them out.
#[derive(Serialize)]
struct View<'a> {
    r: &'a ReportJson,
    date: String,
    wall: String,
    axes: String,
    inject: Option<String>,
    loads: Vec<Row>,
    rows: Vec<Row>,
    drift: Vec<Row>,
    perf: Vec<Row>,
    limits: Vec<Row>,
    problems: Vec<Row>,
    /// The metric columns of the table of pairs.
    pair_metrics: Vec<Column>,
    /// The metric columns of the table of limits.
    limit_metrics: Vec<Column>,
    /// Whether any pair took a path other than decode (the tables then show the path).
    has_paths: bool,
    /// Whether any pair runs on another engine or weight format, or another path (the main
    /// table then names the setting instead of the dtype alone).
    has_settings: bool,
    /// One section per serving path the sweep took.
    path_sections: Vec<PathSection>,
    /// One row per pair held to the reference (`super::reference`).
    reference: Vec<Row>,
    /// Above [`SHOWN_PAIRS`] pairs: which of them the tables list ([`pairs_note`]).
    pairs_note: Option<String>,
}

/// One serving path's section of the report (Markdown and HTML alike).
#[derive(Serialize)]
pub(crate) struct PathSection {
    title: &'static str,
    note: &'static str,
    rows: Vec<BTreeMap<&'static str, String>>,
    comparisons: Vec<BTreeMap<&'static str, String>>,
}

/// One section per serving path the sweep took, in report order.
pub(crate) fn path_sections(r: &ReportJson) -> Vec<PathSection> {
    r.serving_paths
        .iter()
        .flat_map(|sp| {
            paths::SECTIONS
                .iter()
                .filter_map(move |(kind, title, note)| {
                    let rows = paths::rows(sp, kind);
                    (!rows.is_empty()).then(|| PathSection {
                        title,
                        note,
                        rows,
                        comparisons: paths::comparison_rows(sp, kind),
                    })
                })
        })
        .collect()
}

fn opt<T: ToString>(x: Option<T>) -> String {
    x.map_or_else(|| "—".into(), |v| v.to_string())
}

fn bytes(n: u64) -> String {
    // Thousands separators, as in the seed report.
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A Markdown-ready row: column key → formatted cell.
type Row = BTreeMap<&'static str, String>;

fn row(cells: &[(&'static str, String)]) -> Row {
    cells.iter().cloned().collect()
}

/// A metric's column in one of report.md's tables: its row key, header and the header's
/// Markdown rule. The template iterates these, so a metric of the table is a column.
#[derive(Serialize)]
struct Column {
    key: &'static str,
    header: String,
    rule: String,
}

impl Column {
    fn new(m: &MetricDef, header: String) -> Self {
        Column {
            key: m.short,
            rule: "-".repeat(header.chars().count() + 2),
            header,
        }
    }
}

/// The metric table's cells of a row, keyed by [`MetricDef::short`], `—` when not compared.
fn metric_cells(row: &mut Row, m: Option<&Metrics>) {
    for d in METRICS {
        let cell = m.map_or("—".into(), |m| d.format(d.value(m)));
        row.insert(d.short, cell);
    }
}

/// The span, and the positions compared when the sweep chose them (`positions:`).
fn span_cell(spec: &crate::plan::PairSpec) -> String {
    let Some(at) = &spec.positions else {
        return spec.span.to_string();
    };
    let shown: Vec<String> = at.iter().take(8).map(|p| p.to_string()).collect();
    let more = if at.len() > 8 { ", …" } else { "" };
    format!(
        "{} ({} compared: {}{more})",
        spec.span,
        at.len(),
        shown.join(", ")
    )
}

/// The first divergent position, and what its search cost when it was searched for.
fn first_div_cell(p: &super::schema::PairJson) -> String {
    let pos = opt(p.metrics.as_ref().and_then(|m| m.first_divergent_pos));
    match p.divergence_search {
        Some(s) if s.probes > 0 => format!(
            "{pos} (searched: {} probes, {} prefills)",
            s.probes, s.prefills
        ),
        _ => pos,
    }
}

/// kv_aligned as 0 or 1, and for a prompt cache built by a prompt-only prefill (an engine
/// that cannot cut its cache back) which source it was.
fn kv_cell(spec: &crate::plan::PairSpec) -> String {
    match spec.cache_source {
        Some(crate::path::CacheSource::PromptPrefill) => "1 (prompt_prefill)".into(),
        _ => u8::from(spec.kv_aligned).to_string(),
    }
}

/// `value` as a share of `limit`, in whole percent ("—" without a limit).
pub(crate) fn share(value: f32, limit: f32) -> String {
    if limit > 0.0 {
        format!("{:.0} %", 100.0 * value / limit)
    } else {
        "—".into()
    }
}

/// A pair's worst share of its limits over the metrics bounded from above (max_abs_diff,
/// kl_max): (metric, value, limit, value / limit). `None` when it was not compared or has
/// no limits.
pub(crate) fn worst_share(p: &PairJson) -> Option<(&'static str, f32, f32, f64)> {
    let (m, l) = (p.metrics.as_ref()?, p.limits.as_ref()?);
    [
        ("max_abs_diff", m.max_abs_diff(), l.max_abs_diff()),
        ("kl_max", m.kl_max(), l.kl_max()),
    ]
    .into_iter()
    .filter(|(_, _, lim)| *lim > 0.0)
    .map(|(n, v, lim)| (n, v, lim, f64::from(v) / f64::from(lim)))
    .max_by(|a, b| a.3.total_cmp(&b.3))
}

/// The pairs with the least headroom first: failures on top, then INCOMPLETE, then the
/// compared pairs by their worst share of a limit (largest first), SKIPPED last. Ties keep
/// report order.
pub(crate) fn by_headroom(r: &ReportJson) -> Vec<&PairJson> {
    by_headroom_of(&r.pairs)
}

/// [`by_headroom`] of a list of pairs.
fn by_headroom_of(pairs: &[PairJson]) -> Vec<&PairJson> {
    let rank = |p: &PairJson| match p.verdict {
        PairVerdict::FailEquiv | PairVerdict::FailDrift => 0,
        PairVerdict::Incomplete => 1,
        PairVerdict::PassEquiv | PairVerdict::ExpectedDrift => 2,
        PairVerdict::Skipped => 3,
    };
    let mut v: Vec<&PairJson> = pairs.iter().collect();
    v.sort_by(|a, b| {
        let share = |p: &PairJson| worst_share(p).map_or(f64::NEG_INFINITY, |w| w.3);
        rank(a).cmp(&rank(b)).then(share(b).total_cmp(&share(a)))
    });
    v
}

/// Above this many pairs the tables of report.md and report.html (pairs, failures, pair
/// details, the reference) list this many only, those with the least headroom
/// ([`by_headroom`]), and say so: a table of 100,000 rows is read by no one, and its text
/// (and the template's copy of it) would grow with the sweep. report.json and
/// report.junit.xml hold every pair; the summaries (counts, drift, timing, observations)
/// are computed over every pair.
pub const SHOWN_PAIRS: usize = 1000;

/// The report whose tables report.md and report.html lay out: `r` itself up to
/// [`SHOWN_PAIRS`] pairs, else `r` with only the [`SHOWN_PAIRS`] pairs of least headroom,
/// in report order.
pub(crate) fn summarised(r: &mut ReportJson) -> ReportJson {
    let pairs = std::mem::take(&mut r.pairs);
    let mut shown = r.clone();
    shown.pairs = if pairs.len() <= SHOWN_PAIRS {
        pairs.clone()
    } else {
        let keep: std::collections::HashSet<&str> = by_headroom_of(&pairs)
            .into_iter()
            .take(SHOWN_PAIRS)
            .map(|p| p.spec.id.as_str())
            .collect();
        pairs
            .iter()
            .filter(|p| keep.contains(p.spec.id.as_str()))
            .cloned()
            .collect()
    };
    r.pairs = pairs;
    shown
}

/// What the tables hold when they list only some pairs: `None` when they list every one.
pub(crate) fn pairs_note(full: &ReportJson, shown: &ReportJson) -> Option<String> {
    (shown.pairs.len() < full.pairs.len()).then(|| {
        format!(
            "{} pairs: the tables list the {} with the least headroom (failing and incomplete \
             first); the summaries count every pair, and report.json and report.junit.xml \
             hold each one.",
            full.pairs.len(),
            shown.pairs.len()
        )
    })
}

fn pair_rows(r: &ReportJson) -> Vec<Row> {
    r.pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let m = p.metrics.as_ref();
            let w = worst_share(p);
            let mut x = row(&[
                ("n", (i + 1).to_string()),
                ("id", p.spec.id.clone()),
                ("span_n", p.spec.span.to_string()),
                ("kv_n", u8::from(p.spec.kv_aligned).to_string()),
                (
                    "setting",
                    format!(
                        "{}{}",
                        super::aggregate::setting_label(p.spec.load_key()),
                        if p.spec.path.is_default() {
                            String::new()
                        } else {
                            format!(" {}", p.spec.path)
                        }
                    ),
                ),
                ("share", w.map_or("—".into(), |w| share(w.1, w.2))),
                ("reason", p.reason.clone()),
                ("engine", p.spec.engine.to_string()),
                ("weights", p.spec.weights.to_string()),
                ("prompt", p.spec.prompt.clone()),
                ("span", span_cell(&p.spec)),
                ("dtype", p.spec.dtype.to_string()),
                ("kv", kv_cell(&p.spec)),
                ("path", p.spec.path.to_string()),
                ("seed", p.spec.seed.to_string()),
                ("first_div", first_div_cell(p)),
                (
                    "first_flip",
                    m.and_then(|m| m.first_top1_flip).map_or("—".into(), |f| {
                        format!("{} (margin {})", f.pos, fmt_num(f.prefill_margin))
                    }),
                ),
                (
                    "yardstick",
                    p.yardstick.map_or("—".into(), |y| {
                        format!("{} / {}", fmt_num(y.max_abs_diff), fmt_num(y.kl_mean))
                    }),
                ),
                ("verdict", p.verdict.to_string()),
            ]);
            metric_cells(&mut x, m);
            x
        })
        .collect()
}

/// A row of a table grouped by (engine, weights, span, dtype): those cells, then `rest`.
fn group_row(
    (engine, weights, span, dtype): (Engine, WeightFormat, usize, RunDtype),
    rest: &[(&'static str, String)],
) -> Row {
    let mut x = row(&[
        ("engine", engine.to_string()),
        ("weights", weights.to_string()),
        ("span", span.to_string()),
        ("dtype", dtype.to_string()),
    ]);
    x.extend(rest.iter().cloned());
    x
}

fn drift_rows(r: &ReportJson) -> Vec<Row> {
    r.drift_characterization
        .iter()
        .map(|g| {
            group_row(
                (g.engine, g.weights, g.span, g.dtype),
                &[
                    (
                        "max_abs",
                        format!("{} / {}", fmt_num(g.max_abs_max), fmt_num(g.max_abs_mean)),
                    ),
                    ("p99", fmt_num(g.p99_mean)),
                    ("top1", format!("{:.4} / {:.4}", g.top1_min, g.top1_mean)),
                    (
                        "kl",
                        format!("{} / {}", fmt_num(g.kl_mean_mean), fmt_num(g.kl_max_max)),
                    ),
                    ("identical", format!("{}/{}", g.identical, g.samples)),
                    (
                        "aligned",
                        g.aligned_max_abs_mean.map_or("—".into(), fmt_num),
                    ),
                    ("samples", g.samples.to_string()),
                ],
            )
        })
        .collect()
}

fn perf_rows(r: &ReportJson) -> Vec<Row> {
    r.performance
        .iter()
        .map(|g| {
            group_row(
                (g.engine, g.weights, g.span, g.dtype),
                &[
                    (
                        "mode",
                        match g.mode {
                            Mode::Prefill => "prefill".into(),
                            Mode::Decode => g.path.to_string(),
                        },
                    ),
                    (
                        "wall",
                        format!("{} / {}", secs(g.wall_mean_s), secs(g.wall_p95_s)),
                    ),
                    ("tps", format!("{:.0}", g.tokens_per_s)),
                    ("bytes", bytes(g.logits_bytes_mean)),
                    ("samples", g.samples.to_string()),
                ],
            )
        })
        .collect()
}

fn load_rows(r: &ReportJson) -> Vec<Row> {
    r.model_load_details
        .iter()
        .map(|l| {
            row(&[
                ("engine", l.engine.to_string()),
                ("implementation", l.implementation.clone()),
                ("weights", l.weights.to_string()),
                ("dtype", l.dtype.to_string()),
                ("device", l.device.clone()),
                ("load", secs(l.load_s)),
                ("purpose", l.purpose.clone()),
            ])
        })
        .collect()
}

/// One row per (dtype, tolerance or budget): each limited metric's limit, keyed by
/// [`MetricDef::short`], and the tie margin.
fn limit_rows(r: &ReportJson) -> Vec<Row> {
    r.limits
        .iter()
        .flat_map(|(d, l)| {
            [
                ("tolerance (kv_aligned=1)", l.tolerance),
                ("drift budget (kv_aligned=0)", l.drift_budget),
            ]
            .map(|(what, t)| {
                let mut x = row(&[
                    ("dtype", d.clone()),
                    ("what", what.to_string()),
                    (
                        "tie",
                        format!("max({}, {} ulp)", fmt_num(t.tie_margin), t.tie_ulps),
                    ),
                ]);
                for m in metrics::limited() {
                    x.insert(m.short, m.format(verdict::limit_of(m, &t)));
                }
                // Templates written before the metric table read p99_abs_diff's limit here.
                if let Some(p99) = x.get("p99_abs").cloned() {
                    x.insert("p99", p99);
                }
                x
            })
        })
        .collect()
}

/// The Markdown view: `full` for what is said of every pair, `shown` ([`summarised`]) for
/// the tables of pairs and as the template's `r`.
fn view<'a>(full: &ReportJson, shown: &'a ReportJson) -> View<'a> {
    let r = shown;
    let problems = r
        .pairs
        .iter()
        .filter(|p| !p.verdict.is_pass())
        .map(|p| {
            row(&[
                ("id", p.spec.id.clone()),
                ("verdict", p.verdict.to_string()),
                ("reason", p.reason.clone()),
            ])
        })
        .collect();
    View {
        pairs_note: pairs_note(full, shown),
        has_paths: full.pairs.iter().any(|p| !p.spec.path.is_default()),
        has_settings: full.pairs.iter().any(|p| {
            !p.spec.path.is_default() || !p.spec.engine.is_default() || !p.spec.weights.is_default()
        }),
        path_sections: path_sections(r),
        reference: super::reference::rows(&r.pairs),
        axes: axes(full),
        inject: r.inject.as_ref().map(describe_injection),
        r,
        date: r
            .finished_at
            .clone()
            .unwrap_or_else(|| format!("{} (unfinished)", r.started_at)),
        wall: r.wall_s.map_or("unfinished".into(), secs),
        loads: load_rows(r),
        rows: pair_rows(r),
        drift: drift_rows(r),
        perf: perf_rows(r),
        limits: limit_rows(r),
        problems,
        pair_metrics: METRICS
            .iter()
            .filter(|m| m.in_pair_table)
            .map(|m| Column::new(m, m.name.to_string()))
            .collect(),
        limit_metrics: metrics::limited()
            .map(|m| {
                let header = match m.direction {
                    Direction::AtMost => m.name.to_string(),
                    Direction::AtLeast => format!("{} min", m.name),
                };
                Column::new(m, header)
            })
            .collect(),
    }
}

/// "spans 32/128 × dtypes bf16/f16 × ..." from the pairs themselves.
pub(crate) fn axes(r: &ReportJson) -> String {
    // A sweep of 100,000 seeds or prompts names the first few and counts the rest: the
    // line stays a line.
    const NAMED: usize = 16;
    fn uniq<T: Ord + ToString>(xs: impl Iterator<Item = T>) -> String {
        let v: std::collections::BTreeSet<T> = xs.collect();
        let named: Vec<String> = v.iter().take(NAMED).map(T::to_string).collect();
        match v.len() {
            n if n <= NAMED => named.join("/"),
            n => format!("{}/… ({n} values)", named.join("/")),
        }
    }
    let p = &r.pairs;
    format!(
        "engines {} × weights {} × prompts {} × spans {} × dtypes {} × kv_aligned {} × seeds {} ({} pairs after exclusions)",
        uniq(p.iter().map(|x| x.spec.engine)),
        uniq(p.iter().map(|x| x.spec.weights)),
        uniq(p.iter().map(|x| x.spec.prompt.clone())),
        uniq(p.iter().map(|x| x.spec.span)),
        uniq(p.iter().map(|x| x.spec.dtype)),
        uniq(p.iter().map(|x| u8::from(x.spec.kv_aligned))),
        uniq(p.iter().map(|x| x.spec.seed)),
        p.len()
    )
}

/// The injected fault in words, from the resolved config's `inject` section.
pub fn describe_injection(i: &crate::config::InjectConfig) -> String {
    let mut parts = Vec::new();
    if let (Some(t), Some(e)) = (i.tensor, i.epsilon) {
        match i.layer {
            Some(l) => parts.push(format!("`{t}` at layer {l} scaled by (1 + {e})")),
            None => parts.push(format!("`{t}` scaled by (1 + {e})")),
        }
    }
    if let Some(k) = i.position_shift.filter(|k| *k > 0) {
        parts.push(format!("decode positions shifted by {k}"));
    }
    if let Some(k) = i.window_shift.filter(|k| *k > 0) {
        parts.push(format!("decode's sliding window widened by {k} key(s)"));
    }
    if let Some(k) = i.chunk_position_shift.filter(|k| *k > 0) {
        parts.push(format!(
            "chunks after the first believe they start {k} position(s) further along"
        ));
    }
    if i.cross_row_cache {
        parts.push("in batched forwards, row 0 reads row 1's newest cached K/V".into());
    }
    parts.join("; ")
}

/// report.md's bytes, through the sweep's custom template or the built-in one.
pub(crate) fn render_file(i: &Inputs, w: &mut dyn std::io::Write) -> Result<bool> {
    let template = template_for(i.store, CUSTOM_REPORT_TEMPLATE, REPORT_TEMPLATE)?;
    let md = render_template("report.md.tera", &template, &view(i.report, i.shown))?;
    super::files::write_text(i.store, super::files::REPORT_MD, &md, w)
}

/// Renders the Markdown report from report.json's content with the compiled-in template.
pub fn render_markdown(r: &ReportJson) -> Result<String> {
    render_template("report.md.tera", REPORT_TEMPLATE, &view(r, r))
}

/// Test-renders a custom report template on `sample` (see [`sample`]).
pub fn check_render(text: &str, sample: &ReportJson) -> std::result::Result<(), String> {
    render_template("custom", text, &view(sample, sample))
        .map(|_| ())
        .map_err(|e| match e {
            Error::Template { message, .. } => message,
            other => other.to_string(),
        })
}
