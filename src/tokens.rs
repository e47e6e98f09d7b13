//! The token ids both runs of a pair consume: the prompt (tokenized text or seeded random
//! ids) followed by the continuation (sampled, greedy or random, fixed by the seed).
//!
//! Every random choice draws from ChaCha8 seeded with sha256(purpose, prompt id, seed), so the
//! same (prompt, seed) gives the same ids on every machine, and two prompts or two purposes
//! never share a stream.

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::compare::argmax;
use crate::config::ContinuationMode;
use crate::error::{CandleContext, Result};
use crate::model::{ModelInfo, ModelUnderTest, Rows};
use crate::plan::PlannedPrompt;

fn rng_for(purpose: &str, prompt_id: &str, seed: u64) -> ChaCha8Rng {
    let digest = Sha256::digest(format!("{purpose}\0{prompt_id}\0{seed}").as_bytes());
    ChaCha8Rng::from_seed(digest.into())
}

/// Ids a random draw may produce: the vocabulary minus special tokens.
fn drawable_ids(info: &ModelInfo) -> Vec<u32> {
    (0..info.sizes().vocab_size as u32)
        .filter(|id| !info.special_ids.contains(id))
        .collect()
}

fn random_ids(info: &ModelInfo, n: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let pool = drawable_ids(info);
    (0..n)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect()
}

/// The prompt ids of `prompt` under `seed` (text prompts ignore the seed).
pub fn prompt_ids(info: &ModelInfo, prompt: &PlannedPrompt, seed: u64) -> Vec<u32> {
    match &prompt.text_ids {
        Some(ids) => ids.clone(),
        None => random_ids(info, prompt.len, &mut rng_for("prompt", &prompt.id, seed)),
    }
}

/// The `count` other sequences of a batched path for (prompt, seed), each `len` ids long:
/// seeded random ids (no special tokens), so that every row of the batch has the sequence of
/// interest's length and no padding exists. They come from their own stream, row after row,
/// so batch B's rows are a prefix of batch B + 1's.
pub fn companions(
    info: &ModelInfo,
    prompt_id: &str,
    seed: u64,
    len: usize,
    count: usize,
) -> Vec<Vec<u32>> {
    let mut rng = rng_for("companion", prompt_id, seed);
    (0..count)
        .map(|_| random_ids(info, len, &mut rng))
        .collect()
}

/// `len` continuation ids after `prompt`. `reference` is the f32 model, needed for sample and
/// greedy (the model's own distribution); random needs none.
pub fn continuation(
    info: &ModelInfo,
    reference: Option<&dyn ModelUnderTest>,
    prompt_id: &str,
    prompt: &[u32],
    len: usize,
    mode: ContinuationMode,
    seed: u64,
) -> Result<Vec<u32>> {
    let mut rng = rng_for("continuation", prompt_id, seed);
    let model = match (mode, reference) {
        (ContinuationMode::Random, _) => return Ok(random_ids(info, len, &mut rng)),
        (_, Some(m)) => m,
        (_, None) => {
            return Err(crate::Error::model(
                &info.source,
                format!("a {mode} continuation needs the f32 reference model"),
            ));
        }
    };
    let ctx = || format!("generating the {mode} continuation of `{prompt_id}` (seed {seed})");
    let mut seq = model.sequence(prompt.len() + len).context(ctx)?;
    let mut out = Vec::with_capacity(len);
    let no_logits = || candle_core::Error::Msg("the model returned no logits".into());
    // The own decoder computes the head over every prompt row here, as continuations were
    // always made: the last row of a P-row product can round differently from a one-row
    // product, and the continuation ids must not change with the code's layout.
    let rows = if model.capabilities().every_row {
        Rows::From(0)
    } else {
        Rows::last(prompt.len())
    };
    let mut logits = seq
        .forward(prompt, rows)
        .and_then(|l| l.ok_or_else(no_logits))
        .context(ctx)?;
    while out.len() < len {
        let last: Vec<f32> = logits
            .get(logits.dim(0).context(ctx)? - 1)
            .and_then(|r| r.to_vec1())
            .context(ctx)?;
        let next = match mode {
            ContinuationMode::Greedy => argmax(&last) as u32,
            _ => sample(&last, &mut rng),
        };
        out.push(next);
        if out.len() < len {
            logits = seq
                .forward(&[next], Rows::From(0))
                .and_then(|l| l.ok_or_else(no_logits))
                .context(ctx)?;
        }
    }
    Ok(out)
}

/// Greedy continuation of `prompt` by up to `max_tokens` tokens, stopping after the model's
/// end-of-sequence token (which is kept).
pub fn generate(
    info: &ModelInfo,
    model: &dyn ModelUnderTest,
    prompt: &[u32],
    max_tokens: usize,
) -> Result<Vec<u32>> {
    let mut out = continuation(
        info,
        Some(model),
        "generate",
        prompt,
        max_tokens,
        ContinuationMode::Greedy,
        0,
    )?;
    if let Some(i) = out.iter().position(|t| Some(*t) == info.eos_id) {
        out.truncate(i + 1);
    }
    Ok(out)
}

/// Draws from softmax(logits) at temperature 1, in f64.
fn sample(logits: &[f32], rng: &mut ChaCha8Rng) -> u32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits.iter().map(|&x| (x as f64 - m).exp()).collect();
    match WeightedIndex::new(&weights) {
        Ok(dist) => dist.sample(rng) as u32,
        // Non-finite logits: fall back to the argmax so the sweep can still show them.
        Err(_) => argmax(logits) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_differ_by_prompt() {
        let info = ModelInfo::inspect("builtin:tiny-llama").unwrap();
        let a = random_ids(&info, 16, &mut rng_for("prompt", "x", 0));
        let b = random_ids(&info, 16, &mut rng_for("prompt", "x", 0));
        let c = random_ids(&info, 16, &mut rng_for("prompt", "y", 0));
        let d = random_ids(&info, 16, &mut rng_for("prompt", "x", 1));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(a.iter().all(|id| !info.special_ids.contains(id)));
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Probabilities 1/6, 2/6, 3/6: each count of 6000 draws must lie within 5 binomial
        // standard deviations of its expectation. An argmax (all draws on index 2) or a
        // uniform draw fails.
        let mut rng = rng_for("t", "t", 0);
        let logits = [0.0f32, 2f32.ln(), 3f32.ln()];
        let n = 6000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[sample(&logits, &mut rng) as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = (i + 1) as f64 / 6.0;
            let mean = n as f64 * p;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (c as f64 - mean).abs() < 5.0 * sd,
                "index {i}: {c} draws, expected {mean:.0} ± {:.0}: {counts:?}",
                5.0 * sd
            );
        }
    }
}
