//! The plots of report.html, drawn with `plotters` into SVG strings that the page inlines
//! (no image files, no scripts, no network: the page is one self-contained file).
//!
//! Log scales cannot show 0, and bit-identical logits are common (f32, kv_aligned=1): values
//! below a floor are drawn on the floor, and the caption says when a series is all zero.

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::compare::Metrics;
use crate::dtype::RunDtype;
use crate::error::{Error, Result};
use crate::limits::Thresholds;
use crate::trace::{PairTrace, TensorName, forward_order};

/// A vertical mark on a pair's position axis: a sliding-window edge or a chunk boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Absolute position.
    pub pos: usize,
    /// What it marks, for the caption.
    pub label: String,
}

pub(super) const FONT: &str = "sans-serif";
pub(super) const PREFILL_BLUE: RGBColor = RGBColor(31, 119, 180);
const KL_GREEN: RGBColor = RGBColor(44, 160, 44);
pub(super) const LIMIT_RED: RGBColor = RGBColor(214, 39, 40);
pub(super) const FLIP_ORANGE: RGBColor = RGBColor(230, 120, 0);
pub(super) const MARK_GREY: RGBColor = RGBColor(140, 140, 140);
pub(super) const KV0_PURPLE: RGBColor = RGBColor(148, 103, 189);
const KV1_BLUE: RGBColor = RGBColor(31, 119, 180);

pub(super) fn plot_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Template {
        name: "report.html".into(),
        message: format!("drawing {what}: {e}"),
    }
}

/// A log-scale range covering `values` and `limits`, with a floor for zeros.
pub(super) fn log_range(values: impl Iterator<Item = f64>, limits: &[f64]) -> (f64, f64) {
    let positive: Vec<f64> = values
        .chain(limits.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let hi = positive.iter().copied().fold(f64::MIN_POSITIVE, f64::max);
    let lo = positive.iter().copied().fold(hi, f64::min);
    // At least two decades, so that a flat series still reads as a line in a frame.
    let lo = (lo / 3.0).min(hi / 100.0).max(1e-30);
    (lo, hi * 3.0)
}

/// The positions a pair's plot spans, `lo..hi`: its compared positions `at` (first to
/// last), or the `n` span positions from `span_start`.
pub fn plotted_range(span_start: usize, n: usize, at: Option<&[usize]>) -> (usize, usize) {
    match at {
        Some([first, .., last]) => (*first, last + 1),
        Some([only]) => (*only, only + 1),
        _ => (span_start, span_start + n),
    }
}

/// Grey verticals at the multiples of the sliding window `w` inside `lo..hi` (at most 64):
/// where a query's window starts to leave keys out, as the legend promises.
pub fn window_markers(lo: usize, hi: usize, w: usize) -> Vec<Marker> {
    if w == 0 {
        return Vec::new();
    }
    (lo.div_ceil(w).max(1)..)
        .map_while(|m| m.checked_mul(w).filter(|&x| x < hi))
        .take(64)
        .map(|pos| Marker {
            pos,
            label: format!("window edge ({w})"),
        })
        .collect()
}

pub(super) fn sci(v: &f64) -> String {
    format!("{v:.0e}")
}

/// One pair's per-position max |diff| (top) and KL (bottom) on log scales, each with its
/// limit as a red line, top-1 flips as orange points labelled with prefill's margin, and the
/// markers as grey vertical lines. Row j of the series is position `at[j]` when the pair
/// compared chosen positions, else `span_start + j`.
pub fn pair_series(
    m: &Metrics,
    span_start: usize,
    at: Option<&[usize]>,
    limits: Option<&Thresholds>,
    markers: &[Marker],
) -> Result<String> {
    let xs: Vec<usize> = match at {
        Some(at) => at.to_vec(),
        None => (span_start..span_start + m.positions).collect(),
    };
    let (w, h) = (380u32, 250u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error("a pair", e))?;
        let (top, bottom) = root.split_vertically(h / 2);
        let (lo, hi) = plotted_range(span_start, m.positions, at);
        let (x0, x1) = (lo as f64 - 0.5, hi as f64 - 0.5);
        let flips: Vec<(f64, f64, f32)> = m
            .top1_flips
            .iter()
            .filter_map(|f| {
                let i = xs.binary_search(&f.pos).ok()?;
                let y = f64::from(*m.per_pos_max_abs.get(i)?);
                Some((f.pos as f64, y, f.prefill_margin))
            })
            .collect();
        let panels = [
            (
                &top,
                "max |diff| per position",
                m.per_pos_max_abs
                    .iter()
                    .map(|&v| Some(f64::from(v)))
                    .collect::<Vec<_>>(),
                limits.map(|l| l.max_abs_diff()),
                PREFILL_BLUE,
            ),
            (
                &bottom,
                "KL(prefill ‖ decode) per position",
                m.per_pos_kl.iter().map(|v| v.map(f64::from)).collect(),
                limits.map(|l| l.kl_max()),
                KL_GREEN,
            ),
        ];
        for (i, (area, title, values, limit, colour)) in panels.into_iter().enumerate() {
            let panel = Panel {
                title,
                values,
                limit,
                colour,
            };
            pair_panel(area, i, &panel, &xs, (x0, x1), markers, &flips)?;
        }
        root.present().map_err(|e| plot_error("a pair", e))?;
    }
    Ok(svg)
}

