//! Runs a planned sweep: one device worker thread does all model work, group by group (one
//! weight load per (model, dtype, device)); a tokio runtime writes each run's record the moment
//! it arrives and compares each pair as soon as both its runs are in, while the worker is
//! already computing the next run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::compare;
use crate::config::{ContinuationMode, LoadedConfig, RunDtype, TraceOn};
use crate::error::{Error, Result};
use crate::model::{Decoder, ModelInfo};
use crate::plan::{self, LoadGroup, Mode, PairSpec, Plan};
use crate::report;
use crate::run::{self, RunOutput};
use crate::store::TraceFile;
use crate::store::{
    self, Manifest, ModelIdentity, ModelLoad, PairRecord, RunRecord, RunStatus, SequenceRecord,
    Session, Store, ToolInfo,
};
use crate::tokens;
use crate::trace::{self, Injection, TraceRecord, TraceSelection};
use crate::verdict::{self, PairVerdict, Thresholds};

/// How to run a sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Results directory; overrides the config's `output`.
    pub out: Option<PathBuf>,
    /// Show the progress bar (it is also hidden when stderr is not a terminal).
    pub progress: bool,
    /// Throw away an existing results directory's records instead of resuming from them or
    /// refusing a directory made by another sweep.
    pub start_over: bool,
    /// Run only this shard of the plan (`--shard K/N`); its default results directory is
    /// `<output>.shards/K-of-N`.
    pub shard: Option<crate::shard::Shard>,
}

/// Set by SIGINT/SIGTERM: the device worker finishes the run it is in and stops.
static STOP: AtomicBool = AtomicBool::new(false);

/// Makes the first SIGINT or SIGTERM stop the sweep after the current run (the report is then
/// written and marked INCOMPLETE); a second one exits at once (every file already written is
/// whole, and the next run resumes).
pub fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: stopping now; run the same command to resume");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing the current run, then writing the report (again to stop now)"
        );
    })
    .map_err(|e| Error::store(".", format!("cannot install the interrupt handler: {e}")))
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// What a sweep invocation produced.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// The rendered reports.
    pub rendered: report::Rendered,
    /// It stopped on a signal before finishing its work (exit 130).
    pub interrupted: bool,
    /// Pairs reused from an earlier session of the same sweep.
    pub reused_pairs: usize,
}

/// The results directory a sweep writes to.
pub fn output_dir(cfg: &LoadedConfig, out: Option<&PathBuf>) -> PathBuf {
    out.cloned()
        .or_else(|| cfg.config.output.clone())
        .unwrap_or_else(|| PathBuf::from("results").join(&cfg.config.name))
}

