//! `driftsweep plan`: the runs and pairs a sweep file expands into, as a table or JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use driftsweep::config::ContinuationMode;
use driftsweep::model::ModelInfo;
use driftsweep::plan::estimate::{self, CostSource, Estimate, ObservedRun};
use driftsweep::plan::{LoadKey, Mode, Plan};
use driftsweep::{Error, config, exit, run, store, sweep};

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
    /// The results directory whose earlier run records price the estimate (default: the
    /// file's `output`, else results/<name>); without records, per-token costs measured
    /// once per (model, engine, weights, dtype, device) and cached.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print no time estimate (no calibration is measured).
    #[arg(long)]
    no_estimate: bool,
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
        return plan_models(&cfg, &a);
    }
    let (info, plan) = sweep::prepare(&cfg)?;
    let cost = Cost::of(&cfg, &info, &plan, !a.no_estimate, a.out.as_ref());
    if a.json {
        super::common::print_json(&plan_json(&plan, &cost));
    } else {
        print_plan_table(&cfg, &plan, &cost);
    }
    Ok(exit::PASS)
}

/// A sweep file with `models:`: each model's plan (or the error that keeps it from
/// running), then the totals. A model in error makes the exit code bad input, after the
/// others are shown.
fn plan_models(cfg: &config::LoadedConfig, a: &PlanArgs) -> Result<i32, Error> {
    let json = a.json;
    let prepared = sweep::models::prepare_models(cfg);
    let mut seconds = 0.0;
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
            Ok((info, plan)) => {
                let out = sweep::output_dir(cfg, a.out.as_ref())
                    .join("models")
                    .join(&m.id);
                let cost = Cost::of(&m.config, info, plan, !a.no_estimate, Some(&out));
                seconds += cost.estimate.as_ref().map_or(0.0, |e| e.total.seconds);
                pairs += plan.pairs.len();
                runs += plan.run_count();
                excluded += plan.excluded;
                loads += plan.load_groups(m.config.config.continuation).len();
                if json {
                    let mut v = plan_json(plan, &cost);
                    v["id"] = serde_json::json!(m.id);
                    models.push(v);
                } else {
                    outln!("\n## model `{}` (results in models/{})", m.id, m.id);
                    print_plan_table(&m.config, plan, &cost);
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
            "estimated_s": (!a.no_estimate).then_some(seconds),
            "models": models,
        }));
    } else {
        outln!(
            "\ntotal over {} model(s): {pairs} pairs, {runs} runs ({excluded} pairs excluded), \
             {loads} model load(s){}",
            prepared.len(),
            if a.no_estimate {
                String::new()
            } else {
                format!(", estimated {}", estimate::human_seconds(seconds))
            }
        );
    }
    Ok(code)
}

fn print_plan_table(cfg: &config::LoadedConfig, plan: &Plan, cost: &Cost) {
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
    print_forward_tokens(plan, &cost.skipped);
    print_estimate(cost);
    print_skipped(&cost.skipped);
    print_probes(cfg);
    outln!();
    print_pair_rows(plan, &cost.skipped);
}

/// The tokens the plan's forwards feed, and what a one-pass prefill would have fed.
fn print_forward_tokens(plan: &Plan, skipped: &BTreeMap<String, String>) {
    let (mut pre, mut dec, mut single) = (0, 0, 0);
    for p in plan.pairs.iter().filter(|p| !skipped.contains_key(&p.id)) {
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
fn print_pair_rows(plan: &Plan, skipped: &BTreeMap<String, String>) {
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
            if skipped.contains_key(&p.id) {
                "SKIPPED".to_string()
            } else {
                format!("{a}+{b}")
            }
        );
    }
}

/// The plan as JSON: counts, prompts, pairs, runs, the pairs SKIPPED and the estimate.
fn plan_json(plan: &Plan, cost: &Cost) -> serde_json::Value {
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
        "skipped": cost.skipped,
        "estimate": cost.estimate,
        "estimate_error": cost.error,
    })
}

/// The estimated seconds of a one-model sweep, for the progress bar's first ETA: from the
/// results directory's records and cached calibrations only (a run measures nothing extra);
/// `None` when neither prices every load or the file does not plan.
pub(super) fn estimated_seconds(cfg: &config::LoadedConfig, out: Option<&PathBuf>) -> Option<f64> {
    if cfg.is_multi() {
        return None;
    }
    let (info, plan) = sweep::prepare(cfg).ok()?;
    let cost = Cost::priced(cfg, &info, &plan, Some(false), out);
    let e = cost.estimate?;
    // A load without costs would make the estimate too small to start an ETA from.
    let priced = e
        .groups
        .iter()
        .all(|(_, g, src)| g.pairs == 0 || src.is_some());
    (priced && e.total.seconds > 0.0).then_some(e.total.seconds)
}

