//! One run: the prefill path or the decode path over a pair's tokens, on a loaded model, and
//! the choice of the device it runs on.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::config::DeviceSpec;
use crate::dtype::RunDtype;
use crate::error::{CandleContext, Error, Result};
use crate::model::{Fault, ModelUnderTest, Probes, Rows, Sequence};
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
    fn decode_fault(&self) -> Fault {
        Fault {
            scale: self.fault.scale,
            position_shift: self.fault.position_shift,
            window_shift: self.fault.window_shift,
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

/// Decode: build the prompt's cache as `kv_aligned` says, then one forward per span token at
/// its own offset; keep each span step's logits.
///
/// kv_aligned = true: the span must start from the cache prefill computed (docs/design.md,
/// "kv_aligned"), so the run makes prefill's own forward over prompt + span and keeps the
/// prompt's K/V. A separate forward over the prompt alone would run the projections at a
/// different matrix height, which on GPU kernels can round differently.
///
/// With a trace selection, records prompt positions from whichever forward computed them and
/// span positions from the decode steps. The fault perturbs every single-token forward
/// (never the kv_aligned cache forward, which is prefill's computation).
pub fn decode(
    model: &dyn ModelUnderTest,
    tokens: &[u32],
    prompt_len: usize,
    kv_aligned: bool,
    inst: Instruments,
) -> Result<RunOutput> {
    let start = Instant::now();
    let span = tokens.len() - prompt_len;
    if inst.fault.fail_span == Some(span) {
        return Err(Error::Candle {
            context: format!("decode at span {span}"),
            source: candle_core::Error::Msg("injected failure (inject.fail_span)".into()),
        });
    }
    let mut seq = model
        .sequence(tokens.len())
        .context(|| "decode: a new sequence".into())?;
    let faulty = inst.decode_fault().is_active();
    if inst.trace.is_some() || faulty {
        probes(seq.as_mut(), "decode")?.trace = inst.trace.cloned().map(TraceSink::new);
    }
    let mut forwards = 0;
    if kv_aligned {
        if let Some(sink) = seq.probes().and_then(|p| p.trace.as_mut()) {
            sink.set_window(0..prompt_len);
        }
        // Only the cache is used: no logits are computed unless the forward is traced.
        seq.forward(tokens, Rows::None)
            .context(|| format!("decode: prefill forward over {} tokens", tokens.len()))?;
        if let Some(sink) = seq.probes().and_then(|p| p.trace.as_mut()) {
            sink.set_window(0..usize::MAX);
        }
        seq.truncate(prompt_len)
            .context(|| format!("decode: keeping the prompt's {prompt_len} cached positions"))?;
        forwards += 1;
    }
    if faulty {
        probes(seq.as_mut(), "decode")?.fault = inst.decode_fault();
    }
    if !kv_aligned {
        for (pos, &tok) in tokens[..prompt_len].iter().enumerate() {
            seq.forward(&[tok], Rows::None)
                .context(|| format!("decode: prompt token at position {pos}"))?;
            forwards += 1;
        }
    }
    // Each step's row stays on the device (no per-step copy to the host, no sync); the rows
    // are joined once at the end.
    let mut rows = Vec::with_capacity(span);
    for (i, &tok) in tokens[prompt_len..].iter().enumerate() {
        let pos = prompt_len + i;
        let ctx = || format!("decode: step at position {pos}");
        let row = logits_of(seq.as_mut(), &[tok], Rows::From(0), ctx)?;
        rows.push(row);
        forwards += 1;
    }
    let logits = Tensor::cat(&rows, 0).context(|| "joining the decode steps' logits".into())?;
    Ok(RunOutput {
        logits,
        vocab: model.vocab_size(),
        span_start: prompt_len,
        positions: span,
        forwards,
        tokens_fed: tokens.len(),
        wall_s: start.elapsed().as_secs_f64(),
        trace: take_trace(seq.as_mut()),
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
            assert_eq!(d.tokens_fed, 40);
        }
        // Logits have a trained model's spread, not a toy's.
        let pl = p.host_logits().unwrap();
        let row = &pl[..info.config.vocab_size];
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
            assert_eq!(out.dims(), &[1, info.config.vocab_size]);
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
        let v = info.config.vocab_size;
        let (a, b) = (a.host_logits().unwrap(), b.host_logits().unwrap());
        assert!(max_abs(&a[..4 * v], &b[..4 * v]) < 1e-5);
        assert!(max_abs(&a[4 * v..], &b[4 * v..]) > 1e-3);
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
