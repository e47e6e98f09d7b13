//! Runs a planned sweep. One device worker thread ([`worker`]) does all model work, group by
//! group, and compares each pair where its logits are; the calling thread writes each record
//! the moment it arrives ([`writer`]) and tells a [`Reporter`] what happens ([`events`]).
//! A results directory already holding part of the same sweep is resumed ([`resume`]).

mod events;
mod lanes;
pub mod models;
mod pair;
mod reference;
mod resume;
pub mod summary;
mod worker;
mod writer;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

pub use events::{Event, Reporter, Signalled, Silent, StopFlag};
pub use lanes::Lanes;
pub use lanes::group_lanes;
pub use pair::{PairInput, PairRun, judge, run_pair, token_key};

use crate::config::LoadedConfig;
use crate::error::{Error, Result};
use crate::limits::{DtypeLimits, limits_key};
use crate::model::ModelInfo;
use crate::plan::{self, Plan};
use crate::report;
use crate::run;
use crate::store::{Manifest, ModelIdentity, ResolvedSettings, Session, Store, ToolInfo};

pub(crate) use resume::{clear_results, finished_pairs};
use worker::{Work, Worker};
use writer::{Writer, write_skipped};

/// How to run a sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Results directory; overrides the config's `output`.
    pub out: Option<PathBuf>,
    /// Throw away an existing results directory's records instead of resuming from them or
    /// refusing a directory made by another sweep.
    pub start_over: bool,
    /// Raised to stop the sweep after the run it is in (the report is then written and marked
    /// INCOMPLETE, and the next invocation resumes).
    pub stop: StopFlag,
    /// Stop as on a request once this many runs have started (deterministic interrupts for
    /// tests and for splitting long sweeps by hand).
    pub stop_after_runs: Option<usize>,
    /// Stop at once after this many run records, returning [`Error::Killed`] (a
    /// deterministic stand-in for SIGKILL in tests of what survives; nothing is finalized).
    pub exit_after_runs: Option<usize>,
    /// Run only this shard of the plan (`--shard K/N`); its default results directory is
    /// `<output>.shards/K-of-N`.
    pub shard: Option<crate::shard::Shard>,
    /// Lanes of pairs run side by side in each load group (`--lanes N`); `None` chooses from
    /// the model's size and the device (see `sweep/lanes.rs`).
    pub lanes: Option<usize>,
}

/// What a sweep invocation produced.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// The rendered reports.
    pub rendered: report::Rendered,
    /// It stopped on request before finishing its work (exit 130).
    pub interrupted: bool,
    /// Pairs reused from an earlier session of the same sweep.
    pub reused_pairs: usize,
    /// What `--start-over` found in the directory and left alone (driftsweep did not write
    /// it), to be mentioned.
    pub left_alone: Vec<PathBuf>,
}

/// The results directory a sweep writes to.
pub fn output_dir(cfg: &LoadedConfig, out: Option<&PathBuf>) -> PathBuf {
    out.cloned()
        .or_else(|| cfg.config.output.clone())
        .unwrap_or_else(|| PathBuf::from("results").join(&cfg.config.name))
}

/// Everything a sweep needs before any model work, checked: the model's identity and
/// tokenizer, the custom templates (test-parsed by the renderer), and the expanded plan.
/// Every error here is bad input naming the sweep file and field.
pub fn prepare(cfg: &LoadedConfig) -> Result<(ModelInfo, Plan)> {
    check_single(cfg)?;
    check_templates(cfg)?;
    let info = match &cfg.config.model.synthetic {
        Some(spec) => synthetic_model(cfg, spec)?,
        None => ModelInfo::inspect(&cfg.config.model.source).map_err(|e| match e {
            Error::Model { .. } => Error::config(&cfg.path, "model.source", e.to_string()),
            other => other,
        })?,
    };
    prepare_with(cfg, info)
}

/// The synthetic checkpoint `model.synthetic` describes, made or found in the cache. A spec
/// refused names its field (`model.synthetic.kv_heads`); a checkpoint that cannot be made
/// from a sound spec names `model.synthetic` and says why.
fn synthetic_model(cfg: &LoadedConfig, spec: &crate::config::SynthSpec) -> Result<ModelInfo> {
    use crate::synth::{self, SynthError};
    synth::resolve(spec).map_err(|e| match e {
        SynthError::Spec(s) => Error::config(
            &cfg.path,
            if s.field.is_empty() {
                "model.synthetic".to_string()
            } else {
                format!("model.synthetic.{}", s.field)
            },
            s.message,
        ),
        SynthError::Build(m) => Error::config(&cfg.path, "model.synthetic", m),
        SynthError::Io(m) => Error::store(synth::cache::root(), m),
    })
}

