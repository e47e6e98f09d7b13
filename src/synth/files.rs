//! A synthetic checkpoint on disk, and its manifest.
//!
//! Safetensors format: `config.json` (the architecture's own format), `model.safetensors`
//! (f32, tensors in name order, so the same spec gives the same bytes), `tokenizer.json`.
//! GGUF formats: `model.gguf`. Always `driftsweep-synth.json`: the spec, the key it is cached
//! under, the driftsweep version and the sha256 of every file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::make::{Checkpoint, SynthError};
use crate::config::{SynthFormat, SynthSpec};
use crate::model::hash_cache;

/// The manifest's file name.
pub const MANIFEST: &str = "driftsweep-synth.json";

/// `driftsweep-synth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The spec, with its defaults filled in.
    pub spec: SynthSpec,
    /// sha256 of the canonical spec and the generator's version ([`super::cache::key`]).
    pub key: String,
    /// The driftsweep that wrote it.
    pub driftsweep_version: String,
    /// sha256 of every other file, by name.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// The file a loader opens: the directory itself, or its `model.gguf`.
    pub fn model_path(&self, dir: &Path) -> PathBuf {
        match self.spec.format {
            SynthFormat::Safetensors => dir.to_path_buf(),
            _ => dir.join("model.gguf"),
        }
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> SynthError {
    SynthError::Io(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `dir/name` and flushes it to disk (the directory is renamed into place
/// afterwards, and a rename must never publish half a file).
fn put(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SynthError> {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
    f.write_all(bytes).map_err(|e| io(&path, e))?;
    f.sync_all().map_err(|e| io(&path, e))
}

/// Writes the files of `c` (made from `spec`, cached under `key`) into the existing, empty
/// directory `dir`; returns the manifest.
pub fn write(
    c: &Checkpoint,
    spec: &SynthSpec,
    key: &str,
    dir: &Path,
) -> Result<Manifest, SynthError> {
    match spec.format {
        SynthFormat::Safetensors => {
            let mut config = serde_json::to_vec_pretty(&c.config).expect("JSON values serialize");
            config.push(b'\n');
            put(dir, "config.json", &config)?;
            // transformers reads `format: pt` to know the tensors are PyTorch's layout.
            let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
            let st = safetensors::serialize(c.tensors.iter(), Some(meta))
                .map_err(|e| SynthError::Build(format!("serializing the tensors: {e}")))?;
            put(dir, "model.safetensors", &st)?;
            let tok = super::tokenizer::tokenizer(spec.vocab_size).map_err(SynthError::Build)?;
            let text = tok
                .to_string(true)
                .map_err(|e| SynthError::Build(format!("tokenizer.json: {e}")))?;
            put(dir, "tokenizer.json", text.as_bytes())?;
        }
        format => super::gguf::write(c, format, &dir.join("model.gguf"))
            .map_err(|e| SynthError::Build(format!("model.gguf: {e}")))?,
    }
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        files.insert(
            name.into_owned(),
            hash_cache::sha256_file(&path).map_err(|e| io(&path, e))?,
        );
    }
    let manifest = Manifest {
        spec: spec.clone(),
        key: key.to_string(),
        driftsweep_version: env!("CARGO_PKG_VERSION").to_string(),
        files,
    };
    let mut bytes = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    bytes.push(b'\n');
    put(dir, MANIFEST, &bytes)?;
    Ok(manifest)
}

/// The manifest of the checkpoint in `dir`, if it is one made from `spec` and every file
/// still has the sha256 the manifest records (`Err` says what is wrong).
pub fn verify(dir: &Path, spec: &SynthSpec) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if &m.spec != spec {
        return Err(format!("{} records another spec", path.display()));
    }
    for (name, want) in &m.files {
        let f = dir.join(name);
        let have = hash_cache::sha256_file(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        if &have != want {
            return Err(format!("{} changed since it was written", f.display()));
        }
    }
    Ok(m)
}
