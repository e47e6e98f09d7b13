//! Expansion of a sweep file into pairs: the cartesian product of the `sweep` lists minus
//! `exclude`, each (engine, weights, dtype) checked against what its implementation can do,
//! each prompt tokenized once and checked against the model's context length.

use std::collections::BTreeMap;

use super::checks::{
    available_memory, check_sizes, check_trace_and_inject, impossible_combinations,
};
use super::spec::{LoadKey, PairSpec, Plan, PlannedPrompt};
use crate::config::{LoadedConfig, PromptSource};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::{Error, Result};
use crate::model::{Capabilities, ModelInfo};

/// What an implementation can do with a model in one (engine, weights, dtype), or why that
/// combination does not exist.
pub type Support<'a> =
    &'a dyn Fn(Engine, WeightFormat, RunDtype) -> std::result::Result<Capabilities, String>;

/// Expands a validated config against a model's tokenizer and context length, and against
/// what each implementation under test can do (`support`): a combination that cannot exist
/// is bad input unless `exclude` drops it; a trace or fault an engine cannot apply is
/// refused; a pair it cannot run (a batched path on an engine without batches) is SKIPPED
/// with why. A kv_aligned pair on an engine that cannot cut its cache back runs with the
/// prompt alone in one forward ([`crate::path::CacheSource::PromptPrefill`]).
pub fn expand(cfg: &LoadedConfig, model: &ModelInfo, support: Support) -> Result<Plan> {
    let Product {
        mut pairs,
        excluded,
        caps,
    } = product(cfg, model, support)?;
    for q in &mut pairs {
        let k = &caps[&q.load_key()];
        q.cache_source = q
            .path
            .cache_source(q.kv_aligned, k.every_row, k.cache_prefix);
    }
    if pairs.is_empty() {
        return Err(Error::config(
            &cfg.path,
            "exclude",
            "the exclusions drop every pair",
        ));
    }
    let planned = plan_prompts(cfg, model, &pairs)?;
    check_spans(cfg, model, &pairs, &planned)?;
    super::positions::set_positions(cfg, model, &mut pairs, &planned)?;
    check_probes_supported(cfg, &caps)?;
    let skipped = pairs
        .iter()
        .filter_map(|q| skip_reason(q, &caps[&q.load_key()]).map(|why| (q.id.clone(), why)))
        .collect();
    let plan = Plan {
        pairs,
        prompts: planned,
        excluded,
        skipped,
        capabilities: caps,
        reference: {
            let (engine, weights) = model.reference_load();
            LoadKey {
                engine,
                weights,
                ..LoadKey::REFERENCE
            }
        },
    };
    check_trace_and_inject(cfg, model, &plan)?;
    check_sizes(cfg, model, &plan, available_memory())?;
    Ok(plan)
}

/// What the sweep lists multiply out to.
struct Product {
    /// The pairs `exclude` keeps.
    pairs: Vec<PairSpec>,
    /// How many pairs `exclude` dropped.
    excluded: usize,
    /// What each (engine, weights, dtype) that keeps a pair can do.
    caps: BTreeMap<LoadKey, Capabilities>,
}

/// The pairs the sweep lists multiply out to, checked against what each implementation can
/// do.
fn product(cfg: &LoadedConfig, model: &ModelInfo, support: Support) -> Result<Product> {
    let c = &cfg.config;
    let prompts = cfg.selected_prompts();
    let mut pairs = Vec::new();
    let mut excluded = 0;
    let mut caps = BTreeMap::new();
    let mut live = Vec::new();
    // (engine, weights, dtype) outermost: one model load per group.
    for (ei, &engine) in c.sweep.engine.iter().enumerate() {
        for (wi, &weights) in c.sweep.weights.iter().enumerate() {
            for (di, &dtype) in c.sweep.dtype.iter().enumerate() {
                let before = pairs.len();
                for p in &prompts {
                    for &span in &c.sweep.span {
                        for &kv in &c.sweep.kv_aligned {
                            for &path in &c.sweep.path {
                                for &seed in &c.sweep.seed {
                                    let pair = PairSpec::new(&p.id, span, dtype, kv, seed)
                                        .on(engine, weights)
                                        .via(path);
                                    if c.exclude.iter().any(|r| pair.matches(r)) {
                                        excluded += 1;
                                    } else {
                                        pairs.push(pair);
                                    }
                                }
                            }
                        }
                    }
                }
                if pairs.len() == before {
                    continue;
                }
                let key = LoadKey {
                    engine,
                    weights,
                    dtype,
                };
                live.push((key, (ei, wi, di)));
                if let Ok(k) = support(engine, weights, dtype) {
                    caps.insert(key, k);
                }
            }
        }
    }
    // Every impossible group at once, with one fix.
    if let Some(e) = impossible_combinations(cfg, model, support, &live) {
        return Err(e);
    }
    Ok(Product {
        pairs,
        excluded,
        caps,
    })
}