/// Runs the sweep described by `cfg` and renders its reports. Input errors (model, plan,
/// results directory) come back before any model work. A results directory already holding
/// part of this sweep is resumed: its finished pairs are kept and only the rest is computed.
pub fn run_sweep(cfg: &LoadedConfig, opts: &SweepOptions) -> Result<SweepOutcome> {
    let started = Instant::now();
    let info = ModelInfo::for_config(cfg)?;
    let plan = plan::expand(cfg, &info)?;
    let dir = match opts.shard {
        Some(s) if opts.out.is_none() => crate::shard::shard_dir(&output_dir(cfg, None), s),
        _ => output_dir(cfg, opts.out.as_ref()),
    };
    let config_sha256 = cfg.sha256();
    let device = run::open_device(cfg.config.device);
    let (device_id, device_name) = match &device {
        Ok(d) => (d.id.clone(), d.name.clone()),
        Err(why) => (cfg.config.device.to_string(), format!("unavailable: {why}")),
    };
    let previous = previous_results(&dir, &config_sha256, &info, &device_name, opts.start_over)?;
    // A shard runs only its pairs, but keeps the whole plan: its continuations are generated
    // at the plan's longest span, so its token ids and metrics are a single run's.
    let shard = crate::shard::for_sweep(cfg, &plan, opts.shard, &dir, previous.as_ref())?;
    let store = Store::create(&dir).map_err(|e| match (&opts.out, &cfg.config.output) {
        // The directory came from the sweep file: say which file and field chose it.
        (None, Some(_)) => Error::config(&cfg.path, "output", e.to_string()),
        _ => e,
    })?;
    save_templates(cfg, &store)?;

    let done = match &previous {
        Some(_) => finished_pairs(cfg, &plan, &store)?,
        None => HashSet::new(),
    };
    let todo: Vec<usize> = (0..plan.pairs.len())
        .filter(|i| !done.contains(&plan.pairs[*i].id))
        .filter(|i| shard.as_ref().is_none_or(|s| s.owns(*i)))
        .collect();
    let session = Session {
        started_at: store::now(),
        reused_pairs: done.len(),
        planned_pairs: todo.len(),
        tool: Some(ToolInfo::current()),
        ..Session::default()
    };
    let mut manifest = match previous {
        Some(mut m) => {
            // Same sweep identity, model and device: only this session's facts change.
            m.tool = ToolInfo::current();
            m.finished_at = None;
            m.wall_s = None;
            m
        }
        None => Manifest {
            tool: ToolInfo::current(),
            sweep_name: cfg.config.name.clone(),
            config_path: cfg.path.display().to_string(),
            config_sha256,
            config_text: cfg.text.clone(),
            resolved: resolved_config(cfg, &plan),
            device: device_id,
            device_name,
            model: ModelIdentity {
                source: info.source.clone(),
                architecture: info.architecture.clone(),
                sha256: info.sha256.clone(),
                context_len: info.context_len(),
                vocab_size: info.config.vocab_size,
            },
            continuation: cfg.config.continuation.to_string(),
            pairs: plan.pairs.clone(),
            tokens: BTreeMap::new(),
            load_groups: plan.load_groups(cfg.config.continuation),
            model_loads: Vec::new(),
            started_at: store::now(),
            finished_at: None,
            wall_s: None,
            sessions: Vec::new(),
            shard: None,
            merged: None,
        },
    };
    if let Some(s) = &shard {
        s.apply(&mut manifest, cfg.config.continuation);
    }
    manifest.sessions.push(session);
    store.write_manifest(&manifest)?;

    let work = Work {
        todo: todo.clone(),
        known_tokens: manifest.tokens.clone(),
    };
    match device {
        Ok(device) => execute(cfg, &info, &plan, work, device, &store, &mut manifest, opts)?,
        Err(why) => skip_all(cfg, &plan, &todo, &store, &why)?,
    }
    let unfinished = todo
        .iter()
        .filter(|i| matches!(store.pair(&plan.pairs[**i]), Ok(None)))
        .count();
    let interrupted = stop_requested() && unfinished > 0;
    if let Some(s) = manifest.sessions.last_mut() {
        s.finished_at = Some(store::now());
        s.wall_s = Some(started.elapsed().as_secs_f64());
        s.interrupted = interrupted;
    }
    manifest.finished_at = Some(store::now());
    manifest.wall_s = Some(manifest.sessions.iter().filter_map(|s| s.wall_s).sum());
    store.write_manifest(&manifest)?;
    Ok(SweepOutcome {
        rendered: report::render(&store)?,
        interrupted,
        reused_pairs: done.len(),
    })
}

/// The manifest of an earlier session of this very sweep in `dir`, if there is one. A
/// directory made by another sweep file, another model or on another device is refused
/// (mixing them would compare unlike things), unless `start_over` clears it first.
fn previous_results(
    dir: &Path,
    config_sha256: &str,
    info: &ModelInfo,
    device_name: &str,
    start_over: bool,
) -> Result<Option<Manifest>> {
    let Ok(existing) = Store::open(dir) else {
        return Ok(None);
    };
    if start_over {
        clear_results(dir)?;
        return Ok(None);
    }
    let m = existing.manifest()?;
    let short = |h: &str| h[..12.min(h.len())].to_string();
    let refuse = |what: String| {
        Err(Error::store(
            dir,
            format!(
                "{what}; its results cannot be resumed: pass --start-over to replace them, or \
                 choose another --out"
            ),
        ))
    };
    if m.config_sha256 != config_sha256 {
        return refuse(format!(
            "holds the results of a different sweep file or prompt/template files (`{}`, sha256 \
             {}…, this one {}…)",
            m.config_path,
            short(&m.config_sha256),
            short(config_sha256)
        ));
    }
    if m.model.sha256 != info.sha256 {
        return refuse(format!(
            "was computed with other weights for `{}` (sha256 {}…, now {}…)",
            m.model.source,
            short(&m.model.sha256),
            short(&info.sha256)
        ));
    }
    if m.device_name != device_name {
        return refuse(format!(
            "was computed on `{}`, this session would run on `{device_name}`",
            m.device_name
        ));
    }
    Ok(Some(m))
}

