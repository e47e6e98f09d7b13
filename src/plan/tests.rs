//! Unit tests of the plan: expansion, ids, exclusions and the checks against the model.

use super::*;
use crate::config::ContinuationMode;
use crate::dtype::RunDtype;
use crate::error::Result;
use crate::model::ModelInfo;
use std::path::Path;

fn plan_of(yaml: &str) -> Result<Plan> {
    let cfg = crate::config::parse(Path::new("t.yaml"), yaml)?;
    let info = ModelInfo::inspect(&cfg.config.model.source)?;
    expand(&cfg, &info, &|e, w, d| {
        info.support(e, w, d).map_err(String::from)
    })
}

const BASE: &str = r#"
name: t
model: {source: "builtin:tiny-llama"}
prompts:
  - {id: p0_short, text: "What is the capital of France?"}
  - {id: r8, random_tokens: 8}
sweep:
  span: [32, 128, 512]
  dtype: [bf16, f16]
  kv_aligned: [false, true]
  seed: [0, 1, 2]
"#;

#[test]
fn cartesian_product_counts() {
    let p = plan_of(BASE).unwrap();
    assert_eq!(p.pairs.len(), 2 * 3 * 2 * 2 * 3);
    assert_eq!(p.run_count(), 144);
    assert_eq!(p.dtypes(), vec![RunDtype::Bf16, RunDtype::F16]);
    assert_eq!(p.prompts["r8"].len, 8);
    assert!(p.prompts["p0_short"].len > 1);
}

#[test]
fn run_ids_are_stable_and_readable() {
    let p = plan_of(BASE).unwrap();
    let pair = p
        .pairs
        .iter()
        .find(|q| q.prompt == "p0_short" && q.span == 128 && q.kv_aligned && q.seed == 0)
        .unwrap();
    assert_eq!(
        pair.run_id(Mode::Prefill),
        "p0_short.s128.bf16.kv1.seed0.prefill"
    );
    let mut ids: Vec<_> = p.pairs.iter().map(|q| q.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), p.pairs.len(), "ids are unique");
}

#[test]
fn exclude_is_a_partial_match() {
    let yaml = format!(
        "{BASE}exclude:\n  - {{span: 512, dtype: bf16}}\n  - {{prompt: r8, kv_aligned: 0}}\n"
    );
    let p = plan_of(&yaml).unwrap();
    // 12 pairs of (512, bf16) per... : 2 prompts × 2 kv × 3 seeds = 12; r8 kv0: 3 spans × 2
    // dtypes × 3 seeds = 18; overlap (r8, 512, bf16, kv0): 3.
    assert_eq!(p.excluded, 12 + 18 - 3);
    assert_eq!(p.pairs.len(), 72 - 27);
    assert!(
        !p.pairs
            .iter()
            .any(|q| q.span == 512 && q.dtype == RunDtype::Bf16)
    );
}

#[test]
fn sweep_prompt_selects() {
    let yaml = BASE.replace("  seed: [0, 1, 2]", "  seed: [0, 1, 2]\n  prompt: [r8]");
    let p = plan_of(&yaml).unwrap();
    assert_eq!(p.pairs.len(), 36);
    assert_eq!(p.prompts.keys().collect::<Vec<_>>(), vec!["r8"]);
}

#[test]
fn span_beyond_context_is_an_error() {
    let e = plan_of(&BASE.replace("[32, 128, 512]", "[32, 2045]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sweep.span[1]"), "{e}");
    assert!(e.contains("context of 2048"), "{e}");
}

#[test]
fn excluding_everything_is_an_error() {
    let e = plan_of(&format!(
        "{BASE}exclude:\n  - {{seed: 0}}\n  - {{seed: 1}}\n  - {{seed: 2}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("drop every pair"), "{e}");
}

#[test]
fn trace_selection_and_its_errors() {
    let yaml = format!("{BASE}trace: {{layers: [0, 11], tensors: [q], positions: last}}\n");
    let p = plan_of(&yaml).unwrap();
    let cfg = crate::config::parse(Path::new("t.yaml"), &yaml).unwrap();
    let pair = p
        .pairs
        .iter()
        .find(|q| q.prompt == "r8" && q.span == 32)
        .unwrap();
    let sel = p.trace_selection(cfg.config.trace.as_ref().unwrap(), pair);
    assert_eq!(sel.positions, [8 + 32 - 1].into());
    assert_eq!(sel.layers, Some([0, 11].into()));
    let e = plan_of(&format!(
        "{BASE}trace: {{layers: [12], tensors: all, positions: span}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("trace.layers[0]") && e.contains("layers 0–11"),
        "{e}"
    );
    let e = plan_of(&format!(
        "{BASE}trace: {{layers: all, tensors: all, positions: [5, 9999]}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("trace.positions[1]"), "{e}");
    let e = plan_of(&format!(
        "{BASE}inject: {{tensor: q, layer: 40, epsilon: 0.1}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("inject.layer"), "{e}");
}

#[test]
fn load_groups_add_the_f32_reference_once() {
    let p = plan_of(BASE).unwrap();
    let g = p.load_groups(ContinuationMode::Sample);
    assert_eq!(g.len(), 3);
    assert_eq!(
        (g[0].dtype, g[0].purpose()),
        (RunDtype::F32, "continuation+yardstick".into())
    );
    // Random continuations need no reference, but bf16 and f16 prefills are still
    // measured against the f32 one: a yardstick-only load.
    let g = p.load_groups(ContinuationMode::Random);
    assert_eq!(g.len(), 3);
    assert_eq!(
        (g[0].dtype, g[0].purpose()),
        (RunDtype::F32, "yardstick".into())
    );
    let p = plan_of(&BASE.replace("[bf16, f16]", "[bf16, f32]")).unwrap();
    let g = p.load_groups(ContinuationMode::Greedy);
    assert_eq!(g.len(), 2);
    assert_eq!(
        (g[0].dtype, g[0].purpose()),
        (RunDtype::F32, "continuation+runs+yardstick".into())
    );
}

#[test]
fn continuation_lengths_take_the_longest_span() {
    let p = plan_of(BASE).unwrap();
    let l = p.continuation_lengths();
    assert_eq!(l.len(), 2 * 3);
    assert!(l.values().all(|&n| n == 512));
}

#[test]
fn a_batch_whose_logits_exceed_the_memory_is_refused_with_the_numbers() {
    let yaml = "name: t\nmodel: {source: \"builtin:tiny-llama\"}\n\
                prompts:\n  - {id: r8, random_tokens: 8}\n\
                sweep:\n  span: [8]\n  dtype: [f32]\n  kv_aligned: [false]\n  seed: [0]\n  \
                path: [batched_prefill:64]\n";
    let cfg = crate::config::parse(Path::new("t.yaml"), yaml).unwrap();
    let info = ModelInfo::inspect(&cfg.config.model.source).unwrap();
    let plan = crate::plan::expand(&cfg, &info, &|e, w, d| {
        info.support(e, w, d).map_err(String::from)
    })
    .unwrap();
    let need = super::checks::batch_logits_bytes(64, 16, info.sizes().vocab_size).unwrap();
    let e = super::checks::check_sizes(&cfg, &info, &plan, Some(need - 1)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("sweep.path[0]") && msg.contains("MiB"),
        "{msg}"
    );
    // Negative controls: enough memory, or none known (then only MAX_BATCH bounds it).
    super::checks::check_sizes(&cfg, &info, &plan, Some(need)).unwrap();
    super::checks::check_sizes(&cfg, &info, &plan, None).unwrap();
}
