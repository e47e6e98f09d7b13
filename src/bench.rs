//! `driftsweep bench`: measured costs, so performance claims come with numbers.
//!
//! The trace benchmark times the same decode run (every token one forward, kv_aligned=false)
//! with tracing off, with a sink that records one position, and with a sink that records
//! every tensor at every position; and the same for prefill. Each case runs `repeat` times
//! after one warm-up; the report gives the median and the spread.
//!
//! The floors benchmark measures what the machine can do at best, so that the perf figures
//! can be read against it: decode reads every weight once per token, so its floor is weight
//! bytes ÷ memory bandwidth (the STREAM triad); prefill is matrix products, so its ceiling
//! is the GEMM rate in the run dtype.

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
        .map(|i| 3 + (i * 37) % (info.sizes().vocab_size as u32 - 3))
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
    /// Parameters of the loaded decoder ([`Config::parameter_count`](crate::model::Config::parameter_count)).
    pub params: u64,
    /// Bytes of those parameters in the run dtype (params × bytes per element): what one
    /// decode step reads at least once when the head is tied to the embedding (an untied
    /// embedding is only gathered from, one row per token).
    pub weight_bytes: u64,
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
    /// The largest buffers the phases hold besides the weights.
    pub activations: Activations,
    /// `weight_bytes` plus the activations, MiB: what the peak RSS is read against.
    pub weights_and_activations_mib: f64,
}

/// The largest buffers [`perf`]'s phases hold besides the weights, computed from the
/// model's sizes (the phases run one after the other, so the largest phase counts). Decode
/// steps hold one row of logits and a cache of at most 508 positions: less than prefill.
#[derive(Debug, Clone, Serialize)]
pub struct Activations {
    /// Prefill at the longest span: the span's f32 logits, the head's logits in the run
    /// dtype before the upcast (none in f32), and the f32 KV cache of every token, in bytes.
    pub prefill_bytes: u64,
    /// The comparator case: two runs' f32 logits at span 512, in bytes.
    pub compare_bytes: u64,
    /// The larger of the two.
    pub bytes: u64,
}

