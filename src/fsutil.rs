//! Small filesystem and formatting helpers with no knowledge of sweeps: atomic writes, hex
//! digests, timestamps. A leaf, so that the model layer (weight-hash cache) and the results
//! store can both use them without depending on each other.

use std::fs;
use std::io::{BufReader, Read, Take, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// What marks driftsweep's own temporary files: `.<name>.driftsweep-tmp-<pid>`. Cleanup
/// removes only names of this shape, so a user's `.env.tmpl` is never taken for one.
pub const TMP_TAG: &str = ".driftsweep-tmp-";

/// The largest results-directory JSON file driftsweep reads: report.json, the manifest, pair
/// and run records, shard plans. A record of 100,000 pairs stays far below it; a file above it
/// is refused with a message before any of it is read, so a hostile or runaway file cannot
/// exhaust memory.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// Opens `path` for reading at most `max` bytes, checked before it is opened: a directory, FIFO
/// or device is refused (opening a FIFO blocks forever; /dev/zero never ends), as is a file
/// larger than `max`. The reader stops after `max + 1` bytes whatever the file's size said, so
/// a file that grows after the check is caught by [`read_regular`]'s length check or by the
/// parser meeting a cut-off document. Errors are in words, without the path: callers add it.
pub fn open_regular(
    path: &Path,
    max: u64,
) -> std::result::Result<BufReader<Take<fs::File>>, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a directory, FIFO or device)".into());
    }
    if meta.len() > max {
        return Err(format!(
            "{} bytes, larger than the {max} bytes driftsweep reads of such a file",
            meta.len()
        ));
    }
    let f = fs::File::open(path).map_err(|e| e.to_string())?;
    Ok(BufReader::new(f.take(max.saturating_add(1))))
}

/// Reads a regular file of at most `max` bytes whole (see [`open_regular`]).
pub fn read_regular(path: &Path, max: u64) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    open_regular(path, max)?
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "larger than the {max} bytes driftsweep reads of such a file"
        ));
    }
    Ok(bytes)
}

/// Parses the JSON file `path` streaming (never the whole text in memory beside the value),
/// refusing what [`open_regular`] refuses above [`MAX_RECORD_BYTES`]. Errors name the file;
/// a malformed one says where (the field path) and what is wrong.
pub fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let reader = open_regular(path, MAX_RECORD_BYTES)
        .map_err(|e| Error::store(path, format!("cannot read: {e}")))?;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let value: T = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Error::store(path, format!("malformed at `{}`: {}", e.path(), e.inner())))?;
    de.end()
        .map_err(|e| Error::store(path, format!("malformed: {e}")))?;
    Ok(value)
}

/// Temporary file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = PendingFile::create(path)?;
    f.writer().write_all(bytes).map_err(|e| f.error(e))?;
    f.commit()
}

/// Copies the regular file `from` to `to` atomically ([`PendingFile`]), streaming: memory
/// stays one buffer whatever the file's size. A directory, FIFO or device is refused.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let mut src = open_regular(from, u64::MAX)
        .map_err(|e| Error::store(from, format!("cannot read: {e}")))?;
    let mut f = PendingFile::create(to)?;
    std::io::copy(&mut src, f.writer()).map_err(|e| f.error(e))?;
    f.commit()
}

/// A file written under a temporary name beside `path` (`.<name>.driftsweep-tmp-<pid>`)
/// and put in its place by [`PendingFile::commit`]: readers see the old file or the whole
/// new one, never a part. Dropped uncommitted, the temporary is removed. Large files
/// (report.json of 100,000 pairs) are written through it without being held in memory.
pub struct PendingFile {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    file: std::io::BufWriter<fs::File>,
    committed: bool,
}

impl PendingFile {
    /// Creates the temporary beside `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}{TMP_TAG}{}", std::process::id()));
        // A stale temporary (or a link planted under its name) goes first; `create_new`
        // then never follows a link that appears in between.
        let _ = fs::remove_file(&tmp);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::store(path, format!("cannot write: {e}")))?;
        Ok(PendingFile {
            path: path.to_path_buf(),
            tmp,
            file: std::io::BufWriter::new(file),
            committed: false,
        })
    }

    /// Where the bytes go until [`PendingFile::commit`].
    pub fn writer(&mut self) -> &mut std::io::BufWriter<fs::File> {
        &mut self.file
    }

    /// A write error, naming the destination.
    pub fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::store(&self.path, format!("cannot write: {e}"))
    }

    /// Flushes, fsyncs, renames the temporary over the destination and fsyncs the directory.
    pub fn commit(mut self) -> Result<()> {
        self.file.flush().map_err(|e| self.error(e))?;
        self.file.get_ref().sync_all().map_err(|e| self.error(e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| self.error(e))?;
        self.committed = true;
        if let Ok(d) = fs::File::open(self.path.parent().unwrap_or(Path::new("."))) {
            // Directory fsync makes the rename durable; some filesystems refuse it, harmlessly.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Current time, RFC 3339 UTC.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
