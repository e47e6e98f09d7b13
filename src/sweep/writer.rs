//! The writer: on the thread that called the sweep, it records what the device worker sends
//! the moment it arrives (run records, pair records, traces, the manifest's token ids and
//! loads), each file written atomically, and tells the reporter. The worker computes the next
//! run meanwhile; the channel between them holds two messages.

use std::sync::mpsc::Receiver;

use crate::config::LoadedConfig;
use crate::error::{Error, Result};
use crate::plan::{Mode, PairSpec, Plan};
use crate::store::{Manifest, PairRecord, RunRecord, RunStatus, Store};
use crate::verdict::PairVerdict;

use super::events::{Event, Reporter};
use super::worker::{RunDone, WorkerMsg};

/// Where the writer puts things, and what it must tell.
pub(super) struct Writer<'a> {
    pub(super) cfg: &'a LoadedConfig,
    pub(super) plan: &'a Plan,
    pub(super) store: &'a Store,
    pub(super) manifest: &'a mut Manifest,
    pub(super) reporter: &'a mut dyn Reporter,
    /// Stop at once (as a SIGKILL would: [`Error::Killed`], nothing more written) after this
    /// many run records: a deterministic hard stop for tests of what survives.
    pub(super) exit_after_runs: Option<usize>,
    pub(super) runs_written: usize,
}

impl Writer<'_> {
    /// Records every message until the worker hangs up; the first write error ends it (the
    /// worker then finds its channel closed and stops).
    pub(super) fn drain(&mut self, rx: Receiver<WorkerMsg>) -> Result<()> {
        for msg in rx {
            self.write(msg)?;
        }
        Ok(())
    }

    fn write(&mut self, msg: WorkerMsg) -> Result<()> {
        match msg {
            WorkerMsg::Tokens(t) => {
                self.manifest.tokens.extend(t);
                self.store.write_manifest(self.manifest)?;
            }
            WorkerMsg::Loaded(l) => {
                self.reporter.event(&Event::ModelLoaded(l.clone()));
                self.manifest.model_loads.push(l);
                self.store.write_manifest(self.manifest)?;
            }
            WorkerMsg::Started(run_id) => self.reporter.event(&Event::RunStarted { run_id }),
            WorkerMsg::Skipped { pair, reason } => {
                let spec = &self.plan.pairs[pair];
                write_skipped(self.cfg, self.store, spec, &reason)?;
                for mode in [Mode::Prefill, Mode::Decode] {
                    self.reporter.event(&Event::RunFinished {
                        run_id: spec.run_id(mode),
                        ok: false,
                    });
                }
                self.reporter.event(&Event::PairFinished {
                    pair_id: spec.id.clone(),
                    verdict: PairVerdict::Skipped,
                });
            }
            WorkerMsg::Trace(file) => self.store.write_trace(&file)?,
            WorkerMsg::Run {
                pair,
                mode,
                result,
                reused_from,
            } => {
                let spec = &self.plan.pairs[pair];
                let ok = result.is_ok();
                match result {
                    Ok(done) => write_run_ok(self.store, spec, mode, done, reused_from)?,
                    Err(e) => {
                        self.store
                            .write_run(&failed_record(spec, mode, RunStatus::Failed, e))?
                    }
                }
                self.runs_written += 1;
                if self.exit_after_runs == Some(self.runs_written) {
                    return Err(Error::Killed {
                        runs: self.runs_written,
                    });
                }
                self.reporter.event(&Event::RunFinished {
                    run_id: spec.run_id(mode),
                    ok,
                });
            }
            WorkerMsg::Pair(record) => {
                self.store.write_pair(&record)?;
                self.reporter.event(&Event::PairFinished {
                    pair_id: record.spec.id.clone(),
                    verdict: record.verdict,
                });
            }
        }
        Ok(())
    }
}

/// A pair that cannot run here: both runs and the pair SKIPPED, with the reason.
pub(super) fn write_skipped(
    cfg: &LoadedConfig,
    store: &Store,
    pair: &PairSpec,
    why: &str,
) -> Result<()> {
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
        limits: cfg.limits(pair.dtype, pair.weights, pair.equivalence()),
        yardstick: None,
        divergence_search: None,
        reference: None,
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
        finished_at: crate::fsutil::now(),
        reused_from: None,
        row_digests: Vec::new(),
    }
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
        finished_at: crate::fsutil::now(),
        reused_from,
        row_digests: out.row_digests,
    })
}
