//! The results directory (docs/design.md, "Results on disk"): the manifest, one record per run, one per
//! pair, optional logits, and the rendered reports. Every file is written atomically
//! (temporary file in the same directory, fsync, rename), so it appears whole or not at all.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::compare::Metrics;
mod manifest;
pub mod owner;
mod reference;
pub mod safe;
pub mod shards;

// The manifest lives in its own file so that `owner` can read it without importing this
// one; its items stay at their paths here.
use manifest::read_json;
pub use manifest::{
    MANIFEST, Manifest, ModelIdentity, ModelLoad, ResolvedSettings, SequenceRecord, Session,
    ToolInfo,
};
pub use reference::{NotCompared, RefComparison, ReferenceCheck};

use crate::error::{Error, Result};
use crate::limits::Thresholds;
use crate::plan::{Mode, PairSpec};
use crate::verdict::PairVerdict;

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Finished; logits were compared or kept.
    Ok,
    /// Raised an error.
    Failed,
    /// Not run here.
    Skipped,
}

/// One run's record, written the moment the run finishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Its pair.
    pub pair_id: String,
    /// Prefill or decode.
    pub mode: Mode,
    /// Outcome.
    pub status: RunStatus,
    /// Error or skip reason.
    pub error: Option<String>,
    /// Wall time, seconds.
    pub wall_s: Option<f64>,
    /// First span position.
    pub span_start: usize,
    /// Span positions produced.
    pub positions: usize,
    /// Forward passes.
    pub forwards: usize,
    /// Tokens fed.
    pub tokens_fed: usize,
    /// Size of the span logits in f32, bytes.
    pub logits_bytes: u64,
    /// Logits file relative to the results directory, if kept.
    pub logits_file: Option<String>,
    /// RFC 3339 time it finished.
    pub finished_at: String,
    /// The run whose computation this one reused: a prefill is the same computation for
    /// kv_aligned true and false, so the second pair takes the first's logits (and its
    /// wall time, the cost of producing them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// One digest per span row of the logits ([`crate::compare::row_digests`]): equal
    /// digests in two runs mean bit-identical rows (absent in older records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_digests: Vec<String>,
}

/// One pair's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairRecord {
    /// The pair.
    #[serde(flatten)]
    pub spec: PairSpec,
    /// Verdict.
    pub verdict: PairVerdict,
    /// Its reason in words.
    pub reason: String,
    /// Metrics, when the runs were compared.
    pub metrics: Option<Metrics>,
    /// The tolerance (kv_aligned=true) or drift budget (false) applied.
    pub limits: Thresholds,
    /// How far this pair's prefill lies from the reference prefill of the same tokens (absent
    /// for the reference setting itself, and in records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yardstick: Option<Yardstick>,
    /// What `positions: {first_divergence: search}` found and cost (absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence_search: Option<crate::plan::DivergenceSearch>,
    /// Both paths against the reference computation of the same tokens (absent for the
    /// reference setting itself when the reference is the own decoder, and in records
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceCheck>,
}

impl PairRecord {
    /// What the record claims, for [`safe::check_verdict`].
    pub fn claim(&self) -> safe::Claim<'_> {
        safe::Claim {
            verdict: self.verdict,
            spec: &self.spec,
            metrics: self.metrics.as_ref(),
            limits: &self.limits,
            reference: self.reference.as_ref(),
        }
    }
}

/// The id of a run among `runs` that did not finish, if one did not.
pub fn unfinished_run<'a>(runs: &[Option<&'a RunRecord>]) -> Option<&'a str> {
    runs.iter()
        .flatten()
        .find(|r| r.status != RunStatus::Ok)
        .map(|r| r.id.as_str())
}

/// The distance of a pair's prefill from the own decoder's prefill on dequantized f32
/// weights over the same tokens: what this dtype and these weights cost by themselves (the
/// format's own error), so that the pair's prefill/decode drift can be read against it.
/// Prefill of the reference is the reference, this pair's prefill is under test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Yardstick {
    /// Largest |reference − prefill|.
    pub max_abs_diff: f32,
    /// 99th percentile of |reference − prefill|.
    pub p99_abs_diff: f32,
    /// Mean |reference − prefill|.
    pub mean_abs_diff: f32,
    /// Mean over positions of KL(reference ‖ prefill).
    pub kl_mean: f32,
    /// Largest per-position KL.
    pub kl_max: f32,
    /// Fraction of positions where both pick the same top token.
    pub top1_agreement: f32,
}

