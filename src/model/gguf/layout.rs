//! How a family's GGUF tensors become its decoder's checkpoint-named weights: the names
//! every family shares (embedding, final norm, head), the family's per-block names, and
//! whether llama.cpp permuted the Q/K rows (Llama conversions only), undone on load.

/// One family's GGUF layout (each family names its own: `llama::gguf_layout`,
/// `gemma3::GGUF_LAYOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// GGUF names of a block's tensors (after `blk.N.`), with their Hugging Face names (after
    /// `model.layers.N.`).
    pub layer_names: &'static [(&'static str, &'static str)],
    /// The query and key/value head counts whose Q/K rows llama.cpp permuted, if it did.
    pub permuted: Option<(usize, usize)>,
}

impl Layout {
    /// GGUF tensor name → checkpoint name (`None`: a tensor the decoder does not read).
    pub fn hf_name(self, name: &str) -> Option<String> {
        rename(name, 0, self.layer_names)
    }

    /// Checkpoint name → GGUF name (for messages about a GGUF file).
    pub fn gguf_name(self, name: &str) -> String {
        rename(name, 1, self.layer_names).unwrap_or_else(|| name.to_string())
    }

    /// The head count whose rows llama.cpp permuted in tensor `name`, if it did.
    pub fn permuted_heads(self, name: &str) -> Option<usize> {
        match self.permuted {
            Some((heads, _)) if name.ends_with("attn_q.weight") => Some(heads),
            Some((_, kv_heads)) if name.ends_with("attn_k.weight") => Some(kv_heads),
            _ => None,
        }
    }
}

/// GGUF names of the tensors outside the layers, with their Hugging Face names.
const FIXED_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Maps a tensor name through the tables (`layer` for a block's tensors), from column `from`
/// to the other: GGUF → Hugging Face with 0, back with 1.
fn rename(name: &str, from: usize, layer_names: &[(&'static str, &'static str)]) -> Option<String> {
    let pick = |pair: &(&'static str, &'static str)| {
        if from == 0 {
            (pair.0, pair.1)
        } else {
            (pair.1, pair.0)
        }
    };
    if let Some((_, to)) = FIXED_NAMES.iter().map(pick).find(|(f, _)| *f == name) {
        return Some(to.to_string());
    }
    let (prefix, other) = if from == 0 {
        ("blk.", "model.layers.")
    } else {
        ("model.layers.", "blk.")
    };
    let (layer, t) = name.strip_prefix(prefix)?.split_once('.')?;
    let (_, to) = layer_names.iter().map(pick).find(|(f, _)| *f == t)?;
    Some(format!("{other}{layer}.{to}"))
}
