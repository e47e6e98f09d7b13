//! Where synthetic checkpoints are kept: one directory per spec, named by its [`key`], made
//! once and re-used while its manifest's sha256 still match.
//!
//! The root is `$DRIFTSWEEP_SYNTH_CACHE`, else `synth/` under driftsweep's cache directory
//! (`$DRIFTSWEEP_CACHE_DIR`, `$XDG_CACHE_HOME/driftsweep` or `$HOME/.cache/driftsweep`), else
//! `./.driftsweep-cache/synth` (a fresh CI clone without a home directory still works).
//!
//! A checkpoint is written into a temporary directory beside its place and renamed into it,
//! so concurrent or interrupted writers never leave half a checkpoint under a key: a reader
//! sees a whole directory or none.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::files::{self, Manifest};
use super::make::{SynthError, build};
use crate::config::SynthSpec;
use crate::model::hash_cache;

/// The version of the weight generator and file layout: a change to either (a scale in
/// `weights.rs`, a file) bumps it, so that checkpoints cached by an older driftsweep are
/// made again rather than re-used under the same spec.
pub const GENERATOR: u32 = 2;

/// The cache's root directory (see the module's comment).
pub fn root() -> PathBuf {
    if let Some(d) = std::env::var_os("DRIFTSWEEP_SYNTH_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    hash_cache::cache_dir()
        .map(|d| d.join("synth"))
        .unwrap_or_else(|| PathBuf::from(".driftsweep-cache").join("synth"))
}

/// sha256 (hex) of the canonical JSON of `{generator, spec}` (keys sorted, defaults filled
/// in): the same spec always has the same key, whatever the YAML looked like.
pub fn key(spec: &SynthSpec) -> String {
    let v = serde_json::json!({ "generator": GENERATOR, "spec": spec });
    crate::fsutil::hex(&Sha256::digest(v.to_string().as_bytes()))
}

/// A checkpoint on disk.
#[derive(Debug, Clone)]
pub struct Materialized {
    /// Its directory.
    pub dir: PathBuf,
    /// What a loader opens (the directory, or its `model.gguf`).
    pub model_path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// The checkpoint of `spec` under `root`: the cached one if whole and unchanged, else made
/// and written now.
pub fn materialize(spec: &SynthSpec, root: &Path) -> Result<Materialized, SynthError> {
    let key = key(spec);
    let dir = root.join(&key);
    if let Ok(manifest) = files::verify(&dir, spec) {
        return Ok(Materialized {
            model_path: manifest.model_path(&dir),
            dir,
            manifest,
        });
    }
    write_into(spec, &dir)
}

/// Counts temporary directories within this process (two threads may write at once).
static TEMP: AtomicUsize = AtomicUsize::new(0);

/// Makes `spec`'s checkpoint and puts it at `dir` whole: written into a temporary sibling,
/// then renamed. A `dir` already there that is not this spec's checkpoint (stale, changed,
/// or left by an older driftsweep) is replaced only if it carries a synthetic manifest or is
/// empty; a writer that lost a race re-uses the winner's.
pub fn write_into(spec: &SynthSpec, dir: &Path) -> Result<Materialized, SynthError> {
    let io = |p: &Path, e: std::io::Error| SynthError::Io(format!("{}: {e}", p.display()));
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(
        ".{name}.driftsweep-tmp-{}-{}",
        std::process::id(),
        TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
    let written = build(spec).and_then(|c| files::write(&c, spec, &key(spec), &tmp));
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if dir.exists() {
        clear_old(dir, &tmp)?;
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another writer put a whole checkpoint there first: theirs is as good as ours.
        let m = files::verify(dir, spec).map_err(|_| io(dir, e))?;
        return Ok(Materialized {
            model_path: m.model_path(dir),
            dir: dir.to_path_buf(),
            manifest: m,
        });
    }
    Ok(Materialized {
        model_path: manifest.model_path(dir),
        dir: dir.to_path_buf(),
        manifest,
    })
}

/// Removes a directory in the way of a new checkpoint, if it is an empty directory or a
/// synthetic checkpoint (never anything else a user put there).
fn clear_old(dir: &Path, tmp: &Path) -> Result<(), SynthError> {
    let refuse = |why: &str| {
        let _ = std::fs::remove_dir_all(tmp);
        SynthError::Io(format!(
            "{}: {why}; give a new or empty directory, or one that holds a synthetic \
             checkpoint ({})",
            dir.display(),
            files::MANIFEST
        ))
    };
    if !dir.is_dir() {
        return Err(refuse("is not a directory"));
    }
    let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none());
    if !(dir.join(files::MANIFEST).is_file() || empty.unwrap_or(false)) {
        return Err(refuse("is not empty and holds no synthetic checkpoint"));
    }
    // Renamed aside first, so that the place is free for an atomic rename even if the
    // removal of the old files takes long or fails halfway.
    let mut aside = tmp.as_os_str().to_owned();
    aside.push(".old");
    let aside = PathBuf::from(aside);
    match std::fs::rename(dir, &aside) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&aside);
            Ok(())
        }
        // Gone already (another writer moved it): the place is free.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SynthError::Io(format!("{}: {e}", dir.display()))),
    }
}
