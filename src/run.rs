//! One run: the prefill path or the decode path over a pair's tokens, on a loaded model, and
//! the choice of the device it runs on.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::config::DeviceSpec;
use crate::dtype::RunDtype;
use crate::error::{CandleContext, Error, Result};
use crate::model::{Fault, ModelUnderTest, Probes, Rows, Sequence};
use crate::path::RunPath;
use crate::trace::{Injection, TraceRecord, TraceSelection, TraceSink};

/// What a run hands to the comparator.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// f32 logits of the span positions, `[span × vocab]`, on the device that computed them:
    /// the comparator reads them there, and they reach the host only when they are kept.
    pub logits: Tensor,
    /// Vocabulary size (row width).
    pub vocab: usize,
    /// Absolute position of the first row (= prompt length).
    pub span_start: usize,
    /// Number of rows.
    pub positions: usize,
    /// Forward passes made.
    pub forwards: usize,
    /// Tokens fed through the model.
    pub tokens_fed: usize,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// Trace records, when the run was traced.
    pub trace: Vec<TraceRecord>,
}

impl RunOutput {
    /// The logits in host memory, row-major (a copy, for storing them).
    pub fn host_logits(&self) -> Result<Vec<f32>> {
        self.logits
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .context(|| "copying the logits to the host".into())
    }
}

/// How a run is instrumented: what to trace, and the fault its decode steps carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Instruments<'a> {
    /// Record these tensors and positions.
    pub trace: Option<&'a TraceSelection>,
    /// The fault injected into decode (never into prefill).
    pub fault: Injection,
}

impl Instruments<'_> {
    fn path_fault(&self) -> Fault {
        Fault {
            scale: self.fault.scale,
            position_shift: self.fault.position_shift,
            window_shift: self.fault.window_shift,
            chunk_position_shift: self.fault.chunk_position_shift,
            cross_row_cache: self.fault.cross_row_cache,
        }
    }
}

/// The probes of `seq`, or an error naming what needed them (plans skip such pairs before
/// they reach a run, so this only guards library callers).
fn probes<'s>(seq: &'s mut dyn Sequence, what: &str) -> Result<&'s mut Probes> {
    seq.probes().ok_or_else(|| Error::Candle {
        context: what.into(),
        source: candle_core::Error::Msg("this model has no layer taps or faults".into()),
    })
}

/// Feeds `tokens` and returns the logits of `rows`, which the caller needs: a model that
/// returns none for them is an error with `what` as its context.
fn logits_of(
    seq: &mut dyn Sequence,
    tokens: &[u32],
    rows: Rows,
    what: impl Fn() -> String,
) -> Result<Tensor> {
    seq.forward(tokens, rows)
        .context(&what)?
        .ok_or_else(|| Error::Candle {
            context: what(),
            source: candle_core::Error::Msg("the model returned no logits".into()),
        })
}

/// The records a traced sequence collected.
fn take_trace(seq: &mut dyn Sequence) -> Vec<TraceRecord> {
    seq.probes()
        .and_then(|p| p.trace.take())
        .map(|s| s.records)
        .unwrap_or_default()
}

/// Prefill: one forward over prompt + span at offset 0; keep the span positions' logits.
/// With `trace`, records the selection during that forward. A model that returns only the
/// last row's logits gets one fresh forward per prefix length instead (span forwards).
pub fn prefill(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    trace: Option<&TraceSelection>,
) -> Result<RunOutput> {
    let start = Instant::now();
    let span = tokens.len() - prompt_len;
    if span == 0 {
        return Err(Error::Candle {
            context: "prefill".into(),
            source: candle_core::Error::Msg("the span is empty".into()),
        });
    }
    let ctx = || format!("prefill forward over {} tokens", tokens.len());
    if !model.capabilities().every_row {
        // No sequence is held here: each prefix makes its own (some models run one sequence
        // at a time).
        let (logits, forwards, tokens_fed) = last_rows_by_prefix(model, tokens, prompt_len)?;
        return Ok(RunOutput {
            vocab: model.vocab_size(),
            span_start: prompt_len,
            positions: span,
            forwards,
            tokens_fed,
            wall_s: start.elapsed().as_secs_f64(),
            logits,
            trace: Vec::new(),
        });
    }
    let mut seq = model.sequence(tokens.len()).context(ctx)?;
    if let Some(sel) = trace {
        probes(seq.as_mut(), "prefill")?.trace = Some(TraceSink::new(sel.clone()));
    }
    let logits = logits_of(seq.as_mut(), tokens, Rows::From(prompt_len), ctx)?;
    Ok(RunOutput {
        vocab: model.vocab_size(),
        span_start: prompt_len,
        positions: span,
        forwards: 1,
        tokens_fed: tokens.len(),
        wall_s: start.elapsed().as_secs_f64(),
        logits,
        trace: take_trace(seq.as_mut()),
    })
}

