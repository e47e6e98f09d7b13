//! candle-transformers' dense modules of group A (the Llama line and its close kin): llama,
//! mistral, mixtral, gemma, gemma2, gemma3, qwen2, qwen2_moe, qwen3, qwen3_moe, yi, helium,
//! smollm3 and granite, each built from the text of its `config.json`, with the way each
//! empties its cache.
//!
//! Every module here returns the last position's logits only ((B, 1, vocab), granite's and
//! llama's (B, vocab)), so no row is cut here.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models as ct;

use super::stateful::{Stateful, err, not_for, parse};
use crate::model::error::ModelError;
use crate::model::family::CtModule;

/// Why `yi` cannot be built from a `config.json` (candle-transformers 0.11.1).
pub const YI_UNSUPPORTED: &str = "candle-transformers yi cannot be built from a config.json: \
     its Config (src/models/yi.rs:23-35) has pub(crate) fields and no serde Deserialize, so only \
     its presets Config::config_6b (yi.rs:38) and config_34b (yi.rs:53) exist; its Model has no \
     way to empty its KV cache either (Model, yi.rs:294-363)";

/// Builds `module` from `text` (its `config.json`) on `vb`, or `None` if the module is not
/// one of this file's.
pub(super) fn build(
    module: CtModule,
    text: &str,
    vb: VarBuilder<'_>,
) -> Option<Result<Box<dyn Stateful>, ModelError>> {
    let built = match module {
        CtModule::Llama
        | CtModule::Mistral
        | CtModule::Mixtral
        | CtModule::Qwen2
        | CtModule::Qwen2Moe
        | CtModule::Qwen3
        | CtModule::Qwen3Moe => llama_line(module, text, vb),
        CtModule::Gemma
        | CtModule::Gemma2
        | CtModule::Gemma3
        | CtModule::Yi
        | CtModule::Helium
        | CtModule::Smollm3
        | CtModule::Granite => kin(module, text, vb),
        _ => return None,
    };
    Some(built)
}

/// Llama, Mistral/Mixtral and the Qwen modules.
fn llama_line(
    module: CtModule,
    text: &str,
    vb: VarBuilder<'_>,
) -> Result<Box<dyn Stateful>, ModelError> {
    let err = err(module);
    let dt = vb.dtype();
    let device = vb.device().clone();
    Ok(match module {
        CtModule::Llama => {
            let c: ct::llama::LlamaConfig = parse(module, text)?;
            Box::new(LlamaState::new(vb, c.into_config(false), dt, &device).map_err(err)?)
        }
        CtModule::Mistral => {
            let c: ct::mistral::Config = parse(module, text)?;
            Box::new(ct::mistral::Model::new(&c, vb).map_err(err)?)
        }
        CtModule::Mixtral => {
            // `use_flash_attn` is a run-time switch candle's Config carries without a serde
            // default (mixtral.rs:43), not a field of any config.json: it is added here, as
            // llama's `into_config(false)` passes it. Everything else is read as written.
            let mut v: serde_json::Value = parse(module, text)?;
            if let Some(o) = v.as_object_mut() {
                o.entry("use_flash_attn").or_insert(false.into());
            }
            let c: ct::mixtral::Config = parse(module, &v.to_string())?;
            Box::new(Fresh::new(ct::mixtral::Model::new(&c, vb).map_err(err)?))
        }
        CtModule::Qwen2 => {
            let c: ct::qwen2::Config = parse(module, text)?;
            Box::new(ct::qwen2::ModelForCausalLM::new(&c, vb).map_err(err)?)
        }
        CtModule::Qwen2Moe => {
            let c: ct::qwen2_moe::Config = parse(module, text)?;
            Box::new(ct::qwen2_moe::Model::new(&c, vb).map_err(err)?)
        }
        CtModule::Qwen3 => {
            let c: ct::qwen3::Config = parse(module, text)?;
            Box::new(ct::qwen3::ModelForCausalLM::new(&c, vb).map_err(err)?)
        }
        CtModule::Qwen3Moe => {
            let c: ct::qwen3_moe::Config = parse(module, text)?;
            Box::new(ct::qwen3_moe::ModelForCausalLM::new(&c, vb).map_err(err)?)
        }
        _ => return Err(not_for(module, "this group's configs")),
    })
}