impl Yardstick {
    /// The yardstick read off a comparison of the reference prefill with this prefill.
    pub fn of(m: &Metrics) -> Self {
        Yardstick {
            max_abs_diff: m.max_abs_diff(),
            p99_abs_diff: m.p99_abs_diff(),
            mean_abs_diff: m.mean_abs_diff(),
            kl_mean: m.kl_mean(),
            kl_max: m.kl_max(),
            top1_agreement: m.top1_agreement(),
        }
    }
}

/// One pair's trace file (`traces/<pair id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceFile {
    /// Pair id.
    pub pair_id: String,
    /// Why the traced runs failed, if they did.
    pub error: Option<String>,
    /// The analysis, when both traced runs finished.
    pub trace: Option<crate::trace::PairTrace>,
}

/// A results directory. A store made by [`Store::create`] or [`Store::open_locked`] holds the
/// directory's lock for as long as any clone of it lives.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    lock: Option<Arc<owner::DirLock>>,
}

/// For the top directory of a sweep file with `models:` (`summary.json` beside `models/`),
/// what to say instead of "not a results directory": the commands that read one sweep's
/// results take `<dir>/models/<id>`.
pub fn multi_model_hint(root: &Path) -> Option<String> {
    let models = root.join("models");
    if !(root.join("summary.json").is_file() && models.is_dir()) {
        return None;
    }
    let mut ids: Vec<String> = fs::read_dir(&models)
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    Some(format!(
        "holds a sweep with several models (summary.json, models/): each model's results are \
         in `{}/<id>` (ids: {}); give this command one of those directories",
        models.display(),
        ids.join(", ")
    ))
}

impl Store {
    /// Sets up a results directory whose lock the caller holds (see
    /// [`owner::DirLock::for_results`]): writes the marker with the sweep's identity (when it
    /// has none, or another sweep's after `--start-over`), makes the sub-directories and
    /// removes driftsweep's own stale temporaries, and nothing else.
    pub fn create(root: &Path, lock: owner::DirLock, marker: &owner::Marker) -> Result<Self> {
        let store = Store {
            root: root.to_path_buf(),
            lock: Some(Arc::new(lock)),
        };
        let keep =
            owner::Marker::read(root)?.is_some_and(|m| m.config_sha256 == marker.config_sha256);
        if !keep {
            store.write_json(owner::MARKER, marker)?;
        }
        owner::remove_own_temporaries(root);
        for sub in owner::SUBDIRS {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(|e| {
                Error::store(&d, format!("cannot create the results directory: {e}"))
            })?;
            owner::remove_own_temporaries(&d);
        }
        Ok(store)
    }

    /// Opens an existing results directory (it must hold a manifest) for reading.
    pub fn open(root: &Path) -> Result<Self> {
        let m = root.join(MANIFEST);
        if let Some(what) = safe::not_a_file(&m) {
            return Err(Error::store(&m, format!("is {what}: not a manifest")));
        }
        if !m.is_file() {
            if let Some(hint) = multi_model_hint(root) {
                return Err(Error::store(root, hint));
            }
            return Err(Error::store(
                root,
                "not a driftsweep results directory (no manifest.json)",
            ));
        }
        Ok(Store {
            root: root.to_path_buf(),
            lock: None,
        })
    }

    /// Opens an existing results directory and takes its lock, for commands that write into
    /// it (`report`, `verify`): a second process is refused, naming the holder.
    pub fn open_locked(root: &Path) -> Result<Self> {
        let mut s = Self::open(root)?;
        s.lock = Some(Arc::new(owner::DirLock::existing(root)?));
        // A killed writer (a `report` stopped mid-way) leaves temporaries of our own naming;
        // the lock holder is the only writer, so none of them is live.
        owner::remove_own_temporaries(root);
        for sub in owner::SUBDIRS {
            owner::remove_own_temporaries(&root.join(sub));
        }
        Ok(s)
    }

