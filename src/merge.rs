//! `driftsweep merge OUT DIR...`: joins the results directories of `run --shard K/N` into one
//! results directory and renders every report from it, as if one process had run the sweep.
//!
//! The shards must come from the same sweep file (sha256 of it and of the files it includes),
//! model weights, tool build and device kind, and partition the same plan; anything else is
//! refused with exit 2 and the differences named. Records are copied byte for byte, so the
//! merged report.json has the very metrics the shards computed. A shard that is not given, or
//! a pair a given shard has no record of, becomes an INCOMPLETE pair whose reason says which;
//! the merged verdict is then INCOMPLETE, never PASS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::{Mode, PairSpec};
use crate::report::{self, Rendered};
use crate::store::owner::{DirLock, Marker};
pub use crate::store::shards::{MergeInfo, MergedShard, ShardSummary};
use crate::store::shards::{ShardInfo, ShardedPair};
use crate::store::{Manifest, PairRecord, SequenceRecord, Store, safe};
use crate::verdict::PairVerdict;

/// What a merge produced.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    /// The rendered reports of the merged directory.
    pub rendered: Rendered,
    /// What went into it.
    pub info: MergeInfo,
    /// Where replaced earlier merges were kept: this merge's, when files in it that
    /// driftsweep did not write could not be moved into the new one, and any a merge killed
    /// while swapping left beside OUT that could not be settled.
    pub kept_aside: Vec<PathBuf>,
}

/// A shard directory and its manifest.
struct Input {
    dir: PathBuf,
    store: Store,
    manifest: Manifest,
    shard: ShardInfo,
}

/// The device family of a manifest's device id: `cpu`, `cuda` or `metal`.
fn device_kind(device: &str) -> &str {
    device.split(':').next().unwrap_or(device)
}

fn short(h: &str) -> &str {
    &h[..12.min(h.len())]
}

/// What must be equal across shards, in words, with the value.
fn identity(i: &Input) -> Vec<(&'static str, String)> {
    let m = &i.manifest;
    vec![
        (
            "sweep file",
            format!("`{}` (sha256 {}…)", m.config_path, short(&m.config_sha256)),
        ),
        (
            "model",
            format!("`{}` (sha256 {}…)", m.model.source, short(&m.model.sha256)),
        ),
        (
            "tool version",
            format!(
                "{} {} commit {}, candle {}",
                m.tool.name, m.tool.version, m.tool.git_commit, m.tool.candle_version
            ),
        ),
        ("device kind", device_kind(&m.device).to_string()),
        ("shard count", i.shard.count.to_string()),
    ]
}

fn open_input(dir: &Path) -> Result<Input> {
    let store = Store::open(dir)?;
    let manifest = store.manifest()?;
    let shard = manifest.shard.clone().ok_or_else(|| {
        Error::store(
            dir,
            "is not a shard: its manifest records no `--shard K/N`; merge joins the \
             directories of `driftsweep run CONFIG --shard K/N`",
        )
    })?;
    Ok(Input {
        dir: dir.to_path_buf(),
        store,
        manifest,
        shard,
    })
}

