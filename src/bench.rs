//! `driftsweep bench`: measured costs, so performance claims come with numbers.
//!
//! The trace benchmark times the same decode run (every token one forward, kv_aligned=false)
//! with tracing off, with a sink that records one position, and with a sink that records
//! every tensor at every position; and the same for prefill. Each case runs `repeat` times
//! after one warm-up; the report gives the median and the spread.

use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::config::RunDtype;
use crate::error::Result;
use crate::model::ModelInfo;
use crate::run;
use crate::trace::{Injection, TensorName, TraceSelection};

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchCase {
    /// prefill or decode.
    pub mode: &'static str,
    /// What was traced.
    pub tracing: &'static str,
    /// Median wall time, milliseconds.
    pub median_ms: f64,
    /// Fastest, milliseconds.
    pub min_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Records per run.
    pub records: usize,
}

fn time_it(repeat: usize, mut f: impl FnMut() -> Result<usize>) -> Result<(Vec<f64>, usize)> {
    let records = f()?; // warm-up
    let mut ms = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms, records))
}

/// Times prefill and decode of `tokens` random ids with tracing off and on.
pub fn trace_overhead(
    source: &str,
    dtype: RunDtype,
    tokens: usize,
    repeat: usize,
) -> Result<Vec<BenchCase>> {
    let info = ModelInfo::inspect(source)?;
    let model = info.load(dtype, &Device::Cpu)?;
    let ids: Vec<u32> = (0..tokens as u32)
        .map(|i| 3 + (i * 37) % (info.config.vocab_size as u32 - 3))
        .collect();
    let prompt = tokens / 4;
    let all: std::collections::BTreeSet<TensorName> = TensorName::ALL.into_iter().collect();
    let one = TraceSelection {
        layers: None,
        tensors: all.clone(),
        positions: [tokens - 1].into(),
    };
    let every = TraceSelection {
        layers: None,
        tensors: all,
        positions: (0..tokens).collect(),
    };
    let cases: [(&str, Option<&TraceSelection>); 3] = [
        ("off", None),
        ("last position", Some(&one)),
        ("every position", Some(&every)),
    ];
    let mut out = Vec::new();
    for mode in ["prefill", "decode"] {
        for (tracing, sel) in cases {
            let (ms, records) = time_it(repeat, || {
                let o = if mode == "prefill" {
                    run::prefill(&model, &ids, prompt, sel)?
                } else {
                    run::decode(&model, &ids, prompt, false, sel, &Injection::default())?
                };
                Ok(o.trace.len())
            })?;
            out.push(BenchCase {
                mode,
                tracing,
                median_ms: ms[ms.len() / 2],
                min_ms: ms[0],
                max_ms: ms[ms.len() - 1],
                records,
            });
        }
    }
    Ok(out)
}