impl Activations {
    /// The buffers of a prefill over `tokens` tokens whose last `span` get logits, and of
    /// the comparator at `compare_positions`, for a model of `cfg` in `dtype`.
    pub fn new(
        cfg: &crate::model::Config,
        dtype: candle_core::DType,
        tokens: usize,
        span: usize,
        compare_positions: usize,
    ) -> Self {
        let size = dtype.size_in_bytes() as u64;
        let f32_logits = |rows: usize| (rows * cfg.vocab_size * 4) as u64;
        let head = if dtype == candle_core::DType::F32 {
            0
        } else {
            (span * cfg.vocab_size) as u64 * size
        };
        // The own decoder's cache holds K/V widened to f32 whatever the run dtype
        // (`append_kv` in src/model/layers/attention.rs).
        let kv = (cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim() * tokens)
            as u64
            * 4;
        let prefill_bytes = f32_logits(span) + head + kv;
        let compare_bytes = 2 * f32_logits(compare_positions);
        Activations {
            prefill_bytes,
            compare_bytes,
            bytes: prefill_bytes.max(compare_bytes),
        }
    }
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
    /// CPU time of one pair, all threads, averaged over the timed repetitions (Linux
    /// /proc, 10 ms ticks; None elsewhere): steadier than wall time on a loaded machine.
    pub cpu_ms: Option<f64>,
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
    let info = ModelInfo::inspect(source)?;
    let dev = &device.device;
    let mut loads = Vec::new();
    let mut model = info.load(dtype, dev)?; // warm-up: page cache, allocator
    for _ in 0..repeat {
        // The previous load goes first: a run holds one model, and so does the peak RSS.
        drop(model);
        let t = Instant::now();
        model = info.load(dtype, dev)?;
        loads.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let vocab = info.sizes().vocab_size;
    let ids = |n: usize| -> Vec<u32> {
        (0..n as u32)
            .map(|i| 3 + (i * 37) % (vocab as u32 - 3))
            .collect()
    };
    let mut prefill = Vec::new();
    for span in PERF_SPANS {
        let tokens = ids(PERF_PROMPT + span);
        let (ms, _) = time_it(repeat, || {
            run::prefill(&model, &tokens, PERF_PROMPT, None)?;
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
    let mut decode_steps = Vec::new();
    for position in [10, 500] {
        decode_steps.push(decode_case(&model, &ids(position + 8), position, repeat)?);
    }
    let compare = compare_case(vocab, dev, repeat)?;
    let params = info.family.parameter_count();
    let weight_bytes = params * dtype.candle().size_in_bytes() as u64;
    let longest = PERF_SPANS[PERF_SPANS.len() - 1];
    let activations = Activations::new(
        model.config(),
        dtype.candle(),
        PERF_PROMPT + longest,
        longest,
        compare.positions,
    );
    Ok(PerfReport {
        model: source.to_string(),
        dtype,
        device: device.name.clone(),
        params,
        weight_bytes,
        load_ms: median(loads),
        prefill,
        decode_steps,
        compare,
        peak_rss_mib: peak_rss_mib(),
        weights_and_activations_mib: (weight_bytes + activations.bytes) as f64 / MIB,
        activations,
    })
}

/// Bytes in a MiB.
const MIB: f64 = (1 << 20) as f64;

/// The spans of [`perf`]'s prefill cases, shortest first.
const PERF_SPANS: [usize; 3] = [32, 128, 512];

/// The prompt length of [`perf`]'s prefill cases (the B3.70 ChatML prompt's).
const PERF_PROMPT: usize = 31;

/// A step at `position`: the cache is filled with `position` tokens by one (untimed)
/// forward, then the eight single-token steps after it are timed one by one.
fn decode_case(
    model: &crate::model::Decoder,
    tokens: &[u32],
    position: usize,
    repeat: usize,
) -> Result<DecodeCase> {
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
    Ok(DecodeCase {
        position,
        median_ms: median(steps),
    })
}

/// The comparator on two runs' logits at span 512 that differ by a little seeded noise, as
/// drift does, on the run device, where the sweep compares them.
fn compare_case(vocab: usize, dev: &Device, repeat: usize) -> Result<CompareCase> {
    let positions = 512;
    let a: Vec<f32> = (0..positions * vocab)
        .map(|i| (unit_hash(i as u64, 1) - 0.5) * 20.0)
        .collect();
    let b: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, x)| x + (unit_hash(i as u64, 2) - 0.5) * 1e-3)
        .collect();
    let on_device = |v: Vec<f32>| {
        candle_core::Tensor::from_vec(v, (positions, vocab), dev)
            .context(|| "bench: logits to the device".into())
    };
    let (a, b) = (on_device(a)?, on_device(b)?);
    let (mut calls, mut cpu_start) = (0, None);
    let (ms, _) = time_it(repeat, || {
        // The first call is time_it's warm-up: CPU time counts from the second on.
        calls += 1;
        if calls == 2 {
            cpu_start = process_cpu_ms();
        }
        crate::compare::compare_tensors(&a, &b, PERF_PROMPT, 1.0).map_err(|e| {
            crate::Error::Candle {
                context: "bench: compare".into(),
                source: candle_core::Error::Msg(e.to_string()),
            }
        })?;
        Ok(0)
    })?;
    let cpu_ms = cpu_start
        .zip(process_cpu_ms())
        .map(|(t0, t1)| (t1 - t0) / repeat as f64);
    let median_ms = ms[ms.len() / 2];
    Ok(CompareCase {
        positions,
        vocab,
        median_ms,
        gb_per_s: (2 * positions * vocab * 4) as f64 / (median_ms / 1e3) / 1e9,
        cpu_ms,
    })
}

/// The comparator case alone (`driftsweep bench --suite compare`): no model, the perf suite's
/// span of 512 and `vocab` (SmolLM2's 49,152 by default).
pub fn compare_only(vocab: usize, device: &run::OpenDevice, repeat: usize) -> Result<CompareCase> {
    compare_case(vocab, &device.device, repeat)
}

/// User plus system CPU time of this process, every thread, in ms (Linux /proc/self/stat,
/// whose ticks are 10 ms on every Linux: USER_HZ is 100).
fn process_cpu_ms() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(11); // utime is field 14, the 12th after the name
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

/// A value in [0, 1) from `i` and `salt` (splitmix64's finaliser): every row of the
/// comparator's case spreads like logits, where `i as f32 * c` runs out of fraction bits
/// past a few million and leaves rows of two values.
fn unit_hash(i: u64, salt: u64) -> f32 {
    let mut z = i
        .wrapping_add(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Floating-point operations of an (m × k) · (k × n) matrix product: one multiply and one
/// add per inner-product term.
pub fn gemm_flops(m: usize, k: usize, n: usize) -> f64 {
    2.0 * m as f64 * k as f64 * n as f64
}

/// Bytes in each of the triad's three arrays: 64 MiB, far beyond any last-level cache this
/// runs on, so the figure is DRAM bandwidth rather than cache bandwidth.
pub const TRIAD_ARRAY_BYTES: usize = 64 << 20;

/// The STREAM triad's memory bandwidth.
#[derive(Debug, Clone, Serialize)]
pub struct TriadReport {
    /// GB/s (1e9 bytes) with the threads candle uses, best of the repetitions.
    pub gb_per_s: f64,
    /// GB/s on one thread, best of the repetitions.
    pub gb_per_s_1thread: f64,
    /// Bytes counted per triad: three arrays (two read, one written). As STREAM does, the
    /// write-allocate read of the destination's cache lines is not counted, so the traffic
    /// the memory really carries is up to 4/3 of this.
    pub bytes: u64,
}

/// One GEMM, or why its dtype does not run on the device.
#[derive(Debug, Clone, Serialize)]
pub struct GemmCase {
    /// Element type of both operands and the product.
    pub dtype: RunDtype,
    /// Rows of the left operand.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of the right operand.
    pub n: usize,
    /// 2·m·k·n ÷ the best time, in 1e9 FLOP/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflop_per_s: Option<f64>,
    /// The best time of one product, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_ms: Option<f64>,
    /// Why it did not run (the device's error), when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// What `driftsweep bench --suite floors` measures: the machine's physical floors, beside
/// which the perf suite's decode (memory-bound) and prefill (compute-bound) figures are read.
#[derive(Debug, Clone, Serialize)]
pub struct FloorsReport {
    /// Always `floors` (tells this JSON from a perf report's).
    pub suite: &'static str,
    /// Device name of the GEMMs.
    pub device: String,
    /// Threads of the triad: the number candle's CPU kernels use.
    pub threads: usize,
    /// Host memory bandwidth (the triad runs on the CPU whatever the device: on a GPU it is
    /// not the bandwidth the model's weights are read at).
    pub triad: TriadReport,
    /// Square products at 1024 and 2048 and the prefill-shaped one, in each dtype.
    pub gemm: Vec<GemmCase>,
}

/// `a[i] = b[i] + s·c[i]`, with `a`, `b` and `c` split into `threads` contiguous chunks, one
/// per scoped thread, so each thread streams its own stretch of memory.
pub fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32, threads: usize) {
    assert!(
        a.len() == b.len() && b.len() == c.len(),
        "triad: lengths differ"
    );
    let chunk = a.len().div_ceil(threads.max(1)).max(1);
    let kernel = |a: &mut [f32], b: &[f32], c: &[f32]| {
        // Zipped iterators: no bounds checks, so the loop vectorizes.
        for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
            *x = y + s * z;
        }
    };
    if threads <= 1 {
        kernel(a, b, c);
        return;
    }
    std::thread::scope(|scope| {
        for ((a, b), c) in a
            .chunks_mut(chunk)
            .zip(b.chunks(chunk))
            .zip(c.chunks(chunk))
        {
            scope.spawn(move || kernel(a, b, c));
        }
    });
}

/// Best GB/s of the triad on `threads` threads over `repeat` timed runs after one warm-up.
fn triad_gb_per_s(a: &mut [f32], b: &[f32], c: &[f32], threads: usize, repeat: usize) -> f64 {
    let bytes = (3 * std::mem::size_of_val(a)) as f64;
    triad(a, b, c, 3.0, threads); // warm-up: pages faulted in, threads' stacks made
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let t = Instant::now();
        triad(std::hint::black_box(&mut *a), b, c, 3.0, threads);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&a[a.len() / 2]);
    bytes / best / 1e9
}

/// Best time in seconds of one (m × k) · (k × n) product in `dtype` on `dev`, or the device's
/// error when the dtype does not run there.
fn gemm_best_s(
    dev: &Device,
    dtype: RunDtype,
    (m, k, n): (usize, usize, usize),
    repeat: usize,
) -> candle_core::Result<f64> {
    let a = candle_core::Tensor::randn(0f32, 1.0, (m, k), dev)?.to_dtype(dtype.candle())?;
    let b = candle_core::Tensor::randn(0f32, 1.0, (k, n), dev)?.to_dtype(dtype.candle())?;
    // GPUs queue kernels: time only after they have finished.
    let once = |times: usize| -> candle_core::Result<f64> {
        let t = Instant::now();
        for _ in 0..times {
            std::hint::black_box(a.matmul(&b)?);
        }
        dev.synchronize()?;
        Ok(t.elapsed().as_secs_f64() / times as f64)
    };
    once(1)?; // warm-up: library handles, kernels, allocator
    // A product a GPU finishes in microseconds is dominated by launch and timer overhead:
    // repeat it within each timed run until that run lasts about 50 ms.
    let inner = (0.05 / once(1)?.max(1e-7)).clamp(1.0, 1000.0) as usize;
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        best = best.min(once(inner)?);
    }
    Ok(best)
}

/// The triad's bandwidth (all of candle's threads, and one), then GEMMs through candle on
/// `device` in f32, bf16 and f16: square 1024 and 2048, and (543 × 576) · (576 × 1536), the
/// MLP up-projection of SmolLM2 prefill at span 512 after the 31-token prompt. Each figure
/// is the best of `repeat` after one warm-up: a floor is what the machine can do, not what it
/// usually does.
pub fn floors(device: &run::OpenDevice, repeat: usize) -> Result<FloorsReport> {
    let threads = candle_core::utils::get_num_threads();
    let len = TRIAD_ARRAY_BYTES / std::mem::size_of::<f32>();
    let b: Vec<f32> = (0..len).map(|i| (i % 1000) as f32).collect();
    let c: Vec<f32> = (0..len).map(|i| (i % 7) as f32).collect();
    let mut a = vec![0f32; len];
    let gb_per_s = triad_gb_per_s(&mut a, &b, &c, threads, repeat);
    let gb_per_s_1thread = triad_gb_per_s(&mut a, &b, &c, 1, repeat);
    drop((a, b, c));

    let mut gemm = Vec::new();
    for dtype in RunDtype::ALL {
        for (m, k, n) in [(1024, 1024, 1024), (2048, 2048, 2048), (543, 576, 1536)] {
            let r = gemm_best_s(&device.device, dtype, (m, k, n), repeat);
            gemm.push(GemmCase {
                dtype,
                m,
                k,
                n,
                gflop_per_s: r.as_ref().ok().map(|s| gemm_flops(m, k, n) / s / 1e9),
                best_ms: r.as_ref().ok().map(|s| s * 1e3),
                unsupported: r.err().map(|e| e.to_string()),
            });
        }
    }
    Ok(FloorsReport {
        suite: "floors",
        device: device.name.clone(),
        threads,
        triad: TriadReport {
            gb_per_s,
            gb_per_s_1thread,
            bytes: 3 * TRIAD_ARRAY_BYTES as u64,
        },
        gemm,
    })
}

#[cfg(test)]
mod tests {

