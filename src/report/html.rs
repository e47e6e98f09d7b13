//! `report.html`: one self-contained page (inline CSS and SVG, no script, no network) rendered
//! from `templates/report.html.tera`, so that it opens on an air-gapped machine and attached
//! to a ticket. The verdict comes first; then the pairs with the least headroom (failures on
//! top, then the worst share of a limit), drift by dtype and span against the limits, the
//! llama.cpp-style KL statistics, every pair's per-position series as small multiples, and
//! the traced pairs' heat maps.

use serde::Serialize;

use super::aggregate::{read_pair, setting_label};
use super::files::{Inputs, REPORT_HTML};
use super::markdown::{
    PathSection, axes, by_headroom, describe_injection, pairs_note, path_sections, share,
    worst_share,
};
use super::plots::{self, Marker, SpanPoint};
use super::schema::{PairJson, ReportJson, compared};
use super::template::error_chain;
use crate::error::{Error, Result};
use crate::limits::Thresholds;
use crate::plan::LoadKey;
use crate::store::{Manifest, Store};
use crate::trace::PairTrace;
use crate::verdict::{PairVerdict, fmt_num};

/// The HTML report template, compiled in.
pub const HTML_TEMPLATE: &str = include_str!("../../templates/report.html.tera");

/// The file's name in the results directory.
pub const HTML_FILE: &str = REPORT_HTML;