/// Removes what a sweep writes into a results directory, and nothing else.
pub(crate) fn clear_results(dir: &Path) -> Result<()> {
    for sub in ["runs", "pairs", "logits", "traces", "templates"] {
        let p = dir.join(sub);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
                .map_err(|e| Error::store(&p, format!("cannot remove for --start-over: {e}")))?;
        }
    }
    for f in [
        "report.json",
        "report.md",
        "trace.json",
        "trace_report.md",
        "verify.json",
        store::MANIFEST,
    ] {
        let p = dir.join(f);
        if p.is_file() {
            std::fs::remove_file(&p)
                .map_err(|e| Error::store(&p, format!("cannot remove for --start-over: {e}")))?;
        }
    }
    Ok(())
}

/// Copies the sweep's custom templates into the results directory, where `driftsweep report`
/// finds them.
fn save_templates(cfg: &LoadedConfig, store: &Store) -> Result<()> {
    for (rel, text) in [
        (report::CUSTOM_REPORT_TEMPLATE, &cfg.templates.report),
        (report::CUSTOM_TRACE_TEMPLATE, &cfg.templates.trace_report),
    ] {
        if let Some(t) = text {
            store.write_bytes(rel, t.as_bytes())?;
        }
    }
    Ok(())
}

/// Pairs an earlier session finished: compared, both runs recorded, and traced when the sweep
/// asks for it. Everything else (missing, INCOMPLETE, SKIPPED) is computed again. The unit
/// is the pair: a lone finished run whose partner is missing is recomputed, since its logits
/// were not kept.
pub(crate) fn finished_pairs(
    cfg: &LoadedConfig,
    plan: &Plan,
    store: &Store,
) -> Result<HashSet<String>> {
    let mut done = HashSet::new();
    for pair in &plan.pairs {
        let Some(rec) = store.pair(pair)? else {
            continue;
        };
        if !rec.verdict.is_compared() {
            continue;
        }
        let runs_ok = [Mode::Prefill, Mode::Decode]
            .into_iter()
            .all(|m| matches!(store.run(pair, m), Ok(Some(r)) if r.status == RunStatus::Ok));
        let trace_needed = match cfg.config.trace.as_ref().map(|t| t.on) {
            Some(TraceOn::Always) => true,
            Some(TraceOn::Failing) => rec.verdict.is_fail(),
            None => false,
        };
        if runs_ok && (!trace_needed || store.trace(pair)?.is_some()) {
            done.insert(pair.id.clone());
        }
    }
    Ok(done)
}

/// The config with defaults filled in and the thresholds each dtype uses.
fn resolved_config(cfg: &LoadedConfig, plan: &Plan) -> serde_json::Value {
    let mut v = serde_json::to_value(&cfg.config).unwrap_or_default();
    let limits: BTreeMap<String, serde_json::Value> = plan
        .dtypes()
        .into_iter()
        .map(|d| {
            (
                d.to_string(),
                serde_json::json!({"tolerance": cfg.tolerance(d), "drift_budget": cfg.drift_budget(d)}),
            )
        })
        .collect();
    v["limits"] = serde_json::json!(limits);
    v
}

fn limits_for(cfg: &LoadedConfig, pair: &PairSpec) -> Thresholds {
    if pair.kv_aligned {
        cfg.tolerance(pair.dtype)
    } else {
        cfg.drift_budget(pair.dtype)
    }
}

/// Every pair to do SKIPPED with the device's reason.
fn skip_all(
    cfg: &LoadedConfig,
    plan: &Plan,
    todo: &[usize],
    store: &Store,
    why: &str,
) -> Result<()> {
    for pair in todo.iter().map(|i| &plan.pairs[*i]) {
        write_skipped(cfg, store, pair, why)?;
    }
    Ok(())
}

/// A pair that cannot run here: both runs and the pair SKIPPED, with the reason.
fn write_skipped(cfg: &LoadedConfig, store: &Store, pair: &PairSpec, why: &str) -> Result<()> {
    for mode in [Mode::Prefill, Mode::Decode] {
        store.write_run(&failed_record(
            pair,
            mode,
            RunStatus::Skipped,
            why.to_string(),
        ))?;
    }
    store.write_pair(&PairRecord {
        spec: pair.clone(),
        verdict: PairVerdict::Skipped,
        reason: why.to_string(),
        metrics: None,
        limits: limits_for(cfg, pair),
    })
}

