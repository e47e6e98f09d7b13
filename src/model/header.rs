//! A model file's header checked against its weights before any work: the sizes it claims
//! must be positive and bounded, and every tensor the decoder will ask for must be present
//! with the shape those sizes imply. A header that lies would otherwise surface hours later
//! as a load failure, a panic while drawing random ids, or garbage weights reported as
//! drift. Every message names the file's key or tensor.

use std::collections::HashMap;

use super::error::ModelError;

/// The longest context accepted: the rotary tables are sized by the context a header
/// claims, and beyond this a claim costs gigabytes before the first token.
pub const MAX_CONTEXT: usize = 1 << 20;

/// The widest hidden, intermediate or vocabulary size accepted from a header, before any
/// tensor is looked at: far above any real model, far below sizes whose products overflow.
pub const MAX_DIM: usize = 1 << 24;

/// How the file spells each size it claims, for messages (`llama.block_count`,
/// `config.json num_hidden_layers`).
#[derive(Debug, Clone)]
pub struct Keys {
    /// The vocabulary size's source.
    pub vocab: String,
    /// The hidden size's key.
    pub hidden: String,
    /// The MLP width's key.
    pub intermediate: String,
    /// The block count's key.
    pub layers: String,
    /// The context length's key.
    pub context: String,
}

impl Keys {
    /// The keys of a Hugging Face `config.json`.
    pub fn config_json() -> Self {
        let k = |s: &str| format!("config.json `{s}`");
        Keys {
            vocab: k("vocab_size"),
            hidden: k("hidden_size"),
            intermediate: k("intermediate_size"),
            layers: k("num_hidden_layers"),
            context: k("max_position_embeddings"),
        }
    }

    /// The keys of a GGUF file of architecture `arch`.
    pub fn gguf(arch: &str) -> Self {
        let k = |s: &str| format!("`{arch}.{s}`");
        Keys {
            vocab: "`tokenizer.ggml.tokens`".into(),
            hidden: k("embedding_length"),
            intermediate: k("feed_forward_length"),
            layers: k("block_count"),
            context: k("context_length"),
        }
    }
}

/// What a family's decoder reads, as a header claims it: the sizes checked for bounds, and
/// the tensors they imply (by Hugging Face name).
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the MLP.
    pub intermediate: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Context length.
    pub context: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// The output head is the embedding (no `lm_head.weight`).
    pub tied: bool,
    /// Per-head q/k norms of width head_dim.
    pub qk_norm: bool,
    /// Per-block norms of width hidden beyond Llama's two, by their name after
    /// `model.layers.N.` (Gemma 3's).
    pub extra_norms: &'static [&'static str],
}