    /// Whether this store holds the directory's lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` inside the directory, refused unless it stays inside ([`safe::confined`]): every
    /// path the store reads or writes is built here.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        safe::confined(&self.root, rel)
    }

    /// Writes `bytes` to `rel` atomically.
    pub fn write_bytes(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.path(rel)?, bytes)
    }

    /// Writes a value as pretty JSON to `rel` atomically.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        let path = self.path(rel)?;
        let text = serde_json::to_vec_pretty(value).map_err(|e| Error::store(&path, e))?;
        write_atomic(&path, &text)
    }

    /// Reads JSON from `rel`.
    pub fn read_json<T: DeserializeOwned>(&self, rel: &str) -> Result<T> {
        read_json(&self.path(rel)?)
    }

    /// Writes the manifest.
    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        self.write_json(MANIFEST, m)
    }

    /// Reads the manifest, its pair ids checked ([`safe::check_manifest`]).
    pub fn manifest(&self) -> Result<Manifest> {
        let m = self.read_json(MANIFEST)?;
        safe::check_manifest(&m, &self.root.join(MANIFEST))?;
        Ok(m)
    }

    /// Writes a run record.
    pub fn write_run(&self, r: &RunRecord) -> Result<()> {
        self.write_json(&format!("runs/{}.json", r.id), r)
    }

    /// Writes a pair record.
    pub fn write_pair(&self, p: &PairRecord) -> Result<()> {
        self.write_json(&format!("pairs/{}.json", p.spec.id), p)
    }

    /// Writes a pair's trace file.
    pub fn write_trace(&self, t: &TraceFile) -> Result<()> {
        self.write_json(&format!("traces/{}.json", t.pair_id), t)
    }

    /// A pair's trace file, if written.
    pub fn trace(&self, pair: &PairSpec) -> Result<Option<TraceFile>> {
        let rel = format!("traces/{}.json", pair.id);
        let t: Option<TraceFile> = self.optional(&rel)?;
        if let Some(t) = &t {
            safe::check_same_id(&t.pair_id, &pair.id, &self.root.join(&rel))?;
        }
        Ok(t)
    }

    /// The run record of `pair` in `mode`, if written; one whose ids are not the ones its
    /// file name and pair say is refused.
    pub fn run(&self, pair: &PairSpec, mode: Mode) -> Result<Option<RunRecord>> {
        let id = pair.run_id(mode);
        let rel = format!("runs/{id}.json");
        let r: Option<RunRecord> = self.optional(&rel)?;
        if let Some(r) = &r {
            let file = self.root.join(&rel);
            safe::check_same_id(&r.id, &id, &file)?;
            safe::check_same_id(&r.pair_id, &pair.id, &file)?;
        }
        Ok(r)
    }

    /// The pair record, if written; one whose id is not the one its file name says is
    /// refused. Its verdict is not judged here (see [`Store::checked_pair`]).
    pub fn pair(&self, pair: &PairSpec) -> Result<Option<PairRecord>> {
        let rel = format!("pairs/{}.json", pair.id);
        let p: Option<PairRecord> = self.optional(&rel)?;
        if let Some(p) = &p {
            safe::check_same_id(&p.spec.id, &pair.id, &self.root.join(&rel))?;
        }
        Ok(p)
    }

    /// The pair record, if written, its verdict judged again from its metrics, the limits
    /// `manifest` gives the pair and its runs ([`safe::check_verdict`]): a verdict that does
    /// not follow from them is refused as tampered.
    pub fn checked_pair(&self, manifest: &Manifest, pair: &PairSpec) -> Result<Option<PairRecord>> {
        let Some(rec) = self.pair(pair)? else {
            return Ok(None);
        };
        let pre = self.run(pair, Mode::Prefill)?;
        let dec = self.run(pair, Mode::Decode)?;
        let limits = safe::manifest_limits(manifest, pair);
        let file = self.root.join(format!("pairs/{}.json", pair.id));
        let unfinished = unfinished_run(&[pre.as_ref(), dec.as_ref()]);
        safe::check_verdict(&rec.claim(), Some(&limits), unfinished, &file)?;
        Ok(Some(rec))
    }

    fn optional<T: DeserializeOwned>(&self, rel: &str) -> Result<Option<T>> {
        let path = self.path(rel)?;
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => match safe::not_a_file(&path) {
                Some(what) => Err(Error::store(
                    &path,
                    format!("is {what}: not a record driftsweep wrote"),
                )),
                None => read_json(&path).map(Some),
            },
        }
    }

    /// Saves a run's span logits (f32, shape positions × vocab) as safetensors; returns the
    /// file name relative to the results directory.
    pub fn write_logits(
        &self,
        run_id: &str,
        logits: &[f32],
        positions: usize,
        vocab: usize,
    ) -> Result<String> {
        let rel = format!("logits/{run_id}.safetensors");
        let path = self.path(&rel)?;
        let bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![positions, vocab],
            &bytes,
        )
        .map_err(|e| Error::store(&path, e))?;
        let data =
            safetensors::serialize([("logits", view)], None).map_err(|e| Error::store(&path, e))?;
        write_atomic(&path, &data)?;
        Ok(rel)
    }
}

use crate::fsutil::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn logits_round_trip_through_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let lock = owner::DirLock::for_results(dir.path()).unwrap();
        let s = Store::create(dir.path(), lock, &owner::Marker::new("t", "x")).unwrap();
        let rel = s
            .write_logits("r", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3)
            .unwrap();
        let bytes = fs::read(dir.path().join(rel)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("logits").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(&t.data()[4..8], &2.0f32.to_le_bytes());
    }
}
