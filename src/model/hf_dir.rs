//! A model directory in Hugging Face layout: `config.json`, one or many `*.safetensors`
//! (with `model.safetensors.index.json`), `tokenizer.json`. Weights are memory-mapped.
//! The architecture comes from `model_type` (or `architectures`): Llama, Mistral (sliding
//! window), Qwen2 (q/k/v bias), Qwen3 (q/k RMSNorm, explicit head_dim).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::error::ModelError;
use super::family::{Architecture, Family};
use super::header;

/// The fields of `config.json` read before its family's own (which its family reads).
#[derive(Debug, Deserialize)]
struct ConfigHead {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    eos_token_id: Option<serde_json::Value>,
}

/// What a directory holds.
pub struct HfModel {
    /// The family with its hyper-parameters.
    pub family: Family,
    /// The architecture (`model_type`, or the first known `architectures` class).
    pub architecture: Architecture,
    /// tokenizer.json.
    pub tokenizer: Tokenizer,
    /// First end-of-sequence id of config.json.
    pub eos_id: Option<u32>,
    /// The safetensors files.
    pub files: Vec<PathBuf>,
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: std::collections::HashMap<String, String>,
        }
        let text = std::fs::read_to_string(&index)
            .map_err(|e| ModelError::Io(format!("{}: {e}", index.display())))?;
        let idx: Index =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
        let files: BTreeSet<&String> = idx.weight_map.values().collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::Io(
        "no model.safetensors or model.safetensors.index.json".into(),
    ))
}

/// Reads config, tokenizer and safetensors headers (validated, not loaded).
pub fn inspect(dir: &Path) -> Result<HfModel, ModelError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| ModelError::Io(format!("{}: {e}", cfg_path.display())))?;
    let label = cfg_path.display().to_string();
    let (c, architecture, family) = config_of(text.as_bytes(), &label)?;
    let vocab_size = family.sizes().vocab_size;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer =
        Tokenizer::from_file(&tok_path).map_err(|e| format!("{}: {e}", tok_path.display()))?;
    let tv = tokenizer.get_vocab_size(true);
    if tv != vocab_size {
        return Err(format!(
            "tokenizer.json has {tv} tokens but the model's embedding has {vocab_size} rows (config.json vocab_size)"
        )
        .into());
    }
    let files = weight_files(dir)?;
    // Headers are parsed (and their sizes checked against the files) here, before any work:
    // first by `check_safetensors_file` (checked arithmetic), then by candle's reader.
    for f in &files {
        check_safetensors_file(f)?;
    }
    // SAFETY: the files are mapped read-only and must not change while the sweep runs.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .map_err(|e| format!("reading the safetensors headers: {e}"))?;
    check_weights(
        &family,
        st.tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec())),
    )?;
    let eos_id = match &c.eos_token_id {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_u64()).map(|v| v as u32),
        _ => None,
    };
    Ok(HfModel {
        family,
        architecture,
        tokenizer,
        eos_id,
        files,
    })
}

/// The architecture and family a `config.json` (its bytes) describes, checked for
/// consistency (not yet against the weights); `label` names the file in messages.
fn config_of(json: &[u8], label: &str) -> Result<(ConfigHead, Architecture, Family), ModelError> {
    let c: ConfigHead = serde_json::from_slice(json).map_err(|e| format!("{label}: {e}"))?;
    let architecture =
        Architecture::from_config_json(c.model_type.as_deref(), c.architectures.as_deref())?;
    let family = Family::from_config_json(architecture, json, label)?;
    Ok((c, architecture, family))
}

/// The model-header checks of [`inspect`] on a `config.json` and one safetensors file held
/// in memory (no tokenizer): the config parses and is consistent, the safetensors header is
/// sound, and the header's sizes match the tensors (see [`header`]). The entry point
/// of the `model_header` fuzz target.
pub fn check_header_bytes(config_json: &[u8], safetensors: &[u8]) -> Result<(), ModelError> {
    let (_, _, family) = config_of(config_json, "config.json")?;
    check_safetensors_bytes(safetensors)?;
    let st = safetensors::SafeTensors::deserialize(safetensors)
        .map_err(|e| format!("reading the safetensors header: {e}"))?;
    check_weights(
        &family,
        st.tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec())),
    )
}

/// `config.json`'s sizes against the tensors present (name, shape); see [`header`].
fn check_weights(
    family: &Family,
    tensors: impl IntoIterator<Item = (String, Vec<usize>)>,
) -> Result<(), ModelError> {
    // Only a model given from Rust has no file to check.
    let Some(expected) = family.expected() else {
        return Ok(());
    };
    header::check(
        &expected,
        &tensors.into_iter().collect(),
        &header::Keys::config_json(),
        &|n: &str| n.to_string(),
    )
}

