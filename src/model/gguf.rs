//! GGUF files (llama.cpp's format): hyper-parameters and the tokenizer from the metadata,
//! tensors dequantized to f32 and then cast to the run dtype, renamed to Hugging Face names.
//!
//! llama.cpp's converter permutes the rows of the Q and K projections of Llama-family models
//! so that RoPE can rotate adjacent pairs; the project's decoder rotates halves as the
//! original model does, so the loader undoes that permutation and the numbers match the
//! original model. Its Gemma 3 conversion writes Q and K as they are (convert_hf_to_gguf.py
//! permutes in LlamaModel only), so nothing is undone there ([`Layout`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use super::decoder::Config;

/// What the metadata of a GGUF file gives.
pub struct GgufModel {
    /// Hyper-parameters.
    pub config: Config,
    /// `general.architecture`.
    pub architecture: String,
    /// The byte-level BPE tokenizer.
    pub tokenizer: Tokenizer,
    /// BOS id, when the file asks for BOS in front of prompts.
    pub bos_id: Option<u32>,
    /// Control tokens.
    pub special_ids: Vec<u32>,
    /// End-of-sequence id.
    pub eos_id: Option<u32>,
    /// Gemma 3's own hyper-parameters, for `general.architecture = gemma3` (`config` then
    /// holds the sizes every model has).
    pub gemma3: Option<super::gemma3::Config>,
}

/// Architectures the GGUF loader maps onto the own decoders.
pub const ARCHITECTURES: &[&str] = &["llama", "gemma3"];

/// How one architecture's GGUF tensors become the own decoders' checkpoint-named weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// llama.cpp's Llama conversion: Llama names, Q/K rows permuted for these head counts.
    Llama {
        /// Query heads.
        heads: usize,
        /// Key/value heads.
        kv_heads: usize,
    },
    /// llama.cpp's Gemma 3 conversion: Gemma's extra norms, Q/K rows as they are.
    Gemma3,
}

impl Layout {
    /// The layout of a file of architecture `arch` with the sizes `cfg`.
    pub fn of(arch: &str, cfg: &Config) -> Layout {
        if arch == "gemma3" {
            Layout::Gemma3
        } else {
            Layout::Llama {
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_key_value_heads,
            }
        }
    }

    fn layer_names(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Layout::Llama { .. } => &LAYER_NAMES,
            Layout::Gemma3 => &GEMMA3_LAYER_NAMES,
        }
    }

    /// GGUF tensor name → checkpoint name (`None`: a tensor the decoder does not read).
    pub fn hf_name(self, name: &str) -> Option<String> {
        rename(name, 0, self.layer_names())
    }

    /// Checkpoint name → GGUF name (for messages about a GGUF file).
    pub fn gguf_name(self, name: &str) -> String {
        rename(name, 1, self.layer_names()).unwrap_or_else(|| name.to_string())
    }

    /// The head count whose rows llama.cpp permuted in tensor `name`, if it did.
    fn permuted_heads(self, name: &str) -> Option<usize> {
        match self {
            Layout::Llama { heads, .. } if name.ends_with("attn_q.weight") => Some(heads),
            Layout::Llama { kv_heads, .. } if name.ends_with("attn_k.weight") => Some(kv_heads),
            _ => None,
        }
    }
}

fn open(path: &Path) -> Result<(Content, BufReader<File>, u64), String> {
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = f.metadata().map_err(|e| format!("cannot stat: {e}"))?.len();
    let mut r = BufReader::new(f);
    let c = read_content(&mut r, len)?;
    Ok((c, r, len))
}

/// Reads the header, metadata and tensor infos of a GGUF stream of `len` bytes that starts at
/// the reader's position 0, after [`precheck`] has rejected what would make candle panic.
fn read_content<R: Read + Seek>(r: &mut R, len: u64) -> Result<Content, String> {
    precheck(r, len).map_err(|e| format!("not a readable GGUF file: {e}"))?;
    r.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot read: {e}"))?;
    Content::read(r).map_err(|e| format!("not a readable GGUF file: {e}"))
}

