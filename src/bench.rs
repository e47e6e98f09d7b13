//! `driftsweep bench`: measured costs, so performance claims come with numbers.
//!
//! The trace benchmark times the same decode run (every token one forward, kv_aligned=false)
//! with tracing off, with a sink that records one position, and with a sink that records
//! every tensor at every position; and the same for prefill. Each case runs `repeat` times
//! after one warm-up; the report gives the median and the spread.

use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::dtype::RunDtype;
use crate::error::{CandleContext, Result};
use crate::model::ModelInfo;
use crate::run;
use crate::trace::{TensorName, TraceSelection};

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
                    run::decode(
                        &model,
                        &ids,
                        prompt,
                        false,
                        run::Instruments {
                            trace: sel,
                            ..Default::default()
                        },
                    )?
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

/// What `driftsweep bench --suite perf` measures for one (model, dtype, device).
#[derive(Debug, Clone, Serialize)]
pub struct PerfReport {
    /// Model source.
    pub model: String,
    /// Run dtype.
    pub dtype: RunDtype,
    /// Device name.
    pub device: String,
    /// Weight load (read, dequantize or generate, cast, move to the device), median ms.
    pub load_ms: f64,
    /// Prefill over prompt + span tokens, per span.
    pub prefill: Vec<PrefillCase>,
    /// One decode step at a position (the cache holds every earlier position).
    pub decode_steps: Vec<DecodeCase>,
    /// The comparator on a span × vocab pair of logits.
    pub compare: CompareCase,
    /// Peak resident memory of the process so far (Linux VmHWM), MiB.
    pub peak_rss_mib: Option<f64>,
}

/// One prefill length.
#[derive(Debug, Clone, Serialize)]
pub struct PrefillCase {
    /// Span after the prompt.
    pub span: usize,
    /// Tokens in the forward (prompt + span).
    pub tokens: usize,
    /// Median wall time of a whole prefill run (forward; the span logits stay where the comparator reads them), ms.
    pub median_ms: f64,
    /// Tokens per second at the median.
    pub tokens_per_s: f64,
}

/// One decode position.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeCase {
    /// Absolute position of the step's token.
    pub position: usize,
    /// Median wall time of one step (forward of one token, its logits row to the host), ms.
    pub median_ms: f64,
}

/// The comparator's cost.
#[derive(Debug, Clone, Serialize)]
pub struct CompareCase {
    /// Span positions.
    pub positions: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// Median ms for one pair.
    pub median_ms: f64,
    /// Logits read per second (both runs, f32), GB/s.
    pub gb_per_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident set size of this process, from /proc (None elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Load time, prefill at spans 32/128/512 after a 31-token prompt (the B3.70 shapes), decode
/// step time at positions 10 and 500, and the comparator at span 512, each the median of
/// `repeat` after one warm-up.
pub fn perf(
    source: &str,
    dtype: RunDtype,
    device: &run::OpenDevice,
    repeat: usize,
) -> Result<PerfReport> {
    const PROMPT: usize = 31;
    let info = ModelInfo::inspect(source)?;
    let dev = &device.device;
    let mut loads = Vec::new();
    let mut model = info.load(dtype, dev)?; // warm-up: page cache, allocator
    for _ in 0..repeat {
        let t = Instant::now();
        model = info.load(dtype, dev)?;
        loads.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let vocab = info.config.vocab_size;
    let ids = |n: usize| -> Vec<u32> {
        (0..n as u32)
            .map(|i| 3 + (i * 37) % (vocab as u32 - 3))
            .collect()
    };

    let mut prefill = Vec::new();
    for span in [32, 128, 512] {
        let tokens = ids(PROMPT + span);
        let (ms, _) = time_it(repeat, || {
            run::prefill(&model, &tokens, PROMPT, None)?;
            Ok(0)
        })?;
        let median_ms = ms[ms.len() / 2];
        prefill.push(PrefillCase {
            span,
            tokens: tokens.len(),
            median_ms,
            tokens_per_s: tokens.len() as f64 / (median_ms / 1e3),
        });
    }

    // A step at position p: the cache is filled with p tokens by one (untimed) forward, then
    // eight single-token steps are timed one by one from p on.
    let mut decode_steps = Vec::new();
    for position in [10, 500] {
        let tokens = ids(position + 8);
        let mut steps = Vec::new();
        for rep in 0..=repeat {
            let mut cache = model.new_cache(tokens.len());
            model
                .forward(&tokens[..position], &mut cache)
                .context(|| format!("bench: filling the cache to position {position}"))?;
            for &tok in &tokens[position..] {
                let t = Instant::now();
                model
                    .forward(&[tok], &mut cache)
                    .and_then(|row| row.to_vec2::<f32>())
                    .context(|| format!("bench: decode step near position {position}"))?;
                if rep > 0 {
                    steps.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        decode_steps.push(DecodeCase {
            position,
            median_ms: median(steps),
        });
    }

    // Two runs' logits that differ by a little seeded noise, as drift does.
    let positions = 512;
    let a: Vec<f32> = (0..positions * vocab)
        .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 20.0)
        .collect();
    let b: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, x)| x + ((i as f32 * 0.414_213_6).fract() - 0.5) * 1e-3)
        .collect();
    // On the run device, where the sweep compares them.
    let on_device = |v: Vec<f32>| {
        candle_core::Tensor::from_vec(v, (positions, vocab), dev)
            .context(|| "bench: logits to the device".into())
    };
    let (a, b) = (on_device(a)?, on_device(b)?);
    let (ms, _) = time_it(repeat, || {
        crate::compare::compare_tensors(&a, &b, PROMPT, 1.0).map_err(|e| crate::Error::Candle {
            context: "bench: compare".into(),
            source: candle_core::Error::Msg(e.to_string()),
        })?;
        Ok(0)
    })?;
    let median_ms = ms[ms.len() / 2];
    let compare = CompareCase {
        positions,
        vocab,
        median_ms,
        gb_per_s: (2 * positions * vocab * 4) as f64 / (median_ms / 1e3) / 1e9,
    };
    Ok(PerfReport {
        model: source.to_string(),
        dtype,
        device: device.name.clone(),
        load_ms: median(loads),
        prefill,
        decode_steps,
        compare,
        peak_rss_mib: peak_rss_mib(),
    })
}