fn failed_record(pair: &PairSpec, mode: Mode, status: RunStatus, error: String) -> RunRecord {
    RunRecord {
        id: pair.run_id(mode),
        pair_id: pair.id.clone(),
        mode,
        status,
        error: Some(error),
        wall_s: None,
        span_start: 0,
        positions: 0,
        forwards: 0,
        tokens_fed: 0,
        logits_bytes: 0,
        logits_file: None,
        finished_at: store::now(),
        reused_from: None,
    }
}

/// What the device worker tells the writer.
enum WorkerMsg {
    Tokens(BTreeMap<String, SequenceRecord>),
    Loaded(ModelLoad),
    Started(String),
    /// The pair cannot run on this device (its dtype is unsupported there).
    Skipped {
        pair: usize,
        reason: String,
    },
    Run {
        pair: usize,
        mode: Mode,
        result: std::result::Result<RunDone, String>,
        /// Run id whose result this is, when it was reused rather than computed.
        reused_from: Option<String>,
    },
    /// A pair compared and judged where its logits are.
    Pair(Box<PairRecord>),
    /// A pair's trace records (prefill, decode), or why its traced runs failed.
    Trace {
        pair: usize,
        result: std::result::Result<(Vec<TraceRecord>, Vec<TraceRecord>), String>,
    },
}

/// A finished run as the writer records it: the logits stay with the device worker, and only
/// a host copy made for storing them travels.
struct RunDone {
    wall_s: f64,
    span_start: usize,
    positions: usize,
    vocab: usize,
    forwards: usize,
    tokens_fed: usize,
    /// The logits in host memory, when the sweep keeps them.
    logits: Option<Vec<f32>>,
}

impl RunDone {
    fn new(out: &RunOutput, keep_logits: bool) -> std::result::Result<Self, String> {
        Ok(Self {
            wall_s: out.wall_s,
            span_start: out.span_start,
            positions: out.positions,
            vocab: out.vocab,
            forwards: out.forwards,
            tokens_fed: out.tokens_fed,
            logits: if keep_logits {
                Some(out.host_logits().map_err(|e| e.to_string())?)
            } else {
                None
            },
        })
    }
}

/// One run of `pair` on `model`, traced when `selection` is given; decode carries the fault.
pub(crate) fn run_one(
    model: &Decoder,
    ids: &[u32],
    prompt_len: usize,
    pair: &PairSpec,
    mode: Mode,
    selection: Option<&TraceSelection>,
    fault: &Injection,
) -> Result<RunOutput> {
    match mode {
        Mode::Prefill => run::prefill(model, ids, prompt_len, selection),
        Mode::Decode => run::decode(model, ids, prompt_len, pair.kv_aligned, selection, fault),
    }
}

/// What makes two prefill runs the same computation: everything but kv_aligned (the dtype
/// and model are those of the group being run).
fn prefill_key(pair: &PairSpec) -> String {
    format!("{}/s{}/seed{}", pair.prompt, pair.span, pair.seed)
}

pub(crate) fn token_key(prompt: &str, seed: u64) -> String {
    format!("{prompt}/seed{seed}")
}

/// What the device worker is asked to do.
#[derive(Debug, Clone, Default)]
struct Work {
    /// Indices into `plan.pairs` to compute, in plan order.
    todo: Vec<usize>,
    /// Token ids already fixed by an earlier session (`prompt/seedN`); missing or shorter
    /// ones are generated.
    known_tokens: BTreeMap<String, SequenceRecord>,
}

