//! The tokenizer of a GGUF file, from its `tokenizer.ggml.*` metadata: byte-level BPE with
//! merges (`gpt2`) or SentencePiece tokens with scores (`llama`, [`crate::model::spm`]).

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use super::read::{get, get_u32, open, strings};
use crate::model::error::ModelError;

/// What the tokenizer metadata of a GGUF file gives.
pub struct GgufTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// BOS id, when the file asks for BOS in front of prompts.
    pub bos_id: Option<u32>,
    /// Control tokens.
    pub special_ids: Vec<u32>,
    /// End-of-sequence id.
    pub eos_id: Option<u32>,
}

/// Tokenizer models read from `tokenizer.ggml.model`.
pub const TOKENIZER_MODELS: &[&str] = &["gpt2", "llama"];

/// Reads the tokenizer of a GGUF file alone, whatever its architecture (a tokenizer can be
/// checked before the decoder supports the model).
pub fn tokenizer(path: &Path) -> Result<GgufTokenizer, ModelError> {
    let (c, _, _) = open(path)?;
    let tokens = strings(&c, "tokenizer.ggml.tokens")?;
    read_tokenizer(&c, &tokens)
}

/// The tokenizer of `tokenizer.ggml.model`: `gpt2` (byte-level BPE with merges) or `llama`
/// (SentencePiece tokens with scores, [`crate::model::spm`]).
pub(super) fn read_tokenizer(c: &Content, tokens: &[String]) -> Result<GgufTokenizer, ModelError> {
    let model = get(c, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| e.to_string())?
        .clone();
    // Token types (llama.cpp's: 1 normal, 3 control, 4 user-defined, 6 byte).
    let types: Vec<i32> = get(c, "tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().map_err(|e| ModelError::from(e.to_string())))
        .map(|v| v.iter().map(|x| x.to_i32().unwrap_or(1)).collect())
        .unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(format!(
            "tokenizer.ggml.token_type has {} entries but there are {} tokens",
            types.len(),
            tokens.len()
        )
        .into());
    }
    let (tokenizer, special_ids) = match model.as_str() {
        "gpt2" => byte_level_bpe(c, tokens, &types)?,
        "llama" => {
            let scores: Vec<f32> = get(c, "tokenizer.ggml.scores")?
                .to_vec()
                .map_err(|e| format!("metadata key `tokenizer.ggml.scores`: {e}"))?
                .iter()
                .map(|v| {
                    v.to_f32()
                        .map_err(|e| format!("tokenizer.ggml.scores: {e}"))
                })
                .collect::<Result<_, _>>()?;
            if types.is_empty() {
                return Err("metadata key `tokenizer.ggml.token_type` is missing".into());
            }
            let prefix = c
                .metadata
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(true);
            let unk = get_u32(c, "tokenizer.ggml.unknown_token_id").ok();
            crate::model::spm::tokenizer(tokens, &scores, &types, prefix, unk)?
        }
        _ => {
            return Err(format!(
                "tokenizer model `{model}` is not supported; supported: gpt2 (byte-level BPE), \
                 llama (SentencePiece tokens with scores)"
            )
            .into());
        }
    };
    let add_bos = c
        .metadata
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let bos_id = if add_bos {
        get_u32(c, "tokenizer.ggml.bos_token_id").ok()
    } else {
        None
    };
    let eos_id = get_u32(c, "tokenizer.ggml.eos_token_id").ok();
    for (key, id) in [("bos", bos_id), ("eos", eos_id)] {
        if let Some(id) = id
            && id as usize >= tokens.len()
        {
            return Err(format!(
                "tokenizer.ggml.{key}_token_id {id} is outside the vocabulary of {}",
                tokens.len()
            )
            .into());
        }
    }
    Ok(GgufTokenizer {
        tokenizer,
        bos_id,
        special_ids,
        eos_id,
    })
}

/// A byte-level BPE tokenizer from `tokenizer.ggml.merges`; control tokens (type 3) are
/// matched whole in text, like `<|im_start|>`.
fn byte_level_bpe(
    c: &Content,
    tokens: &[String],
    types: &[i32],
) -> Result<(Tokenizer, Vec<u32>), ModelError> {
    let merges: Vec<(String, String)> = strings(c, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("malformed merge `{m}`"))
        })
        .collect::<Result<_, _>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building the BPE tokenizer: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let pre = match c
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
    {
        // SmolLM's pre-tokenizer splits digits one by one before the GPT-2 regex.
        Some("smollm") => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])),
        _ => PreTokenizerWrapper::ByteLevel(byte_level),
    };
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let special_ids: Vec<u32> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3)
        .map(|(i, _)| i as u32)
        .collect();
    let specials: Vec<AddedToken> = special_ids
        .iter()
        .map(|&i| AddedToken::from(tokens[i as usize].clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| format!("adding special tokens: {e}"))?;
    Ok((tokenizer, special_ids))
}
