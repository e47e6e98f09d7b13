//! `driftsweep verify DIR`: re-runs pairs of a finished results directory and says, per pair,
//! whether this device reproduces the stored metrics bit for bit, and which metric moved when
//! it does not. It reads the sweep file's text, token ids and model identity from the
//! manifest, so it needs no sweep file, and it never writes a run or pair record: only
//! `verify.json`. It re-runs the pair's two paths, not its reference: a stored reference
//! check enters the re-run's verdict as it entered the stored one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::config::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::exit;
use crate::model::{ModelInfo, ModelUnderTest};
use crate::plan::{PairSpec, Plan};
use crate::run;
use crate::store::{Manifest, PairRecord, Store};
use crate::sweep;

/// Which pairs to re-run.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    /// Every compared pair.
    All,
    /// About this many, spread evenly over the plan (so every dtype and span is likely hit).
    Sample(usize),
}

/// What re-running a pair showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Every metric and the verdict have the stored bits.
    Identical,
    /// Some metric (or the verdict) moved.
    Mismatch,
    /// The pair could not be re-run.
    Error,
}

impl CheckStatus {
    /// Lowercase name, as in verify.json.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Identical => "identical",
            CheckStatus::Mismatch => "mismatch",
            CheckStatus::Error => "error",
        }
    }
}

/// One re-run pair.
#[derive(Debug, Clone, Serialize)]
pub struct PairCheck {
    /// Pair id.
    pub id: String,
    /// What the re-run showed.
    pub status: CheckStatus,
    /// The metrics whose value differs: (name, stored, now).
    pub moved: Vec<MovedMetric>,
    /// Why the pair could not be re-run.
    pub error: Option<String>,
}

/// One metric that is not bit-identical.
#[derive(Debug, Clone, Serialize)]
pub struct MovedMetric {
    /// Metric name (report.json spelling).
    pub metric: String,
    /// The stored value.
    pub stored: serde_json::Value,
    /// The value this re-run gave.
    pub now: serde_json::Value,
}

/// `verify.json`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Results directory.
    pub dir: String,
    /// Device the results were computed on.
    pub stored_device: String,
    /// Device of this re-run.
    pub device: String,
    /// When this check ran.
    pub checked_at: String,
    /// Compared pairs in the directory.
    pub candidates: usize,
    /// The checks, in plan order.
    pub pairs: Vec<PairCheck>,
    /// Pairs of the sweep whose records are not in the directory, so they could not be
    /// verified.
    pub missing: Vec<MissingPair>,
}

/// A pair of the sweep that verify could not find.
#[derive(Debug, Clone, Serialize)]
pub struct MissingPair {
    /// Pair id.
    pub id: String,
    /// Which record is missing.
    pub why: String,
}

impl VerifyReport {
    /// Pairs whose metrics were reproduced bit for bit.
    pub fn identical(&self) -> usize {
        self.pairs
            .iter()
            .filter(|p| p.status == CheckStatus::Identical)
            .count()
    }

    /// Exit code: 0 all re-run pairs identical, 1 any mismatch, 3 nothing verified, an error,
    /// or a pair of the sweep missing from the directory.
    pub fn exit_code(&self) -> i32 {
        let any = |s: CheckStatus| self.pairs.iter().any(|p| p.status == s);
        if any(CheckStatus::Mismatch) {
            exit::FAIL
        } else if self.pairs.is_empty() || any(CheckStatus::Error) || !self.missing.is_empty() {
            exit::INCOMPLETE
        } else {
            exit::PASS
        }
    }
}

