//! Who owns a results directory (docs/design.md, "Results on disk"): a marker says driftsweep
//! made it and for which sweep, and an exclusive lock admits one writer at a time. Deleting
//! is confined to what the marker's directory records: the files a manifest names and
//! driftsweep's own temporaries, never anything else a user keeps there.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{MANIFEST, Manifest, read_json};
use super::safe;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::plan::Mode;

/// The marker file: driftsweep made this directory, for this sweep.
pub const MARKER: &str = "driftsweep.marker.json";
/// The lock file whose exclusive lock the one writer holds; it keeps the holder's pid.
pub const LOCK: &str = "driftsweep.lock";
/// The largest marker read: one is a few hundred bytes (names, a digest, a time).
pub const MAX_MARKER_BYTES: u64 = 64 << 10;
/// The sub-directories a sweep writes.
pub const SUBDIRS: [&str; 5] = ["runs", "pairs", "logits", "traces", "templates"];
/// Files at the top of a results directory that driftsweep writes under fixed names, besides
/// the reports (their names are the report module's `FILES`, which [`clear_recorded`] is
/// given: the store sits below the reports) and the manifest and the marker (handled on
/// their own).
pub const OTHER_FILES: [&str; 3] = ["verify.json", "diff.md", "diff.json"];

/// Where a sweep's custom templates are kept (report, trace report), for `driftsweep report`.
pub const SAVED_TEMPLATES: [&str; 2] =
    ["templates/report.md.tera", "templates/trace_report.md.tera"];

/// `driftsweep.marker.json`: what made the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Always "driftsweep".
    pub written_by: String,
    /// The version that created (or last started over) the directory.
    pub tool_version: String,
    /// RFC 3339 time it was created.
    pub created_at: String,
    /// The sweep's name.
    pub sweep_name: String,
    /// The sweep's identity (sha256 of its file and every file it includes).
    pub config_sha256: String,
}

impl Marker {
    /// A marker for a sweep, made now.
    pub fn new(sweep_name: &str, config_sha256: &str) -> Self {
        Marker {
            written_by: env!("CARGO_PKG_NAME").into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            created_at: fsutil::now(),
            sweep_name: sweep_name.into(),
            config_sha256: config_sha256.into(),
        }
    }

    /// The marker of `dir`, if it has one; a marker that does not parse is bad input, since
    /// the directory's ownership can then not be told.
    pub fn read(dir: &Path) -> Result<Option<Marker>> {
        let path = dir.join(MARKER);
        if !path.is_file() {
            return Ok(None);
        }
        // A marker is a few hundred bytes: a larger one is refused unread, not read whole.
        let text = fsutil::read_regular(&path, MAX_MARKER_BYTES)
            .map_err(|e| Error::store(&path, format!("cannot read: {e}")))?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::store(&path, format!("malformed marker: {e}")))
    }
}

/// An exclusive lock on a results directory, held until dropped. The operating system drops
/// it with the process, so a run killed by SIGKILL leaves no lock behind.
#[derive(Debug)]
pub struct DirLock {
    // Held open for the lock's lifetime; closing it releases the lock.
    _file: File,
    dir: PathBuf,
    // Whether this lock created the directory (then a refused run may remove it again).
    created: bool,
}

impl DirLock {
    /// Locks `dir` for writing a sweep into it, creating it if needed. A directory that
    /// exists, is not empty and carries no marker belongs to someone else: it is refused
    /// before anything is written into it.
    pub fn for_results(dir: &Path) -> Result<DirLock> {
        let created = !dir.exists();
        fs::create_dir_all(dir)
            .map_err(|e| Error::store(dir, format!("cannot create the results directory: {e}")))?;
        if !dir.join(MARKER).is_file() {
            refuse_foreign(dir)?;
        }
        let mut lock = Self::acquire(dir)?;
        lock.created = created;
        Ok(lock)
    }

    /// Locks an existing results directory (for `report` and `verify`).
    pub fn existing(dir: &Path) -> Result<DirLock> {
        Self::acquire(dir)
    }

