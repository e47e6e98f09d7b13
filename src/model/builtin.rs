//! `builtin:tiny-llama`: a small Llama-family model that needs no download.
//!
//! Weights are drawn from a fixed seed with ChaCha8 (stable across platforms and rand
//! versions), scaled so that activations and logits have the magnitudes of a trained model
//! (logit standard deviation of a few units), since drift in bf16/f16 scales with them. The
//! tokenizer is a byte-level BPE trained in code on the text below, padded with reserved
//! tokens to exactly the model's vocabulary.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::llama::Config;

/// Names accepted after `builtin:`.
pub const NAMES: &[&str] = &["tiny-llama"];

/// Special tokens, in id order (ids 0, 1, 2).
pub const BOS: &str = "<|bos|>";
/// End of sequence.
pub const EOS: &str = "<|eos|>";
/// Padding.
pub const PAD: &str = "<|pad|>";

/// The seed every built-in weight is drawn from.
const WEIGHT_SEED: u64 = 0x5eed_d41f;

/// Hyper-parameters of `builtin:tiny-llama`: 12 layers (so traces of layers 0–8 exist),
/// grouped-query attention 4:2, a 1024-token vocabulary, 2048 positions of context.
pub fn config() -> Config {
    Config {
        vocab_size: 1024,
        hidden_size: 128,
        intermediate_size: 352,
        num_hidden_layers: 12,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 2048,
        tie_word_embeddings: true,
        explicit_head_dim: None,
        attention_bias: false,
        qk_norm: false,
        sliding_window: None,
        rope_llama3: None,
    }
}

/// The seeded f32 weights, under Hugging Face names.
pub fn weights(cfg: &Config) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(WEIGHT_SEED);
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f32, mean: f32| {
        let n: usize = shape.iter().product();
        let normal = Normal::new(0f32, 1f32).expect("unit normal");
        let data: Vec<f32> = (0..n)
            .map(|_| mean + std * normal.sample(&mut rng))
            .collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches data");
        w.insert(name, t);
    };
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let hd = cfg.head_dim();
    let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let fan = |n: usize| 1.0 / (n as f32).sqrt();
    // Residual-branch outputs shrink with depth so the residual stream stays O(1).
    let out_scale = fan(2 * cfg.num_hidden_layers);
    // Tied head: logits = norm(x) · E, so rows of norm ~4 give logit std ~4, like a trained LM.
    put(
        "model.embed_tokens.weight".into(),
        &[v, h],
        4.0 * fan(h),
        0.0,
    );
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        // Layer 0 writes 6× wider into the residual stream, so the stream leaves the current
        // token's own embedding direction: otherwise the tied head mostly predicts the input
        // token again and sampled continuations repeat one token. The later layers stay
        // small, which keeps the network out of the chaotic regime where rounding explodes.
        let out_scale = if l == 0 { 6.0 } else { out_scale };
        put(format!("{p}.input_layernorm.weight"), &[h], 0.1, 1.0);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[h],
            0.1,
            1.0,
        );
        // Queries/keys somewhat larger than 1/sqrt(fan_in) so attention is not uniform.
        put(
            format!("{p}.self_attn.q_proj.weight"),
            &[nq, h],
            2.0 * fan(h),
            0.0,
        );
        put(
            format!("{p}.self_attn.k_proj.weight"),
            &[nkv, h],
            2.0 * fan(h),
            0.0,
        );
        put(
            format!("{p}.self_attn.v_proj.weight"),
            &[nkv, h],
            fan(h),
            0.0,
        );
        put(
            format!("{p}.self_attn.o_proj.weight"),
            &[h, nq],
            fan(nq) * out_scale,
            0.0,
        );
        if cfg.attention_bias {
            put(format!("{p}.self_attn.q_proj.bias"), &[nq], 0.1, 0.0);
            put(format!("{p}.self_attn.k_proj.bias"), &[nkv], 0.1, 0.0);
            put(format!("{p}.self_attn.v_proj.bias"), &[nkv], 0.1, 0.0);
        }
        if cfg.qk_norm {
            put(format!("{p}.self_attn.q_norm.weight"), &[hd], 0.1, 1.0);
            put(format!("{p}.self_attn.k_norm.weight"), &[hd], 0.1, 1.0);
        }
        put(format!("{p}.mlp.gate_proj.weight"), &[i, h], fan(h), 0.0);
        put(format!("{p}.mlp.up_proj.weight"), &[i, h], fan(h), 0.0);
        put(
            format!("{p}.mlp.down_proj.weight"),
            &[h, i],
            fan(i) * out_scale,
            0.0,
        );
    }
    put("model.norm.weight".into(), &[h], 0.1, 1.0);
    if !cfg.tie_word_embeddings {
        put("lm_head.weight".into(), &[v, h], 4.0 * fan(h), 0.0);
    }
    w
}