/// The largest header the safetensors crate accepts (its `MAX_HEADER_SIZE`).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Checks the header of one safetensors file of `file_len` bytes, given at least its first
/// `8 + header length` bytes (`head`; more is fine): the JSON parses, tensors are laid out
/// back to back from offset 0, each takes exactly `elements × dtype size` bytes, and they end
/// exactly at the end of the file. All arithmetic on the file's numbers is checked (the
/// safetensors crate adds them unchecked, a panic in builds with overflow checks). Returns
/// the number of tensors.
pub fn check_safetensors_header(head: &[u8], file_len: u64) -> Result<usize, ModelError> {
    use safetensors::tensor::TensorInfo;
    let err = |m: String| ModelError::Invalid(format!("safetensors header: {m}"));
    let n = head
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| err(format!("the file has {file_len} bytes, fewer than 8")))?;
    if n > MAX_SAFETENSORS_HEADER {
        return Err(err(format!(
            "declares a header of {n} bytes, more than {MAX_SAFETENSORS_HEADER}"
        )));
    }
    if 8 + n > file_len {
        return Err(err(format!(
            "declares a header of {n} bytes but the file has {file_len}"
        )));
    }
    let json = head
        .get(8..8 + n as usize)
        .ok_or_else(|| err(format!("only {} of its {n} bytes given", head.len() - 8)))?;
    let json = std::str::from_utf8(json).map_err(|e| err(format!("not UTF-8: {e}")))?;
    let map: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
    let mut infos = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == "__metadata__" {
            serde_json::from_value::<std::collections::HashMap<String, String>>(v)
                .map_err(|e| err(format!("__metadata__: {e}")))?;
            continue;
        }
        let info: TensorInfo =
            serde_json::from_value(v).map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        infos.push((name, info));
    }
    infos.sort_by_key(|(_, i)| i.data_offsets);
    let mut end = 0usize;
    for (name, info) in &infos {
        let (s, e) = info.data_offsets;
        if s != end || e < s {
            return Err(err(format!(
                "tensor `{name}`: data offsets [{s}, {e}] do not follow the previous tensor's end {end}"
            )));
        }
        let bits = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .ok_or_else(|| err(format!("tensor `{name}`: shape {:?} overflows", info.shape)))?;
        if bits % 8 != 0 || e - s != bits / 8 {
            return Err(err(format!(
                "tensor `{name}`: {:?} {:?} takes {bits} bits, but its data offsets span {} bytes",
                info.dtype,
                info.shape,
                e - s
            )));
        }
        end = e;
    }
    let expected = (end as u64).checked_add(8 + n);
    if expected != Some(file_len) {
        return Err(err(format!(
            "the tensors end at byte {} of the data but the file has {} data bytes",
            end,
            file_len - 8 - n
        )));
    }
    Ok(infos.len())
}

/// [`check_safetensors_header`] on a whole safetensors file held in memory, then the
/// safetensors crate's own parse, as [`inspect`] does through candle's reader. The entry point
/// of the `safetensors_header` fuzz target.
pub fn check_safetensors_bytes(bytes: &[u8]) -> Result<usize, ModelError> {
    let n = check_safetensors_header(bytes, bytes.len() as u64)?;
    safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("reading the safetensors header: {e}"))?;
    Ok(n)
}

/// Reads the header of one safetensors file (never more than the header's bytes, which are
/// capped) and checks it with [`check_safetensors_header`].
fn check_safetensors_file(path: &Path) -> Result<usize, ModelError> {
    use std::io::Read;
    let io = |x: std::io::Error| ModelError::Io(format!("{}: {x}", path.display()));
    let e = |m: ModelError| ModelError::Invalid(format!("{}: {m}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut head = [0u8; 8];
    if len < 8 {
        return check_safetensors_header(&[], len).map_err(e);
    }
    f.read_exact(&mut head).map_err(io)?;
    let n = u64::from_le_bytes(head);
    if n > MAX_SAFETENSORS_HEADER || 8 + n > len {
        return check_safetensors_header(&head, len).map_err(e);
    }
    let mut buf = head.to_vec();
    buf.resize(8 + n as usize, 0);
    f.read_exact(&mut buf[8..]).map_err(io)?;
    check_safetensors_header(&buf, len).map_err(e)
}

/// Memory-maps the weights, cast to `dtype` on `device` as they are read.
pub fn var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    // SAFETY: as in `inspect`.
    unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) }
        .map_err(|e| ModelError::Io(format!("mapping the weights: {e}")))
}
