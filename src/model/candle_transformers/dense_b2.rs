//! Group B's modules that need more than a constructor: `stable_lm`, whose model cannot empty
//! its cache (it is rebuilt from the tensors it read), and `mpt` and `persimmon`, which
//! candle-transformers 0.11.1 cannot build from a `config.json` at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use candle_transformers::models as ct;
use serde::de::DeserializeOwned;

use super::stateful::Stateful;
use crate::model::error::ModelError;
use crate::model::family::CtModule;

/// Why `mpt` cannot run here.
pub(super) const MPT_UNSUPPORTED: &str = "candle-transformers 0.11.1 cannot build `mpt` from a \
     config.json: mpt::Config's fields are pub(crate) and it has no Deserialize (mpt.rs:16-28); \
     the only way to make one is the preset Config::replit_code_v1_5_3b (mpt.rs:31)";

/// Why `persimmon` cannot run here.
pub(super) const PERSIMMON_UNSUPPORTED: &str = "candle-transformers 0.11.1 has no Persimmon \
     model: persimmon.rs holds only its Config (persimmon.rs:29) and the preset \
     Config::base_8b (persimmon.rs:49), no model struct and no forward";

/// Builds `stable_lm`, or says why `mpt` and `persimmon` cannot be built (after reading
/// their `config.json`, so that a malformed one is named as such); `None` for other modules.
pub(super) fn build(
    module: CtModule,
    text: &str,
    vb: VarBuilder<'_>,
) -> Option<Result<Box<dyn Stateful>, ModelError>> {
    Some(match module {
        CtModule::StableLm => parse(module, text).and_then(|c| match StableLmState::new(c, vb) {
            Ok(m) => Ok(Box::new(m) as Box<dyn Stateful>),
            Err(e) => Err(load_err(module)(e)),
        }),
        CtModule::Mpt => parse::<serde_json::Value>(module, text)
            .and_then(|_| Err(ModelError::Unsupported(MPT_UNSUPPORTED.into()))),
        CtModule::Persimmon => parse::<ct::persimmon::Config>(module, text)
            .and_then(|_| Err(ModelError::Unsupported(PERSIMMON_UNSUPPORTED.into()))),
        _ => return None,
    })
}

/// `text` as `module`'s config type.
pub(super) fn parse<T: DeserializeOwned>(module: CtModule, text: &str) -> Result<T, ModelError> {
    serde_json::from_str(text).map_err(|e| {
        ModelError::Invalid(format!(
            "config.json for candle-transformers {}: {e}",
            module.as_str()
        ))
    })
}

/// How a candle error of `module` reads (the text `mod.rs` gives the other modules').
pub(super) fn load_err(module: CtModule) -> impl Fn(candle_core::Error) -> ModelError {
    move |e| ModelError::Load(format!("candle-transformers {}: {e}", module.as_str()))
}

/// `stable_lm::Model` has no way to empty its cache (stable_lm.rs:359-433 has no
/// `clear_kv_cache`, and a forward at offset 0 appends to the old cache) and is not `Clone`:
/// emptying it builds a fresh model on the tensors the first build read (shared, not copied).
struct StableLmState {
    config: ct::stable_lm::Config,
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: Device,
    /// `None` only if a rebuild failed (it cannot: the same build succeeded once).
    model: Option<ct::stable_lm::Model>,
}

impl StableLmState {
    fn new(config: ct::stable_lm::Config, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        let (dtype, device) = (vb.dtype(), vb.device().clone());
        let got = Arc::new(Mutex::new(HashMap::new()));
        let capture = Capture {
            inner: vb,
            got: got.clone(),
        };
        let model = ct::stable_lm::Model::new(
            &config,
            VarBuilder::from_backend(Box::new(capture), dtype, device.clone()),
        )?;
        let tensors = std::mem::take(&mut *got.lock().map_err(poisoned)?);
        Ok(StableLmState {
            config,
            tensors,
            dtype,
            device,
            model: Some(model),
        })
    }
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("the tensor capture's lock is poisoned".into())
}

impl Stateful for StableLmState {
    fn forward(&mut self, x: &Tensor, offset: usize) -> candle_core::Result<Tensor> {
        match &mut self.model {
            Some(m) => m.forward(x, offset),
            None => candle_core::bail!("stable_lm could not be rebuilt to empty its cache"),
        }
    }
    fn clear(&mut self) {
        let vb = VarBuilder::from_tensors(self.tensors.clone(), self.dtype, &self.device);
        self.model = ct::stable_lm::Model::new(&self.config, vb).ok();
    }
}

/// A `VarBuilder` backend that hands out `inner`'s tensors and keeps a handle on each.
struct Capture<'a> {
    inner: VarBuilder<'a>,
    got: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl SimpleBackend for Capture<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self
            .inner
            .get_with_hints_dtype(s, name, h, dtype)?
            .to_device(dev)?;
        self.got
            .lock()
            .map_err(poisoned)?
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .inner
            .get_unchecked_dtype(name, dtype)?
            .to_device(dev)?;
        self.got
            .lock()
            .map_err(poisoned)?
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
