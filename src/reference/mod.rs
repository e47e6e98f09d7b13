//! PLACEHOLDER (replaced by the ref helper's module at merge): the transformers worker client.
#![allow(missing_docs, dead_code)]
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub enum RefDtype {
    F32,
    F64,
}
#[derive(Debug, Clone, Copy)]
pub struct Handle(u32);
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("not installed: {command}")]
    NotInstalled { command: String },
    #[error("{0}")]
    Other(String),
}
pub struct Loaded { pub handle: Handle }
pub struct TransformersWorker;
impl TransformersWorker {
    pub fn start() -> Result<Self, ReferenceError> {
        Err(ReferenceError::NotInstalled {
            command: "bash scripts/reference/setup_transformers.sh".into(),
        })
    }
    pub fn load(&mut self, _model: &Path, _dtype: RefDtype) -> Result<Loaded, ReferenceError> {
        Err(ReferenceError::Other("placeholder".into()))
    }
    pub fn forward(&mut self, _h: Handle, _ids: &[u32]) -> Result<candle_core::Tensor, ReferenceError> {
        Err(ReferenceError::Other("placeholder".into()))
    }
}