/// [`prepare`] for a model already described (a user's own, [`ModelInfo::from_custom`]).
pub fn prepare_with(cfg: &LoadedConfig, info: ModelInfo) -> Result<(ModelInfo, Plan)> {
    check_single(cfg)?;
    check_templates(cfg)?;
    let plan = plan::expand(cfg, &info, &|e, w, d| {
        info.support(e, w, d).map_err(String::from)
    })?;
    if let Some(t) = &cfg.templates.report {
        let sample = report::sample(
            report::SweepIdentity {
                name: cfg.config.name.clone(),
                config_sha256: cfg.sha256(),
            },
            model_identity(&info),
            &cfg.config.device.to_string(),
            &cfg.config.continuation.to_string(),
            &plan.pairs,
        );
        report::check_render(t, &sample).map_err(|m| {
            Error::config(
                &cfg.path,
                "templates.report",
                format!("fails to render on a sample of this sweep's report: {m}"),
            )
        })?;
    }
    if let (Some(t), Some(trace)) = (&cfg.templates.trace_report, &cfg.config.trace) {
        let ids: Vec<String> = plan.pairs.iter().map(|p| p.id.clone()).collect();
        let inject = cfg.config.inject.as_ref().map(report::describe_injection);
        report::trace::check_render(t, &cfg.config.name, trace.on, inject, &ids).map_err(|m| {
            Error::config(
                &cfg.path,
                "templates.trace_report",
                format!("fails to render on a sample of this sweep's trace report: {m}"),
            )
        })?;
    }
    Ok((info, plan))
}

/// A file with `models:` runs through [`models::run_models`], one model's sweep at a time; every
/// other use of a sweep file takes one model.
fn check_single(cfg: &LoadedConfig) -> Result<()> {
    if cfg.is_multi() {
        return Err(Error::config(
            &cfg.path,
            "models",
            "this command takes a sweep file with one `model:`; `driftsweep run` and `plan` \
             take `models:` (docs/sweep-file.md, \"Several models\")",
        ));
    }
    Ok(())
}

fn check_templates(cfg: &LoadedConfig) -> Result<()> {
    for (field, text) in [
        ("templates.report", &cfg.templates.report),
        ("templates.trace_report", &cfg.templates.trace_report),
    ] {
        if let Some(t) = text {
            report::check_template(t).map_err(|m| Error::config(&cfg.path, field, m))?;
        }
    }
    Ok(())
}

/// Runs the sweep described by `cfg` and renders its reports, telling `reporter` what
/// happens. Input errors (model, plan, results directory) come back before any model work. A
/// results directory already holding part of this sweep is resumed: its finished pairs are
/// kept and only the rest is computed.
pub fn run_sweep(
    cfg: &LoadedConfig,
    opts: &SweepOptions,
    reporter: &mut dyn Reporter,
) -> Result<SweepOutcome> {
    let started = Instant::now();
    let (info, plan) = prepare(cfg)?;
    run_prepared(cfg, info, plan, opts, reporter, started)
}

/// [`run_sweep`] on a model given from Rust ([`ModelInfo::from_custom`]): the sweep file's
/// `model.source` is not read, and its engine is `custom`.
pub fn run_sweep_with_model(
    cfg: &LoadedConfig,
    info: ModelInfo,
    opts: &SweepOptions,
    reporter: &mut dyn Reporter,
) -> Result<SweepOutcome> {
    let started = Instant::now();
    let (info, plan) = prepare_with(cfg, info)?;
    run_prepared(cfg, info, plan, opts, reporter, started)
}