/// One panel of [`pair_series`]: a per-position series and its limit.
struct Panel {
    title: &'static str,
    values: Vec<Option<f64>>,
    limit: Option<f32>,
    colour: RGBColor,
}

/// Draws panel `i` of [`pair_series`] (0: max |diff|, with the flips; 1: KL) on `area`,
/// over positions `x0..x1`.
fn pair_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    i: usize,
    panel: &Panel,
    xs: &[usize],
    (x0, x1): (f64, f64),
    markers: &[Marker],
    flips: &[(f64, f64, f32)],
) -> Result<()> {
    let Panel {
        title,
        values,
        limit,
        colour,
    } = panel;
    let (limit, colour) = (*limit, *colour);
    let lims: Vec<f64> = limit.map(f64::from).into_iter().collect();
    let (lo, hi) = log_range(values.iter().flatten().copied(), &lims);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 12))
        .margin(4)
        .x_label_area_size(if i == 1 { 18 } else { 14 })
        .y_label_area_size(44)
        .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
        .map_err(|e| plot_error("a pair", e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_labels(5)
        .y_labels(4)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&sci)
        .label_style((FONT, 10))
        .draw()
        .map_err(|e| plot_error("a pair", e))?;
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(j, v)| Some((*xs.get(j)? as f64, (*v)?.max(lo))))
        .collect();
    chart
        .draw_series(LineSeries::new(points, colour.stroke_width(1)))
        .map_err(|e| plot_error("a pair", e))?;
    for mk in markers {
        let x = mk.pos as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, lo), (x, hi)],
                MARK_GREY.stroke_width(1),
            )))
            .map_err(|e| plot_error("a pair", e))?;
    }
    if let Some(l) = limit {
        let l = f64::from(l);
        chart
            .draw_series(std::iter::once(DashedPathElement::new(
                vec![(x0, l), (x1, l)],
                4,
                3,
                LIMIT_RED.stroke_width(1),
            )))
            .map_err(|e| plot_error("a pair", e))?;
    }
    if i == 0 {
        chart
            .draw_series(
                flips
                    .iter()
                    .map(|&(x, y, _)| Circle::new((x, y.max(lo)), 3, FLIP_ORANGE.filled())),
            )
            .map_err(|e| plot_error("a pair", e))?;
        // Labels for the first few flips; the caption lists all of them.
        chart
            .draw_series(flips.iter().take(4).map(|&(x, y, margin)| {
                Text::new(
                    format!("{:.2e}", margin),
                    (x, (y * 1.6).min(hi)),
                    (FONT, 9).into_font().color(&FLIP_ORANGE),
                )
            }))
            .map_err(|e| plot_error("a pair", e))?;
    }
    Ok(())
}

/// One (span, kv_aligned, value) point of the drift-by-span plot.
#[derive(Debug, Clone, Copy)]
pub struct SpanPoint {
    /// Span.
    pub span: usize,
    /// kv_aligned.
    pub kv_aligned: bool,
    /// max_abs_diff.
    pub max_abs: f32,
    /// kl_max.
    pub kl_max: f32,
}

/// The most points of one (span, kv_aligned) column the drift-by-span plot draws per
/// metric; above it, [`thinned`] keeps that many quantiles of each.
pub const COLUMN_POINTS: usize = 64;