/// Prefill logits of a model that returns only the last row: a fresh sequence per prefix
/// `tokens[..p + 1]` for every span position p. Quadratic in the span: the plan states the
/// cost in forward tokens.
fn last_rows_by_prefix(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
) -> Result<(Tensor, usize, usize)> {
    let mut rows = Vec::with_capacity(tokens.len() - prompt_len);
    let mut fed = 0;
    for end in prompt_len + 1..=tokens.len() {
        let ctx = || format!("prefill forward over the first {end} tokens");
        let mut seq = model.sequence(end).context(ctx)?;
        let row = logits_of(seq.as_mut(), &tokens[..end], Rows::last(end), ctx)?;
        rows.push(row);
        fed += end;
    }
    let logits = Tensor::cat(&rows, 0).context(|| "joining the prefill rows".into())?;
    Ok((logits, rows.len(), fed))
}

/// Decode: the run under test on [`RunPath::Decode`] (see [`under_test`]).
pub fn decode(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    kv_aligned: bool,
    inst: Instruments,
) -> Result<RunOutput> {
    under_test(
        model,
        tokens,
        prompt_len,
        kv_aligned,
        RunPath::Decode,
        &[],
        inst,
    )
}

/// The run under test: the span logits of `tokens` computed along `path`.
///
/// - decode: build the prompt's cache as `kv_aligned` says, then one forward per span token at
///   its own offset.
/// - chunked:C: the same cache for kv_aligned = true; then the rest of the sequence (all of it
///   for kv_aligned = false) in chunks of C at the cache's offset, every chunk's rows kept.
/// - batched:B: decode of `tokens` as row 0 of a batch whose other rows are `others` (B − 1
///   sequences of the same length), all fed in lockstep.
/// - batched_prefill:B: one forward over the batch.
///
/// kv_aligned = true: the span must start from the cache prefill computed (docs/design.md,
/// "kv_aligned"), so the run makes prefill's own forward over prompt + span (for a batch, each
/// row's own forward alone, the caches then side by side) and keeps the prompt's K/V. A
/// separate forward over the prompt alone would run the projections at a different matrix
/// height, which on GPU kernels can round differently.
///
/// With a trace selection, records prompt positions from whichever forward computed them and
/// span positions from the path's forwards. The fault perturbs every forward of the path
/// (never the kv_aligned cache forward, which is prefill's computation).
pub fn under_test(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    kv_aligned: bool,
    path: RunPath,
    others: &[Vec<u32>],
    inst: Instruments,
) -> Result<RunOutput> {
    let start = Instant::now();
    let span = tokens.len() - prompt_len;
    let bad = |what: &str, msg: String| Error::Candle {
        context: what.into(),
        source: candle_core::Error::Msg(msg),
    };
    if inst.fault.fail_span == Some(span) {
        return Err(bad(
            &format!("{} at span {span}", path.run_name()),
            "injected failure (inject.fail_span)".into(),
        ));
    }
    if others.len() + 1 != path.batch() || others.iter().any(|o| o.len() != tokens.len()) {
        return Err(bad(
            &format!("path {path}"),
            format!(
                "needs {} other sequences of {} tokens, was given {}",
                path.batch() - 1,
                tokens.len(),
                others.len()
            ),
        ));
    }
    let mut rows: Vec<&[u32]> = vec![tokens];
    rows.extend(others.iter().map(Vec::as_slice));
    let every_row = model.capabilities().every_row;
    let fed = match path {
        RunPath::Decode | RunPath::Batched(_) => {
            stepwise(model, &rows, prompt_len, kv_aligned, inst)?
        }
        RunPath::Chunked(c) if every_row => {
            chunked(model, tokens, prompt_len, kv_aligned, c, inst)?
        }
        RunPath::Chunked(c) => chunked_by_prefix(model, tokens, prompt_len, c)?,
        RunPath::BatchedPrefill(_) if every_row => batched_prefill(model, &rows, prompt_len, inst)?,
        RunPath::BatchedPrefill(_) => batched_prefill_by_prefix(model, &rows, prompt_len)?,
    };
    Ok(RunOutput {
        logits: fed.logits,
        vocab: model.vocab_size(),
        span_start: prompt_len,
        positions: span,
        forwards: fed.forwards,
        tokens_fed: fed.tokens_fed,
        wall_s: start.elapsed().as_secs_f64(),
        trace: fed.trace,
    })
}