fn run_prepared(
    cfg: &LoadedConfig,
    info: ModelInfo,
    plan: Plan,
    opts: &SweepOptions,
    reporter: &mut dyn Reporter,
    started: Instant,
) -> Result<SweepOutcome> {
    let dir = match opts.shard {
        Some(s) if opts.out.is_none() => crate::shard::shard_dir(&output_dir(cfg, None), s),
        _ => output_dir(cfg, opts.out.as_ref()),
    };
    let device = run::open_device(cfg.config.device);
    let (device_id, device_name) = match &device {
        Ok(d) => (d.id.clone(), d.name.clone()),
        Err(why) => (cfg.config.device.to_string(), format!("unavailable: {why}")),
    };
    let (store, previous, shard) = open_results(cfg, &plan, opts, &dir, &info, &device_name)?;
    let left_alone = previous.left_alone;
    let done = match &previous.manifest {
        Some(_) => resume::finished_pairs(cfg, &plan, &store)?,
        None => HashSet::new(),
    };
    let todo: Vec<usize> = (0..plan.pairs.len())
        .filter(|i| !done.contains(&plan.pairs[*i].id))
        .filter(|i| shard.as_ref().is_none_or(|s| s.owns(*i)))
        .collect();
    let session = Session {
        started_at: crate::fsutil::now(),
        reused_pairs: done.len(),
        planned_pairs: todo.len(),
        tool: Some(ToolInfo::current()),
        ..Session::default()
    };
    let mut manifest = match previous.manifest {
        Some(mut m) => {
            // Same sweep identity, model and device: only this session's facts change.
            m.tool = ToolInfo::current();
            m.finished_at = None;
            m.wall_s = None;
            m
        }
        None => new_manifest(cfg, &plan, &info, device_id, device_name),
    };
    if let Some(s) = &shard {
        s.apply(&mut manifest, cfg.config.continuation);
    }
    manifest.sessions.push(session);
    opts.stop.start_recording();
    store.write_manifest(&manifest)?;
    reporter.event(&Event::Planned {
        runs: 2 * todo.len(),
        reused_pairs: done.len(),
    });
    let work = Work {
        todo: todo.clone(),
        known_tokens: manifest.tokens.clone(),
    };
    match device {
        Ok(device) => {
            let worker = new_worker(cfg, &info, &plan, device, opts);
            let mut writer = Writer {
                cfg,
                plan: &plan,
                store: &store,
                manifest: &mut manifest,
                reporter,
                exit_after_runs: opts.exit_after_runs,
                runs_written: 0,
            };
            execute(worker, work, &mut writer)?;
        }
        Err(why) => {
            for pair in todo.iter().map(|i| &plan.pairs[*i]) {
                write_skipped(cfg, &store, pair, &why.to_string())?;
            }
        }
    }
    let interrupted = finish_session(&plan, &todo, opts, &store, &mut manifest, started)?;
    reporter.event(&Event::Finished {
        stopped: interrupted,
    });
    Ok(SweepOutcome {
        rendered: report::render(&store)?,
        interrupted,
        reused_pairs: done.len(),
        left_alone,
    })
}

/// Locks the results directory and checks what it holds (an earlier session to resume, the
/// shard it was made for), then opens it for writing. On bad input a directory this call
/// created is removed again.
fn open_results(
    cfg: &LoadedConfig,
    plan: &Plan,
    opts: &SweepOptions,
    dir: &std::path::Path,
    info: &ModelInfo,
    device_name: &str,
) -> Result<(Store, resume::Previous, Option<crate::shard::Selection>)> {
    let config_sha256 = cfg.sha256();
    // The lock comes first: the identity check below and this session's first manifest
    // must see the same directory, with no second writer in between.
    let lock =
        crate::store::owner::DirLock::for_results(dir).map_err(|e| blame_output(cfg, opts, e))?;
    if opts.start_over {
        // `--start-over` may delete from here on: a signal no longer means "nothing was
        // written" but "stop", and the session ends with an INCOMPLETE report.
        opts.stop.start_recording();
    }
    let checked = resume::previous_results(dir, &config_sha256, info, device_name, opts.start_over)
        .and_then(|p| {
            // A shard runs only its pairs, but keeps the whole plan: its continuations are
            // generated at the plan's longest span, so its token ids and metrics are a
            // single run's.
            let shard = crate::shard::for_sweep(cfg, plan, opts.shard, dir, p.manifest.as_ref())?;
            Ok((p, shard))
        });
    let (previous, shard) = match checked {
        Ok(c) => c,
        Err(e) => {
            lock.abandon();
            return Err(e);
        }
    };
    let marker = crate::store::owner::Marker::new(&cfg.config.name, &config_sha256);
    let store = Store::create(dir, lock, &marker).map_err(|e| blame_output(cfg, opts, e))?;
    save_templates(cfg, &store)?;
    Ok((store, previous, shard))
}

/// The manifest of a sweep's first session in a directory.
fn new_manifest(
    cfg: &LoadedConfig,
    plan: &Plan,
    info: &ModelInfo,
    device: String,
    device_name: String,
) -> Manifest {
    Manifest {
        tool: ToolInfo::current(),
        sweep_name: cfg.config.name.clone(),
        config_path: cfg.path.display().to_string(),
        config_sha256: cfg.sha256(),
        config_text: cfg.text.clone(),
        resolved: resolved_settings(cfg, plan),
        device,
        device_name,
        model: model_identity(info),
        continuation: cfg.config.continuation.to_string(),
        pairs: plan.pairs.clone(),
        tokens: BTreeMap::new(),
        load_groups: plan.load_groups(cfg.config.continuation),
        model_loads: Vec::new(),
        started_at: crate::fsutil::now(),
        finished_at: None,
        wall_s: None,
        sessions: Vec::new(),
        shard: None,
        merged: None,
    }
}