/// A key small multiples are grouped by: its name and its value for a pair.
type GroupKey = (&'static str, fn(&PairJson) -> String);

/// The keys of the small multiples, outermost first. Engine and path join this list when
/// pairs have them; nothing else changes.
const GROUP_KEYS: &[GroupKey] = &[
    ("engine", |p| p.spec.engine.to_string()),
    ("weights", |p| p.spec.weights.to_string()),
    ("span", |p| p.spec.span.to_string()),
    ("dtype", |p| p.spec.dtype.to_string()),
    ("kv_aligned", |p| u8::from(p.spec.kv_aligned).to_string()),
    ("path", |p| p.spec.path.to_string()),
];

/// Vertical marks for a pair's plot: the chunk boundaries inside the span of a chunked path
/// (kv_aligned=1 chunks start at the prompt's end, kv_aligned=0 ones at position 0), where a
/// chunk's offset or mask bug would first show.
fn markers(p: &PairJson) -> Vec<Marker> {
    let crate::path::RunPath::Chunked(c) = p.spec.path else {
        return Vec::new();
    };
    let start = p.decode.span_start;
    let end = start + p.spec.span;
    let first = if p.spec.kv_aligned { start } else { 0 };
    (first..end)
        .step_by(c.max(1))
        .filter(|&pos| pos > start && pos < end)
        .take(64)
        .map(|pos| Marker {
            pos,
            label: format!("chunk {c} starts"),
        })
        .collect()
}

#[derive(Serialize)]
struct Count {
    label: &'static str,
    n: usize,
    class: &'static str,
}

#[derive(Serialize)]
struct DriftRow {
    span: usize,
    kv: u8,
    pairs: usize,
    max_abs: String,
    max_abs_limit: String,
    max_abs_share: String,
    kl_max: String,
    kl_max_limit: String,
    kl_max_share: String,
    over: bool,
}

#[derive(Serialize)]
struct DtypeDrift {
    dtype: String,
    svg: String,
    rows: Vec<DriftRow>,
}

#[derive(Serialize)]
struct KlRow {
    dtype: String,
    kv: String,
    pairs: usize,
    positions: usize,
    kl_mean: String,
    kl_median: String,
    kl_p90: String,
    kl_p95: String,
    kl_p99: String,
    kl_p99_9: String,
    kl_max: String,
    dp_mean: String,
    dp_rms: String,
    dp_range: String,
    same_top: String,
    same_top_ci: String,
}

#[derive(Serialize)]
struct PairFigure {
    id: String,
    verdict: String,
    class: &'static str,
    reason: String,
    svg: Option<String>,
    flips: Vec<String>,
    markers: Vec<String>,
    note: Option<String>,
}

#[derive(Serialize)]
struct Group {
    title: String,
    pairs: Vec<PairFigure>,
}

#[derive(Serialize)]
struct TraceFigure {
    pair: String,
    svg: String,
    first_fail: String,
}

#[derive(Serialize)]
struct Problem {
    id: String,
    verdict: String,
    reason: String,
}

/// A pair's row of the headroom table: its worst metric as a share of that metric's limit.
#[derive(Serialize)]
struct HeadroomRow {
    id: String,
    verdict: String,
    class: &'static str,
    metric: String,
    value: String,
    limit: String,
    share: String,
    reason: String,
}

/// How many pairs of the headroom table show before "the rest" (folded).
const HEADROOM_SHOWN: usize = 10;

fn headroom_rows(r: &ReportJson) -> Vec<HeadroomRow> {
    by_headroom(r)
        .into_iter()
        .map(|p| {
            let w = worst_share(p);
            HeadroomRow {
                id: p.spec.id.clone(),
                verdict: p.verdict.to_string(),
                class: class_of(p.verdict),
                metric: w.map_or("—".into(), |w| w.0.to_string()),
                value: w.map_or("—".into(), |w| fmt_num(w.1)),
                limit: w.map_or("—".into(), |w| fmt_num(w.2)),
                share: w.map_or("—".into(), |w| share(w.1, w.2)),
                reason: p.reason.clone(),
            }
        })
        .collect()
}

#[derive(Serialize)]
struct HtmlView {
    name: String,
    verdict: String,
    verdict_class: &'static str,
    verdict_reason: String,
    counts: Vec<Count>,
    date: String,
    model: String,
    device: String,
    tool: String,
    wall: String,
    axes: String,
    inject: Option<String>,
    interrupted: bool,
    trace_result: Option<String>,
    trace_reason: Option<String>,
    drift: Vec<DtypeDrift>,
    kl: Vec<KlRow>,
    /// [`figures_note`].
    figures_note: Option<String>,
    /// [`pairs_note`]: which pairs the tables list above [`super::markdown::SHOWN_PAIRS`].
    pairs_note: Option<String>,
    group_keys: String,
    groups: Vec<Group>,
    /// The table and figures of the pairs held to the reference (`super::reference`).
    reference_rows: Vec<std::collections::BTreeMap<&'static str, String>>,
    reference_figures: Vec<super::reference::Figure>,
    traces: Vec<TraceFigure>,
    problems: Vec<Problem>,
    /// Every pair, least headroom first; the first [`HEADROOM_SHOWN`] show, the rest fold.
    headroom: Vec<HeadroomRow>,
    headroom_shown: usize,
    plot_count: usize,
    paths: Vec<PathSection>,
}

fn class_of(v: PairVerdict) -> &'static str {
    match v {
        PairVerdict::PassEquiv | PairVerdict::ExpectedDrift => "pass",
        PairVerdict::FailEquiv | PairVerdict::FailDrift => "fail",
        PairVerdict::Incomplete => "incomplete",
        PairVerdict::Skipped => "skipped",
    }
}

fn num(x: f64) -> String {
    fmt_num(x as f32)
}

/// A probability as a percentage, in llama.cpp's three decimals, or in scientific notation
/// where those would print 0.000 % for a non-zero value (f32 drift).
fn pct(x: f64) -> String {
    let v = 100.0 * x;
    if v != 0.0 && v.abs() < 5e-4 {
        format!("{v:.2e} %")
    } else {
        format!("{v:.3} %")
    }
}

/// The limits of a dtype: from report.json's `limits`, else from any of its pairs.
fn limits_of(r: &ReportJson, key: LoadKey, kv: bool) -> Option<Thresholds> {
    r.limits
        .get(&crate::limits::limits_key(key.dtype, key.weights))
        .map(|l| if kv { l.tolerance } else { l.drift_budget })
        .or_else(|| {
            r.pairs
                .iter()
                .find(|p| p.spec.load_key() == key && p.spec.kv_aligned == kv)
                .and_then(|p| p.limits)
        })
}