/// What a path's forwards produced: row 0's span logits and the work done.
struct Fed {
    logits: Tensor,
    forwards: usize,
    tokens_fed: usize,
    trace: Vec<TraceRecord>,
}

/// Sets a sequence's trace sink and says whether the path's fault is active (a model without
/// probes never gets here with either: plans refuse that combination).
fn instrument(seq: &mut dyn Sequence, inst: &Instruments, what: &str) -> Result<bool> {
    let faulty = inst.path_fault().is_active();
    if inst.trace.is_some() || faulty {
        probes(seq, what)?.trace = inst.trace.cloned().map(TraceSink::new);
    }
    Ok(faulty)
}

/// The kv_aligned cache: prefill's own forward over every row's whole sequence (each row
/// alone), cut back to the prompt. Traces record the prompt positions from it.
fn prompt_cache(seq: &mut dyn Sequence, all: &[u32], prompt_len: usize, what: &str) -> Result<()> {
    if let Some(sink) = seq.probes().and_then(|p| p.trace.as_mut()) {
        sink.set_window(0..prompt_len);
    }
    // Only the cache is used: no logits are computed unless the forward is traced.
    seq.forward_each(all)
        .context(|| format!("{what}: prefill forward over {} tokens", all.len()))?;
    if let Some(sink) = seq.probes().and_then(|p| p.trace.as_mut()) {
        sink.set_window(0..usize::MAX);
    }
    seq.truncate(prompt_len)
        .context(|| format!("{what}: keeping the prompt's {prompt_len} cached positions"))
}

/// Decode and batched decode: `rows` (row 0 the sequence of interest) fed one position at a
/// time in lockstep; row 0's span rows kept.
fn stepwise(
    model: &dyn ModelUnderTest,
    rows: &[&[u32]],
    prompt_len: usize,
    kv_aligned: bool,
    inst: Instruments,
) -> Result<Fed> {
    let (b, n) = (rows.len(), rows[0].len());
    let what = if b == 1 { "decode" } else { "batched decode" };
    let mut seq = model
        .batch(b, n)
        .context(|| format!("{what}: a new batch of {b}"))?;
    let faulty = instrument(seq.as_mut(), &inst, what)?;
    let (mut forwards, mut tokens_fed) = (0, 0);
    if kv_aligned {
        prompt_cache(seq.as_mut(), &rows.concat(), prompt_len, what)?;
        forwards += b;
        tokens_fed += b * n;
    }
    if faulty {
        probes(seq.as_mut(), what)?.fault = inst.path_fault();
    }
    let column = |pos: usize| -> Vec<u32> { rows.iter().map(|r| r[pos]).collect() };
    if !kv_aligned {
        for pos in 0..prompt_len {
            seq.forward(&column(pos), Rows::None)
                .context(|| format!("{what}: prompt token at position {pos}"))?;
            forwards += 1;
        }
        tokens_fed += b * prompt_len;
    }
    // Each step's row stays on the device (no per-step copy to the host, no sync); the rows
    // are joined once at the end.
    let mut out = Vec::with_capacity(n - prompt_len);
    for pos in prompt_len..n {
        let ctx = || format!("{what}: step at position {pos}");
        let step = logits_of(seq.as_mut(), &column(pos), Rows::From(0), ctx)?;
        out.push(step.narrow(0, 0, 1).context(ctx)?);
        forwards += 1;
    }
    tokens_fed += b * (n - prompt_len);
    Ok(Fed {
        logits: Tensor::cat(&out, 0).context(|| format!("joining the {what} steps' logits"))?,
        forwards,
        tokens_fed,
        trace: take_trace(seq.as_mut()),
    })
}

