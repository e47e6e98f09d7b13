//! A sweep file with `models:` (docs/sweep-file.md, "Several models"): one sub-sweep per
//! model, in file order, each run exactly as its single-model sweep file would run (the same
//! [`super::prepare`] and [`super::run_sweep_with_model`]) into `<out>/models/<id>/`, then
//! `summary.json` and `summary.md` at `<out>/`. A model that cannot be inspected, planned or
//! run is an error entry of the summary, and the others still run.

use std::path::{Path, PathBuf};

use super::summary::{ModelSummary, Summary, model_dir};
use super::{Reporter, SweepOptions, SweepOutcome, output_dir, prepare, run_sweep_with_model};
use crate::config::{LoadedConfig, ModelSweep};
use crate::error::{Error, Result};
use crate::model::ModelInfo;
use crate::plan::Plan;
use crate::store::owner::{DirLock, MARKER, Marker};

/// What the caller hears about, model by model.
pub enum ModelStep<'a> {
    /// A model's sub-sweep starts.
    Starting {
        /// Its id.
        id: &'a str,
        /// Its place among the models run, from 0.
        index: usize,
        /// How many models run.
        total: usize,
        /// Its results directory.
        dir: &'a Path,
    },
    /// It ran (its verdict may still be FAIL or INCOMPLETE).
    Ran {
        /// Its id.
        id: &'a str,
        /// What it produced.
        outcome: &'a SweepOutcome,
    },
    /// It could not be inspected, planned or run.
    Failed {
        /// Its id.
        id: &'a str,
        /// Why.
        error: &'a Error,
    },
}

/// What a sweep with `models:` produced.
#[derive(Debug, Clone)]
pub struct ModelsOutcome {
    /// The top results directory (`summary.json`, `summary.md`, `models/`).
    pub dir: PathBuf,
    /// The summary written there.
    pub summary: Summary,
}

/// Each model's sweep inspected and planned as its single-model file would be, or the error
/// (naming `models.<id>...`) that keeps it from running. Nothing is loaded.
pub fn prepare_models(cfg: &LoadedConfig) -> Vec<(&ModelSweep, Result<(ModelInfo, Plan)>)> {
    cfg.model_sweeps
        .iter()
        .map(|ms| (ms, prepare(&ms.config).map_err(|e| ms.blame(e))))
        .collect()
}

/// Runs every model's sub-sweep, in file order, and writes the summary. A stop (Ctrl-C,
/// `--stop-after-runs`) ends the model it is in as a single sweep ends, and the models after
/// it are not started (`NOT_RUN`); the next invocation resumes each sub-sweep. Errors come
/// back only for the top directory, `--shard`, and `--exit-after-runs`'s kill.
pub fn run_models(
    cfg: &LoadedConfig,
    opts: &SweepOptions,
    reporter: &mut dyn Reporter,
    on_step: &mut dyn FnMut(ModelStep<'_>),
) -> Result<ModelsOutcome> {
    if opts.shard.is_some() {
        return Err(Error::config(
            &cfg.path,
            "models",
            "--shard splits one model's sweep: a file with `models:` cannot be sharded; \
             shard a single-model file (`model:`) instead",
        ));
    }
    let top = output_dir(cfg, opts.out.as_ref());
    let _lock = open_top(cfg, opts, &top)?;
    let prepared = prepare_models(cfg);
    let total = prepared.len();
    let mut entries = Vec::with_capacity(total);
    for (index, (ms, prep)) in prepared.into_iter().enumerate() {
        let config = model_config_json(cfg, &ms.id);
        if opts.stop.requested() {
            entries.push(ModelSummary::not_run(&ms.id, config));
            continue;
        }
        let dir = top.join(model_dir(&ms.id));
        on_step(ModelStep::Starting {
            id: &ms.id,
            index,
            total,
            dir: &dir,
        });
        let ran = prep.and_then(|(info, _)| {
            let sub = SweepOptions {
                out: Some(dir.clone()),
                ..opts.clone()
            };
            run_sweep_with_model(&ms.config, info, &sub, reporter).map_err(|e| ms.blame(e))
        });
        match ran {
            Ok(outcome) => {
                on_step(ModelStep::Ran {
                    id: &ms.id,
                    outcome: &outcome,
                });
                entries.push(ModelSummary::ran(&ms.id, config, &outcome.rendered.report));
            }
            // A kill finalizes nothing, the summary included.
            Err(e @ Error::Killed { .. }) => return Err(e),
            Err(e) => {
                on_step(ModelStep::Failed {
                    id: &ms.id,
                    error: &e,
                });
                entries.push(ModelSummary::error(&ms.id, config, &e));
            }
        }
    }
    let summary = Summary::new(&cfg.config.name, &cfg.sha256(), entries);
    summary.write(&top)?;
    Ok(ModelsOutcome { dir: top, summary })
}

/// Locks the top results directory for the whole run and marks it as driftsweep's. It must
/// be new, empty, or made by driftsweep, and must not hold a single-model sweep's results
/// (their reports and `models/` would mix).
fn open_top(cfg: &LoadedConfig, opts: &SweepOptions, top: &Path) -> Result<DirLock> {
    // An error about a directory the file's `output` chose names that field.
    let blame = |e: Error| match (&opts.out, &cfg.config.output) {
        (None, Some(_)) => Error::config(&cfg.path, "output", e.to_string()),
        _ => e,
    };
    let lock = DirLock::for_results(top).map_err(blame)?;
    if top.join(crate::store::MANIFEST).is_file() {
        lock.abandon();
        return Err(blame(Error::store(
            top,
            "holds the results of a single-model sweep (manifest.json): a sweep file with \
             `models:` writes `models/<id>/` and a summary; choose another --out or `output`",
        )));
    }
    let sha = cfg.sha256();
    if Marker::read(top)?.is_none_or(|m| m.config_sha256 != sha) {
        let marker = Marker::new(&cfg.config.name, &sha);
        let json =
            serde_json::to_vec_pretty(&marker).map_err(|e| Error::store(top.join(MARKER), e))?;
        crate::fsutil::write_atomic(&top.join(MARKER), &json)?;
    }
    Ok(lock)
}

/// A model's `models:` entry as JSON, for the summary.
fn model_config_json(cfg: &LoadedConfig, id: &str) -> serde_json::Value {
    cfg.config
        .models
        .as_ref()
        .and_then(|m| m.get(id))
        .and_then(|m| serde_json::to_value(m).ok())
        .unwrap_or(serde_json::Value::Null)
}
