//! A model file's header checked against its weights before any work: the sizes it claims
//! must be positive and bounded, and every tensor the decoder will ask for must be present
//! with the shape those sizes imply. A header that lies would otherwise surface hours later
//! as a load failure, a panic while drawing random ids, or garbage weights reported as
//! drift. Every message names the file's key or tensor.

use std::collections::HashMap;

use super::decoder::Config;

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

/// Checks `cfg` against the tensors present, by Hugging Face name with their shapes
/// (row-major, `[out, in]` for a projection); `extra_norms` are per-block norms of width
/// hidden beyond Llama's two (Gemma 3's), by their name after `model.layers.N.`;
/// `file_name` turns a Hugging Face name into the file's own, for messages.
pub fn check(
    cfg: &Config,
    tensors: &HashMap<String, Vec<usize>>,
    keys: &Keys,
    extra_norms: &[&str],
    file_name: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    for (key, v) in [
        (&keys.vocab, cfg.vocab_size),
        (&keys.hidden, cfg.hidden_size),
        (&keys.intermediate, cfg.intermediate_size),
        (&keys.layers, cfg.num_hidden_layers),
        (&keys.context, cfg.max_position_embeddings),
    ] {
        if v == 0 {
            return Err(format!("{key} is 0"));
        }
    }
    for (key, v) in [
        (&keys.vocab, cfg.vocab_size),
        (&keys.hidden, cfg.hidden_size),
        (&keys.intermediate, cfg.intermediate_size),
    ] {
        if v > MAX_DIM {
            return Err(format!("{key} is {v}, more than {MAX_DIM}"));
        }
    }
    if cfg.max_position_embeddings > MAX_CONTEXT {
        return Err(format!(
            "{} is {}, more than the {MAX_CONTEXT} positions driftsweep sizes its tables for",
            keys.context, cfg.max_position_embeddings
        ));
    }
    let hd = cfg.head_dim();
    if hd == 0 {
        return Err("the head dimension is 0".into());
    }
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads.saturating_mul(hd),
        cfg.num_key_value_heads.saturating_mul(hd),
    );
    let mut want: Vec<(String, Vec<usize>, &str)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h], "vocab"),
        ("model.norm.weight".into(), vec![h], "hidden"),
    ];
    if !cfg.tie_word_embeddings {
        want.push(("lm_head.weight".into(), vec![v, h], "vocab"));
    }
    for l in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        want.extend([
            (p("input_layernorm.weight"), vec![h], "hidden"),
            (p("post_attention_layernorm.weight"), vec![h], "hidden"),
            (p("self_attn.q_proj.weight"), vec![q, h], "hidden"),
            (p("self_attn.k_proj.weight"), vec![kv, h], "hidden"),
            (p("self_attn.v_proj.weight"), vec![kv, h], "hidden"),
            (p("self_attn.o_proj.weight"), vec![h, q], "hidden"),
            (p("mlp.gate_proj.weight"), vec![i, h], "intermediate"),
            (p("mlp.up_proj.weight"), vec![i, h], "intermediate"),
            (p("mlp.down_proj.weight"), vec![h, i], "intermediate"),
        ]);
        if cfg.qk_norm {
            want.extend([
                (p("self_attn.q_norm.weight"), vec![hd], "hidden"),
                (p("self_attn.k_norm.weight"), vec![hd], "hidden"),
            ]);
        }
        want.extend(extra_norms.iter().map(|n| (p(n), vec![h], "hidden")));
    }
    let key_of = |which: &str| match which {
        "vocab" => &keys.vocab,
        "intermediate" => &keys.intermediate,
        _ => &keys.hidden,
    };
    for (name, shape, which) in &want {
        match tensors.get(name) {
            None if name.starts_with("model.layers.") => {
                return Err(format!(
                    "{} says {} blocks, but tensor `{}` is missing",
                    keys.layers,
                    cfg.num_hidden_layers,
                    file_name(name)
                ));
            }
            None => return Err(format!("tensor `{}` is missing", file_name(name))),
            Some(got) if got != shape => {
                return Err(format!(
                    "tensor `{}` has shape {got:?}, but the header ({} and the head counts) \
                     implies {shape:?}",
                    file_name(name),
                    key_of(which)
                ));
            }
            Some(_) => {}
        }
    }
    // More blocks in the weights than the header claims: the rest would be silently unused.
    let extra = format!("model.layers.{}.", cfg.num_hidden_layers);
    if let Some(name) = tensors.keys().find(|n| n.starts_with(&extra)) {
        return Err(format!(
            "{} says {} blocks, but the weights have tensor `{}` of block {}",
            keys.layers,
            cfg.num_hidden_layers,
            file_name(name),
            cfg.num_hidden_layers
        ));
    }
    Ok(())
}

/// Random prompts and continuations draw from the ordinary (non-special) ids: a vocabulary
/// with none cannot run them, and is refused before any work rather than panicking there.
pub fn check_drawable(vocab: usize, special_ids: &[u32], vocab_key: &str) -> Result<(), String> {
    let special = special_ids
        .iter()
        .filter(|&&id| (id as usize) < vocab)
        .collect::<std::collections::HashSet<_>>()
        .len();
    if special >= vocab {
        return Err(format!(
            "{vocab_key}: all {vocab} tokens are special (control) tokens, so no ordinary id \
             can be drawn"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        crate::model::builtin::config()
    }

    fn shapes(cfg: &Config) -> HashMap<String, Vec<usize>> {
        let mut m = HashMap::new();
        let (h, i, v, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.vocab_size,
            cfg.head_dim(),
        );
        let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        m.insert("model.embed_tokens.weight".into(), vec![v, h]);
        m.insert("model.norm.weight".into(), vec![h]);
        m.insert("lm_head.weight".into(), vec![v, h]);
        for l in 0..cfg.num_hidden_layers {
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

    fn run(cfg: &Config, t: &HashMap<String, Vec<usize>>) -> Result<(), String> {
        check(cfg, t, &Keys::gguf("llama"), &[], &|n| n.to_string())
    }

    #[test]
    fn consistent_headers_pass_and_each_lie_is_named() {
        let cfg = tiny();
        let t = shapes(&cfg);
        run(&cfg, &t).unwrap();
        let lie = |f: &dyn Fn(&mut Config), words: &str| {
            let mut c = cfg.clone();
            f(&mut c);
            let e = run(&c, &t).unwrap_err();
            assert!(e.contains(words), "{words}: {e}");
        };
        lie(&|c| c.vocab_size = 0, "`tokenizer.ggml.tokens` is 0");
        lie(&|c| c.hidden_size = 0, "`llama.embedding_length` is 0");
        lie(&|c| c.num_hidden_layers += 1, "`llama.block_count` says");
        lie(&|c| c.num_hidden_layers -= 1, "the weights have tensor");
        lie(&|c| c.intermediate_size += 1, "`llama.feed_forward_length`");
        lie(
            &|c| c.max_position_embeddings = usize::MAX,
            "`llama.context_length`",
        );
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