/// `points` with at most [`COLUMN_POINTS`] quantiles of each metric per (span, kv_aligned)
/// column, the lowest and highest among them: the column's range reads the same, and the
/// SVG stays a fixed size however many pairs the sweep has (every point is a circle).
pub fn thinned(points: &[SpanPoint]) -> Vec<SpanPoint> {
    let mut columns: std::collections::BTreeMap<(usize, bool), Vec<SpanPoint>> =
        std::collections::BTreeMap::new();
    for p in points {
        columns.entry((p.span, p.kv_aligned)).or_default().push(*p);
    }
    let mut out = Vec::new();
    for (_, mut col) in columns {
        if col.len() <= 2 * COLUMN_POINTS {
            out.extend(col);
            continue;
        }
        let n = col.len();
        let quantiles = |col: &[SpanPoint]| -> Vec<SpanPoint> {
            (0..COLUMN_POINTS)
                .map(|k| col[k * (n - 1) / (COLUMN_POINTS - 1)])
                .collect()
        };
        col.sort_by(|a, b| a.max_abs.total_cmp(&b.max_abs));
        out.extend(quantiles(&col));
        col.sort_by(|a, b| a.kl_max.total_cmp(&b.kl_max));
        out.extend(quantiles(&col));
    }
    out
}

/// One dtype's drift by span: max_abs_diff (left) and kl_max (right) of the compared pairs
/// (all of them, or [`thinned`] above [`COLUMN_POINTS`] a column), kv_aligned=0 in purple
/// and 1 in blue, against the drift budget (purple dashes) and the tolerance (red dashes).
pub fn drift_by_span(
    dtype: RunDtype,
    points: &[SpanPoint],
    tolerance: Option<&Thresholds>,
    budget: Option<&Thresholds>,
) -> Result<String> {
    let points = &thinned(points)[..];
    // Drawn at the page's full width (the page scales it by its viewBox), so the labels
    // are sized for a 1100-pixel figure rather than a thumbnail.
    let (w, h) = (1100u32, 380u32);
    let mut spans: Vec<usize> = points.iter().map(|p| p.span).collect();
    spans.sort_unstable();
    spans.dedup();
    let slot = |span: usize| spans.iter().position(|&s| s == span).unwrap_or(0) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| plot_error("drift by span", e))?;
        let (left, right) = root.split_horizontally(w / 2);
        type Pick = fn(&SpanPoint) -> f32;
        type Limit = fn(&Thresholds) -> f32;
        let panels: [(&DrawingArea<_, _>, String, Pick, Limit); 2] = [
            (
                &left,
                format!("{dtype}: max_abs_diff by span"),
                |p| p.max_abs,
                |t| t.max_abs_diff(),
            ),
            (
                &right,
                format!("{dtype}: kl_max by span"),
                |p| p.kl_max,
                |t| t.kl_max(),
            ),
        ];
        for (area, title, pick, limit) in panels {
            let lims: Vec<f64> = [tolerance, budget]
                .into_iter()
                .flatten()
                .map(|t| f64::from(limit(t)))
                .collect();
            let (lo, hi) = log_range(points.iter().map(|p| f64::from(pick(p))), &lims);
            let n = spans.len().max(1) as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 22))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(80)
                .build_cartesian_2d(-0.5..n - 0.5, (lo..hi).log_scale())
                .map_err(|e| plot_error("drift by span", e))?;
            let span_label = |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    spans
                        .get(i as usize)
                        .map_or(String::new(), |s| format!("span {s}"))
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .max_light_lines(0)
                .x_labels(spans.len().max(1) * 2 + 1)
                .x_label_formatter(&span_label)
                .y_labels(5)
                .y_label_formatter(&sci)
                .label_style((FONT, 19))
                .draw()
                .map_err(|e| plot_error("drift by span", e))?;
            for (t, colour) in [(budget, KV0_PURPLE), (tolerance, LIMIT_RED)] {
                if let Some(t) = t {
                    let l = f64::from(limit(t));
                    chart
                        .draw_series(std::iter::once(DashedPathElement::new(
                            vec![(-0.5, l), (n - 0.5, l)],
                            8,
                            5,
                            colour.stroke_width(2),
                        )))
                        .map_err(|e| plot_error("drift by span", e))?;
                }
            }
            for (kv, colour, dx) in [(false, KV0_PURPLE, -0.12), (true, KV1_BLUE, 0.12)] {
                chart
                    .draw_series(points.iter().filter(|p| p.kv_aligned == kv).map(|p| {
                        let y = f64::from(pick(p)).max(lo);
                        Circle::new((slot(p.span) + dx, y), 5, colour.filled())
                    }))
                    .map_err(|e| plot_error("drift by span", e))?;
            }
        }
        root.present().map_err(|e| plot_error("drift by span", e))?;
    }
    Ok(svg)
}