/// Chunked prefill on a model that returns every row: chunks of `c` at the cache's offset,
/// from the prompt's end (kv_aligned, after prefill's own cache) or from position 0.
fn chunked(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    kv_aligned: bool,
    c: usize,
    inst: Instruments,
) -> Result<Fed> {
    let what = "chunked prefill";
    let n = tokens.len();
    let mut seq = model
        .sequence(n)
        .context(|| format!("{what}: a new sequence"))?;
    let faulty = instrument(seq.as_mut(), &inst, what)?;
    let (mut forwards, mut tokens_fed) = (0, 0);
    if kv_aligned {
        prompt_cache(seq.as_mut(), tokens, prompt_len, what)?;
        forwards += 1;
        tokens_fed += n;
    }
    if faulty {
        probes(seq.as_mut(), what)?.fault = inst.path_fault();
    }
    let mut out = Vec::new();
    let mut at = if kv_aligned { prompt_len } else { 0 };
    while at < n {
        let end = (at + c).min(n);
        let ctx = || format!("{what}: chunk at positions {at}..{end}");
        if end <= prompt_len {
            seq.forward(&tokens[at..end], Rows::None).context(ctx)?;
        } else {
            let first = prompt_len.saturating_sub(at);
            out.push(logits_of(
                seq.as_mut(),
                &tokens[at..end],
                Rows::From(first),
                ctx,
            )?);
        }
        forwards += 1;
        tokens_fed += end - at;
        at = end;
    }
    Ok(Fed {
        logits: Tensor::cat(&out, 0).context(|| "joining the chunks' logits".into())?,
        forwards,
        tokens_fed,
        trace: take_trace(seq.as_mut()),
    })
}

/// Chunked prefill on a model that returns only the last row: for each span position p a
/// fresh sequence fed `tokens[..p + 1]` in chunks of `c` from position 0, whose last chunk
/// (cut short at p) gives p's row. Row p is computed at the offset and place in its chunk
/// that one chunked prefill of the whole sequence gives it; only the chunk's later rows, which
/// a causal model's row p cannot see, are left out (so its matrix height is p + 1 − offset
/// rather than c). Quadratic in the span, like such a model's prefill.
fn chunked_by_prefix(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    c: usize,
) -> Result<Fed> {
    let (mut out, mut forwards, mut tokens_fed) = (Vec::new(), 0, 0);
    for end in prompt_len + 1..=tokens.len() {
        let mut seq = model
            .sequence(end)
            .context(|| format!("chunked prefill of the first {end} tokens"))?;
        let mut at = 0;
        while at < end {
            let stop = (at + c).min(end);
            let ctx = || format!("chunked prefill of the first {end} tokens: chunk {at}..{stop}");
            if stop < end {
                seq.forward(&tokens[at..stop], Rows::None).context(ctx)?;
            } else {
                out.push(logits_of(
                    seq.as_mut(),
                    &tokens[at..stop],
                    Rows::last(stop - at),
                    ctx,
                )?);
            }
            forwards += 1;
            at = stop;
        }
        tokens_fed += end;
    }
    Ok(Fed {
        logits: Tensor::cat(&out, 0).context(|| "joining the chunked rows".into())?,
        forwards,
        tokens_fed,
        trace: Vec::new(),
    })
}