/// Re-runs the selected pairs of `dir` on `device` (default: the device the results were
/// computed on, from the manifest) and writes `verify.json` there.
pub fn verify(
    dir: &Path,
    selection: Selection,
    device: Option<DeviceSpec>,
) -> Result<VerifyReport> {
    // verify.json is written into the directory: one writer at a time.
    let store = Store::open_locked(dir)?;
    let manifest = store.manifest()?;
    let (cfg, info, plan) = stored_sweep(dir, &manifest, device)?;
    let open = run::open_device(cfg.config.device)
        .map_err(|why| Error::store(dir, format!("cannot verify here: {why}")))?;
    let (compared, missing) = stored_pairs(&plan, &manifest, &store)?;
    let chosen = choose(compared.len(), selection);
    let fault = cfg.injection();

    let mut checks: BTreeMap<usize, PairCheck> = BTreeMap::new();
    // One load per (engine, weights, dtype), as in the sweep.
    let mut keys: Vec<_> = chosen.iter().map(|&i| compared[i].0.load_key()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let model = info.load_under_test(key.engine, key.weights, key.dtype, &open.device);
        let model = model.as_ref().map(|m| m.as_ref());
        for &i in chosen.iter().filter(|&&i| compared[i].0.load_key() == key) {
            let (spec, stored) = &compared[i];
            let check = match &model {
                Ok(m) => check_pair(&info, *m, &manifest, spec, stored, fault),
                Err(e) => Some(failed_check(spec, format!("the model could not load: {e}"))),
            };
            if let Some(check) = check {
                checks.insert(i, check);
            }
        }
    }
    let report = VerifyReport {
        dir: dir.display().to_string(),
        stored_device: manifest.device_name.clone(),
        device: open.name,
        checked_at: crate::fsutil::now(),
        candidates: compared.len(),
        pairs: checks.into_values().collect(),
        missing,
    };
    store.write_json("verify.json", &report)?;
    Ok(report)
}

/// The sweep as it ran, from the manifest: its config (to run on `device`, else the device
/// the results were computed on), its model, unchanged since, and its plan.
fn stored_sweep(
    dir: &Path,
    manifest: &Manifest,
    device: Option<DeviceSpec>,
) -> Result<(config::LoadedConfig, ModelInfo, Plan)> {
    // The sweep ran with whatever --max-pairs it was given; its plan is not re-bounded.
    let unbounded = config::LoadLimits {
        max_pairs: usize::MAX,
    };
    let mut cfg = config::parse_with(
        Path::new(&manifest.config_path),
        &manifest.config_text,
        &unbounded,
    )?;
    if cfg.sha256() != manifest.config_sha256 {
        return Err(Error::store(
            dir,
            format!(
                "a file that `{}` includes (prompt file or template) changed since the sweep \
                 ran, so its pairs cannot be re-run as they were",
                manifest.config_path
            ),
        ));
    }
    // By default the device the results were computed on (which `--device` at `run` time
    // may have chosen over the sweep file's), so that "identical" means "reproduced there".
    cfg.config.device = match device {
        Some(d) => d,
        None => manifest
            .device
            .parse()
            .map_err(|m: String| Error::store(dir, format!("manifest.json: `device`: {m}")))?,
    };
    let (info, plan) = sweep::prepare(&cfg)?;
    if info.sha256 != manifest.model.sha256 {
        return Err(Error::model(
            &info.source,
            format!(
                "the weights changed since the sweep ran (sha256 {} then, {} now)",
                manifest.model.sha256, info.sha256
            ),
        ));
    }
    Ok((cfg, info, plan))
}

/// A compared pair and its stored record.
type Stored = (PairSpec, PairRecord);

/// The sweep's compared pairs with their stored records, in plan order, and the pairs whose
/// records are missing.
fn stored_pairs(
    plan: &Plan,
    manifest: &Manifest,
    store: &Store,
) -> Result<(Vec<Stored>, Vec<MissingPair>)> {
    let mut compared: Vec<Stored> = Vec::new();
    let mut missing: Vec<MissingPair> = Vec::new();
    for pair in &plan.pairs {
        if !manifest.pairs.iter().any(|p| p.id == pair.id) {
            continue;
        }
        // Records are untrusted: one that does not parse, names another pair, or holds a
        // verdict its own metrics and the manifest's limits do not give, is an error (exit
        // 2), never a pair reported as reproduced.
        let why = match store.checked_pair(manifest, pair)? {
            None => Some(format!("no pair record pairs/{}.json", pair.id)),
            Some(rec) => {
                let mut gone = Vec::new();
                for m in [crate::plan::Mode::Prefill, crate::plan::Mode::Decode] {
                    if store.run(pair, m)?.is_none() {
                        gone.push(format!("runs/{}.json", pair.run_id(m)));
                    }
                }
                if !gone.is_empty() {
                    Some(format!("no run record {}", gone.join(" and ")))
                } else {
                    if rec.verdict.is_compared() && rec.metrics.is_some() {
                        compared.push((pair.clone(), rec));
                    }
                    None
                }
            }
        };
        if let Some(why) = why {
            missing.push(MissingPair {
                id: pair.id.clone(),
                why,
            });
        }
    }
    Ok((compared, missing))
}