/// The Gemma modules, and the Llama-like ones of other houses.
fn kin(module: CtModule, text: &str, vb: VarBuilder<'_>) -> Result<Box<dyn Stateful>, ModelError> {
    let err = err(module);
    let dt = vb.dtype();
    let device = vb.device().clone();
    Ok(match module {
        CtModule::Gemma => {
            let c: ct::gemma::Config = parse(module, text)?;
            Box::new(ct::gemma::Model::new(false, &c, vb).map_err(err)?)
        }
        CtModule::Gemma2 => {
            let c: ct::gemma2::Config = parse(module, text)?;
            Box::new(ct::gemma2::Model::new(false, &c, vb).map_err(err)?)
        }
        CtModule::Gemma3 => {
            let c: ct::gemma3::Config = parse(module, text)?;
            Box::new(ct::gemma3::Model::new(false, &c, vb).map_err(err)?)
        }
        CtModule::Yi => return Err(ModelError::Unsupported(YI_UNSUPPORTED.into())),
        CtModule::Helium => {
            let c: ct::helium::Config = parse(module, text)?;
            Box::new(ct::helium::Model::new(&c, vb).map_err(err)?)
        }
        CtModule::Smollm3 => {
            let c: ct::smol::smollm3::Config = parse(module, text)?;
            Box::new(ct::smol::smollm3::ModelForCausalLM::new(&c, vb).map_err(err)?)
        }
        CtModule::Granite => {
            let c: ct::granite::GraniteConfig = parse(module, text)?;
            Box::new(GraniteState::new(vb, c.into_config(false), dt, &device).map_err(err)?)
        }
        _ => return Err(not_for(module, "this group's configs")),
    })
}

/// `llama` keeps its cache outside the model: a fresh copy of the empty cache per sequence.
pub(super) struct LlamaState {
    model: ct::llama::Llama,
    empty: ct::llama::Cache,
    cache: ct::llama::Cache,
}

impl LlamaState {
    /// The model on `vb` with an empty cache.
    pub(super) fn new(
        vb: VarBuilder,
        cfg: ct::llama::Config,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let model = ct::llama::Llama::load(vb, &cfg)?;
        let empty = ct::llama::Cache::new(true, dtype, &cfg, device)?;
        Ok(LlamaState {
            model,
            cache: empty.clone(),
            empty,
        })
    }
}

impl Stateful for LlamaState {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.model.forward(x, offset, &mut self.cache)
    }
    fn clear(&mut self) {
        self.cache = self.empty.clone();
    }
}

/// `granite` keeps its cache outside the model, as `llama` does (Cache, granite.rs:102).
struct GraniteState {
    model: ct::granite::Granite,
    empty: ct::granite::Cache,
    cache: ct::granite::Cache,
}

impl GraniteState {
    fn new(
        vb: VarBuilder,
        cfg: ct::granite::Config,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let model = ct::granite::Granite::load(vb, &cfg)?;
        let empty = ct::granite::Cache::new(true, dtype, &cfg, device)?;
        Ok(GraniteState {
            model,
            cache: empty.clone(),
            empty,
        })
    }
}

impl Stateful for GraniteState {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.model.forward(x, offset, &mut self.cache)
    }
    fn clear(&mut self) {
        self.cache = self.empty.clone();
    }
}

/// A model without a way to empty its cache (mixtral: no `clear_kv_cache`, and its attention
/// appends to the cache whatever the offset, mixtral.rs:204-212, 467): `clear` replaces it with a
/// copy of the model as built, whose caches are empty (the copy shares the weights).
struct Fresh<M> {
    built: M,
    live: M,
}

impl<M: Clone> Fresh<M> {
    fn new(model: M) -> Self {
        Fresh {
            live: model.clone(),
            built: model,
        }
    }
}

impl Stateful for Fresh<ct::mixtral::Model> {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        self.live.forward(x, offset)
    }
    fn clear(&mut self) {
        self.live = self.built.clone();
    }
}

/// `Stateful` for modules whose model has `forward(&mut self, x, offset)` and
/// `clear_kv_cache(&mut self)`.
macro_rules! stateful_with_clear {
    ($($t:ty),* $(,)?) => {$(
        impl Stateful for $t {
            fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
                <$t>::forward(self, x, offset)
            }
            fn clear(&mut self) {
                self.clear_kv_cache()
            }
        }
    )*};
}

stateful_with_clear!(
    ct::mistral::Model,
    ct::qwen2::ModelForCausalLM,
    ct::qwen2_moe::Model,
    ct::qwen3::ModelForCausalLM,
    ct::qwen3_moe::ModelForCausalLM,
    ct::gemma::Model,
    ct::gemma2::Model,
    ct::gemma3::Model,
    ct::helium::Model,
    ct::smol::smollm3::ModelForCausalLM,
);