impl Expected {
    /// The number of parameters in the tensors these sizes imply.
    pub fn parameter_count(&self) -> u64 {
        wanted(self)
            .iter()
            .map(|(_, shape, _)| shape.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }
}

/// Checks what `expected` claims against the tensors present, by Hugging Face name with their
/// shapes (row-major, `[out, in]` for a projection); `file_name` turns a Hugging Face name into
/// the file's own, for messages.
pub fn check(
    expected: &Expected,
    tensors: &HashMap<String, Vec<usize>>,
    keys: &Keys,
    file_name: &dyn Fn(&str) -> String,
) -> Result<(), ModelError> {
    check_sizes(expected, keys)?;
    check_tensors(expected, tensors, keys, file_name)
}

/// The claimed sizes are positive and bounded.
fn check_sizes(e: &Expected, keys: &Keys) -> Result<(), ModelError> {
    for (key, v) in [
        (&keys.vocab, e.vocab),
        (&keys.hidden, e.hidden),
        (&keys.intermediate, e.intermediate),
        (&keys.layers, e.layers),
        (&keys.context, e.context),
    ] {
        if v == 0 {
            return Err(format!("{key} is 0").into());
        }
    }
    for (key, v) in [
        (&keys.vocab, e.vocab),
        (&keys.hidden, e.hidden),
        (&keys.intermediate, e.intermediate),
    ] {
        if v > MAX_DIM {
            return Err(format!("{key} is {v}, more than {MAX_DIM}").into());
        }
    }
    if e.context > MAX_CONTEXT {
        return Err(format!(
            "{} is {}, more than the {MAX_CONTEXT} positions driftsweep sizes its tables for",
            keys.context, e.context
        )
        .into());
    }
    if e.head_dim == 0 {
        return Err("the head dimension is 0".into());
    }
    Ok(())
}

/// Which size a tensor's shape follows, for messages.
#[derive(Clone, Copy)]
enum Dim {
    Vocab,
    Hidden,
    Intermediate,
}

/// The tensors `e` implies, in the order they are checked.
fn wanted(e: &Expected) -> Vec<(String, Vec<usize>, Dim)> {
    let (h, i, v, hd) = (e.hidden, e.intermediate, e.vocab, e.head_dim);
    let (q, kv) = (e.heads.saturating_mul(hd), e.kv_heads.saturating_mul(hd));
    let mut want: Vec<(String, Vec<usize>, Dim)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h], Dim::Vocab),
        ("model.norm.weight".into(), vec![h], Dim::Hidden),
    ];
    if !e.tied {
        want.push(("lm_head.weight".into(), vec![v, h], Dim::Vocab));
    }
    for l in 0..e.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        want.extend([
            (p("input_layernorm.weight"), vec![h], Dim::Hidden),
            (p("post_attention_layernorm.weight"), vec![h], Dim::Hidden),
            (p("self_attn.q_proj.weight"), vec![q, h], Dim::Hidden),
            (p("self_attn.k_proj.weight"), vec![kv, h], Dim::Hidden),
            (p("self_attn.v_proj.weight"), vec![kv, h], Dim::Hidden),
            (p("self_attn.o_proj.weight"), vec![h, q], Dim::Hidden),
            (p("mlp.gate_proj.weight"), vec![i, h], Dim::Intermediate),
            (p("mlp.up_proj.weight"), vec![i, h], Dim::Intermediate),
            (p("mlp.down_proj.weight"), vec![h, i], Dim::Intermediate),
        ]);
        if e.qk_norm {
            want.extend([
                (p("self_attn.q_norm.weight"), vec![hd], Dim::Hidden),
                (p("self_attn.k_norm.weight"), vec![hd], Dim::Hidden),
            ]);
        }
        want.extend(e.extra_norms.iter().map(|n| (p(n), vec![h], Dim::Hidden)));
    }
    want
}

/// Every tensor the sizes imply is present with its shape, and no block beyond them.
fn check_tensors(
    e: &Expected,
    tensors: &HashMap<String, Vec<usize>>,
    keys: &Keys,
    file_name: &dyn Fn(&str) -> String,
) -> Result<(), ModelError> {
    let key_of = |which: Dim| match which {
        Dim::Vocab => &keys.vocab,
        Dim::Intermediate => &keys.intermediate,
        Dim::Hidden => &keys.hidden,
    };
    for (name, shape, which) in &wanted(e) {
        match tensors.get(name) {
            None if name.starts_with("model.layers.") => {
                return Err(format!(
                    "{} says {} blocks, but tensor `{}` is missing",
                    keys.layers,
                    e.layers,
                    file_name(name)
                )
                .into());
            }
            None => return Err(format!("tensor `{}` is missing", file_name(name)).into()),
            Some(got) if got != shape => {
                return Err(format!(
                    "tensor `{}` has shape {got:?}, but the header ({} and the head counts) \
                     implies {shape:?}",
                    file_name(name),
                    key_of(*which)
                )
                .into());
            }
            Some(_) => {}
        }
    }
    // More blocks in the weights than the header claims: the rest would be silently unused.
    let extra = format!("model.layers.{}.", e.layers);
    if let Some(name) = tensors.keys().find(|n| n.starts_with(&extra)) {
        return Err(format!(
            "{} says {} blocks, but the weights have tensor `{}` of block {}",
            keys.layers,
            e.layers,
            file_name(name),
            e.layers
        )
        .into());
    }
    Ok(())
}