/// A pair that could not be re-run, and why.
fn failed_check(spec: &PairSpec, error: String) -> PairCheck {
    PairCheck {
        id: spec.id.clone(),
        status: CheckStatus::Error,
        moved: vec![],
        error: Some(error),
    }
}

/// Re-runs one stored pair on `model` with the manifest's token ids and compares its
/// metrics with the stored ones (`None`: the pair was not run).
fn check_pair(
    info: &ModelInfo,
    model: &dyn ModelUnderTest,
    manifest: &Manifest,
    spec: &PairSpec,
    stored: &PairRecord,
    fault: crate::trace::Injection,
) -> Option<PairCheck> {
    let Some(seq) = manifest
        .tokens
        .get(&sweep::token_key(&spec.prompt, spec.seed))
        .filter(|s| s.continuation.len() >= spec.span)
    else {
        return Some(failed_check(
            spec,
            "the manifest has no token ids for it".into(),
        ));
    };
    let mut ids = seq.prompt.clone();
    ids.extend_from_slice(&seq.continuation[..spec.span]);
    let others = crate::tokens::companions(
        info,
        &spec.prompt,
        spec.seed,
        ids.len(),
        spec.path.batch() - 1,
    );
    let input = sweep::PairInput {
        ids: &ids,
        prompt_len: seq.prompt.len(),
        others: &others,
    };
    let inst = run::Instruments { trace: None, fault };
    let done = sweep::run_pair(model, input, spec, inst, stored.limits, None, &mut |_| true)?;
    if let Some(e) = done.runs.iter().find_map(|(_, r)| r.as_ref().err()) {
        return Some(failed_check(spec, e.to_string()));
    }
    let moved = moved_metrics(stored, &with_stored_reference(stored, done.record));
    Some(PairCheck {
        id: spec.id.clone(),
        status: if moved.is_empty() {
            CheckStatus::Identical
        } else {
            CheckStatus::Mismatch
        },
        moved,
        error: None,
    })
}

/// Indices of the pairs to re-run out of `n`: all, or `k` spread evenly (first and last
/// included), deterministic so that two verifications check the same pairs.
fn choose(n: usize, selection: Selection) -> Vec<usize> {
    match selection {
        Selection::All => (0..n).collect(),
        Selection::Sample(k) if k >= n => (0..n).collect(),
        Selection::Sample(0) => vec![],
        Selection::Sample(1) => vec![0],
        Selection::Sample(k) => {
            let mut v: Vec<usize> = (0..k).map(|j| j * (n - 1) / (k - 1)).collect();
            v.dedup();
            v
        }
    }
}

/// The re-run's record judged as the stored one was: a verify re-runs the pair's two paths,
/// not its reference (a transformers worker, another load), so the stored reference check
/// enters the re-run's verdict as it entered the stored one
/// ([`crate::store::ReferenceCheck::enter`]). Otherwise a pair held to its reference would
/// read as moved with every metric bit-identical.
fn with_stored_reference(stored: &PairRecord, mut now: PairRecord) -> PairRecord {
    if let Some(check) = &stored.reference {
        let (verdict, reason) = check.enter(now.verdict, &now.reason);
        now.verdict = verdict;
        now.reason = reason;
        now.reference = Some(check.clone());
    }
    now
}

