//! `driftsweep plan`: the runs and pairs a sweep file expands into, as a table or JSON.

use std::path::PathBuf;

use driftsweep::plan::{Mode, Plan};
use driftsweep::{Error, config, exit, sweep};

/// Options of `driftsweep plan`.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// The sweep file (YAML).
    config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The most pairs the sweep may expand into.
    #[arg(long, default_value_t = config::DEFAULT_MAX_PAIRS)]
    max_pairs: usize,
}

/// Expands the sweep file and prints its plan.
pub fn plan(a: PlanArgs) -> Result<i32, Error> {
    let cfg = config::load_with(
        &a.config,
        &config::LoadLimits {
            max_pairs: a.max_pairs,
        },
    )?;
    if cfg.is_multi() {
        return plan_models(&cfg, a.json);
    }
    let (_, plan) = sweep::prepare(&cfg)?;
    if a.json {
        super::common::print_json(&plan_json(&plan));
    } else {
        print_plan_table(&cfg, &plan);
    }
    Ok(exit::PASS)
}

/// A sweep file with `models:`: each model's plan (or the error that keeps it from
/// running), then the totals. A model in error makes the exit code bad input, after the
/// others are shown.
fn plan_models(cfg: &config::LoadedConfig, json: bool) -> Result<i32, Error> {
    let prepared = sweep::models::prepare_models(cfg);
    let mut code = exit::PASS;
    let (mut pairs, mut runs, mut excluded, mut loads) = (0, 0, 0, 0);
    let mut models = Vec::new();
    if !json {
        let ids: Vec<&str> = prepared.iter().map(|(m, _)| m.id.as_str()).collect();
        outln!(
            "sweep `{}`: {} model(s), one sub-sweep each, in this order: {}",
            cfg.config.name,
            ids.len(),
            ids.join(", ")
        );
    }
    for (m, prep) in &prepared {
        match prep {
            Ok((_, plan)) => {
                pairs += plan.pairs.len();
                runs += plan.run_count();
                excluded += plan.excluded;
                loads += plan.load_groups(m.config.config.continuation).len();
                if json {
                    let mut v = plan_json(plan);
                    v["id"] = serde_json::json!(m.id);
                    models.push(v);
                } else {
                    outln!("\n## model `{}` (results in models/{})", m.id, m.id);
                    print_plan_table(&m.config, plan);
                }
            }
            Err(e) => {
                code = exit::BAD_INPUT;
                if json {
                    models.push(serde_json::json!({"id": m.id, "error": e.to_string()}));
                } else {
                    outln!("\n## model `{}`: not runnable", m.id);
                    eprintln!("{e}");
                }
            }
        }
    }
    if json {
        super::common::print_json(&serde_json::json!({
            "counts": {"models": prepared.len(), "pairs": pairs, "runs": runs, "excluded": excluded},
            "models": models,
        }));
    } else {
        outln!(
            "\ntotal over {} model(s): {pairs} pairs, {runs} runs ({excluded} pairs excluded), \
             {loads} model load(s)",
            prepared.len()
        );
    }
    Ok(code)
}

fn print_plan_table(cfg: &config::LoadedConfig, plan: &Plan) {
    outln!(
        "sweep `{}`: model {}, device {}, continuation {}",
        cfg.config.name,
        cfg.config.model.source,
        cfg.config.device,
        cfg.config.continuation
    );
    let groups = plan.load_groups(cfg.config.continuation);
    outln!(
        "{} pairs, {} runs ({} pairs excluded), {} model load(s): {}",
        plan.pairs.len(),
        plan.run_count(),
        plan.excluded,
        groups.len(),
        groups
            .iter()
            .map(|g| format!("{} ({})", g.key(), g.purpose()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_forward_tokens(plan);
    if let Some(i) = &cfg.config.inject {
        outln!(
            "fault injection: {}",
            serde_json::to_string(i).unwrap_or_default()
        );
    }
    outln!();
    print_pair_rows(plan);
}

/// The tokens the plan's forwards feed, and what a one-pass prefill would have fed.
fn print_forward_tokens(plan: &Plan) {
    let (mut pre, mut dec, mut single) = (0, 0, 0);
    for p in plan
        .pairs
        .iter()
        .filter(|p| !plan.skipped.contains_key(&p.id))
    {
        let (a, b) = plan.forward_tokens(p);
        pre += a;
        dec += b;
        single += plan.prompts[&p.prompt].len + p.span;
    }
    outln!(
        "forward tokens: {pre} in prefill runs{}, {dec} in decode runs (SKIPPED pairs cost none)",
        if pre > single {
            format!(
                " ({single} if every prefill were one pass: engines that return only the last \
                 row prefill once per prefix)"
            )
        } else {
            String::new()
        }
    );
}

/// One row per pair: its run ids, settings and the tokens its runs feed.
fn print_pair_rows(plan: &Plan) {
    let w = plan
        .pairs
        .iter()
        .map(|p| p.run_id(Mode::Prefill).len())
        .max()
        .unwrap_or(0);
    outln!(
        "{:<w$}  {:<w$}  {:>6}  {:>6}  {:>5}  {:>3}  {:>5}  {:<19}  {:<11}  {:>12}",
        "prefill run",
        "decode run",
        "prompt",
        "span",
        "dtype",
        "kv",
        "seed",
        "engine",
        "weights",
        "tokens fed"
    );
    for p in &plan.pairs {
        let (a, b) = plan.forward_tokens(p);
        outln!(
            "{:<w$}  {:<w$}  {:>6}  {:>6}  {:>5}  {:>3}  {:>5}  {:<19}  {:<11}  {:>12}",
            p.run_id(Mode::Prefill),
            p.run_id(Mode::Decode),
            plan.prompts[&p.prompt].len,
            p.span,
            p.dtype.as_str(),
            u8::from(p.kv_aligned),
            p.seed,
            p.engine.as_str(),
            p.weights.as_str(),
            format!("{a}+{b}")
        );
    }
}

/// The plan as JSON: counts, prompts, pairs and runs.
fn plan_json(plan: &Plan) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = plan
        .pairs
        .iter()
        .flat_map(|p| {
            [Mode::Prefill, Mode::Decode]
                .map(|m| serde_json::json!({"id": p.run_id(m), "pair": p.id, "mode": m}))
        })
        .collect();
    serde_json::json!({
        "counts": {"pairs": plan.pairs.len(), "runs": plan.run_count(), "excluded": plan.excluded},
        "prompts": plan.prompts,
        "pairs": plan.pairs,
        "runs": runs,
    })
}