/// Batched prefill on a model that returns every row: one forward over every row's sequence.
fn batched_prefill(
    model: &dyn ModelUnderTest,
    rows: &[&[u32]],
    prompt_len: usize,
    inst: Instruments,
) -> Result<Fed> {
    let what = "batched prefill";
    let (b, n) = (rows.len(), rows[0].len());
    let mut seq = model
        .batch(b, n)
        .context(|| format!("{what}: a new batch of {b}"))?;
    if instrument(seq.as_mut(), &inst, what)? {
        probes(seq.as_mut(), what)?.fault = inst.path_fault();
    }
    let ctx = || format!("{what}: forward over {b} × {n} tokens");
    let all = logits_of(seq.as_mut(), &rows.concat(), Rows::From(prompt_len), ctx)?;
    Ok(Fed {
        logits: all.narrow(0, 0, n - prompt_len).context(ctx)?,
        forwards: 1,
        tokens_fed: b * n,
        trace: take_trace(seq.as_mut()),
    })
}

/// Batched prefill on a model that returns only the last row: a fresh batch of every row's
/// prefix per span position, as [`last_rows_by_prefix`] does for one sequence.
fn batched_prefill_by_prefix(
    model: &dyn ModelUnderTest,
    rows: &[&[u32]],
    prompt_len: usize,
) -> Result<Fed> {
    let b = rows.len();
    let (mut out, mut tokens_fed) = (Vec::new(), 0);
    for end in prompt_len + 1..=rows[0].len() {
        let ctx = || format!("batched prefill of the first {end} tokens of {b} sequences");
        let mut seq = model.batch(b, end).context(ctx)?;
        let prefixes: Vec<u32> = rows.iter().flat_map(|r| r[..end].iter().copied()).collect();
        let last = logits_of(seq.as_mut(), &prefixes, Rows::last(end), ctx)?;
        out.push(last.narrow(0, 0, 1).context(ctx)?);
        tokens_fed += b * end;
    }
    Ok(Fed {
        forwards: out.len(),
        logits: Tensor::cat(&out, 0).context(|| "joining the batched rows".into())?,
        tokens_fed,
        trace: Vec::new(),
    })
}

/// An opened device.
#[derive(Debug, Clone)]
pub struct OpenDevice {
    /// The candle device.
    pub device: Device,
    /// Canonical id: `cpu`, `cuda:N` or `metal:N` (report.json `device`).
    pub id: String,
    /// Human-readable name (report.json `device_name`).
    pub name: String,
}

/// Opens the device a sweep asks for; `Err` says why it cannot run here (its pairs are then
/// SKIPPED with that reason, never silently moved to the CPU).
pub fn open_device(spec: DeviceSpec) -> std::result::Result<OpenDevice, String> {
    match spec {
        DeviceSpec::Cpu => Ok(OpenDevice {
            device: Device::Cpu,
            id: "cpu".into(),
            name: cpu_name(),
        }),
        DeviceSpec::Auto if candle_core::utils::cuda_is_available() => {
            open_device(DeviceSpec::Cuda(0))
        }
        DeviceSpec::Auto if candle_core::utils::metal_is_available() => {
            open_device(DeviceSpec::Metal(0))
        }
        DeviceSpec::Auto => open_device(DeviceSpec::Cpu),
        DeviceSpec::Cuda(n) => open_gpu(
            spec,
            "cuda",
            candle_core::utils::cuda_is_available(),
            || Device::new_cuda(n),
        ),
        DeviceSpec::Metal(n) => open_gpu(
            spec,
            "metal",
            candle_core::utils::metal_is_available(),
            || Device::new_metal(n),
        ),
    }
}

fn open_gpu(
    spec: DeviceSpec,
    feature: &str,
    built: bool,
    open: impl FnOnce() -> candle_core::Result<Device>,
) -> std::result::Result<OpenDevice, String> {
    if !built {
        return Err(format!(
            "device `{spec}`: this binary was built without the `{feature}` feature"
        ));
    }
    let device = open().map_err(|e| format!("device `{spec}` is not available: {e}"))?;
    let name = gpu_name(&device).unwrap_or_else(|| spec.to_string());
    Ok(OpenDevice {
        device,
        id: spec.to_string(),
        name,
    })
}

