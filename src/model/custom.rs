//! A model the user brings from Rust (`ModelInfo::from_custom`, examples/own_model.rs,
//! docs/own_model.md).

use candle_core::Device;

use super::under_test::{Capabilities, ModelUnderTest, Sequence};
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

/// A model given from Rust, described by name (`ModelInfo::from_custom` builds its
/// `ModelInfo`): named fields, so the three sizes cannot be swapped unseen.
pub struct CustomInfo {
    /// Names the model in reports (`custom:<name>` by convention).
    pub source: String,
    /// Stands for its weights' sha256 in reports (a version or seed tag).
    pub identity: String,
    /// Width of a logits row.
    pub vocab_size: usize,
    /// Transformer blocks: the layers a trace or fault may name.
    pub num_layers: usize,
    /// Most positions a sequence may hold.
    pub context_len: usize,
    /// Tokenizes text prompts; `None` for random-token prompts only (an empty word-level
    /// tokenizer then stands in).
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// Loads the model; its [`CustomModel::capabilities`] are the one declaration of what
    /// the model can do.
    pub model: std::sync::Arc<dyn CustomModel>,
}

/// A loaded custom model that answers with the capabilities its loader declared, whatever
/// its own `ModelUnderTest::capabilities` says: the user declares them once.
pub struct Declared {
    /// The model as loaded.
    pub inner: Box<dyn ModelUnderTest>,
    /// What [`CustomModel::capabilities`] declared.
    pub capabilities: Capabilities,
}

impl ModelUnderTest for Declared {
    fn engine(&self) -> &str {
        self.inner.engine()
    }
    fn implementation(&self) -> String {
        self.inner.implementation()
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn context_len(&self) -> usize {
        self.inner.context_len()
    }
    fn num_layers(&self) -> usize {
        self.inner.num_layers()
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn sequence(&self, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        self.inner.sequence(capacity)
    }
    fn batch(&self, rows: usize, capacity: usize) -> candle_core::Result<Box<dyn Sequence + '_>> {
        self.inner.batch(rows, capacity)
    }
}