/// Each prompt some pair uses, tokenized once (texts) or sized (random tokens).
fn plan_prompts(
    cfg: &LoadedConfig,
    model: &ModelInfo,
    pairs: &[PairSpec],
) -> Result<BTreeMap<String, PlannedPrompt>> {
    let mut planned = BTreeMap::new();
    for p in &cfg.prompts {
        if !pairs.iter().any(|q| q.prompt == p.id) {
            continue;
        }
        let source = p.source.clone();
        let (len, text_ids) = match &source {
            PromptSource::Text(t) => {
                check_prompt_bytes(cfg, p, t, model)?;
                let ids = model.encode(t).map_err(|e| {
                    Error::config(
                        &cfg.path,
                        format!("prompts[{}].text", p.index),
                        e.to_string(),
                    )
                })?;
                (ids.len(), Some(ids))
            }
            PromptSource::RandomTokens(n) => (n.get(), None),
        };
        planned.insert(
            p.id.clone(),
            PlannedPrompt {
                id: p.id.clone(),
                source,
                len,
                text_ids,
            },
        );
    }
    Ok(planned)
}

/// Every (prompt, span) a pair uses fits in the model's context.
fn check_spans(
    cfg: &LoadedConfig,
    model: &ModelInfo,
    pairs: &[PairSpec],
    planned: &BTreeMap<String, PlannedPrompt>,
) -> Result<()> {
    let ctx = model.context_len();
    for (i, &span) in cfg.config.sweep.span.iter().enumerate() {
        for pp in planned.values() {
            let used = pairs.iter().any(|q| q.prompt == pp.id && q.span == span);
            // Checked: a span or random_tokens near usize::MAX must not wrap past the check.
            let needs = pp.len.checked_add(span);
            if used && needs.is_none_or(|n| n > ctx) {
                return Err(Error::config(
                    &cfg.path,
                    format!("sweep.span[{i}]"),
                    format!(
                        "span {span} after prompt `{}` ({} tokens) needs {} positions, but `{}` has a context of {ctx}",
                        pp.id,
                        pp.len,
                        needs.map_or("more than 2^64".to_string(), |n| n.to_string()),
                        model.source
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `trace` and `inject` need layer taps, which only some engines have.
fn check_probes_supported(
    cfg: &LoadedConfig,
    caps: &BTreeMap<LoadKey, Capabilities>,
) -> Result<()> {
    for (field, asked) in [
        ("trace", cfg.config.trace.is_some()),
        ("inject", cfg.config.inject.is_some()),
    ] {
        if let Some(k) = caps
            .iter()
            .find(|(_, k)| asked && !k.probes)
            .map(|(k, _)| k)
        {
            return Err(Error::config(
                &cfg.path,
                field,
                format!(
                    "engine `{}` has no layer taps or fault injection; only the `driftsweep` \
                     engine traces and injects (leave the other engine out of this sweep)",
                    k.engine
                ),
            ));
        }
    }
    Ok(())
}

/// Why a pair cannot run on an implementation with `caps`, if it cannot: decided when the
/// sweep is planned, so the pair is SKIPPED with the reason.
fn skip_reason(q: &PairSpec, caps: &Capabilities) -> Option<String> {
    if q.kv_aligned && !q.path.has_kv_aligned() {
        return Some(format!(
            "kv_aligned does not apply to path `{}`: a batched prefill carries no cache from \
             a prompt into a span (its kv_aligned = false pair is the one to read)",
            q.path
        ));
    }
    if q.path.batch() > 1 && !caps.batch {
        return Some(format!(
            "path `{}` needs batched forwards, and engine `{}` runs one sequence at a time",
            q.path, q.engine
        ));
    }
    None
}

/// The most bytes a prompt may have per position of the model's context: a text that long
/// cannot fit (no tokenizer packs this many bytes into a token), so it is refused before
/// tokenizing it, which would cost time and memory in proportion.
const MAX_PROMPT_BYTES_PER_POSITION: usize = 64;

fn check_prompt_bytes(
    cfg: &LoadedConfig,
    p: &crate::config::Prompt,
    text: &str,
    model: &ModelInfo,
) -> Result<()> {
    let ctx = model.context_len();
    let max = ctx.saturating_mul(MAX_PROMPT_BYTES_PER_POSITION);
    if text.len() > max {
        return Err(Error::config(
            &cfg.path,
            format!("prompts[{}]", p.index),
            format!(
                "`{}` is {} bytes, more than could fit in the context of `{}` ({ctx} \
                 positions, at most {MAX_PROMPT_BYTES_PER_POSITION} bytes each)",
                p.id,
                text.len(),
                model.source
            ),
        ));
    }
    Ok(())
}