/// Refuses shards that do not belong together, naming every difference.
fn check_same_sweep(inputs: &[Input]) -> Result<()> {
    let first = &inputs[0];
    let want = identity(first);
    for other in &inputs[1..] {
        // The sweep file's sha256 alone decides "same sweep"; its path may differ per node.
        let differs: Vec<String> = want
            .iter()
            .zip(identity(other))
            .filter(|((what, a), (_, b))| match *what {
                "sweep file" => first.manifest.config_sha256 != other.manifest.config_sha256,
                _ => a != b,
            })
            .map(|((what, a), (_, b))| format!("{what}: {b} here, {a} in {}", first.dir.display()))
            .collect();
        if !differs.is_empty() {
            return Err(Error::store(
                &other.dir,
                format!(
                    "cannot be merged with {}: not shards of the same sweep ({})",
                    first.dir.display(),
                    differs.join("; ")
                ),
            ));
        }
        if other.shard.plan != first.shard.plan {
            return Err(Error::store(
                &other.dir,
                format!(
                    "cannot be merged with {}: the two partition the plan differently",
                    first.dir.display()
                ),
            ));
        }
    }
    // Sorted by index: a shard given twice sits next to itself.
    for w in inputs.windows(2) {
        if w[0].shard.index == w[1].shard.index {
            return Err(Error::store(
                &w[1].dir,
                format!(
                    "holds shard {}, as does {}: give each shard once",
                    w[1].shard.shard(),
                    w[0].dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Copies `rel` from `from` to `to` byte for byte, if it exists; says whether it did. Both
/// paths are confined to their directories ([`crate::store::safe::confined`]).
fn copy_rel(from: &Store, to: &Store, rel: &str) -> Result<bool> {
    let src = from.path(rel)?;
    if std::fs::symlink_metadata(&src).is_err() {
        return Ok(false);
    }
    if let Some(what) = safe::not_a_file(&src) {
        return Err(Error::store(
            &src,
            format!("is {what}: not a record driftsweep wrote"),
        ));
    }
    // Streamed: a logits file of gigabytes is never held in memory.
    crate::fsutil::copy_atomic(&src, &to.path(rel)?)?;
    Ok(true)
}

/// Copies a pair's records (pair, both runs, their logits, its trace); false when the pair
/// record is missing. Every name is the plan's, never a record's own `id`, and the pair's
/// verdict is judged again first: a tampered shard is refused, not copied.
fn copy_pair(from: &Input, to: &Store, p: &PairSpec) -> Result<bool> {
    if from.store.checked_pair(&from.manifest, p)?.is_none() {
        return Ok(false);
    }
    for mode in [Mode::Prefill, Mode::Decode] {
        let id = p.run_id(mode);
        if let Some(r) = from.store.run(p, mode)? {
            copy_rel(&from.store, to, &format!("runs/{id}.json"))?;
            // The record names its logits file; only the name driftsweep gives one is
            // followed, so a doctored record cannot make the merge read or write elsewhere.
            if let Some(f) = &r.logits_file
                && *f == format!("logits/{id}.safetensors")
            {
                copy_rel(&from.store, to, f)?;
            }
        }
    }
    copy_rel(&from.store, to, &format!("traces/{}.json", p.id))?;
    copy_rel(&from.store, to, &format!("pairs/{}.json", p.id))
}

/// OUT, checked and locked: new, or an earlier merge of this sweep (which is replaced);
/// never a shard given to this merge, and never other results. Nothing in it changes here.
fn check_out(out: &Path, inputs: &[Input]) -> Result<DirLock> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if let Some(o) = canon(out)
        && let Some(i) = inputs.iter().find(|i| canon(&i.dir).as_ref() == Some(&o))
    {
        return Err(Error::store(
            out,
            format!(
                "is the shard {} given to this merge: write the merge to another directory",
                i.shard.shard()
            ),
        ));
    }
    let lock = DirLock::for_results(out)?;
    if let Ok(existing) = Store::open(out) {
        let ours = existing.manifest().and_then(|m| {
            if m.merged.is_none() || m.config_sha256 != inputs[0].manifest.config_sha256 {
                return Err(Error::store(
                    out,
                    "holds results that are not a merge of this sweep's shards: choose \
                     another OUT (merge replaces only an earlier merge of the same sweep)",
                ));
            }
            Ok(())
        });
        if let Err(e) = ours {
            lock.abandon();
            return Err(e);
        }
    }
    Ok(lock)
}

/// A directory beside `out` (same parent, so a rename swaps them) named
/// `.<name>.driftsweep-<what>-<pid>`: a name of driftsweep's own, found again if a merge
/// was killed.
fn beside(out: &Path, what: &str) -> Result<PathBuf> {
    let canon = std::fs::canonicalize(out)
        .map_err(|e| Error::store(out, format!("cannot resolve: {e}")))?;
    let (Some(parent), Some(name)) = (canon.parent(), canon.file_name()) else {
        return Err(Error::store(out, "cannot merge into a file system's root"));
    };
    let name = name.to_string_lossy();
    Ok(parent.join(format!(".{name}.driftsweep-{what}-{}", std::process::id())))
}

/// The directories named as [`beside`] names them for `what` by another process (a killed
/// merge into `out`) that hold driftsweep's marker. Best effort: none when unreadable.
fn stale_beside(out: &Path, what: &str) -> Vec<PathBuf> {
    let Ok(mine) = beside(out, what) else {
        return Vec::new();
    };
    let (Some(parent), Some(name)) = (mine.parent(), mine.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let prefix = &name[..name.len() - std::process::id().to_string().len()];
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let stale = n
                .strip_prefix(prefix)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
            stale
                && e.path() != mine
                && e.file_type().is_ok_and(|t| t.is_dir())
                && e.path().join(crate::store::owner::MARKER).is_file()
        })
        .map(|e| e.path())
        .collect()
}

/// Removes staging directories a killed merge into `out` left beside it. Best effort.
fn remove_stale_staging(out: &Path) {
    for dir in stale_beside(out, "merge") {
        // remove_dir_all does not follow links: nothing outside it goes.
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Settles the replaced merges (`.<name>.driftsweep-old-<pid>`) a merge killed during its
/// swap left beside `out`, now that `out` holds a whole merge: each is emptied as
/// [`settle_old`] empties this merge's own. Returns those that could not be removed (one
/// still locked by a running merge, or holding files that could not be moved over), so
/// that they are reported rather than left unnoticed.
fn settle_stale_old(out: &Path) -> Vec<PathBuf> {
    let mut kept = Vec::new();
    for old in stale_beside(out, "old") {
        // A merge still running holds its lock there: its directory is not stale.
        let settled = match DirLock::existing(&old) {
            Ok(_lock) => match settle_old(&old, out) {
                Ok(kept) => kept,
                Err(_) => Some(old),
            },
            Err(_) => Some(old),
        };
        kept.extend(settled);
    }
    kept
}

/// Puts the finished merge `stage` in the place of `out` by renames, then settles the
/// replaced directory ([`settle_old`]). Returns where the replaced directory was kept, if
/// some of it could not be moved over.
fn swap_in(stage: &Path, out: &Path) -> Result<Option<PathBuf>> {
    let io = |p: &Path, e: std::io::Error| Error::store(p, format!("cannot replace: {e}"));
    let old = beside(out, "old")?;
    std::fs::rename(out, &old).map_err(|e| io(out, e))?;
    if let Err(e) = std::fs::rename(stage, out) {
        let _ = std::fs::rename(&old, out);
        return Err(io(out, e));
    }
    settle_old(&old, out)
}

/// Moves over what the replaced directory `old` held that driftsweep did not record (a
/// user's files) into `out`, and removes the rest of it. Returns `old` if some of it could
/// not be moved over.
fn settle_old(old: &Path, out: &Path) -> Result<Option<PathBuf>> {
    let left = if old.join(crate::store::owner::MARKER).is_file() {
        crate::sweep::clear_results(old)?
    } else {
        Vec::new()
    };
    let mut kept = false;
    for p in left {
        let Ok(rel) = p.strip_prefix(old) else {
            continue;
        };
        let to = out.join(rel);
        let moved = !to.exists()
            && to
                .parent()
                .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            && std::fs::rename(&p, &to).is_ok();
        kept |= !moved;
    }
    if kept {
        return Ok(Some(old.to_path_buf()));
    }
    for f in [crate::store::owner::MARKER, crate::store::owner::LOCK] {
        let _ = std::fs::remove_file(old.join(f));
    }
    for sub in crate::store::owner::SUBDIRS {
        let _ = std::fs::remove_dir(old.join(sub));
    }
    Ok(std::fs::remove_dir(old).is_err().then(|| old.to_path_buf()))
}

/// Merges the shard directories `dirs` into `out` and renders its reports. The merge is
/// built in a directory beside `out` and put in its place by renames once whole: a bad
/// shard, an error or a kill part-way leaves an earlier merge in `out` as it was.
pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<MergeOutcome> {
    if dirs.is_empty() {
        return Err(Error::store(
            out,
            "merge needs at least one shard directory",
        ));
    }
    let (_shard_locks, inputs) = open_shards(dirs)?;
    let out_lock = check_out(out, &inputs)?;
    remove_stale_staging(out);
    let stage = beside(out, "merge")?;
    // The shards' manifests (each with the whole plan) go before the reports are rendered:
    // the report reads the merged records one pair at a time, beside nothing else that
    // grows with the plan. The shards stay locked until the merge is in place.
    let built = build(&stage, &inputs).and_then(|(info, store)| {
        drop(inputs);
        let rendered = report::render(&store)?;
        let outcome = MergeOutcome {
            rendered,
            info,
            kept_aside: Vec::new(),
        };
        Ok((outcome, store))
    });
    let (mut outcome, store) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            // A directory this merge created, still empty, goes again.
            out_lock.abandon();
            return Err(e);
        }
    };
    outcome.kept_aside.extend(swap_in(&stage, out)?);
    drop((store, out_lock));
    outcome.kept_aside.extend(settle_stale_old(out));
    outcome.rendered.dir = out.to_path_buf();
    Ok(outcome)
}

/// Writes the records and manifest of the merge of `inputs` into the new directory `stage`
/// (its reports are rendered by [`merge`]).
fn build(stage: &Path, inputs: &[Input]) -> Result<(MergeInfo, Store)> {
    let first = &inputs[0];
    let lock = DirLock::for_results(stage)?;
    let marker = Marker::new(&first.manifest.sweep_name, &first.manifest.config_sha256);
    let store = Store::create(stage, lock, &marker)?;
    let plan = &first.shard.plan;
    let count = first.shard.count;
    let tokens = merged_tokens(inputs)?;
    let given: BTreeMap<usize, &Input> = inputs.iter().map(|i| (i.shard.index, i)).collect();
    let missing_pairs = copy_pairs(&given, &store, plan, count, &first.manifest)?;
    let shards = shard_summaries(inputs, plan, &missing_pairs);
    for rel in [
        report::CUSTOM_REPORT_TEMPLATE,
        report::CUSTOM_TRACE_TEMPLATE,
    ] {
        copy_rel(&first.store, &store, rel)?;
    }
    let times = Times::of(inputs);
    let missing_shards: Vec<usize> = (0..count).filter(|k| !given.contains_key(k)).collect();
    let info = MergeInfo {
        count,
        shards,
        missing_shards,
        missing_pairs,
        elapsed_s: times.elapsed_s(),
        merged_at: crate::fsutil::now(),
    };
    let manifest = merged_manifest(inputs, tokens, times, &info);
    store.write_manifest(&manifest)?;
    Ok((info, store))
}

/// Opens and checks every shard, then locks each and reads them again under their locks;
/// returns the locks (held until the merge is written) and the shards in shard order.
fn open_shards(dirs: &[PathBuf]) -> Result<(Vec<DirLock>, Vec<Input>)> {
    let open_all = || -> Result<Vec<Input>> {
        let mut inputs = dirs
            .iter()
            .map(|d| open_input(d))
            .collect::<Result<Vec<_>>>()?;
        // Records go in shard order.
        inputs.sort_by_key(|i| i.shard.index);
        check_same_sweep(&inputs)?;
        Ok(inputs)
    };
    // Checked first (a shard given twice is named as such), then every shard locked and
    // read again under its lock: a shard still being written is refused, naming its
    // writer, and none can change while the merge copies it.
    let locks = open_all()?
        .iter()
        .map(|i| DirLock::existing(&i.dir))
        .collect::<Result<Vec<_>>>()?;
    Ok((locks, open_all()?))
}

/// Every shard's token ids, checked to agree where two shards hold the same sequence.
fn merged_tokens(inputs: &[Input]) -> Result<BTreeMap<String, SequenceRecord>> {
    let mut tokens = BTreeMap::new();
    for i in inputs {
        for (k, t) in &i.manifest.tokens {
            // Every shard generates a (prompt, seed)'s ids at the plan's longest span with
            // the same seeded draws: two that differ mean the shards are not one sweep.
            if let Some(seen) = tokens.insert(k.clone(), t.clone())
                && (seen.prompt != t.prompt || seen.continuation != t.continuation)
            {
                return Err(Error::store(
                    &i.dir,
                    format!(
                        "its token ids for `{k}` differ from another shard's: these are not \
                         shards of one sweep"
                    ),
                ));
            }
        }
    }
    Ok(tokens)
}

/// Copies every pair of the plan from its shard into `store`; a pair no given shard holds
/// becomes INCOMPLETE, saying why. Returns the ids of those missing pairs.
fn copy_pairs(
    given: &BTreeMap<usize, &Input>,
    store: &Store,
    plan: &[ShardedPair],
    count: usize,
    first: &Manifest,
) -> Result<Vec<String>> {
    let mut missing_pairs = Vec::new();
    for sp in plan {
        let p = &sp.spec;
        let reason = match given.get(&sp.shard) {
            Some(i) if copy_pair(i, store, p)? => continue,
            Some(i) => format!(
                "missing: shard {} ({}) has no record of this pair; run that shard again to \
                 finish it, then merge again",
                i.shard.shard(),
                i.dir.display()
            ),
            None => format!(
                "missing: shard {}/{count}, which holds this pair, was not given to merge",
                sp.shard
            ),
        };
        missing_pairs.push(p.id.clone());
        store.write_pair(&PairRecord {
            spec: p.clone(),
            verdict: PairVerdict::Incomplete,
            reason,
            metrics: None,
            limits: safe::manifest_limits(first, p),
            yardstick: None,
            divergence_search: None,
            reference: None,
        })?;
    }
    Ok(missing_pairs)
}

/// What the merged manifest says of each given shard.
fn shard_summaries(
    inputs: &[Input],
    plan: &[ShardedPair],
    missing_pairs: &[String],
) -> Vec<MergedShard> {
    let mut shards = Vec::new();
    for i in inputs {
        let own: Vec<&PairSpec> = plan
            .iter()
            .filter(|p| p.shard == i.shard.index)
            .map(|p| &p.spec)
            .collect();
        shards.push(MergedShard {
            index: i.shard.index,
            dir: i.dir.display().to_string(),
            pairs: own.len(),
            missing_pairs: own.iter().filter(|p| missing_pairs.contains(&p.id)).count(),
            wall_s: i.manifest.wall_s,
            device_name: i.manifest.device_name.clone(),
        });
    }
    shards
}

/// When the shards ran, together.
struct Times {
    /// Every shard finished its sweep.
    all_finished: bool,
    /// The earliest start.
    started_at: Option<String>,
    /// The latest finish, when every shard finished.
    finished_at: Option<String>,
}

impl Times {
    fn of(inputs: &[Input]) -> Self {
        let all_finished = inputs.iter().all(|i| i.manifest.finished_at.is_some());
        let started_at = inputs.iter().map(|i| i.manifest.started_at.clone()).min();
        let finished_at = all_finished
            .then(|| {
                inputs
                    .iter()
                    .filter_map(|i| i.manifest.finished_at.clone())
                    .max()
            })
            .flatten();
        Times {
            all_finished,
            started_at,
            finished_at,
        }
    }

    /// Seconds from the first start to the last finish.
    fn elapsed_s(&self) -> Option<f64> {
        match (&self.started_at, &self.finished_at) {
            (Some(a), Some(b)) => match (
                chrono::DateTime::parse_from_rfc3339(a),
                chrono::DateTime::parse_from_rfc3339(b),
            ) {
                (Ok(a), Ok(b)) => Some((b - a).num_milliseconds() as f64 / 1e3),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The first shard's manifest made the whole sweep's: every pair, token id, load and
/// session of the shards, and the merge's own facts.
fn merged_manifest(
    inputs: &[Input],
    tokens: BTreeMap<String, SequenceRecord>,
    times: Times,
    info: &MergeInfo,
) -> Manifest {
    let first = &inputs[0];
    let mut names: Vec<String> = inputs
        .iter()
        .map(|i| i.manifest.device_name.clone())
        .collect();
    names.sort();
    names.dedup();
    let mut manifest = first.manifest.clone();
    manifest.pairs = first.shard.plan.iter().map(|p| p.spec.clone()).collect();
    manifest.tokens = tokens;
    manifest.load_groups = first.shard.plan_load_groups.clone();
    manifest.model_loads = inputs
        .iter()
        .flat_map(|i| i.manifest.model_loads.clone())
        .collect();
    manifest.sessions = inputs
        .iter()
        .flat_map(|i| i.manifest.sessions.clone())
        .collect();
    manifest.device_name = names.join(" / ");
    manifest.started_at = times.started_at.unwrap_or_default();
    manifest.finished_at = times.finished_at;
    manifest.wall_s = if times.all_finished {
        Some(inputs.iter().filter_map(|i| i.manifest.wall_s).sum())
    } else {
        None
    };
    manifest.shard = None;
    manifest.merged = Some(info.clone());
    manifest
}
