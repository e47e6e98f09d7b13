//! A model the user brings from Rust (`ModelInfo::custom`, examples/own_model.rs).

use candle_core::Device;

use super::under_test::{Capabilities, ModelUnderTest};
use crate::dtype::RunDtype;

/// A model the user brings from Rust: it loads itself in a dtype on a device. See
/// `examples/own_model.rs`.
pub trait CustomModel: Send + Sync {
    /// What its loaded models can do (pairs needing more are SKIPPED or refused at plan
    /// time, as for any engine).
    fn capabilities(&self) -> Capabilities;
    /// Loads it in `dtype` on `device`; `Err` says why not (its pairs are then INCOMPLETE
    /// with the reason).
    fn load(
        &self,
        dtype: RunDtype,
        device: &Device,
    ) -> std::result::Result<Box<dyn ModelUnderTest>, String>;
}

/// A shared [`CustomModel`] (a newtype so that `ModelInfo` stays `Debug` and `Clone`).
#[derive(Clone)]
pub struct CustomLoader(pub std::sync::Arc<dyn CustomModel>);

impl std::fmt::Debug for CustomLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomLoader")
    }
}