/// What a plan will cost and what will not run: the pairs SKIPPED (the plan's reasons and
/// the device's, as the run decides them) and the time estimate.
struct Cost {
    skipped: BTreeMap<String, String>,
    estimate: Option<Estimate>,
    /// Why there is no estimate (a calibration that failed), when it was asked for.
    error: Option<String>,
    /// The results directory whose records priced it, when some did.
    records: Option<PathBuf>,
}

impl Cost {
    /// The cost of `plan`; `calibrate`: measure the costs a load lacks (else the cache and
    /// the records alone, and no estimate at all when `estimate` is false).
    fn of(
        cfg: &config::LoadedConfig,
        info: &ModelInfo,
        plan: &Plan,
        estimate: bool,
        out: Option<&PathBuf>,
    ) -> Cost {
        Self::priced(cfg, info, plan, estimate.then_some(true), out)
    }

    fn priced(
        cfg: &config::LoadedConfig,
        info: &ModelInfo,
        plan: &Plan,
        measure: Option<bool>,
        out: Option<&PathBuf>,
    ) -> Cost {
        let device = run::open_device(cfg.config.device);
        let skipped = skip_reasons(plan, &device);
        let mut cost = Cost {
            skipped,
            estimate: None,
            error: None,
            records: None,
        };
        let Some(measure) = measure else {
            return cost;
        };
        let dir = sweep::output_dir(cfg, out);
        let observed = observed_runs(plan, info, &dir);
        if !observed.is_empty() {
            cost.records = Some(dir);
        }
        let mut prices = estimate::Prices {
            observed: estimate::observed_rates(&observed),
            skipped: cost.skipped.keys().cloned().collect(),
            record_s: if measure {
                estimate::record_cost()
            } else {
                0.0
            },
            ..Default::default()
        };
        if let Ok(d) = &device {
            let threads = candle_core::utils::get_num_threads();
            let mut price = |key: LoadKey, l: sweep::Lanes| {
                let ck = estimate::cache_key(info, key, &d.kind(), (l.count, l.threads_each));
                let on = (&d.device, (l.count, l.threads_each));
                match estimate::costs_for(info, key, on, &ck, measure) {
                    Ok(c) => c,
                    Err(e) => {
                        cost.error = Some(e.to_string());
                        None
                    }
                }
            };
            for key in plan
                .load_groups(cfg.config.continuation)
                .iter()
                .map(|g| g.key())
            {
                let runnable: Vec<_> = plan
                    .pairs
                    .iter()
                    .filter(|p| p.load_key() == key && !prices.skipped.contains(&p.id))
                    .collect();
                let own = plan.pairs.iter().any(|p| p.load_key() == key);
                if own && runnable.is_empty() {
                    continue;
                }
                // Pairs sharing a prefill are one unit of work, as the worker cuts them.
                let units: BTreeSet<_> = runnable
                    .iter()
                    .map(|p| (&p.prompt, p.span, p.seed))
                    .collect();
                let cpu = d.device.is_cpu();
                let l = sweep::group_lanes(info, key, cpu, threads, units.len().max(1), None);
                prices.lanes.insert(key, l.count);
                if let Some(c) = price(key, l) {
                    prices.costs.insert(key, c);
                }
                if key == plan.reference && cfg.config.continuation != ContinuationMode::Random {
                    // Continuations run on lanes of their own, one per (prompt, seed).
                    let n = plan.continuation_lengths().len().max(1);
                    let lc = sweep::group_lanes(info, key, cpu, threads, n, None);
                    let c = if lc == l {
                        prices.costs.get(&key).map(|c| c.0)
                    } else {
                        price(key, lc).map(|c| c.0)
                    };
                    prices.continuations = c.map(|c| (c, lc.count));
                }
            }
        }
        cost.estimate = Some(estimate::estimate(plan, cfg.config.continuation, &prices));
        cost
    }
}

/// Every pair the run will SKIP, with the run's reason: the plan's (what the model cannot
/// do), the device's when it cannot be opened, and a dtype the device cannot compute in
/// (the same checks, `run::open_device` and `run::dtype_support`, the sweep makes).
fn skip_reasons(
    plan: &Plan,
    device: &Result<run::OpenDevice, run::DeviceError>,
) -> BTreeMap<String, String> {
    let mut out = plan.skipped.clone();
    let mut dtype_ok: BTreeMap<LoadKey, Option<String>> = BTreeMap::new();
    for p in &plan.pairs {
        if out.contains_key(&p.id) {
            continue;
        }
        let why = match device {
            Err(e) => Some(e.to_string()),
            Ok(d) => dtype_ok
                .entry(p.load_key())
                .or_insert_with(|| {
                    run::dtype_support(&d.device, p.dtype)
                        .err()
                        .map(|e| e.to_string())
                })
                .clone(),
        };
        if let Some(why) = why {
            out.insert(p.id.clone(), why);
        }
    }
    out
}

