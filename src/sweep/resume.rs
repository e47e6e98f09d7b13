//! Resuming: which earlier session's results a sweep may continue from, which of its pairs
//! are finished, and clearing a directory for `--start-over`.

use std::collections::HashSet;
use std::path::Path;

use crate::config::{LoadedConfig, TraceOn};
use crate::error::{Error, Result};
use crate::model::ModelInfo;
use crate::plan::{Mode, Plan};
use crate::store::{self, Manifest, RunStatus, Store};

/// The manifest of an earlier session of this very sweep in `dir`, if there is one. A
/// directory made by another sweep file, another model or on another device is refused
/// (mixing them would compare unlike things), unless `start_over` clears it first.
pub(super) fn previous_results(
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
