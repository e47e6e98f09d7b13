//! The typed error of the model loaders: what kind of failure, with the message in words.
//! [`crate::Error::model`] wraps it with the model's source at the library boundary.

/// Why a model file, directory or hub id cannot be read, checked or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A file or directory cannot be opened, read or mapped.
    #[error("{0}")]
    Io(String),
    /// A header, metadata entry, config or tensor is malformed, or contradicts another.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but not something driftsweep (or the engine asked for) runs.
    #[error("{0}")]
    Unsupported(String),
    /// The weights could not be built into a model.
    #[error("{0}")]
    Load(String),
}

impl From<String> for ModelError {
    fn from(message: String) -> Self {
        ModelError::Invalid(message)
    }
}

impl From<&str> for ModelError {
    fn from(message: &str) -> Self {
        ModelError::Invalid(message.to_string())
    }
}

impl From<ModelError> for String {
    fn from(e: ModelError) -> Self {
        e.to_string()
    }
}

impl ModelError {
    /// Whether `self`'s message contains `words` (for tests and callers matching on text).
    pub fn contains(&self, words: &str) -> bool {
        self.to_string().contains(words)
    }
}