/// One plot and table per setting (engine, weights, dtype), labelled as in the Markdown
/// report's observations.
fn drift(r: &ReportJson) -> Result<Vec<DtypeDrift>> {
    let mut keys: Vec<LoadKey> = r.pairs.iter().map(|p| p.spec.load_key()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let dtype = key.dtype;
        // The decode path's drift against its limits; serving paths have their own tables.
        let compared: Vec<(&PairJson, &crate::compare::Metrics)> = compared(&r.pairs)
            .filter(|(p, _)| p.spec.load_key() == key && p.spec.path.is_default())
            .collect();
        if compared.is_empty() {
            continue;
        }
        let points: Vec<SpanPoint> = compared
            .iter()
            .map(|(p, m)| SpanPoint {
                span: p.spec.span,
                kv_aligned: p.spec.kv_aligned,
                max_abs: m.max_abs_diff(),
                kl_max: m.kl_max(),
            })
            .collect();
        let (tol, budget) = (limits_of(r, key, true), limits_of(r, key, false));
        let svg = plots::drift_by_span(dtype, &points, tol.as_ref(), budget.as_ref())?;
        let mut keys: Vec<(usize, bool)> = points.iter().map(|p| (p.span, p.kv_aligned)).collect();
        keys.sort_unstable();
        keys.dedup();
        let rows = keys
            .into_iter()
            .map(|(span, kv)| {
                let here: Vec<&SpanPoint> = points
                    .iter()
                    .filter(|p| p.span == span && p.kv_aligned == kv)
                    .collect();
                let max_abs = here.iter().map(|p| p.max_abs).fold(0.0, f32::max);
                let kl_max = here.iter().map(|p| p.kl_max).fold(0.0, f32::max);
                let lim = if kv { tol } else { budget };
                DriftRow {
                    span,
                    kv: u8::from(kv),
                    pairs: here.len(),
                    max_abs: fmt_num(max_abs),
                    max_abs_limit: lim.map_or("—".into(), |l| fmt_num(l.max_abs_diff())),
                    max_abs_share: lim.map_or("—".into(), |l| share(max_abs, l.max_abs_diff())),
                    kl_max: fmt_num(kl_max),
                    kl_max_limit: lim.map_or("—".into(), |l| fmt_num(l.kl_max())),
                    kl_max_share: lim.map_or("—".into(), |l| share(kl_max, l.kl_max())),
                    over: lim.is_some_and(|l| max_abs > l.max_abs_diff() || kl_max > l.kl_max()),
                }
            })
            .collect();
        out.push(DtypeDrift {
            dtype: setting_label(key),
            svg,
            rows,
        });
    }
    Ok(out)
}

fn kl_rows(r: &ReportJson) -> Vec<KlRow> {
    r.kl_statistics
        .iter()
        .map(|g| {
            let s = &g.stats;
            let se = |v: Option<f64>| v.map_or(String::new(), |e| format!(" ± {}", num(e)));
            let dp = s.delta_p.as_ref();
            KlRow {
                dtype: setting_label(LoadKey {
                    engine: g.engine,
                    weights: g.weights,
                    dtype: g.dtype,
                }),
                kv: g
                    .kv_aligned
                    .map_or("both".into(), |k| u8::from(k).to_string()),
                pairs: g.pairs,
                positions: s.positions,
                kl_mean: format!("{}{}", num(s.kl.mean), se(s.kl.mean_se)),
                kl_median: num(s.kl.median),
                kl_p90: num(s.kl.p90),
                kl_p95: num(s.kl.p95),
                kl_p99: num(s.kl.p99),
                kl_p99_9: num(s.kl.p99_9),
                kl_max: num(s.kl.max),
                dp_mean: dp.map_or("—".into(), |d| {
                    format!(
                        "{}{}",
                        pct(d.mean),
                        d.mean_se
                            .map_or(String::new(), |e| format!(" ± {}", pct(e)))
                    )
                }),
                dp_rms: dp.map_or("—".into(), |d| pct(d.rms)),
                dp_range: dp.map_or("—".into(), |d| {
                    format!(
                        "{} / {} / {} / {}",
                        pct(d.min),
                        pct(d.p1),
                        pct(d.p99),
                        pct(d.max)
                    )
                }),
                same_top: format!(
                    "{}{}",
                    pct(s.same_top_p.value),
                    s.same_top_p
                        .se
                        .map_or(String::new(), |e| format!(" ± {}", pct(e)))
                ),
                same_top_ci: format!(
                    "[{}, {}]",
                    pct(s.same_top_p.ci95_low),
                    pct(s.same_top_p.ci95_high)
                ),
            }
        })
        .collect()
}

