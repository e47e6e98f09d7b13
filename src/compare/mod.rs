//! The comparator (docs/design.md, "Metrics"): prefill logits are the reference, decode logits are
//! under test; both arrive as f32 `[positions × vocab]` tensors on the device that produced
//! them, and are compared there ([`compare_tensors`]): in place on the CPU, with candle ops on
//! a GPU ([`device`]).
//!
//! Logits are f32 whatever the run dtype (the runs upcast before handing them over). Sums and
//! the log-softmax behind KL are accumulated in f64 so that an f32-level KL of 1e-11 measures
//! the logits, not the comparator's own rounding. p99 is found by selection, never a sort.

mod device;
mod exp;
mod host;
pub mod kl_stats;
pub mod metrics;
#[cfg(test)]
mod reference;
#[cfg(target_arch = "x86_64")]
mod row_group;
mod row_kernel;
mod rows;
mod types;

use candle_core::{Storage, Tensor};

// The parent keeps the dispatcher only: the children import from their siblings, never from
// here, so no file of the comparator imports one that imports it back.
pub use host::{argmax, compare, row_digests};
pub use rows::percentile;
pub use types::{CompareError, Metrics, TopFlip};

/// Compares two runs' span logits where they are: `[positions × vocab]` f32 tensors on the
/// device that produced them. `span_start` is the absolute position of the first row;
/// `divergence_limit` is the max |diff| above which a position counts as divergent.
///
/// On the CPU the comparator reads the tensors' storage in place (no copy). On a GPU the
/// metrics are reduced there with candle ops ([`device`]) and only per-row summaries, a few
/// numbers per position, come to the host.
pub fn compare_tensors(
    prefill: &Tensor,
    decode: &Tensor,
    span_start: usize,
    divergence_limit: f32,
) -> Result<Metrics, CompareError> {
    let (pd, dd) = (prefill.dims(), decode.dims());
    if pd.len() != 2 || pd != dd {
        return Err(CompareError::ShapeMismatch {
            prefill: prefill.elem_count(),
            decode: decode.elem_count(),
            vocab: pd.last().copied().unwrap_or(0),
        });
    }
    if pd[0] == 0 || pd[1] == 0 {
        return Err(CompareError::Empty);
    }
    if prefill.device().is_cpu() && decode.device().is_cpu() {
        with_host_slice(prefill, |a| {
            with_host_slice(decode, |b| {
                compare(a, b, pd[1], span_start, divergence_limit)
            })
        })
        .and_then(|r| r)
        .and_then(|r| r)
    } else {
        device::compare(prefill, decode, span_start, divergence_limit)
    }
}

/// Runs `f` on a CPU tensor's f32 values, borrowed from its storage when the tensor is
/// contiguous (a narrowed prefill or a concatenated decode is) and copied otherwise.
fn with_host_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, CompareError> {
    let device_error = |e: candle_core::Error| CompareError::Device(e.to_string());
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let all = cpu.as_slice::<f32>().map_err(device_error)?;
            return Ok(f(&all[start..end]));
        }
    }
    let owned: Vec<f32> = t
        .flatten_all()
        .and_then(|x| x.to_vec1())
        .map_err(device_error)?;
    Ok(f(&owned))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// CPU tensors take the in-place host path and give what the host comparator gives on
    /// the same values.
    #[test]
    fn cpu_tensors_take_the_host_path() {
        let (positions, vocab) = (4, 17);
        let a: Vec<f32> = (0..positions * vocab)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 8.0)
            .collect();
        let b: Vec<f32> = a.iter().map(|x| x * 1.001).collect();
        let host = compare(&a, &b, vocab, 3, 0.01).unwrap();
        let ta = Tensor::from_vec(a, (positions, vocab), &Device::Cpu).unwrap();
        let tb = Tensor::from_vec(b, (positions, vocab), &Device::Cpu).unwrap();
        assert_eq!(compare_tensors(&ta, &tb, 3, 0.01).unwrap(), host);
    }
}