    /// Gives the lock up after a refusal before anything was written: a directory this lock
    /// created, and that holds nothing but the lock file, is removed again, so bad input
    /// leaves no trace.
    pub fn abandon(self) {
        if self.created && entries_except_own(&self.dir).is_ok_and(|e| e.is_empty()) {
            let _ = fs::remove_file(self.dir.join(LOCK));
            let _ = fs::remove_dir(&self.dir);
        }
    }

    fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK);
        let io = |e: std::io::Error| Error::store(&path, format!("cannot lock: {e}"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // A pid is a few digits: a lock file grown by someone else is not read whole.
                let _ = (&mut file).take(64).read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    // The holder locks before it writes its pid: a moment without one.
                    Err(_) => "pid not yet written".to_string(),
                };
                return Err(Error::store(
                    dir,
                    format!(
                        "is in use by another driftsweep process ({holder}): one process \
                         writes a results directory at a time; wait for it, or choose another \
                         --out"
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
            created: false,
        })
    }
}

/// Refuses a non-empty directory without a marker, naming a few of its entries.
fn refuse_foreign(dir: &Path) -> Result<()> {
    let entries = entries_except_own(dir)?;
    if entries.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = entries
        .iter()
        .take(3)
        .map(|p| format!("`{}`", p.file_name().unwrap_or_default().to_string_lossy()))
        .collect();
    let more = if entries.len() > 3 { ", …" } else { "" };
    let what = if dir.join(MANIFEST).is_file() {
        "holds results without driftsweep's marker `driftsweep.marker.json` (written by hand \
         or by an older driftsweep)"
    } else {
        "is not empty and was not made by driftsweep"
    };
    Err(Error::store(
        dir,
        format!(
            "{what} (it holds {}{more}); driftsweep writes, and ever deletes, only in an empty \
             directory or one it made: choose another --out or `output`",
            shown.join(", ")
        ),
    ))
}

