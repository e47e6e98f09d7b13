//! Small filesystem and formatting helpers with no knowledge of sweeps: atomic writes, hex
//! digests, timestamps. A leaf, so that the model layer (weight-hash cache) and the results
//! store can both use them without depending on each other.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// What marks driftsweep's own temporary files: `.<name>.driftsweep-tmp-<pid>`. Cleanup
/// removes only names of this shape, so a user's `.env.tmpl` is never taken for one.
pub const TMP_TAG: &str = ".driftsweep-tmp-";

/// Temporary file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TMP_TAG}{}", std::process::id()));
    let io = |e: std::io::Error| Error::store(path, format!("cannot write: {e}"));
    {
        // A stale temporary (or a link planted under its name) goes first; `create_new`
        // then never follows a link that appears in between.
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = fs::File::open(dir) {
        // Directory fsync makes the rename durable; some filesystems refuse it, harmlessly.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Current time, RFC 3339 UTC.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