/// The device worker: all model work, in group order, on this thread. It checks for a stop
/// request before every weight load and every run.
fn device_worker(
    cfg: LoadedConfig,
    info: ModelInfo,
    plan: Plan,
    work: Work,
    device: run::OpenDevice,
    tx: mpsc::Sender<WorkerMsg>,
) {
    let send = |m: WorkerMsg| tx.blocking_send(m).is_ok();
    let (device, device_name) = (device.device, device.id);
    let load = |dtype: RunDtype, purpose: &str| -> std::result::Result<Decoder, String> {
        let t = Instant::now();
        let m = info.load(dtype, &device).map_err(|e| e.to_string())?;
        send(WorkerMsg::Loaded(ModelLoad {
            dtype,
            device: device_name.clone(),
            load_s: t.elapsed().as_secs_f64(),
            purpose: purpose.into(),
        }));
        Ok(m)
    };

    let mode = cfg.config.continuation;
    let trace = cfg.config.trace.as_ref();
    let trace_on = trace.map(|t| t.on);
    let fault = cfg.injection();
    let todo: Vec<&PairSpec> = work.todo.iter().map(|i| &plan.pairs[*i]).collect();

    // Tokens per (prompt, seed): generated once at the plan's longest span, shared by every
    // dtype, kv_aligned value and shorter span; taken from an earlier session when it has them.
    let lengths = plan.continuation_lengths();
    let mut seqs: HashMap<(String, u64), std::result::Result<SequenceRecord, String>> =
        HashMap::new();
    let mut to_generate = Vec::new();
    for ((prompt_id, seed), len) in lengths {
        if !todo.iter().any(|p| p.prompt == prompt_id && p.seed == seed) {
            continue;
        }
        match work.known_tokens.get(&token_key(&prompt_id, seed)) {
            Some(known) if known.continuation.len() >= len => {
                seqs.insert((prompt_id, seed), Ok(known.clone()));
            }
            _ => to_generate.push(((prompt_id, seed), len)),
        }
    }
    let needs_reference = mode != ContinuationMode::Random && !to_generate.is_empty();
    let groups: Vec<LoadGroup> = plan
        .load_groups(mode)
        .into_iter()
        .map(|mut g| {
            g.runs = g.runs && todo.iter().any(|p| p.dtype == g.dtype);
            g.reference = g.reference && needs_reference;
            g
        })
        .filter(|g| g.runs || g.reference)
        .collect();
    if stop_requested() {
        return;
    }
    // The reference group, when there is one, comes first.
    let mut reference: Option<std::result::Result<Decoder, String>> = groups
        .first()
        .filter(|g| g.reference)
        .map(|g| load(g.dtype, g.purpose()));
    for ((prompt_id, seed), len) in to_generate {
        if stop_requested() {
            return;
        }
        let prompt = tokens::prompt_ids(&info, &plan.prompts[&prompt_id], seed);
        let result = match &reference {
            Some(Err(e)) => Err(format!("the f32 reference model could not load: {e}")),
            r => tokens::continuation(
                &info,
                r.as_ref().and_then(|r| r.as_ref().ok()),
                &prompt_id,
                &prompt,
                len,
                mode,
                seed,
            )
            .map(|continuation| SequenceRecord {
                prompt,
                continuation,
            })
            .map_err(|e| e.to_string()),
        };
        seqs.insert((prompt_id, seed), result);
    }
    let records = seqs
        .iter()
        .filter_map(|((p, s), r)| r.as_ref().ok().map(|r| (token_key(p, *s), r.clone())))
        .collect();
    if !send(WorkerMsg::Tokens(records)) {
        return;
    }

    for group in groups.iter().filter(|g| g.runs) {
        if stop_requested() {
            return;
        }
        let dtype = group.dtype;
        if let Err(reason) = run::dtype_support(&device, dtype) {
            reference = None;
            for &idx in work.todo.iter().filter(|i| plan.pairs[**i].dtype == dtype) {
                if !send(WorkerMsg::Skipped {
                    pair: idx,
                    reason: reason.clone(),
                }) {
                    return;
                }
            }
            continue;
        }
        // The reference model is dropped here unless its group also runs pairs.
        let model = match reference.take() {
            Some(r) if group.reference => r,
            _ => load(dtype, group.purpose()),
        };
        // kv_aligned false and true of one (prompt, span, seed) run next to each other, so
        // that the second reuses the first's prefill (the same computation) while it is
        // still the last one made: no prefill logits are held beyond the two pairs.
        let mut order: Vec<usize> = work
            .todo
            .iter()
            .copied()
            .filter(|i| plan.pairs[*i].dtype == dtype)
            .collect();
        order.sort_by_key(|i| {
            let p = &plan.pairs[*i];
            (p.prompt.clone(), p.span, p.seed, p.kv_aligned)
        });
        // (what makes it shareable, the run that computed it, its output)
        let mut last_prefill: Option<(String, String, RunOutput)> = None;
        for (k, &idx) in order.iter().enumerate() {
            let pair = &plan.pairs[idx];
            // Keep this pair's prefill only when the next pair is its kv_aligned twin.
            let twin_next = order
                .get(k + 1)
                .is_some_and(|j| prefill_key(&plan.pairs[*j]) == prefill_key(pair));
            let inputs = match (&model, &seqs[&(pair.prompt.clone(), pair.seed)]) {
                (Err(e), _) => Err(format!("the model could not load in {dtype}: {e}")),
                (_, Err(e)) => Err(format!("no tokens for this prompt and seed: {e}")),
                (Ok(m), Ok(seq)) => {
                    let mut ids = seq.prompt.clone();
                    ids.extend_from_slice(&seq.continuation[..pair.span]);
                    Ok((m, ids, seq.prompt.len()))
                }
            };
            let selection = trace.map(|t| plan.trace_selection(t, pair));
            let trace_now = selection
                .as_ref()
                .filter(|_| trace_on == Some(TraceOn::Always));
            // The pair's two runs, kept on the device until they are compared.
            let mut outputs: Vec<Option<RunOutput>> = Vec::new();
            let mut errors = Vec::new();
            let mut records = Vec::new();
            for mode in [Mode::Prefill, Mode::Decode] {
                if stop_requested() || !send(WorkerMsg::Started(pair.run_id(mode))) {
                    return;
                }
                // Traced prefills are never shared: their records belong to one pair.
                let shareable = mode == Mode::Prefill && trace_now.is_none();
                // The twin's prefill is taken, not copied: nothing else will use it.
                let reused = if shareable {
                    last_prefill
                        .take()
                        .filter(|(key, _, _)| *key == prefill_key(pair))
                } else {
                    None
                };
                let reused_from = reused.as_ref().map(|(_, from, _)| from.clone());
                let result = match reused {
                    Some((_, _, out)) => Ok(out),
                    None => inputs
                        .as_ref()
                        .map_err(Clone::clone)
                        .and_then(|(m, ids, p)| {
                            run_one(m, ids, *p, pair, mode, trace_now, &fault)
                                .map_err(|e| e.to_string())
                        }),
                };
                if shareable && twin_next && reused_from.is_none() {
                    last_prefill = result
                        .as_ref()
                        .ok()
                        .map(|o| (prefill_key(pair), pair.run_id(mode), o.clone()));
                }
                let result = result.and_then(|mut out| {
                    records.push(std::mem::take(&mut out.trace));
                    let done = RunDone::new(&out, cfg.config.keep_logits)?;
                    Ok((out, done))
                });
                let (output, result) = match result {
                    Ok((out, done)) => (Some(out), Ok(done)),
                    Err(e) => {
                        errors.push(format!("{mode} failed: {e}"));
                        (None, Err(e))
                    }
                };
                outputs.push(output);
                if !send(WorkerMsg::Run {
                    pair: idx,
                    mode,
                    result,
                    reused_from,
                }) {
                    return;
                }
            }
            // Compared here, on the device that holds both runs' logits, which are then
            // dropped; only the metrics travel.
            let (pre, dec) = (outputs[0].take(), outputs[1].take());
            let record = judge(pair.clone(), pre, dec, errors, limits_for(&cfg, pair));
            let failed = record.verdict.is_fail();
            if !send(WorkerMsg::Pair(Box::new(record))) {
                return;
            }
            let traced = match (trace_on, &inputs, &selection) {
                (Some(TraceOn::Always), Ok(_), _) if records.len() == 2 => {
                    let dec = records.pop().unwrap_or_default();
                    let pre = records.pop().unwrap_or_default();
                    Some(Ok((pre, dec)))
                }
                (Some(TraceOn::Failing), Ok((m, ids, p)), Some(sel)) => {
                    if failed
                        && (stop_requested()
                            || !send(WorkerMsg::Started(format!("{} (traced re-run)", pair.id))))
                    {
                        return;
                    }
                    failed.then(|| {
                        let pre = run_one(m, ids, *p, pair, Mode::Prefill, Some(sel), &fault);
                        let dec = run_one(m, ids, *p, pair, Mode::Decode, Some(sel), &fault);
                        match (pre, dec) {
                            (Ok(a), Ok(b)) => Ok((a.trace, b.trace)),
                            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
                        }
                    })
                }
                _ => None,
            };
            if let Some(result) = traced
                && !send(WorkerMsg::Trace { pair: idx, result })
            {
                return;
            }
        }
    }
}

