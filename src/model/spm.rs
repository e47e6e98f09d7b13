//! SentencePiece-style tokenizers from GGUF metadata (`tokenizer.ggml.model = llama`: tokens
//! with scores and types, as Gemma 3 ships them), built with the `tokenizers` crate the way
//! transformers converts a SentencePiece BPE model (its `GemmaConverter`):
//!
//! - the model is BPE whose merges are every split (left, right) of a normal token into two
//!   vocabulary tokens, ranked by the merged token's score, highest first (SentencePiece's BPE
//!   merges the adjacent pair whose concatenation scores highest), with byte fallback: a
//!   character outside the vocabulary becomes its UTF-8 bytes `<0xXX>`;
//! - the normalizer turns spaces into `▁` (U+2581), with a `▁` in front only when
//!   `tokenizer.ggml.add_space_prefix` says so (Gemma 3: no);
//! - control tokens (type 3) are special and user-defined tokens (type 4: `\n`, runs of
//!   spaces, `\t`, markup) are plain added tokens; both are matched whole in the raw text,
//!   before normalization, as transformers and llama.cpp match them;
//! - decoding maps `▁` back to spaces and byte tokens back to bytes.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

use super::error::ModelError;

/// GGUF token types (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The space marker.
const SPACE: &str = "\u{2581}";

/// Builds the tokenizer from the vocabulary (`tokens[i]` has id i), the scores and the token
/// types. Returns it with the ids of the control tokens.
pub fn tokenizer(
    tokens: &[String],
    scores: &[f32],
    types: &[i32],
    add_space_prefix: bool,
    unk: Option<u32>,
) -> Result<(Tokenizer, Vec<u32>), ModelError> {
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(format!(
            "{} tokens but {} scores and {} token types",
            tokens.len(),
            scores.len(),
            types.len()
        )
        .into());
    }
    let mut vocab = tokenizers::models::bpe::Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        // A repeated token keeps its first id, as a lookup by text finds it.
        vocab.entry(t.clone()).or_insert(i as u32);
    }
    let merges = merges(tokens, scores, types, &vocab);
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk.and_then(|u| tokens.get(u as usize)) {
        bpe = bpe.unk_token(u.clone());
    }
    let bpe = bpe
        .build()
        .map_err(|e| format!("building the SentencePiece BPE tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let replace = Replace::new(" ", SPACE).map_err(|e| e.to_string())?;
    let normalizer = if add_space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new(SPACE.into())),
            NormalizerWrapper::Replace(replace),
        ]))
    } else {
        NormalizerWrapper::Replace(replace)
    };
    tok.with_normalizer(Some(normalizer))
        .map_err(|e| format!("setting the normalizer: {e}"))?;
    tok.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
        DecoderWrapper::Replace(Replace::new(SPACE, " ").map_err(|e| e.to_string())?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]))));
    let mut special_ids = Vec::new();
    let mut specials = Vec::new();
    let mut user = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(types).enumerate() {
        match *ty {
            CONTROL => {
                special_ids.push(i as u32);
                specials.push(AddedToken::from(t.clone(), true).normalized(false));
            }
            USER_DEFINED => user.push(AddedToken::from(t.clone(), false).normalized(false)),
            _ => {}
        }
    }
    tok.add_special_tokens(specials)
        .map_err(|e| format!("adding control tokens: {e}"))?;
    tok.add_tokens(user)
        .map_err(|e| format!("adding user-defined tokens: {e}"))?;
    Ok((tok, special_ids))
}

/// Every split of a normal token into two vocabulary tokens, the splits of higher-scoring
/// tokens first (a token's own splits by the ids of their parts).
fn merges(
    tokens: &[String],
    scores: &[f32],
    types: &[i32],
    vocab: &tokenizers::models::bpe::Vocab,
) -> Vec<(String, String)> {
    let mut all: Vec<(f32, u32, u32, usize, usize)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if types[i] != NORMAL || vocab.get(t) != Some(&(i as u32)) {
            continue;
        }
        let mut own: Vec<(u32, u32, usize)> = t
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = t.split_at(at);
                Some((*vocab.get(l)?, *vocab.get(r)?, at))
            })
            .collect();
        own.sort_unstable();
        all.extend(own.into_iter().map(|(l, r, at)| (scores[i], l, r, i, at)));
    }
    // Stable: equal scores keep the order of their tokens' ids.
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    all.into_iter()
        .map(|(_, _, _, i, at)| {
            let (l, r) = tokens[i].split_at(at);
            (l.to_string(), r.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Tokenizer {
        let t: Vec<String> = [
            "<unk>", "<bos>", "\n", "<0x41>", "<0xC3>", "<0xA9>", "▁", "a", "b", "ab", "▁a", "▁ab",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let scores = [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0,
        ];
        let types = [3, 3, 4, 6, 6, 6, 1, 1, 1, 1, 1, 1];
        tokenizer(&t, &scores, &types, false, Some(0)).unwrap().0
    }

    #[test]
    fn merges_by_score_bytes_for_unknown_characters_specials_whole() {
        let tok = toy();
        let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
        // In " ab", "ab" (score -4) merges before "▁a" (-5), then ▁ + ab gives "▁ab".
        assert_eq!(ids(" ab"), [11]);
        assert_eq!(ids(" a"), [10]);
        assert_eq!(ids("ba"), [8, 7]);
        // é is not in the vocabulary: its two UTF-8 bytes.
        assert_eq!(ids("é"), [4, 5]);
        assert_eq!(ids("a<bos>\nb"), [7, 1, 2, 8]);
        assert_eq!(tok.decode(&[6, 9, 4, 5, 2], false).unwrap(), " abé\n");
    }
}
