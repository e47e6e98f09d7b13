//! The report's words and rows on the third comparison: each pair's prefill and decode
//! against the reference (docs/design.md, "Three comparisons"). Markdown, HTML and the
//! observations read them from here.

use std::collections::BTreeMap;

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::Serialize;

use super::plots::{
    FLIP_ORANGE, FONT, KV0_PURPLE, LIMIT_RED, MARK_GREY, Marker, PREFILL_BLUE, log_range,
    plot_error, sci,
};
use super::schema::PairJson;
use crate::error::Result;
use crate::store::{RefComparison, ReferenceCheck};
use crate::verdict::fmt_num;

/// One row per pair held to the reference: column key → formatted cell.
pub(crate) fn rows(pairs: &[PairJson]) -> Vec<BTreeMap<&'static str, String>> {
    pairs
        .iter()
        .filter_map(|p| p.reference.as_ref().map(|c| (p, c)))
        .map(|(p, c)| {
            let mut row = BTreeMap::new();
            row.insert("id", p.spec.id.clone());
            row.insert("source", c.source.clone());
            row.insert("prefill", cell(c, &c.prefill));
            row.insert("decode", cell(c, &c.decode));
            row.insert("verdict", verdict(c).to_string());
            row.insert(
                "note",
                c.convention.clone().unwrap_or_else(|| {
                    c.not_compared
                        .as_ref()
                        .map_or(String::new(), |n| n.reason.clone())
                }),
            );
            row
        })
        .collect()
}

/// "max_abs 1.2e-4 · kl_max 3e-9 · from 17" for one path, or why there is none.
fn cell(c: &ReferenceCheck, path: &Option<RefComparison>) -> String {
    match path {
        Some(r) if r.metrics.positions > 0 => {
            let from = r
                .metrics
                .first_divergent_pos
                .map_or(String::new(), |p| format!(" · from {p}"));
            format!(
                "max_abs {} · kl_max {}{from}{}",
                fmt_num(r.metrics.max_abs_diff()),
                fmt_num(r.metrics.kl_max()),
                if r.pass { "" } else { " · FAIL" }
            )
        }
        Some(r) => r.reason.clone(),
        None if c.not_compared.is_some() => "not compared".into(),
        None => "no run".into(),
    }
}

/// PASS, FAIL, SKIPPED or INCOMPLETE for the pair's reference check as a whole.
pub(crate) fn verdict(c: &ReferenceCheck) -> &'static str {
    match &c.not_compared {
        Some(n) if n.skipped => "SKIPPED",
        Some(_) => "INCOMPLETE",
        None if !c.failures().is_empty() => "FAIL",
        None if c.prefill.is_none() && c.decode.is_none() => "INCOMPLETE",
        None => "PASS",
    }
}

/// Statements on the reference comparisons: how many paths held, which failed and from
/// where, conventions found, and why none were compared when none were.
pub(crate) fn observations(pairs: &[PairJson]) -> Vec<String> {
    let checks: Vec<(&PairJson, &ReferenceCheck)> = pairs
        .iter()
        .filter_map(|p| p.reference.as_ref().map(|c| (p, c)))
        .collect();
    let Some((_, first)) = checks.first() else {
        return Vec::new();
    };
    let source = &first.source;
    let mut out = Vec::new();
    for path in ["prefill", "decode"] {
        let judged: Vec<(&PairJson, &RefComparison)> = checks
            .iter()
            .filter_map(|(p, c)| {
                let r = if path == "prefill" {
                    &c.prefill
                } else {
                    &c.decode
                };
                r.as_ref()
                    .filter(|r| r.metrics.positions > 0)
                    .map(|r| (*p, r))
            })
            .collect();
        if judged.is_empty() {
            continue;
        }
        let failed: Vec<&(&PairJson, &RefComparison)> =
            judged.iter().filter(|(_, r)| !r.pass).collect();
        let worst = judged
            .iter()
            .map(|(_, r)| r.metrics.max_abs_diff())
            .fold(0f32, f32::max);
        match failed.first() {
            None => out.push(format!(
                "{path} is within its limits against the reference ({source}) in all {} pairs held to it (largest max_abs_diff {}).",
                judged.len(),
                fmt_num(worst)
            )),
            Some((p, r)) => out.push(format!(
                "{path} differs from the reference ({source}) beyond its limits in {}/{} pairs; first: `{}`{} ({}).",
                failed.len(),
                judged.len(),
                p.spec.id,
                r.metrics
                    .first_divergent_pos
                    .map_or(String::new(), |at| format!(" from position {at}")),
                r.reason
            )),
        }
    }
    let mut conventions: Vec<&str> = checks
        .iter()
        .filter_map(|(_, c)| c.convention.as_deref())
        .collect();
    conventions.sort();
    conventions.dedup();
    for c in conventions {
        out.push(format!("Window convention: {c}."));
    }
    let mut missing: Vec<&str> = checks
        .iter()
        .filter_map(|(_, c)| c.not_compared.as_ref().map(|n| n.reason.as_str()))
        .collect();
    missing.sort();
    missing.dedup();
    for why in missing {
        let n = checks
            .iter()
            .filter(|(_, c)| c.not_compared.as_ref().is_some_and(|m| m.reason == why))
            .count();
        out.push(format!(
            "{n} pair(s) were not held to the reference ({source}): {why}."
        ));
    }
    out
}