/// The device worker for this sweep's work.
fn new_worker(
    cfg: &LoadedConfig,
    info: &ModelInfo,
    plan: &Plan,
    device: run::OpenDevice,
    opts: &SweepOptions,
) -> Worker {
    // Loads size their tables by what this sweep feeds, not by what the file claims.
    let shift = cfg.config.inject.as_ref().map_or(0, |i| {
        i.position_shift.unwrap_or(0) + i.chunk_position_shift.unwrap_or(0)
    });
    Worker {
        cfg: cfg.clone(),
        info: info.sized_for(plan.longest_sequence().saturating_add(shift)),
        plan: plan.clone(),
        device,
        tx: mpsc::sync_channel(0).0,
        stop: opts.stop.clone(),
        stop_after_runs: opts.stop_after_runs,
        runs_started: Default::default(),
        yardsticks: Default::default(),
        plan_needs_yardsticks: false,
        reference: reference::ReferenceSource::new(&cfg.reference(), &info.weights),
        lanes: opts.lanes,
        threads: candle_core::utils::get_num_threads(),
    }
}

/// Closes this session in the manifest (its end, wall time, whether a stop left pairs
/// unfinished) and writes it; returns whether the session was interrupted.
fn finish_session(
    plan: &Plan,
    todo: &[usize],
    opts: &SweepOptions,
    store: &Store,
    manifest: &mut Manifest,
    started: Instant,
) -> Result<bool> {
    let unfinished = todo
        .iter()
        .filter(|i| matches!(store.pair(&plan.pairs[**i]), Ok(None)))
        .count();
    let interrupted = opts.stop.requested() && unfinished > 0;
    if let Some(s) = manifest.sessions.last_mut() {
        s.finished_at = Some(crate::fsutil::now());
        s.wall_s = Some(started.elapsed().as_secs_f64());
        s.interrupted = interrupted;
    }
    manifest.finished_at = Some(crate::fsutil::now());
    manifest.wall_s = Some(manifest.sessions.iter().filter_map(|s| s.wall_s).sum());
    store.write_manifest(manifest)?;
    Ok(interrupted)
}

/// An error about the results directory that the sweep file's `output` chose names that
/// file and field.
fn blame_output(cfg: &LoadedConfig, opts: &SweepOptions, e: Error) -> Error {
    match (&opts.out, &cfg.config.output) {
        (None, Some(_)) => Error::config(&cfg.path, "output", e.to_string()),
        _ => e,
    }
}

/// `model` in the manifest and report.json.
fn model_identity(info: &ModelInfo) -> ModelIdentity {
    ModelIdentity {
        source: info.source.clone(),
        architecture: info.architecture.to_string(),
        sha256: info.sha256.clone(),
        context_len: info.context_len(),
        vocab_size: info.sizes().vocab_size,
        sliding_window: info.family.sliding_window(),
    }
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

/// The config with defaults filled in and the limits each dtype uses.
fn resolved_settings(cfg: &LoadedConfig, plan: &Plan) -> ResolvedSettings {
    ResolvedSettings {
        config: cfg.config.clone(),
        limits: plan
            .pairs
            .iter()
            .map(|p| {
                let limits = DtypeLimits {
                    tolerance: cfg.tolerance(p.dtype, p.weights),
                    drift_budget: cfg.drift_budget(p.dtype, p.weights),
                };
                (limits_key(p.dtype, p.weights), limits)
            })
            .collect(),
    }
}

/// Starts the device worker, records what it sends until it is done, then joins it. A panic
/// of the worker is an internal error, never blamed on the input.
fn execute(mut worker: Worker, work: Work, writer: &mut Writer) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<worker::WorkerMsg>(2);
    worker.tx = tx;
    let handle = std::thread::Builder::new()
        .name("device-worker".into())
        .spawn(move || worker.run(work))
        .map_err(|e| Error::internal(format!("cannot start the device worker: {e}")))?;
    let written = writer.drain(rx);
    if let Err(e @ Error::Killed { .. }) = written {
        // At once, as a kill would: the worker is not waited for (it finds its channel closed
        // at its next record and stops), and nothing more is written.
        return Err(e);
    }
    // On a write error the receiver is gone: the worker finds its channel closed and stops.
    let joined = handle.join();
    written?;
    joined.map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Error::internal(format!("the device worker panicked: {what}"))
    })
}
