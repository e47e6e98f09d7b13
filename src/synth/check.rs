//! The checks every synthetic spec passes before anything is built, shared by the sweep file
//! (`model.synthetic`) and `driftsweep synth SPEC`: each error names the spec's field, and the
//! caller prefixes it with where the spec came from.

use crate::config::SynthSpec;
use crate::model::Architecture;

/// Most parameters a synthetic checkpoint may have: it is made in memory and written in f32
/// (50 M parameters are 200 MB), and a sweep of it should run in seconds.
pub const MAX_PARAMETERS: u128 = 50_000_000;
/// Longest context: the modules build rotary tables of `context × head_dim` at load.
pub const MAX_CONTEXT: usize = 131_072;

/// `model_type`s whose candle-transformers module derives a head's width as
/// `hidden_size / heads` whatever `config.json` says, so a spec must keep the two consistent
/// (otherwise the checkpoint would mean one shape to candle and another to transformers).
const DERIVED_HEAD_DIM: [&str; 11] = [
    "llama",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "olmo",
    "olmo2",
    "granite",
    "starcoder2",
    "mpt",
    "yi",
    "glm4",
];

/// A spec refused: the field (`kv_heads`, `config.rope_scaling`, or empty for the whole spec)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The spec's field, dotted.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl SpecError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        SpecError {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The error of a message from the architecture's config writer, which starts with the
    /// knob in backticks (`` `experts`: ... ``) or the extra field (`config.x: ...`).
    pub fn from_arch(message: String) -> Self {
        let field = if let Some(rest) = message.strip_prefix('`')
            && let Some((knob, _)) = rest.split_once("`: ")
        {
            knob.to_string()
        } else if message.starts_with("config.")
            && let Some((f, _)) = message.split_once(": ")
        {
            f.to_string()
        } else {
            "architecture".to_string()
        };
        SpecError { field, message }
    }
}

impl std::fmt::Display for SpecError {
    /// `` `field`: message `` (the architecture's messages name their knob already).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = format!("`{}`", self.field);
        if self.field.is_empty() || self.message.starts_with(&named) {
            f.write_str(&self.message)
        } else {
            write!(f, "{named}: {}", self.message)
        }
    }
}

/// Checks `spec` before anything is built: a known architecture with synthetic checkpoints,
/// no zero or hostile sizes, heads that group, a window inside the context, experts that add
/// up, and only the knobs and `config` fields the architecture has.
pub fn check(spec: &SynthSpec) -> Result<Architecture, SpecError> {
    let arch = Architecture::from_config_json(Some(&spec.architecture), None)
        .map_err(|e| SpecError::new("architecture", e.to_string()))?;
    check_sizes(spec)?;
    check_heads(spec)?;
    check_window_and_experts(spec)?;
    check_scalars(spec)?;
    check_parameters(spec)?;
    let config = super::arch::config_json(arch, spec).map_err(SpecError::from_arch)?;
    if let Some(k) = spec
        .config
        .keys()
        .find(|k| config.get(k.as_str()).is_none())
    {
        return Err(SpecError::new(
            &format!("config.{k}"),
            format!("architecture `{arch}` has no such config.json field"),
        ));
    }
    Ok(arch)
}

fn check_sizes(s: &SynthSpec) -> Result<(), SpecError> {
    let sizes = [
        ("layers", Some(s.layers)),
        ("hidden_size", Some(s.hidden_size)),
        ("heads", Some(s.heads)),
        ("kv_heads", s.kv_heads),
        ("head_dim", s.head_dim),
        ("intermediate_size", Some(s.intermediate_size)),
        ("vocab_size", Some(s.vocab_size)),
        ("context", Some(s.context)),
        ("sliding_window", s.sliding_window),
        ("sliding_window_pattern", s.sliding_window_pattern),
        ("experts", s.experts),
        ("experts_per_token", s.experts_per_token),
    ];
    for (field, v) in sizes {
        if v == Some(0) {
            return Err(SpecError::new(field, "must be at least 1"));
        }
    }
    if s.context > MAX_CONTEXT {
        return Err(SpecError::new(
            "context",
            format!(
                "{} positions is more than synthetic checkpoints allow ({MAX_CONTEXT})",
                s.context
            ),
        ));
    }
    Ok(())
}