fn pair_figure(p: &PairJson, window: Option<usize>) -> Result<PairFigure> {
    let mut mks = markers(p);
    let (svg, flips, note) = match (&p.metrics, p.verdict.is_compared()) {
        (Some(m), true) => {
            let span_start = p.prefill.span_start.max(p.decode.span_start);
            let at = p.spec.positions.as_deref();
            let (lo, hi) = plots::plotted_range(span_start, m.positions, at);
            mks.extend(window.map_or(Vec::new(), |w| plots::window_markers(lo, hi, w)));
            let svg = plots::pair_series(m, span_start, at, p.limits.as_ref(), &mks)?;
            let flips = m
                .top1_flips
                .iter()
                .map(|f| {
                    let tie = p
                        .limits
                        .map(|l| l.tie_margin_at(p.spec.dtype, f.prefill_top));
                    let kind = match tie {
                        Some(t) if f.prefill_margin > t => " (wide: over the tie margin)",
                        Some(_) => " (near-tie)",
                        None => "",
                    };
                    format!(
                        "position {}: prefill margin {}{kind}",
                        f.pos,
                        fmt_num(f.prefill_margin)
                    )
                })
                .collect();
            let note = (m.max_abs_diff() == 0.0)
                .then(|| "bit-identical logits: both series are 0 (drawn on the floor)".into());
            (Some(svg), flips, note)
        }
        _ => (None, Vec::new(), None),
    };
    Ok(PairFigure {
        id: p.spec.id.clone(),
        verdict: p.verdict.to_string(),
        class: class_of(p.verdict),
        reason: p.reason.clone(),
        svg,
        flips,
        markers: mks
            .iter()
            .map(|m| format!("{} at {}", m.label, m.pos))
            .collect(),
        note,
    })
}

/// Above this many pairs report.html draws the figures of this many only (the failing and
/// incomplete ones first, then by id) and says so: each figure is two SVG plots, and a sweep of
/// 20,000 pairs made a page of hundreds of megabytes no browser opens. report.json and
/// report.md still hold every pair.
pub const HTML_PAIR_FIGURES: usize = 500;

/// The ids of the pairs whose figures report.html draws; `None`: all of them.
fn shown_pairs(r: &ReportJson) -> Option<std::collections::HashSet<&str>> {
    if r.pairs.len() <= HTML_PAIR_FIGURES {
        return None;
    }
    let mut worst: Vec<&PairJson> = r.pairs.iter().collect();
    worst.sort_by(|a, b| (a.verdict.is_pass(), &a.spec.id).cmp(&(b.verdict.is_pass(), &b.spec.id)));
    Some(
        worst
            .into_iter()
            .take(HTML_PAIR_FIGURES)
            .map(|p| p.spec.id.as_str())
            .collect(),
    )
}

/// The line report.html shows when it draws only some pairs' figures.
fn figures_note(r: &ReportJson) -> Option<String> {
    (r.pairs.len() > HTML_PAIR_FIGURES).then(|| {
        format!(
            "{} pairs: the figures of {HTML_PAIR_FIGURES} only (the failing and incomplete \
             ones first); report.json holds every pair.",
            r.pairs.len()
        )
    })
}

/// A pair whole, read again from its records: the report keeps its pairs without their
/// per-position series, which only the figures of the pairs drawn need.
type Load<'a> = dyn Fn(&PairJson) -> Result<PairJson> + 'a;