/// The entries of `dir` other than the lock file (which a refused or killed process may
/// have left in an otherwise empty directory).
fn entries_except_own(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = fs::read_dir(dir).map_err(|e| Error::store(dir, format!("cannot list: {e}")))?;
    let mut out: Vec<PathBuf> = read
        .flatten()
        .filter(|e| e.file_name() != LOCK)
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// Whether `name` is one of driftsweep's own temporary files (see
/// [`fsutil::write_atomic`]): `.<name>.driftsweep-tmp-<pid>`.
pub fn is_own_temporary(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    match rest.rsplit_once(fsutil::TMP_TAG) {
        Some((target, pid)) => {
            !target.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Removes driftsweep's own temporaries from `dir` (not below it): a killed writer never
/// renamed them, so nothing refers to them. Only the lock holder calls this, so no live
/// writer's temporary can be among them. Best effort.
pub fn remove_own_temporaries(dir: &Path) {
    // A link in place of a sub-directory may lead anywhere: nothing is removed through it.
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_own_temporary(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Removes what driftsweep recorded in `dir` (for `--start-over` and a repeated merge): the
/// files its manifest names (run, pair, trace and logits files of its pairs), the reports,
/// the saved templates, the manifest, its temporaries, and the sub-directories once empty.
/// Returns what it left alone: everything else. A directory without the marker, or whose
/// manifest cannot be read, is refused: what driftsweep wrote there cannot be told apart.
/// `report_files` are the names the reports are written under.
pub fn clear_recorded(dir: &Path, report_files: &[&str]) -> Result<Vec<PathBuf>> {
    if Marker::read(dir)?.is_none() {
        return Err(Error::store(
            dir,
            "has no driftsweep marker (`driftsweep.marker.json`), so what driftsweep wrote there \
             cannot be told apart from other files: nothing was deleted; remove the directory \
             yourself, or choose another --out",
        ));
    }
    let manifest_path = dir.join(MANIFEST);
    // The reports first: a clear stopped half-way never leaves a report (PASS or not)
    // beside records that are gone.
    let mut files: Vec<PathBuf> = report_files
        .iter()
        .chain(&OTHER_FILES)
        .map(|f| dir.join(f))
        .collect();
    if manifest_path.is_file() {
        let m: Manifest = read_json(&manifest_path)
            .and_then(|m| safe::check_manifest(&m, &manifest_path).map(|()| m))
            .map_err(|e| {
                Error::store(
                    dir,
                    format!("{e}; nothing was deleted: without the manifest its files are unknown"),
                )
            })?;
        // Every path checked before the first file goes: a bad id deletes nothing.
        for p in &m.pairs {
            files.push(safe::confined(dir, &format!("pairs/{}.json", p.id))?);
            files.push(safe::confined(dir, &format!("traces/{}.json", p.id))?);
            for mode in [Mode::Prefill, Mode::Decode] {
                let run = p.run_id(mode);
                files.push(safe::confined(dir, &format!("runs/{run}.json"))?);
                files.push(safe::confined(dir, &format!("logits/{run}.safetensors"))?);
            }
        }
    }
    files.extend(SAVED_TEMPLATES.iter().map(|t| dir.join(t)));
    // The manifest last: until it goes, a failed clear can be retried.
    files.push(manifest_path);
    for f in &files {
        match fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::store(
                    f,
                    format!("cannot remove for --start-over: {e}"),
                ));
            }
        }
    }
    let mut left = Vec::new();
    for sub in SUBDIRS {
        let d = dir.join(sub);
        if !fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        remove_own_temporaries(&d);
        // Only an empty sub-directory goes; whatever a user put there stays.
        if fs::remove_dir(&d).is_err() {
            left.extend(entries_except_own(&d)?);
        }
    }
    remove_own_temporaries(dir);
    left.extend(
        entries_except_own(dir)?
            .into_iter()
            .filter(|p| p.file_name().is_none_or(|n| n != MARKER))
            .filter(|p| !(p.is_dir() && SUBDIRS.iter().any(|s| p.ends_with(s)))),
    );
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_temporary_pattern_matches() {
        assert!(is_own_temporary(".report.json.driftsweep-tmp-123"));
        for name in [
            ".env.tmpl",
            ".gitlab-ci.tmpl.yml",
            ".report.json.tmp123",
            "report.json.driftsweep-tmp-1",
            ".report.json.driftsweep-tmp-",
            ".report.json.driftsweep-tmp-12x",
            "..driftsweep-tmp-1",
        ] {
            assert!(!is_own_temporary(name), "{name}");
        }
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let e = DirLock::for_results(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("not made by driftsweep") && e.contains("notes.txt"),
            "{e}"
        );
        assert!(!dir.path().join(LOCK).exists(), "nothing written into it");
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::for_results(dir.path()).unwrap();
        let e = DirLock::existing(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    }

    #[test]
    fn clearing_needs_the_marker_and_keeps_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("runs")).unwrap();
        fs::write(dir.path().join("runs/mine.json"), "{}").unwrap();
        fs::write(dir.path().join("report.md"), "r").unwrap();
        let reports = ["report.md"];
        assert!(clear_recorded(dir.path(), &reports).is_err());
        assert!(
            dir.path().join("report.md").exists(),
            "nothing deleted without a marker"
        );
        fs::write(
            dir.path().join(MARKER),
            serde_json::to_vec(&Marker::new("s", "x")).unwrap(),
        )
        .unwrap();
        fs::write(dir.path().join("runs/.x.json.driftsweep-tmp-7"), "t").unwrap();
        let left = clear_recorded(dir.path(), &reports).unwrap();
        assert!(!dir.path().join("report.md").exists());
        assert!(!dir.path().join("runs/.x.json.driftsweep-tmp-7").exists());
        assert!(
            dir.path().join("runs/mine.json").exists(),
            "not recorded: kept"
        );
        assert_eq!(left, vec![dir.path().join("runs/mine.json")]);
    }
}