    /// The comparator case's values spread over [0, 1) in every row, far past where
    /// `i as f32` loses its fraction (negative control: that old formula gives two values).
    #[test]
    fn the_compare_case_spreads_in_every_row() {
        let vocab = 49_152u64;
        for row in [0u64, 300, 511] {
            let vals: Vec<f32> = (0..vocab).map(|c| unit_hash(row * vocab + c, 1)).collect();
            let distinct: std::collections::BTreeSet<u32> =
                vals.iter().map(|v| v.to_bits()).collect();
            assert!(distinct.len() > 40_000, "row {row}: {}", distinct.len());
            assert!(vals.iter().all(|v| (0.0..1.0).contains(v)));
        }
        let old: std::collections::BTreeSet<u32> = (0..vocab)
            .map(|c| (((511 * vocab + c) as f32 * 0.618_034).fract()).to_bits())
            .collect();
        assert!(old.len() < 10, "{}", old.len());
    }
    use super::*;

    #[test]
    fn triad_computes_every_element_whatever_the_split() {
        // 1001 elements: chunks that do not divide evenly, and more threads than elements.
        let b: Vec<f32> = (0..1001).map(|i| i as f32).collect();
        let c: Vec<f32> = (0..1001).map(|i| (i % 13) as f32 - 6.0).collect();
        for threads in [1, 2, 3, 8, 2000] {
            let mut a = vec![f32::NAN; b.len()];
            triad(&mut a, &b, &c, 0.5, threads);
            for i in 0..a.len() {
                assert_eq!(a[i], b[i] + 0.5 * c[i], "threads {threads}, element {i}");
            }
        }
        let mut empty: [f32; 0] = [];
        triad(&mut empty, &[], &[], 1.0, 4);
    }

