//! One run: the prefill path or the decode path over a pair's tokens, on a loaded model, and
//! the choice of the device it runs on.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::error::{CandleContext, Result};
use crate::model::Decoder;

/// What a run hands to the comparator.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// f32 logits of the span positions, row-major (span × vocab).
    pub logits: Vec<f32>,
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
}

fn rows_to_host(rows: &Tensor, what: &str) -> Result<Vec<f32>> {
    rows.flatten_all()
        .and_then(|t| t.to_vec1())
        .context(|| format!("copying the {what} logits"))
}

/// Prefill: one forward over prompt + span at offset 0; keep the span positions' logits.
pub fn prefill(model: &Decoder, tokens: &[u32], prompt_len: usize) -> Result<RunOutput> {
    let start = Instant::now();
    let span = tokens.len() - prompt_len;
    let mut cache = model.new_cache(tokens.len());
    let all = model
        .forward(tokens, &mut cache)
        .context(|| format!("prefill forward over {} tokens", tokens.len()))?;
    let rows = all
        .narrow(0, prompt_len, span)
        .context(|| "selecting the span".into())?;
    let logits = rows_to_host(&rows, "prefill")?;
    Ok(RunOutput {
        vocab: model.config().vocab_size,
        span_start: prompt_len,
        positions: span,
        forwards: 1,
        tokens_fed: tokens.len(),
        wall_s: start.elapsed().as_secs_f64(),
        logits,
    })
}

/// Decode: the prompt as one forward (`kv_aligned`) or token by token, then one forward per
/// span token at its own offset; keep each span step's logits.
pub fn decode(
    model: &Decoder,
    tokens: &[u32],
    prompt_len: usize,
    kv_aligned: bool,
) -> Result<RunOutput> {
    let start = Instant::now();
    let span = tokens.len() - prompt_len;
    let mut cache = model.new_cache(tokens.len());
    let mut forwards = 0;
    if kv_aligned {
        model
            .forward(&tokens[..prompt_len], &mut cache)
            .context(|| format!("decode: prompt forward over {prompt_len} tokens"))?;
        forwards += 1;
    } else {
        for (pos, &tok) in tokens[..prompt_len].iter().enumerate() {
            model
                .forward(&[tok], &mut cache)
                .context(|| format!("decode: prompt token at position {pos}"))?;
            forwards += 1;
        }
    }
    let vocab = model.config().vocab_size;
    let mut logits = Vec::with_capacity(span * vocab);
    for (i, &tok) in tokens[prompt_len..].iter().enumerate() {
        let pos = prompt_len + i;
        let row = model
            .forward(&[tok], &mut cache)
            .context(|| format!("decode: step at position {pos}"))?;
        logits.extend(rows_to_host(&row, "decode")?);
        forwards += 1;
    }
    Ok(RunOutput {
        logits,
        vocab,
        span_start: prompt_len,
        positions: span,
        forwards,
        tokens_fed: tokens.len(),
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// The device a sweep asks for, opened, with a human name; or why it cannot run here.
pub fn open_device(spec: &str) -> std::result::Result<(Device, String), String> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => match n.parse::<usize>() {
            Ok(n) => (k, n),
            Err(_) => return Err(format!("device `{spec}`: `{n}` is not a device number")),
        },
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok((Device::Cpu, "cpu".into())),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                open_device(&format!("cuda:{ordinal}"))
            } else if candle_core::utils::metal_is_available() {
                open_device(&format!("metal:{ordinal}"))
            } else {
                Ok((Device::Cpu, "cpu".into()))
            }
        }
        "cuda" => {
            if !candle_core::utils::cuda_is_available() {
                return Err(format!(
                    "device `{spec}`: this binary was built without the `cuda` feature"
                ));
            }
            Device::new_cuda(ordinal)
                .map(|d| (d, format!("cuda:{ordinal}")))
                .map_err(|e| format!("device `{spec}` is not available: {e}"))
        }
        "metal" => {
            if !candle_core::utils::metal_is_available() {
                return Err(format!(
                    "device `{spec}`: this binary was built without the `metal` feature"
                ));
            }
            Device::new_metal(ordinal)
                .map(|d| (d, format!("metal:{ordinal}")))
                .map_err(|e| format!("device `{spec}` is not available: {e}"))
        }
        _ => Err(format!(
            "device `{spec}` is unknown; use cpu, cuda, cuda:N, metal, metal:N or auto"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunDtype;
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
        let p = prefill(&model, &tokens, 24).unwrap();
        assert_eq!(p.positions, 16);
        for kv in [true, false] {
            let d = decode(&model, &tokens, 24, kv).unwrap();
            assert_eq!(d.logits.len(), p.logits.len());
            let diff = max_abs(&p.logits, &d.logits);
            assert!(diff < 1e-4, "kv_aligned={kv}: max |diff| {diff}");
            assert_eq!(d.forwards, if kv { 1 + 16 } else { 40 });
        }
        // Logits have a trained model's spread, not a toy's.
        let row = &p.logits[..info.config.vocab_size];
        let mean = row.iter().sum::<f32>() / row.len() as f32;
        let std = (row.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / row.len() as f32).sqrt();
        assert!(std > 1.0 && std < 20.0, "logit std {std}");
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
        let a = prefill(&model, &[1, 2, 3, 4, 5], 0).unwrap();
        let b = prefill(&model, &[1, 2, 3, 4, 99], 0).unwrap();
        let v = info.config.vocab_size;
        assert!(max_abs(&a.logits[..4 * v], &b.logits[..4 * v]) < 1e-5);
        assert!(max_abs(&a.logits[4 * v..], &b.logits[4 * v..]) > 1e-3);
    }

    #[test]
    fn unbuilt_devices_say_why() {
        if !candle_core::utils::cuda_is_available() {
            let e = open_device("cuda:0").unwrap_err();
            assert!(e.contains("without the `cuda` feature"), "{e}");
        }
        assert!(open_device("tpu").unwrap_err().contains("unknown"));
        assert!(open_device("cuda:x").is_err());
        assert_eq!(open_device("cpu").unwrap().1, "cpu");
    }
}
