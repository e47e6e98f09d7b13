//! GGUF files (llama.cpp's format): hyper-parameters and the tokenizer from the metadata,
//! tensors dequantized to f32 and then cast to the run dtype, renamed to Hugging Face names.
//!
//! Each family names its tensors and says whether llama.cpp permuted its Q/K rows
//! ([`Layout`]); [`inspect`] resolves `general.architecture` through the family table
//! ([`crate::model::family`]) and checks the header against the tensors.

pub mod layout;
pub(crate) mod read;
pub(crate) mod tensors;
mod tokenizer;

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use tokenizers::Tokenizer;

use super::error::ModelError;
use super::family::{Architecture, Family};
use super::header;
pub use layout::Layout;
use read::{get, open, read_content, strings};
pub use tensors::{quantized_projections, var_builder};
pub use tokenizer::{GgufTokenizer, TOKENIZER_MODELS, tokenizer};

/// What the metadata of a GGUF file gives.
pub struct GgufModel {
    /// `general.architecture`, resolved.
    pub architecture: Architecture,
    /// The family with its hyper-parameters.
    pub family: Family,
    /// The byte-level BPE tokenizer.
    pub tokenizer: Tokenizer,
    /// BOS id, when the file asks for BOS in front of prompts.
    pub bos_id: Option<u32>,
    /// Control tokens.
    pub special_ids: Vec<u32>,
    /// End-of-sequence id.
    pub eos_id: Option<u32>,
}