/// A VarBuilder over the seeded weights, cast to `dtype` on `device`.
pub fn var_builder(cfg: &Config, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_tensors(weights(cfg), dtype, device)
}

/// sha256 of what defines the generated weights (name, seed, config, this generator's
/// version), standing in for the hash of weight files.
pub fn recipe_sha256(name: &str, cfg: &Config) -> String {
    use sha2::{Digest, Sha256};
    let recipe = format!(
        "builtin:{name};seed={WEIGHT_SEED};generator=chacha8-normal-v1;config={}",
        serde_json::to_string(cfg).unwrap_or_default()
    );
    let digest = Sha256::digest(recipe.as_bytes());
    crate::fsutil::hex(&digest)
}

/// English text the built-in tokenizer's merges are trained on.
const CORPUS: &str = include_str!("builtin_corpus.txt");

/// The built-in tokenizer: byte-level BPE trained on [`CORPUS`], exactly `vocab_size` ids
/// (ids 0–2 are BOS, EOS, PAD; unused ids at the top are `<|reserved_N|>`).
pub fn tokenizer(vocab_size: usize) -> tokenizers::Result<Tokenizer> {
    let specials: Vec<AddedToken> = [BOS, EOS, PAD]
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    // GPT-2 style: no space added in front of the text, so decode(encode(s)) == s.
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.train(&mut TrainerWrapper::BpeTrainer(trainer), CORPUS.lines())?;
    let have = tok.get_vocab_size(true);
    if have < vocab_size {
        let reserved: Vec<AddedToken> = (0..vocab_size - have)
            .map(|i| AddedToken::from(format!("<|reserved_{i}|>"), true))
            .collect();
        tok.add_special_tokens(reserved)?;
    }
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_has_exactly_the_model_vocab_and_round_trips() {
        let cfg = config();
        let tok = tokenizer(cfg.vocab_size).unwrap();
        assert_eq!(tok.get_vocab_size(true), cfg.vocab_size);
        assert_eq!(tok.token_to_id(BOS), Some(0));
        let text = "The capital of France is Paris.";
        let enc = tok.encode(text, false).unwrap();
        assert!(enc.get_ids().len() < text.len(), "merges were learned");
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    }

    #[test]
    fn tokenizer_training_is_deterministic() {
        // Each training uses fresh hash maps with fresh random seeds.
        let a = tokenizer(1024).unwrap();
        let b = tokenizer(1024).unwrap();
        let mut va: Vec<_> = a.get_vocab(true).into_iter().collect();
        let mut vb: Vec<_> = b.get_vocab(true).into_iter().collect();
        va.sort();
        vb.sort();
        assert_eq!(va, vb);
    }

    #[test]
    fn weights_are_seeded() {
        let cfg = config();
        let a = weights(&cfg);
        let b = weights(&cfg);
        let k = "model.layers.3.mlp.up_proj.weight";
        let da: Vec<f32> = a[k].flatten_all().unwrap().to_vec1().unwrap();
        let db: Vec<f32> = b[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(da, db);
    }
}