/// The small multiples of the pairs of `r` whose figures are drawn ([`shown_pairs`]),
/// each read whole with `load`.
fn groups(r: &ReportJson, load: &Load) -> Result<Vec<Group>> {
    let shown = shown_pairs(r);
    let mut pairs: Vec<&PairJson> = r
        .pairs
        .iter()
        .filter(|p| {
            shown
                .as_ref()
                .is_none_or(|s| s.contains(p.spec.id.as_str()))
        })
        .collect();
    pairs.sort_by(|a, b| {
        let k = |p: &PairJson| {
            (
                p.spec.span,
                p.spec.dtype,
                p.spec.kv_aligned,
                p.spec.path,
                p.spec.prompt.clone(),
                p.spec.seed,
            )
        };
        k(a).cmp(&k(b))
    });
    // The path joins the keys only when a pair took one other than decode.
    let with_paths = r.pairs.iter().any(|p| !p.spec.path.is_default());
    let keys: Vec<&GroupKey> = GROUP_KEYS
        .iter()
        .filter(|(name, _)| with_paths || *name != "path")
        .collect();
    let mut out: Vec<(Vec<String>, Group)> = Vec::new();
    for p in pairs {
        let key: Vec<String> = keys.iter().map(|(_, f)| f(p)).collect();
        let fig = pair_figure(&load(p)?, r.model.sliding_window)?;
        match out.last_mut() {
            Some((k, g)) if *k == key => g.pairs.push(fig),
            _ => {
                let title = keys
                    .iter()
                    .zip(&key)
                    .map(|((name, _), v)| format!("{name} {v}"))
                    .collect::<Vec<_>>()
                    .join(" · ");
                out.push((
                    key,
                    Group {
                        title,
                        pairs: vec![fig],
                    },
                ));
            }
        }
    }
    Ok(out.into_iter().map(|(_, g)| g).collect())
}

fn traces(store: &Store, r: &ReportJson) -> Result<Vec<TraceFigure>> {
    if r.trace.is_none() {
        return Ok(Vec::new());
    }
    let m = store.manifest()?;
    let mut ts: Vec<PairTrace> = Vec::new();
    for spec in &m.pairs {
        if let Some(t) = store.trace(spec)?.and_then(|f| f.trace) {
            ts.push(t);
        }
    }
    ts.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
    ts.iter()
        .map(|t| {
            let first = t
                .positions
                .iter()
                .find_map(|p| p.first_fail.map(|ff| (p.pos, ff, p.root_cause)));
            Ok(TraceFigure {
                pair: t.pair_id.clone(),
                svg: plots::trace_heatmap(t)?,
                first_fail: first.map_or(
                    "no record over threshold".into(),
                    |(pos, (l, tn), rc)| {
                        format!(
                            "first failing record: {} at position {pos} (root cause {})",
                            crate::trace::label(l, tn),
                            rc.as_str()
                        )
                    },
                ),
            })
        })
        .collect()
}

/// The verdict counts, each with its badge class.
fn counts(c: &super::schema::Counts) -> Vec<Count> {
    vec![
        Count {
            label: "PASS_EQUIV",
            n: c.pass_equiv,
            class: "pass",
        },
        Count {
            label: "EXPECTED_DRIFT",
            n: c.expected_drift,
            class: "pass",
        },
        Count {
            label: "FAIL_EQUIV",
            n: c.fail_equiv,
            class: "fail",
        },
        Count {
            label: "FAIL_DRIFT",
            n: c.fail_drift,
            class: "fail",
        },
        Count {
            label: "INCOMPLETE",
            n: c.incomplete,
            class: "incomplete",
        },
        Count {
            label: "SKIPPED",
            n: c.skipped,
            class: "skipped",
        },
    ]
}