/// At most this many pairs get a reference figure in report.html: failures first, then the
/// largest distance from the reference (the table lists every pair).
const MAX_FIGURES: usize = 24;

/// One pair's reference figure for report.html.
#[derive(Serialize)]
pub(crate) struct Figure {
    id: String,
    verdict: &'static str,
    svg: String,
    caption: String,
}

/// The figures of the pairs held to the reference, worst first, at most [`MAX_FIGURES`];
/// `load` reads a pair whole (the report keeps pairs without their per-position series).
pub(crate) fn figures(
    pairs: &[PairJson],
    window: Option<usize>,
    load: &dyn Fn(&PairJson) -> Result<PairJson>,
) -> Result<Vec<Figure>> {
    let mut held: Vec<(&PairJson, &ReferenceCheck)> = pairs
        .iter()
        .filter_map(|p| p.reference.as_ref().map(|c| (p, c)))
        .filter(|(_, c)| c.prefill.is_some() || c.decode.is_some())
        .collect();
    let worst = |c: &ReferenceCheck| {
        [&c.prefill, &c.decode]
            .into_iter()
            .flatten()
            .map(|r| r.metrics.max_abs_diff())
            .fold(0f32, f32::max)
    };
    held.sort_by(|(_, a), (_, b)| {
        let fails = |c: &ReferenceCheck| c.failures().is_empty();
        fails(a).cmp(&fails(b)).then(worst(b).total_cmp(&worst(a)))
    });
    held.into_iter()
        .take(MAX_FIGURES)
        .map(|(p, c)| {
            let whole = load(p)?;
            let series_of = whole.reference.as_ref().unwrap_or(c);
            Ok(Figure {
                id: p.spec.id.clone(),
                verdict: verdict(c),
                svg: series(&whole, series_of, window)?,
                caption: c.convention.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// max |diff| per position of the three comparisons (prefill–decode, prefill–reference,
/// decode–reference) on a log scale, the reference limit dashed red, window edges grey.
fn series(p: &PairJson, c: &ReferenceCheck, window: Option<usize>) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| plot_error("a reference figure", e);
    let lines: Vec<(&str, RGBColor, &crate::compare::Metrics)> = [
        ("prefill–decode", PREFILL_BLUE, p.metrics.as_ref()),
        (
            "prefill–reference",
            FLIP_ORANGE,
            c.prefill.as_ref().map(|r| &r.metrics),
        ),
        (
            "decode–reference",
            KV0_PURPLE,
            c.decode.as_ref().map(|r| &r.metrics),
        ),
    ]
    .into_iter()
    .filter_map(|(n, col, m)| m.filter(|m| m.positions > 0).map(|m| (n, col, m)))
    .collect();
    let span_start = p.prefill.span_start.max(p.decode.span_start);
    let at = p.spec.positions.as_deref();
    let n = lines.iter().map(|(_, _, m)| m.positions).max().unwrap_or(0);
    let (lo_x, hi_x) = super::plots::plotted_range(span_start, n, at);
    let xs: Vec<usize> = at.map_or_else(|| (lo_x..hi_x).collect(), <[usize]>::to_vec);
    let limit = f64::from(c.limits.max_abs_diff());
    let values = lines
        .iter()
        .flat_map(|(_, _, m)| m.per_pos_max_abs.iter().map(|&v| f64::from(v)));
    let (lo, hi) = log_range(values, &[limit]);
    let (x0, x1) = (lo_x as f64 - 0.5, hi_x as f64 - 0.5);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("max |diff| per position", (FONT, 14))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .max_light_lines(0)
            .x_labels(8)
            .y_labels(5)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&sci)
            .label_style((FONT, 12))
            .draw()
            .map_err(|e| err(&e))?;
        for (name, colour, m) in &lines {
            let points: Vec<(f64, f64)> = m
                .per_pos_max_abs
                .iter()
                .zip(&xs)
                .map(|(&v, &x)| (x as f64, f64::from(v).max(lo)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], *colour));
        }
        let edges: Vec<Marker> =
            window.map_or(Vec::new(), |w| super::plots::window_markers(lo_x, hi_x, w));
        for mk in &edges {
            let x = mk.pos as f64;
            let edge = PathElement::new(vec![(x, lo), (x, hi)], MARK_GREY.stroke_width(1));
            chart
                .draw_series(std::iter::once(edge))
                .map_err(|e| err(&e))?;
        }
        let dashes = DashedPathElement::new(vec![(x0, limit), (x1, limit)], 4, 3, LIMIT_RED);
        chart
            .draw_series(std::iter::once(dashes))
            .map_err(|e| err(&e))?;
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(MARK_GREY)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