fn progress_bar(total: usize, enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} runs, ETA {eta}  {msg}") {
        pb.set_style(style);
    }
    pb
}

#[allow(clippy::too_many_arguments)]
fn execute(
    cfg: &LoadedConfig,
    info: &ModelInfo,
    plan: &Plan,
    work: Work,
    device: run::OpenDevice,
    store: &Store,
    manifest: &mut Manifest,
    opts: &SweepOptions,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::store(store.root(), format!("cannot start the runtime: {e}")))?;
    let (tx, mut rx) = mpsc::channel::<WorkerMsg>(2);
    let work_len = work.todo.len();
    let worker = {
        let (cfg, info, plan) = (cfg.clone(), info.clone(), plan.clone());
        std::thread::Builder::new()
            .name("device-worker".into())
            .spawn(move || device_worker(cfg, info, plan, work, device, tx))
            .map_err(|e| {
                Error::store(store.root(), format!("cannot start the device worker: {e}"))
            })?
    };
    let pb = progress_bar(2 * work_len, opts.progress);

    let result: Result<()> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                WorkerMsg::Tokens(t) => {
                    manifest.tokens.extend(t);
                    store.write_manifest(manifest)?;
                }
                WorkerMsg::Loaded(l) => {
                    manifest.model_loads.push(l);
                    store.write_manifest(manifest)?;
                }
                WorkerMsg::Started(id) => pb.set_message(id),
                WorkerMsg::Skipped { pair, reason } => {
                    pb.inc(2);
                    write_skipped(cfg, store, &plan.pairs[pair], &reason)?;
                }
                WorkerMsg::Trace { pair, result } => {
                    let spec = plan.pairs[pair].clone();
                    let ids: Vec<u32> = manifest
                        .tokens
                        .get(&token_key(&spec.prompt, spec.seed))
                        .map(|t| {
                            [
                                &t.prompt[..],
                                &t.continuation[..spec.span.min(t.continuation.len())],
                            ]
                            .concat()
                        })
                        .unwrap_or_default();
                    let threshold = cfg.nmse_threshold(spec.dtype);
                    let store = store.clone();
                    tasks.spawn_blocking(move || {
                        let rec = match result {
                            Ok((pre, dec)) => TraceFile {
                                pair_id: spec.id.clone(),
                                error: None,
                                trace: Some(trace::analyze(
                                    &spec.id,
                                    &spec.prompt,
                                    spec.dtype,
                                    &pre,
                                    &dec,
                                    &ids,
                                    threshold,
                                )),
                            },
                            Err(e) => TraceFile {
                                pair_id: spec.id.clone(),
                                error: Some(e),
                                trace: None,
                            },
                        };
                        store.write_trace(&rec)
                    });
                }
                WorkerMsg::Run {
                    pair,
                    mode,
                    result,
                    reused_from,
                } => {
                    pb.inc(1);
                    let spec = plan.pairs[pair].clone();
                    match result {
                        Ok(done) => {
                            let store = store.clone();
                            tasks.spawn_blocking(move || {
                                write_run_ok(&store, &spec, mode, done, reused_from)
                            });
                        }
                        Err(e) => {
                            store.write_run(&failed_record(&spec, mode, RunStatus::Failed, e))?;
                        }
                    }
                }
                WorkerMsg::Pair(record) => {
                    let store = store.clone();
                    tasks.spawn_blocking(move || store.write_pair(&record));
                }
            }
            // Surface write errors early rather than after the whole sweep.
            while let Some(done) = tasks.try_join_next() {
                done.map_err(|e| {
                    Error::store(store.root(), format!("a writer task failed: {e}"))
                })??;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| Error::store(store.root(), format!("a writer task failed: {e}")))??;
        }
        Ok(())
    });
    pb.finish_and_clear();
    // The worker ends when its work is done or, after a writer error, when it finds its
    // channel closed: close it before waiting.
    drop(rx);
    let joined = worker.join();
    result?;
    joined.map_err(|_| Error::store(store.root(), "the device worker panicked"))
}