    #[test]
    fn gemm_flops_counts_a_multiply_and_an_add_per_term() {
        assert_eq!(gemm_flops(1024, 1024, 1024), 2.0 * 1024f64.powi(3));
        assert_eq!(gemm_flops(543, 576, 1536), 2.0 * 543.0 * 576.0 * 1536.0);
        assert_eq!(gemm_flops(1, 1, 1), 2.0);
    }

    #[test]
    fn activations_count_the_largest_phase() {
        let cfg = crate::model::builtin::config();
        let (v, l) = (cfg.vocab_size as u64, cfg.num_hidden_layers as u64);
        let kv_row = 2 * (cfg.num_key_value_heads * cfg.head_dim()) as u64;
        let f32 = Activations::new(&cfg, candle_core::DType::F32, 543, 512, 512);
        assert_eq!(f32.prefill_bytes, 512 * v * 4 + l * kv_row * 543 * 4);
        assert_eq!(f32.compare_bytes, 2 * 512 * v * 4);
        let bf16 = Activations::new(&cfg, candle_core::DType::BF16, 543, 512, 512);
        // The head's bf16 logits live next to their f32 upcast; the cache is f32 in every
        // run dtype.
        assert_eq!(bf16.prefill_bytes, 512 * v * (4 + 2) + l * kv_row * 543 * 4);
        assert_eq!(bf16.compare_bytes, f32.compare_bytes);
        for a in [&f32, &bf16] {
            assert_eq!(a.bytes, a.prefill_bytes.max(a.compare_bytes));
        }
        // A long prefill outgrows the comparator.
        let long = Activations::new(&cfg, candle_core::DType::F32, 4000, 3000, 512);
        assert_eq!(long.bytes, long.prefill_bytes);
        assert!(long.bytes > long.compare_bytes);
    }

    #[test]
    fn decoder_params_match_the_generated_tensors() {
        // The built-in recipe writes exactly the tensors the decoder loads, for every
        // variant it knows: biases, Q/K norms, an untied head.
        let base = crate::model::builtin::config();
        let variants = [
            base.clone(),
            crate::model::Config {
                attention_bias: true,
                qk_norm: true,
                tie_word_embeddings: false,
                ..base
            },
        ];
        for cfg in variants {
            let counted: usize = crate::model::builtin::weights(&cfg)
                .values()
                .map(|t| t.elem_count())
                .sum();
            assert_eq!(cfg.parameter_count(), counted as u64);
        }
    }
}
