//! Runs limited to compared positions (docs/design.md, "Compared positions"): a prefill that
//! computes only those rows where each row costs a forward, the rows a comparison reads, and
//! the bisection that makes the first divergent position exact.

use std::time::Instant;

use candle_core::Tensor;

use super::forward::{RunOutput, last_rows_by_prefix, prefill};
use crate::compare;
use crate::error::{CandleContext, Error, Result};
use crate::model::ModelUnderTest;
use crate::plan::DivergenceSearch;
use crate::trace::TraceSelection;

fn bad(context: &str, msg: String) -> Error {
    Error::Candle {
        context: context.into(),
        source: candle_core::Error::Msg(msg),
    }
}

/// Prefill of the compared positions `at` (absolute, sorted, inside the span). A model that
/// returns every row makes its one forward and keeps every span row (the comparison picks
/// `at`); one that returns only the last row makes one forward per compared position's prefix
/// and keeps those rows only.
pub fn prefill_at(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    at: &[usize],
    trace: Option<&TraceSelection>,
) -> Result<RunOutput> {
    if model.capabilities().every_row {
        return prefill(model, tokens, prompt_len, trace);
    }
    let start = Instant::now();
    if let Some(&p) = at.iter().find(|&&p| p < prompt_len || p >= tokens.len()) {
        return Err(bad(
            "prefill",
            format!(
                "position {p} lies outside the span {prompt_len}–{}",
                tokens.len() - 1
            ),
        ));
    }
    let (logits, forwards, tokens_fed) =
        last_rows_by_prefix(model, tokens, at.iter().map(|&p| p + 1))?;
    Ok(RunOutput {
        vocab: model.vocab_size(),
        span_start: prompt_len,
        positions: at.len(),
        forwards,
        tokens_fed,
        wall_s: start.elapsed().as_secs_f64(),
        logits,
        trace: Vec::new(),
        kept: None,
    })
}

/// The rows of `out` at the absolute positions `at`, of a run over a span of `span` positions:
/// all of them when the run kept every span row, else the run already holds exactly `at`.
pub fn rows_at(out: &RunOutput, span: usize, at: &[usize]) -> Result<Tensor> {
    if out.positions == at.len() && (out.positions != span || is_whole(out, at)) {
        return Ok(out.logits.clone());
    }
    if out.positions != span {
        return Err(bad(
            "selecting the compared positions",
            format!(
                "the run holds {} rows, neither the span's {span} nor the {} compared",
                out.positions,
                at.len()
            ),
        ));
    }
    select_rows(&out.logits, out.span_start, at)
}

/// The rows at absolute positions `at` of span logits `logits` whose first row is position
/// `span_start`.
pub fn select_rows(logits: &Tensor, span_start: usize, at: &[usize]) -> Result<Tensor> {
    let span = logits.dims().first().copied().unwrap_or(0);
    let idx: Vec<u32> = at
        .iter()
        .map(|&p| {
            p.checked_sub(span_start)
                .filter(|&i| i < span)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| {
                    bad(
                        "selecting the compared positions",
                        format!("position {p} is not in the run's span"),
                    )
                })
        })
        .collect::<Result<_>>()?;
    let ctx = || "selecting the compared positions".to_string();
    let idx = Tensor::new(idx.as_slice(), logits.device()).context(ctx)?;
    logits.index_select(&idx, 0).context(ctx)
}

/// Whether `at` is the whole span of `out` (its rows are then `at` in order).
fn is_whole(out: &RunOutput, at: &[usize]) -> bool {
    at.iter().enumerate().all(|(i, &p)| p == out.span_start + i)
}

/// What the bisection needs of a pair.
pub struct SearchInput<'a> {
    /// The model the runs ran on.
    pub model: &'a dyn ModelUnderTest,
    /// Prompt + span ids.
    pub tokens: &'a [u32],
    /// The prefill run (every span row, or the compared rows only).
    pub prefill: &'a RunOutput,
    /// The run under test (every span row).
    pub decode: &'a RunOutput,
    /// The compared positions.
    pub at: &'a [usize],
    /// The pair's max |diff| limit per position.
    pub limit: f32,
}

