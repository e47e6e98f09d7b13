//! candle-transformers' quantized modules on a GGUF file's blocks, as they ship: each reads
//! llama.cpp's tensor names and metadata keys itself (`from_gguf`), except `quantized_mistral`
//! and `quantized_stable_lm`, which read Hugging Face names through candle's quantized
//! `VarBuilder` and take their config from outside the file ([`super::quantized_hf`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models as ct;

use super::quantized_hf;
use super::stateful::{Forward, Fresh, Stateful, not_for};
use crate::model::error::ModelError;
use crate::model::family::CtModule;

/// How a candle error of `module` reads.
fn err(module: CtModule) -> impl Fn(candle_core::Error) -> ModelError {
    move |e| ModelError::Load(format!("candle-transformers {}: {e}", module.as_str()))
}

/// Quantized `module` on the GGUF file at `path`, on `device`.
pub(super) fn quantized(
    path: &Path,
    module: CtModule,
    device: &Device,
) -> Result<Box<dyn Stateful>, ModelError> {
    Ok(match module {
        // Neither empties its cache on a forward at offset 0 nor has a way to, and neither
        // can be cloned: every sequence gets the module freshly loaded from the file.
        CtModule::QuantizedQwen3Moe | CtModule::QuantizedLfm2 => Box::new(Reloaded {
            live: load(path, module, device)?,
            path: path.to_path_buf(),
            module,
            device: device.clone(),
            stale: false,
        }),
        _ => load(path, module, device)?,
    })
}

/// Loads `module` from the file once.
fn load(path: &Path, module: CtModule, device: &Device) -> Result<Box<dyn Stateful>, ModelError> {
    let err = err(module);
    let mut file = File::open(path).map_err(|e| ModelError::Io(format!("{e}")))?;
    let content = gguf_file::Content::read(&mut file).map_err(&err)?;
    let f = &mut file;
    Ok(match module {
        CtModule::QuantizedLlama => {
            Box::new(ct::quantized_llama::ModelWeights::from_gguf(content, f, device).map_err(err)?)
        }
        CtModule::QuantizedQwen2 => {
            Box::new(ct::quantized_qwen2::ModelWeights::from_gguf(content, f, device).map_err(err)?)
        }
        CtModule::QuantizedQwen3 => {
            Box::new(ct::quantized_qwen3::ModelWeights::from_gguf(content, f, device).map_err(err)?)
        }
        CtModule::QuantizedGemma3 => Box::new(OffsetZeroResets(
            ct::quantized_gemma3::ModelWeights::from_gguf(content, f, device).map_err(err)?,
        )),
        CtModule::QuantizedPhi => Box::new(Fresh::new(
            ct::quantized_phi::ModelWeights::from_gguf(content, f, device).map_err(err)?,
        )),
        CtModule::QuantizedPhi3 => Box::new(Fresh::new(
            ct::quantized_phi3::ModelWeights::from_gguf(false, content, f, device).map_err(err)?,
        )),
        CtModule::QuantizedGlm4 => Box::new(Fresh::new(
            ct::quantized_glm4::ModelWeights::from_gguf(content, f, device, DType::F32)
                .map_err(err)?,
        )),
        CtModule::QuantizedQwen3Moe => Box::new(
            ct::quantized_qwen3_moe::GGUFQWenMoE::from_gguf(content, f, device, DType::F32)
                .map_err(err)?,
        ),
        CtModule::QuantizedLfm2 => {
            Box::new(ct::quantized_lfm2::ModelWeights::from_gguf(content, f, device).map_err(err)?)
        }
        CtModule::QuantizedMistral => quantized_hf::mistral(&content, f, device)?,
        CtModule::QuantizedStableLm => quantized_hf::stable_lm(&content, f, device)?,
        _ => return Err(not_for(module, "GGUF blocks")),
    })
}

/// A module with neither a way to empty its cache nor `Clone`: [`Stateful::clear`] marks it
/// stale and the next forward loads it again from the file.
struct Reloaded {
    live: Box<dyn Stateful>,
    path: PathBuf,
    module: CtModule,
    device: Device,
    stale: bool,
}

impl Stateful for Reloaded {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        if self.stale {
            self.live = load(&self.path, self.module, &self.device)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            self.stale = false;
        }
        self.live.forward(x, offset)
    }
    fn clear(&mut self) {
        self.stale = true;
    }
}

impl Forward for ct::quantized_phi::ModelWeights {
    fn forward_at(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.forward(x, offset)
    }
}

impl Forward for ct::quantized_phi3::ModelWeights {
    fn forward_at(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.forward(x, offset)
    }
}

impl Forward for ct::quantized_glm4::ModelWeights {
    fn forward_at(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.forward(x, offset)
    }
}

impl Stateful for ct::quantized_llama::ModelWeights {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::quantized_llama::ModelWeights::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::quantized_qwen2::ModelWeights {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::quantized_qwen2::ModelWeights::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::quantized_qwen3::ModelWeights {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::quantized_qwen3::ModelWeights::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl Stateful for ct::quantized_mistral::Model {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::quantized_mistral::Model::forward(self, x, offset)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

/// Only [`Reloaded`] runs it: no `clear`, and its cache is appended to whatever the offset.
impl Stateful for ct::quantized_qwen3_moe::GGUFQWenMoE {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::quantized_qwen3_moe::GGUFQWenMoE::forward(self, x, offset)
    }
    fn clear(&mut self) {}
}

/// Only [`Reloaded`] runs it: its attention caches reset at offset 0, but its short
/// convolutions' state carries over into a one-token forward at offset 0.
impl Stateful for ct::quantized_lfm2::ModelWeights {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        ct::quantized_lfm2::ModelWeights::forward(self, x, offset)
    }
    fn clear(&mut self) {}
}

/// quantized_gemma3 has no way to empty its cache: a forward at offset 0 replaces it, which
/// every sequence's first forward is.
struct OffsetZeroResets(ct::quantized_gemma3::ModelWeights);

impl Stateful for OffsetZeroResets {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.0.forward(x, offset)
    }
    fn clear(&mut self) {}
}