/// The finished runs of this sweep's earlier sessions in `dir` (same model weights), with
/// what they fed and how long they took; none when the directory holds no sweep.
fn observed_runs(plan: &Plan, info: &ModelInfo, dir: &Path) -> Vec<ObservedRun> {
    if !dir.join(store::MANIFEST).is_file() {
        return Vec::new();
    }
    let Ok(st) = store::Store::open(dir) else {
        return Vec::new();
    };
    if st.manifest().ok().map(|m| m.model.sha256).as_ref() != Some(&info.sha256) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in &plan.pairs {
        for mode in [Mode::Prefill, Mode::Decode] {
            let Ok(Some(r)) = st.run(p, mode) else {
                continue;
            };
            // A reused prefill's wall time is its twin's: counted once.
            if r.status != store::RunStatus::Ok || r.reused_from.is_some() {
                continue;
            }
            if let Some(wall_s) = r.wall_s {
                out.push(ObservedRun {
                    key: p.load_key(),
                    mode,
                    kv_aligned: p.kv_aligned,
                    tokens_fed: r.tokens_fed,
                    wall_s,
                });
            }
        }
    }
    out
}

/// The estimate: per load group and in total, pairs, runs, tokens and time.
fn print_estimate(cost: &Cost) {
    if let Some(e) = &cost.error {
        outln!("estimate: not available ({e})");
    }
    let Some(est) = &cost.estimate else {
        return;
    };
    let source = |s: Option<CostSource>| match s {
        Some(CostSource::Records) => "earlier runs' records",
        Some(CostSource::Measured) => "calibrated now",
        Some(CostSource::Cached) => "cached calibration",
        None => "no costs",
    };
    outln!(
        "{:<40}  {:>5}  {:>5}  {:>12}  {:>12}  {:>12}  costs from",
        "group (engine/weights/dtype)",
        "pairs",
        "runs",
        "prefill tok",
        "decode tok",
        "est. time"
    );
    for (key, g, src) in &est.groups {
        outln!(
            "{:<40}  {:>5}  {:>5}  {:>12}  {:>12}  {:>12}  {}",
            key.to_string(),
            g.pairs,
            g.runs,
            g.prefill_tokens,
            g.decode_tokens,
            estimate::human_seconds(g.seconds),
            source(*src)
        );
    }
    if est.reference_s > 0.0 {
        outln!(
            "{:<40}  {:>5}  {:>5}  {:>12}  {:>12}  {:>12}",
            "reference (continuations, yardsticks)",
            "",
            "",
            "",
            "",
            estimate::human_seconds(est.reference_s)
        );
    }
    if est.records_s > 0.0 {
        outln!(
            "{:<40}  {:>5}  {:>5}  {:>12}  {:>12}  {:>12}",
            "records (written and fsynced)",
            "",
            "",
            "",
            "",
            estimate::human_seconds(est.records_s)
        );
    }
    let t = &est.total;
    outln!(
        "{:<40}  {:>5}  {:>5}  {:>12}  {:>12}  {:>12}",
        "total",
        t.pairs,
        t.runs,
        t.prefill_tokens,
        t.decode_tokens,
        estimate::human_seconds(t.seconds)
    );
    outln!(
        "estimated time: {}{}",
        estimate::human_seconds(t.seconds),
        cost.records.as_ref().map_or(String::new(), |d| format!(
            " (priced by the run records in {})",
            d.display()
        ))
    );
}

/// The pairs that will be SKIPPED, by reason.
fn print_skipped(skipped: &BTreeMap<String, String>) {
    if skipped.is_empty() {
        outln!("SKIPPED: none");
        return;
    }
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, why) in skipped {
        by_reason.entry(why).or_default().push(id);
    }
    outln!("SKIPPED: {} pair(s), by reason", skipped.len());
    for (why, ids) in by_reason {
        let shown: Vec<&str> = ids.iter().take(4).copied().collect();
        let more = if ids.len() > 4 {
            format!(", … {} more", ids.len() - 4)
        } else {
            String::new()
        };
        outln!(
            "  {} pair(s): {why} ({}{more})",
            ids.len(),
            shown.join(", ")
        );
    }
}

/// The sweep's `reference:`, `trace:` and `inject:` sections, in words.
fn print_probes(cfg: &config::LoadedConfig) {
    let reference = cfg.reference();
    let how = match &cfg.config.reference {
        None => "no `reference:` section",
        Some(r) if r.settled => "no engine named: settled on what is installed here",
        Some(_) => "named",
    };
    outln!("reference: {} ({how})", reference.label());
    match &cfg.config.trace {
        Some(t) => outln!(
            "trace: layers {}, tensors {}, positions {}, on {} (a traced pair is re-run with \
             taps: its time is not in the estimate)",
            json_words(&t.layers),
            json_words(&t.tensors),
            json_words(&t.positions),
            json_words(&t.on)
        ),
        None => outln!("trace: none"),
    }
    match &cfg.config.inject {
        Some(i) => outln!(
            "inject: {} (the decode path is perturbed on purpose)",
            driftsweep::report::describe_injection(i)
        ),
        None => outln!("inject: none"),
    }
}

/// A setting as compact JSON without quotes (`[0,1,2]`, `all`, `failures`).
fn json_words(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .replace('"', "")
}