fn check_heads(s: &SynthSpec) -> Result<(), SpecError> {
    let kv = s.kv_heads();
    if kv > s.heads || !s.heads.is_multiple_of(kv) {
        return Err(SpecError::new(
            "kv_heads",
            format!("{kv} key/value heads do not divide {} heads", s.heads),
        ));
    }
    if s.head_dim.is_none() && !s.hidden_size.is_multiple_of(s.heads) {
        return Err(SpecError::new(
            "heads",
            format!(
                "hidden_size {} is not a multiple of {} heads (set head_dim)",
                s.hidden_size, s.heads
            ),
        ));
    }
    if !s.head_dim().is_multiple_of(2) {
        return Err(SpecError::new(
            "head_dim",
            format!("{} is odd: rotary embeddings rotate pairs", s.head_dim()),
        ));
    }
    if DERIVED_HEAD_DIM.contains(&s.architecture.as_str())
        && s.head_dim() * s.heads != s.hidden_size
    {
        return Err(SpecError::new(
            "head_dim",
            format!(
                "head_dim {} × {} heads must equal hidden_size {}: candle-transformers' `{}` \
                 computes a head's width as hidden_size / heads",
                s.head_dim(),
                s.heads,
                s.hidden_size,
                s.architecture
            ),
        ));
    }
    Ok(())
}

fn check_window_and_experts(s: &SynthSpec) -> Result<(), SpecError> {
    if let Some(w) = s.sliding_window
        && w > s.context
    {
        return Err(SpecError::new(
            "sliding_window",
            format!("{w} is wider than the context ({})", s.context),
        ));
    }
    match (s.experts, s.experts_per_token) {
        (None, Some(_)) => Err(SpecError::new(
            "experts_per_token",
            "needs `experts` (the experts per layer)",
        )),
        (Some(e), Some(k)) if k > e => Err(SpecError::new(
            "experts_per_token",
            format!("{k} is more than the {e} experts per layer"),
        )),
        _ => Ok(()),
    }
}

fn check_scalars(s: &SynthSpec) -> Result<(), SpecError> {
    let positive = [
        ("rope_theta", s.rope_theta),
        ("attn_logit_softcapping", s.attn_logit_softcapping),
        ("final_logit_softcapping", s.final_logit_softcapping),
    ];
    for (field, v) in positive {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(SpecError::new(
                field,
                format!("{v} must be finite and positive"),
            ));
        }
    }
    if let Some(f) = s.partial_rotary_factor
        && !(f > 0.0 && f <= 1.0)
    {
        return Err(SpecError::new(
            "partial_rotary_factor",
            format!("{f} must be in (0, 1]"),
        ));
    }
    Ok(())
}

/// An estimate of the parameters (embedding, head, attention, MLP per expert), in u128 so
/// that hostile sizes cannot overflow it.
pub fn parameter_estimate(s: &SynthSpec) -> (u128, u128) {
    let [h, v, l, i, q, kv] = [
        s.hidden_size,
        s.vocab_size,
        s.layers,
        s.intermediate_size,
        s.heads.saturating_mul(s.head_dim()),
        s.kv_heads().saturating_mul(s.head_dim()),
    ]
    .map(|x| x as u128);
    let heads = if s.tie_embeddings == Some(true) { 1 } else { 2 };
    let vocab = heads * v * h;
    let experts = s.experts.unwrap_or(1).max(1) as u128;
    let layer = 2 * h * q + 2 * h * kv + 3 * h * i * experts;
    (vocab, l * layer)
}

fn check_parameters(s: &SynthSpec) -> Result<(), SpecError> {
    let (vocab, layers) = parameter_estimate(s);
    let total = vocab + layers;
    if total > MAX_PARAMETERS {
        let field = if vocab >= layers {
            "vocab_size"
        } else {
            "layers"
        };
        return Err(SpecError::new(
            field,
            format!(
                "about {total} parameters ({vocab} in the embedding and head, {layers} in the \
                 layers): synthetic checkpoints are capped at {MAX_PARAMETERS}"
            ),
        ));
    }
    Ok(())
}