/// Head counts and width a decoder can run: positive counts, query heads in whole groups
/// per key/value head, an even head width for RoPE, and, when the head width is implied
/// (`hidden` given), a hidden size that splits into the heads.
pub fn check_heads(
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: Option<usize>,
) -> Result<(), ModelError> {
    if heads == 0 || kv_heads == 0 {
        return Err("head counts must be positive".into());
    }
    if let Some(hidden) = hidden
        && !hidden.is_multiple_of(heads)
    {
        return Err(format!(
            "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )
        .into());
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(format!(
            "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        )
        .into());
    }
    if !head_dim.is_multiple_of(2) {
        return Err(format!("head_dim {head_dim} must be even for RoPE").into());
    }
    Ok(())
}

/// Random prompts and continuations draw from the ordinary (non-special) ids: a vocabulary
/// with none cannot run them, and is refused before any work rather than panicking there.
pub fn check_drawable(
    vocab: usize,
    special_ids: &[u32],
    vocab_key: &str,
) -> Result<(), ModelError> {
    let special = special_ids
        .iter()
        .filter(|&&id| (id as usize) < vocab)
        .collect::<std::collections::HashSet<_>>()
        .len();
    if special >= vocab {
        return Err(format!(
            "{vocab_key}: all {vocab} tokens are special (control) tokens, so no ordinary id \
             can be drawn"
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in model's claims.
    fn tiny() -> Expected {
        Expected {
            vocab: 1024,
            hidden: 128,
            intermediate: 352,
            layers: 12,
            context: 2048,
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
            tied: true,
            qk_norm: false,
            extra_norms: &[],
        }
    }

    fn shapes(cfg: &Expected) -> HashMap<String, Vec<usize>> {
        let mut m = HashMap::new();
        let (h, i, v, hd) = (cfg.hidden, cfg.intermediate, cfg.vocab, cfg.head_dim);
        let (q, kv) = (cfg.heads * hd, cfg.kv_heads * hd);
        m.insert("model.embed_tokens.weight".into(), vec![v, h]);
        m.insert("model.norm.weight".into(), vec![h]);
        m.insert("lm_head.weight".into(), vec![v, h]);
        for l in 0..cfg.layers {
            for (s, shape) in [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![q, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, q]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ] {
                m.insert(format!("model.layers.{l}.{s}"), shape);
            }
        }
        m
    }

    fn run(cfg: &Expected, t: &HashMap<String, Vec<usize>>) -> Result<(), ModelError> {
        check(cfg, t, &Keys::gguf("llama"), &|n| n.to_string())
    }

    #[test]
    fn consistent_headers_pass_and_each_lie_is_named() {
        let cfg = tiny();
        let t = shapes(&cfg);
        run(&cfg, &t).unwrap();
        let lie = |f: &dyn Fn(&mut Expected), words: &str| {
            let mut c = cfg.clone();
            f(&mut c);
            let e = run(&c, &t).unwrap_err();
            assert!(e.contains(words), "{words}: {e}");
        };
        lie(&|c| c.vocab = 0, "`tokenizer.ggml.tokens` is 0");
        lie(&|c| c.hidden = 0, "`llama.embedding_length` is 0");
        lie(&|c| c.layers += 1, "`llama.block_count` says");
        lie(&|c| c.layers -= 1, "the weights have tensor");
        lie(&|c| c.intermediate += 1, "`llama.feed_forward_length`");
        lie(&|c| c.context = usize::MAX, "`llama.context_length`");
        let mut t2 = t.clone();
        t2.insert("model.norm.weight".into(), vec![1]);
        assert!(run(&cfg, &t2).unwrap_err().contains("model.norm.weight"));
    }

    #[test]
    fn a_vocabulary_of_control_tokens_only_is_refused() {
        check_drawable(3, &[0, 1], "v").unwrap();
        let e = check_drawable(3, &[0, 1, 2, 2, 7], "v").unwrap_err();
        assert!(e.contains("all 3 tokens are special"), "{e}");
        assert!(check_drawable(0, &[], "v").is_err());
    }
}
