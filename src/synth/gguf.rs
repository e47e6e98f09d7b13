//! GGUF output of a synthetic checkpoint (stub: the quantized modules' helper brings the
//! writer with llama.cpp's names and metadata).

use std::path::Path;

use super::Checkpoint;
use crate::config::SynthFormat;

/// Writes `c` as a GGUF file of `format` at `path`.
pub fn write(c: &Checkpoint, format: SynthFormat, path: &Path) -> Result<(), String> {
    let _ = (c, format, path);
    Err("GGUF output comes with the quantized modules".to_string())
}