/// Every metric (and the verdict) whose stored value differs from the re-run's, compared
/// through their JSON form: serde_json writes f32 in the shortest form that reads back to
/// the same bits, so equal JSON numbers are equal bits.
fn moved_metrics(stored: &PairRecord, now: &PairRecord) -> Vec<MovedMetric> {
    let as_map = |r: &PairRecord| match serde_json::to_value(&r.metrics) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(stored), as_map(now));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    // A metric the stored record predates (this binary measures more) has not moved: there
    // is nothing stored to reproduce.
    keys.retain(|k| a.contains_key(*k));
    let mut moved: Vec<MovedMetric> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| MovedMetric {
            metric: k.clone(),
            stored: a.get(k).cloned().unwrap_or(serde_json::Value::Null),
            now: b.get(k).cloned().unwrap_or(serde_json::Value::Null),
        })
        .collect();
    if stored.verdict != now.verdict {
        moved.push(MovedMetric {
            metric: "verdict".into(),
            stored: serde_json::json!(stored.verdict.as_str()),
            now: serde_json::json!(now.verdict.as_str()),
        });
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_spreads_over_the_plan_and_keeps_both_ends() {
        assert_eq!(choose(10, Selection::Sample(3)), vec![0, 4, 9]);
        assert_eq!(choose(10, Selection::Sample(1)), vec![0]);
        assert_eq!(choose(3, Selection::Sample(8)), vec![0, 1, 2]);
        assert_eq!(choose(5, Selection::All), vec![0, 1, 2, 3, 4]);
        assert!(choose(0, Selection::Sample(4)).is_empty());
        assert!(choose(7, Selection::Sample(0)).is_empty());
    }

    fn record(decode_shift: f32) -> PairRecord {
        let pre = [1.0f32, 2.0, 3.0, 0.5, 0.25, 4.0];
        let dec: Vec<f32> = pre.iter().map(|x| x + decode_shift).collect();
        let spec = PairSpec::new("p", 2, crate::dtype::RunDtype::F32, true, 0);
        let limits = crate::limits::Thresholds::default_tolerance(spec.dtype);
        let m = crate::compare::compare(&pre, &dec, 3, 5, limits.max_abs_diff()).unwrap();
        PairRecord {
            spec,
            verdict: crate::verdict::PairVerdict::PassEquiv,
            reason: String::new(),
            metrics: Some(m),
            limits,
            yardstick: None,
            divergence_search: None,
            reference: None,
        }
    }

    #[test]
    fn equal_bits_move_nothing_and_a_changed_value_is_named() {
        assert!(moved_metrics(&record(1e-6), &record(1e-6)).is_empty());
        let moved = moved_metrics(&record(1e-6), &record(2e-6));
        let names: Vec<&str> = moved.iter().map(|m| m.metric.as_str()).collect();
        assert!(names.contains(&"max_abs_diff"), "{names:?}");
        assert!(names.contains(&"mean_abs_diff"), "{names:?}");
        assert!(!names.contains(&"vocab"), "{names:?}");
        // A record written before Δp was measured does not count Δp as moved.
        let mut old = record(1e-6);
        old.metrics.as_mut().unwrap().per_pos_delta_p.clear();
        assert!(moved_metrics(&old, &record(1e-6)).is_empty());
        let m = moved.iter().find(|m| m.metric == "max_abs_diff").unwrap();
        assert_ne!(m.stored, m.now);
    }

    #[test]
    fn a_stored_reference_failure_enters_the_rerun_verdict() {
        // Stored: consistent paths, failed against the reference (FAIL_EQUIV). The re-run
        // computes the paths only (PASS_EQUIV) and must read as identical.
        let failed = crate::store::RefComparison {
            metrics: record(1e-6).metrics.unwrap(),
            pass: false,
            reason: "outside its reference limits".into(),
        };
        let check = crate::store::ReferenceCheck {
            source: "own decoder f32".into(),
            limits: record(0.0).limits,
            prefill: Some(failed.clone()),
            decode: Some(failed),
            not_compared: None,
            convention: None,
        };
        let mut stored = record(1e-6);
        let (verdict, reason) = check.enter(stored.verdict, &stored.reason);
        assert_ne!(verdict, stored.verdict, "the check must move the verdict");
        (stored.verdict, stored.reason, stored.reference) = (verdict, reason, Some(check));
        let rerun = record(1e-6);
        // Negative control: compared bare, the verdict moves.
        let bare = moved_metrics(&stored, &rerun);
        assert_eq!(bare.len(), 1, "{bare:?}");
        assert_eq!(bare[0].metric, "verdict");
        assert!(moved_metrics(&stored, &with_stored_reference(&stored, rerun)).is_empty());
        // A metric that moved still shows through the stored check.
        let moved = moved_metrics(&stored, &with_stored_reference(&stored, record(2e-6)));
        assert!(
            moved.iter().any(|m| m.metric == "max_abs_diff"),
            "{moved:?}"
        );
    }
}