fn write_run_ok(
    store: &Store,
    pair: &PairSpec,
    mode: Mode,
    out: RunDone,
    reused_from: Option<String>,
) -> Result<()> {
    let id = pair.run_id(mode);
    let logits_file = match &out.logits {
        Some(logits) => Some(store.write_logits(&id, logits, out.positions, out.vocab)?),
        None => None,
    };
    store.write_run(&RunRecord {
        id,
        pair_id: pair.id.clone(),
        mode,
        status: RunStatus::Ok,
        error: None,
        wall_s: Some(out.wall_s),
        span_start: out.span_start,
        positions: out.positions,
        forwards: out.forwards,
        tokens_fed: out.tokens_fed,
        logits_bytes: (out.positions * out.vocab * std::mem::size_of::<f32>()) as u64,
        logits_file,
        finished_at: store::now(),
        reused_from,
    })
}

/// Compares a pair's runs and gives its verdict.
pub(crate) fn judge(
    spec: PairSpec,
    pre: Option<RunOutput>,
    dec: Option<RunOutput>,
    errors: Vec<String>,
    limits: Thresholds,
) -> PairRecord {
    let incomplete = |reason: String| PairRecord {
        spec: spec.clone(),
        verdict: PairVerdict::Incomplete,
        reason,
        metrics: None,
        limits,
    };
    let (pre, dec) = match (pre, dec) {
        (Some(p), Some(d)) => (p, d),
        _ => return incomplete(errors.join("; ")),
    };
    if pre.span_start != dec.span_start {
        return incomplete(format!(
            "the runs start their spans at different positions (prefill {}, decode {})",
            pre.span_start, dec.span_start
        ));
    }
    match compare::compare_tensors(
        &pre.logits,
        &dec.logits,
        pre.span_start,
        limits.max_abs_diff,
    ) {
        Ok(m) => {
            let (verdict, reason) = verdict::judge_pair(&m, spec.dtype, spec.kv_aligned, &limits);
            PairRecord {
                spec,
                verdict,
                reason,
                metrics: Some(m),
                limits,
            }
        }
        Err(e) => incomplete(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunDtype;
    use candle_core::{Device, Tensor};

    fn spec(kv: bool) -> PairSpec {
        PairSpec {
            id: "p.s2.f32.kv1.seed0".into(),
            prompt: "p".into(),
            span: 2,
            dtype: RunDtype::F32,
            kv_aligned: kv,
            seed: 0,
        }
    }

    fn out(start: usize, logits: Vec<f32>) -> RunOutput {
        let positions = logits.len() / 2;
        RunOutput {
            vocab: 2,
            span_start: start,
            positions,
            forwards: 1,
            tokens_fed: start + 2,
            wall_s: 0.1,
            logits: Tensor::from_vec(logits, (positions, 2), &Device::Cpu).unwrap(),
            trace: vec![],
        }
    }

    #[test]
    fn a_failed_run_makes_the_pair_incomplete_with_its_error() {
        let limits = Thresholds::default_tolerance(RunDtype::F32);
        let r = judge(
            spec(true),
            Some(out(3, vec![0.0; 4])),
            None,
            vec!["decode failed: boom".into()],
            limits,
        );
        assert_eq!(r.verdict, PairVerdict::Incomplete);
        assert!(r.reason.contains("boom"));
    }

    #[test]
    fn runs_over_different_positions_are_incomplete() {
        let limits = Thresholds::default_tolerance(RunDtype::F32);
        let r = judge(
            spec(true),
            Some(out(3, vec![0.0; 4])),
            Some(out(4, vec![0.0; 4])),
            vec![],
            limits,
        );
        assert_eq!(r.verdict, PairVerdict::Incomplete);
        let r = judge(
            spec(true),
            Some(out(3, vec![0.0; 4])),
            Some(out(3, vec![0.0; 6])),
            vec![],
            limits,
        );
        assert_eq!(r.verdict, PairVerdict::Incomplete);
        assert!(r.reason.contains("different positions"), "{}", r.reason);
    }

    #[test]
    fn compared_pairs_get_mode_specific_verdicts() {
        let limits = Thresholds::default_tolerance(RunDtype::F32);
        let r = judge(
            spec(true),
            Some(out(3, vec![1.0, 2.0, 3.0, 4.0])),
            Some(out(3, vec![1.0, 2.0, 3.0, 4.0])),
            vec![],
            limits,
        );
        assert_eq!(r.verdict, PairVerdict::PassEquiv);
        let r = judge(
            spec(false),
            Some(out(3, vec![1.0, 2.0, 3.0, 4.0])),
            Some(out(3, vec![1.0, f32::NAN, 3.0, 4.0])),
            vec![],
            limits,
        );
        assert_eq!(r.verdict, PairVerdict::FailDrift);
    }
}