/// Colour of a cell whose NMSE is `ratio` times the threshold: light to dark blue below it,
/// red above it.
fn nmse_colour(ratio: f64) -> RGBColor {
    if ratio > 1.0 {
        return LIMIT_RED;
    }
    // 1e-8 of the threshold (or less) is lightest, the threshold itself darkest.
    let t = ((ratio.max(1e-12).log10() + 8.0) / 8.0).clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(222.0, 8.0), mix(235.0, 69.0), mix(247.0, 148.0))
}

/// A traced pair's layer × tensor heat map of NMSE (the largest over its traced positions),
/// red where a record fails, with the first failing record of the first failing position
/// outlined in black, and records without a partner (TRACE_OFFSET) hatched in grey.
pub fn trace_heatmap(t: &PairTrace) -> Result<String> {
    // Rows in forward order: embed, layer 0 … N, final; columns: tensors in forward order.
    let mut rows: Vec<(u8, usize)> = t
        .records
        .iter()
        .map(|r| {
            let (g, l, _) = forward_order(r.layer, r.tensor);
            (g, l)
        })
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let mut cols: Vec<TensorName> = t.records.iter().map(|r| r.tensor).collect();
    cols.sort_unstable();
    cols.dedup();
    let row_of = |layer: Option<usize>, tensor: TensorName| {
        let (g, l, _) = forward_order(layer, tensor);
        rows.iter().position(|&r| r == (g, l))
    };
    let first_fail = t
        .positions
        .iter()
        .filter_map(|p| p.first_fail)
        .next()
        .and_then(|(layer, tensor)| {
            Some((
                row_of(layer, tensor)?,
                cols.iter().position(|&c| c == tensor)?,
            ))
        });
    let (cell_w, cell_h, left, top) = (58i32, 18i32, 70i32, 40i32);
    let w = (left + cell_w * cols.len() as i32 + 20).max(420) as u32;
    let h = (top + cell_h * rows.len() as i32 + 46) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error("a trace", e))?;
        let label = (FONT, 10).into_font();
        let draw = |e: Result<(), DrawingAreaErrorKind<_>>| e.map_err(|e| plot_error("a trace", e));
        draw(root.draw(&Text::new(
            format!(
                "{}: NMSE, largest over positions (threshold {:.1e})",
                t.pair_id, t.nmse_threshold
            ),
            (4, 4),
            (FONT, 12).into_font(),
        )))?;
        for (j, c) in cols.iter().enumerate() {
            let x = left + cell_w * j as i32 + 2;
            draw(root.draw(&Text::new(
                c.as_str().to_string(),
                (x, top - 14),
                label.clone(),
            )))?;
        }
        for (i, (g, l)) in rows.iter().enumerate() {
            let name = match g {
                0 => "embed".to_string(),
                1 => format!("layer {l}"),
                _ => "final".to_string(),
            };
            let y = top + cell_h * i as i32 + 4;
            draw(root.draw(&Text::new(name, (4, y), label.clone())))?;
        }
        let cells = heatmap_cells(t, &cols, &row_of);
        for (&(i, j), &(failed, misaligned, nmse)) in &cells {
            let (x, y) = (left + cell_w * j as i32, top + cell_h * i as i32);
            let colour = if misaligned {
                MARK_GREY
            } else if failed {
                LIMIT_RED
            } else {
                nmse_colour(nmse / t.nmse_threshold)
            };
            draw(root.draw(&Rectangle::new(
                [(x, y), (x + cell_w - 1, y + cell_h - 1)],
                colour.filled(),
            )))?;
            if misaligned {
                draw(root.draw(&PathElement::new(
                    vec![(x, y + cell_h - 1), (x + cell_w - 1, y)],
                    WHITE.stroke_width(1),
                )))?;
            }
        }
        if let Some((i, j)) = first_fail {
            let (x, y) = (left + cell_w * j as i32, top + cell_h * i as i32);
            draw(root.draw(&Rectangle::new(
                [(x - 1, y - 1), (x + cell_w, y + cell_h)],
                BLACK.stroke_width(3),
            )))?;
        }
        let legend_y = top + cell_h * rows.len() as i32 + 10;
        heatmap_legend(&root, legend_y, first_fail.is_some(), &label)?;
        root.present().map_err(|e| plot_error("a trace", e))?;
    }
    Ok(svg)
}