/// Walks the metadata section the way candle's `Content::read` will, without keeping any
/// value, and rejects `general.alignment = 0`: candle rounds the tensor-data offset up to a
/// multiple of it and would divide by zero (a panic, found by `fuzz/` target `gguf_header`).
/// Anything malformed that candle reports as an error itself is left to candle (`Ok`); this
/// never allocates more than a key's worth of bytes, whatever lengths the file declares.
fn precheck<R: Read + Seek>(r: &mut R, len: u64) -> Result<(), String> {
    const KEY: &[u8] = b"general.alignment";
    // Same caps as candle 0.11.1's reader; beyond them candle bails out with an error.
    const MAX_LEN: u64 = 1 << 30;
    const MAX_DEPTH: usize = 64;
    struct W<'a, R> {
        r: &'a mut R,
        /// Bytes left after the current position.
        left: u64,
        wide: bool,
    }
    impl<R: Read + Seek> W<'_, R> {
        fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
            let mut b = [0u8; N];
            self.r.read_exact(&mut b).ok()?;
            self.left = self.left.saturating_sub(N as u64);
            Some(b)
        }
        fn u32(&mut self) -> Option<u32> {
            self.bytes::<4>().map(u32::from_le_bytes)
        }
        fn length(&mut self) -> Option<u64> {
            if self.wide {
                self.bytes::<8>().map(u64::from_le_bytes)
            } else {
                self.u32().map(u64::from)
            }
        }
        /// Skips `n` bytes by reading them (cheap through a `BufReader`, unlike a seek).
        fn skip(&mut self, n: u64) -> Option<()> {
            let done = std::io::copy(&mut (&mut *self.r).take(n), &mut std::io::sink()).ok()?;
            self.left = self.left.saturating_sub(done);
            (done == n).then_some(())
        }
        /// A string: `Some(true)` when candle will read it as `KEY`. candle drops trailing
        /// NUL bytes from strings, so `general.alignment\0\0\0` is the key too (a crash the
        /// `gguf_header` fuzz target found after the exact-match check).
        fn string_is_key(&mut self) -> Option<bool> {
            let n = self.length()?;
            if n > MAX_LEN || n > self.left {
                return None;
            }
            if n < KEY.len() as u64 {
                self.skip(n)?;
                return Some(false);
            }
            let head = self.bytes::<{ KEY.len() }>()? == KEY;
            // The rest is read in chunks, never allocated whole: it must be all NULs.
            let mut rest = n - KEY.len() as u64;
            let mut nuls = true;
            let mut buf = [0u8; 256];
            while rest > 0 {
                let k = rest.min(buf.len() as u64) as usize;
                self.r.read_exact(&mut buf[..k]).ok()?;
                self.left = self.left.saturating_sub(k as u64);
                nuls &= buf[..k].iter().all(|b| *b == 0);
                rest -= k as u64;
            }
            Some(head && nuls)
        }
        fn min_size(&self, t: u32) -> Option<u64> {
            let prefix = if self.wide { 8 } else { 4 };
            Some(match t {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                10..=12 => 8,
                8 => prefix,
                9 => 4 + prefix,
                _ => return None,
            })
        }
        /// Skips one value of type `t`; returns it when it is a candidate alignment (the
        /// integer types candle reads `general.alignment` from).
        fn value(&mut self, t: u32, depth: usize) -> Option<Option<i64>> {
            if depth > MAX_DEPTH {
                return None;
            }
            Some(match t {
                0 => Some(i64::from(self.bytes::<1>()?[0])),
                1 => Some(i64::from(self.bytes::<1>()?[0] as i8)),
                2 => Some(i64::from(u16::from_le_bytes(self.bytes::<2>()?))),
                3 => Some(i64::from(i16::from_le_bytes(self.bytes::<2>()?))),
                4 => Some(i64::from(self.u32()?)),
                5 => Some(i64::from(self.u32()? as i32)),
                7 => {
                    if self.bytes::<1>()?[0] > 1 {
                        return None;
                    }
                    None
                }
                8 => {
                    self.string_is_key()?;
                    None
                }
                9 => {
                    let et = self.u32()?;
                    let min = self.min_size(et)?;
                    let n = self.length()?;
                    if n > MAX_LEN || n.saturating_mul(min) > self.left {
                        return None;
                    }
                    if et == 9 || et == 8 {
                        for _ in 0..n {
                            self.value(et, depth + 1)?;
                        }
                    } else {
                        self.skip(n * min)?;
                    }
                    None
                }
                t => {
                    self.skip(self.min_size(t)?)?;
                    None
                }
            })
        }
    }
    let Some(start) = r.stream_position().ok() else {
        return Ok(());
    };
    let mut w = W {
        r,
        left: len.saturating_sub(start),
        wide: true,
    };
    let walk = |w: &mut W<'_, R>| -> Option<Option<i64>> {
        let magic = w.u32()?;
        if magic != 0x4655_4747 && magic != 0x4747_5546 {
            return None;
        }
        w.wide = match w.u32()? {
            1 => false,
            2 | 3 => true,
            _ => return None,
        };
        let _tensors = w.length()?;
        let kvs = w.length()?;
        if kvs > MAX_LEN || kvs.saturating_mul(if w.wide { 13 } else { 9 }) > w.left {
            return None;
        }
        let mut alignment = None;
        for _ in 0..kvs {
            let is_key = w.string_is_key()?;
            let t = w.u32()?;
            let v = w.value(t, 0)?;
            if is_key {
                alignment = v;
            }
        }
        Some(alignment)
    };
    let found = walk(&mut w);
    let _ = w.r.seek(SeekFrom::Start(start));
    match found {
        // candle rounds offsets up to a multiple of it: 0 divides by zero, and anything
        // not a power of two puts every tensor at a wrong offset (garbage weights).
        Some(Some(a)) if a <= 0 || !(a as u64).is_power_of_two() => {
            Err(format!("general.alignment is {a}, not a power of two"))
        }
        _ => Ok(()),
    }
}

