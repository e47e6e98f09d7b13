//! A GGUF file's tensors for the own decoders: dequantized to f32 and cast to the run dtype,
//! or the projections' blocks kept as they are; both renamed to Hugging Face names, with
//! llama.cpp's Q/K row permutation undone where the family's [`Layout`] says it was applied.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::TensorInfo;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::layout::Layout;
use super::read::open;
use crate::model::error::ModelError;

/// Undoes llama.cpp's Q/K row permutation: rows (heads, 2, head_dim/2) were stored as
/// (heads, head_dim/2, 2).
pub(super) fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / heads;
    w.reshape((heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Loads every tensor, dequantized to f32 and cast to `dtype` on `device`.
pub fn var_builder(
    path: &Path,
    layout: Layout,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    let (c, mut r, _) = open(path)?;
    // Cast on the CPU, not when the decoder asks: holding every tensor in f32 until the load
    // ends cost a bf16 or f16 run an f32 model's bytes at its peak. The same cast as the
    // builder's, so the same bits (a GPU's cast stays where it was).
    let held = if device.is_cpu() { dtype } else { DType::F32 };
    let mut tensors = HashMap::new();
    for (name, info) in &c.tensor_infos {
        let Some(hf) = layout.hf_name(name) else {
            continue;
        };
        let err = |e: candle_core::Error| ModelError::Load(format!("tensor `{name}`: {e}"));
        let raw = read_raw(&mut r, c.tensor_data_offset, info)
            .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
        let mut t = dequantize_to(&raw, info, held).map_err(err)?;
        drop(raw);
        // The permutation moves elements and the cast maps each alone, so undoing it after
        // the cast gives the same tensor as before it.
        if let Some(heads) = layout.permuted_heads(name) {
            t = unpermute(&t, heads).map_err(err)?;
        }
        tensors.insert(hf, t);
    }
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}

/// The bytes of one tensor as the file stores them: read once, straight from the file (no
/// second copy into candle's blocks for the whole tensor).
fn read_raw<R: Read + Seek>(
    r: &mut R,
    data_offset: u64,
    info: &TensorInfo,
) -> std::io::Result<Vec<u8>> {
    let dt = info.ggml_dtype;
    let bytes = info.shape.elem_count() / dt.block_size() * dt.type_size();
    let mut raw = vec![0u8; bytes];
    r.seek(SeekFrom::Start(data_offset.saturating_add(info.offset)))?;
    r.read_exact(&mut raw)?;
    Ok(raw)
}

/// Elements dequantized to f32 at a time by [`dequantize_to`]: 4 MiB of f32, so that the
/// transient f32 copy of a tensor stays small next to the weights (SmolLM2's tied
/// embedding alone is 113 MB in f32).
const CHUNK_ELEMS: usize = 1 << 20;

/// The tensor `raw` holds (its blocks as the file stores them), dequantized to f32 and cast
/// to `dtype` on the CPU, a chunk of whole rows at a time. Each block dequantizes on its own
/// (its own scale and offset) and the cast maps each element alone, so chunks give the bits
/// of the whole tensor dequantized then cast (`chunked_dequantization_is_bit_identical`).
fn dequantize_to(raw: &[u8], info: &TensorInfo, dtype: DType) -> candle_core::Result<Tensor> {
    let (dt, dims) = (info.ggml_dtype, info.shape.dims().to_vec());
    let cols = dims.last().copied().unwrap_or(1).max(1);
    let rows = info.shape.elem_count() / cols;
    let whole = || {
        qtensor_from_ggml(dt, raw, dims.clone(), &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .to_dtype(dtype)
    };
    if !cols.is_multiple_of(dt.block_size()) || rows * cols <= CHUNK_ELEMS {
        return whole();
    }
    let row_bytes = cols / dt.block_size() * dt.type_size();
    let step = (CHUNK_ELEMS / cols).max(1);
    let chunk = |r0: usize| -> candle_core::Result<Tensor> {
        let n = step.min(rows - r0);
        let bytes = &raw[r0 * row_bytes..(r0 + n) * row_bytes];
        qtensor_from_ggml(dt, bytes, vec![n, cols], &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .to_dtype(dtype)?
            .flatten_all()
    };
    let starts = (0..rows).step_by(step);
    match dtype {
        DType::F32 => gather::<f32>(starts, rows * cols, chunk, &dims),
        DType::BF16 => gather::<half::bf16>(starts, rows * cols, chunk, &dims),
        DType::F16 => gather::<half::f16>(starts, rows * cols, chunk, &dims),
        _ => whole(),
    }
}

/// The chunks `chunk(start)` for every start, concatenated into one tensor of `dims`
/// (`len` elements), without holding more than one chunk besides the result.
fn gather<T: candle_core::WithDType>(
    starts: impl Iterator<Item = usize>,
    len: usize,
    chunk: impl Fn(usize) -> candle_core::Result<Tensor>,
    dims: &[usize],
) -> candle_core::Result<Tensor> {
    let mut out = Vec::with_capacity(len);
    for s in starts {
        out.extend(chunk(s)?.to_vec1::<T>()?);
    }
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// The projection weights (2-D `blk.*` tensors and the output head, or the token embedding
/// when the head is tied) kept quantized as the file stores them, by Hugging Face name, on
/// `device`: what `weights: quantized` multiplies with. Q and K get llama.cpp's row
/// permutation undone on whole rows of blocks (a row's blocks lie along the input dimension,
/// so moving rows moves bytes and changes no value).
pub fn quantized_projections(
    path: &Path,
    layout: Layout,
    device: &Device,
) -> Result<HashMap<String, Arc<QTensor>>, ModelError> {
    let (c, mut r, _) = open(path)?;
    let tied = !c.tensor_infos.contains_key("output.weight");
    let mut out = HashMap::new();
    for (name, info) in &c.tensor_infos {
        let Some(hf) = layout.hf_name(name) else {
            continue;
        };
        let projection =
            name.starts_with("blk.") && info.shape.rank() == 2 && !name.contains("norm");
        let head = name == "output.weight" || (name == "token_embd.weight" && tied);
        if !(projection || head) {
            continue;
        }
        let q = c
            .tensor(&mut r, name, &Device::Cpu)
            .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
        let q = match layout.permuted_heads(name) {
            Some(h) => unpermute_rows(&q, h, device),
            None => {
                let dims = q.shape().dims().to_vec();
                let bytes = q
                    .data()
                    .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
                qtensor_from_ggml(q.dtype(), &bytes, dims, device)
            }
        }
        .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
        // A tied head is named after the embedding, which the decoder also reads densely.
        out.insert(hf, Arc::new(q));
    }
    Ok(out)
}

/// [`unpermute`] for quantized rows: row `h·hd + a·hd/2 + b` of the result is row
/// `h·hd + 2b + a` of the file.
pub(crate) fn unpermute_rows(
    q: &QTensor,
    heads: usize,
    device: &Device,
) -> candle_core::Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let (rows, cols) = q.shape().dims2()?;
    let dt = q.dtype();
    if !cols.is_multiple_of(dt.block_size())
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
    {
        candle_core::bail!("shape ({rows}, {cols}) does not split into {heads} heads of blocks");
    }
    let row_bytes = cols / dt.block_size() * dt.type_size();
    let data = q.data()?;
    if data.len() != rows * row_bytes {
        candle_core::bail!("{} bytes for {rows} rows of {row_bytes}", data.len());
    }
    let hd = rows / heads;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..hd / 2 {
                let src = h * hd + 2 * b + a;
                out.extend_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    qtensor_from_ggml(dt, &out, dims, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, hd/2, c).swapaxes(1, 2).reshape(rows, c)
        let (h, hd, c) = (3, 4, 2);
        let w = Tensor::arange(0f32, (h * hd * c) as f32, &Device::Cpu)
            .unwrap()
            .reshape((h * hd, c))
            .unwrap();
        let permuted = w
            .reshape((h, 2, hd / 2, c))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((h * hd, c))
            .unwrap();
        let back = unpermute(&permuted, h).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn quantized_rows_unpermute_like_the_dequantized_tensor() {
        use candle_core::quantized::GgmlDType;
        let (h, hd, c) = (2, 8, 64);
        let w = Tensor::randn(0f32, 1.0, (h * hd, c), &Device::Cpu).unwrap();
        for dt in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let q = QTensor::quantize(&w, dt).unwrap();
            let dense = unpermute(&q.dequantize(&Device::Cpu).unwrap(), h).unwrap();
            let rows = unpermute_rows(&q, h, &Device::Cpu).unwrap();
            let rows = rows.dequantize(&Device::Cpu).unwrap();
            assert_eq!(
                rows.to_vec2::<f32>().unwrap(),
                dense.to_vec2::<f32>().unwrap(),
                "{dt:?}"
            );
        }
    }

    #[test]
    fn chunked_dequantization_is_bit_identical() {
        use candle_core::quantized::GgmlDType;
        // More elements than one chunk, with a last chunk of a few rows.
        let (rows, cols) = (CHUNK_ELEMS / 256 + 4, 256);
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        for gt in [
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
            GgmlDType::F16,
        ] {
            let q = QTensor::quantize(&w, gt).unwrap();
            let raw = q.data().unwrap().into_owned();
            let info = TensorInfo {
                ggml_dtype: gt,
                shape: q.shape().clone(),
                offset: 0,
            };
            let whole = q.dequantize(&Device::Cpu).unwrap();
            for dt in [DType::F32, DType::BF16, DType::F16] {
                let chunked = dequantize_to(&raw, &info, dt).unwrap();
                assert_eq!(chunked.dims(), &[rows, cols]);
                let expected = whole.to_dtype(dt).unwrap();
                assert!(bits_f32(&chunked) == bits_f32(&expected), "{gt:?} {dt:?}");
            }
            // Negative control: the comparison sees a quantization's change.
            assert_ne!(bits_f32(&whole), bits_f32(&w), "{gt:?}");
        }
    }

    /// The bits of `t`'s elements widened to f32 (exact from f16 and bf16).
    fn bits_f32(t: &Tensor) -> Vec<u32> {
        let v = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        v.to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }
}
