//! A GGUF file's tensors for the own decoders: dequantized to f32 and cast to the run dtype,
//! or the projections' blocks kept as they are; both renamed to Hugging Face names, with
//! llama.cpp's Q/K row permutation undone where the family's [`Layout`] says it was applied.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::quantized::ggml_file::qtensor_from_ggml;
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
    let mut tensors = HashMap::new();
    for name in c.tensor_infos.keys() {
        let Some(hf) = layout.hf_name(name) else {
            continue;
        };
        // Dequantize on the CPU in f32: the quantized blocks only know how to widen to f32.
        let q = c
            .tensor(&mut r, name, &Device::Cpu)
            .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
        let mut t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
        if let Some(heads) = layout.permuted_heads(name) {
            t = unpermute(&t, heads)
                .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
        }
        // Cast now, not when the decoder asks: holding every tensor in f32 until the load
        // ends cost a bf16 or f16 run an f32 model's bytes at its peak. The same cast as the
        // builder's, so the same bits (a GPU's cast stays where it was).
        if device.is_cpu() {
            t = t
                .to_dtype(dtype)
                .map_err(|e| ModelError::Load(format!("tensor `{name}`: {e}")))?;
        }
        tensors.insert(hf, t);
    }
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
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
}