/// The page's content: `full` for what is said of every pair, `shown` (the pairs the
/// tables list, [`super::markdown::summarised`]) for the tables and figures of pairs.
fn view(store: &Store, m: &Manifest, full: &ReportJson, shown: &ReportJson) -> Result<HtmlView> {
    let load = |p: &PairJson| read_pair(store, m, &p.spec).map(|(p, _, _)| p);
    let r = shown;
    let counts = counts(&r.counts);
    let drift = drift(full)?;
    let groups = groups(shown, &load)?;
    let traces = traces(store, r)?;
    let reference_figures = super::reference::figures(&shown.pairs, r.model.sliding_window, &load)?;
    let plot_count = drift.len()
        + traces.len()
        + reference_figures.len()
        + groups
            .iter()
            .flat_map(|g| &g.pairs)
            .filter(|p| p.svg.is_some())
            .count();
    Ok(HtmlView {
        name: r.sweep.name.clone(),
        verdict: r.verdict.as_str().into(),
        verdict_class: match r.verdict {
            crate::verdict::GlobalVerdict::Pass => "pass",
            crate::verdict::GlobalVerdict::Fail => "fail",
            crate::verdict::GlobalVerdict::Incomplete => "incomplete",
        },
        verdict_reason: r.verdict_reason.clone(),
        counts,
        date: r
            .finished_at
            .clone()
            .unwrap_or_else(|| format!("{} (unfinished)", r.started_at)),
        model: format!(
            "{} ({}, vocab {})",
            r.model.source, r.model.architecture, r.model.vocab_size
        ),
        device: format!("{} — {}", r.device, r.device_name),
        tool: format!(
            "{} {} (commit {}), candle {}",
            r.tool.name, r.tool.version, r.tool.git_commit, r.tool.candle_version
        ),
        wall: r
            .wall_s
            .map_or("unfinished".into(), |w| format!("{w:.1} s")),
        axes: axes(full),
        inject: r.inject.as_ref().map(describe_injection),
        interrupted: r.interrupted,
        trace_result: r.trace.as_ref().map(|t| t.result.as_str().to_string()),
        trace_reason: r.trace.as_ref().map(|t| t.reason.clone()),
        drift,
        kl: kl_rows(r),
        figures_note: figures_note(full),
        pairs_note: pairs_note(full, shown),
        group_keys: GROUP_KEYS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", "),
        groups,
        reference_rows: super::reference::rows(&r.pairs),
        reference_figures,
        traces,
        problems: r
            .pairs
            .iter()
            .filter(|p| !p.verdict.is_pass())
            .map(|p| Problem {
                id: p.spec.id.clone(),
                verdict: p.verdict.to_string(),
                reason: p.reason.clone(),
            })
            .collect(),
        headroom: headroom_rows(shown),
        headroom_shown: HEADROOM_SHOWN,
        plot_count,
        paths: path_sections(r),
    })
}

/// Renders report.html's text from report.json's content and the results directory (for
/// the traces).
pub fn render_html(store: &Store, r: &ReportJson) -> Result<String> {
    render_page(store, &store.manifest()?, r, r)
}

/// report.html's text: [`view`]'s content through the template.
fn render_page(
    store: &Store,
    m: &Manifest,
    full: &ReportJson,
    shown: &ReportJson,
) -> Result<String> {
    let terr = |e: tera::Error| Error::Template {
        name: "report.html.tera".into(),
        message: error_chain(&e),
    };
    let v = view(store, m, full, shown)?;
    let mut tera = tera::Tera::new();
    // Escape every value; the SVGs plotters drew are marked `safe` in the template.
    tera.autoescape_on([".html"]);
    tera.add_raw_template("report.html", HTML_TEMPLATE)
        .map_err(terr)?;
    let ctx = tera::Context::from_serialize(&v).map_err(terr)?;
    tera.render("report.html", &ctx).map_err(terr)
}

/// report.html's bytes.
pub(crate) fn render_file(i: &Inputs, w: &mut dyn std::io::Write) -> Result<bool> {
    let html = render_page(i.store, i.manifest, i.report, i.shown)?;
    super::files::write_text(i.store, super::files::REPORT_HTML, &html, w)
}
