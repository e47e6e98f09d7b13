//! sha256 of weight files, computed once and cached by (canonical path, size, mtime).
//!
//! Hashing SmolLM2's 100 MB takes a fraction of a second, a 16 GB checkpoint about a minute:
//! every `plan`, `run` and `verify` would pay that again without the cache. A file that
//! changes changes its size or mtime, which misses the cache. The cache is an optimisation
//! only: if it cannot be read or written, the file is hashed and nothing else happens.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const FILE: &str = "weights-sha256.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// The cache directory: `$DRIFTSWEEP_CACHE_DIR`, else `$XDG_CACHE_HOME/driftsweep`, else
/// `$HOME/.cache/driftsweep`.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DRIFTSWEEP_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("driftsweep")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("driftsweep")))
}

/// sha256 of `path`, from the cache when its size and mtime are unchanged.
pub fn sha256(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let key = path.canonicalize()?.display().to_string();
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = cache_dir();
    let file = dir.as_ref().map(|d| d.join(FILE));
    let mut entries: BTreeMap<String, Entry> = file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(e) = entries.get(&key)
        && e.size == meta.len()
        && e.mtime_ns == mtime_ns
        && mtime_ns != 0
    {
        return Ok(e.sha256.clone());
    }
    let sha256 = sha256_file(path)?;
    if let (Some(dir), Some(file)) = (dir, file) {
        entries.insert(
            key,
            Entry {
                size: meta.len(),
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
        if std::fs::create_dir_all(&dir).is_ok()
            && let Ok(bytes) = serde_json::to_vec_pretty(&entries)
        {
            // Two processes racing here each write a whole file; either result is valid.
            let _ = crate::fsutil::write_atomic(&file, &bytes);
        }
    }
    Ok(sha256)
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::fsutil::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_hash_is_reused_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        // SAFETY: the only test that sets this variable; others read no cache directory.
        unsafe { std::env::set_var("DRIFTSWEEP_CACHE_DIR", &cache) };
        let f = dir.path().join("w.bin");
        std::fs::write(&f, b"weights").unwrap();
        let first = sha256(&f).unwrap();
        assert_eq!(first, sha256_file(&f).unwrap());
        // Plant a different hash under the same key: a hit must return it unread.
        let text = std::fs::read_to_string(cache.join(FILE)).unwrap();
        std::fs::write(cache.join(FILE), text.replace(&first, "planted")).unwrap();
        assert_eq!(sha256(&f).unwrap(), "planted");
        // A new size misses the cache.
        std::fs::write(&f, b"other weights").unwrap();
        let second = sha256(&f).unwrap();
        assert_eq!(second, sha256_file(&f).unwrap());
        assert_ne!(second, first);
    }
}