/// `first_divergence: search`: from the first divergent compared position `coarse_first`,
/// bisects the positions after the last agreeing compared one (or from the span's start) for
/// the first position over the limit. Each probe needs prefill's row there: read from a
/// prefill that kept every row, else one forward of its prefix. Assumes that the paths, once
/// apart, stay apart up to `coarse_first` (a position that agrees again in between would
/// hide an earlier one).
pub fn search_first_divergence(
    s: &SearchInput,
    coarse_first: Option<usize>,
) -> Result<DivergenceSearch> {
    let mut found = DivergenceSearch {
        coarse_first,
        first_divergent_pos: coarse_first,
        probes: 0,
        prefills: 0,
        prefill_tokens: 0,
    };
    let Some(hi) = coarse_first else {
        return Ok(found);
    };
    let start = s.decode.span_start;
    let span = s.decode.positions;
    let j = s.at.iter().position(|&p| p == hi).unwrap_or(0);
    let (mut lo, mut hi) = (if j == 0 { start } else { s.at[j - 1] + 1 }, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        found.probes += 1;
        let pre = if s.prefill.positions == span {
            s.prefill.logits.narrow(0, mid - start, 1)
        } else {
            let (row, forwards, fed) = last_rows_by_prefix(s.model, s.tokens, [mid + 1])?;
            found.prefills += forwards;
            found.prefill_tokens += fed;
            Ok(row)
        }
        .context(|| format!("prefill row of position {mid}"))?;
        let dec = s
            .decode
            .logits
            .narrow(0, mid - start, 1)
            .context(|| format!("decode row of position {mid}"))?;
        let m = compare::compare_tensors(&pre, &dec, mid, s.limit)
            .map_err(|e| bad(&format!("comparing position {mid}"), e.to_string()))?;
        if m.first_divergent_pos.is_some() || m.non_finite > 0 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    found.first_divergent_pos = Some(hi);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::super::forward::{Instruments, decode};
    use super::*;
    use crate::dtype::RunDtype;
    use crate::engine::{Engine, WeightFormat};
    use crate::model::ModelInfo;
    use candle_core::Device;

    /// `out` with every row from absolute position `from` on shifted by 1: a path that parts
    /// from prefill there.
    fn parted(out: &RunOutput, from: usize) -> RunOutput {
        let (rows, vocab) = out.logits.dims2().unwrap();
        let shift: Vec<f32> = (0..rows * vocab)
            .map(|i| f32::from(u8::from(out.span_start + i / vocab >= from)))
            .collect();
        let shift = Tensor::from_vec(shift, (rows, vocab), &Device::Cpu).unwrap();
        RunOutput {
            logits: (&out.logits + shift).unwrap(),
            ..out.clone()
        }
    }

    #[test]
    fn the_search_finds_the_exact_first_divergent_position_on_both_engines() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let tokens: Vec<u32> = (0..30).map(|i| 3 + (i * 37) % 900).collect();
        let (p, at) = (10, [10, 14, 18, 22, 26]);
        for engine in [Engine::Driftsweep, Engine::CandleTransformers] {
            let model = info
                .load_under_test(
                    engine,
                    WeightFormat::Dequantized,
                    RunDtype::F32,
                    &Device::Cpu,
                )
                .unwrap();
            let model = model.as_ref();
            let pre = prefill_at(model, &tokens, p, &at, None).unwrap();
            let every_row = model.capabilities().every_row;
            assert_eq!(pre.positions, if every_row { 20 } else { 5 });
            let dec = decode(model, &tokens, p, false, Instruments::default()).unwrap();
            // The compared rows of both runs agree to f32 rounding.
            let (a, b) = (
                rows_at(&pre, 20, &at).unwrap(),
                rows_at(&dec, 20, &at).unwrap(),
            );
            let m = compare::compare_tensors(&a, &b, 0, 1e-3).unwrap();
            assert_eq!((m.positions, m.first_divergent_pos), (5, None));
            // Decode parts at 19: the compared positions see 22 first; bisection of 19..=22.
            let dec = parted(&dec, 19);
            let s = SearchInput {
                model,
                tokens: &tokens,
                prefill: &pre,
                decode: &dec,
                at: &at,
                limit: 1e-3,
            };
            let found = search_first_divergence(&s, Some(22)).unwrap();
            assert_eq!(found.first_divergent_pos, Some(19), "{engine}");
            assert_eq!(found.coarse_first, Some(22));
            assert_eq!(found.probes, 2, "{engine}: log2 of 3 candidates");
            // A last-row engine pays one prefix forward per probe; the own decoder none.
            let cost = if every_row { 0 } else { found.probes };
            assert_eq!(found.prefills, cost, "{engine}");
            // Nothing parted among the compared positions: nothing to search.
            let none = search_first_divergence(&s, None).unwrap();
            assert_eq!((none.first_divergent_pos, none.probes), (None, 0));
        }
    }
}