fn get<'a>(c: &'a Content, key: &str) -> Result<&'a Value, String> {
    c.metadata
        .get(key)
        .ok_or_else(|| format!("metadata key `{key}` is missing"))
}

fn get_u32(c: &Content, key: &str) -> Result<u32, String> {
    get(c, key)?
        .to_u32()
        .map_err(|e| format!("metadata key `{key}`: {e}"))
}

fn get_f32(c: &Content, key: &str) -> Result<f32, String> {
    get(c, key)?
        .to_f32()
        .map_err(|e| format!("metadata key `{key}`: {e}"))
}

fn strings(c: &Content, key: &str) -> Result<Vec<String>, String> {
    get(c, key)?
        .to_vec()
        .map_err(|e| format!("metadata key `{key}`: {e}"))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| format!("metadata key `{key}`: {e}"))
        })
        .collect()
}

/// Every tensor's bytes must lie inside the file: a truncated download is found here, before
/// any work, not when a group's weights load. The arithmetic is checked: dimensions come from
/// the file, and their product may overflow.
fn check_tensor_extents(len: u64, c: &Content) -> Result<(), String> {
    for (name, t) in &c.tensor_infos {
        let block = t.ggml_dtype.block_size().max(1);
        let elems = t
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}`: shape {:?} overflows", t.shape.dims()))?;
        if !elems.is_multiple_of(block) {
            return Err(format!(
                "tensor `{name}`: {elems} elements are not a whole number of {:?} blocks of {block}",
                t.ggml_dtype
            ));
        }
        let bytes = (elems / block)
            .checked_mul(t.ggml_dtype.type_size())
            .ok_or_else(|| format!("tensor `{name}`: size overflows"))? as u64;
        let end = c
            .tensor_data_offset
            .saturating_add(t.offset)
            .saturating_add(bytes);
        if end > len {
            return Err(format!(
                "truncated: tensor `{name}` needs bytes up to {end} but the file has {len}"
            ));
        }
    }
    Ok(())
}

/// Reads the metadata (not the tensors) of a GGUF file.
pub fn inspect(path: &Path) -> Result<GgufModel, String> {
    let (c, _, len) = open(path)?;
    inspect_content(&c, len)
}

/// [`inspect`] on a GGUF file held in memory: the same checks (header, metadata, tensor
/// extents against `bytes.len()`, tokenizer), no file system. The entry point of the
/// `gguf_header` fuzz target.
pub fn inspect_bytes(bytes: &[u8]) -> Result<GgufModel, String> {
    let mut r = Cursor::new(bytes);
    let c = read_content(&mut r, bytes.len() as u64)?;
    inspect_content(&c, bytes.len() as u64)
}

/// Everything [`inspect`] checks once the header is read; `len` is the file's size.
fn inspect_content(c: &Content, len: u64) -> Result<GgufModel, String> {
    let arch = get(c, "general.architecture")?
        .to_string()
        .map_err(|e| format!("general.architecture: {e}"))?
        .clone();
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(format!(
            "architecture `{arch}` is not supported from GGUF; supported: {}",
            ARCHITECTURES.join(", ")
        ));
    }
    check_tensor_extents(len, c)?;
    let k = |s: &str| format!("{arch}.{s}");
    let tokens = strings(c, "tokenizer.ggml.tokens")?;
    let embd = c
        .tensor_infos
        .get("token_embd.weight")
        .ok_or("tensor `token_embd.weight` is missing")?;
    let vocab_size = match embd.shape.dims() {
        &[rows, _] => rows,
        d => {
            return Err(format!(
                "tensor `token_embd.weight` has shape {d:?}, not 2-D"
            ));
        }
    };
    if tokens.len() != vocab_size {
        return Err(format!(
            "the tokenizer has {} tokens but the embedding has {vocab_size} rows",
            tokens.len()
        ));
    }
    let heads = get_u32(c, &k("attention.head_count"))? as usize;
    let gemma3 = (arch == "gemma3")
        .then(|| super::gemma3::Config::from_gguf(c))
        .transpose()?;
    let mut config = Config {
        vocab_size,
        hidden_size: get_u32(c, &k("embedding_length"))? as usize,
        intermediate_size: get_u32(c, &k("feed_forward_length"))? as usize,
        num_hidden_layers: get_u32(c, &k("block_count"))? as usize,
        num_attention_heads: heads,
        num_key_value_heads: get_u32(c, &k("attention.head_count_kv"))
            .map_or(heads, |v| v as usize),
        rms_norm_eps: get_f32(c, &k("attention.layer_norm_rms_epsilon"))? as f64,
        rope_theta: get_f32(c, &k("rope.freq_base")).unwrap_or(10_000.0) as f64,
        max_position_embeddings: get_u32(c, &k("context_length"))? as usize,
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        explicit_head_dim: None,
        attention_bias: false,
        qk_norm: false,
        sliding_window: None,
        rope_llama3: None,
    };
    if let Some(g) = &gemma3 {
        // The sizes every model has, for planning and the header check; gemma3::Model reads
        // the rest from `gemma3`.
        config.explicit_head_dim = Some(g.head_dim);
        config.qk_norm = true;
        config.sliding_window = Some(g.sliding_window);
        config.tie_word_embeddings = true;
    }
    config.validate()?;
    let layout = Layout::of(&arch, &config);
    let shapes = c
        .tensor_infos
        .iter()
        .filter_map(|(n, t)| layout.hf_name(n).map(|hf| (hf, t.shape.dims().to_vec())))
        .collect();
    let extra_norms: &[&str] = if gemma3.is_some() {
        &super::gemma3::EXTRA_NORMS
    } else {
        &[]
    };
    super::header::check(
        &config,
        &shapes,
        &super::header::Keys::gguf(&arch),
        extra_norms,
        &|n| layout.gguf_name(n),
    )?;

    let tok = read_tokenizer(c, &tokens)?;
    Ok(GgufModel {
        config,
        architecture: arch,
        tokenizer: tok.tokenizer,
        bos_id: tok.bos_id,
        special_ids: tok.special_ids,
        eos_id: tok.eos_id,
        gemma3,
    })
}

/// What the tokenizer metadata of a GGUF file gives.
pub struct GgufTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// BOS id, when the file asks for BOS in front of prompts.
    pub bos_id: Option<u32>,
    /// Control tokens.
    pub special_ids: Vec<u32>,
    /// End-of-sequence id.
    pub eos_id: Option<u32>,
}

/// Tokenizer models read from `tokenizer.ggml.model`.
pub const TOKENIZER_MODELS: &[&str] = &["gpt2", "llama"];

/// Reads the tokenizer of a GGUF file alone, whatever its architecture (a tokenizer can be
/// checked before the decoder supports the model).
pub fn tokenizer(path: &Path) -> Result<GgufTokenizer, String> {
    let (c, _, _) = open(path)?;
    let tokens = strings(&c, "tokenizer.ggml.tokens")?;
    read_tokenizer(&c, &tokens)
}

/// The tokenizer of `tokenizer.ggml.model`: `gpt2` (byte-level BPE with merges) or `llama`
/// (SentencePiece tokens with scores, [`super::spm`]).
fn read_tokenizer(c: &Content, tokens: &[String]) -> Result<GgufTokenizer, String> {
    let model = get(c, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| e.to_string())?
        .clone();
    // Token types (llama.cpp's: 1 normal, 3 control, 4 user-defined, 6 byte).
    let types: Vec<i32> = get(c, "tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().map_err(|e| e.to_string()))
        .map(|v| v.iter().map(|x| x.to_i32().unwrap_or(1)).collect())
        .unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(format!(
            "tokenizer.ggml.token_type has {} entries but there are {} tokens",
            types.len(),
            tokens.len()
        ));
    }
    let (tokenizer, special_ids) = match model.as_str() {
        "gpt2" => byte_level_bpe(c, tokens, &types)?,
        "llama" => {
            let scores: Vec<f32> = get(c, "tokenizer.ggml.scores")?
                .to_vec()
                .map_err(|e| format!("metadata key `tokenizer.ggml.scores`: {e}"))?
                .iter()
                .map(|v| {
                    v.to_f32()
                        .map_err(|e| format!("tokenizer.ggml.scores: {e}"))
                })
                .collect::<Result<_, _>>()?;
            if types.is_empty() {
                return Err("metadata key `tokenizer.ggml.token_type` is missing".into());
            }
            let prefix = c
                .metadata
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(true);
            let unk = get_u32(c, "tokenizer.ggml.unknown_token_id").ok();
            super::spm::tokenizer(tokens, &scores, &types, prefix, unk)?
        }
        _ => {
            return Err(format!(
                "tokenizer model `{model}` is not supported; supported: gpt2 (byte-level BPE), \
                 llama (SentencePiece tokens with scores)"
            ));
        }
    };
    let add_bos = c
        .metadata
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let bos_id = if add_bos {
        get_u32(c, "tokenizer.ggml.bos_token_id").ok()
    } else {
        None
    };
    let eos_id = get_u32(c, "tokenizer.ggml.eos_token_id").ok();
    for (key, id) in [("bos", bos_id), ("eos", eos_id)] {
        if let Some(id) = id
            && id as usize >= tokens.len()
        {
            return Err(format!(
                "tokenizer.ggml.{key}_token_id {id} is outside the vocabulary of {}",
                tokens.len()
            ));
        }
    }
    Ok(GgufTokenizer {
        tokenizer,
        bos_id,
        special_ids,
        eos_id,
    })
}

/// A byte-level BPE tokenizer from `tokenizer.ggml.merges`; control tokens (type 3) are
/// matched whole in text, like `<|im_start|>`.
fn byte_level_bpe(
    c: &Content,
    tokens: &[String],
    types: &[i32],
) -> Result<(Tokenizer, Vec<u32>), String> {
    let merges: Vec<(String, String)> = strings(c, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("malformed merge `{m}`"))
        })
        .collect::<Result<_, _>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building the BPE tokenizer: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let pre = match c
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
    {
        // SmolLM's pre-tokenizer splits digits one by one before the GPT-2 regex.
        Some("smollm") => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])),
        _ => PreTokenizerWrapper::ByteLevel(byte_level),
    };
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let special_ids: Vec<u32> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3)
        .map(|(i, _)| i as u32)
        .collect();
    let specials: Vec<AddedToken> = special_ids
        .iter()
        .map(|&i| AddedToken::from(tokens[i as usize].clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| format!("adding special tokens: {e}"))?;
    Ok((tokenizer, special_ids))
}

/// GGUF names of the tensors outside the layers, with their Hugging Face names.
const FIXED_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];
/// GGUF names of a block's tensors (after `blk.N.`), with their Hugging Face names (after
/// `model.layers.N.`).
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];
/// [`LAYER_NAMES`] for Gemma 3: `ffn_norm` is the norm before the MLP there, and the norms
/// after attention and MLP and the per-head q/k norms come on top.
const GEMMA3_LAYER_NAMES: [(&str, &str); 13] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    (
        "post_attention_norm.weight",
        "post_attention_layernorm.weight",
    ),
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// Maps a tensor name through the tables (`layer` for a block's tensors), from column `from`
/// to the other: GGUF → Hugging Face with 0, back with 1.
fn rename(name: &str, from: usize, layer_names: &[(&'static str, &'static str)]) -> Option<String> {
    let pick = |pair: &(&'static str, &'static str)| {
        if from == 0 {
            (pair.0, pair.1)
        } else {
            (pair.1, pair.0)
        }
    };
    if let Some((_, to)) = FIXED_NAMES.iter().map(pick).find(|(f, _)| *f == name) {
        return Some(to.to_string());
    }
    let (prefix, other) = if from == 0 {
        ("blk.", "model.layers.")
    } else {
        ("model.layers.", "blk.")
    };
    let (layer, t) = name.strip_prefix(prefix)?.split_once('.')?;
    let (_, to) = layer_names.iter().map(pick).find(|(f, _)| *f == t)?;
    Some(format!("{other}{layer}.{to}"))
}

/// Undoes llama.cpp's Q/K row permutation: rows (heads, 2, head_dim/2) were stored as
/// (heads, head_dim/2, 2).
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / heads;
    w.reshape((heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Loads every tensor, dequantized to f32 and cast to `dtype` on `device`.
pub fn var_builder(
    path: &Path,
    layout: Layout,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, String> {
    let (c, mut r, _) = open(path)?;
    let mut tensors = HashMap::new();
    for name in c.tensor_infos.keys() {
        let Some(hf) = layout.hf_name(name) else {
            continue;
        };
        // Dequantize on the CPU in f32: the quantized blocks only know how to widen to f32.
        let q = c
            .tensor(&mut r, name, &Device::Cpu)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        let mut t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        if let Some(heads) = layout.permuted_heads(name) {
            t = unpermute(&t, heads).map_err(|e| format!("tensor `{name}`: {e}"))?;
        }
        tensors.insert(hf, t);
    }
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}

/// The projection weights (2-D `blk.*` tensors and the output head, or the token embedding
/// when the head is tied) kept quantized as the file stores them, by Hugging Face name, on
/// `device`: what `weights: quantized` multiplies with. Q and K get llama.cpp's row
/// permutation undone on whole rows of blocks (a row's blocks lie along the input dimension,
/// so moving rows moves bytes and changes no value).
pub fn quantized_projections(
    path: &Path,
    layout: Layout,
    device: &Device,
) -> Result<HashMap<String, Arc<QTensor>>, String> {
    let (c, mut r, _) = open(path)?;
    let tied = !c.tensor_infos.contains_key("output.weight");
    let mut out = HashMap::new();
    for (name, info) in &c.tensor_infos {
        let Some(hf) = layout.hf_name(name) else {
            continue;
        };
        let projection =
            name.starts_with("blk.") && info.shape.rank() == 2 && !name.contains("norm");
        let head = name == "output.weight" || (name == "token_embd.weight" && tied);
        if !(projection || head) {
            continue;
        }
        let q = c
            .tensor(&mut r, name, &Device::Cpu)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        let q = match layout.permuted_heads(name) {
            Some(h) => unpermute_rows(&q, h, device),
            None => {
                let dims = q.shape().dims().to_vec();
                let bytes = q.data().map_err(|e| format!("tensor `{name}`: {e}"))?;
                qtensor_from_ggml(q.dtype(), &bytes, dims, device)
            }
        }
        .map_err(|e| format!("tensor `{name}`: {e}"))?;
        // A tied head is named after the embedding, which the decoder also reads densely.
        out.insert(hf, Arc::new(q));
    }
    Ok(out)
}

/// [`unpermute`] for quantized rows: row `h·hd + a·hd/2 + b` of the result is row
/// `h·hd + 2b + a` of the file.
fn unpermute_rows(q: &QTensor, heads: usize, device: &Device) -> candle_core::Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let (rows, cols) = q.shape().dims2()?;
    let dt = q.dtype();
    if !cols.is_multiple_of(dt.block_size())
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
    {
        candle_core::bail!("shape ({rows}, {cols}) does not split into {heads} heads of blocks");
    }
    let row_bytes = cols / dt.block_size() * dt.type_size();
    let data = q.data()?;
    if data.len() != rows * row_bytes {
        candle_core::bail!("{} bytes for {rows} rows of {row_bytes}", data.len());
    }
    let hd = rows / heads;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..hd / 2 {
                let src = h * hd + 2 * b + a;
                out.extend_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    qtensor_from_ggml(dt, &out, dims, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GGUF v3 bytes: the given metadata entries (key, type, value bytes) and no tensors.
    fn gguf(kv: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kv.len() as u64).to_le_bytes());
        for (k, t, v) in kv {
            b.extend((k.len() as u64).to_le_bytes());
            b.extend(k.as_bytes());
            b.extend(t.to_le_bytes());
            b.extend(v);
        }
        b
    }

    #[test]
    fn fuzz_regression_alignment_zero_is_an_error_not_a_division_by_zero() {
        // Found by the `gguf_header` fuzz target: candle rounds the data offset up to a
        // multiple of `general.alignment` and panics on 0.
        for t in [4u32, 5] {
            let bytes = gguf(&[("general.alignment", t, 0u32.to_le_bytes().to_vec())]);
            let Err(e) = inspect_bytes(&bytes) else {
                panic!("alignment 0 (type {t}) was accepted");
            };
            assert!(e.contains("alignment"), "{e}");
        }
        // Any other malformed header is an error too.
        assert!(inspect_bytes(b"GGUF").is_err());
        assert!(inspect_bytes(&[]).is_err());
        // The crash the fuzzer found next: candle strips trailing NULs from keys, so this is
        // `general.alignment` as well (the fuzzer's input below, reduced).
        let bytes = gguf(&[
            ("general.architecture", 5, 0i32.to_le_bytes().to_vec()),
            ("general.alignment\0\0\0", 0, vec![0u8]),
        ]);
        let Err(e) = inspect_bytes(&bytes) else {
            panic!("a NUL-padded alignment key of 0 was accepted");
        };
        assert!(e.contains("alignment"), "{e}");
        // The fuzzer's own crash input, as it found it.
        let crash = include_bytes!("../../tests/fuzz_regressions/gguf_header-crash-351e96d2.bin");
        assert!(inspect_bytes(crash).is_err());
        let mut huge = gguf(&[]);
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
        assert!(inspect_bytes(&huge).is_err());
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, hd/2, c).swapaxes(1, 2).reshape(rows, c)
        let (h, hd, c) = (3, 4, 2);
        let w = Tensor::arange(0f32, (h * hd * c) as f32, &Device::Cpu)
            .unwrap()
            .reshape((h * hd, c))
            .unwrap();
        let permuted = w
            .reshape((h, 2, hd / 2, c))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((h * hd, c))
            .unwrap();
        let back = unpermute(&permuted, h).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn quantized_rows_unpermute_like_the_dequantized_tensor() {
        use candle_core::quantized::GgmlDType;
        let (h, hd, c) = (2, 8, 64);
        let w = Tensor::randn(0f32, 1.0, (h * hd, c), &Device::Cpu).unwrap();
        for dt in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let q = QTensor::quantize(&w, dt).unwrap();
            let dense = unpermute(&q.dequantize(&Device::Cpu).unwrap(), h).unwrap();
            let rows = unpermute_rows(&q, h, &Device::Cpu).unwrap();
            let rows = rows.dequantize(&Device::Cpu).unwrap();
            assert_eq!(
                rows.to_vec2::<f32>().unwrap(),
                dense.to_vec2::<f32>().unwrap(),
                "{dt:?}"
            );
        }
    }

    #[test]
    fn names_map_to_hugging_face() {
        let llama = Layout::Llama {
            heads: 2,
            kv_heads: 1,
        };
        assert_eq!(
            llama.hf_name("blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            llama.hf_name("output_norm.weight").unwrap(),
            "model.norm.weight"
        );
        assert_eq!(llama.hf_name("rope_freqs.weight"), None);
        assert_eq!(
            llama.hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        // Gemma 3: ffn_norm is the norm before the MLP; its norm after attention has a name
        // of its own, and every name maps back.
        let g = Layout::Gemma3;
        assert_eq!(
            g.hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            g.hf_name("blk.5.post_attention_norm.weight").unwrap(),
            "model.layers.5.post_attention_layernorm.weight"
        );
        for (gguf, _) in GEMMA3_LAYER_NAMES {
            let name = format!("blk.7.{gguf}");
            assert_eq!(g.gguf_name(&g.hf_name(&name).unwrap()), name);
        }
        assert_eq!(g.permuted_heads("blk.0.attn_q.weight"), None);
        assert_eq!(llama.permuted_heads("blk.0.attn_q.weight"), Some(2));
        assert_eq!(llama.permuted_heads("blk.0.attn_k.weight"), Some(1));
    }
}