/// The GPU's marketing name with its compute capability, from the CUDA driver
/// ("NVIDIA H100 80GB HBM3 (sm_90)"); the manifest needs it to tell two results apart.
#[cfg(feature = "cuda")]
fn gpu_name(device: &Device) -> Option<String> {
    let Device::Cuda(d) = device else {
        return None;
    };
    let stream = d.cuda_stream();
    let ctx = stream.context();
    let name = ctx.name().ok()?;
    Some(match ctx.compute_capability() {
        Ok((major, minor)) => format!("{name} (sm_{major}{minor})"),
        Err(_) => name,
    })
}

#[cfg(not(feature = "cuda"))]
fn gpu_name(_device: &Device) -> Option<String> {
    None
}

/// Whether `device` can compute in `dtype`: the operations a decoder step needs (matmul,
/// softmax, RMS norm, a cast back to f32) are tried on a tiny tensor. `Err` says why not, so
/// that the pairs of that dtype are SKIPPED with the reason rather than failing one by one.
pub fn dtype_support(device: &Device, dtype: RunDtype) -> std::result::Result<(), String> {
    let probe = || -> candle_core::Result<()> {
        let a = Tensor::ones((2, 8), dtype.candle(), device)?;
        let b = Tensor::ones((8, 2), dtype.candle(), device)?;
        let c = a.matmul(&b)?;
        let c = candle_nn::ops::softmax_last_dim(&c)?;
        let w = Tensor::ones(2, dtype.candle(), device)?;
        let c = candle_nn::ops::rms_norm(&c, &w, 1e-5)?;
        c.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        Ok(())
    };
    probe().map_err(|e| format!("{dtype} is not supported on this device: {e}"))
}