/// Every tensor's bytes must lie inside the file: a truncated download is found here, before
/// any work, not when a group's weights load. The arithmetic is checked: dimensions come from
/// the file, and their product may overflow.
fn check_tensor_extents(len: u64, c: &Content) -> Result<(), ModelError> {
    for (name, t) in &c.tensor_infos {
        let block = t.ggml_dtype.block_size().max(1);
        let elems = t
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}`: shape {:?} overflows", t.shape.dims()))?;
        if !elems.is_multiple_of(block) {
            return Err(format!(
                "tensor `{name}`: {elems} elements are not a whole number of {:?} blocks of {block}",
                t.ggml_dtype
            )
            .into());
        }
        let bytes = (elems / block)
            .checked_mul(t.ggml_dtype.type_size())
            .ok_or_else(|| format!("tensor `{name}`: size overflows"))? as u64;
        let end = c
            .tensor_data_offset
            .saturating_add(t.offset)
            .saturating_add(bytes);
        if end > len {
            return Err(format!(
                "truncated: tensor `{name}` needs bytes up to {end} but the file has {len}"
            )
            .into());
        }
    }
    Ok(())
}

/// Reads the metadata (not the tensors) of a GGUF file.
pub fn inspect(path: &Path) -> Result<GgufModel, ModelError> {
    let (c, _, len) = open(path)?;
    inspect_content(&c, len)
}

/// [`inspect`] on a GGUF file held in memory: the same checks (header, metadata, tensor
/// extents against `bytes.len()`, tokenizer), no file system. The entry point of the
/// `gguf_header` fuzz target.
pub fn inspect_bytes(bytes: &[u8]) -> Result<GgufModel, ModelError> {
    let mut r = Cursor::new(bytes);
    let c = read_content(&mut r, bytes.len() as u64)?;
    inspect_content(&c, bytes.len() as u64)
}

/// Everything [`inspect`] checks once the header is read; `len` is the file's size.
fn inspect_content(c: &Content, len: u64) -> Result<GgufModel, ModelError> {
    let name = get(c, "general.architecture")?
        .to_string()
        .map_err(|e| format!("general.architecture: {e}"))?
        .clone();
    let architecture = Architecture::from_gguf(&name)?;
    check_tensor_extents(len, c)?;
    let tokens = strings(c, "tokenizer.ggml.tokens")?;
    let vocab_size = embedding_rows(c)?;
    if tokens.len() != vocab_size {
        return Err(format!(
            "the tokenizer has {} tokens but the embedding has {vocab_size} rows",
            tokens.len()
        )
        .into());
    }
    let (family, layout) = Family::from_gguf(architecture, c, vocab_size)?;
    // Architectures without an own decoder (Family::Foreign) have no header to check here:
    // their candle-transformers module reads the tensors it needs and names what is missing.
    if let (Some(layout), Some(expected)) = (layout, family.expected()) {
        let shapes: HashMap<String, Vec<usize>> = c
            .tensor_infos
            .iter()
            .filter_map(|(n, t)| layout.hf_name(n).map(|hf| (hf, t.shape.dims().to_vec())))
            .collect();
        header::check(&expected, &shapes, &header::Keys::gguf(&name), &|n| {
            layout.gguf_name(n)
        })?;
    }
    let tok = tokenizer::read_tokenizer(c, &tokens)?;
    Ok(GgufModel {
        architecture,
        family,
        tokenizer: tok.tokenizer,
        bos_id: tok.bos_id,
        special_ids: tok.special_ids,
        eos_id: tok.eos_id,
    })
}

/// The rows of `token_embd.weight`, which must be 2-D.
fn embedding_rows(c: &Content) -> Result<usize, ModelError> {
    let embd = c
        .tensor_infos
        .get("token_embd.weight")
        .ok_or("tensor `token_embd.weight` is missing")?;
    match embd.shape.dims() {
        &[rows, _] => Ok(rows),
        d => Err(format!("tensor `token_embd.weight` has shape {d:?}, not 2-D").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GGUF v3 bytes: the given metadata entries (key, type, value bytes) and no tensors.
    fn gguf(kv: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kv.len() as u64).to_le_bytes());
        for (k, t, v) in kv {
            b.extend((k.len() as u64).to_le_bytes());
            b.extend(k.as_bytes());
            b.extend(t.to_le_bytes());
            b.extend(v);
        }
        b
    }

    #[test]
    fn fuzz_regression_alignment_zero_is_an_error_not_a_division_by_zero() {
        // Found by the `gguf_header` fuzz target: candle rounds the data offset up to a
        // multiple of `general.alignment` and panics on 0.
        for t in [4u32, 5] {
            let bytes = gguf(&[("general.alignment", t, 0u32.to_le_bytes().to_vec())]);
            let Err(e) = inspect_bytes(&bytes) else {
                panic!("alignment 0 (type {t}) was accepted");
            };
            assert!(e.contains("alignment"), "{e}");
        }
        // Any other malformed header is an error too.
        assert!(inspect_bytes(b"GGUF").is_err());
        assert!(inspect_bytes(&[]).is_err());
        // The crash the fuzzer found next: candle strips trailing NULs from keys, so this is
        // `general.alignment` as well (the fuzzer's input below, reduced).
        let bytes = gguf(&[
            ("general.architecture", 5, 0i32.to_le_bytes().to_vec()),
            ("general.alignment\0\0\0", 0, vec![0u8]),
        ]);
        let Err(e) = inspect_bytes(&bytes) else {
            panic!("a NUL-padded alignment key of 0 was accepted");
        };
        assert!(e.contains("alignment"), "{e}");
        // The fuzzer's own crash input, as it found it.
        let crash =
            include_bytes!("../../../tests/fuzz_regressions/gguf_header-crash-351e96d2.bin");
        assert!(inspect_bytes(crash).is_err());
        let mut huge = gguf(&[]);
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
        assert!(inspect_bytes(&huge).is_err());
    }

    #[test]
    fn names_map_to_hugging_face() {
        let mut cfg = crate::model::builtin::config();
        (cfg.num_attention_heads, cfg.num_key_value_heads) = (2, 1);
        let llama = crate::model::llama::gguf_layout(&cfg);
        assert_eq!(
            llama.hf_name("blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            llama.hf_name("output_norm.weight").unwrap(),
            "model.norm.weight"
        );
        assert_eq!(llama.hf_name("rope_freqs.weight"), None);
        assert_eq!(
            llama.hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        // Gemma 3: ffn_norm is the norm before the MLP; its norm after attention has a name
        // of its own, and every name maps back.
        let g = crate::model::gemma3::GGUF_LAYOUT;
        assert_eq!(
            g.hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            g.hf_name("blk.5.post_attention_norm.weight").unwrap(),
            "model.layers.5.post_attention_layernorm.weight"
        );
        for (gguf, _) in g.layer_names {
            let name = format!("blk.7.{gguf}");
            assert_eq!(g.gguf_name(&g.hf_name(&name).unwrap()), name);
        }
        assert_eq!(g.permuted_heads("blk.0.attn_q.weight"), None);
        assert_eq!(llama.permuted_heads("blk.0.attn_q.weight"), Some(2));
        assert_eq!(llama.permuted_heads("blk.0.attn_k.weight"), Some(1));
    }
}
