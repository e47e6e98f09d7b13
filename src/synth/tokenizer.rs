//! The tokenizer that comes with a synthetic checkpoint: exactly `vocab_size` tokens, so the
//! model's embedding and the tokenizer agree (`hf_dir::inspect` checks it).
//!
//! - `vocab_size` ≥ 259: the built-in model's byte-level BPE (trained in code, with
//!   `<|bos|>`, `<|eos|>`, `<|pad|>` at ids 0–2), any text tokenizes.
//! - 256–258: plain byte level (one token per byte, no merges), reserved tokens on top.
//! - below 256: ids only (`<|id_N|>`); text prompts fail to tokenize, random-token prompts run.

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::builtin;

/// A tokenizer of exactly `vocab_size` tokens (see the module's comment for which kind).
pub fn tokenizer(vocab_size: usize) -> Result<Tokenizer, String> {
    let tok = if vocab_size >= 259 {
        builtin::tokenizer(vocab_size).map_err(|e| e.to_string())?
    } else if vocab_size >= 256 {
        bytes_only(vocab_size).map_err(|e| e.to_string())?
    } else {
        ids_only(vocab_size).map_err(|e| e.to_string())?
    };
    let have = tok.get_vocab_size(true);
    if have != vocab_size {
        return Err(format!(
            "the tokenizer has {have} tokens, the model {vocab_size}"
        ));
    }
    Ok(tok)
}

/// One token per byte and `vocab_size - 256` reserved ones.
fn bytes_only(vocab_size: usize) -> tokenizers::Result<Tokenizer> {
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(256)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    // Nothing to learn beyond the alphabet: one line so that the trainer runs.
    tok.train(&mut TrainerWrapper::BpeTrainer(trainer), ["a"].into_iter())?;
    let reserved: Vec<AddedToken> = (256..vocab_size)
        .map(|i| AddedToken::from(format!("<|reserved_{}|>", i - 256), true))
        .collect();
    tok.add_special_tokens(reserved)?;
    Ok(tok)
}

/// `<|id_N|>` for every id, no unknown token: text does not tokenize.
fn ids_only(vocab_size: usize) -> tokenizers::Result<Tokenizer> {
    let model = WordLevel::builder()
        .vocab(
            (0..vocab_size as u32)
                .map(|i| (format!("<|id_{i}|>"), i))
                .collect(),
        )
        .unk_token("<|no_such_id|>".to_string())
        .build()?;
    let mut tok = Tokenizer::new(ModelWrapper::WordLevel(model));
    tok.with_pre_tokenizer(Some(WhitespaceSplit));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_the_vocabulary_and_bytes_round_trip() {
        for v in [16, 255, 256, 258, 259, 300] {
            assert_eq!(tokenizer(v).unwrap().get_vocab_size(true), v, "{v}");
        }
        let t = tokenizer(256).unwrap();
        let enc = t.encode("héllo wörld", false).unwrap();
        assert!(enc.get_ids().iter().all(|&i| i < 256));
        assert_eq!(t.decode(enc.get_ids(), false).unwrap(), "héllo wörld");
        let t = tokenizer(16).unwrap();
        assert!(t.encode("hello", false).is_err(), "ids-only refuses text");
    }
}