/// Each heat-map cell (row, column) with whether a record there failed, whether one has no
/// partner, and the largest NMSE.
type Cells = std::collections::BTreeMap<(usize, usize), (bool, bool, f64)>;

/// The cells of [`trace_heatmap`]: the worst record of each.
fn heatmap_cells(
    t: &PairTrace,
    cols: &[TensorName],
    row_of: &dyn Fn(Option<usize>, TensorName) -> Option<usize>,
) -> Cells {
    // The worst record of each cell: a failure outranks any NMSE.
    let mut cells: Cells = std::collections::BTreeMap::new();
    for r in &t.records {
        let (Some(i), Some(j)) = (
            row_of(r.layer, r.tensor),
            cols.iter().position(|&c| c == r.tensor),
        ) else {
            continue;
        };
        let e = cells.entry((i, j)).or_insert((false, false, 0.0));
        e.0 |= r.failed;
        e.1 |= r.misaligned.is_some();
        e.2 = e.2.max(r.nmse.unwrap_or(0.0));
    }
    cells
}

/// The legend of [`trace_heatmap`], at `legend_y`.
fn heatmap_legend(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    legend_y: i32,
    first_fail: bool,
    label: &FontDesc<'_>,
) -> Result<()> {
    let draw = |e: std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>| {
        e.map_err(|e| plot_error("a trace", e))
    };
    let mut x = 4;
    for (text, colour) in [
        ("≤ 1e-8 × threshold", nmse_colour(1e-9)),
        ("threshold", nmse_colour(1.0)),
        ("over threshold", LIMIT_RED),
        ("no partner", MARK_GREY),
    ] {
        draw(root.draw(&Rectangle::new(
            [(x, legend_y), (x + 12, legend_y + 12)],
            colour.filled(),
        )))?;
        draw(root.draw(&Text::new(text, (x + 16, legend_y + 1), label.clone())))?;
        x += 30 + 7 * text.chars().count() as i32;
    }
    if first_fail {
        draw(root.draw(&Rectangle::new(
            [(x, legend_y), (x + 12, legend_y + 12)],
            BLACK.stroke_width(3),
        )))?;
        draw(root.draw(&Text::new(
            "first failing record",
            (x + 16, legend_y + 1),
            label.clone(),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_edges_are_marked_inside_the_plotted_range() {
        let pos = |v: Vec<Marker>| v.into_iter().map(|m| m.pos).collect::<Vec<_>>();
        assert_eq!(pos(window_markers(500, 1030, 512)), vec![512, 1024]);
        assert_eq!(pos(window_markers(0, 512, 512)), Vec::<usize>::new());
        assert_eq!(pos(window_markers(512, 513, 512)), vec![512]);
        assert_eq!(plotted_range(6, 12, None), (6, 18));
        assert_eq!(plotted_range(6, 3, Some(&[9, 12, 15])), (9, 16));
    }

    #[test]
    fn log_range_has_a_floor_for_zeros_and_covers_the_limit() {
        let (lo, hi) = log_range([0.0, 0.0].into_iter(), &[4e-4]);
        assert!(lo > 0.0 && lo < 4e-4 && hi > 4e-4);
        let (lo, hi) = log_range([1e-6, 2e-3].into_iter(), &[1e-3]);
        assert!(lo < 1e-6 && hi > 2e-3);
    }

    #[test]
    fn colours_darken_towards_the_threshold_and_turn_red_past_it() {
        let light = nmse_colour(1e-9);
        let dark = nmse_colour(0.5);
        assert!(light.0 > dark.0 && light.2 > dark.2);
        assert_eq!(nmse_colour(1.5), LIMIT_RED);
    }
}
