//! Resuming: which earlier session's results a sweep may continue from, which of its pairs
//! are finished, and clearing a directory for `--start-over`.

use std::collections::HashSet;
use std::path::Path;

use crate::config::{LoadedConfig, TraceOn};
use crate::error::{Error, Result};
use crate::model::ModelInfo;
use crate::plan::{Mode, Plan};
use crate::store::owner::{self, Marker};
use crate::store::{Manifest, RunStatus, Store, safe};

/// What the results directory held before this session.
pub(super) struct Previous {
    /// The manifest of an earlier session of this very sweep, to resume.
    pub(super) manifest: Option<Manifest>,
    /// What `--start-over` left alone: files driftsweep did not record.
    pub(super) left_alone: Vec<std::path::PathBuf>,
}

/// The manifest of an earlier session of this very sweep in `dir`, if there is one. A
/// directory made by another sweep file, another model or on another device is refused
/// (mixing them would compare unlike things), unless `start_over` clears what driftsweep
/// recorded there first. The caller holds the directory's lock, so no other process can
/// write between this check and the session's first manifest.
pub(super) fn previous_results(
    dir: &Path,
    config_sha256: &str,
    info: &ModelInfo,
    device_name: &str,
    start_over: bool,
) -> Result<Previous> {
    let marker = Marker::read(dir)?;
    let existing = Store::open(dir).ok();
    if existing.is_none() && marker.is_none() {
        return Ok(Previous {
            manifest: None,
            left_alone: Vec::new(),
        });
    }
    if start_over {
        return Ok(Previous {
            manifest: None,
            left_alone: clear_results(dir)?,
        });
    }
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
    let Some(existing) = existing else {
        // Made for a sweep and killed before its first manifest: nothing to resume, and
        // nothing to take over unless it was made for this very sweep.
        if let Some(mk) = &marker
            && mk.config_sha256 != config_sha256
        {
            return refuse(format!(
                "was made for another sweep (`{}`, sha256 {}…, this one {}…)",
                mk.sweep_name,
                short(&mk.config_sha256),
                short(config_sha256)
            ));
        }
        return Ok(Previous {
            manifest: None,
            left_alone: Vec::new(),
        });
    };
    let m = existing.manifest()?;
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
    Ok(Previous {
        manifest: Some(m),
        left_alone: Vec::new(),
    })
}

/// Removes what a sweep recorded in a results directory, and nothing else (see
/// [`owner::clear_recorded`]); returns what it left alone.
pub(crate) fn clear_results(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    owner::clear_recorded(dir, &crate::report::FILES)
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
        let pre = store.run(pair, Mode::Prefill).ok().flatten();
        let dec = store.run(pair, Mode::Decode).ok().flatten();
        let runs_ok = [&pre, &dec]
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.status == RunStatus::Ok));
        // A verdict that does not follow from its own metrics and the plan's limits (edited
        // by hand, or damaged) is computed again, not kept.
        let limits = cfg.limits(pair.dtype, pair.weights, pair.equivalence());
        let unfinished = crate::store::unfinished_run(&[pre.as_ref(), dec.as_ref()]);
        if safe::verdict_error(&rec.claim(), Some(&limits), unfinished).is_some() {
            continue;
        }
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
