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

use super::decoder::{Config, Llama3Rope};

/// Architectures the directory loader maps onto the decoder.
pub const ARCHITECTURES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

/// The fields of `config.json` the decoder uses (others are ignored).
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    head_dim: Option<usize>,
    attention_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    rope_scaling: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

/// What a directory holds.
pub struct HfModel {
    /// Hyper-parameters.
    pub config: Config,
    /// Architecture name.
    pub architecture: String,
    /// tokenizer.json.
    pub tokenizer: Tokenizer,
    /// First end-of-sequence id of config.json.
    pub eos_id: Option<u32>,
    /// The safetensors files.
    pub files: Vec<PathBuf>,
}

fn architecture(c: &HfConfig) -> Result<String, String> {
    if let Some(t) = &c.model_type
        && ARCHITECTURES.contains(&t.as_str())
    {
        return Ok(t.clone());
    }
    for a in c.architectures.iter().flatten() {
        let name = match a.as_str() {
            "LlamaForCausalLM" => "llama",
            "MistralForCausalLM" => "mistral",
            "Qwen2ForCausalLM" => "qwen2",
            "Qwen3ForCausalLM" => "qwen3",
            _ => continue,
        };
        return Ok(name.to_string());
    }
    Err(format!(
        "config.json: architecture `{}` is not supported; supported: {} (model_type), or \
         LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM",
        c.model_type
            .clone()
            .or_else(|| c.architectures.as_ref().and_then(|a| a.first().cloned()))
            .unwrap_or_default(),
        ARCHITECTURES.join(", ")
    ))
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: std::collections::HashMap<String, String>,
        }
        let text =
            std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
        let idx: Index =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
        let files: BTreeSet<&String> = idx.weight_map.values().collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err("no model.safetensors or model.safetensors.index.json".into())
}

/// Reads config, tokenizer and safetensors headers (validated, not loaded).
pub fn inspect(dir: &Path) -> Result<HfModel, String> {
    let cfg_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let c: HfConfig =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let (architecture, config) = config_of(&c)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer =
        Tokenizer::from_file(&tok_path).map_err(|e| format!("{}: {e}", tok_path.display()))?;
    let tv = tokenizer.get_vocab_size(true);
    if tv != config.vocab_size {
        return Err(format!(
            "tokenizer.json has {tv} tokens but the model's embedding has {} rows (config.json vocab_size)",
            config.vocab_size
        ));
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
        &config,
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
        config,
        architecture,
        tokenizer,
        eos_id,
        files,
    })
}

/// The decoder config a `config.json` describes, with its architecture, checked for
/// consistency (not yet against the weights).
fn config_of(c: &HfConfig) -> Result<(String, Config), String> {
    let architecture = architecture(c)?;
    let rope_llama3 = match &c.rope_scaling {
        Some(v) if v.get("rope_type").and_then(|t| t.as_str()) == Some("llama3") => Some(
            serde_json::from_value::<Llama3Rope>(v.clone())
                .map_err(|e| format!("config.json rope_scaling: {e}"))?,
        ),
        Some(v)
            if !v.is_null() && v.get("rope_type").and_then(|t| t.as_str()) != Some("default") =>
        {
            return Err(format!(
                "config.json: rope_scaling {v} is not supported (llama3 is)"
            ));
        }
        _ => None,
    };
    let sliding_window = match architecture.as_str() {
        "mistral" => c.sliding_window,
        "qwen2" | "qwen3" if c.use_sliding_window == Some(true) => c.sliding_window,
        _ => None,
    };
    let config = Config {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta.unwrap_or(10_000.0),
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
        explicit_head_dim: c.head_dim,
        attention_bias: architecture == "qwen2" || c.attention_bias.unwrap_or(false),
        qk_norm: architecture == "qwen3",
        sliding_window,
        rope_llama3,
    };
    config.validate().map_err(|e| format!("config.json: {e}"))?;
    Ok((architecture, config))
}

/// The model-header checks of [`inspect`] on a `config.json` and one safetensors file held
/// in memory (no tokenizer): the config parses and is consistent, the safetensors header is
/// sound, and the header's sizes match the tensors (see [`super::header`]). The entry point
/// of the `model_header` fuzz target.
pub fn check_header_bytes(config_json: &[u8], safetensors: &[u8]) -> Result<(), String> {
    let c: HfConfig =
        serde_json::from_slice(config_json).map_err(|e| format!("config.json: {e}"))?;
    let (_, config) = config_of(&c)?;
    check_safetensors_bytes(safetensors)?;
    let st = safetensors::SafeTensors::deserialize(safetensors)
        .map_err(|e| format!("reading the safetensors header: {e}"))?;
    check_weights(
        &config,
        st.tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec())),
    )
}

/// `config.json`'s sizes against the tensors present (name, shape); see [`super::header`].
fn check_weights(
    config: &Config,
    tensors: impl IntoIterator<Item = (String, Vec<usize>)>,
) -> Result<(), String> {
    super::header::check(
        config,
        &tensors.into_iter().collect(),
        &super::header::Keys::config_json(),
        &[],
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
pub fn check_safetensors_header(head: &[u8], file_len: u64) -> Result<usize, String> {
    use safetensors::tensor::TensorInfo;
    let err = |m: String| format!("safetensors header: {m}");
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
pub fn check_safetensors_bytes(bytes: &[u8]) -> Result<usize, String> {
    let n = check_safetensors_header(bytes, bytes.len() as u64)?;
    safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("reading the safetensors header: {e}"))?;
    Ok(n)
}

/// Reads the header of one safetensors file (never more than the header's bytes, which are
/// capped) and checks it with [`check_safetensors_header`].
fn check_safetensors_file(path: &Path) -> Result<usize, String> {
    use std::io::Read;
    let e = |m: String| format!("{}: {m}", path.display());
    let mut f = std::fs::File::open(path).map_err(|x| e(x.to_string()))?;
    let len = f.metadata().map_err(|x| e(x.to_string()))?.len();
    let mut head = [0u8; 8];
    if len < 8 {
        return check_safetensors_header(&[], len).map_err(e);
    }
    f.read_exact(&mut head).map_err(|x| e(x.to_string()))?;
    let n = u64::from_le_bytes(head);
    if n > MAX_SAFETENSORS_HEADER || 8 + n > len {
        return check_safetensors_header(&head, len).map_err(e);
    }
    let mut buf = head.to_vec();
    buf.resize(8 + n as usize, 0);
    f.read_exact(&mut buf[8..]).map_err(|x| e(x.to_string()))?;
    check_safetensors_header(&buf, len).map_err(e)
}

/// Memory-maps the weights, cast to `dtype` on `device` as they are read.
pub fn var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, String> {
    // SAFETY: as in `inspect`.
    unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) }
        .map_err(|e| format!("mapping the weights: {e}"))
}