/// The CPU's model name (Linux /proc/cpuinfo), with the number of threads available.
fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model} ({threads} threads)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::RunDtype;
    use crate::model::ModelInfo;
    use crate::path::RunPath;

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn f32_decode_matches_prefill_in_both_kv_modes() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
        let p = prefill(&model, &tokens, 24, None).unwrap();
        assert_eq!(p.positions, 16);
        for kv in [true, false] {
            let d = decode(&model, &tokens, 24, kv, Instruments::default()).unwrap();
            let (pl, dl) = (p.host_logits().unwrap(), d.host_logits().unwrap());
            assert_eq!(d.logits.dims(), p.logits.dims());
            let diff = max_abs(&pl, &dl);
            assert!(diff < 1e-4, "kv_aligned={kv}: max |diff| {diff}");
            assert_eq!(d.forwards, if kv { 1 + 16 } else { 40 });
            assert_eq!(d.tokens_fed, if kv { 40 + 16 } else { 40 });
        }
        // Logits have a trained model's spread, not a toy's.
        let pl = p.host_logits().unwrap();
        let row = &pl[..info.sizes().vocab_size];
        let mean = row.iter().sum::<f32>() / row.len() as f32;
        let std = (row.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / row.len() as f32).sqrt();
        assert!(std > 1.0 && std < 20.0, "logit std {std}");
    }

    #[test]
    fn aligned_decode_starts_from_prefills_own_cache() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let tokens: Vec<u32> = (0..12).map(|i| 5 + i * 11).collect();
        let mut full = model.new_cache(12);
        model.forward(&tokens, &mut full).unwrap();
        let kept = full.truncated(8, 12).unwrap();
        assert_eq!(kept.seq_len(), 8);
        assert!(full.truncated(13, 13).is_err());
        // Decoding token 8 from the kept cache equals prefill's row 8 to f32 rounding.
        let mut c = kept.clone();
        let row = model.forward(&tokens[8..9], &mut c).unwrap();
        let pre = prefill(&model, &tokens, 8, None).unwrap();
        let row: Vec<f32> = row.flatten_all().unwrap().to_vec1().unwrap();
        assert!(max_abs(&row, &pre.host_logits().unwrap()[..row.len()]) < 1e-4);
    }

    #[test]
    fn honest_runs_stay_under_the_default_trace_thresholds_in_every_dtype() {
        use crate::trace::{TensorName, TraceSelection, analyze, default_nmse_threshold};
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let tokens: Vec<u32> = (0..48).map(|i| 3 + (i * 37) % 900).collect();
        let sel = TraceSelection {
            layers: None,
            tensors: TensorName::ALL.into_iter().collect(),
            positions: (0..48).collect(),
        };
        for dtype in [RunDtype::F32, RunDtype::F16, RunDtype::Bf16] {
            let model = info.load(dtype, &Device::Cpu).unwrap();
            let p = prefill(&model, &tokens, 16, Some(&sel)).unwrap();
            for kv in [true, false] {
                let inst = Instruments {
                    trace: Some(&sel),
                    ..Default::default()
                };
                let d = decode(&model, &tokens, 16, kv, inst).unwrap();
                let threshold = default_nmse_threshold(dtype);
                let t = analyze("x", "x", dtype, &p.trace, &d.trace, &tokens, threshold);
                assert_eq!(t.missing(), 0);
                // embed + 12 layers × 9 tensors + final_norm + logits at each of 48 positions.
                assert_eq!(t.compared(), 48 * (1 + 12 * 9 + 2));
                let worst = t.records.iter().filter_map(|r| r.nmse).fold(0.0, f64::max);
                assert_eq!(
                    t.failed(),
                    0,
                    "{dtype} kv_aligned={kv}: worst nmse {worst:e}"
                );
                // Room to spare: honest drift stays well below the threshold.
                assert!(
                    worst < threshold / 4.0,
                    "{dtype} kv_aligned={kv}: worst nmse {worst:e}"
                );
            }
        }
    }

    #[test]
    fn kv_cache_grows_one_position_per_decode_step() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let mut cache = model.new_cache(4);
        model.forward(&[5, 6, 7], &mut cache).unwrap();
        assert_eq!(cache.seq_len(), 3);
        for (i, tok) in [8u32, 9, 10, 11].iter().enumerate() {
            let out = model.forward(&[*tok], &mut cache).unwrap();
            assert_eq!(out.dims(), &[1, info.sizes().vocab_size]);
            assert_eq!(
                cache.seq_len(),
                4 + i,
                "grows past its preallocated capacity too"
            );
        }
    }

    #[test]
    fn a_masked_future_token_does_not_change_earlier_logits() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let a = prefill(&model, &[1, 2, 3, 4, 5], 0, None).unwrap();
        let b = prefill(&model, &[1, 2, 3, 4, 99], 0, None).unwrap();
        let v = info.sizes().vocab_size;
        let (a, b) = (a.host_logits().unwrap(), b.host_logits().unwrap());
        assert!(max_abs(&a[..4 * v], &b[..4 * v]) < 1e-5);
        assert!(max_abs(&a[4 * v..], &b[4 * v..]) > 1e-3);
    }

    fn bits(out: &RunOutput) -> Vec<u32> {
        out.host_logits()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    fn path_run(
        model: &dyn ModelUnderTest,
        tokens: &[u32],
        kv: bool,
        path: RunPath,
        fault: Injection,
    ) -> RunOutput {
        let others: Vec<Vec<u32>> = (1..path.batch())
            .map(|r| {
                tokens
                    .iter()
                    .map(|t| (t * 7 + r as u32 * 13) % 900 + 3)
                    .collect()
            })
            .collect();
        let inst = Instruments { trace: None, fault };
        under_test(model, tokens, 24, kv, path, &others, inst).unwrap()
    }

    #[test]
    fn the_serving_paths_reduce_to_decode_and_prefill_at_their_ends() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
        for dtype in [RunDtype::F32, RunDtype::Bf16] {
            let model = info.load(dtype, &Device::Cpu).unwrap();
            let pre = bits(&prefill(&model, &tokens, 24, None).unwrap());
            let none = Injection::default();
            for kv in [false, true] {
                let dec = path_run(&model, &tokens, kv, RunPath::Decode, none);
                // Chunks of one token and a batch of one are decode, bit for bit.
                for p in [RunPath::Chunked(1), RunPath::Batched(1)] {
                    let out = path_run(&model, &tokens, kv, p, none);
                    assert_eq!(bits(&out), bits(&dec), "{dtype} kv={kv} {p}");
                    assert_eq!(out.positions, 16);
                }
            }
            // One chunk holding the whole sequence, and a batch of one prefilled, are prefill.
            for p in [
                RunPath::Chunked(40),
                RunPath::Chunked(64),
                RunPath::BatchedPrefill(1),
            ] {
                let out = path_run(&model, &tokens, false, p, none);
                assert_eq!(bits(&out), pre, "{dtype} {p}");
            }
            // Chunks of 5 from position 0: 8 forwards, the span's rows from the last 4.
            let c5 = path_run(&model, &tokens, false, RunPath::Chunked(5), none);
            assert_eq!((c5.forwards, c5.tokens_fed), (8, 40));
            let b4 = path_run(&model, &tokens, true, RunPath::Batched(4), none);
            assert_eq!((b4.forwards, b4.tokens_fed), (4 + 16, 4 * 40 + 4 * 16));
            assert_eq!(b4.logits.dims(), &[16, info.sizes().vocab_size]);
        }
    }

    #[test]
    fn a_batch_row_sees_only_its_own_sequence() {
        // Row 0's logits in a batch of 4 equal the sequence alone to f32 rounding: another
        // row's ids leak nowhere. With the cross-row fault they do, and only in a batch.
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let model = info.load(RunDtype::F32, &Device::Cpu).unwrap();
        let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
        let alone = path_run(
            &model,
            &tokens,
            false,
            RunPath::Decode,
            Injection::default(),
        );
        let leak = Injection {
            cross_row_cache: true,
            ..Default::default()
        };
        for p in [RunPath::Batched(4), RunPath::BatchedPrefill(4)] {
            let honest = path_run(&model, &tokens, false, p, Injection::default());
            let d = max_abs(
                &honest.host_logits().unwrap(),
                &alone.host_logits().unwrap(),
            );
            assert!(d < 1e-4, "{p}: {d}");
            let faulty = path_run(&model, &tokens, false, p, leak);
            let d = max_abs(
                &faulty.host_logits().unwrap(),
                &alone.host_logits().unwrap(),
            );
            assert!(d > 1e-2, "{p} with the cross-row fault: {d}");
        }
        for p in [RunPath::Batched(1), RunPath::BatchedPrefill(1)] {
            let one = path_run(&model, &tokens, false, p, leak);
            let honest = path_run(&model, &tokens, false, p, Injection::default());
            assert_eq!(
                bits(&one),
                bits(&honest),
                "{p}: a batch of one has no other row"
            );
        }
    }

    #[test]
    fn the_chunk_fault_acts_on_later_chunks_only() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let model = info
            .sized_for(41)
            .load(RunDtype::F32, &Device::Cpu)
            .unwrap();
        let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 900).collect();
        let shift = Injection {
            chunk_position_shift: 1,
            ..Default::default()
        };
        let none = Injection::default();
        // Decode (single tokens) and a single chunk from position 0 cannot show it.
        for p in [RunPath::Decode, RunPath::Chunked(1), RunPath::Chunked(64)] {
            let a = path_run(&model, &tokens, false, p, shift);
            let b = path_run(&model, &tokens, false, p, none);
            assert_eq!(bits(&a), bits(&b), "{p}");
        }
        let a = path_run(&model, &tokens, false, RunPath::Chunked(8), shift);
        let b = path_run(&model, &tokens, false, RunPath::Chunked(8), none);
        let d = max_abs(&a.host_logits().unwrap(), &b.host_logits().unwrap());
        assert!(d > 1e-2, "chunk 8 with the fault: {d}");
    }

    #[test]
    fn unbuilt_devices_say_why() {
        if !candle_core::utils::cuda_is_available() {
            let e = open_device(DeviceSpec::Cuda(0)).unwrap_err();
            assert!(e.contains("without the `cuda` feature"), "{e}");
            assert_eq!(open_device(DeviceSpec::Auto).unwrap().id, "cpu");
        }
        let cpu = open_device(DeviceSpec::Cpu).unwrap();
        assert_eq!(cpu.id, "cpu");
        assert!(cpu.name.contains("threads"), "{}", cpu.name);
    }
}
